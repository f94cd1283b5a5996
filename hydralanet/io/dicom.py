"""DICOM ophthalmic photographs in: RGB uint8 frames and the header facts that matter.

pydicom parses the file; the pixel-data handlers pinned in requirements.txt (pylibjpeg with its
libjpeg, openjpeg and RLE plugins; Pillow and pydicom's own RLE decoder also serve) decode the
transfer syntaxes listed in docs/dicom-and-reports.md (measured by
``python -m training.dicom_check``). Colour comes out as RGB (YBR_FULL and YBR_FULL_422 are
converted by pydicom); MONOCHROME1/2 (red-free photos) become gray copied to three channels,
MONOCHROME1 inverted first; more than 8 bits stored are scaled to 8.

Patient and study identifiers are read into :class:`DicomFacts` only when asked
(``keep_identifiers``): what is never read cannot be written by accident.
"""

from __future__ import annotations

import io
import logging
import os
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

DICOM_SUFFIXES = (".dcm", ".dicom")
HEAD_BYTES = 132  # the preamble (128 bytes) and "DICM"
# Identifiers of the patient, the study and the people and place involved (DICOM PS3.15 E.1's
# basic profile, the ones fundus archives fill in): written only with --keep-identifiers.
IDENTIFIER_KEYWORDS = (
    "PatientName", "PatientID", "IssuerOfPatientID", "OtherPatientIDs", "PatientBirthDate", "PatientSex",
    "PatientAge", "StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "AccessionNumber", "StudyID",
    "StudyDate", "StudyTime", "SeriesDate", "AcquisitionDateTime", "ContentDate", "InstitutionName",
    "ReferringPhysicianName", "PerformingPhysicianName", "OperatorsName", "DeviceSerialNumber",
)  # fmt: skip
COLOUR_PHOTOMETRICS = ("RGB", "YBR_FULL", "YBR_FULL_422", "YBR_ICT", "YBR_RCT")
GRAY_PHOTOMETRICS = ("MONOCHROME1", "MONOCHROME2")
# A retina is ~12 mm across a 45-degree field: a spacing outside this range (mm per pixel) is
# not a calibrated photo of one, and is ignored (the disc diameter sets the scale instead).
PLAUSIBLE_SPACING_MM = (0.0005, 0.1)


# pydicom warns (and logs) about every oddity of a damaged file; the reader gets one line from
# us instead. Set once, process-wide (a catch_warnings() block per call is not thread-safe).
warnings.filterwarnings("ignore", category=UserWarning, module=r"pydicom(\.|$)")
logging.getLogger("pydicom").addHandler(logging.NullHandler())
logging.getLogger("pydicom").propagate = False


class DicomError(ValueError):
    """A DICOM file that cannot be used; turned into :class:`hydralanet.io.images.ImageError` by ``read_image``."""


@dataclass(frozen=True)
class DicomFacts:
    """What the header says that matters for a reading, without identifiers unless asked.

    ``laterality``: ``left``/``right`` or None, from ``laterality_source`` (``ImageLaterality``
    or ``Laterality``). ``mm_per_px``: from ``PixelSpacing`` (row, column in mm; the geometric
    mean when they differ) when present and plausible, else None. ``identifiers``: keyword ->
    text, only when read with ``keep_identifiers=True``."""

    frames: int
    rows: int
    columns: int
    modality: str | None
    photometric: str
    transfer_syntax: str
    laterality: str | None = None
    laterality_source: str | None = None
    pixel_spacing_mm: tuple[float, float] | None = None
    mm_per_px: float | None = None
    spacing_note: str = ""
    camera: str | None = None
    burned_in_annotation: bool | None = None
    identifiers: dict[str, str] | None = field(default=None)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        if self.identifiers is None:
            del out["identifiers"]
        return out


def looks_like_dicom(data: bytes, name: str = "") -> bool:
    """A DICOM Part 10 file (``DICM`` after the 128-byte preamble) or a ``.dcm`` name.
    ``data``: the file's bytes (the first :data:`HEAD_BYTES` are enough)."""
    return data[128:HEAD_BYTES] == b"DICM" or name.lower().endswith(DICOM_SUFFIXES)


def is_dicom_file(path: str | os.PathLike) -> bool:
    path = Path(path)
    try:
        with path.open("rb") as fh:
            return looks_like_dicom(fh.read(HEAD_BYTES), path.name)
    except OSError:
        return path.name.lower().endswith(DICOM_SUFFIXES)


