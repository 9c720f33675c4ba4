"""KBFGS / KBFGSL as objects: state round trip, assumption (iii), dtypes, and bad input.

Expected values: bit-identical continuation of an uninterrupted run (state dict); the
preconditioner read from the state BEFORE a step (``opt.precondition``) applied to the step's own
regularised gradient (assumption (iii)); error types and messages of conventions §10.
"""

import numpy as np
import pytest
from helpers.compare import assert_close

from kfqn_ref import nn
from kfqn_ref.optim import (
    KBFGS,
    KBFGSL,
    Adam,
    KBFGSDampingSplit,
    KBFGSVariant,
    NonFiniteError,
    load_state,
    save_state,
)
from kfqn_ref.optim.state_io import iter_leaves
from kfqn_ref.quasi_newton import SkipReason, convergent_eigenvalue_bounds, lbfgs_inverse_matrix

V = KBFGSVariant
N = 6


def dense_model(seed=0, dtype=np.float64, loss=None):
    layers = [nn.Dense(5, 4), nn.Tanh(), nn.Dense(4, 3)]
    return nn.Sequential(layers, loss=loss or nn.SoftmaxCrossEntropy(), seed=seed, dtype=dtype)


def conv_model(seed=0, dtype=np.float64, loss=None):
    layers = [
        nn.Conv2d(1, 2, 3, padding=1),
        nn.ReLU(),
        nn.AvgPool2d(2),
        nn.Flatten(),
        nn.Dense(8, 3),
    ]
    return nn.Sequential(layers, loss=loss or nn.SoftmaxCrossEntropy(), seed=seed, dtype=dtype)


def batches(model, count, seed=0, dtype=np.float64, targets="classes"):
    """``count`` minibatches of N inputs with class-index (or real, for squared error) targets."""
    rng = np.random.default_rng(seed)
    shape = (N, 5) if isinstance(model.layers[0], nn.Dense) else (N, 1, 4, 4)
    return [
        (
            rng.standard_normal(shape).astype(dtype),
            rng.integers(0, 3, size=N) if targets == "classes" else rng.standard_normal((N, 3)),
        )
        for _ in range(count)
    ]


CONFIGS = {
    "dense-KBFGS-2020-prepass": (dense_model, KBFGS, dict(variant=V.AUTHORS_2020)),
    "conv-KBFGS-2022-interval3": (conv_model, KBFGS, dict(update_interval=3)),
    "conv-KBFGSL-2022-sqrtT": (
        conv_model,
        KBFGSL,
        dict(memory=2, damping_split=KBFGSDampingSplit.SQRT_T),
    ),
    "conv-KBFGSL-memory-light": (conv_model, KBFGSL, dict(memory=3, memory_light=True)),
    "dense-KBFGSL-convergent": (
        dense_model,
        KBFGSL,
        dict(variant=V.CONVERGENT, memory=2, memory_light=True, momentum=0.0),
    ),
}


def start(case, seed=0):
    make_model, cls, options = CONFIGS[case]
    model = make_model(seed)
    opt = cls(model, **options)
    if "prepass" in case:
        opt.initialize_A(X for X, _ in batches(model, 2, seed=9))
    return opt


# --------------------------------------------------------------------------------------------
# State dict
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", sorted(CONFIGS))
def test_state_dict_round_trip_continues_bit_identically(case, tmp_path):
    """Save at step k (numpy.savez), load into a fresh optimizer on a fresh model, continue."""
    reference = start(case)
    stream = batches(reference.model, 7)
    for X, T in stream[:4]:
        reference.step(X, T)
    save_state(tmp_path / "kbfgs.npz", reference.state_dict())
    resumed = start(case, seed=5)  # other initial weights: everything must come from the file
    resumed.load_state_dict(load_state(tmp_path / "kbfgs.npz"))
    assert resumed.step_count == 4
    for X, T in stream[4:]:
        assert resumed.step(X, T) == reference.step(X, T)
        for ours, theirs in zip(resumed.model.weights(), reference.model.weights(), strict=True):
            assert np.array_equal(ours, theirs)
    flat, expected = resumed.state_dict(), reference.state_dict()
    assert flat.keys() == expected.keys()
    assert all(np.array_equal(flat[key], expected[key]) for key in flat)


