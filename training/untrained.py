"""Write a randomly initialised checkpoint folder, labelled as untrained.

``python -m training.untrained --out weights`` makes the placeholder that ships until a
trained demonstration model exists; tests use it to build small checkpoints.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from hydralanet.checkpoints.folder import save_checkpoint
from hydralanet.config import CheckpointConfig, PreprocessConfig
from hydralanet.model.network import HydraLANet

CARD = """---
library_name: hydralanet
tags: [image-segmentation, medical-imaging, diabetic-retinopathy, fundus]
---
# hydralanet-untrained ({encoder}, D={d}, {size} px)

**UNTRAINED: random weights.** This placeholder exists so the app, the CLI and the tests
run on a fresh machine with no network. Its masks are meaningless (with the head bias at
-2.0 every probability starts near 0.12, below the 0.35 thresholds, so masks come out empty).

Made with: `python -m training.untrained --out weights --seed {seed}`

Research software, not a medical device: not for diagnosis or clinical decisions.
"""


def make_untrained(
    out: Path, *, encoder: str = "resnet18", decoder_channels: int = 32, input_size: int = 512, seed: int = 0
) -> Path:
    torch.manual_seed(seed)
    model = HydraLANet(encoder=encoder, decoder_channels=decoder_channels)
    config = CheckpointConfig(
        model=model.config,
        preprocessing=PreprocessConfig(input_size=input_size),
        name="hydralanet-untrained",
        provenance={"trained": False, "command": f"python -m training.untrained --out {out} --seed {seed}"},
    )
    card = CARD.format(encoder=encoder, d=decoder_channels, size=input_size, seed=seed)
    return save_checkpoint(model, out, config, model_card=card, weights_dtype=torch.float16)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--encoder", default="resnet18")
    parser.add_argument("--decoder-channels", type=int, default=32)
    parser.add_argument("--input-size", type=int, default=512)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    path = make_untrained(
        args.out,
        encoder=args.encoder,
        decoder_channels=args.decoder_channels,
        input_size=args.input_size,
        seed=args.seed,
    )
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
