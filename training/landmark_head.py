"""Train the learned optic-disc and fovea locator (:mod:`hydralanet.reading.landmark_head`) on IDRiD.

    python -m training.landmark_head --idrid IDRIDROOT --out runs/landmark_head [--export weights]

IDRiD part C's 413 training photos with their graders' disc and fovea centres (the 103 test
photos are never read here): a fixed 330 train / 83 held-out split (``--seed``), the epoch with
the lowest held-out mean distance kept, and the confidence floors chosen on the held-out
photos: each the confidence under which at most :data:`FLOOR_LOSS` of the held-out photos found
within 0.5 DD fall (those below get no grade). ``OUT/cache.npz`` holds the FOV squares (built
once, 2-3 minutes), ``OUT/last.pt`` the state to ``--resume`` from (written atomically every
epoch), ``OUT/held_out.json`` the held-out distances; ``--export`` writes
``landmarks.safetensors`` + ``landmarks.json`` there. Runs on two CPU threads.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

import cv2
import numpy as np
import torch

from hydralanet.io.images import atomic_file, read_image, write_atomic
from hydralanet.preprocessing import fov_geometry, fov_mask
from hydralanet.reading.landmark_head import (
    HeadConfig,
    LandmarkHead,
    LandmarkNet,
    input_to_cell,
    normalise,
    photo_to_square,
    save_landmark_head,
)

from .datasets.idrid import parse_idrid_reading
from .idrid_reading import HELD_OUT, TOLERANCE_DD, held_out_names, idrid_disc_diameter

SIGMA_CELLS = 1.5  # the target heatmap's Gaussian, in heatmap cells (6 input px at stride 4)
FLOOR_LOSS = 0.02  # a floor may cost at most this share of the held-out photos found right
BATCH = 16
LR = 2e-3  # AdamW, cosine to 0 after a one-epoch warm-up
WEIGHT_DECAY = 1e-4
# Augmentation (the FOV square): mirror (laterality swaps), rotation, scale, shift, and light.
ROTATE_DEG, SCALE, SHIFT = 20.0, (0.85, 1.15), 0.06
GAMMA, BLUR_P = (0.7, 1.4), 0.3


def build_cache(root: Path, path: Path, size: int) -> dict[str, np.ndarray]:
    """The training photos' FOV squares at ``size`` px (as :class:`LandmarkHead` makes them),
    their FOV masks, the graders' centres in square pixels and the square's photo px per px."""
    records = sorted((r for r in parse_idrid_reading(root) if r.official_split == "train"), key=lambda r: r.image.stem)
    squares, insides, marks, scales, names = [], [], [], [], []
    for record in _progress(records, "caching the FOV squares"):
        image = read_image(record.image)
        fov = fov_mask(image)
        geometry = fov_geometry(fov, size)
        squares.append(geometry.to_square(image))
        insides.append(geometry.field_to_square(fov))
        labels = record.labels
        marks.append([photo_to_square(geometry, labels[f"{key}_x"], labels[f"{key}_y"]) for key in ("disc", "fovea")])
        scales.append(geometry.side / size)
        names.append(record.image.stem)
    data = {
        "squares": np.stack(squares),
        "insides": np.stack(insides),
        "marks": np.array(marks, np.float32),
        "scales": np.array(scales, np.float32),
        "names": np.array(names),
    }
    with atomic_file(path) as fh:
        np.savez(fh, **data)
    return data


def _progress(items, what: str):
    from tqdm import tqdm

    return tqdm(items, desc=what, file=sys.stderr, mininterval=5)


def augment(square, inside, marks, rng: np.random.Generator):
    """A random mirror, rotation, scale and shift of the square (its mask and marks with it),
    then gamma, a per-channel gain and sometimes a blur."""
    size = square.shape[0]
    marks = marks.copy()
    if rng.random() < 0.5:
        square, inside = square[:, ::-1], inside[:, ::-1]
        marks[:, 0] = size - 1 - marks[:, 0]
    centre = (size - 1) / 2
    matrix = cv2.getRotationMatrix2D((centre, centre), rng.uniform(-ROTATE_DEG, ROTATE_DEG), rng.uniform(*SCALE))
    matrix[:, 2] += rng.uniform(-SHIFT, SHIFT, 2) * size
    square = cv2.warpAffine(np.ascontiguousarray(square), matrix, (size, size), flags=cv2.INTER_LINEAR)
    inside = cv2.warpAffine(
        np.ascontiguousarray(inside).astype(np.uint8), matrix, (size, size), flags=cv2.INTER_NEAREST
    )
    marks = marks @ matrix[:, :2].T + matrix[:, 2]
    light = (square.astype(np.float32) / 255.0) ** rng.uniform(*GAMMA) * rng.uniform(0.8, 1.2, 3)
    if rng.random() < BLUR_P:
        light = cv2.GaussianBlur(light, (0, 0), rng.uniform(0.5, 1.5))
    return np.clip(light * 255, 0, 255).astype(np.uint8), inside > 0, marks.astype(np.float32)


def targets(marks: np.ndarray, cells: int, stride: int) -> torch.Tensor:
    """``B x 2 x 2`` marks (input px) -> ``B x 2 x cells x cells`` Gaussians summing to 1."""
    grid = torch.arange(cells, dtype=torch.float32)
    centre = input_to_cell(torch.from_numpy(marks), stride)  # B x 2 x (x, y)
    gx = torch.exp(-((grid - centre[..., 0:1]) ** 2) / (2 * SIGMA_CELLS**2))
    gy = torch.exp(-((grid - centre[..., 1:2]) ** 2) / (2 * SIGMA_CELLS**2))
    heat = gy[..., :, None] * gx[..., None, :]
    return heat / heat.flatten(2).sum(-1).clamp_min(1e-12)[..., None, None]


def heatmap_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Cross-entropy between the target distribution and the softmax over each map."""
    logp = torch.log_softmax(logits.flatten(2), -1)
    return -(target.flatten(2) * logp).sum(-1).mean()


