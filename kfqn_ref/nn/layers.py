"""Hand-written layers, each with its forward and its backward side by side.

Every layer is a map applied sample by sample to a minibatch (first axis ``N``). Layers hold only
hyperparameters: a trainable layer's parameters are passed in (``weight``, the homogeneous matrix
``W~ = [W | b]`` of conventions §3) and nothing is accumulated between calls, so calling
``backward`` twice gives the same result.

Protocol
--------
Non-trainable layers (activations, pooling, :class:`Flatten`):

* ``output_shape(input_shape, where)`` -> the output shape; ``ValueError`` naming ``where`` if the
  input shape is wrong for the layer.
* ``apply(x, xp)`` -> ``y``: the forward as a pure function, written so that it also runs with
  ``xp = autograd.numpy`` (no in-place writes).
* ``forward(x)`` -> ``(y, cache)``; ``backward(cache, dy)`` -> ``dx = J^T dy``, the vector-Jacobian
  product of the forward at the cached point, sample by sample.

Trainable layers (:class:`Dense`, :class:`Conv2d`; ``trainable = True``) take the weight first:
``apply(weight, x, xp)``, ``forward(weight, x)`` -> ``(y, AffineCache)`` and
``backward(weight, cache, dy, ...)`` -> :class:`AffineBackward` ``(input_gradient, g, grad)``.
Their pre-activation is linear in the homogeneous input, ``h = W~ a~`` per sample (and position), so
with per-sample output gradients ``g_n = dl_n/dh_n``:

    dl_n/da_n = W^T g_n,          df/dW~ = (1/N) sum_n g_n a~_n^T          (f = (1/N) sum_n l_n).

A direct ``forward`` checks kind, dtype and shape of ``x`` (and of a trainable layer's weight) in
O(1), never reading an entry, then calls ``forward_unchecked``, the core ``Sequential`` calls.

Equations, shapes and the tests that check them: ``docs/nn.md``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from kfqn_ref._checks import check_bool, check_float_dtype, check_int
from kfqn_ref.backend import Array, xp_of
from kfqn_ref.nn.im2col import (
    PatchGeometry,
    columns_to_patches,
    extract_patches,
    fold_patches,
    patches_to_columns,
)


def _append_one(x, xp):
    """``[x, 1]`` along the last axis: ``(..., D)`` -> ``(..., D + 1)`` (one concatenate)."""
    return xp.concatenate([x, xp.ones(x.shape[:-1] + (1,), dtype=x.dtype)], axis=-1)


def _rowwise_matmul(u, m):
    """``u @ m`` over the last axis of ``u`` as ONE matrix product: ``(..., p) @ (p, q)``."""
    rows = u.reshape((-1, u.shape[-1])) @ m
    return rows.reshape(tuple(u.shape[:-1]) + (m.shape[-1],))


def _fits(layer, x) -> None:
    """O(1): ``x`` is a float64/float32 array (``TypeError``) of a shape ``layer`` takes."""
    name = type(layer).__name__
    check_float_dtype(f"{name}: input x", x)
    layer.output_shape(x.shape, name)


def sigmoid_pair(x: Array, xp=None) -> tuple[Array, Array]:
    """Return ``(sigmoid(x), sigmoid(-x))``, ``sigmoid(x) = 1 / (1 + exp(-x))``, to a few ulp.

    With ``e = exp(-|x|)`` in ``(0, 1]``: ``(1 / (1 + e), e / (1 + e))`` for ``x >= 0``, swapped
    for ``x < 0`` (neither is ``1 - sigmoid(+-x)``: see ``docs/nn.md`` §5). Their product is
    ``sigmoid'(x)``. Pure (no in-place writes): it also runs with ``xp = autograd.numpy``.
    """
    xp = xp_of(x) if xp is None else xp
    non_negative, e, one_plus_e = _sigmoid_parts(x, xp)
    large, small = 1 / one_plus_e, e / one_plus_e
    return xp.where(non_negative, large, small), xp.where(non_negative, small, large)


def _sigmoid_parts(x: Array, xp):
    """``(x >= 0, e, 1 + e)`` with ``e = exp(-|x|)``, written with ``where`` (autograd-safe)."""
    non_negative = x >= 0
    e = xp.exp(xp.where(non_negative, -x, x))
    return non_negative, e, 1 + e


def softplus(x: Array) -> Array:
    """``softplus(x) = log(1 + exp(x)) = max(x, 0) + log1p(exp(-|x|))``, elementwise, no overflow.

    The right-hand side is the formula ``numpy.logaddexp(0, x)`` evaluates for each entry, written
    with ufuncs that NumPy runs as SIMD loops (``logaddexp`` is a scalar loop, several times
    slower); entries agree with it to an ulp or so. For plain arrays only: autograd takes the
    derivative of ``|x|`` at ``x = 0`` as 0, so the second derivative of this form at 0 comes out
    0 instead of ``1/4``; the pure forms (``apply``, ``mean_value``) keep ``logaddexp``.
    """
    xp = xp_of(x)
    return xp.maximum(x, 0) + xp.log1p(xp.exp(-xp.abs(x)))


def sigmoid(x: Array, xp=None) -> Array:
    """``sigmoid(x) = 1 / (1 + exp(-x))``: the first of :func:`sigmoid_pair`, bit for bit.

    It forms and selects only that half (one ``where`` instead of two).
    """
    xp = xp_of(x) if xp is None else xp
    non_negative, e, one_plus_e = _sigmoid_parts(x, xp)
    return xp.where(non_negative, 1 / one_plus_e, e / one_plus_e)


# --- Base classes ---


class Layer:
    """A layer without parameters (see the module docstring for the protocol)."""

    trainable = False

    def output_shape(self, input_shape: tuple, where: str) -> tuple:
        """Output shape for ``input_shape``; ``ValueError`` naming ``where`` if it does not fit."""
        raise NotImplementedError

    def apply(self, x: Array, xp) -> Array:
        """Return ``y = layer(x)``, the forward as a pure function (autograd-compatible)."""
        raise NotImplementedError

    def forward(self, x: Array) -> tuple:
        """Return ``(y, cache)``; ``cache`` holds what :meth:`backward` needs (O(1) checks of x)."""
        _fits(self, x)
        return self.forward_unchecked(x)

    def forward_unchecked(self, x: Array) -> tuple:
        """As :meth:`forward`, without argument checks (for trusted callers)."""
        raise NotImplementedError

    def backward(self, cache, dy: Array) -> Array:
        """Return ``dx = J^T dy`` (shaped as the input) at the point cached by :meth:`forward`."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


