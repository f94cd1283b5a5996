"""A reading as a document: one PDF per photo (or several photos in one), made with fpdf2.

Page 1: the model and what it was trained on, the photo and its lesion overlay (with the disc,
fovea and ETDRS grid), the lesion table, the reading (eye, scale, DME risk, 4-2-1, quality).
Page 2: the macula with the grid, the zone and quadrant tables, then how the result was made:
thresholds, preprocessing, the model's identity (name, source, revision, sha256) and training
data, the input file, the date and the software version. Every page carries the
research-software notice.

Pictures are downscaled and stored as JPEG, fonts (DejaVu Sans, ``fonts/LICENSE.txt``) embedded
as subsets: a 4288 x 2848 photo's report stays well under 2 MB (docs/dicom-and-reports.md).
Patient identifiers appear only when the facts carry them (read with ``keep_identifiers``).
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np
from fpdf import FPDF
from fpdf.fonts import FontFace

from .. import __version__
from ..config import CLASS_NAMES, CLASSES, format_threshold
from ..io.images import write_atomic
from ..reading.zones import ETDRS_RADII_DD, ETDRS_ZONES, QUADRANTS, draw_grid
from .overlay import COLOURS, downscale_for_display, render_overlay

if TYPE_CHECKING:
    from ..io.dicom import DicomFacts
    from ..reading.photo import PhotoReading

FONT_DIR = Path(__file__).resolve().parent.parent / "fonts"
PAPERS = ("a4", "letter")
NOTICE = "Research software, not a medical device: not for diagnosis or clinical decisions."
PICTURE_SIDE = 1000  # px, longer side of the full-field pictures (~170 dpi at 88 mm wide)
MACULA_SIDE = 700  # px, the macula picture
JPEG_QUALITY = 85
GREY = (90, 90, 90)


@dataclass
class ReportPhoto:
    """One photo's results: ``image`` RGB uint8 ``H x W x 3``, ``masks`` bool ``4 x H x W``,
    ``statistics`` (:func:`hydralanet.lesion_statistics` rows), and when available the reading
    (:func:`hydralanet.reading.photo.read_photo`), its ``found`` (:func:`~hydralanet.reading.photo.findings`)
    and the DICOM header facts."""

    name: str
    image: np.ndarray
    masks: np.ndarray
    statistics: list[dict[str, Any]]
    reading: PhotoReading | None = None
    found: dict[str, Any] | None = None
    facts: DicomFacts | None = None


class _Document(FPDF):
    def footer(self) -> None:
        self.set_y(-12)
        self.set_font("DejaVu", size=7)
        self.set_text_color(*GREY)
        self.cell(0, 5, f"HydraLA-Net {__version__} · {NOTICE}", align="L")
        self.cell(0, 5, f"page {self.page_no()}/{{nb}}", align="R")
        self.set_text_color(0)


class ReportWriter:
    """Photos in, one PDF out: ``add`` each photo, then ``to_bytes``. ``record``: a
    :func:`hydralanet.report.tables.run_record` (model identity, preprocessing, thresholds, ...);
    ``provenance``: the checkpoint config's (training data, code version)."""

    def __init__(
        self,
        record: dict[str, Any],
        provenance: dict[str, Any] | None = None,
        *,
        paper: str = "a4",
        opacity: float = 0.5,
        created: datetime | None = None,
    ) -> None:
        if paper not in PAPERS:
            raise ValueError(f"paper must be one of {', '.join(PAPERS)}, got {paper!r}")
        self.record, self.provenance = record, provenance or {}
        self.opacity = opacity
        created = created or datetime.now(UTC)
        self.created = created.strftime("%Y-%m-%d %H:%M UTC")
        pdf = _Document(format="A4" if paper == "a4" else "Letter", unit="mm")
        pdf.add_font("DejaVu", "", str(FONT_DIR / "DejaVuSans.ttf"))
        pdf.add_font("DejaVu", "B", str(FONT_DIR / "DejaVuSans-Bold.ttf"))
        pdf.set_margins(14, 14, 14)
        pdf.set_auto_page_break(True, margin=16)
        pdf.set_title("HydraLA-Net reading")
        pdf.set_creator(f"HydraLA-Net {__version__}")
        pdf.set_creation_date(created if created.tzinfo else created.replace(tzinfo=UTC))
        self.pdf = pdf

    def add(self, photo: ReportPhoto) -> ReportWriter:
        pdf = self.pdf
        pdf.add_page()
        self._title(photo)
        self._pictures(photo)
        self._lesion_table(photo.statistics)
        self._reading(photo)
        pdf.add_page()
        if photo.reading is not None and photo.found is not None and photo.reading.maps is not None:
            self._macula(photo)
            self._zone_tables(photo.found)
        self._provenance(photo)
        return self

    def to_bytes(self) -> bytes:
        return bytes(self.pdf.output())

    # ------------------------------------------------------------------ page parts

    def _heading(self, text: str, size: float = 11) -> None:
        self.pdf.set_font("DejaVu", "B", size)
        self.pdf.cell(0, 7, text, new_x="LMARGIN", new_y="NEXT")
        self.pdf.set_font("DejaVu", size=8.5)

    def _line(self, label: str, text: str) -> None:
        pdf = self.pdf
        pdf.set_font("DejaVu", "B", 8.5)
        pdf.cell(38, 4.6, label)
        pdf.set_font("DejaVu", size=8.5)
        pdf.multi_cell(0, 4.6, text, new_x="LMARGIN", new_y="NEXT")

    def _title(self, photo: ReportPhoto) -> None:
        pdf = self.pdf
        self._heading(f"HydraLA-Net reading: {photo.name}", 14)
        h, w = photo.image.shape[:2]
        pdf.set_text_color(*GREY)
        pdf.cell(0, 5, f"{w} x {h} px · {self.created} · HydraLA-Net {__version__}", new_x="LMARGIN", new_y="NEXT")
        pdf.set_text_color(0)
        pdf.set_fill_color(255, 243, 205)
        pdf.set_font("DejaVu", "B", 9)
        pdf.multi_cell(0, 6, NOTICE, border=1, fill=True, align="C", new_x="LMARGIN", new_y="NEXT")
        pdf.set_font("DejaVu", size=8.5)
        self._line("Model", str(self.record.get("model", {}).get("name") or "unnamed"))
        self._line("Training data", describe_training_data(self.provenance))
        facts = photo.facts
        if facts is not None and facts.identifiers:
            ids = ", ".join(f"{k} {v}" for k, v in facts.identifiers.items())
            self._line("Identifiers", ids)
        elif facts is not None:
            self._line("Identifiers", "withheld (the DICOM header's patient and study identifiers are not reported)")
        pdf.ln(1)

    def _pictures(self, photo: ReportPhoto) -> None:
        pdf = self.pdf
        small, small_masks = downscale_for_display(photo.image, photo.masks, PICTURE_SIDE)
        overlay = render_overlay(small, small_masks, opacity=self.opacity)
        if photo.reading is not None:
            dd = photo.reading.maps.dd if photo.reading.maps else None
            overlay = draw_grid(overlay, photo.reading.landmarks, scale=small.shape[1] / photo.image.shape[1], dd_px=dd)
        gap = 4
        width = (pdf.epw - gap) / 2
        height = width * small.shape[0] / small.shape[1]
        x, y = pdf.l_margin, pdf.get_y()
        pdf.image(_jpeg(small), x=x, y=y, w=width, h=height)
        pdf.image(_jpeg(overlay), x=x + width + gap, y=y, w=width, h=height)
        pdf.set_y(y + height + 1)
        pdf.set_font("DejaVu", size=7.5)
        pdf.cell(width + gap, 4, "Photo")
        pdf.cell(width, 4, "Lesions, optic disc (circle), fovea (cross), ETDRS grid", new_x="LMARGIN", new_y="NEXT")
        self._legend()

    def _legend(self) -> None:
        pdf = self.pdf
        pdf.set_font("DejaVu", size=7.5)
        for c in CLASSES:
            pdf.set_fill_color(*COLOURS[c])
            pdf.cell(3, 3, "", border=1, fill=True)
            pdf.cell(34, 3, f" {c} {CLASS_NAMES[c]}")
        pdf.ln(5)

    def _lesion_table(self, rows: list[dict[str, Any]]) -> None:
        self._heading("Lesions")
        header = ("lesion", "threshold", "pixels", "% of field of view", "count", "largest (px)")
        body = [
            (
                f"{r['lesion']} {CLASS_NAMES[r['lesion']]}",
                format_threshold(r["threshold"]),
                f"{r['pixels']:,}",
                f"{r['coverage_pct']:.4f}",
                str(r["count"]),
                f"{r['largest_px']:,}",
            )
            for r in rows
        ]
        self._table(header, body, widths=(3, 1.4, 1.6, 2, 1.2, 1.6))

    def _table(self, header: tuple[str, ...], body: list[tuple[str, ...]], widths: tuple[float, ...]) -> None:
        pdf = self.pdf
        pdf.set_font("DejaVu", size=8)
        style = FontFace(emphasis="BOLD", fill_color=(230, 230, 230))
        align = ("LEFT",) + ("RIGHT",) * (len(header) - 1)
        pdf.set_fill_color(255, 255, 255)
        with pdf.table(
            col_widths=widths,
            text_align=align,
            headings_style=style,
            line_height=4.4,
            cell_fill_color=(246, 246, 246),
            cell_fill_mode="ROWS",
        ) as table:
            for values in [header, *body]:
                row = table.row()
                for value in values:
                    row.cell(value)
        pdf.ln(2)

    def _reading(self, photo: ReportPhoto) -> None:
        self._heading("Reading (research indicators from the lesion masks, not a diagnosis)")
        found, reading = photo.found, photo.reading
        if found is None or reading is None:
            self._line("Reading", "not made (--no-reading)")
            return
        disc, fovea = found.get("optic_disc"), found.get("fovea")
        eye_source = {"header": "from the DICOM header", "image": "from the disc's side"}.get(found.get("eye_source"))
        if photo.facts is not None and photo.facts.laterality_source and found.get("eye_source") == "header":
            eye_source = f"from the DICOM header ({photo.facts.laterality_source})"
        self._line("Eye", f"{found.get('eye') or 'unknown'}" + (f" ({eye_source})" if eye_source else ""))
        self._line(
            "Optic disc",
            f"at ({disc['x']:.0f}, {disc['y']:.0f}) px, {disc['diameter_px']:.0f} px across, "
            f"confidence {disc['confidence']:.2f}"
            if disc
            else "not found",
        )
        self._line(
            "Fovea",
            f"at ({fovea['x']:.0f}, {fovea['y']:.0f}) px, confidence {fovea['confidence']:.2f}"
            if fovea
            else "not found",
        )
        self._line("Scale", describe_scale(found.get("scale", {})))
        for note in found.get("landmark_notes", []):
            self._line("Note", note)
        risk = found.get("dme_risk")
        self._line("DME risk", f"{'no grade' if risk is None else f'grade {risk}'}: {found.get('dme_reason', '')}")
        self._line("4-2-1 (haemorrhages)", found.get("rule_421_reason", ""))
        estimate = found.get("retinopathy_estimate")
        if estimate:
            flag = "referable retinopathy likely" if estimate["referable_likely"] else "below the referable cut-off"
            self._line(
                "Retinopathy (research indicator)",
                f"{estimate['label']}; lesion burden {estimate['lesion_burden']:g} ({flag}); {estimate['note']}",
            )
        quality = found.get("quality", {})
        reasons = "; ".join(quality.get("reasons", [])) or "all checks passed"
        self._line("Image quality", f"{quality.get('verdict', 'not assessed')}: {reasons}")

    def _macula(self, photo: ReportPhoto) -> None:
        """The ETDRS grid at a larger scale: the overlay around the fovea, 2.4 DD each way."""
        pdf, reading = self.pdf, photo.reading
        fovea, dd = reading.landmarks.fovea, reading.maps.dd
        h, w = photo.image.shape[:2]
        half = 2.4 * dd
        x0, x1 = max(0, int(fovea.x - half)), min(w, int(fovea.x + half) + 1)
        y0, y1 = max(0, int(fovea.y - half)), min(h, int(fovea.y + half) + 1)
        crop = np.ascontiguousarray(photo.image[y0:y1, x0:x1])
        crop_masks = np.ascontiguousarray(photo.masks[:, y0:y1, x0:x1])
        small, small_masks = downscale_for_display(crop, crop_masks, MACULA_SIDE)
        scale = small.shape[1] / crop.shape[1]
        overlay = render_overlay(small, small_masks, opacity=self.opacity)
        shifted = _shift(reading.landmarks, -x0, -y0)
        overlay = draw_grid(overlay, shifted, scale=scale, dd_px=dd)
        self._heading("Macula: ETDRS grid (circles of 1, 3 and 6 mm about the fovea)")
        side = 80.0
        width = side * min(1.0, small.shape[1] / small.shape[0])
        height = side * min(1.0, small.shape[0] / small.shape[1])
        y = pdf.get_y()
        pdf.image(_jpeg(overlay), x=pdf.l_margin, y=y, w=width, h=height)
        pdf.set_xy(pdf.l_margin + side + 6, y)
        radii = ", ".join(f"{r * dd:.0f}" for r in ETDRS_RADII_DD)
        text = (
            f"Radii {radii} px ({', '.join(f'{r:.3g}' for r in ETDRS_RADII_DD)} DD; 1 DD = 1.5 mm). "
            "Nasal is towards the disc, superior towards the top of the photo. Lesions are counted once, "
            "in the zone holding most of their pixels; 'within 1 DD' counts every lesion with a pixel "
            "inside the 3 mm circle (radius 1 DD)."
        )
        pdf.set_font("DejaVu", size=8)
        pdf.multi_cell(pdf.epw - side - 6, 4.4, text, new_x="LMARGIN", new_y="NEXT")
        pdf.set_y(y + height + 3)

    def _zone_tables(self, found: dict[str, Any]) -> None:
        cells: dict[tuple[str, str], dict[str, Any]] = {(z["zone"], z["lesion"]): z for z in found["zones"]}
        self._heading("Lesions by ETDRS zone: count (pixels)")
        body = []
        for zone in (*ETDRS_ZONES, "within_1dd"):
            row = [zone.replace("_", " ")]
            for c in CLASSES:
                z = cells.get((zone, c))
                row.append(f"{z['count']} ({z['pixels']:,})" if z else "-")
            body.append(tuple(row))
        self._table(("zone", *CLASSES), body, widths=(2, 1.5, 1.5, 1.5, 1.5))
        self._heading("Lesions by quadrant about the fovea: count")
        counts = found.get("quadrant_counts", {})
        body = [(q, *(str(counts.get(c, {}).get(q, 0)) for c in (*CLASSES, "HE+MA"))) for q in QUADRANTS]
        self._table(("quadrant", *CLASSES, "HE+MA"), body, widths=(2, 1, 1, 1, 1, 1))

    def _provenance(self, photo: ReportPhoto) -> None:
        record, prov = self.record, self.provenance
        model, pre = record.get("model", {}), record.get("preprocessing", {})
        self._heading("How this was made")
        thresholds = ", ".join(f"{c} {format_threshold(v)}" for c, v in record.get("thresholds", {}).items())
        self._line("Thresholds", thresholds or "-")
        self._line(
            "Preprocessing",
            f"crop {pre.get('crop')}, input {pre.get('input_size')} px, CLAHE {pre.get('clahe')} "
            f"(clip {pre.get('clip_limit')}, tiles {pre.get('tile_grid')}); TTA {'on' if record.get('tta') else 'off'}, "
            f"precision {record.get('precision')}, device {record.get('device')}",
        )
        self._line("Model", f"{model.get('name')} (source {model.get('source')}, file {model.get('file')})")
        self._line("Revision", str(model.get("revision") or "none (not from the Hub)"))
        self._line("Weights sha256", str(model.get("sha256")))
        self._line("Training data", describe_training(prov))
        self._line("Software", f"HydraLA-Net {__version__}; report made {self.created}")
        self._line("Input", describe_input(photo))