def train_epoch(net, optimiser, schedule, data, index, config: HeadConfig, rng) -> float:
    net.train()
    order = rng.permutation(index)
    total = 0.0
    batches = range(0, len(order), BATCH)
    for start in _progress(batches, "train"):
        chosen = order[start : start + BATCH]
        inputs, marks = [], []
        for i in chosen:
            square, inside, mark = augment(data["squares"][i], data["insides"][i], data["marks"][i], rng)
            inputs.append(normalise(square, inside))
            marks.append(mark)
        logits = net(torch.from_numpy(np.stack(inputs)))
        loss = heatmap_loss(logits, targets(np.stack(marks), logits.shape[-1], config.stride))
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        schedule.step()
        total += float(loss) * len(chosen)
    return total / len(order)


def evaluate(net, data, index, config: HeadConfig, dd_px: float) -> dict:
    """Held-out distances (photo px, as the reading answers: mirrored copy averaged)."""
    head = LandmarkHead(net, config)
    rows = []
    for i in index:
        found = head.locate_square(data["squares"][i], data["insides"][i])
        k = float(data["scales"][i])
        row = {"image": str(data["names"][i])}
        for c, key in enumerate(("disc", "fovea")):
            error = float(np.hypot(*(found[c, :2] - data["marks"][i, c]))) * k
            row[f"{key}_error_px"], row[f"{key}_confidence"] = round(error, 1), round(float(found[c, 2]), 4)
        rows.append(row)
    summary = {}
    for key in ("disc", "fovea"):
        errors = np.array([r[f"{key}_error_px"] for r in rows])
        summary[key] = {
            "mean_px": round(float(errors.mean()), 1),
            "median_px": round(float(np.median(errors)), 1),
            f"within_{TOLERANCE_DD}_dd": round(float((errors <= TOLERANCE_DD * dd_px).mean()), 4),
        }
    return {"summary": summary, "rows": rows}