@dataclass(frozen=True, eq=False)
class AffineCache:
    """What a trainable layer's forward keeps: its record arrays ``a~`` and ``h`` (conventions §4).

    Dense: ``a`` ``(N, d_in + 1)``, ``h`` ``(N, d_out)``. Conv2d: ``a``
    ``(N, P, c_in k_h k_w + 1)``, ``h`` ``(N, P, c_out)``. ``input_shape`` is the shape of the layer
    input ``x``.
    """

    a: object
    h: object
    input_shape: tuple


class AffineBackward(NamedTuple):
    """Result of a trainable layer's backward.

    ``input_gradient``: ``dx``, shaped like the input (None when not requested);
    ``g``: per-sample pre-activation gradients in record form (``(N, d_out)`` or ``(N, P, c_out)``);
    ``grad``: ``(1/N) sum_n sum_p g_{n,p} a~_{n,p}^T``, shape ``weight_shape`` (None when not
    requested).
    """

    input_gradient: object
    g: object
    grad: object


class TrainableLayer(Layer):
    """A layer ``h = W~ a~`` with homogeneous weight ``W~`` of shape :attr:`weight_shape`.

    Subclasses set ``weight_shape`` (``(d_out, fan_in + 1)`` with a bias, ``(d_out, fan_in)``
    without), ``has_bias`` and ``fan_in``, and define ``homogeneous_input``, ``apply``,
    ``forward_unchecked`` and the layout changes ``_to_record`` / ``_input_from_rows`` used by
    :meth:`backward`.
    """

    trainable = True
    weight_shape: tuple[int, int]
    has_bias: bool
    fan_in: int

    def init_weight(self, rng: np.random.Generator, dtype) -> Array:
        """Draw ``W~``, every entry (``W`` and ``b``) i.i.d. ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))``.

        One ``rng.uniform`` call of shape :attr:`weight_shape` in float64 (row-major, so the bias of
        row ``i`` is drawn right after that row's weights), then rounded to ``dtype``. The bound is
        PyTorch's default for ``nn.Linear``/``nn.Conv2d`` (``fan_in = d_in`` or ``c_in k_h k_w``).
        """
        bound = 1.0 / math.sqrt(self.fan_in)
        return rng.uniform(-bound, bound, size=self.weight_shape).astype(dtype, copy=False)

    def homogeneous_input(self, x: Array, xp=None) -> Array:
        """Return ``a~`` for input ``x`` (see the subclass)."""
        raise NotImplementedError

    def forward(self, weight: Array, x: Array) -> tuple[Array, AffineCache]:
        """Return ``(y, AffineCache)`` after O(1) checks of ``x`` and ``weight`` (no entry read).

        ``x`` must fit the layer; ``weight`` must have :attr:`weight_shape` and ``x``'s dtype.
        """
        _fits(self, x)
        name = type(self).__name__
        check_float_dtype(f"{name}: weight", weight)
        if weight.dtype != x.dtype:
            raise TypeError(
                f"{name}: weight has dtype {weight.dtype} but input x has dtype {x.dtype} "
                "(mixed dtypes are not cast silently; convert with .astype first)"
            )
        if tuple(weight.shape) != self.weight_shape:
            raise ValueError(
                f"{name}: weight must have shape {self.weight_shape} (homogeneous [W | b]), "
                f"got {tuple(weight.shape)}"
            )
        return self.forward_unchecked(weight, x)

    def forward_unchecked(self, weight: Array, x: Array) -> tuple[Array, AffineCache]:
        """As :meth:`forward`, without argument checks (for trusted callers)."""
        raise NotImplementedError

    def _to_record(self, dy):
        """Output-layout gradient ``dy`` -> record layout ``g`` (``h``'s layout)."""
        raise NotImplementedError

    def _input_from_rows(self, rows, input_shape):
        """Gradient w.r.t. the rows of ``a`` (bias column dropped) -> gradient w.r.t. ``x``."""
        raise NotImplementedError

    def backward(
        self,
        weight: Array,
        cache: AffineCache,
        dy: Array,
        *,
        input_gradient: bool = True,
        weight_gradient: bool = True,
    ) -> AffineBackward:
        """Backward of ``h = W~ a~``: returns :class:`AffineBackward` ``(dx, g, grad)``.

        ``g = dy`` in record layout; ``grad = (1/N) sum_{n,p} g_{n,p} a~_{n,p}^T`` as ONE matrix
        product ``g^T a~ / N`` over all rows ``(n, p)``; ``da_{n,p} = W^T g_{n,p}`` (the bias
        column of ``W~`` has no input), folded back to the input layout. With per-sample
        ``dy = dl_n/dy_n``, ``g`` is the record's per-sample ``g``. Skip ``dx`` (first layer) or
        ``grad`` (K-BFGS's second pass) with the flags.
        """
        g = self._to_record(dy)
        grad = None
        if weight_gradient:
            a = cache.a
            grad = g.reshape((-1, g.shape[-1])).T @ a.reshape((-1, a.shape[-1]))
            grad /= a.shape[0]
        dx = None
        if input_gradient:
            dx = self._input_from_rows(
                _rowwise_matmul(g, weight[:, : self.fan_in]), cache.input_shape
            )
        return AffineBackward(input_gradient=dx, g=g, grad=grad)


