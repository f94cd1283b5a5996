"""What every dataset parser shares: the :class:`Record` it returns, the mask keys, and the
helpers that find files and collect problems over a whole tree."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from hydralanet.config import CLASSES

MASK_KEYS: tuple[str, ...] = (*CLASSES, "OD")  # the optic disc is kept for reference, never trained on
MASK_EXTENSIONS = (".tif", ".tiff", ".png")
MAX_LISTED = 10
_EXIF_ORIENTATION = 0x0112


@dataclass(frozen=True)
class Record:
    """One photo of a dataset: ``masks`` maps each of :data:`MASK_KEYS` to a file or ``None``."""

    source: str  # "idrid", "ddr", "tjdr" (or "synthetic": DDR layout, generated)
    official_split: str  # "train", "valid" or "test", as the dataset's release names it
    image: Path
    masks: dict[str, Path | None]
    # Optional reading labels (training.prepare.LABEL_COLUMNS): disc and fovea centres and the
    # disc diameter in pixels, the DME risk grade.
    labels: dict[str, float | int] = field(default_factory=dict)


def image_size(path: Path) -> tuple[int, int]:
    """``(width, height)`` as decoded with EXIF orientation applied, from the header only."""
    try:
        with Image.open(path) as im:
            width, height = im.size
            orientation = im.getexif().get(_EXIF_ORIENTATION, 1)
    except OSError as err:
        raise ValueError(f"{path}: not a readable image ({err})") from err
    return (height, width) if orientation in (5, 6, 7, 8) else (width, height)


class Problems:
    """Collects per-file problems of one dataset tree; :meth:`raise_if_any` reports them together."""

    def __init__(self, dataset: str, root: Path) -> None:
        self.dataset, self.root, self.items = dataset, root, []

    def add(self, message: str) -> None:
        self.items.append(message)

    def raise_if_any(self) -> None:
        if not self.items:
            return
        shown = "\n  - ".join(self.items[:MAX_LISTED])
        more = f"\n  ... and {len(self.items) - MAX_LISTED} more" if len(self.items) > MAX_LISTED else ""
        raise ValueError(f"{self.dataset} at {self.root}: {len(self.items)} problem(s):\n  - {shown}{more}")


def require_dir(path: Path, dataset: str, what: str) -> Path:
    """``path`` itself, or a sibling whose name differs only in case/spacing; else a clear error."""
    if path.is_dir():
        return path
    wanted = " ".join(path.name.lower().split())
    if path.parent.is_dir():
        for sibling in path.parent.iterdir():
            if sibling.is_dir() and " ".join(sibling.name.lower().split()) == wanted:
                return sibling
        present = sorted(p.name for p in path.parent.iterdir() if p.is_dir())
        listing = f" (folders there: {', '.join(present) or 'none'})"
    else:
        listing = ""
    raise FileNotFoundError(f"{dataset}: expected the {what} folder {path}{listing}")


def files_by_stem(folder: Path, extensions: Iterable[str], problems: Problems) -> dict[str, Path]:
    """Files of ``folder`` with one of ``extensions`` (any case), by lower-case stem."""
    extensions = tuple(extensions)
    found: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if path.name.startswith(".") or not path.is_file() or path.suffix.lower() not in extensions:
            continue  # .DS_Store, Thumbs.db, readme files
        key = path.stem.lower()
        if key in found:
            problems.add(f"two files with the same name stem: {found[key]} and {path}")
        found[key] = path
    return found


def check_sizes(image: Path, masks: Mapping[str, Path | None], problems: Problems) -> None:
    size = image_size(image)
    for mask in masks.values():
        if mask is not None and (mask_size := image_size(mask)) != size:
            problems.add(
                f"size mismatch: image {image} is {size[0]} x {size[1]} "
                f"but mask {mask} is {mask_size[0]} x {mask_size[1]}"
            )
