"""``python -m training.synthetic``: write a synthetic dataset from the command line."""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence

from .canvas import REFERENCE_SIZE
from .writer import DEFAULT_SPLITS, write_dataset


def _parse_splits(text: str) -> dict[str, float]:
    splits = {}
    for part in text.split(","):
        name, sep, value = part.partition("=")
        try:
            if not sep or not name.strip():
                raise ValueError
            splits[name.strip()] = float(value)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"bad split {part!r} in {text!r}; expected e.g. train=0.6,valid=0.15,test=0.25"
            ) from None
    return splits


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m training.synthetic", description="Write a synthetic fundus lesion dataset in the DDR layout."
    )
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--n", type=int, required=True, help="number of images")
    parser.add_argument("--seed", type=int, required=True, help="dataset seed (>= 0)")
    parser.add_argument(
        "--size", type=int, default=REFERENCE_SIZE, help="image width = height in pixels (lesion sizes scale with it)"
    )
    parser.add_argument(
        "--splits",
        type=_parse_splits,
        default=dict(DEFAULT_SPLITS),
        help="name=fraction,... (default train=0.6,valid=0.15,test=0.25)",
    )
    parser.add_argument("--workers", type=int, default=1, help="processes (default 1)")
    args = parser.parse_args(argv)
    try:
        summary = write_dataset(args.out, args.n, args.seed, args.size, args.splits, args.workers)
    except ValueError as err:
        parser.error(str(err))
    print(json.dumps(summary["counts"]))
