"""Decoding and encoding images, with the limits that keep bad input from hurting us.

Every failure is an :class:`ImageError` whose message is one line naming the file and the
problem, so the CLI can print it and the app can show it.
"""

from __future__ import annotations

import contextlib
import io
import os
import tempfile
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import cv2
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .dicom import frame_name, looks_like_dicom

ImageSource = str | os.PathLike | bytes | bytearray | memoryview

# 50 Mpixel: four times an IDRiD photo (4288 x 2848 = 12.2 Mpixel), below Pillow's own bomb
# warning (~89 Mpixel). Decoded RGB at this size is 150 MB; probabilities 4 x 200 MB.
MAX_PIXELS = 50_000_000
# Pillow warns (DecompressionBombWarning) above ~89 Mpixel, after our stricter limit has already
# refused such a photo: silenced once, process-wide (a catch_warnings() block per call is not
# thread-safe, and the app decodes uploads in several threads).
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)
MIN_SIDE = 64  # smaller than this there is no fundus to see at any useful scale
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp", ".dcm")


class ImageError(ValueError):
    """An input image that cannot be used; ``str(err)`` is one line: ``name: problem``."""

    def __init__(self, name: str, problem: str) -> None:
        self.name, self.problem = name, problem
        super().__init__(f"{name}: {problem}")


def _describe(source: ImageSource, name: str | None) -> str:
    if name:
        return name
    if isinstance(source, (bytes, bytearray, memoryview)):
        return "<uploaded bytes>"
    return str(source)


def read_image(
    source: ImageSource, *, name: str | None = None, max_pixels: int = MAX_PIXELS, frame: int | None = None
) -> np.ndarray:
    """Decode a path or encoded bytes to RGB uint8, ``H x W x 3``, in display orientation.

    Honours EXIF orientation; grayscale becomes 3 channels; alpha is dropped (composited on
    black, the fundus surround); CMYK is converted; 16-bit images are scaled to 8 bits.
    DICOM files (``DICM`` preamble or a ``.dcm`` name) are read by :mod:`hydralanet.io.dicom`;
    ``frame`` (1 = the first) picks one frame of a multi-frame file (:func:`photo_sources`
    lists them). Raises :class:`ImageError` for missing, empty, truncated, non-image, oversized
    (``> max_pixels``) and tiny (``< 64 px`` a side) input.
    """
    label = _describe(source, name)
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
    else:
        path = Path(source)
        if not path.exists():
            raise ImageError(label, "file not found")
        if path.is_dir():
            raise ImageError(label, "is a folder, not an image file")
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise ImageError(label, f"cannot read file ({exc.strerror or exc})") from None
    if not data:
        raise ImageError(label, "file is empty (0 bytes)")
    if looks_like_dicom(data, label):
        return _read_dicom(data, label, frame, max_pixels)
    pil = _open_checked(data, label, max_pixels)
    try:
        rgb = _pil_to_rgb(pil)
    except (OSError, SyntaxError, ValueError) as exc:
        rgb = _opencv_fallback(data)
        if rgb is None:
            msg = str(exc)
            if "truncated" in msg or "broken" in msg.lower():
                raise ImageError(label, "image file is truncated or corrupt") from None
            raise ImageError(label, f"cannot decode image ({msg})") from None
    return np.ascontiguousarray(rgb)


def check_image(data: bytes, *, name: str | None = None, max_pixels: int = MAX_PIXELS) -> None:
    """The checks of :func:`read_image` that need only the file's header (empty, not an image,
    too large, too small), without decoding the pixels: cheap enough to answer a bad upload at
    once instead of after its turn to be segmented. DICOM passes (its checks need the pixels)."""
    label = _describe(data, name)
    if not data:
        raise ImageError(label, "file is empty (0 bytes)")
    if not looks_like_dicom(data, label):
        _open_checked(data, label, max_pixels).close()


def _open_checked(data: bytes, label: str, max_pixels: int) -> Image.Image:
    """The image opened lazily (header only), refused when it is not one or of a bad size."""
    try:
        pil = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise ImageError(label, "not a recognised image (expected JPEG, PNG, TIFF or BMP)") from None
    except Image.DecompressionBombError:
        raise ImageError(label, f"image is too large (over {max_pixels:,} pixels)") from None
    except OSError as exc:
        raise ImageError(label, f"cannot decode image ({exc})") from None
    width, height = pil.size
    # The header gives the size without decoding: refuse bombs before allocating pixels.
    if width * height > max_pixels:
        raise ImageError(
            label, f"image is too large ({width} x {height} = {width * height:,} pixels; limit {max_pixels:,})"
        )
    if min(width, height) < MIN_SIDE:
        raise ImageError(label, f"image is too small ({width} x {height}; need at least {MIN_SIDE} px a side)")
    return pil


