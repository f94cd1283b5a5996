"""Downloads: overlay, masks, summaries (CSV, JSON) and the PDF report."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import streamlit as st

from hydralanet import LoadedModel, SquarePrediction, lesion_statistics, render_overlay
from hydralanet.io.images import encode_png
from hydralanet.reading.photo import PhotoReading, findings
from hydralanet.report.pdf import ReportPhoto, report_pdf
from hydralanet.report.tables import masks_zip, record_columns, run_record, summary_csv

Result = Callable[[], tuple[SquarePrediction, PhotoReading]]  # app.result_getter: arrays on demand


def _record(loaded: LoadedModel, settings: dict) -> dict:
    preprocessing = loaded.config.preprocessing.replace(clahe=settings["clahe"], crop=settings["crop"])
    return run_record(
        loaded,
        preprocessing,
        settings["thresholds"],
        tta=settings["tta"],
        precision=loaded.resolve_precision(settings["precision"]),
    )


def show_downloads(name: str, result: Result, loaded: LoadedModel, settings: dict) -> None:
    """The download buttons. Every file is built when clicked, from ``result``, at the photo's
    full resolution (the page itself counts on a coarser grid): the page keeps no
    full-resolution arrays for them."""
    st.subheader("Downloads")
    stem = Path(name).stem
    record = _record(loaded, settings)
    thresholds, opacity, visible = settings["thresholds"], settings["opacity"], settings["visible"]

    def full() -> tuple[SquarePrediction, np.ndarray, list[dict], PhotoReading]:
        prediction, reading = result()
        masks = prediction.masks(thresholds)
        return prediction, masks, lesion_statistics(masks, prediction.fov, thresholds), reading

    def overlay_png() -> bytes:
        prediction, _ = result()
        masks = prediction.masks(thresholds)
        return encode_png(render_overlay(prediction.image, masks, opacity=opacity, visible=visible))

    def csv_text() -> str:
        rows = full()[2]
        return summary_csv([{"image": name, **row, **record_columns(record)} for row in rows])

    def json_text() -> str:
        prediction, masks, rows, reading = full()
        h, w = prediction.image.shape[:2]
        summary = {
            **record,
            "image": {"name": name, "width": w, "height": h, "fov_pixels": int(np.count_nonzero(prediction.fov))},
            "results": [{"image": name, **row} for row in rows],
            "findings": findings(reading, masks),
        }
        return json.dumps(summary, indent=2) + "\n"

    buttons = [  # label, function making the file, file name suffix, MIME type, icon
        ("Overlay (PNG)", overlay_png, "overlay.png", "image/png", "image"),
        (
            "Masks (ZIP)",
            lambda: masks_zip(result()[0].masks(thresholds), folder=stem),
            "masks.zip",
            "application/zip",
            "folder_zip",
        ),
        ("Summary (CSV)", csv_text, "summary.csv", "text/csv", "table"),
        ("Summary (JSON)", json_text, "summary.json", "application/json", "data_object"),
    ]
    for col, (label, data, suffix, mime, icon) in zip(st.columns(len(buttons)), buttons):
        col.download_button(
            label,
            data,
            file_name=f"{stem}_{suffix}",
            mime=mime,
            on_click="ignore",
            icon=f":material/{icon}:",
            width="stretch",
        )
    st.caption(
        "Made at the photo's full resolution when clicked: the overlay, the masks (0/255 PNGs, one per "
        "lesion), and the summaries, which record the model, preprocessing and thresholds."
    )


def show_report(name: str, result: Result, facts, loaded: LoadedModel, settings: dict) -> None:
    """The PDF report, one click away (made when clicked): the photo, overlay, tables, reading,
    provenance and the research notice."""
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
