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
from hydralanet.inference.working import WorkingPhoto
from hydralanet.io.images import encode_png
from hydralanet.reading.zones import ETDRS_ZONES, QUADRANTS
from hydralanet.report.overlay import downscale_for_display

GRID_CYAN = (0, 229, 255)  # hydralanet.reading.zones.draw_grid: the disc circle and the fovea cross
PREVIEW_SIDE = 720  # images are shown at most this large; downloads stay full size
ZOOM_SIDES = (1024, 512, 256, 128, 64)  # photo px across the zoomed view; 64: 5 screen px each on a phone
ZOOM_RENDER = 768  # px the region is drawn at (nearest neighbour): sharp in a view up to this wide
ZOOM_HELP = "Fewer pixels across: more magnified. At 64 px each photo pixel is a square of 5 or more screen pixels."


def show_views(prediction: SquarePrediction, work: WorkingPhoto, overlay: np.ndarray):
    """The original, the model's input and the overlay side by side; returns the overlay's place
    (an ``st.empty``: the grid is drawn on it once the reading is made). The first two are
    encoded once per photo (``work.kept``)."""
    clahe = prediction.settings["clahe"]
    h, w = prediction.image.shape[:2]
    cols = st.columns(3)
    original = work.kept("original png", lambda: encode_png(work.preview(prediction.image, PREVIEW_SIDE)))
    cols[0].image(original, caption=f"Original ({w} x {h})", width="stretch", output_format="PNG")
    view = f"CLAHE {clahe}" if clahe != "off" else "no CLAHE"
    model_input = work.kept(
        "input png", lambda: encode_png(downscale_for_display(prediction.enhanced, None, PREVIEW_SIDE)[0])
    )
    cols[1].image(model_input, caption=f"Model input: field of view, {view}", width="stretch", output_format="PNG")
    slot = cols[2].empty()
    slot.image(encode_png(overlay), caption="Lesion overlay", width="stretch", output_format="PNG")
    return slot


def waiting_for_reading(slot) -> None:
    """What ``slot`` (an ``st.empty``) says while the reading of a photo is made."""
    slot.info("Finding the optic disc and the fovea…", icon=":material/hourglass_top:")


def show_legend(visible: dict[str, bool], grid: bool) -> None:
    """What the overlay draws: the lesion kinds shown, and the disc, fovea and grid when drawn.
    Each swatch stays beside its label (an item never wraps inside)."""
    items = [
        f"{_swatch(f'background:{_hex(COLOURS[c])};border:1px solid #333')}{c} {CLASS_NAMES[c]}"
        for c in CLASSES
        if visible[c]
    ]
    if grid:
        items += [
            f"{_swatch(f'border:2px solid {_hex(GRID_CYAN)};border-radius:50%')}optic disc (circle)",
            f"<span style='color:{_hex(GRID_CYAN)};font-weight:bold;margin-right:0.3em'>+</span>fovea",
            f"{_swatch('border:2px solid #999;border-radius:50%;background:white')}ETDRS grid: circles of 1, 3 "
            "and 6 mm about the fovea (1 disc diameter = 1.5 mm), split into superior, nasal, inferior and "
            "temporal subfields",
        ]
    if not items:
        st.caption("No lesion kind is shown (Display, in the sidebar).")
        return
    html = "".join(f"<span style='display:inline-block;margin:0 1.2em 0.2em 0'>{item}</span>" for item in items)
    st.markdown(f"<div style='font-size:0.9em'>{html}</div>", unsafe_allow_html=True)


def _swatch(style: str) -> str:
    return (
        f"<span style='display:inline-block;width:0.9em;height:0.9em;{style};"
        "margin-right:0.35em;vertical-align:middle;box-sizing:border-box'></span>"
    )


