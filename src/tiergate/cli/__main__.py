"""python -m tiergate.cli"""

from tiergate.cli import main

main()