def test_state_dict_from_another_model_optimizer_or_configuration_is_refused():
    opt = start("conv-KBFGSL-memory-light")
    opt.step(*batches(opt.model, 1)[0])
    before = opt.state_dict()
    other_model = KBFGSL(dense_model(), memory=3, memory_light=True)
    with pytest.raises(ValueError, match="shape"):
        other_model.load_state_dict(before)
    other_optimizer = KBFGS(conv_model())
    with pytest.raises(ValueError, match="written by optimizer 'KBFGSL'"):
        other_optimizer.load_state_dict(before)
    other_config = KBFGSL(conv_model(), memory=4, memory_light=True)
    with pytest.raises(ValueError, match="config.memory"):
        other_config.load_state_dict(before)
    adam = Adam(conv_model())
    with pytest.raises(ValueError, match="written by optimizer"):
        adam.load_state_dict(before)
    assert all(np.array_equal(v, before[k]) for k, v in opt.state_dict().items())


def load_refused(opt, flat, error, message):
    """``load_state_dict(flat)`` raises ``error`` matching ``message`` and changes nothing."""
    before = opt.state_dict()
    with pytest.raises(error, match=message):
        opt.load_state_dict(flat)
    after = opt.state_dict()
    assert after.keys() == before.keys()
    assert all(np.array_equal(after[key], before[key]) for key in before)


def saved_after_two_steps(case):
    opt = start(case)
    for X, T in batches(opt.model, 2):
        opt.step(X, T)
    return opt.state_dict()


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("step_count", np.array(-3), r"'step_count' must be >= 0, got -3"),
        (
            "state.layers.0.H_g.count",
            np.array(99),
            r"'state.layers.0.H_g.count' must lie in \[0, 3\] \(the memory\), got 99",
        ),
        (
            "state.layers.1.H_a.count",
            np.array(-1),
            r"'state.layers.1.H_a.count' must lie in \[0, 3\]",
        ),
        ("state.layers.0.H_g.gamma", np.array(-1.0), r"'state.layers.0.H_g.gamma' must be > 0"),
        ("state.layers.1.H_a.gamma", np.array(0.0), r"'state.layers.1.H_a.gamma' must be > 0"),
        (
            "state.layers.0.H_a.gamma",
            np.array(np.inf),
            r"'state.layers.0.H_a.gamma' must be finite",
        ),
        (
            "state.a_prepassed",
            np.array([True, False]),
            r"'state.a_prepassed' must be a boolean scalar",
        ),
        ("state.a_prepassed", np.array(1), r"'state.a_prepassed' must be a boolean scalar"),
    ],
)
def test_state_dict_values_out_of_range_are_refused_naming_the_entry(key, value, message):
    """Right shape and dtype, wrong value: a counter below 0 or above the memory (3), a scale
    gamma <= 0 or infinite, a flag that is not a 0-d boolean."""
    flat = saved_after_two_steps("conv-KBFGSL-memory-light")
    assert key in flat
    load_refused(
        start("conv-KBFGSL-memory-light", seed=3), dict(flat, **{key: value}), ValueError, message
    )


def test_state_dict_whose_count_claims_pairs_it_does_not_hold_is_refused():
    """Zero rows under a count of 2 (a forged or damaged state): refused at load, naming the
    entry, with the quasi-newton store rule (every stored pair has s^T y > 0)."""
    flat = saved_after_two_steps("conv-KBFGSL-memory-light")
    assert int(flat["state.layers.0.H_g.count"]) == 2
    forged = dict(flat, **{"state.layers.0.H_g.S": np.zeros_like(flat["state.layers.0.H_g.S"])})
    load_refused(
        start("conv-KBFGSL-memory-light", seed=3),
        forged,
        ValueError,
        r"state entry 'state.layers.0.H_g': state.count = 2 claims stored pairs with s\^T y > 0",
    )


