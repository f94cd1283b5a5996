"""What ``predict`` writes: one photo's files and record, the run's summary shards, their merge.

- :func:`write_photo_outputs` writes everything of one photo (masks, probability maps, overlay,
  ``findings.json``) and, last, ``record.json``: the photo's summary rows and the fingerprint of
  the model and settings that made them. The record is the proof of completion that
  ``--resume`` checks (:func:`complete_record`). A DICOM photo's header facts (eye, pixel
  size) go to its reading; with ``--report`` its PDF (``<name>.pdf``) is written before the
  record and listed in ``files``.
- Each process appends one JSON line per photo to its shard (:class:`ShardWriter`); at the end
  :func:`merge_shards` streams the shards, in input order, into ``summary.csv``, ``zones.csv``,
  ``failures.csv`` and ``summary.json``: nothing holds the whole run in memory.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import heapq
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..config import CLASSES
from ..inference.segment import lesion_statistics
from ..io.dicom import facts_of
from ..io.images import save_png, write_atomic
from ..reading.grading import indicator_rows
from ..reading.photo import findings, read_photo
from ..reading.zones import ZONE_COLUMNS
from ..report.overlay import render_overlay
from ..report.pdf import ReportPhoto, write_report
from ..report.tables import SUMMARY_COLUMNS

RECORD = "record.json"
FORMAT_VERSION = 2  # bump when a change makes old outputs stale for --resume
FAILURE_COLUMNS = ["image", "error"]


@dataclass
class PhotoResult:
    """One photo after the model, at its original resolution: ``image`` RGB uint8 ``H x W x 3``,
    ``fov`` bool ``H x W``, ``masks`` bool ``4 x H x W``; ``lesions`` bool ``H x W`` (a class
    reaches :data:`hydralanet.reading.photo.LESION_EXCLUSION_P`; for the reading, None without it);
    ``prob16`` uint16 ``4 x H x W`` (p x 65535) when probability maps are asked for;
    ``cores``: for the reading, where the hard-exudate probability reaches
    :data:`hydralanet.reading.grading.DME_EXUDATE_PEAK` (flat indices)."""

    index: int
    name: str
    source: str
    image: np.ndarray
    fov: np.ndarray
    masks: np.ndarray
    lesions: np.ndarray | None = None
    prob16: np.ndarray | None = None
    cores: np.ndarray | None = None


@dataclass(frozen=True)
class OutputOptions:
    """How a photo's outputs are made; ``fingerprint`` identifies model and settings.
    ``keep_identifiers``: DICOM patient and study identifiers go into findings and reports;
    ``pdf``: write a PDF per photo, with :class:`hydralanet.report.pdf.ReportWriter`'s
    arguments (``record``, ``provenance``, ``paper``); None: no PDF."""

    thresholds: dict[str, float]
    opacity: float = 0.5
    save_probabilities: bool = False
    reading: bool = True
    fingerprint: str = ""
    keep_identifiers: bool = False
    pdf: dict[str, Any] | None = None


def settings_fingerprint(settings: dict[str, Any]) -> str:
    """sha256 of everything a photo's outputs depend on (model identity, preprocessing,
    thresholds, precision, TTA, tile, opacity, which outputs), as canonical JSON."""
    text = json.dumps({"format": FORMAT_VERSION, **settings}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def write_photo_outputs(folder: Path, result: PhotoResult, options: OutputOptions) -> dict[str, Any]:
    """Write one photo's files, each atomically, then its ``record.json``; return the record
    (``index``, ``image``, ``source``, ``fingerprint``, ``files``, ``rows`` and, with the
    reading, ``findings`` and ``zones``)."""
    for stale in folder.glob(".*.tmp"):  # a temporary file of a run killed mid-write
        stale.unlink(missing_ok=True)
    files = _write_images(folder, result, options)
    rows = lesion_statistics(result.masks, result.fov, options.thresholds)
    record: dict[str, Any] = {
        "index": result.index,
        "image": result.name,
        "source": result.source,
        "fingerprint": options.fingerprint,
        "files": files,
        "rows": [{"image": result.name, "source": result.source, **row} for row in rows],
    }
    facts = facts_of(result.source, keep_identifiers=options.keep_identifiers)
    reading = found = None
    if options.reading:
        reading, found = _write_findings(folder, result, facts, record)
    if options.pdf is not None:
        photo = ReportPhoto(result.name, result.image, result.masks, record["rows"], reading, found, facts)
        pdf = options.pdf
        write_report(
            folder / f"{result.name}.pdf",
            photo,
            pdf["record"],
            pdf["provenance"],
            paper=pdf["paper"],
            opacity=options.opacity,
        )
        files.append(f"{result.name}.pdf")
    write_atomic(folder / RECORD, (json.dumps(record) + "\n").encode())
    return record


def _write_images(folder: Path, result: PhotoResult, options: OutputOptions) -> list[str]:
    """The masks, the probabilities when asked for, and the overlay; their file names."""
    files = []
    for i, c in enumerate(CLASSES):
        save_png(folder / f"{c}.png", np.asarray(result.masks[i], bool).view(np.uint8) * 255)
        files.append(f"{c}.png")
        if options.save_probabilities:
            save_png(folder / f"prob_{c}.png", result.prob16[i])
            files.append(f"prob_{c}.png")
    save_png(folder / "overlay.png", render_overlay(result.image, result.masks, opacity=options.opacity))
    files.append("overlay.png")
    return files


def _write_findings(folder: Path, result: PhotoResult, facts: Any, record: dict[str, Any]) -> tuple[Any, dict]:
    """The reading, written as ``findings.json`` and added to ``record`` (``findings``, ``zones``)."""
    # read_photo excludes pixels where max over classes of p >= 0.5: ``lesions`` is that map.
    reading = read_photo(
        result.image,
        result.fov,
        lesions=result.lesions,
        cores=result.cores,
        laterality=facts.laterality if facts else None,
        mm_per_px=facts.mm_per_px if facts else None,
    )
    found = findings(reading, result.masks)
    if facts is not None:
        found["dicom"] = facts.to_dict()
    write_atomic(folder / "findings.json", (json.dumps(found, indent=2) + "\n").encode())
    record["files"].append("findings.json")
    record["findings"] = found
    record["zones"] = [{"image": result.name, **z} for z in found["zones"] + indicator_rows(found)]
    return reading, found


def complete_record(folder: Path, source: str, fingerprint: str) -> dict[str, Any] | None:
    """The photo's record when its outputs are complete and were made from ``source`` with
    the same model and settings; else None (the photo is to be redone)."""
    try:
        record = json.loads((folder / RECORD).read_text())
    except (OSError, ValueError):
        return None
    if record.get("fingerprint") != fingerprint or record.get("source") != source:
        return None
    if not all((folder / name).is_file() for name in record.get("files", [])):
        return None
    return record


class ShardWriter:
    """One JSON line per photo (a record, or ``{index, source, error}`` for a failure),
    flushed at once; a line cut short by a kill is skipped when read."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.file = path.open("w", encoding="utf-8")

    def write(self, record: dict[str, Any]) -> None:
        self.file.write(json.dumps(record) + "\n")
        self.file.flush()

    def close(self) -> None:
        self.file.close()


