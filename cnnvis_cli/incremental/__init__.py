"""Incremental inference for occlusion sensitivity (Krypton).

Nakandala, Kumar & Papakonstantinou, "Incremental and Approximate Inference for Faster
Occlusion-based Deep CNN Explanations", SIGMOD 2019.

Occluding a small patch changes only a window of every feature map (the patch's projective
field). The engine caches one full forward pass of the image and, for each batch of patch
positions, recomputes only those windows, layer by layer, with the model's own layers and
weights, falling back to full inference after the first layer it has no rule for.

Modules: ``graph`` (flatten a Keras 3 model into a plan), ``rules`` (per-layer window rules),
``schedule`` (window geometry per patch size), ``executor`` (the cache and the traced batch
computation), ``estimate`` (MAC ratio and whether it pays), ``drilldown`` (adaptive coarse-to-fine
position selection and per-pixel averaging).

    engine = IncrementalOcclusion(model, input_shape=(h, w, c), output_index=0, batch_size=64)
    engine.prepare(image_pre, baseline_pre)   # model-input space (after preprocessing)
    outputs = engine.outputs(corners, patch)  # (n, units) float32
    engine.estimate                           # Estimate of the geometry last used
"""

from cnnvis_cli.incremental.drilldown import DrillDown, drill_down, per_pixel_mean
from cnnvis_cli.incremental.errors import UnsupportedModel
from cnnvis_cli.incremental.estimate import PAYOFF_RATIO, Estimate, LayerCost, estimate
from cnnvis_cli.incremental.executor import IncrementalOcclusion

__all__ = [
    "PAYOFF_RATIO",
    "DrillDown",
    "Estimate",
    "IncrementalOcclusion",
    "LayerCost",
    "UnsupportedModel",
    "drill_down",
    "estimate",
    "per_pixel_mean",
]