def test_state_dict_with_entries_this_optimizer_does_not_have_is_refused():
    flat = saved_after_two_steps("conv-KBFGSL-memory-light")
    fresh = start("conv-KBFGSL-memory-light", seed=3)
    load_refused(
        fresh,
        dict(flat, **{"state.bogus": np.zeros(3)}),
        ValueError,
        r"entries this optimizer does not have: \['state.bogus'\]",
    )
    # a dense-H_a state has no H_a.count: loading it into a memory-light one is refused
    dense_H_a = KBFGSL(conv_model(), memory=3)
    dense_H_a.step(*batches(dense_H_a.model, 1)[0])
    light = start("conv-KBFGSL-memory-light", seed=3)
    load_refused(
        light,
        dict(dense_H_a.state_dict(), **{"config.memory_light": np.array(True)}),
        ValueError,
        "state.layers.0.H_a",
    )
    # two trainable layers: a third weight array is refused by its own check
    third = dict(flat, **{"weights.2": np.zeros((3, 9))})
    load_refused(fresh, third, ValueError, "more weight arrays than the model has trainable layers")


# --------------------------------------------------------------------------------------------
# Assumption (iii) of the convergence theorem
# --------------------------------------------------------------------------------------------


def step_and_preconditioner_before(opt, X, T):
    """Take a step; return (direction, -P(regularised gradient)) with P read before the step."""
    weights = opt.model.weights()
    state = opt.state
    opt.step(X, T)
    tau = opt.config.weight_decay
    regularised = [g + tau * w for g, w in zip(opt.last_step.gradients, weights, strict=True)]
    after = opt.state
    opt.state = state  # read the preconditioner held before the step
    expected = [-p for p in opt.precondition(regularised)]
    opt.state = after
    return opt.last_step.directions, expected


@pytest.mark.parametrize("make_model", [dense_model, conv_model])
def test_convergent_variant_preconditioner_at_step_k_does_not_depend_on_minibatch_k(make_model):
    """Every step of the convergent variant is -H_g (grad f_k + tau W) H_a with factors fixed
    before minibatch k arrives; two different minibatches at the same step see the same
    factors. (The 2022 variant breaks this at step 0, where H_a is inverted from minibatch 0.)"""
    options = dict(
        variant=V.CONVERGENT, memory=3, memory_light=True, momentum=0.0, weight_decay=1e-3
    )
    opt = KBFGSL(make_model(), **options)
    stream = batches(opt.model, 6)
    for k, (X, T) in enumerate(stream):
        saved = opt.state_dict()
        directions, expected = step_and_preconditioner_before(opt, X, T)
        for layer_index, (p, q) in enumerate(zip(directions, expected, strict=True)):
            assert_close(p, q, rtol=1e-12, what=f"direction, step {k}, layer {layer_index}")
        twin = KBFGSL(make_model(seed=3), **options)
        twin.load_state_dict(saved)
        other_X, other_T = batches(opt.model, 1, seed=100 + k)[0]
        directions, expected = step_and_preconditioner_before(twin, other_X, other_T)
        for layer_index, (p, q) in enumerate(zip(directions, expected, strict=True)):
            assert_close(
                p,
                q,
                rtol=1e-12,
                what=f"direction on another minibatch, step {k}, layer {layer_index}",
            )
    practical = KBFGS(make_model(), momentum=0.0)
    directions, expected = step_and_preconditioner_before(practical, *stream[0])
    assert not np.allclose(directions[0], expected[0])


