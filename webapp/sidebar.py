"""The sidebar: the model panel (identity, metrics, loader) and the controls (preprocessing,
thresholds, display)."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from hydralanet import (
    CLASSES,
    LoadedModel,
)
from hydralanet.config import CLAHE_MODES, CLASS_NAMES, CROP_MODES, format_threshold, threshold_stops
from webapp.serve import load_requested_model, model_locked

PRECISIONS = {"fast": "auto", "exact (fp32)": "fp32"}
CROP_LABELS = {"fov": "whole field of view", "centre_square": "centre square (original code)"}


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