def facts_of(source: str | os.PathLike, *, keep_identifiers: bool = False) -> DicomFacts | None:
    """The header facts of a photo's file (:func:`read_facts`), None when it is not DICOM;
    identifiers only when kept."""
    return read_facts(source, keep_identifiers=keep_identifiers) if is_dicom_file(source) else None


def frame_name(stem: str, frame: int) -> str:
    """What one frame (1 = the first) of a multi-frame file is called in outputs and on the page."""
    return f"{stem}_f{frame}"


def _open(source: bytes | str | os.PathLike, *, header_only: bool):
    import pydicom
    from pydicom.errors import InvalidDicomError

    def read(force: bool):
        fp = io.BytesIO(source) if isinstance(source, bytes) else source
        return pydicom.dcmread(fp, force=force, stop_before_pixels=header_only)

    try:
        try:
            ds = read(force=False)
        except InvalidDicomError:
            ds = read(force=True)  # a bare data set without the Part 10 preamble (older archives)
    except Exception as exc:  # pydicom raises many kinds on a damaged file
        raise DicomError(f"DICOM file is truncated or corrupt ({_first_line(exc)})") from None
    if "Rows" not in ds or "Columns" not in ds:
        raise DicomError("not a readable DICOM image (truncated, corrupt, or not an image: no Rows/Columns)")
    try:
        if int(ds.Rows) < 1 or int(ds.Columns) < 1:
            raise ValueError
    except (TypeError, ValueError):
        raise DicomError(f"DICOM header is corrupt (Rows {ds.get('Rows')!r}, Columns {ds.get('Columns')!r})") from None
    return ds


def frame_count(source: bytes | str | os.PathLike) -> int:
    """Frames in a DICOM file (1 when it says nothing), or 0 when it cannot be read."""
    try:
        return _frames(_open(source, header_only=True))
    except DicomError:
        return 0


def _frames(ds) -> int:
    try:
        return max(1, int(ds.get("NumberOfFrames", 1) or 1))
    except (TypeError, ValueError):
        return 1


def read_facts(source: bytes | str | os.PathLike, *, keep_identifiers: bool = False) -> DicomFacts:
    """The header facts of a DICOM file (see :class:`DicomFacts`); raises :class:`DicomError`."""
    return _facts(_open(source, header_only=True), keep_identifiers)


def _facts(ds, keep_identifiers: bool) -> DicomFacts:
    laterality = source = None
    for keyword in ("ImageLaterality", "Laterality"):  # the image's own first, then the series'
        value = str(ds.get(keyword, "") or "").strip().upper()
        if value in ("L", "R"):
            laterality, source = ("left" if value == "L" else "right"), keyword
            break
    spacing, mm_per_px, note = _spacing(ds)
    camera = " ".join(str(ds.get(k, "") or "").strip() for k in ("Manufacturer", "ManufacturerModelName")).strip()
    burned = str(ds.get("BurnedInAnnotation", "") or "").strip().upper()
    identifiers = None
    if keep_identifiers:
        identifiers = {k: str(ds.get(k)) for k in IDENTIFIER_KEYWORDS if ds.get(k) not in (None, "")}
    ts = getattr(ds, "file_meta", {}).get("TransferSyntaxUID")
    return DicomFacts(
        frames=_frames(ds),
        rows=int(ds.Rows),
        columns=int(ds.Columns),
        modality=str(ds.get("Modality", "") or "") or None,
        photometric=str(ds.get("PhotometricInterpretation", "") or "").strip(),
        transfer_syntax=f"{ts.name} ({ts})" if ts else "unknown (no file meta)",
        laterality=laterality,
        laterality_source=source,
        pixel_spacing_mm=spacing,
        mm_per_px=mm_per_px,
        spacing_note=note,
        camera=camera or None,
        burned_in_annotation={"YES": True, "NO": False}.get(burned),
        identifiers=identifiers,
    )