# --- Dense ---


class Dense(TrainableLayer):
    """Fully connected layer ``h_n = W~ a~_n = W x_n + b``.

    Shapes: ``x`` ``(N, d_in)``, ``a~ = [x, 1]`` ``(N, d_in + 1)``, ``W~ = [W | b]``
    ``(d_out, d_in + 1)`` (bias last), ``h`` ``(N, d_out)``. With ``bias=False``: ``a~ = x`` and
    ``W~ = W``.
    """

    def __init__(self, d_in: int, d_out: int, bias: bool = True):
        self.d_in = check_int("Dense: d_in", d_in, minimum=1)
        self.d_out = check_int("Dense: d_out", d_out, minimum=1)
        self.has_bias = check_bool("Dense: bias", bias)
        self.fan_in = self.d_in
        self.weight_shape = (self.d_out, self.d_in + int(self.has_bias))

    def __repr__(self) -> str:
        return f"Dense({self.d_in}, {self.d_out}, bias={self.has_bias})"

    def output_shape(self, input_shape: tuple, where: str) -> tuple:
        """``(N, d_in) -> (N, d_out)``."""
        if len(input_shape) != 2 or input_shape[1] != self.d_in:
            raise ValueError(
                f"{where} expected input of shape (N, {self.d_in}), got {tuple(input_shape)}"
            )
        return (input_shape[0], self.d_out)

    def homogeneous_input(self, x: Array, xp=None) -> Array:
        """Return ``a~ = [x, 1]``, ``(N, d_in + 1)`` (``x`` itself without a bias)."""
        xp = xp_of(x) if xp is None else xp
        return _append_one(x, xp) if self.has_bias else x

    def apply(self, weight: Array, x: Array, xp) -> Array:
        """``h = a~ W~^T``, ``(N, d_out)``."""
        return self.homogeneous_input(x, xp) @ weight.T

    def forward_unchecked(self, weight: Array, x: Array) -> tuple[Array, AffineCache]:
        """``h = a~ W~^T`` (one GEMM); the cache keeps ``a~`` and ``h``."""
        a = self.homogeneous_input(x)
        h = a @ weight.T
        return h, AffineCache(a=a, h=h, input_shape=x.shape)

    def _to_record(self, dy):
        return dy

    def _input_from_rows(self, rows, input_shape):
        return rows


