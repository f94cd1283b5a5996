"""One visitor's latency on the web page, stage by stage: the page at full resolution
against the page on its working grid, side by side in one process.

For each photo and round, both ways in turn, the computations a page run makes (no Streamlit,
no browser: what the server's script computes between an upload and its drawing):

- ``decode``, ``preprocess`` (field of view, square, CLAHE, tensor), ``model``;
- ``grid`` (new only: the working grid of the prediction);
- ``overlay``: masks, statistics, the preview and its overlay, PNG-encoded: what the page shows
  first (new) — the old page showed it only with everything else;
- ``reading``: disc, fovea, quality and zone maps (old: at full resolution, new: working grid);
- ``draw``: the rest of a page run (findings, grid, zoom, each lesion on its own, the views'
  images, and for the old page the summaries);
- ``step``: a threshold step or a display toggle, with the reading in hand: the page's whole
  redraw (the old page recomputed everything for a toggle; so does the new one, on its grid).

``first overlay`` is decode + preprocess + model + grid + overlay for the new page, and the whole
first run (+ reading + draw) for the old one. Times are medians over ``--rounds``.

    .venv/bin/python tools/latency.py                          # a 4288 x 2848 JPEG (IDRiD, else made)
    .venv/bin/python tools/latency.py --rounds 5 --threads 1   # torch on one thread
    .venv/bin/python tools/latency.py --decoding               # reduced JPEG decoding: time and model change
"""

from __future__ import annotations

import argparse
import io
import statistics
import sys
import time
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run as a script from anywhere

from hydralanet import CLASSES, lesion_statistics, load_model, predict_square, read_image, render_overlay  # noqa: E402
from hydralanet.inference.segment import label_lesions, prepare_photo  # noqa: E402
from hydralanet.inference.working import working_photo  # noqa: E402
from hydralanet.io.images import encode_png  # noqa: E402
from hydralanet.reading.photo import LESION_EXCLUSION_P, findings, read_photo, read_working  # noqa: E402
from hydralanet.reading.zones import draw_grid  # noqa: E402
from hydralanet.report.overlay import downscale_for_display  # noqa: E402

IDRID_PHOTO = ROOT / "data/idrid/B. Disease Grading/1. Original Images/b. Testing Set/IDRiD_001.jpg"
PREVIEW, ZOOM = 720, 256  # the page's preview side and its zoom's starting region
STAGES = ("decode", "preprocess", "model", "grid", "overlay", "reading", "draw", "step")


class Clock:
    def __init__(self) -> None:
        self.times: dict[str, float] = {}
        self._last = time.perf_counter()

    def lap(self, stage: str) -> None:
        now = time.perf_counter()
        self.times[stage] = self.times.get(stage, 0.0) + now - self._last
        self._last = now


def model_run(loaded, data: bytes, clock: Clock):
    image = read_image(data)
    clock.lap("decode")
    prepared = prepare_photo(loaded.config.preprocessing, image)
    clock.lap("preprocess")
    prediction = predict_square(loaded, image, prepared=prepared)
    clock.lap("model")
    return prediction


