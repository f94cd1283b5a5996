"""HydraLA-Net web app: upload fundus photos, read the four lesion overlays, move thresholds.

Run with ``streamlit run app.py``. ``HYDRALANET_MODEL`` picks the model (a Hub source
``[spaces/]owner/name[@revision][:path]``, a checkpoint folder or a weights file; default: the
bundled ``weights/``). ``HYDRALANET_ALLOW_PICKLE=1`` lets the operator allow a pickled state
dict such as the original code's ``best_model.pt`` (read with ``weights_only=True``).

The page is thin: every computation is a ``hydralanet`` call. The network runs once per
(image, preprocessing setting); thresholds, visibility, opacity and zoom only re-render
cached probabilities (DESIGN §8).
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path

import altair as alt
import cv2
import numpy as np
import pandas as pd
import streamlit as st

from hydralanet import (
    CLASSES,
    COLOURS,
    CheckpointError,
    ImageError,
    LoadedModel,
    SquarePrediction,
    lesion_statistics,
    predict_square,
    read_image,
    render_overlay,
)
from hydralanet.checkpoint import load_model
from hydralanet.config import CLAHE_MODES, CLASS_NAMES, CROP_MODES, format_threshold, threshold_stops
from hydralanet.hub import parse_hub_source
from hydralanet.io import IMAGE_EXTENSIONS, encode_png
from hydralanet.overlay import downscale_for_display, legend_html
from hydralanet.pdf_report import ReportPhoto, report_pdf
from hydralanet.preprocessing import BlankImageError
from hydralanet.reading import LESION_EXCLUSION_P, PhotoReading, findings, read_photo
from hydralanet.report import masks_zip, record_columns, run_record, summary_csv
from hydralanet.serving import MemoryBudget, SessionCache, WorkGate, env_int
from hydralanet.zones import ETDRS_ZONES, QUADRANTS, draw_grid

log = logging.getLogger("hydralanet.app")

PREVIEW_SIDE = 720  # images are shown at most this large; downloads and statistics stay full size
ZOOM_SIDE = 480  # the zoomed crop is shown this large, upscaled nearest-neighbour
ZOOM_FACTORS = (2, 4, 8, 16, 32)
# Results kept per session (probabilities at the model's square, the photo, its reading: about
# 105 MB for a 4288 x 2848 photo), and for all sessions together HYDRALANET_MAX_SESSIONS_MB;
# over it the oldest results of any session are dropped (and recomputed if that session
# comes back to them).
CACHE_ENTRIES = 4
SESSIONS_MB = 1024
SWEEP_S = 10.0  # how often the results of closed sessions are let go
MODEL_CACHE_ENTRIES = 4  # models kept per process (each source a visitor loads is one)
RETRY_FAILED_MODEL_S = 300  # a source that failed is retried after this long: one timeout, not one per rerun
PRECISIONS = {"fast": "auto", "exact (fp32)": "fp32"}
SAMPLE_NAME = "retina_sample.png"
MEDICAL_NOTE = "Research software, not a medical device: not for diagnosis or clinical decisions."
CROP_LABELS = {"fov": "whole field of view", "centre_square": "centre square (original code)"}


def _switch(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def pickle_allowed() -> bool:
    """The operator's opt-in for pickled state dicts; visitors cannot set it."""
    return _switch("HYDRALANET_ALLOW_PICKLE")


def model_locked() -> bool:
    """``HYDRALANET_LOCK_MODEL=1``: the page offers no way to load another model."""
    return _switch("HYDRALANET_LOCK_MODEL")