def choose_floor(rows: list[dict], key: str, dd_px: float) -> tuple[float, dict]:
    """The highest confidence under which at most :data:`FLOOR_LOSS` of the photos found within
    0.5 DD fall (to 3 decimals, as the reading reports confidences), and what it does here."""
    right = sorted(r[f"{key}_confidence"] for r in rows if r[f"{key}_error_px"] <= TOLERANCE_DD * dd_px)
    wrong = [r[f"{key}_confidence"] for r in rows if r[f"{key}_error_px"] > TOLERANCE_DD * dd_px]
    allowed = int(math.floor(FLOOR_LOSS * len(right)))
    floor = math.floor(float(right[allowed]) * 1000) / 1000 if right else 0.0
    effect = {
        "right_below": sum(c < floor for c in right),
        "right": len(right),
        "wrong_below": sum(c < floor for c in wrong),
        "wrong": len(wrong),
    }
    return max(floor, 0.0), effect


def save_state(path: Path, state: dict) -> None:
    with atomic_file(path) as fh:
        torch.save(state, fh)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.landmark_head", description=__doc__.split("\n")[0])
    parser.add_argument("--idrid", required=True, help="the IDRiD release's folder (A., B., C. ...)")
    parser.add_argument("--out", default="runs/landmark_head")
    parser.add_argument("--export", help="write landmarks.safetensors + landmarks.json here (e.g. weights)")
    parser.add_argument("--epochs", type=int, default=30)  # held-out distances level off by 20-30
    parser.add_argument("--size", type=int, default=HeadConfig.input_size)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--resume", action="store_true", help="continue from OUT/last.pt")
    args = parser.parse_args(argv)
    torch.set_num_threads(2)
    torch.manual_seed(args.seed)
    root, out = Path(args.idrid), Path(args.out)
    config = HeadConfig(input_size=args.size)
    cache = out / f"cache_{args.size}.npz"
    data = dict(np.load(cache)) if cache.exists() else build_cache(root, cache, args.size)
    dd_px = idrid_disc_diameter(root)
    held = set(held_out_names(data["names"].tolist(), args.seed, HELD_OUT))
    held_index = np.array([i for i, name in enumerate(data["names"]) if name in held])
    train_index = np.array([i for i, name in enumerate(data["names"]) if name not in held])
    net = LandmarkNet(config.widths)
    optimiser = torch.optim.AdamW(net.parameters(), lr=LR, weight_decay=WEIGHT_DECAY)
    steps = args.epochs * math.ceil(len(train_index) / BATCH)
    warm = math.ceil(len(train_index) / BATCH)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimiser, lambda s: min(1.0, (s + 1) / warm) * 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps))
    )
    state = {"epoch": 0, "best": None, "best_model": None, "history": []}
    if args.resume and (out / "last.pt").exists():
        state = torch.load(out / "last.pt", weights_only=False)
        net.load_state_dict(state["model"])
        optimiser.load_state_dict(state["optimiser"])
        schedule.load_state_dict(state["schedule"])
    rng = np.random.default_rng(args.seed + 1000 * state["epoch"])
    for epoch in range(state["epoch"], args.epochs):
        start = time.perf_counter()
        loss = train_epoch(net, optimiser, schedule, data, train_index, config, rng)
        held = evaluate(net, data, held_index, config, dd_px)["summary"]
        score = held["disc"]["mean_px"] + held["fovea"]["mean_px"]
        state["history"].append({"epoch": epoch + 1, "loss": round(loss, 4), **held})
        if state["best"] is None or score < state["best"]["score"]:
            state["best"] = {"epoch": epoch + 1, "score": score, **held}
            state["best_model"] = {k: v.clone() for k, v in net.state_dict().items()}
        print(
            f"epoch {epoch + 1}/{args.epochs} loss {loss:.4f} held-out disc {held['disc']} fovea {held['fovea']} "
            f"({time.perf_counter() - start:.0f} s)",
            file=sys.stderr,
            flush=True,
        )
        state.update(
            epoch=epoch + 1, model=net.state_dict(), optimiser=optimiser.state_dict(), schedule=schedule.state_dict()
        )
        save_state(out / "last.pt", state)
    return finish(net, state, data, held_index, config, dd_px, args)