def zoom_targets(
    found: dict, labelled: list[tuple], visible: dict[str, bool], work: WorkingPhoto, count: int = 8
) -> list[tuple[str, int, int]]:
    """Where the zoom can be centred, ``(label, x, y)`` in photo pixels: the fovea, the
    ``count`` largest lesions of the kinds shown (``labelled``: the working masks' lesions,
    :func:`hydralanet.inference.segment.label_lesions`; areas in photo pixels), the optic disc and the
    photo's centre, each when there is one; the zoom starts on the first."""
    targets = []
    if found["fovea"]:
        targets.append(("the fovea", round(found["fovea"]["x"]), round(found["fovea"]["y"])))
    lesions = []
    for c, (n, _, stats, centres) in zip(CLASSES, labelled):
        if visible[c]:
            lesions += [(int(stats[k, cv2.CC_STAT_AREA]), c, centres[k]) for k in range(1, n)]
    lesions.sort(key=lambda lesion: -lesion[0])
    g, scale = work.geometry, work.scale
    for rank, (area, c, (x, y)) in enumerate(lesions[:count], 1):
        # pixel centres: working pixel x covers photo pixels x * scale .. (x + 1) * scale
        x, y = (x + 0.5) * scale - 0.5 + g.box[2] - g.pad_left, (y + 0.5) * scale - 0.5 + g.box[0] - g.pad_top
        targets.append((f"lesion {rank}: {CLASS_NAMES[c]}, {round(area * work.pixel_area):,} px", round(x), round(y)))
    if found["optic_disc"]:
        targets.append(("the optic disc", round(found["optic_disc"]["x"]), round(found["optic_disc"]["y"])))
    h, w = work.photo_shape
    return [*targets, ("the centre of the photo", w // 2, h // 2)]


@st.fragment  # moving the zoom reruns only this part of the page
def show_zoom(prediction_ref, overlay: np.ndarray, settings: dict, targets: list, photo: str) -> None:
    """``prediction_ref``: a weak reference (the fragment keeps its arguments while the page is
    open: it must not keep the photo alive once the memory budget let it go); the region shown
    is thresholded at the photo's own pixels (``SquarePrediction.masks_in``); ``targets``:
    :func:`zoom_targets`; ``photo``: what identifies the photo (the zoom starts afresh on another)."""
    st.subheader("Zoom")
    prediction = prediction_ref()
    if prediction is None:  # the result was dropped: the whole page makes it again
        st.rerun()
    image = prediction.image
    h, w = image.shape[:2]
    sides = sorted({min(side, h, w) for side in ZOOM_SIDES}, reverse=True)
    labels = [label for label, _, _ in targets]
    if st.session_state.get("zoom_for") != photo or st.session_state.get("zoom_target") not in labels:
        # A new photo: start on the fovea (or the largest lesion), magnified.
        st.session_state.zoom_for = photo
        st.session_state.zoom_target = labels[0]
        st.session_state.zoom_side = sides[min(2, len(sides) - 1)]
        _centre_on(targets)
    controls = st.columns([2, 2, 1, 1])
    controls[0].selectbox("Centre on", labels, key="zoom_target", on_change=_centre_on, args=(targets,))
    side = controls[1].select_slider(
        "Region shown", sides, key="zoom_side", format_func=lambda s: f"{s} px across", help=ZOOM_HELP
    )
    cx = controls[2].number_input("x (px)", 0, w - 1, key="zoom_x", step=max(1, side // 4))
    cy = controls[3].number_input("y (px)", 0, h - 1, key="zoom_y", step=max(1, side // 4))
    x0 = int(np.clip(round(cx - side / 2), 0, w - side))
    y0 = int(np.clip(round(cy - side / 2), 0, h - side))
    crop = render_overlay(
        image[y0 : y0 + side, x0 : x0 + side],
        prediction.masks_in(settings["thresholds"], y0, y0 + side, x0, x0 + side),
        opacity=settings["opacity"],
        visible=settings["visible"],
        outline=False,
    )
    zoomed = cv2.resize(crop, (ZOOM_RENDER, ZOOM_RENDER), interpolation=cv2.INTER_NEAREST)

    left, right = st.columns(2)  # the zoomed view is as wide as the overview beside it
    scale = overlay.shape[1] / w
    box = (round(x0 * scale), round(y0 * scale)), (round((x0 + side) * scale) - 1, round((y0 + side) * scale) - 1)
    boxed = cv2.rectangle(overlay.copy(), *box, (255, 255, 255), max(1, PREVIEW_SIDE // 360))
    left.image(encode_png(boxed), caption="The white box is the region zoomed", width="stretch", output_format="PNG")
    caption = f"{side} x {side} px of the photo from ({x0}, {y0}), each photo pixel drawn as a square"
    right.image(encode_png(zoomed), caption=caption, width="stretch", output_format="PNG")


def _centre_on(targets: list) -> None:
    _, x, y = next(t for t in targets if t[0] == st.session_state.zoom_target)
    st.session_state.zoom_x, st.session_state.zoom_y = x, y


def show_statistics(rows: list[dict], work: WorkingPhoto) -> None:
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
            {"threshold": threshold_text, "pixels": "{:,}", "% of FOV": "{:.3f}", "largest (px)": "{:,}"}
        ),
        hide_index=True,
    )
    n = work.geometry.size
    left.caption(
        "% of FOV: share of the field of view. Lesions: connected regions (8-connected). "
        + (
            f"Counted on the field of view at {n} x {n} px, pixels in the photo's pixels (each counted "
            f"{work.pixel_area:.3g}): close to, not exactly, the full-resolution figures of the downloads."
            if work.scale > 1
            else ""
        )
    )
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
    text = f"Image quality: **{quality['verdict']}** — " + "; ".join(quality_reasons(quality))
    if quality["verdict"] == "ungradable":
        st.error(
            text + ". A grader would not read this photo; the results below may mean little.",
            icon=":material/visibility_off:",
        )
    else:
        st.warning(text + ". Read the results with care.", icon=":material/warning:")


def quality_reasons(quality: dict) -> list[str]:
    """What failed, in words ("uneven illumination"): each reason without its measure and limit
    ("illumination_ratio 0.437 (< 0.45)"), which the JSON download keeps."""
    return [reason.partition(":")[0] for reason in quality["reasons"]]


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
    for note in [*found.get("landmark_notes", []), *filter(None, [found.get("scale", {}).get("warning")])]:
        st.warning(note[:1].upper() + note[1:] + ".", icon=":material/warning:")
    grade = found["dme_risk"]
    label = "no grade" if grade is None else f"grade {grade}"
    st.markdown(f"**DME risk estimate** (IDRiD's definition): **{label}** — {found['dme_reason']}.")
    st.markdown(f"**4-2-1 rule, haemorrhages:** {found['rule_421_reason']}.")
    estimate = found.get("retinopathy_estimate")
    if estimate:
        st.markdown(f"**Retinopathy, research indicator:** {describe_retinopathy(estimate)}.")
    if not found["zones"]:
        return
    counts = {(z["zone"], z["lesion"]): z["count"] for z in found["zones"]}
    zones = [*ETDRS_ZONES, "within_1dd"]
    table = pd.DataFrame({c: [counts[(z, c)] for z in zones] for c in CLASSES}, index=[zone_label(z) for z in zones])
    left, right = st.columns([3, 2])
    left.markdown("Lesions by ETDRS subfield (counted where most of each lesion lies)")
    left.table(table)
    quadrants = pd.DataFrame(
        {c: [found["quadrant_counts"][c][q] for q in QUADRANTS] for c in ("HE", "MA", "HE+MA")}, index=list(QUADRANTS)
    )
    right.markdown("Haemorrhages and microaneurysms by quadrant")
    right.table(quadrants)


def describe_retinopathy(estimate: dict) -> str:
    """The lesion-based retinopathy indicator in words (``findings["retinopathy_estimate"]``)."""
    flag = "referable retinopathy likely" if estimate["referable_likely"] else "below the referable cut-off"
    return f"{estimate['label']}; lesion burden {estimate['lesion_burden']:g} ({flag}); {estimate['note']}"


def zone_label(zone: str) -> str:
    """An ETDRS zone for people: "inner superior", "outside the grid", "within 1 DD of the fovea"."""
    return {"within_1dd": "within 1 DD of the fovea", "outside_grid": "outside the grid"}.get(
        zone, zone.replace("_", " ")
    )


def show_masks(work: WorkingPhoto, shown: np.ndarray, rows: list[dict]) -> None:
    """``shown``: the masks on the overlay's preview (bool ``4 x h x w``, ``work.to_preview``);
    ``rows``: their statistics. Each is drawn at half that size (a pixel set where any under it is)."""
    st.subheader("Each lesion on its own")
    size = work.preview_size(PREVIEW_SIDE // 2)

    def halve(layer: np.ndarray) -> np.ndarray:
        return cv2.resize(layer.view(np.uint8) * np.uint8(255), size, interpolation=cv2.INTER_AREA) > 0

    fov = work.kept(("fov preview", size), lambda: halve(work.to_preview(work.fov[None], PREVIEW_SIDE)[0]))
    small = [halve(layer) for layer in shown]
    for col, c, mask, row in zip(st.columns(4), CLASSES, small, rows):
        view = np.zeros(mask.shape + (3,), np.uint8)
        view[fov] = 40  # the field of view, dimly, for orientation
        view[mask] = COLOURS[c]
        caption = f"{c} {CLASS_NAMES[c]}: {_lesions(row['count'])}, {row['pixels']:,} px"
        col.image(encode_png(view), caption=caption, width="stretch", output_format="PNG")


def threshold_text(value: float) -> str:
    """Two decimals, as the slider's steps between 0.05 and 0.95; the finer stops near 0 and 1
    keep the digits that tell them apart."""
    return f"{value:.2f}" if 0.05 <= value <= 0.95 else format_threshold(value)


def _lesions(count: int) -> str:
    return f"{count} lesion" if count == 1 else f"{count} lesions"


def _hex(rgb: tuple[int, int, int]) -> str:
    return "#{:02x}{:02x}{:02x}".format(*rgb)
