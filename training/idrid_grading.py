"""The DME risk and the retinopathy estimate against IDRiD's graders (part B), for
``python -m training.idrid_reading grading`` (see there): each photo through the model and the
reading, the cut-offs chosen on training photos, the scores on the test photos."""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from hydralanet.io.images import read_image, write_atomic

from .datasets.idrid import IDRID_GRADING

# IDRiD grading challenge (sub-challenge 2), test set: the best teams' joint accuracy (DR grade
# and DME risk both right on a photo). Porwal et al., "IDRiD: Diabetic Retinopathy -
# Segmentation and Grading Challenge", Medical Image Analysis 59:101561, 2020, Table 9.
CHALLENGE_JOINT_ACCURACY = {"LzyUNCC": 0.6311, "VRT": 0.5534, "Mammoth": 0.5146}


def write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows({k: json.dumps(v) if isinstance(v, dict) else v for k, v in row.items()} for row in rows)


def grading_records(root: Path, split: str) -> list[dict[str, Any]]:
    """Part B's photos of one split with their graders' retinopathy grade and DME risk."""
    base = root / IDRID_GRADING
    folder, word = {"train": ("a. Training Set", "Training"), "test": ("b. Testing Set", "Testing")}[split]
    labels = sorted((base / "2. Groundtruths").glob(f"*Disease Grading_{word} Labels.csv"))
    if not labels:
        raise SystemExit(f"{base / '2. Groundtruths'}: no '*Disease Grading_{word} Labels.csv'")
    out = []
    with labels[0].open(newline="", encoding="utf-8-sig") as fh:
        reader = csv.reader(fh)
        header = [" ".join(h.lower().split()) for h in next(reader, [])]
        for values in reader:
            row = dict(zip(header, (v.strip() for v in values)))
            name = row.get("image name", "")
            if not name:
                continue
            image = base / "1. Original Images" / folder / f"{name}.jpg"
            if not image.exists():
                raise SystemExit(f"{labels[0]}: {name} has no photo {image}")
            try:
                dr, dme = int(row["retinopathy grade"]), int(row["risk of macular edema"])
            except (KeyError, ValueError):
                raise SystemExit(f"{labels[0]}: {name}: grades {row} are not numbers") from None
            out.append({"image": image, "split": split, "dr_true": dr, "dme_true": dme})
    return out


def read_graded(
    loaded, records: list[dict[str, Any]], rows: list[dict[str, Any]], path: Path, *, tta: bool = False
) -> list[dict[str, Any]]:
    """Each photo through the model (default thresholds; ``tta``: flip test-time augmentation)
    and the reading, appended to ``rows``; ``path`` (CSV) is rewritten after each photo, so an
    interrupted run keeps what it read."""
    from hydralanet import predict
    from hydralanet.reading.grading import count_lesions
    from hydralanet.reading.photo import findings, read_photo

    done = {(r["split"], r["image"]) for r in rows}  # a training and a test photo may share a name
    todo = [r for r in records if (r["split"], r["image"].stem) not in done]
    start = time.perf_counter()
    for i, record in enumerate(todo):
        prediction = predict(loaded, read_image(record["image"]), tta=tta)
        photo = read_photo(prediction.image, prediction.fov, probabilities=prediction.probabilities)
        masks = prediction.masks()
        found = findings(photo, masks)
        estimate = found["retinopathy_estimate"]
        rows.append(
            {
                "image": record["image"].stem,
                "split": record["split"],
                "dr_true": record["dr_true"],
                "dme_true": record["dme_true"],
                "dme_read": found["dme_risk"],
                "retinopathy_level": estimate["level"],
                "lesion_burden": estimate["lesion_burden"],
                "quality": found["quality"]["verdict"],
                "landmarks_reliable": photo.landmarks.reliable,
                "ex_components": json.dumps(exudate_components(masks[0], prediction.probabilities[0], photo)),
                "lesion_counts": count_lesions(masks),  # JSON in the CSV
            }
        )
        write_csv(path, rows)
        if (i + 1) % 10 == 0:
            rate = (time.perf_counter() - start) / (i + 1)
            print(f"{i + 1}/{len(todo)} photos, {rate:.1f} s each", file=sys.stderr, flush=True)
    return rows


def read_rows(path: Path) -> list[dict[str, Any]]:
    """The rows a run of :func:`read_graded` wrote to ``path`` (none when it is missing), typed
    as written, so that ``--resume`` reads only the photos still missing."""
    if not path.exists():
        return []
    rows = []
    with path.open(newline="") as fh:
        for row in csv.DictReader(fh):
            rows.append(
                {
                    **row,
                    "dr_true": int(row["dr_true"]),
                    "dme_true": int(row["dme_true"]),
                    "dme_read": int(row["dme_read"]) if row["dme_read"] else None,
                    "retinopathy_level": int(row["retinopathy_level"]),
                    "lesion_burden": float(row["lesion_burden"]),
                    "landmarks_reliable": row["landmarks_reliable"] == "True",
                    "lesion_counts": json.loads(row["lesion_counts"]) if row.get("lesion_counts") else None,
                }
            )
    return rows


