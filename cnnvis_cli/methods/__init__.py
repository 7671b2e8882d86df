"""Registry of explanation methods: name -> class, imported lazily (methods import TensorFlow)."""

from __future__ import annotations

import importlib

_REGISTRY: dict[str, str] = {
    "gradcam": "cnnvis_cli.methods.gradcam:GradCAM",
    "occlusion": "cnnvis_cli.methods.occlusion:Occlusion",
    "guided": "cnnvis_cli.methods.guided:GuidedBackprop",
    "guided-gradcam": "cnnvis_cli.methods.guided:GuidedGradCAM",
    "gradcam-pp": "cnnvis_cli.methods.gradcam_pp:GradCAMPlusPlus",
    "hirescam": "cnnvis_cli.methods.hirescam:HiResCAM",
    "layercam": "cnnvis_cli.methods.layercam:LayerCAM",
    "saliency": "cnnvis_cli.methods.saliency:Saliency",
    "smoothgrad": "cnnvis_cli.methods.smoothgrad:SmoothGrad",
    "integrated-gradients": "cnnvis_cli.methods.integrated_gradients:IntegratedGradients",
    "scorecam": "cnnvis_cli.methods.scorecam:ScoreCAM",
    "compare": "cnnvis_cli.methods.compare:Compare",
}


def method_names() -> list[str]:
    """Names of the registered methods, in registration order."""
    return list(_REGISTRY)


def get_method(name: str) -> type:
    """The Method subclass registered under ``name``."""
    module_name, _, class_name = _REGISTRY[name].partition(":")
    return getattr(importlib.import_module(module_name), class_name)
