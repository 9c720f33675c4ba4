"""Layout converters: exact round trips, and agreement with the project's own vec and kron."""

import numpy as np
import pytest

from kfqn_ref import interop, nn
from kfqn_ref.curvature import kron, vec


@pytest.fixture
def rng():
    return np.random.default_rng(0)


def test_linear_round_trip_and_layout(rng):
    weight, bias = rng.standard_normal((3, 4)), rng.standard_normal(3)
    homogeneous = interop.linear_to_homogeneous(weight, bias)
    assert np.array_equal(homogeneous[:, :4], weight) and np.array_equal(homogeneous[:, 4], bias)
    back_weight, back_bias = interop.homogeneous_to_linear(homogeneous)
    assert np.array_equal(back_weight, weight) and np.array_equal(back_bias, bias)
    no_bias = interop.linear_to_homogeneous(weight)
    assert np.array_equal(no_bias, weight)
    assert interop.homogeneous_to_linear(no_bias, has_bias=False)[1] is None


def test_conv_round_trip_matches_the_model_layer(rng):
    layer = nn.Conv2d(2, 3, kernel_size=(2, 3), padding=1)
    model = nn.Sequential([layer, nn.Flatten()], nn.SquaredError(), seed=0)
    kernel, bias = rng.standard_normal((3, 2, 2, 3)), rng.standard_normal(3)
    homogeneous = interop.conv2d_to_homogeneous(kernel, bias)
    back_kernel, back_bias = interop.homogeneous_to_conv2d(homogeneous, (2, 2, 3))
    assert np.array_equal(back_kernel, kernel) and np.array_equal(back_bias, bias)
    model.set_weights([homogeneous])
    x = rng.standard_normal((2, 2, 4, 5))
    y = model.forward(x).reshape(2, 3, *layer.output_size(4, 5))
    direct = np.zeros_like(y)  # cross-correlation written out, PyTorch's definition
    padded = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    for i in range(y.shape[2]):
        for j in range(y.shape[3]):
            patch = padded[:, :, i : i + 2, j : j + 3]
            direct[:, :, i, j] = np.einsum("ncab,ocab->no", patch, kernel) + bias
    np.testing.assert_allclose(y, direct, rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize(("rows", "cols"), [(1, 1), (2, 3), (4, 1), (3, 5)])
def test_vec_permutation_maps_column_major_to_row_major(rng, rows, cols):
    X = rng.standard_normal((rows, cols))
    perm = interop.vec_permutation(rows, cols)
    assert np.array_equal(X.reshape(-1), vec(X)[perm])
    assert np.array_equal(vec(X), X.reshape(-1)[np.argsort(perm)])
    A, G = rng.standard_normal((cols, cols)), rng.standard_normal((rows, rows))
    block = kron(A, G)  # acts on the column-major vec(W~) of a (rows, cols) W~
    row_major = interop.permute(block, perm, (0, 1))
    assert np.array_equal(row_major, kron(G, A))
    assert np.array_equal(interop.permute(row_major, np.argsort(perm), (0, 1)), block)


def test_preactivation_order_and_conv_output_layout(rng):
    P, C, N = 6, 3, 2
    h = rng.standard_normal((N, P, C))  # record layout
    y = interop.record_to_conv_output(h, 2, 3)  # (N, C, H_out, W_out)
    assert np.array_equal(interop.conv_output_to_record(y), h)
    perm = interop.preactivation_permutation(P, C)
    u_pc, u_cp = h.reshape(N, -1), y.reshape(N, -1)
    assert np.array_equal(u_pc[:, perm], u_cp)
    assert np.array_equal(u_cp[:, np.argsort(perm)], u_pc)


def test_unfold_to_record_matches_the_layer_input(rng):
    layer = nn.Conv2d(2, 3, kernel_size=2)
    x = rng.standard_normal((2, 2, 3, 4))
    a = layer.homogeneous_input(x)  # (N, P, D + 1)
    unfold = a[..., :-1].transpose(0, 2, 1).copy()  # what torch.nn.functional.unfold returns
    assert np.array_equal(interop.unfold_to_record(unfold), a)
    assert np.array_equal(interop.unfold_to_record(unfold, has_bias=False), a[..., :-1])
