"""Package a trained run as the bundled model (``weights/``).

    python -m training.bundle --run RUN --test-manifest TEST.csv --out weights \
        --command "bash training/make_bundled.sh DATA" --train-seconds 420 --train-machine "one GPU" \
        [--machine "this machine, for the inference time"] [--pretraining "..."] [--bootstrap 1000]

Stores convolution weights as float16 (the folder must stay under 25 MB), then measures what
the model card reports on those very weights: metrics on the held-out test split (AUPR with a
bootstrap interval, F1, IoU, recall per lesion, at the original resolution), for a model trained
on synthetic data only the same on photos from a second, independent lesion generator
(``training/crosscheck.py``), the predicted lesion area on the real normal-eye photo
(``skimage.data.retina()``) and the inference time at the model's own input size on this
machine. The card says what the model was trained on, from the run's own record of its data.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from hydralanet import load_model, predict, save_checkpoint
from hydralanet.config import CLASSES

from .evaluate import IDRID_CHALLENGE_BEST, evaluate
from .modelcard import json_safe, render_model_card

DEMO_NOTE = """
## A demonstration model

**Trained only on synthetic data**: lesions drawn by `training/synthetic/` on the CC0
scikit-image retina photo (a normal eye, varied by rotation, flips, crops, colour and
illumination) and on procedural fundi (disc, vignetting, optic disc, macula, branching
vessels). It has never seen a real lesion. It shows how the app and the CLI work offline;
its outputs on real photographs of diseased eyes mean little. **Not for clinical use.**

For a real model, train on IDRiD, DDR and TJDR with `training/` (see docs/training.md:
`python -m training.prepare --idrid ... --ddr ... --tjdr ...`, then `python -m training.train
--config published`), or load a published checkpoint: `HYDRALANET_MODEL=<owner/repo>` for the
app, `--model <owner/repo>` for the CLI.
"""

IDRID_NOTE = """
## Training data: IDRiD

Trained on the segmentation part of the **Indian Diabetic Retinopathy Image Dataset (IDRiD)**:
photographs of 4288 x 2848 pixels from one fundus camera (Kowa VX-10 alpha, 50 degree field,
centred near the macula) of patients at an eye clinic in Nanded, India, with pixel masks of
the four lesions drawn by experts; the bundled recipe adds photos of its grading part that the
graders found free of retinopathy and macular edema, as lesion-free photos. The official test
photos were used for nothing but the test figures below; model selection, thresholds and
calibration used photos held out of the official training set.

> IDRiD (c) Prasanna Porwal, Samiksha Pachade and Manesh Kokare, licensed under
> Creative Commons Attribution 4.0 International (CC BY 4.0). Porwal et al., "Indian Diabetic
> Retinopathy Image Dataset (IDRiD): A Database for Diabetic Retinopathy Screening Research",
> *Data* 3(3):25, 2018, https://doi.org/10.3390/data3030025. Official release: IEEE DataPort,
> https://ieee-dataport.org/open-access/indian-diabetic-retinopathy-image-dataset-idrid

