"""im2col against nested loops; col2im as its adjoint; Conv2d against a nested-loop convolution."""

import autograd.numpy as anp
import numpy as np
import pytest
from autograd import grad
from helpers.compare import assert_close

from kfqn_ref import nn
from kfqn_ref.nn.im2col import col2im, im2col
from tests.nn.reference import naive_conv2d, naive_patches

# (input shape, kernel, stride, padding, dilation), per-axis values where they differ.
GEOMETRIES = [
    ((2, 3, 5, 5), (3, 3), (1, 1), (0, 0), (1, 1)),
    ((2, 2, 7, 6), (3, 2), (2, 1), (1, 2), (1, 1)),
    ((1, 2, 9, 8), (2, 3), (2, 3), (0, 1), (3, 2)),
    ((3, 1, 4, 4), (1, 1), (1, 1), (0, 0), (1, 1)),
    ((2, 2, 3, 3), (3, 3), (1, 1), (0, 0), (1, 1)),
    ((2, 1, 2, 2), (3, 3), (2, 2), (2, 2), (2, 1)),
]
IDS = [f"x{g[0]}-k{g[1]}-s{g[2]}-p{g[3]}-d{g[4]}" for g in GEOMETRIES]


def _windows_by_counting(size, kernel, stride, padding, dilation):
    """How many starts ``i = 0, 1, ...`` have their last tap ``i s + d (k - 1)`` inside the padded
    input ``[0, size + 2 p)``: the output size by its definition."""
    count = 0
    while count * stride + dilation * (kernel - 1) < size + 2 * padding:
        count += 1
    return count


@pytest.mark.parametrize(("shape", "kernel", "stride", "padding", "dilation"), GEOMETRIES, ids=IDS)
def test_output_size_is_the_number_of_windows_inside_the_padded_input(
    shape, kernel, stride, padding, dilation
):
    """nn.md §3: H_out = floor((H + 2 p_h - d_h (k_h - 1) - 1) / s_h) + 1 (same for the width) and
    P = H_out W_out. Expected: the windows counted one by one."""
    x = np.zeros(shape)
    expected = tuple(
        _windows_by_counting(
            shape[2 + axis], kernel[axis], stride[axis], padding[axis], dilation[axis]
        )
        for axis in (0, 1)
    )
    layer = nn.Conv2d(shape[1], 3, kernel, stride, padding, dilation)
    y, _ = layer.forward(np.zeros(layer.weight_shape), x)
    assert y.shape[2:] == expected
    assert im2col(x, kernel, stride, padding, dilation).shape[1] == expected[0] * expected[1]


@pytest.mark.parametrize(("shape", "kernel", "stride", "padding", "dilation"), GEOMETRIES, ids=IDS)
def test_im2col_equals_nested_loop_patches(shape, kernel, stride, padding, dilation):
    # A gather copies entries: expected bitwise equal to the nested-loop patches.
    x = np.random.default_rng(0).standard_normal(shape)
    np.testing.assert_array_equal(
        im2col(x, kernel, stride, padding, dilation),
        naive_patches(x, kernel, stride, padding, dilation),
    )


@pytest.mark.parametrize(("shape", "kernel", "stride", "padding", "dilation"), GEOMETRIES, ids=IDS)
def test_conv2d_equals_nested_loop_convolution(shape, kernel, stride, padding, dilation):
    rng = np.random.default_rng(1)
    x = rng.standard_normal(shape)
    layer = nn.Conv2d(shape[1], 3, kernel, stride, padding, dilation)
    weight = rng.standard_normal(layer.weight_shape)
    kernel_weights = weight[:, :-1].reshape(3, shape[1], *kernel)
    expected = naive_conv2d(x, kernel_weights, weight[:, -1], stride, padding, dilation)
    y, _ = layer.forward(weight, x)
    assert_close(y, expected, what="Conv2d.forward")
    assert_close(layer.apply(weight, x, np), expected, what="Conv2d.apply")


@pytest.mark.parametrize(("shape", "kernel", "stride", "padding", "dilation"), GEOMETRIES, ids=IDS)
def test_col2im_is_adjoint_of_im2col(shape, kernel, stride, padding, dilation):
    # <im2col(x), y> = <x, col2im(y)>; rounding in the two sums is bounded by the sum of |terms|.
    rng = np.random.default_rng(2)
    x = rng.standard_normal(shape)
    cols = im2col(x, kernel, stride, padding, dilation)
    y = rng.standard_normal(cols.shape)
    lhs = np.sum(cols * y)
    rhs = np.sum(x * col2im(y, shape, kernel, stride, padding, dilation))
    assert_close(rhs, lhs, rtol=0.0, atol=1e-12 * np.sum(np.abs(cols * y)), what="<x, col2im(y)>")


@pytest.mark.parametrize(("shape", "kernel", "stride", "padding", "dilation"), GEOMETRIES, ids=IDS)
def test_col2im_equals_autograds_transpose_of_im2col(shape, kernel, stride, padding, dilation):
    # Expected: autograd's VJP of im2col run with xp=autograd.numpy (the path `apply` uses).
    rng = np.random.default_rng(3)
    x = rng.standard_normal(shape)
    y = rng.standard_normal(im2col(x, kernel, stride, padding, dilation).shape)
    expected = grad(lambda u: anp.sum(im2col(u, kernel, stride, padding, dilation, xp=anp) * y))(x)
    assert_close(col2im(y, shape, kernel, stride, padding, dilation), expected, what="col2im")


def test_im2col_patch_order_is_channel_then_kernel_row_then_kernel_column():
    # One hand-checked case: x[0, c, r, q] = 100 c + 10 r + q, kernel 2x2, stride 1, no padding.
    c, r, q = np.meshgrid(np.arange(2), np.arange(3), np.arange(3), indexing="ij")
    x = (100.0 * c + 10.0 * r + q)[None]
    cols = im2col(x, 2)
    assert cols.shape == (1, 4, 8)
    np.testing.assert_array_equal(cols[0, 0], [0, 1, 10, 11, 100, 101, 110, 111])
    np.testing.assert_array_equal(cols[0, 3], [11, 12, 21, 22, 111, 112, 121, 122])
