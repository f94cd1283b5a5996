"""A small learned optic-disc and fovea locator (docs/reading.md).

A fully convolutional network reads the field of view, cropped and padded to a square and
resized to ``input_size`` px (the same square as :mod:`hydralanet.reading.landmarks` uses), and gives
two heatmaps at ``1 / stride`` of it: disc centre and fovea. Each landmark is the centre of
mass of its softmax map near the map's peak (sub-pixel), its confidence the softmax mass within
``confidence_radius`` of the input side of that point (0-1). A left-right mirrored copy is
read too and the two answers averaged.

The weights are data: ``landmarks.safetensors`` (tensors only, no pickle) beside
``landmarks.json`` (:class:`HeadConfig`: architecture, input, confidence floors chosen on
training photos, provenance). :func:`bundled_landmark_head` finds them next to the bundled
model; without them the reading falls back to image analysis.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import asdict, dataclass, field, fields, replace
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..preprocessing import FovGeometry, fov_geometry

WEIGHTS_FILE = "landmarks.safetensors"
CONFIG_FILE = "landmarks.json"
CHANNELS = ("disc", "fovea")


class LandmarkHeadError(ValueError):
    """A landmark head's files are missing, unreadable or do not fit together."""


@dataclass(frozen=True)
class HeadConfig:
    """Everything needed to rebuild and use a trained head (``landmarks.json``)."""

    input_size: int = 256  # the FOV square's side in px (the disc is ~20 px across there)
    widths: tuple[int, ...] = (8, 16, 32, 64)  # encoder channels at strides 2, 4, 8, 16
    stride: int = 4  # heatmap cell in input px
    window: int = 3  # centre of mass over (2 window + 1)^2 cells about the peak
    confidence_radius: float = 0.03  # of the input side: softmax mass within it is the confidence
    # Below these the landmark is reported "not found reliably" (chosen on held-out training photos).
    reliable_disc_confidence: float = 0.5
    reliable_fovea_confidence: float = 0.5
    flip_average: bool = True  # also read the mirrored square and average
    provenance: dict = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: dict) -> HeadConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise LandmarkHeadError(f"unknown keys {unknown} (expected some of {sorted(known)})")
        values = dict(data)
        if "widths" in values:
            values["widths"] = tuple(int(w) for w in values["widths"])
        return cls(**values)


