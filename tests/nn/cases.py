"""Small networks mixing every layer type, and targets for every loss (float64, fixed seeds)."""

import numpy as np

from kfqn_ref import nn

#: Minibatch size of the test networks.
BATCH = 4


def mlp_all_activations():
    """Dense layers (one without bias) separated by every activation."""
    layers = [
        nn.Dense(5, 4), nn.ReLU(),
        nn.Dense(4, 4), nn.Sigmoid(),
        nn.Dense(4, 3, bias=False), nn.Tanh(),
        nn.Dense(3, 4), nn.Softplus(),
        nn.Dense(4, 3), nn.Identity(),
        nn.Dense(3, 3),
    ]  # fmt: skip
    return layers, (BATCH, 5)


def cnn_strides_paddings_dilation_pooling():
    """Conv with stride and padding; conv with per-axis kernel, stride, padding and dilation;
    max pooling with padding; 1x1 conv without bias; average pooling with padding; dense head."""
    layers = [
        nn.Conv2d(2, 3, 3, stride=2, padding=1), nn.Tanh(),
        nn.Conv2d(3, 4, (2, 3), stride=(1, 2), padding=(1, 0), dilation=(2, 1)), nn.ReLU(),
        nn.MaxPool2d(2, stride=1, padding=1),
        nn.Conv2d(4, 2, 1, bias=False), nn.Softplus(),
        nn.AvgPool2d(2, padding=1),
        nn.Flatten(),
        nn.Dense(16, 5), nn.Sigmoid(),
        nn.Dense(5, 3),
    ]  # fmt: skip
    return layers, (BATCH, 2, 9, 8)


def cnn_kernel_covers_image():
    """A conv whose kernel covers the image (one output position, T = 1), then a dense layer."""
    layers = [nn.Conv2d(2, 3, 3), nn.Tanh(), nn.Flatten(), nn.Dense(3, 3)]
    return layers, (BATCH, 2, 3, 3)


NETS = [mlp_all_activations, cnn_strides_paddings_dilation_pooling, cnn_kernel_covers_image]


def squared_error_targets(rng, n, k):
    return nn.SquaredError(), rng.standard_normal((n, k))


def soft_binary_targets(rng, n, k):
    return nn.SigmoidCrossEntropy(), rng.random((n, k))


def class_index_targets(rng, n, k):
    return nn.SoftmaxCrossEntropy(), rng.integers(0, k, size=n)


def probability_targets(rng, n, k):
    e = np.exp(rng.standard_normal((n, k)))
    return nn.SoftmaxCrossEntropy(), e / e.sum(axis=1, keepdims=True)


TARGETS = [squared_error_targets, soft_binary_targets, class_index_targets, probability_targets]


def build(net, targets, seed=0):
    """A float64 model of ``net`` with loss and inputs/targets drawn from ``seed``."""
    rng = np.random.default_rng(seed)
    layers, input_shape = net()
    X = rng.standard_normal(input_shape)
    model_probe = nn.Sequential(layers, nn.SquaredError(), seed=seed)
    k = model_probe.output_shape(input_shape)[1]
    loss, T = targets(rng, input_shape[0], k)
    return nn.Sequential(layers, loss, seed=seed), X, T
