"""Eigen-CAM and Eigen-Grad-CAM: the first principal component of a layer's activations.

Muhammad & Yeasin, "Eigen-CAM: Class Activation Map using Principal Components", IJCNN 2020.

For the activations A (h x w x K) of a layer, reshaped to the (h*w x K) matrix M = U S V^T::

    Eigen-CAM:       L = ReLU( M v_1 )                 (v_1: first right singular vector)
    Eigen-Grad-CAM:  L = ReLU( (G * A) v_1 )           (the same on gradient x activation)

Eigen-CAM needs no gradients and is **class-agnostic**: it shows the dominant pattern of the
layer, the same map for every target (``--class`` and ``--top-k`` only change the reported
classes). Eigen-Grad-CAM (pytorch-grad-cam's ``EigenGradCAM``) projects g * A with
g = dy^c/dA (the logit's gradient), so it depends on the class.

Sign and centring (where implementations differ): SVD leaves the sign of v_1 arbitrary, so the
projection is signed to sum to >= 0 (``cam.first_component``: the map mostly points the way it
is drawn). M is *not* mean-centred: that is the paper's projection, and with non-negative
activations v_1 can be chosen non-negative, so the map is non-negative. pytorch-grad-cam's
``get_2d_projection`` centres each column of M before the SVD and keeps whatever sign LAPACK
returns (its issue #315): a centred projection sums to exactly 0, so its sign cannot be fixed by
this rule, and its ReLU keeps one half or the other depending on the build. The SVD
(``tf.linalg.svd``) runs inside the compiled function. ``--eigen-smooth`` changes nothing here
(the map already is a principal component). The map is min-max normalized to [0, 1].
"""

from __future__ import annotations

from typing import Any

from cnnvis_cli.core.tf import tf_and_keras
from cnnvis_cli.methods.cam import BaseCAM, first_component


class EigenCAM(BaseCAM):
    """Eigen-CAM: the first principal component of the activations (no gradients)."""

    name = "eigencam"
    title = "Eigen-CAM"
    uses_gradients = False

    def notes(self) -> list[str]:
        if self.top_k > 1 or self.targets.class_index is not None:
            return ["Eigen-CAM is class-agnostic: every target gets the same map"]
        return []

    def cam(self, features: Any, gradients: Any) -> Any:
        tf, _ = tf_and_keras()
        return tf.nn.relu(first_component(features))


class EigenGradCAM(BaseCAM):
    """Eigen-Grad-CAM: the first principal component of gradient x activation."""

    name = "eigengradcam"
    title = "Eigen-Grad-CAM"

    def cam(self, features: Any, gradients: Any) -> Any:
        tf, _ = tf_and_keras()
        return tf.nn.relu(first_component(gradients * features))
