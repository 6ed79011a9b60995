"""Scheduled agent jobs and scheduled reports (docs/jobs.md)."""