@pytest.mark.parametrize("make_model", [dense_model, conv_model])
def test_convergent_variant_factors_stay_within_the_derived_eigenvalue_bounds(make_model):
    """Assumption (iv): every factor is SPD within convergent_eigenvalue_bounds(gamma, mu1,
    mu2, memory) of docs/derivations/convergence.md [CV-7], [CV-8] (mu2 = lambda_G on the G side,
    lambda_A on the A side), here with a large step so that the pairs vary a lot."""
    opt = KBFGSL(
        make_model(),
        variant=V.CONVERGENT,
        memory=3,
        memory_light=True,
        momentum=0.0,
        lr=3.0,
        damping=0.1,
        hg_initial=0.5,
        ha_initial=2.0,
    )
    cfg, root = opt.config, float(np.sqrt(opt.config.damping))
    for X, T in batches(opt.model, 8):
        opt.step(X, T)
        for layer_index, layer in enumerate(opt.state.layers):
            for name, store, gamma in (
                ("H_g", layer.H_g, cfg.hg_initial),
                ("H_a", layer.H_a, cfg.ha_initial),
            ):
                low, high = convergent_eigenvalue_bounds(gamma, cfg.powell_mu1, root, cfg.memory)
                eigenvalues = np.linalg.eigvalsh(lbfgs_inverse_matrix(store))
                assert low <= eigenvalues[0] and eigenvalues[-1] <= high, (
                    layer_index,
                    name,
                    eigenvalues,
                )
    assert all(layer.H_a.count == cfg.memory for layer in opt.state.layers)


# --------------------------------------------------------------------------------------------
# dtypes
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", sorted(CONFIGS))
def test_float32_runs_stay_float32(case):
    make_model, cls, options = CONFIGS[case]
    opt = cls(make_model(dtype=np.float32), **options)
    for X, T in batches(opt.model, 3, dtype=np.float32):
        opt.step(X, T)
    for path, leaf in iter_leaves(opt.state, "state"):
        if isinstance(leaf, np.ndarray):
            assert leaf.dtype == np.float32, path
    assert all(p.dtype == np.float32 for p in opt.last_step.directions)
    assert all(w.dtype == np.float32 for w in opt.model.weights())


# --------------------------------------------------------------------------------------------
# Refused input that needs more than the table of tests/optim/test_bad_input.py
# --------------------------------------------------------------------------------------------


def test_G_update_is_skipped_where_H_g_has_lost_positive_definiteness():
    """``y^T H_g y <= 0`` (here ``H_g = 0`` for layer 0): the layer's G update is skipped and
    reported, instead of dividing by it as the authors' code does (docs/optimizers/kbfgs.md)."""
    opt = KBFGS(dense_model())
    first, second = batches(opt.model, 2)
    opt.step(*first)
    layers = list(opt.state.layers)
    layers[0] = layers[0]._replace(H_g=np.zeros_like(layers[0].H_g))
    opt.state = opt.state._replace(layers=tuple(layers))
    opt.step(*second)
    assert opt.last_step.pairs[0].g_update is SkipReason.NON_POSITIVE_CURVATURE
    assert not np.any(opt.state.layers[0].H_g)
    assert opt.last_step.pairs[1].g_update is SkipReason.NONE


def test_pre_pass_whose_running_A_overflows_is_refused_and_changes_nothing():
    """Inputs of 1e160 keep the forward pass finite but overflow ``a~ a~^T`` (1e320) in the
    first layer's running A; the pre-pass raises NonFiniteError naming the layer, leaves A and
    a_prepassed as they were, and the optimizer then steps as one without a pre-pass."""
    opt = KBFGS(dense_model())
    twin = KBFGS(dense_model())
    X, T = batches(opt.model, 1)[0]
    before = opt.state_dict()
    with (
        np.errstate(over="ignore", invalid="ignore"),
        pytest.raises(NonFiniteError, match="running A of trainable layer 0 is not finite"),
    ):
        opt.initialize_A([X, X * 1e160])
    assert opt.state.a_prepassed is False
    after = opt.state_dict()
    assert all(np.array_equal(after[key], before[key]) for key in before)
    assert opt.step(X, T) == twin.step(X, T)
    assert all(
        np.array_equal(a, b) for a, b in zip(opt.model.weights(), twin.model.weights(), strict=True)
    )