def exudate_components(mask: np.ndarray, probability: np.ndarray, photo) -> list[list[float]]:
    """Each hard exudate (8-connected component of ``mask``) as ``[area, distance, peak]``: its
    area as a fraction of the disc's (1 DD circle), its nearest pixel's distance from the fovea
    in DD and its highest probability; empty without zone maps (no reliable disc or fovea)."""
    if photo.maps is None:
        return []
    n, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    dd = photo.maps.near_dd
    fovea = photo.landmarks.fovea
    ys, xs = np.nonzero(labels)
    lab = labels[ys, xs]
    distance = np.hypot(xs - fovea.x, ys - fovea.y) / dd
    nearest = np.full(n, np.inf)
    np.minimum.at(nearest, lab, distance)
    peak = np.zeros(n)
    np.maximum.at(peak, lab, probability[ys, xs])
    disc_area = np.pi / 4 * dd**2
    return [
        [round(float(stats[k, cv2.CC_STAT_AREA] / disc_area), 6), round(float(nearest[k]), 4), round(float(peak[k]), 4)]
        for k in range(1, n)
    ]


def choose_cutoff(rows: list[dict[str, Any]]) -> float:
    """The lesion burden that maximises Youden's J (sensitivity + specificity - 1) for grade >= 2."""
    from sklearn.metrics import roc_curve

    truth = np.array([r["dr_true"] >= 2 for r in rows])
    fpr, tpr, thresholds = roc_curve(truth, [r["lesion_burden"] for r in rows])
    best = int(np.argmax(tpr - fpr))
    return float(min(thresholds[best], 1e9))


# The DME rule's settings tried (hydralanet.reading.grading.DME_EXUDATE_PEAK, DME_EXUDATE_MIN_COUNT and
# DME_EXUDATE_MIN_AREA): a hard exudate is evidence when its most confident pixel reaches the
# peak; the photo has exudates when there are at least the count of those, or when they cover at
# least the area (a share of the disc's area, the 1 DD circle). inf: that criterion never met.
PEAK_FLOORS = (0.5, 0.8, 0.9, 0.95, 0.98, 0.99)
COUNT_FLOORS = (1, 2, 3, 4, 5, 6, 8, 10, 15, 20, float("inf"))
AREA_FLOORS = (0.01, 0.02, 0.05, 0.1, 0.2, 0.5, float("inf"))


def dme_with_floor(row: dict[str, Any], peak: float, count: float, area: float) -> int | None:
    """The DME risk grade of a row of :func:`read_graded` by the rule of
    :func:`hydralanet.reading.zones.read_zones` with these settings: 0 when fewer than ``count`` hard
    exudates reach ``peak`` and those cover less than ``area`` of the disc's area, else 2 when
    one of them reaches within 1 DD of the fovea, else 1. Where the reading found no reliable
    disc or fovea (no components recorded), its own grade: 0 with no hard exudate counted, else None."""
    if row["dme_read"] is None or not row.get("landmarks_reliable", True):
        return row["dme_read"]
    if "_components" not in row:  # parsed once: the settings are tried by the hundred
        row["_components"] = json.loads(row["ex_components"])
    kept = [c for c in row["_components"] if c[2] >= peak]
    if len(kept) < count and sum(c[0] for c in kept) < area:
        return 0
    return 2 if any(c[1] <= 1.0 for c in kept) else 1


def _finite(value: float) -> float | None:
    """JSON has no infinity: a criterion never met is written as null."""
    return None if value == float("inf") else value


def _accuracy(rows: list[dict[str, Any]], *settings: float) -> float:
    return float(np.mean([dme_with_floor(r, *settings) == r["dme_true"] for r in rows]))


def choose_exudate_floor(rows: list[dict[str, Any]]) -> tuple[tuple[float, float, float], dict[str, Any]]:
    """The ``(peak, count, area)`` of :data:`PEAK_FLOORS` x :data:`COUNT_FLOORS` x
    :data:`AREA_FLOORS` with the best DME accuracy on ``rows`` (on ties the lower settings, which
    count more exudates), and the best accuracy at each peak."""
    grid = [(p, k, a) for p in PEAK_FLOORS for k in COUNT_FLOORS for a in AREA_FLOORS]
    scores = {s: _accuracy(rows, *s) for s in grid}
    best = min(grid, key=lambda s: (-scores[s], s))
    by_peak = {f"{p:g}": round(max(v for s, v in scores.items() if s[0] == p), 4) for p in PEAK_FLOORS}
    chosen = {"peak": best[0], "count": _finite(best[1]), "area": _finite(best[2]), "accuracy": round(scores[best], 4)}
    return best, {"best_accuracy_by_peak": by_peak, "chosen": chosen, "photos": len(rows)}