def _conv(cin: int, cout: int, stride: int = 1, dilation: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride, padding=dilation, dilation=dilation, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class LandmarkNet(nn.Module):
    """``B x 3 x S x S`` normalised squares -> ``B x 2 x S/4 x S/4`` heatmap logits (disc, fovea).

    Encoder to stride 16 with dilated context there (the fovea is placed by the vessel arcades
    and the disc, far apart), decoder back to stride 4 with skips from strides 8 and 4."""

    def __init__(self, widths: tuple[int, ...] = (8, 16, 32, 64)) -> None:
        super().__init__()
        w1, w2, w3, w4 = widths
        self.stem = _conv(3, w1, 2)
        self.down2 = nn.Sequential(_conv(w1, w2, 2), _conv(w2, w2))
        self.down3 = nn.Sequential(_conv(w2, w3, 2), _conv(w3, w3))
        self.down4 = nn.Sequential(_conv(w3, w4, 2), _conv(w4, w4))
        self.context = nn.Sequential(_conv(w4, w4, dilation=2), _conv(w4, w4, dilation=4))
        self.up3 = _conv(w4 + w3, w3)
        self.up2 = _conv(w3 + w2, w2)
        self.out = nn.Conv2d(w2, len(CHANNELS), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s2 = self.down2(self.stem(x))
        s3 = self.down3(s2)
        s4 = self.context(self.down4(s3))
        up = nn.functional.interpolate(s4, size=s3.shape[-2:], mode="bilinear", align_corners=False)
        up = self.up3(torch.cat([up, s3], 1))
        up = nn.functional.interpolate(up, size=s2.shape[-2:], mode="bilinear", align_corners=False)
        return self.out(self.up2(torch.cat([up, s2], 1)))


def normalise(square: np.ndarray, inside: np.ndarray) -> np.ndarray:
    """An RGB uint8 ``S x S x 3`` FOV square -> float32 ``3 x S x S``: each channel standardised
    over the field of view (so exposure and camera tint matter less), 0 outside it."""
    x = square.astype(np.float32)
    pixels = x[inside]
    if pixels.size == 0:
        return np.zeros((3, *square.shape[:2]), np.float32)
    mean, std = pixels.mean(axis=0), pixels.std(axis=0) + 1.0
    x = (x - mean) / std
    x[~inside] = 0.0
    return np.ascontiguousarray(x.transpose(2, 0, 1))


def decode(logits: torch.Tensor, config: HeadConfig) -> np.ndarray:
    """``B x 2 x h x w`` logits -> ``B x 2 x 3`` (x, y, confidence), x and y in input px (pixel
    centres at integer coordinates)."""
    b, c, h, w = logits.shape
    prob = torch.softmax(logits.reshape(b, c, -1).float(), -1).reshape(b, c, h, w).numpy()
    out = np.zeros((b, c, 3), np.float32)
    ys, xs = np.mgrid[:h, :w]
    radius = config.confidence_radius * config.input_size / config.stride
    for i in range(b):
        for k in range(c):
            p = prob[i, k]
            py, px = np.unravel_index(int(p.argmax()), p.shape)
            y0, y1 = max(0, py - config.window), min(h, py + config.window + 1)
            x0, x1 = max(0, px - config.window), min(w, px + config.window + 1)
            local = p[y0:y1, x0:x1]
            total = float(local.sum()) or 1.0
            cy = float((local * ys[y0:y1, x0:x1]).sum()) / total
            cx = float((local * xs[y0:y1, x0:x1]).sum()) / total
            near = (ys - cy) ** 2 + (xs - cx) ** 2 <= radius**2
            out[i, k] = (cell_to_input(cx, config.stride), cell_to_input(cy, config.stride), float(p[near].sum()))
    return out


def cell_to_input(cell: float, stride: int) -> float:
    """Heatmap cell coordinate -> input pixel coordinate (a cell spans ``stride`` input pixels)."""
    return (cell + 0.5) * stride - 0.5


def input_to_cell(pixel: float, stride: int) -> float:
    return (pixel + 0.5) / stride - 0.5


@dataclass(frozen=True)
class HeadAnswer:
    """Disc and fovea centres in the photo's pixels with their confidences (0-1)."""

    disc: tuple[float, float]
    disc_confidence: float
    fovea: tuple[float, float]
    fovea_confidence: float


class LandmarkHead:
    """A trained :class:`LandmarkNet` with its :class:`HeadConfig`; :meth:`locate` reads a photo."""

    def __init__(self, net: LandmarkNet, config: HeadConfig, source: str = "") -> None:
        self.net, self.config, self.source = net.eval(), config, source

    def square(
        self, image: np.ndarray, fov: np.ndarray, geometry: FovGeometry | None = None
    ) -> tuple[np.ndarray, np.ndarray, FovGeometry]:
        """The photo's FOV square at ``input_size`` (RGB uint8), its FOV mask, and the geometry
        (``geometry``: the FOV's square at any size, when already known)."""
        if geometry is None:
            geometry = fov_geometry(fov, self.config.input_size)
        geometry = replace(geometry, size=self.config.input_size)
        square = geometry.to_square(image)
        inside = geometry.field_to_square(fov)
        return square, inside, geometry

    @torch.no_grad()
    def locate_square(self, square: np.ndarray, inside: np.ndarray) -> np.ndarray:
        """``2 x 3`` (x, y, confidence) in the square's pixels, disc then fovea."""
        batch = [normalise(square, inside)]
        if self.config.flip_average:
            batch.append(np.ascontiguousarray(batch[0][:, :, ::-1]))
        found = decode(self.net(torch.from_numpy(np.stack(batch))), self.config)
        if self.config.flip_average:
            mirrored = found[1].copy()
            mirrored[:, 0] = square.shape[1] - 1 - mirrored[:, 0]
            return (found[0] + mirrored) / 2
        return found[0]

    def locate(self, image: np.ndarray, fov: np.ndarray, geometry: FovGeometry | None = None) -> HeadAnswer:
        """Disc and fovea of an RGB uint8 ``H x W x 3`` photo with its FOV mask (bool ``H x W``);
        ``geometry``: the FOV's square (:func:`~hydralanet.preprocessing.fov_geometry`, any
        size), when already known."""
        square, inside, geometry = self.square(image, fov, geometry)
        found = self.locate_square(square, inside)
        disc, fovea = square_to_photo(geometry, *found[0, :2]), square_to_photo(geometry, *found[1, :2])
        return HeadAnswer(disc, float(found[0, 2]), fovea, float(found[1, 2]))


def square_to_photo(geometry: FovGeometry, x: float, y: float) -> tuple[float, float]:
    """A point of the FOV square (``geometry.size`` px) -> the photo's pixels (pixel centres at
    integer coordinates: square pixel i covers the square's photo pixels [i k, (i + 1) k))."""
    k = geometry.side / geometry.size
    y0, _, x0, _ = geometry.box
    return (float(x) + 0.5) * k - 0.5 - geometry.pad_left + x0, (float(y) + 0.5) * k - 0.5 - geometry.pad_top + y0


def photo_to_square(geometry: FovGeometry, x: float, y: float) -> tuple[float, float]:
    """The inverse of :func:`square_to_photo`."""
    k = geometry.side / geometry.size
    y0, _, x0, _ = geometry.box
    return (x - x0 + geometry.pad_left + 0.5) / k - 0.5, (y - y0 + geometry.pad_top + 0.5) / k - 0.5


def save_landmark_head(net: LandmarkNet, config: HeadConfig, folder: str | Path) -> None:
    """``folder/landmarks.safetensors`` + ``folder/landmarks.json``, each written atomically."""
    from safetensors.torch import save

    from ..io.images import write_atomic

    state = {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
    write_atomic(Path(folder) / WEIGHTS_FILE, save(state))
    write_atomic(Path(folder) / CONFIG_FILE, (json.dumps(asdict(config), indent=2) + "\n").encode())


def load_landmark_head(folder: str | Path) -> LandmarkHead:
    """The head in ``folder`` (``landmarks.safetensors`` + ``landmarks.json``, or the path of
    either). Raises :class:`LandmarkHeadError` with a one-line reason when it cannot be used."""
    folder = Path(folder)
    if folder.suffix in (".safetensors", ".json"):
        folder = folder.parent
    weights, config_path = folder / WEIGHTS_FILE, folder / CONFIG_FILE
    for path in (weights, config_path):
        if not path.is_file():
            raise LandmarkHeadError(f"landmark head: no {path.name} in {folder}")
    try:
        config = HeadConfig.from_dict(json.loads(config_path.read_text(encoding="utf-8")))
    except (ValueError, TypeError, UnicodeDecodeError) as exc:
        reason = " ".join(str(exc).split())
        raise LandmarkHeadError(f"landmark head: {config_path} is not a valid config ({reason})") from None
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        state = load_file(str(weights))
    except (SafetensorError, OSError, ValueError) as exc:
        reason = " ".join(str(exc).split())
        raise LandmarkHeadError(f"landmark head: {weights} is not a readable safetensors file ({reason})") from None
    net = LandmarkNet(config.widths)
    try:
        net.load_state_dict(state)
    except RuntimeError as exc:
        first = next((line.strip() for line in str(exc).splitlines() if line.strip()), "shapes differ")
        raise LandmarkHeadError(f"landmark head: {weights} does not fit {config_path} ({first})") from None
    return LandmarkHead(net, config, str(folder))


@lru_cache(maxsize=1)
def bundled_landmark_head() -> LandmarkHead | None:
    """The head shipped beside the bundled model (``weights/``), loaded once; None when it is
    not there, and None with a one-line warning when it cannot be used (image analysis then)."""
    from ..checkpoints.sources import BUNDLED_DIR

    if not (BUNDLED_DIR / WEIGHTS_FILE).exists():
        return None
    try:
        return load_landmark_head(BUNDLED_DIR)
    except LandmarkHeadError as exc:
        warnings.warn(f"{exc}; the landmarks come from image analysis", stacklevel=2)
        return None
