"""What a person reads: the overlay, the statistics tables (CSV, JSON, ZIP of masks) and the
PDF report."""

from __future__ import annotations

from .._lazy import lazy_exports

_EXPORTS = {
    "COLOURS": ".overlay",
    "render_overlay": ".overlay",
    "masks_zip": ".tables",
    "run_record": ".tables",
    "summary_csv": ".tables",
    "table_csv": ".tables",
    "ReportPhoto": ".pdf",
    "ReportWriter": ".pdf",
    "report_pdf": ".pdf",
    "write_report": ".pdf",
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
__all__ = sorted(_EXPORTS)