# The retinopathy level's floors tried (hydralanet.reading.grading.RETINOPATHY_MIN_BEYOND and
# RETINOPATHY_MIN_MA): lesions beyond microaneurysms, and microaneurysms, count once at least
# that many show.
LEVEL_FLOORS = (1, 2, 3, 5, 8, 10, 15, 20, 30, 50, 80)


def level_with_floors(row: dict[str, Any], min_beyond: float, min_ma: float) -> int:
    """The retinopathy level of a row of :func:`read_graded` with these floors (the 4-2-1 level
    as read)."""
    from hydralanet.reading.grading import retinopathy_level

    return retinopathy_level(row["lesion_counts"], row["retinopathy_level"] == 3, min_beyond, min_ma)


def level_kappa(rows: list[dict[str, Any]], levels: list[int]) -> float:
    """Quadratic kappa of ``levels`` (one per row) against the graders' grade, 4 taken as 3 (the
    level never says 4); -1 where it is undefined (one class only)."""
    from sklearn.metrics import cohen_kappa_score

    kappa = cohen_kappa_score([min(r["dr_true"], 3) for r in rows], levels, weights="quadratic")
    return -1.0 if np.isnan(kappa) else float(kappa)


def choose_level_floors(rows: list[dict[str, Any]]) -> tuple[float, float] | None:
    """The ``(min_beyond, min_ma)`` of :data:`LEVEL_FLOORS` with the best quadratic kappa on
    ``rows`` (on ties the lower floors); None when the rows carry no lesion counts."""
    rows = [r for r in rows if r.get("lesion_counts") is not None]
    if not rows:
        return None
    grid = [(b, m) for b in LEVEL_FLOORS for m in LEVEL_FLOORS]
    scores = {g: level_kappa(rows, [level_with_floors(r, *g) for r in rows]) for g in grid}
    return min(grid, key=lambda g: (-scores[g], g))


def grading_report(
    test: list[dict[str, Any]],
    cutoff: float,
    train_photos: int,
    floor: tuple[float, float, float],
    levels: tuple[float, float] | None = None,
) -> dict[str, Any]:
    from sklearn.metrics import accuracy_score, cohen_kappa_score, confusion_matrix, roc_auc_score

    graded = [r for r in test if r["dme_read"] is not None]
    dme_true = [r["dme_true"] for r in test]
    grades = {r["image"]: dme_with_floor(r, *floor) for r in test}
    dme_read = [3 if grades[r["image"]] is None else grades[r["image"]] for r in test]  # 3: no grade (wrong)
    referable = np.array([r["dr_true"] >= 2 for r in test])
    burden = np.array([r["lesion_burden"] for r in test])
    flagged = burden >= cutoff
    read_levels = [r["retinopathy_level"] if levels is None else level_with_floors(r, *levels) for r in test]
    return {
        "photos": len(test),
        "dme": {
            "accuracy": round(float(accuracy_score(dme_true, dme_read)), 4),
            "graded": len(graded),
            "quadratic_kappa_on_graded": round(
                float(
                    cohen_kappa_score(
                        [r["dme_true"] for r in graded], [grades[r["image"]] for r in graded], weights="quadratic"
                    )
                ),
                4,
            ),
            "exudate_peak": floor[0],
            "exudate_min_count": _finite(floor[1]),
            "exudate_min_area": _finite(floor[2]),
            "same_as_the_reading": sum(grades[r["image"]] == r["dme_read"] for r in test),
            "accuracy_every_exudate": round(_accuracy(test, 0.0, 1, 0.0), 4),
            "confusion": {
                "rows": "graders' DME risk 0, 1, 2",
                "columns": "read 0, 1, 2, no grade",
                "matrix": confusion_matrix(dme_true, dme_read, labels=[0, 1, 2, 3])[:3].tolist(),
            },
        },
        "retinopathy": {
            "confusion": {
                "rows": "graders' retinopathy grade 0-4",
                "columns": "level 0 few or no lesions, 1 microaneurysms, 2 many beyond, 3 4-2-1 haemorrhages met",
                "matrix": confusion_matrix([r["dr_true"] for r in test], read_levels, labels=[0, 1, 2, 3, 4])[
                    :, :4
                ].tolist(),
            },
            "level_floors": None if levels is None else {"beyond": levels[0], "ma": levels[1]},
            "level_kappa": round(level_kappa(test, read_levels), 4),
            "referable_auc": round(float(roc_auc_score(referable, burden)), 4),
            "cutoff": cutoff,
            "cutoff_chosen_on": f"{train_photos} IDRiD grading training photos (Youden's J)",
            "sensitivity": round(float(flagged[referable].mean()), 4),
            "specificity": round(float((~flagged[~referable]).mean()), 4),
            "referable": int(referable.sum()),
        },
        "challenge_joint_accuracy": CHALLENGE_JOINT_ACCURACY,
        "joint_accuracy_note": "the challenge ranked DR grade (0-4) and DME risk both right; "
        "the lesion estimate never says 4, so only the DME accuracy is comparable in kind",
    }


