"""Replay of the PyTorch recordings in ``tests/data/hessian/`` (see ``tests/data/README.md``).

One CNN (1x5x5 input, Conv2d 1->2 kernel 3, ReLU, Flatten, Linear 18->3, softmax cross-entropy,
N = 3) recorded with ``torch.func.hessian``, curvlinops 3.0.1 and BackPACK 1.7.1. Expected values:
the recordings, translated to this project's conventions at the boundary:

* parameters: the recordings flatten each homogeneous ``[W | b]`` ROW-major (a Kronecker block
  reads ``kron(B, A)`` there); ours is column-major ``vec`` (``A kron G``):
  :func:`row_to_column_major` permutes the indices. ``[W.reshape(out, D) | b]`` (bias last,
  patch order ``(c_in, kh, kw)``) is already our ``W~``.
* conv pre-activations: recorded per sample as ``(c_out, h_out, w_out)`` flattened row-major (index
  ``c P + p``); ours are ``(P, c_out)`` row-major (index ``p c_out + c``).
* normalisations: the recorded loss is the mean over samples of ``-log softmax``, ours too; the
  factors that use other normalisations are converted explicitly in each test.
"""

import dataclasses
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from kfqn_ref import nn
from kfqn_ref.curvature import hessian
from kfqn_ref.curvature.factors import FisherType, input_factor, kfac_factors, output_factor
from tests.helpers.compare import assert_close

DATA = Path(__file__).resolve().parents[1] / "data" / "hessian"
CASE = "cnn1x5x5-c2k3s1p0-relu-fc3_ce"
#: Trainable layers: (index in model.layers, recording's layer number).
CONV, DENSE = (0, 0), (3, 1)


@pytest.fixture(scope="module")
def recording():
    meta = json.loads((DATA / f"{CASE}.json").read_text())
    npz = DATA / f"{CASE}.npz"
    assert hashlib.sha256(npz.read_bytes()).hexdigest() == meta["npz_sha256"]
    with np.load(npz, allow_pickle=False) as arrays:
        return dict(arrays)


@pytest.fixture(scope="module")
def model(recording):
    """The recorded net with the recorded weights."""
    model = nn.Sequential(
        [nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Dense(18, 3)], nn.SoftmaxCrossEntropy()
    )
    model.set_weights([recording["theta_l0"], recording["theta_l1"]])
    return model


def row_to_column_major(shape):
    """Indices ``p`` with ``vec(W)[k] = W.reshape(-1)[p[k]]`` for ``W`` of ``shape``."""
    rows, cols = shape
    return np.arange(rows * cols).reshape(rows, cols).T.reshape(-1)


def full_permutation(shapes):
    """:func:`row_to_column_major` for the concatenation of several layers' parameters."""
    offsets = np.cumsum([0] + [rows * cols for rows, cols in shapes])[:-1]
    return np.concatenate(
        [offset + row_to_column_major(shape) for offset, shape in zip(offsets, shapes, strict=True)]
    )


def permute(matrix, permutation):
    return matrix[np.ix_(permutation, permutation)]


def preactivation_permutation(c_out, n_positions):
    """Indices ``i`` with ours ``[p c_out + c]`` = recorded ``[c P + p]``."""
    return np.arange(c_out * n_positions).reshape(c_out, n_positions).T.reshape(-1)


