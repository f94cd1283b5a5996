"""HydraLA-Net web app: upload fundus photos, read the four lesion overlays, move thresholds.

Run with ``streamlit run app.py``. ``HYDRALANET_MODEL`` picks the model (a Hub source
``[spaces/]owner/name[@revision][:path]``, a checkpoint folder or a weights file; default: the
bundled ``weights/``). ``HYDRALANET_ALLOW_PICKLE=1`` lets the operator allow a pickled state
dict such as the original code's ``best_model.pt`` (read with ``weights_only=True``).

The page is thin: every computation is a ``hydralanet`` call; its parts are in ``webapp/``
(``serve``: what the server shares between visitors; ``sidebar``; ``results``; ``downloads``).
The network runs once per (image, preprocessing setting); thresholds, visibility, opacity and
zoom only re-render cached probabilities (docs/architecture.md#inference). The page draws, counts and reads on the
model's grid (``hydralanet.inference.working``: about 2 Mpixel where a camera's photo has 12), shows the
overlay as soon as the model answers and the reading once it is made; the downloads are made
at the photo's full resolution when clicked.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import weakref
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import streamlit as st

from hydralanet import (
    CLASSES,
    CheckpointError,
    ImageError,
    LoadedModel,
    SquarePrediction,
    predict_square,
    read_image,
    render_overlay,
)
from hydralanet.inference.segment import label_lesions
from hydralanet.io.images import IMAGE_EXTENSIONS, check_image, encode_png
from hydralanet.preprocessing import BlankImageError
from hydralanet.report.pdf import describe_training_data

if TYPE_CHECKING:
    from hydralanet.io.dicom import DicomFacts
from hydralanet.inference.working import WorkingPhoto, working_photo
from hydralanet.reading.photo import (
    LESION_EXCLUSION_P,
    PhotoReading,
    findings,
    read_photo,
    read_working,
    square_exudate_cores,
)
from hydralanet.reading.zones import draw_grid
from webapp.downloads import show_downloads, show_report
from webapp.overview import PhotoRow, photo_row, show_overview
from webapp.results import (
    PREVIEW_SIDE,
    show_legend,
    show_masks,
    show_quality,
    show_reading,
    show_statistics,
    show_views,
    show_zoom,
    waiting_for_reading,
    zoom_targets,
)
from webapp.serve import (
    keep_upload_replies,
    memory_budget,
    model_gate,
    queued_notice,
    render_gate,
    resolve_model,
    session_cache,
)
from webapp.sidebar import controls, model_panel, reset_controls

log = logging.getLogger("hydralanet.app")

SAMPLE_NAME = "retina_sample.png"
MEDICAL_NOTE = "Research software, not a medical device: not for diagnosis or clinical decisions."


# --------------------------------------------------------------------------- input


@st.cache_data(show_spinner=False)
def sample_png() -> bytes:
    """The CC0 fundus photo shipped with scikit-image, as an upload would arrive."""
    from skimage.data import retina

    return encode_png(retina())


def toggle_sample() -> None:
    st.session_state.use_sample = not st.session_state.get("use_sample")


def collect_inputs() -> list[tuple[str, bytes]]:
    left, right = st.columns([4, 1], vertical_alignment="center")
    uploads = left.file_uploader(
        "Fundus photos (JPEG, PNG, TIFF, DICOM)",
        type=[e.lstrip(".") for e in IMAGE_EXTENSIONS],
        accept_multiple_files=True,
        key="uploads",
    )
    if st.session_state.get("use_sample"):
        right.button("Remove the sample", on_click=toggle_sample, icon=":material/close:", width="stretch")
    else:
        right.button("Try a sample", on_click=toggle_sample, icon=":material/visibility:", width="stretch")
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
    from hydralanet.io.dicom import frame_count, frame_name, looks_like_dicom

    frames = frame_count(data) if looks_like_dicom(data, name) else 1
    if frames <= 1:
        return [(name, None)]
    stem, suffix = Path(name).stem, Path(name).suffix
    return [(frame_name(stem, k) + suffix, k) for k in range(1, frames + 1)]


def upload_facts(data: bytes) -> DicomFacts | None:
    """The DICOM header facts of an upload (no identifiers: the page never shows them), or None."""
    from hydralanet.io.dicom import DicomError, looks_like_dicom, read_facts

    if not looks_like_dicom(data):
        return None
    try:
        return read_facts(data)
    except DicomError:
        return None


def choose(files: list[tuple[str, bytes]]) -> tuple[str, bytes]:
    """The photo to show: what was just added, else the visitor's choice in the overview."""
    names = [name for name, _ in files]
    added = [name for name in names if name not in st.session_state.get("seen_names", ())]
    st.session_state.seen_names = names
    if added or st.session_state.get("image_choice") not in names:
        st.session_state.image_choice = (added or names)[-1]
        # A new table widget: its row selection (the old choice) must not stay highlighted.
        st.session_state.overview_round = st.session_state.get("overview_round", 0) + 1
    st.session_state.overview_key = f"overview_{st.session_state.get('overview_round', 0)}"
    if len(files) > 1:
        st.selectbox("Photo shown", names, key="image_choice")
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


