"""Independent reference implementations for the nn tests.

Nothing here calls the forward or backward code under test: only the layers' hyperparameters
(``kernel_size``, ``stride``, ...) and the homogeneous weights are read.

* :func:`reference_output` / :func:`reference_loss`: a functional forward written with
  ``autograd.numpy``, differentiated by autograd. Convolution is a sum over kernel offsets of
  strided slices times the kernel slice (no unfold, no homogeneous patch matrix); pooling reduces
  over offsets with ``maximum`` / ``+``; activations and losses use textbook formulas.
* :func:`naive_conv2d`, :func:`naive_patches`, :func:`naive_pool2d`: nested Python loops over every
  index, straight from the definitions.
"""

import autograd.numpy as anp
import numpy as np
from autograd.scipy.special import logsumexp

from kfqn_ref import nn


def output_length(size, kernel, stride, padding, dilation):
    """``floor((size + 2 p - d (k - 1) - 1) / s) + 1`` (conventions §2)."""
    return (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


def _offset_windows(x_padded, kernel, stride, dilation, out_shape):
    """Yield, per kernel offset (ki, kj), the strided slice of the padded input it multiplies."""
    for ki in range(kernel[0]):
        for kj in range(kernel[1]):
            rows = slice(
                ki * dilation[0], ki * dilation[0] + stride[0] * (out_shape[0] - 1) + 1, stride[0]
            )
            cols = slice(
                kj * dilation[1], kj * dilation[1] + stride[1] * (out_shape[1] - 1) + 1, stride[1]
            )
            yield ki, kj, x_padded[:, :, rows, cols]


def _pad(x, padding, value):
    widths = ((0, 0), (0, 0), (padding[0], padding[0]), (padding[1], padding[1]))
    return anp.pad(x, widths, mode="constant", constant_values=value)


def _out_shape(x, kernel, stride, padding, dilation):
    return tuple(
        output_length(x.shape[2 + a], kernel[a], stride[a], padding[a], dilation[a])
        for a in range(2)
    )


def split_weight(weight, has_bias):
    """``W~ = [W | b]`` -> ``(W, b)`` (``b`` None without bias)."""
    if has_bias:
        return weight[:, :-1], weight[:, -1]
    return weight, None


def dense(layer, weight, x):
    w, b = split_weight(weight, layer.has_bias)
    h = anp.dot(x, w.T)
    return h if b is None else h + b


def conv2d(layer, weight, x):
    """Cross-correlation as a sum over kernel offsets: ``y = sum_{ki,kj} K[:, :, ki, kj] . win``."""
    w, b = split_weight(weight, layer.has_bias)
    kh, kw = layer.kernel_size
    kernel = anp.reshape(w, (layer.c_out, layer.c_in, kh, kw))
    out_shape = _out_shape(x, layer.kernel_size, layer.stride, layer.padding, layer.dilation)
    padded = _pad(x, layer.padding, 0.0)
    y = 0.0
    for ki, kj, window in _offset_windows(
        padded, layer.kernel_size, layer.stride, layer.dilation, out_shape
    ):
        y = y + anp.einsum("nchw,oc->nohw", window, kernel[:, :, ki, kj])
    return y if b is None else y + b[None, :, None, None]


def max_pool(layer, x):
    out_shape = _out_shape(x, layer.kernel_size, layer.stride, layer.padding, (1, 1))
    padded = _pad(x, layer.padding, -np.inf)
    windows = [
        w for _, _, w in _offset_windows(padded, layer.kernel_size, layer.stride, (1, 1), out_shape)
    ]
    y = windows[0]
    for window in windows[1:]:
        y = anp.maximum(y, window)
    return y


def avg_pool(layer, x):
    out_shape = _out_shape(x, layer.kernel_size, layer.stride, layer.padding, (1, 1))
    padded = _pad(x, layer.padding, 0.0)
    windows = [
        w for _, _, w in _offset_windows(padded, layer.kernel_size, layer.stride, (1, 1), out_shape)
    ]
    return sum(windows[1:], windows[0]) / len(windows)


#: Reference forward of every non-trainable layer type, keyed by class.
ELEMENTWISE_AND_SHAPE = {
    nn.Identity: lambda layer, x: x,
    nn.ReLU: lambda layer, x: anp.maximum(x, 0.0),
    nn.Sigmoid: lambda layer, x: 1.0 / (1.0 + anp.exp(-x)),
    nn.Tanh: lambda layer, x: anp.tanh(x),
    nn.Softplus: lambda layer, x: anp.log1p(anp.exp(x)),
    nn.Flatten: lambda layer, x: anp.reshape(x, (x.shape[0], -1)),
    nn.MaxPool2d: max_pool,
    nn.AvgPool2d: avg_pool,
}
#: Reference pre-activation of every trainable layer type, keyed by class.
AFFINE = {nn.Dense: dense, nn.Conv2d: conv2d}


def reference_output(layers, weights, X, deltas=None):
    """Network output; optional ``deltas[j]`` is added to the j-th trainable pre-activation."""
    x = X
    j = 0
    for layer in layers:
        if layer.trainable:
            x = AFFINE[type(layer)](layer, weights[j], x)
            if deltas is not None:
                x = x + deltas[j]
            j += 1
        else:
            x = ELEMENTWISE_AND_SHAPE[type(layer)](layer, x)
    return x


def reference_preactivations(layers, weights, X):
    """Pre-activations of the trainable layers in the layer's output layout (conv: NCHW)."""
    hs = []
    x = X
    j = 0
    for layer in layers:
        if layer.trainable:
            x = AFFINE[type(layer)](layer, weights[j], x)
            hs.append(x)
            j += 1
        else:
            x = ELEMENTWISE_AND_SHAPE[type(layer)](layer, x)
    return hs


def squared_error(z, t):
    return 0.5 * anp.sum((z - t) ** 2) / z.shape[0]


def sigmoid_cross_entropy(z, t):
    s = 1.0 / (1.0 + anp.exp(-z))
    return -anp.sum(t * anp.log(s) + (1.0 - t) * anp.log(1.0 - s)) / z.shape[0]


def softmax_cross_entropy(z, t):
    """``-sum_n t_n^T log softmax(z_n) / N``; integer ``t`` are class indices."""
    if t.ndim == 1:
        t = np.eye(z.shape[1])[t]
    log_p = z - logsumexp(z, axis=1, keepdims=True)
    return -anp.sum(t * log_p) / z.shape[0]


#: Reference mean loss of every loss type, keyed by class.
LOSSES = {
    nn.SquaredError: squared_error,
    nn.SigmoidCrossEntropy: sigmoid_cross_entropy,
    nn.SoftmaxCrossEntropy: softmax_cross_entropy,
}


def reference_loss(model, weights, X, T, deltas=None):
    return LOSSES[type(model.loss)](reference_output(model.layers, weights, X, deltas), T)


def naive_patches(x, kernel, stride, padding, dilation):
    """``a[n, i W_out + j, (c k_h + ki) k_w + kj] = x[n, c, i s + ki d - p, j s + kj d - p]``.

    Entries outside the input (the padding) are 0.
    """
    n_samples, channels, height, width = x.shape
    out_h = output_length(height, kernel[0], stride[0], padding[0], dilation[0])
    out_w = output_length(width, kernel[1], stride[1], padding[1], dilation[1])
    patches = np.zeros((n_samples, out_h * out_w, channels * kernel[0] * kernel[1]), dtype=x.dtype)
    for n in range(n_samples):
        for i in range(out_h):
            for j in range(out_w):
                for c in range(channels):
                    for ki in range(kernel[0]):
                        for kj in range(kernel[1]):
                            r = i * stride[0] + ki * dilation[0] - padding[0]
                            q = j * stride[1] + kj * dilation[1] - padding[1]
                            if 0 <= r < height and 0 <= q < width:
                                d = (c * kernel[0] + ki) * kernel[1] + kj
                                patches[n, i * out_w + j, d] = x[n, c, r, q]
    return patches


def naive_conv2d(x, kernel_weights, bias, stride, padding, dilation):
    """``y[n, o, i, j] = b[o] + sum_{c,ki,kj} K[o,c,ki,kj] x[n,c,i s+ki d-p,j s+kj d-p]``

    Entries outside the input (the padding) are 0.
    """
    n_samples, channels, height, width = x.shape
    c_out, _, kh, kw = kernel_weights.shape
    out_h = output_length(height, kh, stride[0], padding[0], dilation[0])
    out_w = output_length(width, kw, stride[1], padding[1], dilation[1])
    y = np.zeros((n_samples, c_out, out_h, out_w))
    for n in range(n_samples):
        for o in range(c_out):
            for i in range(out_h):
                for j in range(out_w):
                    total = 0.0 if bias is None else bias[o]
                    for c in range(channels):
                        for ki in range(kh):
                            for kj in range(kw):
                                r = i * stride[0] + ki * dilation[0] - padding[0]
                                q = j * stride[1] + kj * dilation[1] - padding[1]
                                if 0 <= r < height and 0 <= q < width:
                                    total += kernel_weights[o, c, ki, kj] * x[n, c, r, q]
                    y[n, o, i, j] = total
    return y


def naive_pool2d(x, kernel, stride, padding, reduce):
    """``y[n, c, i, j] = reduce`` of the window entries inside the input, with padding entries given
    as ``-inf`` for max and 0 for mean (``reduce`` gets the full ``k_h k_w`` list)."""
    n_samples, channels, height, width = x.shape
    out_h = output_length(height, kernel[0], stride[0], padding[0], 1)
    out_w = output_length(width, kernel[1], stride[1], padding[1], 1)
    pad_value = -np.inf if reduce is max else 0.0
    y = np.zeros((n_samples, channels, out_h, out_w))
    for n in range(n_samples):
        for c in range(channels):
            for i in range(out_h):
                for j in range(out_w):
                    entries = []
                    for ki in range(kernel[0]):
                        for kj in range(kernel[1]):
                            r, q = i * stride[0] + ki - padding[0], j * stride[1] + kj - padding[1]
                            inside = 0 <= r < height and 0 <= q < width
                            entries.append(x[n, c, r, q] if inside else pad_value)
                    y[n, c, i, j] = reduce(entries)
    return y


def mean(entries):
    return sum(entries) / len(entries)


def image_to_record(y):
    """``(N, C, H_out, W_out)`` -> ``(N, P, C)`` with ``p = i W_out + j`` (conventions §3)."""
    return np.transpose(y, (0, 2, 3, 1)).reshape(y.shape[0], -1, y.shape[1])
