"""Configuration dataclasses: one per concern, each default says where it comes from.

These are the single source of defaults. The checkpoint's ``config.json`` stores them
(``ModelConfig`` under ``"model"``, ``PreprocessConfig`` under ``"preprocessing"``) and the
CLI maps its flags onto their fields.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

# Fixed everywhere: tensors, files, configs, tables, colours (docs/architecture.md#lesion-classes).
CLASSES: tuple[str, ...] = ("EX", "HE", "MA", "SE")
CLASS_NAMES: dict[str, str] = {
    "EX": "hard exudates",
    "HE": "haemorrhages",
    "MA": "microaneurysms",
    "SE": "soft exudates",
}

ENCODERS: tuple[str, ...] = ("resnet50", "resnet34", "resnet18")
CLAHE_MODES: tuple[str, ...] = ("green", "lab", "casp", "off")
# How the model's square is cut from a photo: the field of view's bounding box padded to a
# square (this project), or the photo's centred square (the original HydraLA-Net code).
CROP_MODES: tuple[str, ...] = ("fov", "centre_square")
# How inference runs (hydralanet.inference.fast): auto = the fast path at the best precision here.
PRECISIONS: tuple[str, ...] = ("auto", "fp32", "bf16", "fp16")

# ImageNet statistics: the encoder's pretrained weights expect them (docs/architecture.md#normalisation).
IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)

FORMAT_VERSION = 1  # of config.json; a newer one is refused with a clear message, never misread

# Published default threshold; tuned per class on validation when a checkpoint has them.
DEFAULT_THRESHOLD = 0.35


def _check_choice(name: str, value: Any, allowed: tuple) -> None:
    if value not in allowed:
        raise ValueError(f"{name}={value!r} is not supported; choose one of {', '.join(map(str, allowed))}")


@dataclass(frozen=True)
class ModelConfig:
    """Architecture arguments of :class:`hydralanet.HydraLANet`."""

    encoder: str = "resnet50"  # published encoder (docs/architecture.md#model); resnet18/34 are lighter options
    decoder_channels: int = 256  # D in the paper: every decoder feature has D channels
    hydra_hidden_ratio: float = 0.25  # hidden width of each Hydra branch = max(1, int(D * ratio))
    head_bias_init: float = -2.0  # sigmoid(-2) ~ 0.12: fewer early false positives
    deep_supervision: bool = False  # extra d3/d4/d5 outputs, training only

    def __post_init__(self) -> None:
        _check_choice("encoder", self.encoder, ENCODERS)
        if int(self.decoder_channels) < 1:
            raise ValueError(f"decoder_channels must be a positive integer, got {self.decoder_channels!r}")
        if not 0 < float(self.hydra_hidden_ratio) <= 4:
            raise ValueError(f"hydra_hidden_ratio must be in (0, 4], got {self.hydra_hidden_ratio!r}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        return _from_dict(cls, data, "model")


@dataclass(frozen=True)
class PreprocessConfig:
    """Preprocessing shared by training and inference (docs/architecture.md#preprocessing)."""

    input_size: int = 1024  # published input: the FOV square is resized to this side
    clahe: str = "green"  # published choice: CLAHE on the green channel only
    clip_limit: float = 1.5  # published CLAHE clip limit
    tile_grid: int = 8  # published CLAHE tile grid (8 x 8)
    # FOV detection: a blurred max(R, G) above this fraction of its robust maximum is "inside".
    # 0.1 separates the black surround (< 5 % in every camera we tried) from dim rims.
    fov_threshold: float = 0.1
    # fov: every pixel of the field of view is read. centre_square: what the original code
    # trained on (checkpoints converted from it default to it; docs/checkpoints.md#checkpoints-from-the-original-hydrala-net-code).
    crop: str = "fov"
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD

    def __post_init__(self) -> None:
        _check_choice("clahe", self.clahe, CLAHE_MODES)
        _check_choice("crop", self.crop, CROP_MODES)
        if int(self.input_size) < 32 or int(self.input_size) % 32:
            raise ValueError(f"input_size must be a multiple of 32 and >= 32, got {self.input_size!r}")
        if float(self.clip_limit) <= 0:
            raise ValueError(f"clip_limit must be > 0, got {self.clip_limit!r}")
        if int(self.tile_grid) < 1:
            raise ValueError(f"tile_grid must be >= 1, got {self.tile_grid!r}")
        object.__setattr__(self, "mean", tuple(float(v) for v in self.mean))
        object.__setattr__(self, "std", tuple(float(v) for v in self.std))

    def replace(self, **changes: Any) -> PreprocessConfig:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["mean"], data["std"] = list(self.mean), list(self.std)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PreprocessConfig:
        return _from_dict(cls, data, "preprocessing")


def _from_dict(cls, data: dict[str, Any], section: str):
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"unknown {section} setting(s) {unknown}; known: {sorted(known)}")
    return cls(**data)


