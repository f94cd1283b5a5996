"""The result views: original / model input / overlay, zoom, statistics, quality, the reading
and each lesion on its own."""

from __future__ import annotations

import altair as alt
import cv2
import numpy as np
import pandas as pd
import streamlit as st

from hydralanet import (
    CLASSES,
    COLOURS,
    SquarePrediction,
    render_overlay,
)
from hydralanet.config import CLASS_NAMES, format_threshold
from hydralanet.io import encode_png
from hydralanet.overlay import downscale_for_display, legend_html
from hydralanet.zones import ETDRS_ZONES, QUADRANTS

PREVIEW_SIDE = 720  # images are shown at most this large; downloads and statistics stay full size
ZOOM_SIDE = 480  # the zoomed crop is shown this large, upscaled nearest-neighbour
ZOOM_FACTORS = (2, 4, 8, 16, 32)


def show_views(prediction: SquarePrediction, small: np.ndarray, overlay: np.ndarray) -> None:
    clahe = prediction.settings["clahe"]
    h, w = prediction.image.shape[:2]
    cols = st.columns(3)
    cols[0].image(small, caption=f"Original ({w} x {h})", width="stretch")
    view = f"CLAHE {clahe}" if clahe != "off" else "no CLAHE"
    cols[1].image(
        downscale_for_display(prediction.enhanced, None, PREVIEW_SIDE)[0],
        caption=f"Model input: field of view, {view}",
        width="stretch",
    )
    cols[2].image(encode_png(overlay), caption="Lesion overlay", width="stretch", output_format="PNG")
    st.markdown(legend_html(), unsafe_allow_html=True)


@st.fragment  # moving the zoom reruns only this part of the page
def show_zoom(prediction_ref, packed: np.ndarray, overlay: np.ndarray, settings: dict) -> None:
    """``prediction_ref``: a weak reference (the fragment keeps its arguments while the page is
    open: it must not keep the photo alive once the memory budget let it go); ``packed``: the
    masks packed 8 pixels a byte along x (``np.packbits(masks, axis=-1)``)."""
    st.subheader("Zoom")
    prediction = prediction_ref()
    if prediction is None:  # the result was dropped: the whole page makes it again
        st.rerun()
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
    bits = np.unpackbits(packed[:, y0 : y0 + side, x0 // 8 : (x0 + side + 7) // 8], axis=-1).astype(bool)
    crop = render_overlay(
        image[y0 : y0 + side, x0 : x0 + side],
        bits[:, :, x0 % 8 : x0 % 8 + side],
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


def _lesions(count: int) -> str:
    return f"{count} lesion" if count == 1 else f"{count} lesions"


def _hex(rgb: tuple[int, int, int]) -> str:
    return "#{:02x}{:02x}{:02x}".format(*rgb)
