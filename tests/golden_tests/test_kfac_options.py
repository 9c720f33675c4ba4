"""KFAC's options for replayable golden trajectories, each against an independent route.

* an injectable Monte-Carlo target source (recorded draws fed back reproduce a run bit for bit);
* the K-BFGS authors' averaging: constant decay from zero, or from a factor pre-pass;
* KFAC-reduce for conv layers: against curvlinops' recorded "reduce" factors, and exact (equal to
  the GGN block) where its assumption holds.
"""

import hashlib
import json
import re
from pathlib import Path

import numpy as np
import pytest
from helpers.compare import assert_close

from kfqn_ref import curvature, nn, optim
from kfqn_ref.curvature import FisherType

RECORDING = (
    Path(__file__).resolve().parents[1] / "data" / "hessian" / "cnn1x5x5-c2k3s1p0-relu-fc3_ce"
)


def conv_net(seed=0):
    layers = [nn.Conv2d(2, 3, kernel_size=2), nn.Tanh(), nn.Flatten(), nn.Dense(12, 2)]
    return nn.Sequential(layers, nn.SquaredError(), seed=seed)


@pytest.fixture
def batches():
    rng = np.random.default_rng(1)
    return [(rng.standard_normal((4, 2, 3, 3)), rng.standard_normal((4, 2))) for _ in range(4)]


def run(batches, **options):
    model = conv_net()
    opt = optim.KFAC(model, lr=0.1, damping=0.1, inverse_interval=2, **options)
    for X, T in batches:
        opt.step(X, T)
    return model.weights(), opt


def test_recorded_draws_fed_back_reproduce_the_run_bit_for_bit(batches):
    draws = {}

    def recording(z, draw):
        targets = z + np.random.default_rng([7, draw]).standard_normal(z.shape)
        draws[draw] = targets
        return targets

    recorded, _ = run(batches, target_source=recording)
    replayed, _ = run(batches, target_source=lambda z, draw: draws[draw])
    default, _ = run(batches, seed=7)  # the default source draws z + N(0, I) with [seed, draw]
    assert sorted(draws) == [0, 1, 2, 3]
    for a, b, c in zip(recorded, replayed, default, strict=True):
        assert np.array_equal(a, b) and np.array_equal(a, c)


def test_a_source_of_the_true_targets_gives_the_empirical_fisher(batches):
    targets = [T for _, T in batches]
    sourced, _ = run(batches, target_source=lambda z, draw: targets[draw])
    empirical, _ = run(batches, fisher="empirical")
    for a, b in zip(sourced, empirical, strict=True):
        assert np.array_equal(a, b)


def test_constant_averaging_from_zero_is_the_plain_recursion(batches):
    model = conv_net()
    beta = 0.8
    opt = optim.KFAC(model, fisher="type2", averaging="constant", ema_decay=beta, lr=0.1)
    A = [np.zeros((w.shape[1],) * 2) for w in model.weights()]
    G = [np.zeros((w.shape[0],) * 2) for w in model.weights()]
    for X, T in batches[:3]:
        factors = curvature.kfac_factors(model, model.forward_pass(X), T, FisherType.TYPE2)
        A = [beta * a + (1 - beta) * f.A for a, f in zip(A, factors, strict=True)]
        G = [beta * g + (1 - beta) * f.G for g, f in zip(G, factors, strict=True)]
        opt.step(X, T)
    for i in range(2):
        assert_close(opt.state.A[i], A[i], rtol=1e-14, what=f"A of layer {i}")
        assert_close(opt.state.G[i], G[i], rtol=1e-14, what=f"G of layer {i}")


def test_the_prepass_sets_the_mean_of_the_minibatch_factors_then_decays(batches):
    model = conv_net()
    called = []

    def source(z, draw):
        called.append(draw)
        return np.random.default_rng(draw).standard_normal(z.shape)

    opt = optim.KFAC(model, target_source=source, averaging="constant", ema_decay=0.9)
    assert opt.initialize_factors(batches[:3]) == 3
    expected = []
    for j, (X, _) in enumerate(batches[:3]):
        forward = model.forward_pass(X)
        drawn = np.random.default_rng(j).standard_normal(forward.z.shape)
        expected.append(curvature.kfac_factors(model, forward, drawn, FisherType.EMPIRICAL))
    for i in range(2):
        assert_close(opt.state.A[i], np.mean([f[i].A for f in expected], axis=0), rtol=1e-14)
        assert_close(opt.state.G[i], np.mean([f[i].G for f in expected], axis=0), rtol=1e-14)
    before = [a.copy() for a in opt.state.A]
    X, T = batches[3]
    step0 = curvature.input_factor(model.forward_pass(X).records[0].a)
    opt.step(X, T)
    assert called == [0, 1, 2, 3]  # pre-pass draws 0..J-1, step k draws J + k
    assert_close(opt.state.A[0], 0.9 * before[0] + 0.1 * step0, rtol=1e-14)
    assert opt.state.prepassed == 3


