"""The dashboard's packaged assets (HTML, CSS, JS, vendored uPlot), served by api/ui.py; no code runs here."""
