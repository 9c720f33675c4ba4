"""Hand-written layers, losses and the ``Sequential`` model (forward and backward side by side).

Conventions (homogeneous weights ``[W | b]``, records ``a~``, ``h``, ``g``, loss reduction):
``docs/conventions.md``; equations and their tests: ``docs/nn.md``.
"""

from kfqn_ref.nn.im2col import col2im, im2col
from kfqn_ref.nn.layers import (
    Activation,
    AffineBackward,
    AffineCache,
    AvgPool2d,
    Conv2d,
    Dense,
    Flatten,
    Identity,
    Layer,
    MaxPool2d,
    ReLU,
    Sigmoid,
    Softplus,
    Tanh,
    TrainableLayer,
)
from kfqn_ref.nn.losses import Loss, SigmoidCrossEntropy, SoftmaxCrossEntropy, SquaredError
from kfqn_ref.nn.model import ForwardBackward, ForwardPass, LayerRecord, Sequential

__all__ = [
    "Activation",
    "AffineBackward",
    "AffineCache",
    "AvgPool2d",
    "Conv2d",
    "Dense",
    "Flatten",
    "ForwardBackward",
    "ForwardPass",
    "Identity",
    "Layer",
    "LayerRecord",
    "Loss",
    "MaxPool2d",
    "ReLU",
    "Sequential",
    "Sigmoid",
    "SigmoidCrossEntropy",
    "SoftmaxCrossEntropy",
    "Softplus",
    "SquaredError",
    "Tanh",
    "TrainableLayer",
    "col2im",
    "im2col",
]
