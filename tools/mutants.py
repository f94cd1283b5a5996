"""Mutation check: does the test suite fail when the code is wrong?

Each mutation below replaces one snippet of a core module with a wrong version (a calibration
skipped, a flip not undone, a slider wired to another class, identifiers read when they must
not be, ...). For each one the script copies the repository's files to a temporary folder,
applies the mutation there (the working tree is never touched), runs the tests named with it,
and records the mutant as *killed* (the tests failed) or *survived* (they passed: a gap in the
tests, or a harmless change). The report is a Markdown table, written atomically::

    .venv/bin/python tools/mutants.py                    # all, report in docs/mutants.md
    .venv/bin/python tools/mutants.py --only tta-no-unflip slider-he-se
    .venv/bin/python tools/mutants.py --check            # each snippet found exactly once?
    .venv/bin/python tools/mutants.py --jobs 2           # two mutants at a time

It takes a while (each mutant runs its tests, some of them training or segmenting photos): it
is not part of the test suite. A survivor is either a missing test or a change that cannot
matter; the report's notes column says which for the known ones.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
REPORT = ROOT / "docs" / "mutants.md"
SKIP = ("runs/", "data/", "artifacts/", ".venv/")  # large or private, not code the tests read


@dataclass(frozen=True)
class Mutation:
    name: str
    file: str
    original: str
    mutated: str
    tests: list[str]
    what: str
    note: str = ""  # for a known survivor: why it is harmless
    env: dict[str, str] = field(default_factory=dict)


M = Mutation
READING_TESTS = ["tests/test_reading_geometry.py", "tests/test_reading.py"]
MUTATIONS = [
    # ---- calibration: the CLI, the command that fits it, prediction
    M("runner-uncalibrated", "hydralanet/batch/runner.py",
      'predict_args = {**overrides, "tta": request.tta, "precision": request.precision}',
      'predict_args = {**overrides, "tta": request.tta, "precision": request.precision, "calibrated": False}',
      ["tests/test_calibration.py", "tests/test_cli.py::test_predict_on_real_photo_with_bundled_model"],
      "predict runs the model without the checkpoint's calibration"),
    M("calibrate-raw-thresholds", "training/calibrate.py",
      "thresholds = {c: round(calibrate_threshold(raw_best[i], calibration[c]), 4) for i, c in enumerate(CLASSES)}",
      "thresholds = {c: round(raw_best[i], 4) for i, c in enumerate(CLASSES)}",
      ["tests/test_calibration.py"], "calibration writes the raw thresholds, not the calibrated ones"),
    M("calibration-ignored", "hydralanet/inference/segment.py",
      "calibration = loaded.config.calibration if calibrated else None",
      "calibration = None",
      ["tests/test_calibration.py"], "prediction never applies the calibration"),
    M("tiled-uncalibrated", "hydralanet/inference/segment.py",
      "tiled = run_tiled(model, p.tensor, fov, tile=tile, precision=precision, tta=tta, calibration=calibration)",
      "tiled = run_tiled(model, p.tensor, fov, tile=tile, precision=precision, tta=tta, calibration=None)",
      ["tests/test_calibration.py"], "tiled prediction leaves out the calibration"),
    M("calibration-shift-sign", "hydralanet/inference/forward.py",
      "logits = torch.addcmul(shift, logits, scale)",
      "logits = torch.addcmul(-shift, logits, scale)",
      ["tests/test_calibration.py"], "calibration's shift b with the wrong sign"),
    M("calibrate-threshold-no-b", "training/calibration.py",
      "return float(1 / (1 + math.exp(-(a * (math.log(t) - math.log1p(-t)) + b))))",
      "return float(1 / (1 + math.exp(-(a * (math.log(t) - math.log1p(-t))))))",
      ["tests/test_calibration.py"], "calibrate_threshold drops the shift b"),
    M("ece-signed", "training/calibration.py",
      "ece = float(np.nansum(count / total * np.abs(accuracy - confidence)))",
      "ece = float(np.nansum(count / total * (accuracy - confidence)))",
      ["tests/test_evaluate.py", "tests/test_calibration.py"], "the calibration error sums signed gaps, which cancel"),
    M("ece-bins-shifted", "training/calibration.py",
      "which = np.minimum((p * bins).astype(int), bins - 1)",
      "which = np.minimum((p * bins + 0.5).astype(int), bins - 1)",
      ["tests/test_evaluate.py", "tests/test_calibration.py"], "the calibration error's bins shifted by half a bin"),
    # ---- test-time augmentation and tiling
    M("tta-no-unflip", "hydralanet/inference/forward.py",
      "probs = probs.flip(dims) if dims else probs", "probs = probs",
      ["tests/test_inference.py"], "TTA averages the flipped outputs without undoing the flips"),
    M("tta-two-views", "hydralanet/inference/forward.py",
      "views = [()] + ([(-1,), (-2,)] if tta else [])", "views = [()] + ([(-1,)] if tta else [])",
      ["tests/test_inference.py"], "TTA leaves out the vertical flip"),
    M("tile-step-unaligned", "hydralanet/inference/tiling.py",
      "return [min(i * step, last) for i in range(math.ceil(last / step) + 1)]",
      "return [min(i * step, last) for i in range(math.ceil(last / step))]",
      ["tests/test_fast.py"], "the tile grid stops short of the last tile"),
    M("tile-ramp-flat", "hydralanet/inference/tiling.py",
      "    if start > 0:\n        w[:n] = ramp\n", "",
      ["tests/test_fast.py"], "tiles are not blended on their leading edge"),
    # ---- thresholds and masks
    M("mask-strict", "hydralanet/inference/segment.py",
      "masks = probabilities >= cut", "masks = probabilities > cut",
      ["tests/test_inference.py"], "a pixel at exactly the threshold is not marked"),
    M("mask-no-fov", "hydralanet/inference/segment.py",
      "    if fov is not None:\n        masks &= fov[None]\n", "",
      ["tests/test_inference.py"], "masks are not limited to the field of view"),
    M("square-mask-class-order", "hydralanet/inference/segment.py",
      "square_mask(square[i], geometry, fov, thresholds[c], out=out[i])",
      "square_mask(square[i], geometry, fov, thresholds[CLASSES[(i + 1) % len(CLASSES)]], out=out[i])",
      ["tests/test_inference.py", "tests/test_app.py::test_each_slider_sets_its_own_class_threshold_one_stop_either_side"],
      "full-resolution masks use the next class's threshold"),
    M("threshold-range-open", "hydralanet/config.py",
      "if not 0.0 <= value <= 1.0:", "if not 0.0 <= value <= 1.5:",
      ["tests/test_inference.py", "tests/test_cli.py"], "a threshold above 1 is accepted"),
    M("threshold-stops-drop-exact", "hydralanet/config.py",
      "return sorted(set(THRESHOLD_GRID) | {float(v) for v in exact})", "return sorted(set(THRESHOLD_GRID))",
      ["tests/test_app.py"], "the slider cannot show the model's own threshold"),
    # ---- the app's sliders and identifiers
    M("slider-he-se", "webapp/sidebar.py",
      '    st.button("Reset to the model\'s thresholds"',
      '    thresholds["HE"], thresholds["SE"] = thresholds["SE"], thresholds["HE"]\n'
      '    st.button("Reset to the model\'s thresholds"',
      ["tests/test_app.py::test_each_slider_sets_its_own_class_threshold_one_stop_either_side"],
      "the HE and SE sliders are swapped"),
    M("slider-one-stop-up", "webapp/sidebar.py",
      '    st.button("Reset to the model\'s thresholds"',
      "    thresholds = {c: min([s for s in threshold_stops(v) if s > v] or [v]) for c, v in thresholds.items()}\n"
      '    st.button("Reset to the model\'s thresholds"',
      ["tests/test_app.py::test_each_slider_sets_its_own_class_threshold_one_stop_either_side"],
      "every slider acts one stop above what it shows"),
    M("app-keeps-identifiers", "app.py",
      "return read_facts(data)", "return read_facts(data, keep_identifiers=True)",
      ["tests/test_app.py::test_dicom_identifiers_stay_off_the_page_and_out_of_every_download"],
      "the app reads the DICOM identifiers (and its PDF prints them)"),
    # ---- DICOM
    M("cli-keeps-identifiers", "hydralanet/io/dicom.py",
      "return read_facts(source, keep_identifiers=keep_identifiers) if is_dicom_file(source) else None",
      "return read_facts(source, keep_identifiers=True) if is_dicom_file(source) else None",
      ["tests/test_dicom.py::test_cli_keeps_identifiers_out_of_every_output_unless_asked"],
      "the CLI reads the identifiers without --keep-identifiers"),
    M("identifiers-more-fields", "hydralanet/io/dicom.py",
      "identifiers = {k: str(ds.get(k)) for k in IDENTIFIER_KEYWORDS if ds.get(k) not in (None, \"\")}",
      "identifiers = {k: str(ds.get(k)) for k in (*IDENTIFIER_KEYWORDS, \"PatientAddress\") if ds.get(k) not in (None, \"\")}",
      ["tests/test_dicom.py::test_cli_keeps_identifiers_out_of_every_output_unless_asked"],
      "--keep-identifiers also writes a field it does not list (the address)"),
    M("dicom-laterality-swapped", "hydralanet/io/dicom.py",
      'laterality, source = ("left" if value == "L" else "right"), keyword',
      'laterality, source = ("right" if value == "L" else "left"), keyword',
      ["tests/test_dicom.py"], "the header's L and R swapped"),
    M("dicom-series-laterality-first", "hydralanet/io/dicom.py",
      'for keyword in ("ImageLaterality", "Laterality"):', 'for keyword in ("Laterality", "ImageLaterality"):',
      ["tests/test_dicom.py"], "the series' laterality wins over the image's own"),
    M("dicom-monochrome1-not-inverted", "hydralanet/io/dicom.py",
      "            array = 255 - array\n", "            pass\n",
      ["tests/test_dicom.py", "tests/test_io.py"], "MONOCHROME1 (0 is white) not inverted"),
    M("dicom-spacing-arithmetic-mean", "hydralanet/io/dicom.py",
      "mm = float(np.sqrt(row * col)) if row > 0 and col > 0 else 0.0",
      "mm = float((row + col) / 2) if row > 0 and col > 0 else 0.0",
      ["tests/test_dicom.py"], "anisotropic pixel spacing: arithmetic instead of geometric mean"),
    M("dicom-bits-not-scaled", "hydralanet/io/dicom.py",
      "array = np.clip(data * (255.0 / (2.0**bits - 1)), 0, 255).round().astype(np.uint8)",
      "array = np.clip(data, 0, 255).round().astype(np.uint8)",
      ["tests/test_dicom.py", "tests/test_io.py"], "more than 8 bits stored: clipped instead of scaled"),
    # ---- the batch run: resume, fingerprint
    M("resume-ignores-fingerprint", "hydralanet/batch/outputs.py",
      'if record.get("fingerprint") != fingerprint or record.get("source") != source:',
      'if record.get("source") != source:',
      ["tests/test_pipeline.py"], "--resume keeps photos made with other settings"),
    M("resume-ignores-missing-files", "hydralanet/batch/outputs.py",
      '    if not all((folder / name).is_file() for name in record.get("files", [])):\n        return None\n', "",
      ["tests/test_pipeline.py"], "--resume keeps a photo whose files were lost"),
    M("fingerprint-without-config", "hydralanet/batch/runner.py",
      '"config": loaded.config.to_dict(), ', "",
      ["tests/test_pipeline.py"], "the resume fingerprint leaves out config.json (the calibration among it)"),
    M("fingerprint-without-thresholds", "hydralanet/batch/runner.py",
      '    settings["thresholds"] = thresholds\n', "",
      ["tests/test_pipeline.py"], "the resume fingerprint leaves out the --threshold values"),
    # ---- the original code's checkpoints
    M("original-ddp-prefix-kept", "hydralanet/checkpoints/original.py",
      "obj = {k[len(DDP_PREFIX) :]: v for k, v in obj.items()}", "obj = dict(obj)",
      ["tests/test_original.py"], "DDP's module. prefix not removed"),
    M("original-bn-fold-sign", "hydralanet/checkpoints/original.py",
      "ours[name] = ours[name] - bias.to(ours[name].dtype)", "ours[name] = ours[name] + bias.to(ours[name].dtype)",
      ["tests/test_original.py"], "the folded conv bias moved into the BN mean with the wrong sign"),
    M("original-heads-swapped", "hydralanet/checkpoints/original.py",
      'entries += [_Entry(f"hydra_head.heads.{c}", f"head.branches.{c}") for c in CLASSES]',
      'entries += [_Entry(f"hydra_head.heads.{c}", f"head.branches.{d}") for c, d in zip(CLASSES, [*CLASSES[1:], CLASSES[0]])]',
      ["tests/test_original.py"], "the original's class heads mapped to the wrong classes"),
    M("original-gate-convs-swapped", "hydralanet/checkpoints/original.py",
      '_Entry(f"{original}.conv1", f"{ours}.gate.1"),\n            _Entry(f"{original}.conv2", f"{ours}.gate.3"),',
      '_Entry(f"{original}.conv1", f"{ours}.gate.3"),\n            _Entry(f"{original}.conv2", f"{ours}.gate.1"),',
      ["tests/test_original.py"], "two convolutions of a gate exchanged (same shapes would load silently)"),
    # ---- the reading: zones about the fovea, the DME rule, the fovea itself
    M("near-radius-doubled", "hydralanet/reading/zones.py",
      "near[:] = np.sqrt(a * a + b * b) <= near_dd",
      "near[:] = np.sqrt(a * a + b * b) <= 2 * near_dd",
      READING_TESTS, '"within 1 DD" of the fovea is 2 DD'),
    M("etdrs-rings-moved", "hydralanet/reading/zones.py",
      "ETDRS_RADII_DD = (1 / 3, 1.0, 2.0)",
      "ETDRS_RADII_DD = (1 / 3, 0.7, 2.8)",
      READING_TESTS, "the ETDRS rings at 0.7 and 2.8 DD"),
    M("dme-counts-every-lesion", "hydralanet/reading/zones.py",
      'ex_total = sum(r["count"] for r in reading.zones if r["lesion"] == "EX" and r["zone"] in ETDRS_ZONES)',
      'ex_total = sum(r["count"] for r in reading.zones if r["zone"] in ETDRS_ZONES)',
      READING_TESTS, "the DME grade counts every lesion kind"),
    M("zones-on-image-axes", "hydralanet/reading/zones.py",
      "a = xs * np.float32(nasal[0]) + ys * np.float32(nasal[1])  # nasal coordinate\n"
      "    b = xs * np.float32(superior[0]) + ys * np.float32(superior[1])  # superior coordinate",
      "a = xs + 0 * ys  # nasal coordinate\n    b = -ys + 0 * xs  # superior coordinate",
      READING_TESTS, "zones on the image axes, not the disc-fovea axis"),
    M("fovea-at-field-centre", "hydralanet/reading/landmarks.py",
      "disc, fovea = best[1], best[2]",
      "disc, fovea = best[1], (None if best[2] is None else best[2]._replace(x=core.shape[1] / 2, y=core.shape[0] / 2))",
      READING_TESTS, "the fovea put at the centre of the field"),
    # ---- the learned landmark head and the macula's quality
    M("head-mirror-not-undone", "hydralanet/reading/landmark_head.py",
      "mirrored[:, 0] = square.shape[1] - 1 - mirrored[:, 0]",
      "mirrored[:, 0] = mirrored[:, 0]",
      ["tests/test_landmark_head.py"], "the head's mirrored pass averaged without mirroring it back"),
    M("head-disc-fovea-swapped", "hydralanet/reading/landmark_head.py",
      "disc, fovea = square_to_photo(geometry, *found[0, :2]), square_to_photo(geometry, *found[1, :2])",
      "fovea, disc = square_to_photo(geometry, *found[0, :2]), square_to_photo(geometry, *found[1, :2])",
      ["tests/test_landmark_head.py"], "the head's disc and fovea outputs swapped"),
    M("macula-at-square-centre", "hydralanet/reading/quality.py",
      "r = np.hypot(xx - x, yy - y) / max(macula[2] * scale, 1e-6)",
      "r = np.hypot(xx - core.shape[1] / 2, yy - core.shape[0] / 2) / max(macula[2] * scale, 1e-6)",
      ["tests/test_macula_quality.py"], "the macula checks look at the field's centre, not the fovea"),
    M("macula-focus-blind", "hydralanet/reading/quality.py",
      '"macula_sharpness": detail / max(float(np.std(fine[core])) / field_median, 1e-6),',
      '"macula_sharpness": 1.0,',
      ["tests/test_macula_quality.py"], "the macula's focus never measured"),
    # ---- the DME grade's evidence rule
    M("dme-cores-ignored", "hydralanet/reading/grading.py",
      "counted[np.unique(labels[cores])] = True",
      "counted[1:] = True",
      ["tests/test_dme_evidence.py"], "every hard exudate counts, sure or not"),
    M("dme-area-floor-off", "hydralanet/reading/grading.py",
      "if sure < DME_EXUDATE_MIN_COUNT and area < DME_EXUDATE_MIN_AREA * disc_area:",
      "if sure < DME_EXUDATE_MIN_COUNT and area < 0:",
      ["tests/test_dme_evidence.py"], "no minimum area of sure exudates: the count alone decides"),
    M("dme-count-floor-off", "hydralanet/reading/grading.py",
      "if sure < DME_EXUDATE_MIN_COUNT and area < DME_EXUDATE_MIN_AREA * disc_area:",
      "if sure < 1 and area < DME_EXUDATE_MIN_AREA * disc_area:",
      ["tests/test_dme_evidence.py"], "one sure exudate enough, however small"),
    M("pipeline-no-cores", "hydralanet/batch/pipeline.py",
      "cores = square_exudate_cores(square, self.geometry, fov)",
      "cores = None",
      ["tests/test_dme_evidence.py"], "the batch pipeline hands the reading no exudate cores"),
]  # fmt: skip


def tracked_files() -> list[str]:
    """The repository's files as the working tree has them (tracked or new, not ignored)."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=ROOT, capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    return [f for f in listed.split("\0") if f and not f.startswith(SKIP) and (ROOT / f).is_file()]


