"""Layout converters between framework layouts and kfqn_ref's conventions, in pure NumPy.

Nothing here imports a deep-learning framework: pass ``tensor.detach().cpu().numpy()`` (PyTorch)
or ``numpy.asarray(array)`` (JAX). Every converter is exact (it only moves entries), so each pair
round-trips bit for bit. The conventions converted to (``docs/conventions.md`` §3, §5):

* a trainable layer's parameters are one matrix ``W~ = [W | b]``, the bias the LAST column; a
  ``Conv2d`` kernel ``(c_out, c_in, k_h, k_w)`` is reshaped row-major to ``(c_out, c_in k_h k_w)``;
* ``vec`` is column-major, so a layer block over ``vec(W~)`` reads ``A kron G``; PyTorch's
  ``W.reshape(-1)`` is the row-major vec, whose block reads ``G kron A``;
* a conv layer's per-sample pre-activation is ordered ``(p, c)`` (index ``p C + c``, positions
  ``p = i W_out + j``); PyTorch's output ``(C, H_out, W_out)`` flattened is ``(c, p)``
  (index ``c P + p``).

``docs/golden.md`` shows them in use.
"""

from __future__ import annotations

import numpy as np

from kfqn_ref import _checks
from kfqn_ref.backend import Array


def linear_to_homogeneous(weight: Array, bias: Array | None = None) -> Array:
    """``W~ = [W | b]`` ``(d_out, d_in + 1)`` from a ``Linear`` weight and bias.

    ``weight`` is ``(d_out, d_in)`` (PyTorch's layout), ``bias`` ``(d_out,)``; without a bias
    ``W~ = W``.
    """
    _checks.check_float_array("weight", weight, ndim=2)
    if bias is None:
        return weight.copy()
    _checks.check_float_array("bias", bias, dtype=weight.dtype, shape=(weight.shape[0],))
    return np.concatenate([weight, bias[:, None]], axis=1)


def homogeneous_to_linear(homogeneous: Array, has_bias: bool = True) -> tuple[Array, Array | None]:
    """``(W, b)`` from ``W~ = [W | b]``: the inverse of :func:`linear_to_homogeneous`."""
    _checks.check_float_array("homogeneous", homogeneous, ndim=2)
    if not _checks.check_bool("has_bias", has_bias):
        return homogeneous.copy(), None
    return homogeneous[:, :-1].copy(), homogeneous[:, -1].copy()


def conv2d_to_homogeneous(weight: Array, bias: Array | None = None) -> Array:
    """``W~`` ``(c_out, c_in k_h k_w + 1)`` from a ``Conv2d`` kernel ``(c_out, c_in, k_h, k_w)``.

    The kernel is reshaped row-major (patch order ``(c_in, k_h, k_w)``, as ``unfold``), then the
    bias ``(c_out,)`` is appended as the last column.
    """
    _checks.check_float_dtype("weight", weight)
    _checks.check_shape("weight", weight, ndim=4)
    return linear_to_homogeneous(weight.reshape(weight.shape[0], -1), bias)


def homogeneous_to_conv2d(
    homogeneous: Array, kernel_shape: tuple[int, int, int], has_bias: bool = True
) -> tuple[Array, Array | None]:
    """``(kernel, bias)`` from ``W~``: the inverse of :func:`conv2d_to_homogeneous`.

    ``kernel_shape = (c_in, k_h, k_w)``; the kernel is ``(c_out, c_in, k_h, k_w)``.
    """
    kernel_shape = _checks.check_int_tuple("kernel_shape", kernel_shape, 3, 1, "(c_in, k_h, k_w)")
    weight, bias = homogeneous_to_linear(homogeneous, has_bias)
    if weight.shape[1] != int(np.prod(kernel_shape)):
        raise ValueError(
            f"homogeneous has {weight.shape[1]} kernel columns, but kernel_shape {kernel_shape} "
            f"needs {int(np.prod(kernel_shape))}"
        )
    return weight.reshape((weight.shape[0], *kernel_shape)), bias


def vec_permutation(rows: int, cols: int) -> Array:
    """``perm`` with ``X.reshape(-1) == vec(X)[perm]`` for ``X`` ``(rows, cols)``.

    ``X.reshape(-1)`` is the row-major vec (entry ``i cols + j``), ``vec(X)`` the column-major one
    (entry ``j rows + i``); ``numpy.argsort(perm)`` is the inverse permutation.
    """
    rows = _checks.check_int("rows", rows, minimum=1)
    cols = _checks.check_int("cols", cols, minimum=1)
    return np.arange(rows * cols).reshape(cols, rows).T.reshape(-1)


def preactivation_permutation(positions: int, channels: int) -> Array:
    """``perm`` with ``u_cp == u_pc[perm]``: the ``(c, p)`` order from kfqn_ref's ``(p, c)`` order.

    ``u_pc[p C + c]`` is a conv layer's pre-activation in kfqn_ref's record order, ``u_cp[c P + p]``
    the same entry in PyTorch's ``(C, H_out, W_out)`` order; ``numpy.argsort(perm)`` converts back.
    """
    return vec_permutation(channels, positions)


def permute(array: Array, permutation: Array, axes: tuple[int, ...] = (0,)) -> Array:
    """``array`` with ``permutation`` applied along each of ``axes`` (``array[perm][:, perm]``...).

    With :func:`vec_permutation` and ``axes=(0, 1)`` it turns a column-major layer block into the
    row-major one (``A kron G`` into ``G kron A``); with ``argsort(perm)`` it turns it back.
    """
    _checks.check_array_like("array", array)
    _checks.check_array_like("permutation", permutation)
    for axis in axes:
        if array.shape[axis] != permutation.shape[0]:
            raise ValueError(
                f"array axis {axis} has length {array.shape[axis]}, the permutation "
                f"{permutation.shape[0]}"
            )
        array = np.take(array, permutation, axis=axis)
    return array


def conv_output_to_record(y: Array) -> Array:
    """A conv output ``(N, C, H_out, W_out)`` as the record ``h`` ``(N, P, C)``."""
    _checks.check_array_like("y", y)
    _checks.check_shape("y", y, ndim=4)
    return y.transpose(0, 2, 3, 1).reshape(y.shape[0], -1, y.shape[1])


def record_to_conv_output(h: Array, out_height: int, out_width: int) -> Array:
    """The record ``h`` ``(N, P, C)`` as the conv output ``(N, C, H_out, W_out)``."""
    _checks.check_array_like("h", h)
    _checks.check_shape("h", h, ndim=3, shape=(None, out_height * out_width, None))
    return h.reshape(h.shape[0], out_height, out_width, h.shape[2]).transpose(0, 3, 1, 2)


def unfold_to_record(patches: Array, has_bias: bool = True) -> Array:
    """``a~`` ``(N, P, D + 1)`` from ``torch.nn.functional.unfold``'s ``(N, D, P)`` patches.

    The trailing 1 is appended when ``has_bias``.
    """
    _checks.check_float_array("patches", patches, ndim=3)
    a = patches.transpose(0, 2, 1)
    if not _checks.check_bool("has_bias", has_bias):
        return a.copy()
    return np.concatenate([a, np.ones(a.shape[:2] + (1,), dtype=a.dtype)], axis=2)
