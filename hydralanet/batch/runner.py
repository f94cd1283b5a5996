"""``predict`` over many photos: inputs, ranks, resume and the merged summary.

- Inputs: files, folders (recursive, in sorted order; the output folder and hidden folders are
  skipped) and ``--list FILE`` (a text file, one path a line, or a CSV with a ``path`` or
  ``image`` column; relative paths are relative to the list's folder). Each photo's output
  folder name is fixed over the whole list before it is split, so it never depends on ranks.
- Ranks: launched by ``torchrun`` (``WORLD_SIZE`` in the environment), each process takes every
  ``WORLD_SIZE``-th photo from its ``RANK`` (:func:`hydralanet.batch.pipeline.rank_share`), writes its
  own shard, and rank 0 merges after a ``torch.distributed`` barrier (gloo: it needs no GPU).
  Without ``torchrun`` it is one process and one shard.
- Resume: ``--resume`` skips photos whose ``record.json`` says they were made from the same file
  with the same model and settings (``--report``, ``--paper`` and ``--keep-identifiers`` among
  them), and whose files all exist (:mod:`hydralanet.batch.outputs`).
- DICOM: each frame of a multi-frame file is a photo of its own, ``<stem>_f<k>``
  (:func:`hydralanet.io.images.photo_sources`); ``--report-combined`` is built at the merge
  (:mod:`hydralanet.batch.combined`).
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
import time
from dataclasses import dataclass, field, replace
from datetime import timedelta
from pathlib import Path
from typing import Any

from ..config import validate_thresholds
from ..io.images import IMAGE_EXTENSIONS, PhotoSource, photo_sources

SHARDS = ".shards"


@dataclass(frozen=True)
class PredictRequest:
    """What a ``predict`` run is asked to do: one field per option of ``python -m hydralanet
    predict`` (its ``--help`` says what each means)."""

    out: Path
    paths: list[str] = field(default_factory=list)
    list_file: Path | None = None
    model: str | None = None
    thresholds: dict[str, float] = field(default_factory=dict)
    clahe: str | None = None
    crop: str | None = None
    tta: bool | None = None  # None: the checkpoint's
    device: str = "auto"
    precision: str = "auto"
    save_probabilities: bool = False
    reading: bool = True
    opacity: float = 0.5
    allow_pickle: bool = False
    tile: int | None = None
    workers: int | None = None
    batch_size: int | None = None
    resume: bool = False
    report: bool = False
    report_combined: bool = False
    paper: str = "a4"
    keep_identifiers: bool = False

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> PredictRequest:
        """The request the command line's parsed options make."""
        named = {name: getattr(args, name) for name in cls.__dataclass_fields__ if hasattr(args, name)}
        return cls(**named, list_file=args.list, thresholds=dict(args.threshold), reading=not args.no_reading)


def read_list(path: str | os.PathLike) -> list[Path]:
    """Paths from a list file: a ``.csv`` with a ``path`` or ``image`` column, or plain text,
    one path a line (blank lines and ``#`` comments skipped). Relative to the list's folder."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise ValueError(f"{path}: list file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: cannot read list file ({exc})") from None
    if path.suffix.lower() == ".csv":
        reader = csv.DictReader(text.splitlines())
        columns = {name.strip().lower(): name for name in reader.fieldnames or []}
        key = next((columns[c] for c in ("path", "image") if c in columns), None)
        if key is None:
            found = ", ".join(reader.fieldnames or []) or "none"
            raise ValueError(f"{path}: no 'path' or 'image' column (columns: {found})")
        entries = [(row.get(key) or "").strip() for row in reader]
    else:
        entries = [line.strip() for line in text.splitlines()]
    return [path.parent / entry for entry in entries if entry and not entry.startswith("#")]


def expand_inputs(
    paths: list[str | os.PathLike], list_file: str | os.PathLike | None = None, *, exclude: Path | None = None
) -> list[Path]:
    """Image paths from files, folders (recursive, sorted) and a list file, in that order.
    A path that does not exist is kept, so it is reported as a failed photo."""
    skip = exclude.resolve() if exclude is not None else None
    out: list[Path] = []
    for p in map(Path, paths):
        if not p.is_dir():
            out.append(p)
            continue
        for q in sorted(p.rglob("*")):
            inside = q.relative_to(p).parts
            if q.suffix.lower() not in IMAGE_EXTENSIONS or any(part.startswith(".") for part in inside):
                continue
            if (skip is not None and skip in q.resolve().parents) or not q.is_file():
                continue
            out.append(q)
    if list_file is not None:
        out.extend(read_list(list_file))
    return out


def unique_names(paths: list[Path] | list[PhotoSource]) -> list[str]:
    """Output folder names: the file's stem (a DICOM frame's: ``<stem>_f<k>``), with ``_2``,
    ``_3``... for repeats (two folders with a ``retina.png`` each must not overwrite each other)."""
    used: set[str] = set()
    names = []
    for path in paths:
        name, k = path.stem, 2
        while name in used:
            name, k = f"{path.stem}_{k}", k + 1
        used.add(name)
        names.append(name)
    return names


@dataclass(frozen=True)
class Ranks:
    """Where this process stands among ``torchrun``'s processes (one process: 0 of 1)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1

    @classmethod
    def from_env(cls) -> Ranks:
        if "WORLD_SIZE" not in os.environ:
            return cls()
        env = os.environ
        return cls(
            int(env.get("RANK", 0)),
            int(env["WORLD_SIZE"]),
            int(env.get("LOCAL_RANK", 0)),
            int(env.get("LOCAL_WORLD_SIZE", 1)),
        )

    def start(self) -> None:
        if self.world_size > 1:
            import torch.distributed as dist

            # A rank may wait at the barrier for hours while the others finish their share.
            dist.init_process_group("gloo", timeout=timedelta(days=7))

    def barrier(self) -> None:
        if self.world_size > 1:
            import torch.distributed as dist

            dist.barrier()

    def stop(self) -> None:
        if self.world_size > 1:
            import torch.distributed as dist

            dist.destroy_process_group()