@dataclass
class CheckpointConfig:
    """Everything ``config.json`` holds besides the weights (docs/architecture.md#checkpoint-format)."""

    model: ModelConfig = field(default_factory=ModelConfig)
    preprocessing: PreprocessConfig = field(default_factory=PreprocessConfig)
    thresholds: dict[str, float] = field(default_factory=lambda: dict.fromkeys(CLASSES, DEFAULT_THRESHOLD))
    name: str = "hydralanet"
    provenance: dict[str, Any] = field(default_factory=dict)
    # Per-class Platt calibration of the logits, {class: (a, b)}: p = sigmoid(a * logit + b),
    # fitted on validation (training.calibrate); None = raw sigmoid (checkpoints made before it).
    calibration: dict[str, tuple[float, float]] | None = None
    # Flip test-time augmentation by default (predict, the CLI, the app, evaluation): for a model
    # whose thresholds and calibration were fitted with it. Written to config.json only when on.
    tta: bool = False
    # Input scales combined per class (geometric mean) under test-time augmentation, {class: (factor, ...)}, each a
    # multiple of preprocessing.input_size (1.0 is that size itself): large lesions such as
    # haemorrhages are seen whole at a smaller input. None = the input size alone.
    scales: dict[str, tuple[float, ...]] | None = None
    # Per class, a band along the field of view's edge where that lesion is not marked, as a share
    # of the field's diameter, {class: share}: a bright rim that the model takes for hard exudates.
    # None (or a class left out) = no band.
    edge_margin: dict[str, float] | None = None

    def __post_init__(self) -> None:
        self.thresholds = validate_thresholds(self.thresholds)
        self.calibration = validate_calibration(self.calibration)
        self.scales = validate_scales(self.scales)
        self.edge_margin = validate_edge_margin(self.edge_margin)

    def extra_scales(self) -> tuple[float, ...]:
        """The factors other than 1.0 that some class averages (sorted; empty without ``scales``)."""
        return tuple(f for f in scale_factors(self.scales) if f != 1.0)

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": "hydralanet",
            "format_version": FORMAT_VERSION,
            "name": self.name,
            "classes": list(CLASSES),
            "model": self.model.to_dict(),
            "preprocessing": self.preprocessing.to_dict(),
            "thresholds": dict(self.thresholds),
            "calibration": {c: list(ab) for c, ab in self.calibration.items()} if self.calibration else None,
            **({"tta": True} if self.tta else {}),
            **({"scales": {c: list(fs) for c, fs in self.scales.items()}} if self.scales else {}),
            **({"edge_margin": dict(self.edge_margin)} if self.edge_margin else {}),
            "provenance": self.provenance,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CheckpointConfig:
        if data.get("format") != "hydralanet":
            raise ValueError(f"not a hydralanet config (format={data.get('format')!r}, expected 'hydralanet')")
        version = data.get("format_version", FORMAT_VERSION)
        if not isinstance(version, int) or version > FORMAT_VERSION:
            raise ValueError(
                f"format_version {version!r} is newer than this hydralanet reads ({FORMAT_VERSION}); upgrade hydralanet"
            )
        classes = tuple(data.get("classes", CLASSES))
        if classes != CLASSES:
            raise ValueError(f"config classes {list(classes)} differ from the fixed order {list(CLASSES)}")
        return cls(
            model=ModelConfig.from_dict(data.get("model", {})),
            preprocessing=PreprocessConfig.from_dict(data.get("preprocessing", {})),
            thresholds=data.get("thresholds", {}),
            name=str(data.get("name", "hydralanet")),
            provenance=dict(data.get("provenance", {})),
            calibration=data.get("calibration"),
            tta=bool(data.get("tta", False)),
            scales=data.get("scales"),
            edge_margin=data.get("edge_margin"),
        )


def format_threshold(value: float) -> str:
    """A threshold for people: two decimals when it has no more (the app's slider stops), else
    at least four, and near 0 or 1 enough to show two significant digits of the distance to
    that end (up to twelve decimals), trailing zeros dropped: it never reads as 0 or 1, and two
    nearby stops of a slider never read the same (0.0000011 and 0.0000014; 0.99999994)."""
    value = float(value)
    if round(value, 2) == value:
        return f"{value:.2f}"
    distance = min(abs(value), abs(1.0 - value))
    digits = 4 if distance == 0 else max(4, min(12, 1 - math.floor(math.log10(distance))))
    text = f"{value:.{digits}f}".rstrip("0")
    return text if len(text.partition(".")[2]) >= 2 else f"{value:.2f}"


