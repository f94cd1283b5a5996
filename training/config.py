"""Training settings: one dataclass, every default commented with where it comes from.

The architecture and the preprocessing are the package's own dataclasses
(:class:`hydralanet.ModelConfig`, :class:`hydralanet.PreprocessConfig`), nested here so that
there is one source of defaults and the checkpoint stores exactly what training used.

Comments marked *recipe* give the published training recipe (docs/training.md#the-published-recipe).

Named configs: ``published`` (the recipe), ``cpu-small`` (a random-init ResNet-18 that trains
in minutes on two CPU cores), ``demo`` (the synthetic pretraining) and ``idrid`` (the bundled
model: ``demo`` fine-tuned on IDRiD at 1536 px). On the command line::

    --config published | cpu-small | demo | idrid | path/to/config.json      (a JSON file: overrides on the defaults)
    --set lr=3e-4 --set model.encoder=resnet34 --set preprocessing.input_size=512
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydralanet.config import DEFAULT_THRESHOLD, ModelConfig, PreprocessConfig
from hydralanet.io.images import write_atomic

AMP_MODES = ("auto", "off", "bf16", "fp16")
TVERSKY_OVER = ("image", "batch")  # recipe: per image
MONITORS = ("f1", "aupr")  # validation macro metric that picks `best` and drives early stopping


@dataclass
class TrainConfig:
    """Everything a training run needs besides the manifest and the output folder."""

    # --- architecture and preprocessing (stored in the checkpoint as they are)
    model: ModelConfig = field(
        default_factory=ModelConfig
    )  # published: ResNet-50, D = 256 (docs/architecture.md#model)
    preprocessing: PreprocessConfig = field(
        default_factory=PreprocessConfig
    )  # 1024 px, CLAHE green 1.5/8x8 (docs/architecture.md#preprocessing)
    pretrained_encoder: bool = (
        True  # docs/architecture.md#model: ImageNet weights when available (needs internet or a torch hub cache)
    )
    # Start from this checkpoint's weights (a hydralanet folder or Hub repo id, same architecture):
    # fine-tuning. The optimizer, schedule and counters start fresh; None: random/ImageNet init.
    init_weights: str | None = None

    # --- data
    train_split: str = (
        "train"  # manifest split names (docs/training.md#data combined split: 827 train / 207 val / 365 test)
    )
    val_split: str = "val"
    num_workers: int = 8  # recipe: 8 loader workers
    cache_dir: str | None = None  # resized CLAHE-free squares on disk; None: <run>/cache, "off": no cache

    # --- augmentation, on image and masks together (recipe; no colour augmentation: CLAHE handles contrast)
    hflip_p: float = 0.5  # recipe
    vflip_p: float = 0.5  # recipe
    affine_p: float = 0.75  # recipe
    translate: float = 0.10  # recipe: ±10 % of the side
    scale: tuple[float, float] = (0.88, 1.25)  # recipe
    rotate: float = 15.0  # recipe: ±15 degrees; the border is black for the image and 0 for the masks
    # Train on random crop_size x crop_size windows of the square (0 = the whole square): small
    # crops of a large input keep lesions at full scale for a fraction of the compute. Half
    # the crops are centred on a lesion when the sample has one. Validation sees whole squares.
    crop_size: int = 0
    # Lesion-centred crops pick a lesion kind first (uniformly among those the image shows),
    # then a pixel of it; False: any lesion pixel, so large kinds (exudates, haemorrhages)
    # are nearly always the centre.
    balanced_crops: bool = False
    # Share of training crops centred on the brightest region of the square, the optic disc:
    # pale lesions (soft exudates) are falsely seen there, and random crops rarely hold it.
    disc_crop_p: float = 0.0
    # Hard negatives: a JSON file (``python -m training.mine``) mapping each training image to
    # the centres, in the model's square, of what a model marked there falsely; a share
    # ``hard_negative_p`` of the crops of an image with some is centred on one of them.
    hard_negatives: str | None = None
    hard_negative_p: float = 0.0
    # Photometric jitter before CLAHE (brightness, contrast, gamma, hue/saturation); recipe has none
    # (CLAHE handles contrast on real photos). The synthetic demo model uses it so it learns
    # lesions, not one generator's colours.
    colour_p: float = 0.0
    # Rare-lesion sampling: an image that contains lesion c is drawn oversample[c] times as often
    # as a lesion-free one (the largest factor among its lesions), with replacement; all 1: a
    # plain shuffle (recipe). Order EX, HE, MA, SE.
    oversample: tuple[float, float, float, float] = (1.0, 1.0, 1.0, 1.0)
    # Draws per image and epoch (with replacement, like oversampling): a small real dataset
    # (IDRiD: 45 training photos) gives epochs of a few steps, each followed by a validation
    # pass over whole photos; repeats make an epoch long enough for that to be worth it.
    epoch_repeats: int = 1

    # --- loss: DualLoss = 0.8 x FocalTversky + 0.2 x BCE (recipe)
    tversky_weight: float = 0.8  # recipe
    bce_weight: float = 0.2  # recipe
    alpha: tuple[float, float, float, float] = (0.4, 0.4, 0.2, 0.4)  # recipe: Tversky FP weight per class
    beta: tuple[float, float, float, float] = (0.6, 0.6, 0.8, 0.6)  # recipe: FN weight; MA punishes misses most
    gamma: float = 2.0  # recipe: focal exponent
    # Tversky index per image (recipe) or over the whole batch: per image, a false positive in an
    # image without that lesion saturates the term and goes unpunished (training/losses.py).
    tversky_over: str = "image"
    class_weights: tuple[float, float, float, float] = (1.0, 1.0, 5.0, 1.0)  # recipe: MA x 5
    pos_weight: tuple[float, float, float, float] | None = None  # recipe: optional BCE pos_weight, off
    aux_weights: tuple[float, float, float] = (
        0.2,
        0.1,
        0.05,
    )  # deep supervision d3, d4, d5: small (docs/architecture.md#model)

    # --- optimisation
    epochs: int = 125  # recipe
    batch_size: int = 2  # recipe; per process under torchrun
    grad_accum: int = 1  # micro-batches per optimizer step (effective batch = batch_size x grad_accum x GPUs)
    lr: float = 1e-5  # recipe: AdamW
    weight_decay: float = 1e-4  # recipe
    betas: tuple[float, float] = (0.9, 0.999)  # AdamW's defaults (recipe does not change them)
    warmup_epochs: float = 0.0  # recipe uses a constant lr; linear warmup from 0 over this many epochs
    cosine: bool = False  # recipe: off; cosine decay from lr to lr x min_lr_ratio after the warmup
    min_lr_ratio: float = 0.01  # floor of the cosine decay
    grad_clip: float = 0.0  # max gradient norm; 0 = off (recipe does not clip)
    freeze_bn: bool = True  # recipe: batch 2 is too small for batch statistics; eval-mode BN, affine frozen
    amp: str = "auto"  # CUDA: bf16 (fp16 + GradScaler without bf16); CPU: off. Or off / bf16 / fp16

    # --- thresholds and model selection
    default_threshold: float = DEFAULT_THRESHOLD  # recipe: 0.35 per class
    tune_thresholds: bool = True  # recipe "better": per class max-F1 threshold on validation, stored in the checkpoint
    # docs/architecture.md#probabilities-and-calibration: per-class Platt calibration of the logits fitted on validation each epoch, stored in
    # the checkpoint; thresholds are then on calibrated probabilities (raw ones saturate at 0.9999).
    calibrate: bool = True
    monitor: str = "f1"  # recipe: F1 is the primary metric (macro over the classes, tuned thresholds)
    patience: int = (
        0  # early stopping after this many epochs without a better `monitor`; 0 = off (recipe runs all epochs)
    )
    # Stop after the epoch at which another epoch of the same length would pass this budget
    # (minutes of training loop, validation included; 0 = off). `best` is kept as usual.
    time_limit_minutes: float = 0.0
    # Stop after this epoch while the learning-rate schedule still spans `epochs` (0 = off): a
    # stage that hands its weights to the next one part way through its schedule.
    stop_epoch: int = 0
    # Also keep every Nth epoch's weights as RUN/epochs/NNN (1-based, as the log counts), for
    # `training.average` to average epochs of one run; 0 = off (only best/ and last/).
    keep_epochs: int = 0

    # --- compute
    threads: int = 0  # torch intra-op threads; 0 = PyTorch's default (one per core)

    # --- reproducibility
    seed: int = 42  # docs/training.md#data/recipe
    deterministic: bool = True  # torch.use_deterministic_algorithms(warn_only=True): exact --resume

    def __post_init__(self) -> None:
        self.scale = _floats(self.scale, 2, "scale")
        self.betas = _floats(self.betas, 2, "betas")
        for name in ("alpha", "beta", "class_weights", "oversample"):
            setattr(self, name, _floats(getattr(self, name), 4, name))
        self.aux_weights = _floats(self.aux_weights, 3, "aux_weights")
        if self.pos_weight is not None:
            self.pos_weight = _floats(self.pos_weight, 4, "pos_weight")
        if self.amp not in AMP_MODES:
            raise ValueError(f"amp={self.amp!r} is not supported; choose one of {', '.join(AMP_MODES)}")
        if self.tversky_over not in TVERSKY_OVER:
            raise ValueError(
                f"tversky_over={self.tversky_over!r} is not supported; choose one of {', '.join(TVERSKY_OVER)}"
            )
        if self.monitor not in MONITORS:
            raise ValueError(f"monitor={self.monitor!r} is not supported; choose one of {', '.join(MONITORS)}")
        for name in (
            "hflip_p",
            "vflip_p",
            "affine_p",
            "colour_p",
            "disc_crop_p",
            "hard_negative_p",
            "default_threshold",
            "translate",
            "min_lr_ratio",
        ):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)!r}")
        for name in ("epochs", "batch_size", "grad_accum"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)!r}")
        for name in (
            "num_workers",
            "patience",
            "warmup_epochs",
            "grad_clip",
            "lr",
            "weight_decay",
            "threads",
            "time_limit_minutes",
            "stop_epoch",
            "keep_epochs",
        ):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)!r}")
        if any(not 1.0 <= f < float("inf") for f in self.oversample):
            raise ValueError(f"oversample factors must be finite and >= 1 (1 = no oversampling), got {self.oversample}")
        if not 0 < self.scale[0] <= self.scale[1]:
            raise ValueError(f"scale must be (min, max) with 0 < min <= max, got {self.scale}")
        if not (isinstance(self.epoch_repeats, int) and self.epoch_repeats >= 1):
            raise ValueError(f"epoch_repeats must be a whole number >= 1, got {self.epoch_repeats!r}")
        if self.disc_crop_p + self.hard_negative_p > 1.0:
            raise ValueError(
                f"disc_crop_p + hard_negative_p must be <= 1, got {self.disc_crop_p} + {self.hard_negative_p}"
            )
        if self.hard_negative_p and not self.hard_negatives:
            raise ValueError("hard_negative_p needs hard_negatives=FILE (write one with `python -m training.mine`)")
        if self.hard_negative_p and not self.crop_size:
            raise ValueError("hard_negative_p centres training crops: it needs crop_size > 0")
        if self.crop_size and not (32 <= self.crop_size <= self.preprocessing.input_size and self.crop_size % 32 == 0):
            raise ValueError(
                f"crop_size must be 0 (off) or a multiple of 32 in [32, input_size={self.preprocessing.input_size}], "
                f"got {self.crop_size!r}"
            )

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["model"] = self.model.to_dict()
        data["preprocessing"] = self.preprocessing.to_dict()
        return json.loads(json.dumps(data))  # tuples -> lists: what a JSON file holds

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        return apply_overrides(cls(), data)


def _floats(value: Any, n: int, name: str) -> tuple[float, ...]:
    values = tuple(float(v) for v in value)
    if len(values) != n:
        raise ValueError(f"{name} needs {n} values, got {len(values)}: {list(values)}")
    return values


# --------------------------------------------------------------------------- named configs

# A random-init ResNet-18 (no ImageNet weights offline) at 256 px: a run is minutes on 2 CPU cores.
CPU_SMALL: dict[str, Any] = {
    "model": {"encoder": "resnet18", "decoder_channels": 32},
    "preprocessing": {"input_size": 256},
    "pretrained_encoder": False,  # offline machines have no ImageNet weights
    # Measured on a shared 2-core machine (load ~4), one 256 px batch of 8: 3.5-4.5 s with 2
    # threads (OpenMP threads spin-waiting on each other), 1.2-1.8 s with 1 thread. One thread
    # computes; one loader worker decodes on the other core (cheap once the cache is filled).
    "threads": 1,
    "num_workers": 1,
    "batch_size": 8,
    "epochs": 35,
    # Random init needs a far larger step than fine-tuning (1e-5 barely moves it); warmup keeps
    # the first steps of Adam on an unnormalised net from blowing up, cosine settles the end.
    "lr": 2e-3,
    "warmup_epochs": 2.0,
    "cosine": True,
    # Frozen BN keeps ImageNet statistics; a random-init net has none worth keeping (mean 0,
    # var 1 everywhere), so batch statistics are what normalises it. Batch 8 is enough for that.
    "freeze_bn": False,
    "amp": "off",
}

# The bundled demonstration model (weights/), trained on synthetic data by
# training/make_synthetic.sh. 1024 px input (MA stay 2-6 px wide) but 384 px training crops;
# D = 16 keeps the fp16 weights under 25 MB (24.8) with the ResNet-18 encoder (D = 32: 25.8). Loader workers and
# threads are the machine's business: the make_*.sh scripts set them for a GPU or a 2-core CPU.
DEMO: dict[str, Any] = {
    **CPU_SMALL,
    "model": {"encoder": "resnet18", "decoder_channels": 16},
    "preprocessing": {"input_size": 1024},
    "crop_size": 384,
    "colour_p": 0.5,
    "batch_size": 16,
    "epochs": 40,
    "lr": 2e-3,
    "warmup_epochs": 1.0,
    "amp": "auto",  # bf16 on CUDA, fp32 on a CPU
    "monitor": "aupr",  # the demo model is judged on AUPR per lesion
}

# The bundled model (weights/): the demo model fine-tuned on IDRiD by training/make_bundled.sh.
# 1536 px input, so that microaneurysms (6-12 px in a 4288 x 2848 photo) stay 2-5 px wide and
# one photo costs about a second on two CPU cores; 512 px crops; 44 training photos, each drawn
# 8 times an epoch; the Tversky index over the batch, so that false positives in crops without
# a lesion are punished too.
IDRID: dict[str, Any] = {
    **DEMO,
    "preprocessing": {"input_size": 1536},
    "crop_size": 512,
    "epoch_repeats": 8,
    "epochs": 40,
    "lr": 5e-4,
    "warmup_epochs": 1.0,
    "cosine": True,
    "tversky_over": "batch",
    "grad_clip": 1.0,
}

NAMED_CONFIGS: dict[str, dict[str, Any]] = {"published": {}, "cpu-small": CPU_SMALL, "demo": DEMO, "idrid": IDRID}


def load_config(name_or_file: str, overrides: list[str] | None = None) -> TrainConfig:
    """A named config or a JSON file of settings (applied on the published defaults), then
    ``key=value`` overrides (``model.encoder=resnet18``). Raises ``ValueError`` naming the
    unknown key and the known ones, or the value and the type it should have."""
    if name_or_file in NAMED_CONFIGS:
        config = apply_overrides(TrainConfig(), NAMED_CONFIGS[name_or_file])
    else:
        path = Path(name_or_file)
        if not path.is_file():
            raise ValueError(
                f"--config {name_or_file!r} is neither a named config ({', '.join(NAMED_CONFIGS)}) nor a JSON file"
            )
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise ValueError(f"--config {path}: not valid JSON ({exc})") from None
        if not isinstance(data, dict):
            raise ValueError(f"--config {path}: expected a JSON object of settings, got {type(data).__name__}")
        config = apply_overrides(TrainConfig(), data)
    changes: dict[str, Any] = {}  # applied together: settings that depend on each other, in any order
    for item in overrides or []:
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"--set {item!r}: expected key=value, e.g. --set lr=1e-4")
        changes[key.strip()] = _parse_text(value.strip())
    return apply_overrides(config, changes) if changes else config


def known_keys(config: Any = None) -> list[str]:
    """Every settable key, dotted for the nested ones: ``lr``, ``model.encoder``, ..."""
    config = config if config is not None else TrainConfig()
    keys = []
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if dataclasses.is_dataclass(value):
            keys += [f"{f.name}.{sub}" for sub in known_keys(value)]
        else:
            keys.append(f.name)
    return keys


def apply_overrides(config: Any, overrides: dict[str, Any]) -> Any:
    """A copy of a (possibly nested) config dataclass with ``overrides`` applied and type-checked.

    Keys may be dotted (``{"model.encoder": "resnet18"}``) or nested dicts
    (``{"model": {"encoder": "resnet18"}}``). Values are coerced to the field's type.
    """
    flat = flatten(overrides)
    keys = known_keys(config)
    for key in flat:
        if key not in keys:
            close = difflib.get_close_matches(key, keys, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ValueError(f"unknown setting {key!r}{hint}; known: {', '.join(keys)}")
    return _apply(config, flat)


def flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"model": {"encoder": x}}`` -> ``{"model.encoder": x}``."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _apply(config: Any, flat: dict[str, Any], prefix: str = "") -> Any:
    hints = typing.get_type_hints(type(config))
    changes: dict[str, Any] = {}
    nested: dict[str, dict[str, Any]] = {}
    for key, value in flat.items():
        head, _, rest = key.partition(".")
        if rest:
            nested.setdefault(head, {})[rest] = value
        else:
            changes[head] = _coerce(value, hints[head], prefix + key)
    for head, sub in nested.items():
        changes[head] = _apply(getattr(config, head), sub, f"{prefix}{head}.")
    return dataclasses.replace(config, **changes)


def _parse_text(text: str) -> Any:
    """``--set`` values: JSON when it parses (numbers, true/false, null, lists), else a string."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        if "," in text:  # --set scale=0.9,1.1
            return [_parse_text(part.strip()) for part in text.split(",")]
        return text