# --- Conv2d ---


class Conv2d(TrainableLayer):
    """2-d convolution (cross-correlation, as PyTorch), NCHW, via im2col.

    Per sample ``n`` and output position ``p = i W_out + j``: ``h_{n,p} = W~ a~_{n,p}`` where
    ``a~_{n,p}`` is the zero-padded, dilated, strided patch read by position ``(i, j)`` in
    ``(c_in, k_h, k_w)`` order with a trailing 1 (conventions §3), and ``W~`` is the kernel
    ``(c_out, c_in, k_h, k_w)`` reshaped row-major to ``(c_out, c_in k_h k_w)`` with the bias column
    appended.

    Shapes: ``x`` ``(N, c_in, H, W)``, ``a~`` ``(N, P, c_in k_h k_w + 1)``, ``h`` ``(N, P, c_out)``,
    ``y`` ``(N, c_out, H_out, W_out)`` with ``y[n, :, i, j] = h[n, i W_out + j]``,
    ``P = H_out W_out``.
    Backward: ``da~_{n,p} = W^T g_{n,p}`` folded by ``col2im`` (the adjoint of the unfold).
    """

    def __init__(
        self,
        c_in: int,
        c_out: int,
        kernel_size: int | tuple[int, int],
        stride: int | tuple[int, int] = 1,
        padding: int | tuple[int, int] = 0,
        dilation: int | tuple[int, int] = 1,
        bias: bool = True,
    ):
        self.c_in = check_int("Conv2d: c_in", c_in, minimum=1)
        self.c_out = check_int("Conv2d: c_out", c_out, minimum=1)
        self.geometry = PatchGeometry.of(kernel_size, stride, padding, dilation, owner="Conv2d")
        self.has_bias = check_bool("Conv2d: bias", bias)
        self.fan_in = self.c_in * self.geometry.window_size
        self.weight_shape = (self.c_out, self.fan_in + int(self.has_bias))

    kernel_size = property(lambda self: self.geometry.kernel_size, doc="``(k_h, k_w)``.")
    stride = property(lambda self: self.geometry.stride, doc="``(s_h, s_w)``.")
    padding = property(lambda self: self.geometry.padding, doc="``(p_h, p_w)``.")
    dilation = property(lambda self: self.geometry.dilation, doc="``(d_h, d_w)``.")

    def __repr__(self) -> str:
        return (
            f"Conv2d({self.c_in}, {self.c_out}, kernel_size={self.kernel_size}, "
            f"stride={self.stride}, padding={self.padding}, dilation={self.dilation}, "
            f"bias={self.has_bias})"
        )

    def output_size(self, height: int, width: int) -> tuple[int, int]:
        """``(H_out, W_out)``, ``H_out = floor((H + 2 p_h - d_h (k_h - 1) - 1) / s_h) + 1``."""
        return self.geometry.output_size(height, width)

    def output_shape(self, input_shape: tuple, where: str) -> tuple:
        """``(N, c_in, H, W) -> (N, c_out, H_out, W_out)``."""
        if len(input_shape) != 4 or input_shape[1] != self.c_in or min(input_shape[2:]) < 1:
            raise ValueError(
                f"{where} expected input of shape (N, {self.c_in}, H, W), got {tuple(input_shape)}"
            )
        n, _, height, width = input_shape
        out_height, out_width = self.geometry.output_size(height, width, where=where)
        return (n, self.c_out, out_height, out_width)

    def homogeneous_input(self, x: Array, xp=None) -> Array:
        """Return ``a~``: the unfolded patches with a trailing 1, ``(N, P, c_in k_h k_w + 1)``."""
        xp = xp_of(x) if xp is None else xp
        patches = patches_to_columns(extract_patches(x, self.geometry, xp))
        return _append_one(patches, xp) if self.has_bias else patches

    def _to_image(self, h, input_shape):
        """``(N, P, c_out)`` -> ``(N, c_out, H_out, W_out)`` (a view)."""
        out_height, out_width = self.geometry.output_size(input_shape[2], input_shape[3])
        return h.reshape((h.shape[0], out_height, out_width, self.c_out)).transpose((0, 3, 1, 2))

    def apply(self, weight: Array, x: Array, xp) -> Array:
        """``y = image(a~ W~^T)``, ``(N, c_out, H_out, W_out)``."""
        return self._to_image(_rowwise_matmul(self.homogeneous_input(x, xp), weight.T), x.shape)

    def forward_unchecked(self, weight: Array, x: Array) -> tuple[Array, AffineCache]:
        """``h = a~ W~^T`` over all ``N P`` rows as one GEMM; ``y`` is ``h`` as an image."""
        a = self.homogeneous_input(x)
        h = _rowwise_matmul(a, weight.T)
        return self._to_image(h, x.shape), AffineCache(a=a, h=h, input_shape=x.shape)

    def _to_record(self, dy):
        n = dy.shape[0]
        return dy.transpose(0, 2, 3, 1).reshape(n, -1, self.c_out)

    def _input_from_rows(self, rows, input_shape):
        out_height, out_width = self.geometry.output_size(input_shape[2], input_shape[3])
        patches = columns_to_patches(rows, out_height, out_width, self.c_in)
        return fold_patches(patches, input_shape, self.geometry)