def _fail(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 2


def run_predict(request: PredictRequest) -> int:
    """``python -m hydralanet predict``: returns the exit code (0, 1: some photos failed, 2:
    bad arguments or model)."""
    from ..checkpoints.format import CheckpointError
    from ..checkpoints.read import describe_identity
    from ..inference.loaded import load_model

    if not 0.0 <= request.opacity <= 1.0:
        return _fail(f"--opacity must be in [0, 1], got {request.opacity}")
    if not request.paths and request.list_file is None:
        return _fail("give image files or folders (PATH ...) or --list FILE")
    ranks = Ranks.from_env()
    device = request.device
    if device == "auto" and ranks.world_size > 1:
        import torch

        device = f"cuda:{ranks.local_rank}" if torch.cuda.is_available() else "cpu"
    try:
        loaded = load_model(request.model, device=device, allow_pickle=request.allow_pickle)
        precision = loaded.resolve_precision(request.precision)  # an impossible pair fails before any writing
        request = replace(request, tta=loaded.resolve_tta(request.tta))
        paths = photo_sources(expand_inputs(request.paths, request.list_file, exclude=request.out))
    except (CheckpointError, ValueError) as exc:
        return _fail(str(exc))
    if not paths:
        return _fail(
            "no images found in "
            + ", ".join(map(str, [*request.paths, *([request.list_file] if request.list_file else [])]))
        )
    if ranks.rank == 0:
        print(f"model: {describe_identity(loaded.identity)}", file=sys.stderr)
    ranks.start()
    try:
        return _run(request, loaded, precision, paths, ranks)
    finally:
        ranks.stop()


def _settings(request: PredictRequest, loaded: Any) -> tuple[Any, dict[str, float]]:
    preprocessing = loaded.config.preprocessing
    if request.clahe:
        preprocessing = preprocessing.replace(clahe=request.clahe)
    if request.crop:
        preprocessing = preprocessing.replace(crop=request.crop)
    return preprocessing, validate_thresholds({**loaded.config.thresholds, **request.thresholds})


def _options(request: PredictRequest, loaded: Any, precision: str, pdf: dict[str, Any]) -> Any:
    """The per-photo output options, with the fingerprint of everything they depend on;
    ``pdf``: the PDF reports' ``record``, ``provenance`` and ``paper``."""
    from .outputs import OutputOptions, settings_fingerprint

    preprocessing, thresholds = _settings(request, loaded)
    identity = {k: loaded.identity.get(k) for k in ("name", "source", "revision", "file", "sha256")}
    # The whole config.json, not a list of fields: calibration, provenance (on the reports) and
    # anything added later change what a photo's files hold without changing the weights.
    settings = {"model": identity, "config": loaded.config.to_dict(), "preprocessing": preprocessing.to_dict()}
    settings["thresholds"] = thresholds
    settings.update(tta=request.tta, precision=precision, tile=request.tile, opacity=request.opacity)
    settings.update(save_probabilities=request.save_probabilities, reading=request.reading)
    settings.update(report=request.paper if request.report else None, keep_identifiers=request.keep_identifiers)
    return OutputOptions(
        thresholds,
        request.opacity,
        request.save_probabilities,
        request.reading,
        settings_fingerprint(settings),
        keep_identifiers=request.keep_identifiers,
        pdf=pdf if request.report else None,
    )


def _run(request: PredictRequest, loaded: Any, precision: str, paths: list[PhotoSource], ranks: Ranks) -> int:
    from tqdm import tqdm

    from ..io.system import reuse_freed_memory
    from ..report.tables import run_record
    from .outputs import ShardWriter
    from .pipeline import InOrder, ModelStage, PhotoDataset, PhotoJob, Pipeline, default_workers, rank_share

    reuse_freed_memory()  # before the workers fork: they inherit it
    preprocessing, thresholds = _settings(request, loaded)
    record = run_record(loaded, preprocessing, thresholds, tta=request.tta, precision=request.precision)
    pdf = {"record": record, "provenance": loaded.config.provenance, "paper": request.paper}
    options = _options(request, loaded, precision, pdf)
    names = unique_names(paths)
    share = rank_share(len(paths), ranks.rank, ranks.world_size)
    jobs = [PhotoJob(i, str(paths[i].path), names[i], paths[i].frame) for i in share]
    del names
    out: Path = request.out
    out.mkdir(parents=True, exist_ok=True)
    shards = [out / SHARDS / f"rank{r}.jsonl" for r in range(ranks.world_size)]
    if ranks.rank == 0:  # shards of an earlier run with more processes are not this run's
        for stale in (out / SHARDS).glob("rank*.jsonl"):
            if stale not in shards:
                stale.unlink()
    overrides = {"clahe": preprocessing.clahe, "crop": preprocessing.crop, "tile": request.tile}
    dataset = PhotoDataset(
        jobs,
        loaded.config.preprocessing,
        overrides,
        out=out,
        fingerprint=options.fingerprint if request.resume else None,
    )
    predict_args = {**overrides, "tta": request.tta, "precision": request.precision}
    workers = default_workers(ranks.local_world_size) if request.workers is None else request.workers
    batch_size = request.batch_size or (1 if loaded.device.type == "cpu" else 4)
    bar = tqdm(total=len(jobs), desc="segmenting", unit="photo", disable=None if ranks.rank == 0 else True)

    def say(message: str) -> None:
        tqdm.write(message, file=sys.stderr)

    pipeline = Pipeline(dataset, ModelStage(loaded, predict_args), options, out, workers, batch_size, say)
    shard = ShardWriter(shards[ranks.rank])
    order = InOrder(share, shard, on_write=lambda record: bar.update(1))
    started = time.perf_counter()
    head = {**record, "tile": request.tile, "images": None, "seconds": None}
    merge = _Merge(request, shards, head, paths, pdf, started)
    try:
        pipeline.run(order)
    finally:  # also on Ctrl-C: the summary of what was done is written
        shard.close()
        bar.close()
        if ranks.world_size == 1:
            merged = merge()
    if ranks.world_size > 1:
        ranks.barrier()
        if ranks.rank != 0:
            return 0  # rank 0 reports for all
        merged = merge()
    return _final_words(merged, len(paths), order.counts["skipped"], out)


@dataclass
class _Merge:
    """The merge step (rank 0): the shards into the summary files and, with
    ``--report-combined``, each photo done into ``DIR/report.pdf`` (:mod:`hydralanet.batch.combined`)."""

    request: PredictRequest
    shards: list[Path]
    head: dict[str, Any]
    sources: list[PhotoSource]
    pdf: dict[str, Any]  # the reports' record, provenance and paper
    started: float

    def __call__(self) -> tuple[int, int]:
        from .outputs import merge_shards

        request, book = self.request, None
        if request.report_combined:
            from .combined import CombinedReport

            book = CombinedReport(
                request.out, self.sources, self.pdf, opacity=request.opacity, keep_identifiers=request.keep_identifiers
            )
        self.head["seconds"] = round(time.perf_counter() - self.started, 2)
        merged = merge_shards(
            self.shards, request.out, self.head, reading=request.reading, on_record=book.add if book else None
        )
        if book is not None:
            book.write()
        return merged


def _final_words(merged: tuple[int, int], total: int, skipped: int, out: Path) -> int:
    done, failed = merged
    already = f" ({skipped} already done)" if skipped else ""
    print(f"{done} of {total} images segmented{already} -> {out}", file=sys.stderr)
    if failed:
        print(f"{failed} file(s) failed; see {out / 'failures.csv'} and {out / 'summary.json'}", file=sys.stderr)
        return 1
    return 0