def old_page(prediction, reading, thresholds: dict) -> None:
    """One run of the page as it was: everything at the photo's pixels."""
    masks = prediction.masks(thresholds)
    rows = lesion_statistics(masks, prediction.fov, thresholds)
    found = findings(reading, masks)
    small, small_masks = downscale_for_display(prediction.image, masks, PREVIEW)
    overlay = render_overlay(small, small_masks)
    dd = reading.maps.dd if reading.maps else None
    overlay = draw_grid(overlay, reading.landmarks, scale=small.shape[1] / prediction.image.shape[1], dd_px=dd)
    images = [small, downscale_for_display(prediction.enhanced, None, PREVIEW)[0], overlay]
    packed = np.packbits(masks, axis=-1)  # the zoom's masks
    bits = np.unpackbits(packed[:, :ZOOM, : ZOOM // 8], axis=-1).astype(bool)
    images.append(render_overlay(prediction.image[:ZOOM, :ZOOM], bits, outline=False))
    _, layers = downscale_for_display(prediction.image, np.concatenate([masks, prediction.fov[None]]), PREVIEW // 2)
    images += list(layers.astype(np.uint8) * 255)
    for array in images:
        encode_png(array)
    import json

    json.dumps({"results": rows, "findings": found})


def new_overlay(prediction, work, thresholds: dict):
    """What the new page shows first: the statistics and the overlay on the working grid."""
    masks = work.masks(thresholds)
    labelled = label_lesions(masks)
    work.statistics(masks, thresholds, labelled)
    small, small_masks = work.preview(prediction.image, PREVIEW), work.preview_masks(thresholds, PREVIEW)
    overlay = render_overlay(small, small_masks)
    work.kept("original png", lambda: encode_png(small))  # the page encodes these two once per photo
    work.kept("input png", lambda: encode_png(downscale_for_display(prediction.enhanced, None, PREVIEW)[0]))
    encode_png(overlay)
    return masks, labelled, small_masks, small, overlay


def new_rest(prediction, work, reading, shown: tuple, thresholds: dict) -> None:
    """The rest of a new page run, once the reading is in hand (``shown``: :func:`new_overlay`'s)."""
    masks, labelled, small_masks, small, overlay = shown
    findings(reading, masks, labelled)
    scale = small.shape[1] / prediction.image.shape[1]
    overlay = draw_grid(overlay, reading.landmarks, scale=scale, dd_px=reading.grid_unit_px)
    zoom = render_overlay(prediction.image[:ZOOM, :ZOOM], prediction.masks_in(thresholds, 0, ZOOM, 0, ZOOM))
    size = work.preview_size(PREVIEW // 2)
    layers = [cv2.resize(m.view(np.uint8) * np.uint8(255), size, interpolation=cv2.INTER_AREA) for m in small_masks]
    for array in [overlay, zoom, *layers]:
        encode_png(array)


def old_round(loaded, data: bytes, stepped: dict) -> dict[str, float]:
    clock = Clock()
    prediction = model_run(loaded, data, clock)
    lesions = prediction.masks(dict.fromkeys(CLASSES, LESION_EXCLUSION_P)).any(axis=0)
    reading = read_photo(prediction.image, prediction.fov, lesions=lesions)
    reading.maps = reading.maps.packed() if reading.maps else None
    clock.lap("reading")
    old_page(prediction, reading, loaded.config.thresholds)
    clock.lap("draw")
    old_page(prediction, reading, stepped)
    clock.lap("step")
    times = clock.times
    times["first overlay"] = sum(times[s] for s in ("decode", "preprocess", "model", "reading", "draw"))
    return times


def new_round(loaded, data: bytes, stepped: dict) -> dict[str, float]:
    clock = Clock()
    prediction = model_run(loaded, data, clock)
    work = working_photo(prediction)
    clock.lap("grid")
    thresholds = loaded.config.thresholds
    shown = new_overlay(prediction, work, thresholds)
    clock.lap("overlay")
    lesions = prediction.masks(dict.fromkeys(CLASSES, LESION_EXCLUSION_P)).any(axis=0)
    reading = read_working(work, prediction.image, prediction.fov, lesions=lesions)
    clock.lap("reading")
    new_rest(prediction, work, reading, shown, thresholds)
    clock.lap("draw")
    new_rest(prediction, work, reading, new_overlay(prediction, work, stepped), stepped)
    clock.lap("step")
    times = clock.times
    times["first overlay"] = sum(times[s] for s in ("decode", "preprocess", "model", "grid", "overlay"))
    return times


def timing_table(loaded, data: bytes, rounds: int) -> list[str]:
    stepped = {c: min(0.99, t + 0.01) for c, t in loaded.config.thresholds.items()}  # one slider stop up
    old, new = [], []
    new_round(loaded, data, stepped)  # warm-up: the fast path is built on first use
    for k in range(rounds):
        old.append(old_round(loaded, data, stepped))
        new.append(new_round(loaded, data, stepped))
        print(f"round {k + 1}/{rounds}: first overlay old {old[-1]['first overlay']:.2f} s, new "
              f"{new[-1]['first overlay']:.2f} s; step old {old[-1]['step']:.2f} s, new {new[-1]['step']:.2f} s",
              flush=True)  # fmt: skip

    def median(runs: list[dict], stage: str) -> str:
        values = [r[stage] for r in runs if stage in r]
        return f"{statistics.median(values):.3f}" if values else "-"

    lines = ["| stage | full resolution (old), s | working grid (new), s |", "|---|---:|---:|"]
    for stage in (*STAGES, "first overlay"):
        lines.append(f"| {stage} | {median(old, stage)} | {median(new, stage)} |")
    lines.append(
        f"| page complete | {median([{'x': r['first overlay']} for r in old], 'x')} | "
        f"{median([{'x': sum(r[s] for s in STAGES if s != 'step')} for r in new], 'x')} |"
    )
    return lines


def decoding_table(loaded, paths: list[Path]) -> list[str]:
    """Reduced JPEG decoding (Pillow's draft mode, DCT scaling): its time, and what it changes in
    the model's probabilities (max |dp| in the field of view) and masks (Dice per lesion)."""
    from PIL import Image

    lines = ["| photo | decode | time, s | max abs dp | Dice EX / HE / MA / SE |", "|---|---|---:|---:|---|"]
    thresholds = loaded.config.thresholds
    for path in paths:
        data = path.read_bytes()
        full = None
        for reduce in (1, 2, 4):
            started = time.perf_counter()
            pil = Image.open(io.BytesIO(data))
            if reduce > 1:
                pil.draft("RGB", (pil.width // reduce, pil.height // reduce))
            image = np.asarray(pil.convert("RGB"))
            seconds = time.perf_counter() - started
            prediction = predict_square(loaded, image)
            if full is None:
                full = prediction
                inside = full.geometry.field_to_square(full.fov)
                lines.append(f"| {path.name} | full | {seconds:.3f} | - | - |")
                continue
            dp = float(np.abs(prediction.square - full.square)[:, inside].max())
            dice = []
            for i, c in enumerate(CLASSES):
                a, b = (full.square[i] >= thresholds[c]) & inside, (prediction.square[i] >= thresholds[c]) & inside
                total = int(a.sum() + b.sum())
                dice.append(f"{2 * int((a & b).sum()) / total:.3f}" if total else "-")
            lines.append(f"| {path.name} | 1/{reduce} | {seconds:.3f} | {dp:.3f} | {' / '.join(dice)} |")
    return lines


def camera_jpeg() -> bytes:
    """A 4288 x 2848 JPEG from the CC0 sample photo (as ``tools/load_test.py`` makes it)."""
    from skimage import data

    canvas = np.zeros((2848, 4288, 3), np.uint8)
    canvas[:, 720:3568] = cv2.resize(cv2.cvtColor(data.retina(), cv2.COLOR_RGB2BGR), (2848, 2848))
    return cv2.imencode(".jpg", canvas, [cv2.IMWRITE_JPEG_QUALITY, 92])[1].tobytes()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("photos", nargs="*", type=Path, help="photos (default: one IDRiD 4288 x 2848 photo)")
    parser.add_argument("--model", help="checkpoint (default: the bundled model)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    parser.add_argument("--decoding", action="store_true", help="measure reduced JPEG decoding instead")
    args = parser.parse_args(argv)
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    loaded = load_model(args.model)
    photos = args.photos or ([IDRID_PHOTO] if IDRID_PHOTO.exists() else [])
    if args.decoding:
        print("\n".join(decoding_table(loaded, photos)))
        return 0
    for path in photos or [None]:
        data = path.read_bytes() if path else camera_jpeg()
        h, w = read_image(data).shape[:2]
        print(f"{path.name if path else 'made 4288 x 2848 JPEG'} ({w} x {h}), {torch.get_num_threads()} torch threads")
        print("\n".join(timing_table(loaded, data, args.rounds)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