# --- Flatten and pooling ---


class Flatten(Layer):
    """``(N, C, H, W) -> (N, C H W)`` in row-major (C) order; backward reshapes back."""

    def output_shape(self, input_shape: tuple, where: str) -> tuple:
        """``(N, d_1, ..., d_k) -> (N, d_1 ... d_k)``."""
        if len(input_shape) < 2:
            raise ValueError(
                f"{where} expected input of shape (N, ...) with at least 2 dimensions, "
                f"got {tuple(input_shape)}"
            )
        return (input_shape[0], math.prod(input_shape[1:]))

    def apply(self, x, xp):
        """``y = reshape(x, (N, -1))``."""
        return x.reshape((x.shape[0], -1))

    def forward_unchecked(self, x: Array) -> tuple:
        """Cache the input shape."""
        return self.apply(x, xp_of(x)), x.shape

    def backward(self, cache, dy):
        """``dx = reshape(dy, input_shape)``."""
        return dy.reshape(cache)


class _Pool2d(Layer):
    """Shared geometry of the pooling layers.

    Windows of ``k_h x k_w``, stride (default: the kernel size), padding at most half the kernel (so
    every window touches the input), no dilation.
    """

    def __init__(
        self,
        kernel_size: int | tuple[int, int],
        stride: int | tuple[int, int] | None = None,
        padding: int | tuple[int, int] = 0,
    ):
        name = type(self).__name__
        self.geometry = PatchGeometry.of(
            kernel_size, kernel_size if stride is None else stride, padding, owner=name
        )
        kernel = self.geometry.kernel_size
        for pad, k in zip(self.geometry.padding, kernel, strict=True):
            if 2 * pad > k:
                raise ValueError(
                    f"{name}: padding must be at most half the kernel size {kernel}, "
                    f"got {self.geometry.padding}"
                )

    kernel_size = property(lambda self: self.geometry.kernel_size, doc="``(k_h, k_w)``.")
    stride = property(lambda self: self.geometry.stride, doc="``(s_h, s_w)``.")
    padding = property(lambda self: self.geometry.padding, doc="``(p_h, p_w)``.")

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(kernel_size={self.kernel_size}, stride={self.stride}, "
            f"padding={self.padding})"
        )

    def output_shape(self, input_shape: tuple, where: str) -> tuple:
        """``(N, C, H, W) -> (N, C, H_out, W_out)``."""
        if len(input_shape) != 4 or min(input_shape[1:]) < 1:
            raise ValueError(
                f"{where} expected input of shape (N, C, H, W) with C, H, W >= 1, "
                f"got {tuple(input_shape)}"
            )
        n, channels, height, width = input_shape
        return (n, channels, *self.geometry.output_size(height, width, where=where))


