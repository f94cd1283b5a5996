"""Downloads: overlay, masks, summaries (CSV, JSON) and the PDF report."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import streamlit as st

from hydralanet import (
    LoadedModel,
    SquarePrediction,
    render_overlay,
)
from hydralanet.io import encode_png
from hydralanet.pdf_report import ReportPhoto, report_pdf
from hydralanet.report import masks_zip, record_columns, run_record, summary_csv


def show_downloads(
    name: str,
    prediction: SquarePrediction,
    masks: np.ndarray,
    rows: list[dict],
    loaded: LoadedModel,
    settings: dict,
    found: dict,
) -> None:
    st.subheader("Downloads")
    stem = Path(name).stem
    preprocessing = loaded.config.preprocessing.replace(
        clahe=prediction.settings["clahe"], crop=prediction.settings["crop"]
    )
    record = run_record(
        loaded, preprocessing, settings["thresholds"], tta=settings["tta"], precision=prediction.settings["precision"]
    )
    csv_rows = [{"image": name, **row, **record_columns(record)} for row in rows]
    h, w = prediction.image.shape[:2]
    summary = {
        **record,
        "image": {"name": name, "width": w, "height": h, "fov_pixels": int(prediction.fov.sum())},
        "results": [{"image": name, **row} for row in rows],
        "findings": found,
    }
    image, opacity, visible = prediction.image, settings["opacity"], settings["visible"]
    cols = st.columns(4)
    # Full-resolution PNGs take a while to encode: built only when the button is clicked.
    cols[0].download_button(
        "Overlay (PNG)",
        lambda: encode_png(render_overlay(image, masks, opacity=opacity, visible=visible)),
        file_name=f"{stem}_overlay.png",
        mime="image/png",
        on_click="ignore",
        icon=":material/image:",
        width="stretch",
    )
    cols[1].download_button(
        "Masks (ZIP)",
        lambda: masks_zip(masks, folder=stem),
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


def show_report(name: str, photo: ReportPhoto, loaded: LoadedModel, settings: dict) -> None:
    """The PDF report, on request (a button, then a download for each photo shown after it):
    the photo, overlay, tables, reading, provenance and the research notice."""
    if not st.session_state.get("offer_report"):
        st.button(
            "PDF report", on_click=lambda: st.session_state.update(offer_report=True), icon=":material/description:"
        )
        return
    preprocessing = loaded.config.preprocessing.replace(clahe=settings["clahe"], crop=settings["crop"])
    record = run_record(
        loaded, preprocessing, settings["thresholds"], tta=settings["tta"], precision=settings["precision"]
    )
    opacity, provenance = settings["opacity"], loaded.config.provenance
    st.download_button(
        "Report (PDF)",
        lambda: report_pdf(photo, record, provenance, opacity=opacity),
        file_name=f"{Path(name).stem}.pdf",
        mime="application/pdf",
        on_click="ignore",
        icon=":material/description:",
    )