**What it has never seen**: other cameras, fields of view, image quality, ethnicities and
populations; healthy eyes other than IDRiD's; other retinal diseases (drusen, which look like
exudates, among them). 44 training photos with lesions are few: expect errors outside
IDRiD-like photographs, and false haemorrhages on healthy eyes (measured below). **Research use only; not for clinical
use.**
"""

# What the bundled synthetic demonstration model is asked to reach on its synthetic test split.
AUPR_TARGETS = {"EX": 0.7, "HE": 0.7, "MA": 0.4, "SE": 0.7}


def describe_data(datasets: dict[str, Any]) -> dict[str, Any]:
    """Name, card section and test-split note for a model trained on ``datasets`` (the run's
    provenance: source -> split sizes)."""
    sources = sorted(datasets)
    if sources in ([], ["synthetic"]):  # a run without a record of its data is treated as the demo
        return {"name": "hydralanet-demo-synthetic", "note": DEMO_NOTE, "synthetic": True}
    name = "hydralanet-" + "-".join(sources)
    return {"name": name, "note": IDRID_NOTE if "idrid" in sources else "", "synthetic": False}


def measure_real_photo(source: str | Path, repeats: int = 3) -> dict[str, Any]:
    """Lesion coverage (% of the FOV) at the default thresholds on the normal-eye photo, and
    the median wall time of ``predict`` (the fast path) on it."""
    from skimage import data

    loaded = load_model(source, device="cpu")
    image = data.retina()
    predict(loaded, image)  # warm-up: builds the fast path once
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        prediction = predict(loaded, image)
        times.append(time.perf_counter() - start)
    coverage = {row["lesion"]: row["coverage_pct"] for row in prediction.statistics(loaded.config.thresholds)}
    return {
        "coverage_pct": coverage,
        "predict_s": round(statistics.median(times), 3),
        "input_size": loaded.config.preprocessing.input_size,
        "threads": torch.get_num_threads(),
    }


def crosscheck_metrics(model: str | Path, work: Path, n: int, seed: int) -> dict[str, Any]:
    """Metrics on ``n`` photos of :mod:`training.crosscheck` (seed ``seed``)."""
    from . import crosscheck
    from .prepare import main as prepare_main

    crosscheck.write(work / "photos", n, seed)
    if prepare_main(["--synthetic", str(work / "photos"), "--out", str(work / "manifest.csv")]) != 0:
        raise RuntimeError(f"could not index the cross-check photos in {work / 'photos'}")
    return evaluate(str(model), work / "manifest.csv", "test", work / "eval", precision="fp32")


def bundle(
    run: Path,
    test_manifest: Path,
    out: Path,
    *,
    command: str,
    train_seconds: float | None,
    machine: str,
    train_machine: str | None = None,
    crosscheck_n: int = 40,
    crosscheck_seed: int = 7,
    bootstrap: int = 0,
    pretraining: str | None = None,
    lesion_free_manifest: Path | None = None,
) -> dict[str, Any]:
    """Package ``run``/best as fp16 weights with its model card into ``out``, every figure measured
    on what ships: ``test_manifest``'s test split, the normal-eye photo, and, when given,
    ``lesion_free_manifest``'s test split of healthy eyes (the share of each photo's field marked)."""
    best = load_model(run / "best", device="cpu")
    config = best.config
    data = describe_data(config.provenance.get("datasets") or {})
    if not data["synthetic"]:
        crosscheck_n = 0  # the second generator checks a synthetic model; a real one has a real test set
    with tempfile.TemporaryDirectory() as tmp:
        # First the fp16 weights, so every figure below is measured on what ships.
        half = save_checkpoint(best.model, Path(tmp) / "half", config, weights_dtype=torch.float16)
        report = evaluate(str(half), test_manifest, "test", Path(tmp) / "eval", precision="fp32", bootstrap=bootstrap)
        second = (
            crosscheck_metrics(half, Path(tmp) / "crosscheck", crosscheck_n, crosscheck_seed) if crosscheck_n else None
        )
        real = measure_real_photo(half)
        healthy = (
            evaluate(str(half), lesion_free_manifest, "test", Path(tmp) / "healthy", precision="fp32").get(
                "lesion_free"
            )
            if lesion_free_manifest
            else None
        )
        shipped = load_model(half, device="cpu")
    prov = dict(config.provenance)
    prov["trained"] = True
    prov.pop("demonstration", None)
    if data["synthetic"]:
        prov["demonstration"] = "synthetic data only"
    if pretraining:
        prov["pretraining"] = pretraining
    prov["command"] = command
    prov.setdefault("metrics", {})["test"] = json_safe(report["metrics"])
    prov.setdefault("metrics_note", {})["test"] = test_note(report, synthetic=data["synthetic"])
    if second is not None:
        prov["metrics"]["crosscheck"] = json_safe(second["metrics"])
        prov["metrics_note"]["crosscheck"] = (
            f"{second['images']['all']} photos from training/crosscheck.py (seed {crosscheck_seed}): lesions drawn by a "
            "second, independent generator (plain ellipses with textbook colours) on the real normal-eye photo; "
            "scored like the test split."
        )
    prov["real_normal_eye"] = real
    if healthy:
        prov["lesion_free"] = {k: v for k, v in healthy.items() if k != "per_photo"}
    prov["training_seconds"] = train_seconds
    prov["machine"] = machine
    prov["train_machine"] = train_machine or machine
    config.provenance = prov
    config.name = data["name"]
    card = render_model_card(config, parameters=shipped.identity["parameters"]) + data["note"] + _facts(prov, real)
    save_checkpoint(shipped.model, out, config, model_card=card, weights_dtype=torch.float16)
    return {
        "test": report["metrics"],
        "crosscheck": second["metrics"] if second else None,
        "real_normal_eye": real,
        "lesion_free": healthy,
    }


def test_note(report: dict[str, Any], *, synthetic: bool) -> str:
    """What the card says above its test table: which photos, at what resolution, which AP."""
    images = report["images"]
    ap = "AUPR is step-wise (exact) average precision over all pixels (logit-binned, 65,536 bins)"
    if report.get("bootstrap"):
        ap += f"; 95 % intervals from {report['bootstrap']} bootstrap resamples of the photos"
    if synthetic:
        where = f"Held-out synthetic test split ({images['all']} images, generator seeds never used in training)"
    elif set(images) - {"all"} == {"idrid"}:
        where = f"IDRiD's official segmentation test set ({images['all']} photos, used for nothing else)"
    else:
        where = (
            f"The held-out test split ({images['all']} photos: "
            + ", ".join(f"{s} {n}" for s, n in images.items() if s != "all")
            + ")"
        )
    return f"{where}, scored at the original resolution; {ap}; aupr11 is the literature's 11-threshold AUPR."


def this_machine() -> str:
    """A short description of this CPU: cores and the vector extensions inference uses."""
    import os

    from hydralanet.inference.device import cpu_has_native_bf16

    caps = torch.cpu.get_capabilities() if hasattr(torch, "cpu") and hasattr(torch.cpu, "get_capabilities") else {}
    isa = "AVX-512 with bf16" if cpu_has_native_bf16() else caps.get("cpu_capability", "").upper() or "x86_64"
    return f"a {os.cpu_count()}-core {caps.get('cpu_name') or 'x86_64'} CPU ({isa}, no GPU)"


def _facts(prov: dict[str, Any], real: dict[str, Any]) -> str:
    lines = ["", "## Measured on this checkpoint", ""]
    if prov.get("training_seconds"):
        lines.append(
            f"- training time: {prov['training_seconds'] / 60:.1f} min on "
            f"{prov.get('train_machine') or prov['machine']}"
        )
    lines.append(
        f"- inference (`predict`, fast path, {real['input_size']} px, {real['threads']} "
        f"thread{'s' if real['threads'] != 1 else ''}): "
        f"{real['predict_s']:.2f} s per image on {prov['machine']}"
    )
    if prov.get("pretraining"):
        lines.append(f"- initialised from: {prov['pretraining']}")
    test = (prov.get("metrics") or {}).get("test", {}).get("overall", {})
    intervals = [
        f"{c} {test[c]['aupr']:.3f} ({test[c]['aupr_95'][0]:.3f}-{test[c]['aupr_95'][1]:.3f})"
        for c in CLASSES
        if isinstance(test.get(c, {}).get("aupr"), float)
        and test[c].get("aupr_95")
        and test[c]["aupr_95"][0] is not None
    ]
    if intervals:
        lines.append("- test AUPR with its 95 % bootstrap interval over photos: " + ", ".join(intervals))
    weak = [c for c in CLASSES if isinstance(test.get(c, {}).get("aupr"), float) and test[c]["aupr"] < AUPR_TARGETS[c]]
    if "demonstration" not in prov:
        eleven = [c for c in CLASSES if isinstance(test.get(c, {}).get("aupr11"), float)]
        if "idrid" in (prov.get("datasets") or {}) and eleven:
            lines.append(
                "- beside the IDRiD challenge's best 11-threshold AUPR per lesion (Porwal et al., Medical Image "
                "Analysis 2020): "
                + ", ".join(f"{c} {test[c]['aupr11']:.3f} vs {IDRID_CHALLENGE_BEST[c]:.3f}" for c in eleven)
            )
        weak = []
    if weak:
        lines.append(
            "- below the demonstration model's targets (test AUPR >= 0.7 for EX, HE and SE, >= 0.4 for MA): "
            + ", ".join(f"{c} (test AUPR {test[c]['aupr']:.2f})" for c in weak)
            + ". Expect its masks for these lesions to be unreliable even on synthetic photos."
        )
    second = (prov.get("metrics") or {}).get("crosscheck", {}).get("overall", {})
    if second:
        lines.append(
            "- AUPR on a second, independent lesion generator (`training/crosscheck.py`, "
            + prov.get("metrics_note", {}).get("crosscheck", "").split(" photos")[0]
            + " photos): "
            + ", ".join(
                f"{c} {second[c]['aupr']:.3f}" for c in CLASSES if isinstance(second.get(c, {}).get("aupr"), float)
            )
        )
    coverage = ", ".join(f"{c} {real['coverage_pct'][c]:.3f} %" for c in CLASSES)
    lines.append(
        f"- predicted lesion area on the real normal-eye photo (skimage.data.retina), % of the field of view: {coverage}"
    )
    healthy = prov.get("lesion_free")
    if healthy:
        cov = healthy["coverage"]
        lines.append(
            f"- on {healthy['photos']} healthy eyes it was not trained on (graded free of retinopathy), % of the field "
            "of view marked, median (largest): "
            + ", ".join(f"{c} {cov[c]['median_pct']:.3f} % ({cov[c]['max_pct']:.3f} %)" for c in CLASSES)
            + f"; photos over {healthy['aim_pct']:g} %: "
            + ", ".join(f"{c} {cov[c]['photos_over_aim']}" for c in CLASSES)
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run", type=Path, required=True, help="training run folder (uses RUN/best)")
    parser.add_argument("--test-manifest", type=Path, required=True, help="manifest with a held-out test split")
    parser.add_argument("--out", type=Path, default=Path("weights"))
    parser.add_argument("--command", default="bash training/make_bundled.sh", help="reproduce command for the card")
    parser.add_argument("--train-seconds", type=float, default=None)
    parser.add_argument(
        "--machine", default=None, help="this machine, where inference is timed (default: its core count and CPU flags)"
    )
    parser.add_argument("--train-machine", default=None, help="where the run was trained (default: --machine)")
    parser.add_argument("--bootstrap", type=int, default=1000, metavar="N", help="resamples for AP intervals (0: none)")
    parser.add_argument("--pretraining", default=None, help="where the initial weights came from, for the card")
    parser.add_argument(
        "--lesion-free",
        type=Path,
        default=None,
        metavar="MANIFEST",
        help="a manifest whose test split holds healthy eyes (training.prepare --idrid-normals ROOT --normals-from "
        "test): the share of each one's field marked goes into the card",
    )
    parser.add_argument(
        "--crosscheck",
        type=int,
        default=40,
        metavar="N",
        help="photos from training/crosscheck.py to score as well (0: none)",
    )
    args = parser.parse_args(argv)
    result = bundle(
        args.run,
        args.test_manifest,
        args.out,
        command=args.command,
        train_seconds=args.train_seconds,
        machine=args.machine or this_machine(),
        train_machine=args.train_machine,
        crosscheck_n=args.crosscheck,
        bootstrap=args.bootstrap,
        pretraining=args.pretraining,
        lesion_free_manifest=args.lesion_free,
    )
    for c in CLASSES:
        m = result["test"]["overall"][c]
        x = (result["crosscheck"] or {}).get("overall", {}).get(c, {}).get("aupr")
        second = f", second generator aupr {x:.4f}" if isinstance(x, float) else ""
        print(
            f"{c}: aupr {m['aupr']:.4f}, aupr11 {m['aupr11']:.4f}, f1 {m['f1']:.3f}{second}, "
            f"real-eye area {result['real_normal_eye']['coverage_pct'][c]} %"
            + (
                f", healthy eyes median {result['lesion_free']['coverage'][c]['median_pct']} %"
                if result["lesion_free"]
                else ""
            )
        )
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