def copy_repository(dest: Path, files: list[str]) -> None:
    for rel in files:
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / rel, target)
    venv = ROOT / ".venv"
    if venv.exists():
        (dest / ".venv").symlink_to(venv)


def apply(mutation: Mutation, root: Path) -> None:
    path = root / mutation.file
    text = path.read_text()
    count = text.count(mutation.original)
    if count != 1:
        raise ValueError(f"{mutation.name}: the snippet is in {mutation.file} {count} times, not once")
    path.write_text(text.replace(mutation.original, mutation.mutated))


def run_one(mutation: Mutation, files: list[str], timeout: int) -> dict:
    """Apply ``mutation`` in a fresh copy of the repository and run its tests there."""
    with tempfile.TemporaryDirectory(prefix=f"mutant-{mutation.name}-") as tmp:
        root = Path(tmp)
        copy_repository(root, files)
        apply(mutation, root)
        command = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", "-o", "addopts=",
                   "--timeout", str(timeout), *mutation.tests]  # fmt: skip
        env = {**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1", **mutation.env}
        started = time.monotonic()
        done = subprocess.run(command, cwd=root, env=env, capture_output=True, text=True)
        seconds = time.monotonic() - started
    tail = done.stdout.strip().splitlines()[-1:] or [""]
    if done.returncode == 0:
        result = "survived"
    elif done.returncode == 1:
        result = "killed"
    else:  # 2: interrupted or a collection error, 4: usage, 5: no tests ran
        result = f"error (pytest exit {done.returncode})"
    return {"mutation": mutation, "result": result, "seconds": seconds, "summary": tail[0]}


def table_row(r: dict) -> str:
    m = r["mutation"]
    tests = ", ".join(f"`{t.removeprefix('tests/')}`" for t in m.tests)
    note = m.note if r["result"] == "survived" else ""
    return f"| {m.name} | `{m.file}` | {m.what} | {tests} | {r['result']} | {r['seconds']:.0f} | {note} |"


def earlier_rows(path: Path) -> dict[str, str]:
    """The table rows of an earlier report, by mutant name (for ``--update``)."""
    if not path.exists():
        return {}
    lines = path.read_text().splitlines()
    rows = [line for line in lines if line.startswith("| ") and not line.startswith("| mutant ")]
    return {line.split(" | ")[0].removeprefix("| "): line for line in rows}


def report(rows: dict[str, str]) -> str:
    """The Markdown report from table rows by mutant name, in the list's order."""
    table = [rows[m.name] for m in MUTATIONS if m.name in rows]
    results = [line.split(" | ")[4] for line in table]
    killed, survived = results.count("killed"), results.count("survived")
    lines = [
        "# Mutation check",
        "",
        "Written by `python tools/mutants.py` (see its docstring): each row is one deliberate bug in a",
        "core module and whether the tests named with it failed (*killed*) or passed (*survived*).",
        "",
        f"**{killed} of {len(table)} killed ({100 * killed / max(1, len(table)):.0f} %), {survived} survived.**",
        "",
        "| mutant | file | the bug | tests run | result | s | notes |",
        "|---|---|---|---|---|---|---|",
        *table,
    ]
    return "\n".join(lines) + "\n"


def write_atomically(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", nargs="+", metavar="NAME", help="run these mutants only")
    parser.add_argument("--check", action="store_true", help="check that every snippet applies; run nothing")
    parser.add_argument("--jobs", type=int, default=1, help="mutants run at a time (default 1)")
    parser.add_argument("--timeout", type=int, default=900, help="seconds per test (pytest-timeout)")
    parser.add_argument("--out", type=Path, default=REPORT, help=f"the report (default {REPORT.relative_to(ROOT)})")
    parser.add_argument("--update", action="store_true", help="keep the report's rows of the mutants not run now")
    args = parser.parse_args(argv)
    chosen = [m for m in MUTATIONS if not args.only or m.name in args.only]
    unknown = set(args.only or ()) - {m.name for m in MUTATIONS}
    if unknown:
        parser.error(f"no mutant named {', '.join(sorted(unknown))}")
    bad = []
    for m in chosen:
        text = (ROOT / m.file).read_text()
        if text.count(m.original) != 1:
            bad.append(f"{m.name}: the snippet is in {m.file} {text.count(m.original)} times, not once")
    if bad or args.check:
        print("\n".join(bad) or f"all {len(chosen)} snippets apply", file=sys.stderr)
        return 1 if bad else 0
    files = tracked_files()
    rows = []
    with ThreadPoolExecutor(max(1, args.jobs)) as pool:
        for row in pool.map(lambda m: run_one(m, files, args.timeout), chosen):
            rows.append(row)
            print(f"{row['mutation'].name}: {row['result']} ({row['seconds']:.0f} s) {row['summary']}", flush=True)
    table = earlier_rows(args.out) if args.update else {}
    table.update({r["mutation"].name: table_row(r) for r in rows})
    write_atomically(args.out, report(table))
    killed = sum(r["result"] == "killed" for r in rows)
    print(f"{killed} of {len(rows)} killed; report: {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