def _spacing(ds) -> tuple[tuple[float, float] | None, float | None, str]:
    """PixelSpacing (in the patient: on the retina) sets the scale. ImagerPixelSpacing is at the
    camera's sensor, behind its optics, so it is recorded but not taken for retinal mm."""
    imager = ds.get("ImagerPixelSpacing")
    value = ds.get("PixelSpacing")
    if value is None:
        if imager is not None:
            return None, None, "ImagerPixelSpacing is at the camera sensor, not the retina: not used"
        return None, None, "no PixelSpacing in the header"
    try:
        row, col = (float(v) for v in value)
    except (TypeError, ValueError):
        return None, None, f"PixelSpacing {value!r} is not two numbers: not used"
    mm = float(np.sqrt(row * col)) if row > 0 and col > 0 else 0.0
    if not PLAUSIBLE_SPACING_MM[0] <= mm <= PLAUSIBLE_SPACING_MM[1]:
        return (row, col), None, f"PixelSpacing {row:g} x {col:g} mm is implausible for a retina: not used"
    note = "PixelSpacing" + (" (anisotropic: geometric mean used)" if abs(row - col) > 0.01 * mm else "")
    return (row, col), mm, note


def read_frame(source: bytes | str | os.PathLike, *, frame: int | None = None, max_pixels: int) -> np.ndarray:
    """One frame (``frame``: 1 = the first; required for multi-frame files) as RGB uint8
    ``H x W x 3``. Raises :class:`DicomError` with a one-line reason."""
    from pydicom.pixels import get_decoder

    ds = _open(source, header_only=False)
    if "PixelData" not in ds:
        raise DicomError("DICOM file has no pixel data (not an image object)")
    rows, cols, frames = int(ds.Rows), int(ds.Columns), _frames(ds)
    if rows * cols > max_pixels:
        raise DicomError(f"image is too large ({cols} x {rows} = {rows * cols:,} pixels; limit {max_pixels:,})")
    if frame is None and frames > 1:
        raise DicomError(f"multi-frame DICOM ({frames} frames): read one frame at a time (frame=1..{frames})")
    if frame is not None and not 1 <= frame <= frames:
        raise DicomError(f"frame {frame} does not exist (the file has {frames})")
    photometric = str(ds.get("PhotometricInterpretation", "")).strip()
    if photometric not in COLOUR_PHOTOMETRICS + GRAY_PHOTOMETRICS:
        allowed = ", ".join(COLOUR_PHOTOMETRICS + GRAY_PHOTOMETRICS)
        raise DicomError(f"photometric interpretation {photometric or 'missing'} is not supported ({allowed})")
    ts = getattr(ds, "file_meta", {}).get("TransferSyntaxUID")
    if ts is not None:
        try:
            decoder = get_decoder(ts)
        except NotImplementedError:
            raise DicomError(f"transfer syntax {ts.name} ({ts}) is not supported") from None
        if not decoder.is_available:
            raise DicomError(f"transfer syntax {ts.name} ({ts}) needs a pixel-data handler that is not installed")
    try:
        array = _decode(ds, ts, None if frames == 1 else frame - 1)
    except Exception as exc:  # decoders raise many kinds on damaged data
        raise DicomError(f"cannot decode DICOM pixel data ({_first_line(exc)})") from None
    return _to_rgb8(array, ds, photometric)


def _decode(ds, ts, index: int | None) -> np.ndarray:
    """Pillow first for 8-bit JPEG (the decoder ``read_image`` uses for .jpg files, so a JPEG
    wrapped in DICOM gives the very same pixels); pydicom's choice of handler otherwise."""
    from pydicom import uid
    from pydicom.pixels import pixel_array

    if ts in (uid.JPEGBaseline8Bit, uid.JPEGExtended12Bit) and int(ds.get("BitsStored", 8) or 8) <= 8:
        try:
            return pixel_array(ds, index=index, as_rgb=True, decoding_plugin="pillow")
        except Exception:  # not Pillow's to decode after all: let pydicom choose
            pass
    return pixel_array(ds, index=index, as_rgb=True)


def _to_rgb8(array: np.ndarray, ds, photometric: str) -> np.ndarray:
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[..., 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] != 3):
        raise DicomError(f"unexpected pixel array of shape {array.shape}")
    if array.dtype != np.uint8:
        bits = int(ds.get("BitsStored", 8) or 8)
        data = array.astype(np.float64)
        if int(ds.get("PixelRepresentation", 0) or 0):
            data -= -(2.0 ** (bits - 1))  # signed: shift to 0 .. 2^bits - 1
        array = np.clip(data * (255.0 / (2.0**bits - 1)), 0, 255).round().astype(np.uint8)
    if array.ndim == 2:
        if photometric == "MONOCHROME1":  # 0 is white
            array = 255 - array
        array = np.repeat(array[..., None], 3, axis=2)
    return np.ascontiguousarray(array)


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip() or type(exc).__name__).splitlines()[0]