def _coerce(value: Any, hint: Any, key: str) -> Any:
    """``value`` as the annotated type (bool, int, float, str, tuple[...], X | None)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if type(None) in args and (value is None or (isinstance(value, str) and value.lower() in ("none", "null"))):
            return None
        return _coerce(value, next(a for a in args if a is not type(None)), key)
    if hint is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "yes", "on", "1", "false", "no", "off", "0"):
            return value.lower() in ("true", "yes", "on", "1")
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        raise ValueError(f"{key}={value!r}: expected true or false")
    if hint is int:
        if isinstance(value, bool) or not (isinstance(value, int) or (isinstance(value, float) and value.is_integer())):
            raise ValueError(f"{key}={value!r}: expected an integer")
        return int(value)
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"{key}={value!r}: expected a number")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ValueError(f"{key}={value!r}: expected text")
        return value
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"{key}={value!r}: expected {len(args)} values, e.g. {key}=" + ",".join(["1"] * len(args)))
        if len(value) != len(args):
            raise ValueError(f"{key}={value!r}: expected {len(args)} values, got {len(value)}")
        return tuple(_coerce(v, a, key) for v, a in zip(value, args))
    raise AssertionError(f"no coercion for {key}: {hint}")  # a new field type needs a branch here


def save_config(config: TrainConfig, path: str | Path) -> None:
    """A JSON file that ``--config`` reads back to the same config."""
    write_atomic(path, (json.dumps(config.to_dict(), indent=2) + "\n").encode())


# Settings that may change on --resume without changing the numbers (or, for epochs and
# patience, changing them knowingly: a longer run). Anything else must match the run.
RESUME_MAY_CHANGE = (
    "num_workers",
    "cache_dir",
    "epochs",
    "patience",
    "time_limit_minutes",
    "stop_epoch",
    "keep_epochs",
)


def resolve_run_config(name_or_file: str | None, overrides: list[str], out: Path, resume: bool) -> TrainConfig:
    """The config of a run in ``out`` (``--config``, ``--set``, ``--out``, ``--resume``); on
    resume the run's saved one, which new settings may change only in ways that keep the run's
    numbers (see ``RESUME_MAY_CHANGE``)."""
    cfg = load_config(name_or_file or "published", overrides)
    saved = out / "train_config.json"
    if not resume or not saved.exists():
        return cfg
    run_cfg = load_config(str(saved), overrides if name_or_file is None else None)
    if name_or_file is None:
        return run_cfg
    old, new = flatten(run_cfg.to_dict()), flatten(cfg.to_dict())
    changed = sorted(k for k in old if old[k] != new.get(k) and k not in RESUME_MAY_CHANGE)
    if changed:
        raise ValueError(
            "--resume: the run was trained with other settings: "
            + ", ".join(f"{k} {old[k]!r} -> {new.get(k)!r}" for k in changed)
            + f"; only {', '.join(RESUME_MAY_CHANGE)} may change"
        )
    return cfg
