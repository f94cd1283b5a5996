"""What a checkpoint's test-time augmentation costs: whole-photo ``predict`` with the checkpoint's
default (flips, and its input sizes per lesion when it lists them), with flips alone, and with
neither, side by side in one process (the three in turn each round; medians over ``--rounds``).

    .venv/bin/python tools/tta_cost.py                      # the bundled model, IDRiD_001 (4288 x 2848)
    .venv/bin/python tools/tta_cost.py --model DIR --rounds 7 photo.jpg
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run as a script from anywhere

from hydralanet import load_model, predict, read_image  # noqa: E402

IDRID_PHOTO = ROOT / "data/idrid/B. Disease Grading/1. Original Images/b. Testing Set/IDRiD_001.jpg"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("photo", nargs="?", default=str(IDRID_PHOTO))
    parser.add_argument("--model", default=None, help="checkpoint (default: the bundled model)")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    if not Path(args.photo).is_file():
        print(f"error: {args.photo}: no such photo (IDRiD's release under data/idrid, or name one)", file=sys.stderr)
        return 2
    image = read_image(args.photo)
    loaded = load_model(args.model)
    flips_alone = dataclasses.replace(loaded, config=dataclasses.replace(loaded.config, scales=None))
    ways = {
        "checkpoint's default": (loaded, True),
        "flips alone": (flips_alone, True),
        "neither": (loaded, False),
    }
    for model, tta in ways.values():  # warm-up: the fast path is prepared on first use
        predict(model, image, square=True, tta=tta)
    times: dict[str, list[float]] = {name: [] for name in ways}
    for _ in range(args.rounds):
        for name, (model, tta) in ways.items():
            start = time.perf_counter()
            predict(model, image, square=True, tta=tta)
            times[name].append(time.perf_counter() - start)
    h, w = image.shape[:2]
    print(f"{Path(args.photo).name} ({w} x {h}), predict, median of {args.rounds}:")
    for name, values in times.items():
        print(f"  {name}: {statistics.median(values):.3f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