@dataclasses.dataclass(frozen=True)
class Segmented:
    """What the session keeps of one model run: the prediction (full resolution on demand, for
    the downloads) and the same on the page's working grid."""

    prediction: SquarePrediction
    work: WorkingPhoto

    @property
    def nbytes(self) -> int:
        return self.prediction.nbytes + self.work.nbytes


def compute_prediction(loaded: LoadedModel, image: np.ndarray, settings: dict) -> Segmented:
    prediction = predict_square(
        loaded,
        image,
        clahe=settings["clahe"],
        tta=settings["tta"],
        precision=settings["precision"],
        crop=settings["crop"],
    )
    return Segmented(prediction, working_photo(prediction))


def compute_page_reading(segmented: Segmented, facts=None) -> PhotoReading:
    """The reading the page shows: on the working grid (:func:`hydralanet.reading.photo.read_working`)."""
    prediction = segmented.prediction
    return read_working(
        segmented.work,
        prediction.image,
        prediction.fov,
        lesions=prediction.masks(dict.fromkeys(CLASSES, LESION_EXCLUSION_P)).any(axis=0),
        laterality=facts.laterality if facts else None,  # a DICOM header's eye and pixel size
        mm_per_px=facts.mm_per_px if facts else None,
    )


def compute_reading(prediction: SquarePrediction, facts=None) -> PhotoReading:
    """The full-resolution reading the downloads use, as the session keeps it: zone maps packed
    one byte a pixel (12 MB, not 37, for a 12-Mpixel photo; unpacked exactly when read)."""
    lesions = prediction.masks(dict.fromkeys(CLASSES, LESION_EXCLUSION_P)).any(axis=0)
    reading = read_photo(
        prediction.image,
        prediction.fov,
        lesions=lesions,
        cores=square_exudate_cores(prediction.square, prediction.geometry, prediction.fov),
        laterality=facts.laterality if facts else None,  # a DICOM header's eye and pixel size
        mm_per_px=facts.mm_per_px if facts else None,
    )
    return reading if reading.maps is None else dataclasses.replace(reading, maps=reading.maps.packed())


def reading_bytes(reading: PhotoReading) -> int:
    return 0 if reading.maps is None else reading.maps.nbytes


def result_getter(loaded: LoadedModel, name: str, data: bytes, settings: dict, facts=None):
    """What a download needs when it is clicked: the prediction and reading from the session's
    cache, or made again if the memory budget dropped them. Downloads hold this, not the
    arrays, so a page's buttons keep no full-resolution masks alive."""
    cache, key = session_cache(), prediction_key(loaded, data, settings)

    def get() -> tuple[SquarePrediction, PhotoReading]:
        segmented = cache.get(key)
        if segmented is None:
            with model_gate().slot():
                image = read_image(data, name=name, frame=settings.get("frame"))
                segmented = compute_prediction(loaded, image, settings)
            cache.put(key, segmented, segmented.nbytes)
        prediction = segmented.prediction
        reading = cache.get(("reading", key))
        if reading is None:
            with model_gate().slot():
                reading = compute_reading(prediction, facts)
            cache.put(("reading", key), reading, reading_bytes(reading))
        return prediction, reading

    return get


def photo_reading(key: tuple, segmented: Segmented, facts=None, waiting=None) -> PhotoReading:
    """Disc, fovea, quality and zone maps of the photo on the working grid: once per
    prediction, kept beside it in the session (thresholds only re-read the zones). ``waiting``:
    an ``st.empty`` to say what is being done in (default: a new one)."""
    cache = session_cache()
    reading = cache.get(("page reading", key))
    if reading is None:
        # A heavy job (the landmark search and the quality checks), in turn with the model's jobs
        # but before the segmentations waiting: a visitor's page is completed before the next
        # photo is segmented (and its results are not let go by the memory budget meanwhile).
        waiting = waiting or st.empty()
        with model_gate().slot(on_wait=queued_notice(waiting, "the reading"), first=True):
            waiting_for_reading(waiting)
            reading = compute_page_reading(segmented, facts)
        waiting.empty()
        cache.put(("page reading", key), reading, reading_bytes(reading))
    return reading


