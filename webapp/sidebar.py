"""The sidebar: the model panel (identity, metrics, loader) and the controls (preprocessing,
thresholds, display)."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from hydralanet import (
    CLASSES,
    LoadedModel,
)
from hydralanet.config import CLAHE_MODES, CLASS_NAMES, CROP_MODES, threshold_stops
from hydralanet.report.pdf import describe_training_data
from webapp.results import threshold_text
from webapp.serve import load_requested_model, model_locked

PRECISIONS = {"fast": "auto", "exact (fp32)": "fp32"}
CROP_LABELS = {"fov": "whole field of view", "centre_square": "centre square (original code)"}
CLAHE_LABELS = {"green": "CLAHE on the green channel", "lab": "CLAHE on lightness", "casp": "CLAHE on every channel"}

EXPORTED = {"ONNX Runtime": "exported to ONNX", "OpenVINO": "exported to OpenVINO IR"}


def reset_controls(loaded: LoadedModel) -> None:
    """Thresholds, CLAHE, crop and TTA follow the checkpoint's defaults, whenever the model changes."""
    model_key = (loaded.identity["source"], loaded.identity["sha256"])
    if st.session_state.get("defaults_for") == model_key:
        return
    st.session_state.defaults_for = model_key
    reset_thresholds(loaded)
    clahe = loaded.config.preprocessing.clahe
    st.session_state.clahe_on = clahe != "off"
    st.session_state.clahe_mode = clahe if clahe != "off" else CLAHE_MODES[0]
    st.session_state.crop = loaded.config.preprocessing.crop
    st.session_state.tta = loaded.config.tta


def reset_thresholds(loaded: LoadedModel) -> None:
    for c in CLASSES:
        st.session_state[f"threshold_{c}"] = float(loaded.config.thresholds[c])


def model_panel(loaded: LoadedModel) -> None:
    identity, config = loaded.identity, loaded.config
    provenance = config.provenance
    pre = config.preprocessing
    st.markdown(f"**{identity['name']}**")
    where = "bundled with the app" if identity["source"] == "bundled" else identity["source"]
    lines = [
        f"From: {where}" + (f" (revision {identity['revision']})" if identity.get("revision") else ""),
        f"Network: {config.model.encoder} encoder, {identity['parameters'] / 1e6:.1f} million parameters",
        f"Reads: the {CROP_LABELS.get(pre.crop, pre.crop)} at {pre.input_size} px, {clahe_label(pre.clahe)}",
        f"Weights file: {identity.get('file') or 'not recorded'}, fingerprint {identity['sha256'][:12]}",
        f"Runs on: {'the CPU' if str(loaded.device) == 'cpu' else str(loaded.device).upper()}"
        + (
            f", with {loaded.runtime} ({EXPORTED.get(loaded.runtime, 'exported')})" if loaded.runtime != "torch" else ""
        ),
    ]
    st.caption("  \n".join(lines))
    if identity.get("converted_from"):
        st.info(
            f"Converted from {identity['converted_from']}: its accuracy is unknown until it is scored "
            "(`python -m training.evaluate`).",
            icon=":material/swap_horiz:",
        )
    if provenance.get("trained") is False:
        st.warning("Untrained placeholder (random weights): its masks mean nothing.", icon=":material/warning:")
    with st.expander("Training data and accuracy"):
        st.markdown(f"Trained on {describe_training_data(provenance)}.")
        table, notes = accuracy_table(provenance.get("metrics"), provenance.get("metrics_note"))
        if table is None:
            st.markdown("Accuracy: not recorded.")
        else:
            st.markdown("F1 score per lesion kind (1.00 = every lesion pixel found, nothing else marked):")
            st.table(table)
            for note in notes:
                st.caption(note)
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


METRIC_SETS = {"val": "validation", "test": "test", "crosscheck": "cross-check"}


def accuracy_table(metrics: object, notes: object) -> tuple[pd.DataFrame | None, list[str]]:
    """The F1 of each lesion kind and their mean, one column per set the checkpoint was scored
    on (``{set: {lesion: {measure: value}}}``, a set's scores possibly under ``"overall"``),
    and what each set is. None when nothing usable is recorded."""
    if not isinstance(metrics, dict):
        return None, []
    columns, described = {}, []
    for name, scores in metrics.items():
        scores = scores.get("overall", scores) if isinstance(scores, dict) else None
        if not isinstance(scores, dict):
            continue
        f1 = {c: scores[c].get("f1") for c in (*CLASSES, "macro") if isinstance(scores.get(c), dict)}
        f1 = {c: v for c, v in f1.items() if isinstance(v, (int, float))}
        if not f1:
            continue
        label = METRIC_SETS.get(name, name)
        columns[label] = {("mean" if c == "macro" else c): f"{v:.2f}" for c, v in f1.items()}
        if isinstance(notes, dict) and isinstance(notes.get(name), str):
            described.append(f"{label.capitalize()}: {notes[name]}")
    if not columns:
        return None, []
    return pd.DataFrame(columns).fillna("–"), described


def threshold_label(value: float, default: float) -> str:
    """A slider stop: two decimals (finer near 0 and 1), the model's own threshold marked (it
    may lie between two stops of 0.01: 0.29 and 0.29 (model's) for 0.2916)."""
    return threshold_text(value) + (" (model's)" if value == default else "")


def clahe_label(mode: str) -> str:
    return "no contrast enhancement" if mode == "off" else f"contrast enhanced ({CLAHE_LABELS.get(mode, mode)})"


def controls(loaded: LoadedModel) -> dict:
    st.subheader("Preprocessing")
    clahe_on = st.toggle("CLAHE contrast enhancement", key="clahe_on")
    mode = st.selectbox(
        "CLAHE mode",
        [m for m in CLAHE_MODES if m != "off"],
        key="clahe_mode",
        format_func=lambda mode: CLAHE_LABELS[mode],
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
    extra = loaded.config.extra_scales()
    cost = 3 * (1 + sum(f * f for f in extra))  # three flips per view; a view costs its area
    tta = st.toggle(
        "Test-time augmentation",
        key="tta",
        help="average the plain, left-right and up-down flipped photo"
        + (f" at {1 + len(extra)} input sizes" if extra else "")
        + f": about {cost:.0f}x the model's time (the model's thresholds were tuned with it when it is on by default)",
    )
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
            format_func=lambda value, default=loaded.config.thresholds[c]: threshold_label(value, default),
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
