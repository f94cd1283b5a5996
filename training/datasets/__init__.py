"""Parsers for the public lesion-segmentation datasets: IDRiD, DDR and TJDR (docs/training.md#data).

Each parser walks a dataset folder *as released* and returns :class:`Record` s: one photo,
its official split and one mask path per lesion (``None`` = that lesion is absent). Nothing
here decodes photos; sizes are read from file headers. ``training.prepare`` turns records
into the manifest. One module per dataset (``idrid``, ``ddr``, ``tjdr``); what they share
is in ``common``.

Problems are collected over the whole tree and raised as one ``ValueError`` (first
:data:`MAX_LISTED` listed), so a broken download is diagnosed in one run.
"""

from __future__ import annotations

from .common import MASK_EXTENSIONS, MASK_KEYS, MAX_LISTED, Record, image_size
from .ddr import DDR_SPLITS, parse_ddr, read_synthetic_landmarks
from .idrid import (
    IDRID_GRADING,
    IDRID_IMAGES,
    IDRID_LESION_FOLDERS,
    IDRID_LOCALIZATION,
    IDRID_MASKS,
    IDRID_SPLITS,
    parse_idrid,
    parse_idrid_normals,
    parse_idrid_reading,
)
from .tjdr import (
    DEFAULT_TJDR_PALETTE,
    DEFAULT_TJDR_TOLERANCE,
    TJDR_SPLITS,
    Palette,
    decode_tjdr_label,
    load_tjdr_palette,
    parse_tjdr,
)

__all__ = [
    "DDR_SPLITS",
    "DEFAULT_TJDR_PALETTE",
    "DEFAULT_TJDR_TOLERANCE",
    "IDRID_GRADING",
    "IDRID_IMAGES",
    "IDRID_LESION_FOLDERS",
    "IDRID_LOCALIZATION",
    "IDRID_MASKS",
    "IDRID_SPLITS",
    "MASK_EXTENSIONS",
    "MASK_KEYS",
    "MAX_LISTED",
    "TJDR_SPLITS",
    "Palette",
    "Record",
    "decode_tjdr_label",
    "image_size",
    "load_tjdr_palette",
    "parse_ddr",
    "parse_idrid",
    "parse_idrid_normals",
    "parse_idrid_reading",
    "parse_tjdr",
    "read_synthetic_landmarks",
]
