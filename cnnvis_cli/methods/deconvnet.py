"""DeconvNet: input gradients whose ReLUs pass the positive part of the backward signal.

Zeiler & Fergus, "Visualizing and Understanding Convolutional Networks", ECCV 2014.

The map is the gradient of the class score y^c (the logit, before a softmax or sigmoid) with
respect to the raw input pixels, except that every ReLU back-propagates the positive part of the
*upstream gradient*, whatever its forward input was (the deconvnet "rectification" of the
reconstruction signal). For an upstream gradient g = dy^c / df at a ReLU f(x) = max(x, 0)::

    plain backprop:   dy^c/dx = [x > 0] * g
    DeconvNet:        dy^c/dx = [g > 0] * g          (= ReLU(g))
    guided backprop:  dy^c/dx = [x > 0] * [g > 0] * g

Clipped or thresholded ReLUs (``relu6``, ``ReLU(max_value=6)``, ``ReLU(threshold=t)``) get the
same rule (the forward input is ignored). Other nonlinearities (leaky ReLU, PReLU, ELU, swish,
GELU, tanh, ...) keep their ordinary gradient and are reported in ``unguided_layers``, as for
guided back-propagation; max-pooling back-propagates to the forward argmax (the paper's
"switches"), which is TensorFlow's ordinary max-pool gradient. The ReLU swapping is guided
back-propagation's (``guided.SwappedReLUs``) with this backward rule; Xplique's ``DeconvNet``
(``deconv_relu_policy``: ``ReLU(grad)``) is the reference.

The map is the signed h x w x c gradient, not normalised (drawn centred on grey, like guided
back-propagation's).
"""

from __future__ import annotations

from typing import Any, ClassVar

from cnnvis_cli.core.tf import tf_and_keras
from cnnvis_cli.methods.guided import BackwardRule, GuidedBackprop


def deconvnet_rule(x: Any, upstream: Any, gate: Any) -> Any:
    """DeconvNet's ReLU backward pass: ReLU(g), whatever the forward input ``x``."""
    tf, _ = tf_and_keras()
    return tf.nn.relu(upstream)


class DeconvNet(GuidedBackprop):
    """DeconvNet: signed input gradients through ReLUs that pass ReLU(upstream)."""

    name = "deconvnet"
    title = "DeconvNet"
    rule: ClassVar[BackwardRule] = staticmethod(deconvnet_rule)
