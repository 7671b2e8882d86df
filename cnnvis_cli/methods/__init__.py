"""Registry of explanation methods: name -> class and one-line summary.

Method modules are imported lazily (they import NumPy and, when run, TensorFlow), so listing
the commands in ``cnnvis --help`` stays instant. Adding a method is one file in this folder plus
one line here.
"""

from __future__ import annotations

import importlib
from typing import NamedTuple


class Entry(NamedTuple):
    target: str  # "module:Class"
    summary: str  # one line for `cnnvis --help`


_REGISTRY: dict[str, Entry] = {
    "gradcam": Entry(
        "cnnvis_cli.methods.gradcam:GradCAM",
        "Grad-CAM heatmaps (Selvaraju et al., 2017): where the class evidence is.",
    ),
    "occlusion": Entry(
        "cnnvis_cli.methods.occlusion:Occlusion",
        "Occlusion sensitivity (Zeiler & Fergus, 2014): how much the class score drops when a "
        "patch is hidden.",
    ),
    "guided": Entry(
        "cnnvis_cli.methods.guided:GuidedBackprop",
        "Guided back-propagation (Springenberg et al., 2015): pixel-level gradient detail.",
    ),
    "guided-gradcam": Entry(
        "cnnvis_cli.methods.guided:GuidedGradCAM",
        "Guided Grad-CAM (Selvaraju et al., 2017): guided back-propagation x Grad-CAM.",
    ),
    "gradcam-pp": Entry(
        "cnnvis_cli.methods.gradcam_pp:GradCAMPlusPlus",
        "Grad-CAM++ (Chattopadhay et al., 2018): better coverage when a class appears several "
        "times.",
    ),
    "hirescam": Entry(
        "cnnvis_cli.methods.hirescam:HiResCAM",
        "HiResCAM (Draelos & Carin, 2020): gradient x activation, faithful for CAM-style models.",
    ),
    "layercam": Entry(
        "cnnvis_cli.methods.layercam:LayerCAM",
        "LayerCAM (Jiang et al., 2021): positive gradient x activation; good on early layers.",
    ),
    "saliency": Entry(
        "cnnvis_cli.methods.saliency:Saliency",
        "Vanilla gradient saliency (Simonyan et al., 2014): max |d score / d pixel| over channels.",
    ),
    "smoothgrad": Entry(
        "cnnvis_cli.methods.smoothgrad:SmoothGrad",
        "SmoothGrad (Smilkov et al., 2017): saliency averaged over noisy copies.",
    ),
    "integrated-gradients": Entry(
        "cnnvis_cli.methods.integrated_gradients:IntegratedGradients",
        "Integrated Gradients (Sundararajan et al., 2017): gradients integrated from a baseline; "
        "reports the completeness gap.",
    ),
    "scorecam": Entry(
        "cnnvis_cli.methods.scorecam:ScoreCAM",
        "Score-CAM (Wang et al., 2020): channels weighted by the class score of the input masked "
        "with them; gradient-free.",
    ),
    "xgradcam": Entry(
        "cnnvis_cli.methods.xgradcam:XGradCAM",
        "XGrad-CAM (Fu et al., 2020): channels weighted by gradient x activation over activation.",
    ),
    "eigencam": Entry(
        "cnnvis_cli.methods.eigencam:EigenCAM",
        "Eigen-CAM (Muhammad & Yeasin, 2020): first principal component of a layer; "
        "class-agnostic, no gradients.",
    ),
    "eigengradcam": Entry(
        "cnnvis_cli.methods.eigencam:EigenGradCAM",
        "Eigen-Grad-CAM: first principal component of gradient x activation (class-specific).",
    ),
    "ablationcam": Entry(
        "cnnvis_cli.methods.ablationcam:AblationCAM",
        "Ablation-CAM (Desai & Ramaswamy, 2020): channels weighted by the score drop when each is "
        "zeroed; gradient-free.",
    ),
    "gradcam-elementwise": Entry(
        "cnnvis_cli.methods.gradcam_elementwise:GradCAMElementWise",
        "Grad-CAM element-wise (pytorch-grad-cam): sum of positive gradient x activation.",
    ),
    "gradient-input": Entry(
        "cnnvis_cli.methods.gradient_input:GradientInput",
        "Gradient x input (Shrikumar et al., 2016): the model input times its gradient.",
    ),
    "vargrad": Entry(
        "cnnvis_cli.methods.vargrad:VarGrad",
        "VarGrad (Adebayo et al., 2018): variance of the gradients of noisy copies.",
    ),
    "squaregrad": Entry(
        "cnnvis_cli.methods.vargrad:SquareGrad",
        "SquareGrad (Hooker et al., 2019): mean squared gradient of noisy copies.",
    ),
    "deconvnet": Entry(
        "cnnvis_cli.methods.deconvnet:DeconvNet",
        "DeconvNet (Zeiler & Fergus, 2014): input gradients through ReLUs that pass positive "
        "gradients.",
    ),
    "gradient-shap": Entry(
        "cnnvis_cli.methods.gradient_shap:GradientShap",
        "GradientSHAP / expected gradients (Lundberg & Lee, 2017; Erion et al.): gradients "
        "averaged over random baselines; reports the completeness gap.",
    ),
    "rise": Entry(
        "cnnvis_cli.methods.rise:Rise",
        "RISE (Petsiuk et al., 2018): random masks weighted by the class probability they keep; "
        "black-box.",
    ),
    "kernelshap": Entry(
        "cnnvis_cli.methods.kernelshap:KernelShap",
        "KernelSHAP (Lundberg & Lee, 2017): Shapley values of superpixels from a weighted "
        "regression; black-box.",
    ),
    "lime": Entry(
        "cnnvis_cli.methods.lime:Lime",
        "LIME (Ribeiro et al., 2016): a locally weighted linear model over superpixels; black-box.",
    ),
    "sobol": Entry(
        "cnnvis_cli.methods.sobol:Sobol",
        "Sobol attribution (Fel et al., 2021): total-order variance share of each mask cell; "
        "black-box.",
    ),
    "compare": Entry(
        "cnnvis_cli.methods.compare:Compare",
        "One labelled panel per image: input | Grad-CAM | occlusion | guided Grad-CAM (or "
        "--methods).",
    ),
}


def method_names() -> list[str]:
    """Names of the registered methods, in registration order."""
    return list(_REGISTRY)


def method_summary(name: str) -> str:
    """The one-line summary of a registered method."""
    return _REGISTRY[name].summary


def get_method(name: str) -> type:
    """The Method subclass registered under ``name``."""
    module_name, _, class_name = _REGISTRY[name].target.partition(":")
    return getattr(importlib.import_module(module_name), class_name)