class MaxPool2d(_Pool2d):
    """``y[n, c, i, j] = max`` of window ``(i, j)`` of channel ``c`` (padding counts as ``-inf``).

    Backward: ``dy[n, c, i, j]`` goes to the window entry that attained the max (the first in
    ``(k_h, k_w)`` row-major order on ties), summed over overlapping windows.
    """

    def apply(self, x, xp):
        """Max over each window's ``K`` entries."""
        windows = extract_patches(x, self.geometry, xp, pad_value=-math.inf)
        return xp.transpose(xp.max(windows, axis=-1), (0, 3, 1, 2))

    def forward_unchecked(self, x: Array) -> tuple:
        """Cache the argmax of every window, ``(N, H_out, W_out, C)``, and the input shape."""
        xp = xp_of(x)
        windows = extract_patches(x, self.geometry, xp, pad_value=-math.inf)
        argmax = windows.argmax(axis=-1)
        y = xp.take_along_axis(windows, argmax[..., None], axis=-1)[..., 0]
        return y.transpose(0, 3, 1, 2), (argmax, x.shape)

    def backward(self, cache, dy):
        """Route ``dy`` to each window's argmax and fold the windows back (adjoint of unfold)."""
        argmax, input_shape = cache
        xp = xp_of(dy)
        chosen = argmax[..., None] == xp.arange(self.geometry.window_size)
        d_windows = chosen * dy.transpose(0, 2, 3, 1)[..., None]
        return fold_patches(d_windows, input_shape, self.geometry)


class AvgPool2d(_Pool2d):
    """``y[n, c, i, j] = (1/K) sum`` of window ``(i, j)`` of channel ``c``, ``K = k_h k_w``.

    Zero padding counts in the mean (PyTorch's ``count_include_pad=True``). Backward: every window
    entry receives ``dy[n, c, i, j] / K``, folded back (adjoint of unfold).
    """

    def apply(self, x, xp):
        """Mean over each window's ``K`` entries."""
        windows = extract_patches(x, self.geometry, xp)
        return xp.transpose(xp.mean(windows, axis=-1), (0, 3, 1, 2))

    def forward_unchecked(self, x: Array) -> tuple:
        """Cache the input shape."""
        return self.apply(x, xp_of(x)), x.shape

    def backward(self, cache, dy):
        """``d_window = dy / K`` for each of the ``K`` entries, folded back."""
        xp = xp_of(dy)
        shares = dy.transpose(0, 2, 3, 1)[..., None] / self.geometry.window_size
        d_windows = xp.broadcast_to(shares, shares.shape[:-1] + (self.geometry.window_size,))
        return fold_patches(d_windows, cache, self.geometry)