def describe_scale(scale: dict[str, Any]) -> str:
    if scale.get("source") == "pixel_spacing":
        text = f"measured: {scale.get('mm_per_px')} mm per pixel (DICOM PixelSpacing); 1.5 mm = {scale.get('dd_px')} px"
        if scale.get("disc_diameter_mm") is not None:
            text += f"; the optic disc measures {scale['disc_diameter_mm']} mm"
        return text
    if scale.get("source") == "assumed_field_fraction":
        return (
            f"guessed: the optic disc could not be measured; 1 disc diameter taken as {scale['dd_px']} px "
            "from the field's size (= 1.5 mm, ETDRS convention); no pixel size in the file"
        )
    if scale.get("dd_px"):
        return f"assumed: 1 disc diameter ({scale['dd_px']} px) = 1.5 mm (ETDRS convention); no pixel size in the file"
    return "unknown: no optic disc found and no pixel size in the file"


# How the manifest's sources (training.prepare) and splits read to a person.
DATASET_NAMES = {
    "idrid": "IDRiD",
    "ddr": "DDR",
    "tjdr": "TJDR",
    "synthetic": "synthetic fundus images (generated, not real photos)",
}
SPLIT_NAMES = {"train": "training", "val": "validation", "test": "test"}


def describe_training_data(provenance: dict[str, Any]) -> str:
    """What the model learnt from, from its checkpoint's ``provenance["datasets"]``
    (``{source: {split: photos}}``), e.g. "IDRiD: 54 photos for training, 27 for validation"."""
    if provenance.get("trained") is False:
        return "none (untrained placeholder weights: the masks mean nothing)"
    datasets = provenance.get("datasets") or {}
    if not isinstance(datasets, dict) or not datasets:
        return "not recorded in the checkpoint"
    parts = []
    for source, splits in datasets.items():
        counts = [(SPLIT_NAMES.get(k, k), v) for k, v in splits.items()] if isinstance(splits, dict) else []
        counts_text = ", ".join(
            f"{n:,} {'photo' if n == 1 else 'photos'} for {split}" if i == 0 else f"{n:,} for {split}"
            for i, (split, n) in enumerate(counts)
        )
        name = DATASET_NAMES.get(str(source).lower(), str(source))
        parts.append(f"{name}: {counts_text}" if counts_text else name)
    if provenance.get("pretraining"):
        parts.append(f"initialised from {provenance['pretraining']}")
    return "; ".join(parts)


