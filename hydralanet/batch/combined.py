"""``predict --report-combined``: every photo's report pages in one ``DIR/report.pdf``.

Built at the merge step (:func:`hydralanet.batch.outputs.merge_shards`, on rank 0 under ``torchrun``)
from what each photo left on disk, in input order: its ``record.json`` line (statistics rows,
findings), its mask PNGs, the photo itself read again, and its DICOM header facts read again.
So it covers every rank's photos and the photos ``--resume`` skipped, and holds one photo's
pixels at a time (plus the PDF being built: pictures as JPEG, well under 2 MB a photo).

The reading on the pages is the one in ``findings.json``: landmarks as found (the floats
survive JSON exactly), the unit ``dd`` as :func:`hydralanet.reading.zones.zone_maps` computes it; the
per-pixel zone maps are not needed to draw the grid, so they are not rebuilt.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from ..config import CLASSES
from ..io.dicom import facts_of
from ..io.images import PhotoSource, write_atomic
from ..reading.landmarks import Fovea, Landmarks, OpticDisc
from ..reading.photo import PhotoReading
from ..reading.quality import Quality
from ..reading.zones import ZoneMaps, zone_units
from ..report.pdf import ReportPhoto, ReportWriter


def reading_from_findings(found: dict[str, Any], mm_per_px: float | None) -> PhotoReading:
    """The parts of a :class:`PhotoReading` the report draws, from its ``findings.json``."""

    def fields(value: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in value.items() if k != "reliable"}  # a property, written for readers

    disc = OpticDisc(**fields(found["optic_disc"])) if found.get("optic_disc") else None
    fovea = Fovea(**fields(found["fovea"])) if found.get("fovea") else None
    notes = tuple(found.get("landmark_notes", ()))
    landmarks = Landmarks(
        disc, fovea, found.get("eye"), found.get("eye_source"), found.get("fov_diameter_px", 0.0), notes
    )
    quality = found.get("quality", {})
    measures = {k: v for k, v in quality.items() if k not in ("verdict", "reasons")}
    maps = None
    units = zone_units(landmarks, mm_per_px)  # as zone_maps decides
    if units is not None:
        empty = np.empty((0, 0), dtype=np.int8)
        maps = ZoneMaps(empty, empty, empty.astype(bool), *units)
    verdict = Quality(quality.get("verdict", ""), list(quality.get("reasons", [])), measures)
    return PhotoReading(landmarks, verdict, maps, mm_per_px)


class CombinedReport:
    """Pages for each photo done (:meth:`add`, given its record), then :meth:`write`.
    ``sources``: the run's photos by input index; ``report``: ``record``, ``provenance``,
    ``paper`` as for the per-photo reports. A photo whose pages fail is left out with an
    ``error:`` line; the others stand."""

    def __init__(
        self, out: Path, sources: list[PhotoSource], report: dict[str, Any], *, opacity: float, keep_identifiers: bool
    ) -> None:
        self.out, self.sources, self.keep_identifiers = out, sources, keep_identifiers
        self.writer = ReportWriter(report["record"], report["provenance"], paper=report["paper"], opacity=opacity)
        self.pages = 0

    def add(self, record: dict[str, Any]) -> None:
        name = record["image"]
        try:
            self.writer.add(self.photo(record))
            self.pages += 1
        except Exception as exc:  # a report must not cost the batch
            print(f"error: {name}: not in report.pdf ({type(exc).__name__}: {exc})", file=sys.stderr)

    def photo(self, record: dict[str, Any]) -> ReportPhoto:
        source = self.sources[record["index"]]
        name, folder = record["image"], self.out / record["image"]
        image = source.read()
        masks = np.stack([_read_mask(folder / f"{c}.png") for c in CLASSES])
        facts = facts_of(source.path, keep_identifiers=self.keep_identifiers)
        found = record.get("findings")
        reading = None if found is None else reading_from_findings(found, facts.mm_per_px if facts else None)
        return ReportPhoto(name, image, masks, record["rows"], reading, found, facts)

    def write(self) -> None:
        if self.pages:
            write_atomic(self.out / "report.pdf", self.writer.to_bytes())


def _read_mask(path: Path) -> np.ndarray:
    mask = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if mask is None:
        raise ValueError(f"{path}: cannot read the mask")
    return mask > 0