class PhotoError(Exception):
    """A photo that cannot be read: its one-line message for the page."""


def segment(loaded: LoadedModel, name: str, data: bytes, settings: dict, waiting=None) -> Segmented:
    """The model's output for this image and preprocessing, from the session cache when
    possible. Bad input raises :class:`PhotoError` with a one-line message. Segmentations wait
    their turn in the process (:func:`model_gate`), and the page says so while they wait (in
    ``waiting``, an ``st.empty``, when given)."""
    key = prediction_key(loaded, data, settings)
    segmented = session_cache().get(key)
    if segmented is not None:
        return segmented
    try:
        check_image(data, name=name)  # a bad upload is answered at once, not after its turn
        waiting = waiting or st.empty()
        with model_gate().slot(on_wait=queued_notice(waiting, name)), st.spinner(f"Segmenting {name}…"):
            waiting.empty()
            image = read_image(data, name=name, frame=settings.get("frame"))
            # Counts real model calls; the tests read it to prove that thresholds do not re-run the model.
            st.session_state.model_runs = st.session_state.get("model_runs", 0) + 1
            segmented = compute_prediction(loaded, image, settings)
    except ImageError as exc:
        raise PhotoError(str(exc)) from None
    except BlankImageError as exc:
        raise PhotoError(f"{name}: {exc}") from None
    except Exception as exc:  # the page must keep serving whatever an upload does; details go to the log
        log.exception("segmenting %s failed", name)
        reason = (str(exc).strip() or type(exc).__name__).splitlines()[0]
        raise PhotoError(f"{name}: could not be segmented ({reason})") from None
    session_cache().put(key, segmented, segmented.nbytes)
    return segmented


# --------------------------------------------------------------------------- page


def main() -> None:
    keep_upload_replies()
    st.set_page_config(page_title="HydraLA-Net", page_icon=":material/visibility:", layout="wide")
    st.title("HydraLA-Net")
    st.markdown(
        "Finds the four lesions of diabetic retinopathy in colour fundus photographs: hard exudates "
        "(**EX**), haemorrhages (**HE**), microaneurysms (**MA**) and soft exudates (**SE**).  \n"
        f":warning: **{MEDICAL_NOTE}**"
    )

    try:  # the operator's settings: a bad one is a line on the page, not a traceback
        memory_budget()
        model_gate()
        render_gate()
    except ValueError as exc:
        st.error(str(exc), icon=":material/error:")
        st.stop()
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
    st.caption(
        f"Model: **{loaded.identity['name']}**, trained on {describe_training_data(loaded.config.provenance)}. "
        "Details in the sidebar."
    )

    files = collect_inputs()
    if not files:
        st.info("Upload one or more fundus photos, or try the sample, to see the lesions.", icon=":material/upload:")
        st.stop()
    name, data = choose(files)
    names = [n for n, _ in files]
    overview = st.empty() if len(files) > 1 else None
    # Overview rows are kept while what they depend on (the photo's prediction, the thresholds) is unchanged.
    current = {n: row_key(loaded, d, settings, n) for n, d in files}
    kept = st.session_state.get("overview_rows", {})
    rows = {n: row for n, (key, row) in kept.items() if current.get(n) == key}

    def changed() -> None:  # kept at once: a rerun may stop this one before its end
        st.session_state.overview_rows = {n: (current[n], row) for n, row in rows.items()}
        if overview is not None:
            show_overview(overview, names, rows, name, selectable=False)

    changed()
    rows[name] = show_chosen(loaded, name, data, settings, (name, current[name]))
    changed()
    if overview is not None:
        read_the_others(loaded, files, settings, rows, changed)
        show_overview(overview, names, rows, name, selectable=True)


def show_chosen(loaded: LoadedModel, name: str, data: bytes, settings: dict, shown: tuple) -> PhotoRow:
    """The chosen photo's results, or its one-line error; returns its overview row. ``shown``:
    what identifies this photo's results (name, prediction, thresholds)."""
    # A photo not shown before replaces the last one's results at once by a line (an element at
    # their place: Streamlit keeps a container's old children until the run ends, and merges an
    # st.empty() with a container sent right after it), so they never stay under the new name.
    slot = st.empty()
    if st.session_state.get("shown") != shown:
        slot.info(f"Reading {name}…", icon=":material/hourglass_top:")
    st.session_state.shown = shown
    settings = frame_settings(settings, name)
    try:
        segmented = segment(loaded, name, data, settings)
    except PhotoError as exc:
        slot.error(str(exc), icon=":material/error:")
        return PhotoRow(name, problem=str(exc))
    # Everything below is cheap: thresholds, opacity and visibility never re-run the model, and
    # the page draws on the working grid (a few MB), in one of the process's redraw slots.
    with slot.container(), render_gate().slot():
        return draw_results(loaded, name, data, settings, segmented, upload_facts(data))


