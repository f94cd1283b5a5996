"""Synthetic fundus photographs with pixel-exact lesion masks, written in the DDR layout.

The data trains the bundled demonstration model, which is later scored on lesions drawn by a
different generator, so the emphasis is on the lesions themselves (docs/architecture.md#lesion-classes sizes, shapes and
colours) and on unlabelled look-alikes the model must learn to reject: the bright optic disc,
vessel segments and crossings, dark dots at vessel ends, the foveal reflex.

One sample is built in four stages, all driven by one ``numpy.random.Generator``
(``sample.render_sample``):

1. background (``fundus``): either the CC0 photo ``skimage.data.retina()`` (a normal eye)
   re-framed and re-coloured, or a procedural fundus (FOV, choroid texture, disc, macula,
   vessel tree from ``vessels``);
2. photometric variation of that background (``camera``: channel gains, gamma, saturation,
   illumination);
3. look-alikes (``lookalikes``) and lesions (``lesions``), each composited in a local patch with
   an alpha map and a colour derived from the local background; its label is exactly
   ``alpha >= 0.5`` (drawing primitives in ``canvas``);
4. camera effects shared by background and lesions (``camera``: blur, noise, JPEG re-compression).

Command line (``cli``; the dataset writer is ``writer``)::

    python -m training.synthetic --out DIR --n N --seed S [--size 1024]
        [--splits train=0.6,valid=0.15,test=0.25] [--workers K]

writes ``DIR/lesion_segmentation/<split>/image/<stem>.jpg`` and
``DIR/lesion_segmentation/<split>/label/{EX,HE,MA,SE}/<stem>.tif`` (uint8, 0 / 255, all four
present for every image, all-zero when the lesion is absent, as in DDR) plus
``DIR/synthetic.json``. Image ``index`` depends only on ``(seed, index)``, never on ``N`` or on
the worker count.
"""

from __future__ import annotations

from .canvas import REFERENCE_SIZE
from .cli import main
from .lesions import DISC_EXCLUSION, LESION_IDS, P_NO_LESIONS
from .sample import P_PHOTO_BACKGROUND, Sample, generate_sample, render_sample, sample_rng
from .writer import DDR_SPLITS, DEFAULT_SPLITS, GENERATOR_VERSION, LANDMARKS_FILE, split_counts, write_dataset

__all__ = [
    "DDR_SPLITS",
    "DEFAULT_SPLITS",
    "DISC_EXCLUSION",
    "GENERATOR_VERSION",
    "LANDMARKS_FILE",
    "LESION_IDS",
    "P_NO_LESIONS",
    "P_PHOTO_BACKGROUND",
    "REFERENCE_SIZE",
    "Sample",
    "generate_sample",
    "main",
    "render_sample",
    "sample_rng",
    "split_counts",
    "write_dataset",
]
