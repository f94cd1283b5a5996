"""The pipeline that produces HydraLA-Net checkpoints: datasets -> manifest -> training ->
evaluation -> Hub. Imports point one way: ``training -> hydralanet``."""

import os

# albumentations 2.x contacts the package index at import unless this is set (docs/training.md#running-offline);
# set it here so every entry point (train, evaluate, DataLoader workers) inherits it.
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