def _read_dicom(data: bytes, label: str, frame: int | None, max_pixels: int) -> np.ndarray:
    from .dicom import DicomError, read_frame

    if frame is not None:
        label = f"{label} (frame {frame})"
    try:
        rgb = read_frame(data, frame=frame, max_pixels=max_pixels)
    except DicomError as exc:
        raise ImageError(label, str(exc)) from None
    if min(rgb.shape[:2]) < MIN_SIDE:
        h, w = rgb.shape[:2]
        raise ImageError(label, f"image is too small ({w} x {h}; need at least {MIN_SIDE} px a side)")
    return rgb


def _pil_to_rgb(pil: Image.Image) -> np.ndarray:
    pil.load()  # raises on truncated data instead of returning a half-grey image
    pil = ImageOps.exif_transpose(pil)
    mode = pil.mode
    if mode.startswith("I") or mode == "F":
        # 16-bit (Pillow's "I;16*", or "I" for 16-bit PNG) scales by 255/65535; float by its max.
        arr = np.asarray(pil, dtype=np.float64)
        if mode == "F":
            top = max(float(arr.max()), 1e-12)
        else:
            top = 65535.0 if mode.startswith("I;16") or arr.max() > 255 else 255.0
        gray = np.clip(arr * (255.0 / top), 0, 255).round().astype(np.uint8)
        return np.repeat(gray[..., None], 3, axis=2)
    if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in pil.info):
        rgba = pil.convert("RGBA")
        black = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        return np.asarray(Image.alpha_composite(black, rgba).convert("RGB"))
    return np.asarray(pil.convert("RGB"))


def _opencv_fallback(data: bytes) -> np.ndarray | None:
    """OpenCV decodes some files Pillow cannot (e.g. 16-bit-per-channel RGB TIFF)."""
    buf = np.frombuffer(data, dtype=np.uint8)
    img = cv2.imdecode(buf, cv2.IMREAD_ANYDEPTH | cv2.IMREAD_COLOR)
    if img is None:
        return None
    if img.dtype == np.uint16:
        img = (img.astype(np.float32) * (255.0 / 65535.0)).round().astype(np.uint8)
    elif img.dtype != np.uint8:
        return None
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def list_images(paths: list[str | os.PathLike]) -> list[Path]:
    """Expand files and folders (non-recursive inside a folder) into image paths, sorted.

    A path that does not exist is kept, so the caller reports it as a failed file.
    """
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            out.extend(sorted(q for q in p.iterdir() if q.is_file() and q.suffix.lower() in IMAGE_EXTENSIONS))
        else:
            out.append(p)
    return out


@dataclass(frozen=True)
class PhotoSource:
    """One photo to read: a file, or one frame (1 = the first) of a multi-frame DICOM file,
    named ``<stem>_f<k>``."""

    path: Path
    frame: int | None = None

    @property
    def stem(self) -> str:
        return self.path.stem if self.frame is None else frame_name(self.path.stem, self.frame)

    def read(self, *, max_pixels: int = MAX_PIXELS) -> np.ndarray:
        return read_image(self.path, frame=self.frame, max_pixels=max_pixels)


def photo_sources(paths: list[str | os.PathLike]) -> list[PhotoSource]:
    """:func:`list_images`, with each frame of a multi-frame DICOM file a photo of its own.

    Only headers are read here; a file that cannot be read stays one source, so reading it
    reports the error."""
    from .dicom import frame_count, is_dicom_file

    out: list[PhotoSource] = []
    for path in list_images(paths):
        frames = frame_count(path) if path.is_file() and is_dicom_file(path) else 1
        out += [PhotoSource(path, k) for k in range(1, frames + 1)] if frames > 1 else [PhotoSource(path)]
    return out


def write_atomic(path: str | os.PathLike, data: bytes) -> None:
    """Write bytes so a reader never sees a half-written file (temp file + rename)."""
    with atomic_file(path) as fh:
        fh.write(data)


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike) -> Iterator[BinaryIO]:
    """A binary file to write ``path`` through, for writers that stream (``np.savez``,
    ``savefig``): a temporary file beside it, renamed into place when the block succeeds and
    removed when it fails, so a reader never sees a half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            yield fh
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; outputs are read by others too
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _read_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _read_umask()  # read once at import: os.umask is process-wide, not thread-safe


def encode_png(array: np.ndarray) -> bytes:
    """PNG bytes for uint8 gray / RGB or uint16 gray arrays (RGB in, not BGR)."""
    if array.ndim == 3 and array.shape[2] == 3:
        array = cv2.cvtColor(array, cv2.COLOR_RGB2BGR)
    ok, buf = cv2.imencode(".png", array)
    if not ok:
        raise ValueError(f"could not encode array of shape {array.shape} and dtype {array.dtype} as PNG")
    return buf.tobytes()


def save_png(path: str | os.PathLike, array: np.ndarray) -> None:
    write_atomic(path, encode_png(array))
