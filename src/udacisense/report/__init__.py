"""Run reports: ``report.md`` and a self-contained ``report.html`` from a pipeline's measured results."""

from udacisense.report.markdown import write_report

__all__ = ["write_report"]