def read_shard(path: Path) -> Iterator[dict[str, Any]]:
    if not path.exists():
        return
    with path.open(encoding="utf-8") as fh:
        for line in fh:
            try:
                yield json.loads(line)
            except ValueError:  # the last line of a killed run
                continue


@contextlib.contextmanager
def _atomic_text(path: Path) -> Iterator[Any]:
    """A text file written to a temporary name and renamed into place when complete."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as fh:
            yield fh
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class _LazyCsv:
    """A CSV whose header is ``columns`` then the other keys of its first row (as
    :func:`hydralanet.report.tables.table_csv`), decided when that row arrives."""

    def __init__(self, fh: Any, columns: list[str]) -> None:
        self.fh, self.columns, self.writer = fh, columns, None

    def write(self, row: dict[str, Any]) -> None:
        if self.writer is None:
            extra = [k for k in row if k not in self.columns]
            self.writer = csv.DictWriter(self.fh, fieldnames=self.columns + extra, lineterminator="\n")
            self.writer.writeheader()
        self.writer.writerow(row)

    def finish(self) -> None:
        if self.writer is None:
            csv.DictWriter(self.fh, fieldnames=self.columns, lineterminator="\n").writeheader()


def _indented(value: Any, prefix: str) -> str:
    return prefix + json.dumps(value, indent=2).replace("\n", "\n" + prefix)


def merge_shards(
    shards: list[Path], out: Path, head: dict[str, Any], *, reading: bool, on_record: Any = None
) -> tuple[int, int]:
    """Stream the shards (each in input order) into ``out``'s summary files, in input order;
    ``summary.json`` is ``head`` + ``images`` + ``results``, ``findings``, ``failed``, as
    ``json.dumps(..., indent=2)`` writes it; ``on_record(record)`` for each photo done, in input
    order (the combined report). Returns (photos done, photos failed)."""
    done = failed = 0
    with tempfile.TemporaryDirectory(dir=out, prefix=".merge.") as tmp, contextlib.ExitStack() as stack:
        parts = {key: stack.enter_context((Path(tmp) / key).open("w+", encoding="utf-8")) for key in _PARTS}
        first = dict.fromkeys(parts, True)

        def element(key: str, text: str) -> None:
            parts[key].write(("" if first[key] else ",\n") + text)
            first[key] = False

        summary = _LazyCsv(stack.enter_context(_atomic_text(out / "summary.csv")), SUMMARY_COLUMNS)
        failures = _LazyCsv(stack.enter_context(_atomic_text(out / "failures.csv")), FAILURE_COLUMNS)
        zones = _LazyCsv(stack.enter_context(_atomic_text(out / "zones.csv")), ZONE_COLUMNS) if reading else None
        for record in heapq.merge(*(read_shard(path) for path in shards), key=lambda r: r["index"]):
            if "error" in record:
                failed += 1
                failures.write({"image": record["source"], "error": record["error"]})
                element("failed", _indented({"image": record["source"], "error": record["error"]}, "    "))
                continue
            done += 1
            if on_record is not None:
                on_record(record)
            for row in record["rows"]:
                summary.write(row)
                element("results", _indented(row, "    "))
            if zones is not None and "findings" in record:
                for row in record["zones"]:
                    zones.write(row)
                name = json.dumps(record["image"])
                element("findings", f"    {name}: " + _indented(record["findings"], "    ")[4:])
        for table in (summary, failures, zones):
            if table is not None:
                table.finish()
        _write_summary_json(out / "summary.json", {**head, "images": done}, parts, first)
    return done, failed


_PARTS = ("results", "findings", "failed")


def _write_summary_json(path: Path, head: dict[str, Any], parts: dict[str, Any], empty: dict[str, bool]) -> None:
    brackets = {"results": "[]", "findings": "{}", "failed": "[]"}
    skeleton = json.dumps({**head, **{key: f"@@{key}@@" for key in parts}}, indent=2) + "\n"
    with _atomic_text(path) as fh:
        for key, part in parts.items():
            before, skeleton = skeleton.split(f'"@@{key}@@"', 1)
            fh.write(before)
            if empty[key]:
                fh.write(brackets[key])
                continue
            fh.write(brackets[key][0] + "\n")
            part.seek(0)
            shutil.copyfileobj(part, fh)
            fh.write("\n  " + brackets[key][1])
        fh.write(skeleton)