def grading_markdown(report: dict[str, Any]) -> list[str]:
    dme, dr = report["dme"], report["retinopathy"]
    lines = [
        f"DME risk on {report['photos']} test photos: accuracy {dme['accuracy']:.3f} "
        f"(graded {dme['graded']}; quadratic kappa on those {dme['quadratic_kappa_on_graded']:.3f}), "
        f"exudates counted when at least {dme['exudate_min_count']} reach p >= {dme['exudate_peak']:g} or "
        f"those cover >= {dme['exudate_min_area']} of the disc's area (chosen on the training photos; "
        f"{dme['accuracy_every_exudate']:.3f} counting every one); the reading as bundled gives the same "
        f"grade on {dme['same_as_the_reading']} of {report['photos']}"
        + (
            "; the model run with its test-time augmentation"
            if report.get("tta")
            else "; the model run without test-time augmentation"
        ),
        "",
        "| graders \\ read | 0 | 1 | 2 | no grade |",
        "|---|---:|---:|---:|---:|",
    ]
    lines += [f"| {g} | " + " | ".join(map(str, row)) + " |" for g, row in enumerate(dme["confusion"]["matrix"])]
    lines += [
        "",
        f"Referable retinopathy (grade >= 2, {dr['referable']} photos): lesion-burden AUC {dr['referable_auc']:.3f}; "
        f"at burden >= {dr['cutoff']:g} ({dr['cutoff_chosen_on']}): sensitivity {dr['sensitivity']:.3f}, "
        f"specificity {dr['specificity']:.3f}",
        "",
        "Retinopathy level against the graders' grade: quadratic kappa "
        f"{dr['level_kappa']:.3f} (grade 4 taken as 3)"
        + (
            f"; lesions beyond MA counted from {dr['level_floors']['beyond']:g}, MA from "
            f"{dr['level_floors']['ma']:g} (chosen on the training photos)"
            if dr.get("level_floors")
            else ""
        ),
        "",
        "| graders' grade \\ level | few or no lesions | microaneurysms | many beyond | 4-2-1 haemorrhages |",
        "|---|---:|---:|---:|---:|",
    ]
    lines += [f"| {g} | " + " | ".join(map(str, row)) + " |" for g, row in enumerate(dr["confusion"]["matrix"])]
    return lines


def run_grading(args: argparse.Namespace) -> int:
    from hydralanet import load_model

    root, out = Path(args.idrid), Path(args.out)
    loaded = load_model(args.model, device=args.device)
    args.tta = loaded.resolve_tta(args.tta)  # None: the checkpoint's, as predict
    train = grading_records(root, "train")
    if args.train_photos and args.train_photos < len(train):
        step = len(train) / args.train_photos
        train = [train[int(i * step)] for i in range(args.train_photos)]
    test = grading_records(root, "test")
    if args.limit:
        train, test = train[: args.limit], test[: args.limit]
    rows = read_rows(out / "grading.csv") if args.resume else []
    read_graded(
        loaded, test, rows, out / "grading.csv", tta=args.tta
    )  # the test photos first: the scores need only them
    read_graded(loaded, train, rows, out / "grading.csv", tta=args.tta)
    train_rows = [r for r in rows if r["split"] == "train"]
    cutoff = choose_cutoff(train_rows)
    floor, floors = choose_exudate_floor(train_rows)
    levels = choose_level_floors(train_rows)
    report = grading_report([r for r in rows if r["split"] == "test"], cutoff, len(train_rows), floor, levels)
    report["train"] = grading_report(train_rows, cutoff, len(train_rows), floor, levels)
    report["exudate_floor_on_train"] = floors
    report["model"] = args.model
    report["tta"] = args.tta
    write_atomic(out / "grading.json", json.dumps(report, indent=2).encode())
    lines = grading_markdown(report)
    write_atomic(out / "grading.md", ("\n".join(lines) + "\n").encode())
    print("\n".join(lines))
    return 0