def finish(net, state, data, held_index, config: HeadConfig, dd_px: float, args) -> int:
    """The best epoch's weights, its floors chosen on the held-out photos, and the export."""
    net.load_state_dict(state["best_model"])
    held = evaluate(net, data, held_index, config, dd_px)
    disc_floor, disc_effect = choose_floor(held["rows"], "disc", dd_px)
    fovea_floor, fovea_effect = choose_floor(held["rows"], "fovea", dd_px)
    config = replace(
        config,
        reliable_disc_confidence=disc_floor,
        reliable_fovea_confidence=fovea_floor,
        provenance={
            "data": "IDRiD part C training photos (CC BY 4.0): "
            f"{len(data['names']) - HELD_OUT} train, {HELD_OUT} held out (seed {args.seed})",
            "epochs": args.epochs,
            "best_epoch": state["best"]["epoch"],
            "held_out": held["summary"],
            "floors": {"disc": disc_effect, "fovea": fovea_effect, "rule": f"at most {FLOOR_LOSS:.0%} of right ones"},
            "dd_px": round(dd_px, 1),
            "command": f"python -m training.landmark_head --idrid data/idrid --epochs {args.epochs} --seed {args.seed} --export weights",
        },
    )
    out = Path(args.out)
    write_atomic(out / "held_out.json", json.dumps({"config": asdict(config), **held}, indent=2).encode())
    print(json.dumps(config.provenance, indent=2))
    if args.export:
        save_landmark_head(net, config, args.export)
        update_model_card(Path(args.export), config)
    return 0


CARD_HEADING = "## Optic disc and fovea head"


def card_section(config: HeadConfig) -> str:
    """The model card's part on the landmark head (``landmarks.safetensors`` + ``.json``)."""
    prov = config.provenance
    held = prov.get("held_out", {})
    lines = [
        CARD_HEADING,
        "",
        "`landmarks.safetensors` and `landmarks.json` beside the lesion model are a small network "
        f"(input {config.input_size} x {config.input_size} px, tensors only) that places the optic disc and the fovea "
        "for the reading (ETDRS grid, DME risk). Without these two files the reading falls back on image analysis.",
        "",
        f"- trained on: {prov.get('data', 'unknown')}; {prov.get('epochs', '?')} epochs, "
        f"kept epoch {prov.get('best_epoch', '?')}",
    ]
    for key, name in (("disc", "optic disc"), ("fovea", "fovea")):
        h = held.get(key)
        if h:
            lines.append(
                f"- {name} on the held-out photos: mean distance {h['mean_px']} px, median {h['median_px']} px, "
                f"{100 * h[f'within_{TOLERANCE_DD}_dd']:.1f} % within {TOLERANCE_DD} DD (4288 x 2848 px)"
            )
    lines += [
        f'- confidence floors (below them a landmark is "not found reliably": no grade, no grid): disc '
        f"{config.reliable_disc_confidence}, fovea {config.reliable_fovea_confidence}, chosen on the held-out photos",
        f"- reproduce: `{prov.get('command', 'python -m training.landmark_head')}`",
        "",
    ]
    return "\n".join(lines)


def update_model_card(folder: Path, config: HeadConfig) -> None:
    """Put :func:`card_section` into ``folder/README.md`` (replacing an older one), if there is one."""
    card = folder / "README.md"
    if not card.exists():
        return
    text = card.read_text()
    start = text.find(CARD_HEADING)
    if start >= 0:
        end = text.find("\n## ", start + len(CARD_HEADING))
        text = text[:start] + text[end + 1 if end >= 0 else len(text) :]
    write_atomic(card, (text.rstrip("\n") + "\n\n" + card_section(config)).encode())


if __name__ == "__main__":
    raise SystemExit(main())
