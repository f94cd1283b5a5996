"""Downloads: overlay, masks, summaries (CSV, JSON) and the PDF report."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import streamlit as st

from hydralanet import LoadedModel, SquarePrediction, lesion_statistics, render_overlay
from hydralanet.fast import resolve_precision
from hydralanet.io import encode_png
from hydralanet.pdf_report import ReportPhoto, report_pdf
from hydralanet.reading import PhotoReading, findings
from hydralanet.report import masks_zip, record_columns, run_record, summary_csv

Result = Callable[[], tuple[SquarePrediction, PhotoReading]]  # app.result_getter: arrays on demand


def _record(loaded: LoadedModel, settings: dict) -> dict:
    preprocessing = loaded.config.preprocessing.replace(clahe=settings["clahe"], crop=settings["crop"])
    return run_record(
        loaded,
        preprocessing,
        settings["thresholds"],
        tta=settings["tta"],
        precision=resolve_precision(settings["precision"], loaded.device),
    )


def show_downloads(
    name: str,
    result: Result,
    shape: tuple[int, int],
    fov_pixels: int,
    rows: list[dict],
    loaded: LoadedModel,
    settings: dict,
    found: dict,
) -> None:
    """The download buttons. Full-resolution files are built when clicked, from ``result``:
    the page keeps no full-resolution arrays for them."""
    st.subheader("Downloads")
    stem = Path(name).stem
    record = _record(loaded, settings)
    csv_rows = [{"image": name, **row, **record_columns(record)} for row in rows]
    h, w = shape
    summary = {
        **record,
        "image": {"name": name, "width": w, "height": h, "fov_pixels": fov_pixels},
        "results": [{"image": name, **row} for row in rows],
        "findings": found,
    }
    thresholds, opacity, visible = settings["thresholds"], settings["opacity"], settings["visible"]

    def overlay_png() -> bytes:
        prediction, _ = result()
        masks = prediction.masks(thresholds)
        return encode_png(render_overlay(prediction.image, masks, opacity=opacity, visible=visible))

    cols = st.columns(4)
    # Full-resolution PNGs take a while to encode: built only when the button is clicked.
    cols[0].download_button(
        "Overlay (PNG)",
        overlay_png,
        file_name=f"{stem}_overlay.png",
        mime="image/png",
        on_click="ignore",
        icon=":material/image:",
        width="stretch",
    )
    cols[1].download_button(
        "Masks (ZIP)",
        lambda: masks_zip(result()[0].masks(thresholds), folder=stem),
        file_name=f"{stem}_masks.zip",
        mime="application/zip",
        on_click="ignore",
        icon=":material/folder_zip:",
        width="stretch",
    )
    cols[2].download_button(
        "Summary (CSV)",
        summary_csv(csv_rows),
        file_name=f"{stem}_summary.csv",
        mime="text/csv",
        on_click="ignore",
        icon=":material/table:",
        width="stretch",
    )
    cols[3].download_button(
        "Summary (JSON)",
        json.dumps(summary, indent=2) + "\n",
        file_name=f"{stem}_summary.json",
        mime="application/json",
        on_click="ignore",
        icon=":material/data_object:",
        width="stretch",
    )
    st.caption(
        f"Masks: 0/255 PNGs at the original {w} x {h}, one per lesion. "
        "Summaries record the model, preprocessing and thresholds."
    )


def show_report(name: str, result: Result, facts, loaded: LoadedModel, settings: dict) -> None:
    """The PDF report, on request (a button, then a download for each photo shown after it):
    the photo, overlay, tables, reading, provenance and the research notice."""
    if not st.session_state.get("offer_report"):
        st.button(
            "PDF report", on_click=lambda: st.session_state.update(offer_report=True), icon=":material/description:"
        )
        return
    record = _record(loaded, settings)
    thresholds, opacity, provenance = settings["thresholds"], settings["opacity"], loaded.config.provenance

    def pdf() -> bytes:
        prediction, reading = result()
        masks = prediction.masks(thresholds)
        rows = lesion_statistics(masks, prediction.fov, thresholds)
        photo = ReportPhoto(Path(name).stem, prediction.image, masks, rows, reading, findings(reading, masks), facts)
        return report_pdf(photo, record, provenance, opacity=opacity)

    st.download_button(
        "Report (PDF)",
        pdf,
        file_name=f"{Path(name).stem}.pdf",
        mime="application/pdf",
        on_click="ignore",
        icon=":material/description:",
    )