@pytest.mark.parametrize("fisher", ["type2", "empirical"])
def test_reduce_reproduces_the_curvlinops_recording(fisher):
    meta = json.loads(RECORDING.with_suffix(".json").read_text())
    npz = RECORDING.with_suffix(".npz")
    assert hashlib.sha256(npz.read_bytes()).hexdigest() == meta["npz_sha256"]
    with np.load(npz, allow_pickle=False) as archive:
        recording = dict(archive)
    layers = [nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Dense(18, 3)]
    model = nn.Sequential(layers, nn.SoftmaxCrossEntropy())
    model.set_weights([recording["theta_l0"], recording["theta_l1"]])
    opt = optim.KFAC(model, fisher=fisher, conv_approximation="reduce", weight_decay=0.0)
    opt.step(recording["X"], recording["T"])  # warm start: the first update IS the batch factor
    for layer in (0, 1):
        assert_close(opt.state.A[layer], recording[f"curv_{fisher}_reduce_A_l{layer}"], what="A")
        assert_close(opt.state.G[layer], recording[f"curv_{fisher}_reduce_B_l{layer}"], what="G")


def test_reduce_is_the_exact_ggn_block_when_the_positions_are_averaged_linearly():
    """Conv -> global average pool -> Dense, squared error, one sample: every position gets the
    same output gradient, so sum_p a~_p kron g_p = abar kron gsum exactly (Eschenhagen et al. 2023)
    and KFAC-reduce equals the exact GGN block; KFAC-expand does not."""

    def pooled_net():
        layers = [nn.Conv2d(1, 2, 2), nn.AvgPool2d(3), nn.Flatten(), nn.Dense(2, 3)]
        return nn.Sequential(layers, nn.SquaredError(), seed=3)

    rng = np.random.default_rng(4)
    X, T = rng.standard_normal((1, 1, 4, 4)), rng.standard_normal((1, 3))
    exact = curvature.layer_ggn(pooled_net(), X, T, 0)
    factors = {}
    for approximation in ("reduce", "expand"):
        opt = optim.KFAC(pooled_net(), fisher="type2", conv_approximation=approximation)
        opt.step(X, T)  # the factors of step 0 are those at the weights before the step
        factors[approximation] = curvature.kron(opt.state.A[0], opt.state.G[0])
    assert_close(factors["reduce"], exact, rtol=1e-12, what="KFAC-reduce vs the exact GGN block")
    assert not np.allclose(factors["expand"], exact, rtol=1e-3)


def _source_of_wrong_shape(z, draw):
    return np.zeros((z.shape[0], z.shape[1] + 1))


BAD = [
    (
        "source_not_callable",
        lambda b: optim.KFAC(conv_net(), target_source=3),
        TypeError,
        "target_source must be a callable",
    ),
    (
        "averaging_unknown",
        lambda b: optim.KFAC(conv_net(), averaging="bogus"),
        ValueError,
        "averaging must be one of 'warm_start', 'constant'",
    ),
    (
        "approximation_kind",
        lambda b: optim.KFAC(conv_net(), conv_approximation=1),
        TypeError,
        "conv_approximation must be a KFACApproximation",
    ),
    (
        "prepass_warm_start",
        lambda b: optim.KFAC(conv_net()).initialize_factors(b),
        ValueError,
        "needs averaging='constant'",
    ),
    (
        "prepass_array",
        lambda b: optim.KFAC(conv_net(), averaging="constant").initialize_factors(b[0][0]),
        TypeError,
        "batches must be an iterable",
    ),
    (
        "prepass_not_pairs",
        lambda b: optim.KFAC(conv_net(), averaging="constant").initialize_factors([b[0][0]]),
        TypeError,
        r"batches must yield \(X, T\) pairs",
    ),
    (
        "prepass_empty",
        lambda b: optim.KFAC(conv_net(), averaging="constant").initialize_factors([]),
        ValueError,
        "at least one minibatch",
    ),
]


@pytest.mark.parametrize(
    ("call", "error", "pattern"), [r[1:] for r in BAD], ids=[r[0] for r in BAD]
)
def test_bad_options_are_refused(batches, call, error, pattern):
    with pytest.raises(error) as raised:
        call(batches)
    assert re.search(pattern, str(raised.value)), str(raised.value)


def test_a_prepass_after_a_step_and_bad_sourced_targets_change_nothing(batches):
    model = conv_net()
    opt = optim.KFAC(model, target_source=_source_of_wrong_shape, averaging="constant")
    weights, state = model.weights(), opt.state_dict()
    with pytest.raises(ValueError, match="targets t must have the shape of the output z"):
        opt.step(*batches[0])
    after = opt.state_dict()
    assert all(np.array_equal(a, b) for a, b in zip(model.weights(), weights, strict=True))
    assert all(np.array_equal(after[k], state[k]) for k in state)
    good = optim.KFAC(conv_net(), averaging="constant")
    good.step(*batches[0])
    with pytest.raises(ValueError, match="before the first step"):
        good.initialize_factors(batches)
