"""Photos in and files out: images and DICOM read into pixels (with the facts a DICOM header
holds), the list of photos a run works through, and files written atomically."""

from __future__ import annotations

from .._lazy import lazy_exports

_EXPORTS = {
    "IMAGE_EXTENSIONS": ".images",
    "ImageError": ".images",
    "PhotoSource": ".images",
    "atomic_file": ".images",
    "check_image": ".images",
    "encode_png": ".images",
    "list_images": ".images",
    "photo_sources": ".images",
    "read_image": ".images",
    "save_png": ".images",
    "write_atomic": ".images",
    "DicomError": ".dicom",
    "DicomFacts": ".dicom",
    "is_dicom_file": ".dicom",
    "read_facts": ".dicom",
    "read_frame": ".dicom",
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
__all__ = sorted(_EXPORTS)