def _threshold_grid() -> tuple[float, ...]:
    """Every 0.01 in [0.05, 0.95], where calibrated thresholds lie; towards 0 and 1 equal steps of
    0.25 in log-odds (1e-6 .. 0.05 and 0.95 .. 1 - 1e-6: a saturated model's threshold near 1
    can still be nudged), at three significant digits of the distance to the end; 0 and 1."""
    middle = {round(i / 100, 2) for i in range(5, 96)}
    low, z = set(), -13.75
    while z < math.log(0.05 / 0.95):
        low.add(float(f"{1 / (1 + math.exp(-z)):.3g}"))
        z += 0.25
    return tuple(sorted({0.0, 1.0} | middle | low | {round(1 - p, 9) for p in low}))


THRESHOLD_GRID = _threshold_grid()


def threshold_stops(*exact: float) -> list[float]:
    """Stops of a threshold slider: :data:`THRESHOLD_GRID` plus ``exact`` values (the model's
    own threshold, the current value), so each of them can be shown as it is."""
    return sorted(set(THRESHOLD_GRID) | {float(v) for v in exact})


def validate_calibration(calibration: dict[str, Any] | None) -> dict[str, tuple[float, float]] | None:
    """``{class: (a, b)}`` for all four classes with finite ``a > 0`` (monotone: it must not
    reorder pixels, so AUPR is unchanged), or None."""
    if not calibration:
        return None
    if set(calibration) != set(CLASSES):
        raise ValueError(f"calibration must give (a, b) for each of {', '.join(CLASSES)}, got {sorted(calibration)}")
    out = {}
    for c in CLASSES:
        try:
            a, b = (float(v) for v in calibration[c])
        except (TypeError, ValueError):
            raise ValueError(f"calibration for {c} must be a pair (a, b), got {calibration[c]!r}") from None
        if not (math.isfinite(a) and math.isfinite(b) and a > 0):
            raise ValueError(f"calibration for {c} must have a finite a > 0 and a finite b, got ({a}, {b})")
        out[c] = (a, b)
    return out


def scale_factors(scales: dict[str, tuple[float, ...]] | None) -> tuple[float, ...]:
    """Every input size that some class of ``scales`` uses, sorted; ``(1.0,)`` without scales."""
    return tuple(sorted({f for fs in scales.values() for f in fs})) if scales else (1.0,)


def validate_scales(scales: dict[str, Any] | None) -> dict[str, tuple[float, ...]] | None:
    """``{class: (factor, ...)}`` for all four classes, each factor finite and in (0, 4], or None.
    A class that lists only 1.0 runs at the input size alone."""
    if not scales:
        return None
    if set(scales) != set(CLASSES):
        raise ValueError(f"scales must list factors for each of {', '.join(CLASSES)}, got {sorted(scales)}")
    out = {}
    for c in CLASSES:
        try:
            factors = tuple(float(f) for f in scales[c])
        except (TypeError, ValueError):
            raise ValueError(f"scales for {c} must be a list of numbers, got {scales[c]!r}") from None
        if not factors or not all(math.isfinite(f) and 0 < f <= 4 for f in factors):
            raise ValueError(f"scales for {c} must be one or more factors in (0, 4], got {scales[c]!r}")
        out[c] = tuple(sorted(set(factors)))
    return out if any(fs != (1.0,) for fs in out.values()) else None


def validate_edge_margin(margin: dict[str, Any] | None) -> dict[str, float] | None:
    """``{class: share}`` for some of the four classes, each share of the field of view's
    diameter finite and in [0, 0.25); classes with 0 are dropped; None when none is left."""
    if not margin:
        return None
    if not isinstance(margin, dict):
        raise ValueError(f"edge_margin must map lesions to shares of the field's diameter, got {margin!r}")
    out = {}
    for c, value in margin.items():
        if c not in CLASSES:
            raise ValueError(f"unknown lesion {c!r} in edge_margin; use one of {', '.join(CLASSES)}")
        try:
            share = float(value)
        except (TypeError, ValueError):
            raise ValueError(f"edge_margin for {c} must be a number, got {value!r}") from None
        if not (math.isfinite(share) and 0 <= share < 0.25):
            raise ValueError(f"edge_margin for {c} must be a share of the field's diameter in [0, 0.25), got {value!r}")
        if share > 0:
            out[c] = share
    return {c: out[c] for c in CLASSES if c in out} or None


def validate_thresholds(thresholds: dict[str, float] | None) -> dict[str, float]:
    """Complete a partial ``{class: threshold}`` dict with the default; reject bad values."""
    out = dict.fromkeys(CLASSES, DEFAULT_THRESHOLD)
    for key, value in (thresholds or {}).items():
        if key not in CLASSES:
            raise ValueError(f"unknown lesion {key!r} in thresholds; use one of {', '.join(CLASSES)}")
        value = float(value)
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"threshold for {key} must be in [0, 1], got {value}")
        out[key] = value
    return out