def refuse_source(source: str) -> str | None:
    """Why a source typed in the page may not be loaded, or None. The operator's own
    ``HYDRALANET_MODEL`` is never checked; visitors' sources are, against
    ``HYDRALANET_ALLOWED_MODELS`` (comma-separated, ``*`` patterns) and local paths against
    ``HYDRALANET_ALLOW_LOCAL_MODELS=1`` (off by default: a public page must not probe the disk)."""
    if not source:
        return None
    if model_locked():
        return "this server's operator has fixed the model (HYDRALANET_LOCK_MODEL)"
    is_hub = parse_hub_source(source) is not None and not Path(source).expanduser().exists()
    if not is_hub and not _switch("HYDRALANET_ALLOW_LOCAL_MODELS"):
        return f"{source}: local paths are not accepted from the page (the operator can allow them)"
    allowed = [p.strip() for p in os.environ.get("HYDRALANET_ALLOWED_MODELS", "").split(",") if p.strip()]
    if allowed and not any(fnmatch.fnmatchcase(source, pattern) for pattern in allowed):
        return f"{source}: not among the models this server allows ({', '.join(allowed)})"
    return None


@st.cache_resource
def memory_budget() -> MemoryBudget:
    budget = MemoryBudget(env_int("HYDRALANET_MAX_SESSIONS_MB", SESSIONS_MB) << 20)
    budget.start_sweeper(SWEEP_S)
    return budget