def read_the_others(
    loaded: LoadedModel, files: list[tuple[str, bytes]], settings: dict, rows: dict[str, PhotoRow], changed
) -> None:
    """The overview rows of the photos not shown, one after the other (their results are kept,
    so showing one later is immediate); ``changed()`` after each."""
    progress = st.empty()
    for name, data in files:
        if name in rows:
            continue
        progress.caption(f"Reading {name} for the overview…")
        try:
            segmented, photo = read_one(loaded, name, data, settings, progress)
            rows[name] = overview_row(name, segmented, photo, settings)
        except PhotoError as exc:
            rows[name] = PhotoRow(name, problem=str(exc))
        changed()
    progress.empty()


def frame_settings(settings: dict, name: str) -> dict:
    return {**settings, "frame": st.session_state.frames.get(name)}


def row_key(loaded: LoadedModel, data: bytes, settings: dict, name: str) -> tuple:
    """What an overview row depends on: the prediction and the thresholds."""
    thresholds = tuple(settings["thresholds"][c] for c in CLASSES)
    return prediction_key(loaded, data, frame_settings(settings, name)), thresholds


def read_one(
    loaded: LoadedModel, name: str, data: bytes, settings: dict, waiting=None
) -> tuple[Segmented, PhotoReading]:
    """The prediction and the page's reading of one photo (from the session cache when possible)."""
    settings = frame_settings(settings, name)
    segmented = segment(loaded, name, data, settings, waiting)
    photo = photo_reading(prediction_key(loaded, data, settings), segmented, upload_facts(data), waiting)
    return segmented, photo


def overview_row(name: str, segmented: Segmented, photo: PhotoReading, settings: dict) -> PhotoRow:
    work = segmented.work
    masks = work.masks(settings["thresholds"])
    rows = work.statistics(masks, settings["thresholds"])
    return photo_row(name, work.photo_shape, rows, findings(photo, masks))


def draw_results(
    loaded: LoadedModel, name: str, data: bytes, settings: dict, segmented: Segmented, facts: DicomFacts | None
) -> PhotoRow:
    """The results of one photo at the current thresholds: views, statistics, reading, zoom,
    each lesion on its own, downloads and the report; returns its overview row. The overlay
    and the statistics are drawn first; the reading (disc, fovea, grid, DME risk) fills in once
    it is made (at once when the session has it)."""
    prediction, work = segmented.prediction, segmented.work
    masks = work.masks(settings["thresholds"])
    labelled = label_lesions(masks)  # once, for the statistics, the zones and the zoom
    rows = work.statistics(masks, settings["thresholds"], labelled)
    small = work.preview(prediction.image, PREVIEW_SIDE)
    small_masks = work.preview_masks(settings["thresholds"], PREVIEW_SIDE)
    overlay = render_overlay(small, small_masks, opacity=settings["opacity"], visible=settings["visible"])
    quality, views, legend = st.empty(), show_views(prediction, work, overlay), st.empty()
    show_statistics(rows, work)
    key = prediction_key(loaded, data, settings)
    photo = photo_reading(key, segmented, facts, st.empty())
    found = findings(photo, masks, labelled)
    if settings["show_grid"]:
        scale = small.shape[1] / prediction.image.shape[1]
        overlay = draw_grid(overlay, photo.landmarks, scale=scale, dd_px=photo.grid_unit_px)
        views.image(encode_png(overlay), caption="Lesion overlay", width="stretch", output_format="PNG")
    with quality.container():
        show_quality(found)
    with legend.container():
        show_legend(settings["visible"], settings["show_grid"] and photo.landmarks.disc is not None)
    show_reading(found)
    targets = zoom_targets(found, labelled, settings["visible"], work)
    show_zoom(weakref.ref(prediction), overlay, settings, targets, f"{name} {key[0]}")
    show_masks(work, small_masks, rows)
    get = result_getter(loaded, name, data, settings, facts)
    show_downloads(name, get, loaded, settings)
    show_report(name, get, facts, loaded, settings)
    return photo_row(name, work.photo_shape, rows, found)


main()
