"""Run reports: ``report.md`` and a self-contained ``report.html`` from a pipeline's measured results.

The report reads ``result.json``-shaped dictionaries only; it imports nothing from the pipeline above it.
"""

from udacisense.report.console import format_comparison, format_targets
from udacisense.report.markdown import shipped, write_failure_report, write_report

__all__ = ["format_comparison", "format_targets", "shipped", "write_failure_report", "write_report"]