# --- Activations (elementwise, any shape) ---


class Activation(Layer):
    """An elementwise map ``y = phi(x)`` on any shape; backward ``dx = dy * phi'(x)``."""

    def output_shape(self, input_shape: tuple, where: str) -> tuple:
        """Any shape; unchanged."""
        return tuple(input_shape)


class Identity(Activation):
    """``y = x``; ``dx = dy``."""

    def apply(self, x, xp):
        """``y = x``."""
        return x

    def forward_unchecked(self, x):
        """Nothing to cache."""
        return x, None

    def backward(self, cache, dy):
        """``dx = dy``."""
        return dy


class ReLU(Activation):
    """``y = max(x, 0)``; ``dx = dy * [x > 0]`` (derivative 0 taken at ``x = 0``).

    A NaN input gives a NaN output (so the finiteness check of the network output sees it).
    """

    def apply(self, x, xp):
        """``y = 0`` where ``x <= 0``, else ``x`` (NaN stays NaN).

        Written with ``where`` for autograd, whose ``maximum`` would split the derivative at the
        tie ``x = 0`` as 1/2 : 1/2; this gives 0 there, as :meth:`backward` does.
        """
        return xp.where(x <= 0, 0, x)

    def forward_unchecked(self, x):
        """``y = maximum(x, 0)`` (the values of :meth:`apply`, in one vectorised pass); cache ``y``.

        ``y > 0`` exactly where ``x > 0``.
        """
        y = xp_of(x).maximum(x, 0)
        return y, y

    def backward(self, cache, dy):
        """``dx = dy * [y > 0]``."""
        return dy * (cache > 0)


class Sigmoid(Activation):
    """``y = sigmoid(x) = 1 / (1 + exp(-x))``; ``dx = dy y (1 - y)`` with ``1 - y = sigmoid(-x)``.

    Both factors come from :func:`sigmoid_pair` (no overflow, relative precision kept for
    ``|x|`` large, where ``1 - y`` would cancel).
    """

    def apply(self, x, xp):
        """``y = sigmoid(x)``."""
        return sigmoid(x, xp)

    def forward_unchecked(self, x):
        """Cache ``(y, 1 - y) = (sigmoid(x), sigmoid(-x))``."""
        y, one_minus_y = sigmoid_pair(x)
        return y, (y, one_minus_y)

    def backward(self, cache, dy):
        """``dx = dy * y * (1 - y) = dy * sigmoid(x) * sigmoid(-x)``."""
        y, one_minus_y = cache
        return dy * y * one_minus_y


class Tanh(Activation):
    """``y = tanh(x)``; ``dx = dy (1 - y^2)``."""

    def apply(self, x, xp):
        """``y = tanh(x)``."""
        return xp.tanh(x)

    def forward_unchecked(self, x):
        """Cache ``y``."""
        y = self.apply(x, xp_of(x))
        return y, y

    def backward(self, cache, dy):
        """``dx = dy * (1 - y^2)``."""
        return dy * (1 - cache * cache)


class Softplus(Activation):
    """``y = log(1 + exp(x))`` (no overflow); ``dx = dy sigmoid(x)``."""

    def apply(self, x, xp):
        """``y = logaddexp(0, x)`` (autograd differentiates it right; see :func:`softplus`)."""
        return xp.logaddexp(0, x)

    def forward_unchecked(self, x):
        """``y = max(x, 0) + log1p(exp(-|x|))`` (:func:`softplus`, the fast form); cache ``x``."""
        return softplus(x), x

    def backward(self, cache, dy):
        """``dx = dy * sigmoid(x)`` (:func:`sigmoid`)."""
        return dy * sigmoid(cache)