def describe_training(provenance: dict[str, Any]) -> str:
    text = describe_training_data(provenance)
    if provenance.get("code_version"):
        text += f"; code version {provenance['code_version']}"
    return text


def describe_input(photo: ReportPhoto) -> str:
    facts = photo.facts
    if facts is None:
        return f"{photo.name} (image file)"
    parts = [f"DICOM {facts.modality or '?'}", facts.transfer_syntax, facts.photometric]
    if facts.frames > 1:
        parts.append(f"{facts.frames} frames, each a photo")
    if facts.camera:
        parts.append(f"camera {facts.camera}")
    parts.append(facts.spacing_note)
    if facts.burned_in_annotation:
        parts.append("the header says text is burned into the pixels: check the pictures before sharing")
    return f"{photo.name}: " + "; ".join(p for p in parts if p)


def report_pdf(photo: ReportPhoto, record: dict[str, Any], provenance: dict[str, Any] | None = None, **kwargs) -> bytes:
    """One photo's PDF (``kwargs``: :class:`ReportWriter`'s ``paper``, ``opacity``, ``created``)."""
    return ReportWriter(record, provenance, **kwargs).add(photo).to_bytes()


def write_report(path, photo: ReportPhoto, record: dict[str, Any], provenance: dict[str, Any] | None = None, **kwargs):
    """:func:`report_pdf` written atomically to ``path``."""
    write_atomic(path, report_pdf(photo, record, provenance, **kwargs))


def _jpeg(rgb: np.ndarray) -> io.BytesIO:
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    if not ok:
        raise ValueError(f"could not encode a picture of shape {rgb.shape} as JPEG")
    return io.BytesIO(buf.tobytes())


def _shift(landmarks, dx: float, dy: float):
    """The landmarks moved by (dx, dy) px, for drawing on a crop."""
    from dataclasses import replace

    disc = replace(landmarks.disc, x=landmarks.disc.x + dx, y=landmarks.disc.y + dy) if landmarks.disc else None
    fovea = replace(landmarks.fovea, x=landmarks.fovea.x + dx, y=landmarks.fovea.y + dy) if landmarks.fovea else None
    return replace(landmarks, disc=disc, fovea=fovea)