@st.cache_resource
def model_gate() -> WorkGate:
    """Segmentations at once in this process (``HYDRALANET_MAX_INFERENCES``): by default as
    many as the cores allow when each uses torch's intra-op threads (1 on a 2-vCPU Space)."""
    import torch

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return WorkGate(env_int("HYDRALANET_MAX_INFERENCES", max(1, cores // max(1, torch.get_num_threads()))))


@st.cache_resource
def render_gate() -> WorkGate:
    """Full-resolution redraws at once (masks, statistics): one per core."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return WorkGate(env_int("HYDRALANET_MAX_REDRAWS", cores))


def session_alive() -> Callable[[], bool] | None:
    """Whether this session is still connected (Streamlit keeps a closed tab's session two
    minutes for a reconnect; its results need not wait that long)."""
    from streamlit import runtime
    from streamlit.runtime.scriptrunner import get_script_run_ctx

    ctx = get_script_run_ctx()
    if ctx is None or not runtime.exists():
        return None
    session_id, instance = ctx.session_id, runtime.get_instance()
    return lambda: instance.is_active_session(session_id)


def session_cache() -> SessionCache:
    if "results" not in st.session_state:
        # predictions and their readings: two entries per photo
        st.session_state.results = SessionCache(memory_budget(), CACHE_ENTRIES * 2, alive=session_alive())
    return st.session_state.results


def queued_notice(placeholder, what: str):
    def notice(ahead: int) -> None:
        placeholder.info(
            f"Queued: {ahead} {'job' if ahead == 1 else 'jobs'} ahead of {what} on this server. It starts by itself.",
            icon=":material/hourglass_top:",
        )

    return notice


# --------------------------------------------------------------------------- the model


@st.cache_resource(show_spinner="Loading the model…", max_entries=MODEL_CACHE_ENTRIES)
def shared_model(source: str, allow_pickle: bool) -> tuple[LoadedModel, str | None, float]:
    """One model per source per process, shared by every session ("" = bundled). A source
    that cannot be loaded gives the bundled model and a one-line warning; returns
    ``(model, warning, when loaded)``."""
    if not source:
        return load_model(None), None, time.monotonic()
    try:
        return load_model(source, allow_pickle=allow_pickle), None, time.monotonic()
    except CheckpointError as exc:
        # The bundled model of the "" entry: one copy however many sources fail.
        bundled, _, _ = shared_model("", allow_pickle)
        return bundled, f"{exc} - using the bundled model instead", time.monotonic()


def resolve_model(source: str) -> tuple[LoadedModel, str | None]:
    loaded, warning, when = shared_model(source, pickle_allowed())
    asked_at = st.session_state.pop("load_clicked_at", -float("inf"))
    if warning and (when < asked_at or time.monotonic() - when > RETRY_FAILED_MODEL_S):
        shared_model.clear(source, pickle_allowed())  # the Hub may be back: try again (only failed sources)
        loaded, warning, _ = shared_model(source, pickle_allowed())
    return loaded, warning


def load_requested_model() -> None:
    """Sidebar "Load" button: use the typed source for this session, retrying it now, unless
    the operator's policy refuses it (:func:`refuse_source`)."""
    typed = st.session_state.model_source_input.strip()
    refusal = refuse_source(typed)
    if refusal:
        st.session_state.model_refusal = refusal
        return
    st.session_state.model_source = typed
    st.session_state.load_clicked_at = time.monotonic()  # retries a source whose failure is older


def reset_controls(loaded: LoadedModel) -> None:
    """Thresholds and CLAHE follow the checkpoint's defaults, whenever the model changes."""
    model_key = (loaded.identity["source"], loaded.identity["sha256"])
    if st.session_state.get("defaults_for") == model_key:
        return
    st.session_state.defaults_for = model_key
    reset_thresholds(loaded)
    clahe = loaded.config.preprocessing.clahe
    st.session_state.clahe_on = clahe != "off"
    st.session_state.clahe_mode = clahe if clahe != "off" else CLAHE_MODES[0]
    st.session_state.crop = loaded.config.preprocessing.crop


def reset_thresholds(loaded: LoadedModel) -> None:
    for c in CLASSES:
        st.session_state[f"threshold_{c}"] = float(loaded.config.thresholds[c])


# --------------------------------------------------------------------------- sidebar


def model_panel(loaded: LoadedModel) -> None:
    identity, config = loaded.identity, loaded.config
    provenance = config.provenance
    st.markdown(f"**{identity['name']}**")
    st.caption(
        "  \n".join(
            [
                f"source: `{identity['source']}`",
                f"revision: `{identity.get('revision') or '–'}`",
                f"file: `{identity.get('file') or '–'}`",
                f"architecture: {config.model.encoder}, D = {config.model.decoder_channels}, "
                f"{identity['parameters'] / 1e6:.1f} M parameters",
                f"input: {config.preprocessing.input_size} px, CLAHE {config.preprocessing.clahe}, "
                f"crop {config.preprocessing.crop}",
                f"weights: sha256 `{identity['sha256'][:16]}`",
                f"device: `{loaded.device}`",
            ]
        )
    )
    if identity.get("converted_from"):
        st.info(
            f"Converted from {identity['converted_from']}: its accuracy is unknown until it is scored "
            "(`python -m training.evaluate`).",
            icon=":material/swap_horiz:",
        )
    if provenance.get("trained") is False:
        st.warning("Untrained placeholder (random weights): its masks mean nothing.", icon=":material/warning:")
    with st.expander("Training data and metrics"):
        datasets = provenance.get("datasets") or provenance.get("data")
        st.markdown(f"Trained on: {_as_text(datasets) if datasets else 'not recorded'}")
        metrics = provenance.get("metrics")
        if isinstance(metrics, dict) and metrics:
            st.dataframe(_metrics_table(metrics), width="stretch")
        else:
            st.markdown("Metrics: not recorded")
        st.caption("Everything the checkpoint records (config.json, provenance):")
        st.json(provenance, expanded=False)
    if model_locked():
        st.caption("This server's operator has fixed the model.")
        return
    refusal = st.session_state.pop("model_refusal", None)
    if refusal:
        st.error(refusal, icon=":material/block:")
    st.text_input(
        "Load another model",
        key="model_source_input",
        placeholder="[spaces/]owner/name[@revision][:path] or a folder",
        help="A Hugging Face Hub model repo or Space (spaces/owner/name), optionally :path/to/best_model.pt "
        "inside it, or a checkpoint folder on the server. Empty: the bundled model.",
    )
    st.button("Load", on_click=load_requested_model, width="stretch")


def _as_text(value: object) -> str:
    if isinstance(value, (list, tuple)):
        return ", ".join(map(str, value))
    if isinstance(value, dict):
        return ", ".join(f"{k} ({v})" for k, v in value.items())
    return str(value)


def _metrics_table(metrics: dict) -> pd.DataFrame:
    """``{dataset: {lesion or metric: value}}`` (one column per dataset: the sidebar is narrow)
    or a flat ``{metric: value}``, as a table."""
    if all(isinstance(v, dict) for v in metrics.values()):
        return pd.DataFrame(metrics)
    return pd.DataFrame({"value": metrics})


def controls(loaded: LoadedModel) -> dict:
    st.subheader("Preprocessing")
    clahe_on = st.toggle("CLAHE contrast enhancement", key="clahe_on")
    mode = st.selectbox(
        "CLAHE mode",
        [m for m in CLAHE_MODES if m != "off"],
        key="clahe_mode",
        disabled=not clahe_on,
        help="green: CLAHE on the green channel (as published); lab: on L of L*a*b*; casp: on all channels",
    )
    crop = st.selectbox(
        "Crop",
        list(CROP_MODES),
        key="crop",
        format_func=CROP_LABELS.get,
        help="whole field of view: every pixel of the fundus is read (this project's models); centre square: "
        "the photo's centred square, as the original HydraLA-Net code trained (the sides of a wide photo "
        "are not read)",
    )
    tta = st.toggle("Test-time augmentation (flips, 3x slower)", key="tta")
    precision = st.radio(
        "Precision",
        list(PRECISIONS),
        key="precision",
        horizontal=True,
        help="fast: the quickest path on this hardware; exact: float32 throughout",
    )

    st.subheader("Thresholds")
    thresholds = {
        c: st.select_slider(
            f"{c} · {CLASS_NAMES[c]}",
            threshold_stops(loaded.config.thresholds[c], st.session_state[f"threshold_{c}"]),
            key=f"threshold_{c}",
            format_func=format_threshold,
            help="Steps of 0.01 between 0.05 and 0.95, finer towards 0 and 1 (equal steps in log-odds), "
            "and the model's own threshold exactly",
        )
        for c in CLASSES
    }
    st.button("Reset to the model's thresholds", on_click=reset_thresholds, args=(loaded,), width="stretch")

    st.subheader("Display")
    shown = st.pills("Show", list(CLASSES), selection_mode="multi", default=list(CLASSES), key="visible")
    opacity = st.slider("Overlay opacity", 0.0, 1.0, 0.5, step=0.05, key="opacity")
    show_grid = st.toggle(
        "Optic disc, fovea and ETDRS grid",
        value=True,
        key="show_grid",
        help="Drawn on the overlay: the disc outline, the fovea and the 1, 3 and 6 mm circles "
        "(1 disc diameter = 1.5 mm) with the subfield boundaries",
    )
    return {
        "clahe": mode if clahe_on else "off",
        "crop": crop,
        "tta": tta,
        "precision": PRECISIONS[precision],
        "thresholds": thresholds,
        "visible": {c: c in (shown or []) for c in CLASSES},
        "opacity": opacity,
        "show_grid": show_grid,
    }


# --------------------------------------------------------------------------- input


@st.cache_data(show_spinner=False)
def sample_png() -> bytes:
    """The CC0 fundus photo shipped with scikit-image, as an upload would arrive."""
    from skimage.data import retina

    return encode_png(retina())


def use_sample() -> None:
    st.session_state.use_sample = True


def collect_inputs() -> list[tuple[str, bytes]]:
    left, right = st.columns([4, 1], vertical_alignment="center")
    uploads = left.file_uploader(
        "Fundus photos (JPEG, PNG, TIFF, DICOM)",
        type=[e.lstrip(".") for e in IMAGE_EXTENSIONS],
        accept_multiple_files=True,
        key="uploads",
    )
    right.button("Try a sample", on_click=use_sample, icon=":material/visibility:", width="stretch")
    files: list[tuple[str, bytes]] = [(SAMPLE_NAME, sample_png())] if st.session_state.get("use_sample") else []
    seen = {name for name, _ in files}
    st.session_state.frames = {}  # entry name -> frame of a multi-frame DICOM upload
    for upload in uploads or []:
        for base, frame in dicom_frames(upload.name, upload.getvalue()):
            name, k = base, 2
            while name in seen:  # two uploads may share a name; the selector needs distinct ones
                name, k = f"{base} ({k})", k + 1
            seen.add(name)
            files.append((name, upload.getvalue()))
            if frame is not None:
                st.session_state.frames[name] = frame
    return files


def dicom_frames(name: str, data: bytes) -> list[tuple[str, int | None]]:
    """One entry per frame of a multi-frame DICOM file (``<stem>_f<k>.dcm``, as the CLI names
    them), else the upload itself. Only the header is read; a broken file stays one entry and
    gets its one-line error when read."""
    from hydralanet.dicom import frame_count, looks_like_dicom

    frames = frame_count(data) if looks_like_dicom(data[:132], name) else 1
    if frames <= 1:
        return [(name, None)]
    stem, suffix = Path(name).stem, Path(name).suffix
    return [(f"{stem}_f{k}{suffix}", k) for k in range(1, frames + 1)]


def upload_facts(data: bytes):
    """The DICOM header facts of an upload (no identifiers: the page never shows them), or None."""
    from hydralanet.dicom import DicomError, looks_like_dicom, read_facts

    if not looks_like_dicom(data[:132]):
        return None
    try:
        return read_facts(data)
    except DicomError:
        return None


def choose(files: list[tuple[str, bytes]]) -> tuple[str, bytes]:
    """The image to show: what was just added, else the user's choice (a selector when
    several are loaded)."""
    names = [name for name, _ in files]
    added = [name for name in names if name not in st.session_state.get("seen_names", ())]
    st.session_state.seen_names = names
    if added or st.session_state.get("image_choice") not in names:
        st.session_state.image_choice = (added or names)[-1]
    if len(files) > 1:
        st.selectbox(f"Image ({len(files)} loaded)", names, key="image_choice")
    return files[names.index(st.session_state.image_choice)]


# --------------------------------------------------------------------------- inference


def prediction_key(loaded: LoadedModel, data: bytes, settings: dict) -> tuple:
    return (
        hashlib.sha256(data).hexdigest(),
        settings["clahe"],
        settings["crop"],
        settings["tta"],
        settings["precision"],
        settings.get("frame"),
        loaded.identity["source"],
        loaded.identity["sha256"],
    )


def photo_reading(key: tuple, prediction: SquarePrediction, facts=None) -> PhotoReading:
    """Disc, fovea, quality and zone maps of the photo: once per prediction, kept beside it in
    the session (thresholds only re-read the zones)."""
    cache = session_cache()
    reading = cache.get(("reading", key))
    if reading is None:
        with st.spinner("Finding the optic disc and the fovea…"), render_gate().slot():
            lesions = prediction.masks(dict.fromkeys(CLASSES, LESION_EXCLUSION_P)).any(axis=0)
            reading = read_photo(
                prediction.image,
                prediction.fov,
                lesions=lesions,
                laterality=facts.laterality if facts else None,  # a DICOM header's eye and pixel size
                mm_per_px=facts.mm_per_px if facts else None,
            )
        maps = reading.maps
        size = 0 if maps is None else maps.etdrs.nbytes + maps.quadrant.nbytes + maps.near.nbytes
        cache.put(("reading", key), reading, size)
    return reading


def segment(loaded: LoadedModel, name: str, data: bytes, settings: dict) -> SquarePrediction:
    """The model's output for this image and preprocessing, from the session cache when
    possible. Bad input ends the run with a one-line ``st.error``. Segmentations wait their
    turn in the process (:func:`model_gate`), and the page says so while they wait."""
    key = prediction_key(loaded, data, settings)
    prediction = session_cache().get(key)
    if prediction is not None:
        return prediction
    try:
        waiting = st.empty()
        with model_gate().slot(on_wait=queued_notice(waiting, name)), st.spinner(f"Segmenting {name}…"):
            waiting.empty()
            image = read_image(data, name=name, frame=settings.get("frame"))
            # Counts real model calls; the tests read it to prove that thresholds do not re-run the model.
            st.session_state.model_runs = st.session_state.get("model_runs", 0) + 1
            prediction = predict_square(
                loaded,
                image,
                clahe=settings["clahe"],
                tta=settings["tta"],
                precision=settings["precision"],
                crop=settings["crop"],
            )
    except ImageError as exc:
        error = str(exc)
    except BlankImageError as exc:
        error = f"{name}: {exc}"
    except Exception as exc:  # the page must keep serving whatever an upload does; details go to the log
        log.exception("segmenting %s failed", name)
        error = f"{name}: could not be segmented ({(str(exc).strip() or type(exc).__name__).splitlines()[0]})"
    else:
        session_cache().put(key, prediction, prediction.nbytes)
        return prediction
    st.error(error, icon=":material/error:")
    st.stop()


# --------------------------------------------------------------------------- results


def show_views(prediction: SquarePrediction, small: np.ndarray, overlay: np.ndarray) -> None:
    clahe = prediction.settings["clahe"]
    h, w = prediction.image.shape[:2]
    cols = st.columns(3)
    cols[0].image(small, caption=f"Original ({w} x {h})", width="stretch")
    view = f"CLAHE {clahe}" if clahe != "off" else "no CLAHE"
    cols[1].image(
        _fit(prediction.enhanced, PREVIEW_SIDE), caption=f"Model input: field of view, {view}", width="stretch"
    )
    cols[2].image(encode_png(overlay), caption="Lesion overlay", width="stretch", output_format="PNG")
    st.markdown(legend_html(), unsafe_allow_html=True)


@st.fragment  # moving the zoom reruns only this part of the page
def show_zoom(prediction: SquarePrediction, masks: np.ndarray, overlay: np.ndarray, settings: dict) -> None:
    st.subheader("Zoom")
    image = prediction.image
    h, w = image.shape[:2]
    left, right = st.columns([3, 2])
    with right:
        factor = st.select_slider("Magnification", ZOOM_FACTORS, value=8, format_func=lambda f: f"{f}x", key="zoom")
        cx = st.slider("Centre, left → right (%)", 0, 100, 50, key="zoom_x")
        cy = st.slider("Centre, top → bottom (%)", 0, 100, 50, key="zoom_y")
    side = max(8, round(min(h, w) / factor))
    x0 = int(np.clip(round(cx / 100 * w - side / 2), 0, w - side))
    y0 = int(np.clip(round(cy / 100 * h - side / 2), 0, h - side))
    crop = render_overlay(
        image[y0 : y0 + side, x0 : x0 + side],
        masks[:, y0 : y0 + side, x0 : x0 + side],
        opacity=settings["opacity"],
        visible=settings["visible"],
        outline=False,
    )
    zoomed = cv2.resize(crop, (ZOOM_SIDE, ZOOM_SIDE), interpolation=cv2.INTER_NEAREST)
    caption = f"{side} x {side} px from ({x0}, {y0}), {ZOOM_SIDE / side:.1f} screen px per pixel"
    right.image(encode_png(zoomed), caption=caption, width="stretch", output_format="PNG")

    scale = overlay.shape[1] / w
    box = (round(x0 * scale), round(y0 * scale)), (round((x0 + side) * scale) - 1, round((y0 + side) * scale) - 1)
    boxed = cv2.rectangle(overlay.copy(), *box, (255, 255, 255), max(1, PREVIEW_SIDE // 360))
    left.image(
        encode_png(boxed), caption="Overlay; the white box is the zoomed region", width="stretch", output_format="PNG"
    )


def show_statistics(rows: list[dict]) -> None:
    st.subheader("Statistics")
    table = pd.DataFrame(
        {
            "lesion": [f"{r['lesion']} {CLASS_NAMES[r['lesion']]}" for r in rows],
            "threshold": [r["threshold"] for r in rows],
            "pixels": [r["pixels"] for r in rows],
            "% of FOV": [r["coverage_pct"] for r in rows],
            "lesions": [r["count"] for r in rows],
            "largest (px)": [r["largest_px"] for r in rows],
        }
    )
    left, right = st.columns([3, 2])
    # A static table: four rows need no scrolling or sorting, and every number stays readable.
    left.table(
        table.style.format(
            {"threshold": format_threshold, "pixels": "{:,}", "% of FOV": "{:.3f}", "largest (px)": "{:,}"}
        ),
        hide_index=True,
    )
    left.caption("% of FOV: share of the field of view. Lesions: connected regions (8-connected).")
    chart_data = pd.DataFrame(
        {
            "lesion": list(CLASSES),
            "% of field of view": [r["coverage_pct"] for r in rows],
            "lesions": [r["count"] for r in rows],
        }
    )
    chart = (
        alt.Chart(chart_data)
        .mark_bar()
        .encode(
            x=alt.X("lesion:N", sort=list(CLASSES), title=None, axis=alt.Axis(labelAngle=0)),
            # At least 0-1 %: an all-zero column would otherwise get a degenerate axis.
            y=alt.Y("% of field of view:Q", scale=alt.Scale(domain=[0, max(1.0, *chart_data["% of field of view"])])),
            color=alt.Color(
                "lesion:N",
                legend=None,
                scale=alt.Scale(domain=list(CLASSES), range=[_hex(COLOURS[c]) for c in CLASSES]),
            ),
            tooltip=["lesion", "% of field of view", "lesions"],
        )
        .properties(height=220)
    )
    right.altair_chart(chart, width="stretch")


def show_quality(found: dict) -> None:
    quality = found["quality"]
    if quality["verdict"] == "good":
        return
    text = f"Image quality: **{quality['verdict']}** — " + "; ".join(quality["reasons"])
    if quality["verdict"] == "ungradable":
        st.error(
            text + ". A grader would not read this photo; the results below may mean little.",
            icon=":material/visibility_off:",
        )
    else:
        st.warning(text + ". Read the results with care.", icon=":material/warning:")


def show_reading(found: dict) -> None:
    st.subheader("Reading")
    st.caption("Research indicators from the lesion masks and the image, not a diagnosis.")
    disc, fovea = found["optic_disc"], found["fovea"]
    parts = []
    if disc:
        parts.append(
            f"optic disc at ({disc['x']:.0f}, {disc['y']:.0f}), {disc['diameter_px']:.0f} px across "
            f"(confidence {disc['confidence']:.2f})"
        )
    else:
        parts.append("optic disc not found")
    parts.append(
        f"fovea at ({fovea['x']:.0f}, {fovea['y']:.0f}) (confidence {fovea['confidence']:.2f})"
        if fovea
        else "fovea not found"
    )
    if found["eye"]:
        parts.append(f"{found['eye']} eye")
    st.markdown("**Landmarks:** " + "; ".join(parts) + ".")
    grade = found["dme_risk"]
    label = "no grade" if grade is None else f"grade {grade}"
    st.markdown(f"**DME risk** (IDRiD's definition): **{label}** — {found['dme_reason']}.")
    st.markdown(f"**4-2-1 rule, haemorrhages:** {found['rule_421_reason']}.")
    if not found["zones"]:
        return
    counts = {(z["zone"], z["lesion"]): z["count"] for z in found["zones"]}
    zones = [*ETDRS_ZONES, "within_1dd"]
    table = pd.DataFrame(
        {c: [counts[(z, c)] for z in zones] for c in CLASSES}, index=[z.replace("_", " ") for z in zones]
    )
    left, right = st.columns([3, 2])
    left.markdown("Lesions by ETDRS subfield (counted where most of each lesion lies)")
    left.table(table)
    quadrants = pd.DataFrame(
        {c: [found["quadrant_counts"][c][q] for q in QUADRANTS] for c in ("HE", "MA", "HE+MA")}, index=list(QUADRANTS)
    )
    right.markdown("Haemorrhages and microaneurysms by quadrant")
    right.table(quadrants)


def show_masks(prediction: SquarePrediction, masks: np.ndarray, rows: list[dict]) -> None:
    st.subheader("Each lesion on its own")
    layers = np.concatenate([masks, prediction.fov[None]])  # one resize pass for the masks and the FOV
    _, small = downscale_for_display(prediction.image, layers, PREVIEW_SIDE // 2)
    fov = small[-1]
    for col, c, mask, row in zip(st.columns(4), CLASSES, small, rows):
        view = np.zeros(mask.shape + (3,), np.uint8)
        view[fov] = 40  # the field of view, dimly, for orientation
        view[mask] = COLOURS[c]
        caption = f"{c} {CLASS_NAMES[c]}: {_lesions(row['count'])}, {row['pixels']:,} px"
        col.image(encode_png(view), caption=caption, width="stretch", output_format="PNG")


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


def _fit(image: np.ndarray, max_side: int) -> np.ndarray:
    h, w = image.shape[:2]
    scale = max_side / max(h, w)
    if scale >= 1.0:
        return image
    return cv2.resize(image, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_AREA)


def _lesions(count: int) -> str:
    return f"{count} lesion" if count == 1 else f"{count} lesions"


def _hex(rgb: tuple[int, int, int]) -> str:
    return "#{:02x}{:02x}{:02x}".format(*rgb)


# --------------------------------------------------------------------------- page


def main() -> None:
    st.set_page_config(page_title="HydraLA-Net", page_icon=":material/visibility:", layout="wide")
    st.title("HydraLA-Net")
    st.markdown(
        "Finds the four lesions of diabetic retinopathy in colour fundus photographs: hard exudates "
        "(**EX**), haemorrhages (**HE**), microaneurysms (**MA**) and soft exudates (**SE**).  \n"
        f":warning: **{MEDICAL_NOTE}**"
    )

    source = st.session_state.get("model_source", os.environ.get("HYDRALANET_MODEL", "").strip())
    with st.sidebar:
        st.header("Model")
        try:
            loaded, warning = resolve_model(source)
        except (CheckpointError, ValueError, OSError) as exc:
            st.error(f"No model could be loaded: {exc}")
            st.stop()
        reset_controls(loaded)
        model_panel(loaded)
        settings = controls(loaded)
    if warning:
        st.warning(warning, icon=":material/cloud_off:")

    files = collect_inputs()
    if not files:
        st.info("Upload one or more fundus photos, or try the sample, to see the lesions.", icon=":material/upload:")
        st.stop()
    name, data = choose(files)
    settings = {**settings, "frame": st.session_state.frames.get(name)}
    prediction = segment(loaded, name, data, settings)
    facts = upload_facts(data)
    photo = photo_reading(prediction_key(loaded, data, settings), prediction, facts)

    # Everything below is cheap: thresholds, opacity and visibility never re-run the model.
    with render_gate().slot():
        masks = prediction.masks(settings["thresholds"])
        rows = lesion_statistics(masks, prediction.fov, settings["thresholds"])
    found = findings(photo, masks)
    small, small_masks = downscale_for_display(prediction.image, masks, PREVIEW_SIDE)
    overlay = render_overlay(small, small_masks, opacity=settings["opacity"], visible=settings["visible"])
    if settings["show_grid"]:
        dd = photo.maps.dd if photo.maps else None
        overlay = draw_grid(overlay, photo.landmarks, scale=small.shape[1] / prediction.image.shape[1], dd_px=dd)
    show_quality(found)
    show_views(prediction, small, overlay)
    show_statistics(rows)
    show_reading(found)
    show_zoom(prediction, masks, overlay, settings)
    show_masks(prediction, masks, rows)
    show_downloads(name, prediction, masks, rows, loaded, settings, found)
    show_report(
        name, ReportPhoto(Path(name).stem, prediction.image, masks, rows, photo, found, facts), loaded, settings
    )


main()