def our_preactivation_matrices(recorded, c_out):
    """Recorded per-sample ``(N, c P, c P)`` matrices in our ``(p, c)`` ordering."""
    permutation = preactivation_permutation(c_out, recorded.shape[1] // c_out)
    return recorded[:, permutation][:, :, permutation]


def test_replay_forward_loss_and_gradients(recording, model):
    """The recorded loss, gradients, patches and pre-activations (our conv patches are
    unfold's (N, D, T) transposed, with the homogeneous 1 appended)."""
    X, T = recording["X"], recording["T"]
    result = model.forward_backward(X, T)
    assert result.loss == pytest.approx(float(recording["loss"]), rel=1e-12)
    conv, dense = result.records
    assert_close(conv.a[..., :-1], recording["patches_l0"].transpose(0, 2, 1), what="conv patches")
    assert_close(conv.h, recording["preact_l0"].reshape(3, 2, 9).transpose(0, 2, 1), what="conv h")
    assert_close(dense.a[:, :-1], recording["input_l1"], what="dense input")
    for record, layer in zip(result.records, (0, 1), strict=True):
        assert_close(
            record.grad, recording[f"grad_theta_l{layer}"], what=f"gradient of layer {layer}"
        )


def test_replay_preactivation_gradients(recording, model):
    """The records' per-sample output gradients ``g`` against the recorded ``grad_preact_l``.

    Conventions (``tests/data/README.md``; the sidecar's ``preact_hessians`` entry):
    ``grad_preact_l[n] = d ell_n / dz`` with ``ell_n`` the per-sample loss, NOT divided by ``N``
    (``L = (1/N) sum_n ell_n``); ours ``g_n = dl_n/dh_n = N df/dh_n`` (conventions §4): the same
    quantity, so no factor is applied. Conv gradients are recorded ``(c_out, h_out, w_out)``
    flattened row-major (index ``c P + p``); ours are ``(P, c_out)``, hence the transpose.
    """
    X, T = recording["X"], recording["T"]
    conv, dense = model.forward_backward(X, T).records
    n_samples = X.shape[0]
    recorded_conv = recording["grad_preact_l0"].reshape(n_samples, 2, 9).transpose(0, 2, 1)
    assert_close(conv.g, recorded_conv, rtol=1e-12, what="conv pre-activation gradients g")
    assert_close(
        dense.g, recording["grad_preact_l1"], rtol=1e-12, what="dense pre-activation gradients g"
    )


def test_replay_exact_hessians_and_ggn(recording, model):
    """Full Hessian, full GGN and layer blocks (torch.func.hessian) after the row- to column-major
    permutation; the recorded GGN is that of the mean loss, as ours."""
    X, T = recording["X"], recording["T"]
    shapes = [w.shape for w in model.weights()]
    permutation = full_permutation(shapes)
    assert_close(
        hessian.full_hessian(model, X, T),
        permute(recording["H_full"], permutation),
        what="full Hessian",
    )
    assert_close(
        hessian.full_ggn(model, X, T), permute(recording["GGN_full"], permutation), what="full GGN"
    )
    for (layer, recorded), shape in zip((CONV, DENSE), shapes, strict=True):
        assert_close(
            hessian.layer_hessian(model, X, T, layer),
            permute(recording[f"H_layer_l{recorded}"], row_to_column_major(shape)),
            what=f"Hessian block of layer {layer}",
        )


def test_replay_preactivation_hessians(recording, model):
    """Per-sample d2 l_n / dh_n^2 of both layers; ReLU and the output layer have no curvature of
    their own, so the pre-activation GGNs equal them too."""
    X, T = recording["X"], recording["T"]
    for (layer, recorded), c_out in zip((CONV, DENSE), (2, 3), strict=True):
        expected = our_preactivation_matrices(recording[f"H_preact_l{recorded}"], c_out)
        assert_close(
            hessian.preactivation_hessians(model, X, T, layer),
            expected,
            what=f"pre-activation Hessians of layer {layer}",
        )
        assert_close(
            hessian.preactivation_ggns(model, X, T, layer),
            expected,
            what=f"pre-activation GGNs of layer {layer}",
        )


def test_replay_structure_formula_from_recorded_patches(recording, model):
    """eq. 3/4 evaluated on the RECORDED patches and pre-activation Hessians equals the recorded
    layer blocks: the structure formula on data that never went through our forward pass."""
    conv, dense = model.forward_backward(recording["X"], recording["T"]).records
    patches = recording["patches_l0"].transpose(0, 2, 1)
    conv_a = np.concatenate([patches, np.ones(patches.shape[:2] + (1,))], axis=2)
    dense_a = np.concatenate([recording["input_l1"], np.ones((3, 1))], axis=1)
    for record, a, (layer, recorded), c_out in (
        (conv, conv_a, CONV, 2),
        (dense, dense_a, DENSE, 3),
    ):
        block = hessian.structure_block(
            dataclasses.replace(record, a=a),
            our_preactivation_matrices(recording[f"H_preact_l{recorded}"], c_out),
        )
        shape = model.layers[layer].weight_shape
        assert_close(
            block,
            permute(recording[f"H_layer_l{recorded}"], row_to_column_major(shape)),
            what=f"structure formula on recorded data, layer {layer}",
        )


def test_replay_single_sample_last_layer(recording, model):
    """Sample 0 alone: the last layer's exact block equals type-2 KFAC (eq. 13, N = 1)."""
    X, T = recording["X"][:1], recording["T"][:1]
    expected = permute(recording["single_sample_last_layer_H"], row_to_column_major((3, 19)))
    assert_close(hessian.layer_hessian(model, X, T, DENSE[0]), expected, what="single-sample block")
    factors = kfac_factors(model, model.forward_pass(X), T, FisherType.TYPE2)
    assert_close(np.kron(factors[1].A, factors[1].G), expected, what="single-sample type-2 KFAC")


@pytest.mark.parametrize("fisher", [FisherType.TYPE2, FisherType.EMPIRICAL])
def test_replay_curvlinops_kfac_expand(recording, model, fisher):
    """curvlinops 'expand' (mean loss, CrossEntropyLoss so no extra factor C): A_cl is the MEAN over
    positions, B_cl the SUM. Ours (KFC, eq. 14) is A = P A_cl, G = B_cl / P: the same product.
    Dense layer: P = 1, identical factors."""
    tag = "type2" if fisher is FisherType.TYPE2 else "empirical"
    factors = kfac_factors(model, model.forward_pass(recording["X"]), recording["T"], fisher)
    for factor, (layer, recorded), n_positions in zip(factors, (CONV, DENSE), (9, 1), strict=True):
        A_cl = recording[f"curv_{tag}_expand_A_l{recorded}"]
        B_cl = recording[f"curv_{tag}_expand_B_l{recorded}"]
        assert_close(factor.A, n_positions * A_cl, what=f"{tag} A of layer {layer} vs P A_cl")
        assert_close(factor.G, B_cl / n_positions, what=f"{tag} G of layer {layer} vs B_cl / P")
        assert_close(
            np.kron(factor.A, factor.G),
            np.kron(A_cl, B_cl),
            what=f"{tag} A kron G of layer {layer}",
        )


def _output_gradient_sets(model, X, T, fisher):
    """Records of the backward passes of the true-target gradient (empirical) or of every column
    of the loss-Hessian square root (type-2)."""
    forward = model.forward_pass(X)
    if fisher is FisherType.EMPIRICAL:
        gradients = [model.loss.output_gradient(forward.z, T)]
    else:
        root = model.loss.output_hessian_sqrt(forward.z, T)
        gradients = [root[:, :, k] for k in range(root.shape[2])]
    return [model.backward_pass(forward, dz, weight_gradients=False) for dz in gradients]


@pytest.mark.parametrize("fisher", [FisherType.TYPE2, FisherType.EMPIRICAL])
def test_replay_curvlinops_kfac_reduce(recording, model, fisher):
    """curvlinops 'reduce' (Eschenhagen et al. 2023) is not offered by kfac_factors; our reductions
    reproduce it: A = input_factor of the position-MEAN patches, B = output_factor of the
    position-SUMMED gradients (summed over the square-root columns for type-2)."""
    tag = "type2" if fisher is FisherType.TYPE2 else "empirical"
    X, T = recording["X"], recording["T"]
    conv_a = model.forward_pass(X).records[0].a
    assert_close(
        input_factor(conv_a.mean(axis=1)),
        recording[f"curv_{tag}_reduce_A_l0"],
        what=f"{tag} reduce A of the conv layer",
    )
    B = sum(
        output_factor(records[0].g.sum(axis=1))
        for records in _output_gradient_sets(model, X, T, fisher)
    )
    assert_close(B, recording[f"curv_{tag}_reduce_B_l0"], what=f"{tag} reduce B of the conv layer")
    dense = kfac_factors(model, model.forward_pass(X), T, fisher)[1]
    assert_close(dense.A, recording[f"curv_{tag}_reduce_A_l1"], what=f"{tag} reduce A, dense")
    assert_close(dense.G, recording[f"curv_{tag}_reduce_B_l1"], what=f"{tag} reduce B, dense")


def test_replay_backpack_kflr_and_kfra(recording, model):
    """BackPACK KFLR keeps weight and bias apart, without the homogeneous coordinate. Conv: input
    factor (1/N) sum_n sum_p a a^T (our input_factor, SUM over positions, on the patches without
    the trailing 1); gradient and bias factors = the 'reduce' B (type-2 gradients summed over
    positions).
    Dense: the type-2 KFAC factors (A without its last row and column). KFRA equals KFLR on the last
    layer (same recursion start); on the conv layer KFRA's recursive approximation differs and is
    not replayed."""
    X, T = recording["X"], recording["T"]
    conv, dense = kfac_factors(model, model.forward_pass(X), T, FisherType.TYPE2)
    conv_a = model.forward_pass(X).records[0].a
    assert_close(
        input_factor(conv_a[..., :-1]), recording["bp_kflr_Wfac1_l0"], what="KFLR conv input"
    )
    reduce_B = sum(
        output_factor(records[0].g.sum(axis=1))
        for records in _output_gradient_sets(model, X, T, FisherType.TYPE2)
    )
    for name in ("Wfac0", "bfac0"):
        assert_close(reduce_B, recording[f"bp_kflr_{name}_l0"], what=f"KFLR conv {name}")
    for method in ("kflr", "kfra"):
        assert_close(
            dense.A[:-1, :-1], recording[f"bp_{method}_Wfac1_l1"], what=f"{method} dense input"
        )
        for name in ("Wfac0", "bfac0"):
            assert_close(
                dense.G, recording[f"bp_{method}_{name}_l1"], what=f"{method} dense {name}"
            )
