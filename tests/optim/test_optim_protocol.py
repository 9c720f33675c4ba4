"""The Optimizer protocol for every baseline: save/load via ``numpy.savez``, bit-identical resume.

Independent route: the resumed trajectory is compared with the uninterrupted run of the same
optimizer on the same minibatches (``numpy.array_equal`` on weights, ``==`` on losses); the fresh
model is built with ANOTHER seed, so the resumed weights can only come from the state file.
"""

import dataclasses
import enum
import json

import numpy as np
import pytest

from kfqn_ref import nn, optim
from kfqn_ref.curvature.factors import FisherType
from tests.optim import TASKS, minibatches

SAVE_AT = 3
CONTINUE = 4
BATCH = 16
SAMPLES = 48
FRESH_SEED = 1

#: Options that make every piece of state matter after SAVE_AT steps: momentum buffers, moment
#: estimates, running factors, stale inverses/roots (refreshed at step 2, used at steps 3 and 4).
SETTINGS = {
    "SGDMomentum": (optim.SGDMomentum, {"lr": 0.1, "nesterov": True}),
    "Adam": (optim.Adam, {"lr": 0.01}),
    "RMSprop": (optim.RMSprop, {"lr": 0.01, "momentum": 0.5}),
    "KFAC": (optim.KFAC, {"lr": 0.1, "inverse_interval": 2}),
    "Shampoo": (optim.Shampoo, {"lr": 0.1, "momentum": 0.9, "root_interval": 2}),
}


def build(name: str, task: str, seed: int = 0):
    optimizer_class, options = SETTINGS[name]
    return optimizer_class(TASKS[task][0](seed), **options)


def batches(task: str):
    X, T = TASKS[task][1](SAMPLES)
    return minibatches(X, T, BATCH, SAVE_AT + CONTINUE)


def run(optimizer, stream):
    """Losses and weights after each step of ``stream``."""
    return [(optimizer.step(X, T), optimizer.model.weights()) for X, T in stream]


@pytest.mark.parametrize("task", sorted(TASKS))
@pytest.mark.parametrize("name", sorted(SETTINGS))
def test_resume_from_a_saved_state_is_bit_identical(tmp_path, name, task):
    stream = batches(task)
    original = build(name, task)
    run(original, stream[:SAVE_AT])
    path = tmp_path / "state.npz"
    optim.save_state(path, original.state_dict())
    uninterrupted = run(original, stream[SAVE_AT:])

    resumed = build(name, task, seed=FRESH_SEED)
    resumed.load_state_dict(optim.load_state(path))
    assert resumed.step_count == SAVE_AT
    for k, ((loss, weights), (expected_loss, expected_weights)) in enumerate(
        zip(run(resumed, stream[SAVE_AT:]), uninterrupted, strict=True)
    ):
        assert loss == expected_loss, f"{name}/{task}: loss differs at step {SAVE_AT + k}"
        for i, (w, expected) in enumerate(zip(weights, expected_weights, strict=True)):
            assert np.array_equal(w, expected), f"{name}/{task}: layer {i} at step {SAVE_AT + k}"
    final, expected_final = resumed.state_dict(), original.state_dict()
    assert final.keys() == expected_final.keys()
    for key in final:
        assert np.array_equal(final[key], expected_final[key]), f"{name}/{task}: {key}"


def assert_unchanged(optimizer, before: dict) -> None:
    after = optimizer.state_dict()
    assert after.keys() == before.keys()
    for key in after:
        assert np.array_equal(after[key], before[key]), f"{key} changed by a refused load"


@pytest.mark.parametrize("name", sorted(SETTINGS))
def test_a_state_dict_of_another_optimizer_is_refused_and_changes_nothing(name):
    other = "Adam" if name != "Adam" else "SGDMomentum"
    donor = build(other, "autoencoder")
    donor.step(*batches("autoencoder")[0])
    target = build(name, "autoencoder")
    before = target.state_dict()
    with pytest.raises(ValueError, match="written by optimizer"):
        target.load_state_dict(donor.state_dict())
    assert_unchanged(target, before)


@pytest.mark.parametrize("name", sorted(SETTINGS))
def test_a_state_dict_of_another_model_shape_is_refused_and_changes_nothing(name):
    donor = build(name, "cnn")
    donor.step(*batches("cnn")[0])
    target = build(name, "autoencoder")
    before = target.state_dict()
    with pytest.raises(ValueError, match="shape"):
        target.load_state_dict(donor.state_dict())
    assert_unchanged(target, before)


def test_a_state_dict_of_another_configuration_is_refused():
    donor = optim.KFAC(TASKS["autoencoder"][0](), inverse_interval=3)
    target = optim.KFAC(TASKS["autoencoder"][0](), inverse_interval=2)
    with pytest.raises(ValueError, match="config.inverse_interval"):
        target.load_state_dict(donor.state_dict())


@pytest.mark.parametrize("name", sorted(SETTINGS))
def test_state_dict_holds_only_plain_arrays(name):
    optimizer = build(name, "cnn")
    optimizer.step(*batches("cnn")[0])
    for key, value in optimizer.state_dict().items():
        assert isinstance(value, np.ndarray) and value.dtype != object, key


@pytest.mark.parametrize("name", sorted(SETTINGS))
def test_a_float32_model_keeps_float32_weights_and_state(name):
    """conventions §7: float32 is chosen per model; the optimizer computes in the model's dtype."""
    optimizer_class, options = SETTINGS[name]
    model = nn.Sequential(
        [nn.Dense(16, 8), nn.Sigmoid(), nn.Dense(8, 16)], nn.SigmoidCrossEntropy(), dtype=np.float32
    )
    optimizer = optimizer_class(model, **options)
    X, T = TASKS["autoencoder"][1](BATCH)
    losses = [optimizer.step(X.astype(np.float32), T.astype(np.float32)) for _ in range(2)]
    assert np.all(np.isfinite(losses))
    for key, value in optimizer.state_dict().items():
        if key.startswith(("weights.", "state.")) and value.dtype.kind == "f":
            assert value.dtype == np.float32, f"{name}: {key} is {value.dtype}"


@pytest.mark.parametrize(
    ("name", "key"),
    [
        ("Adam", "state.second_moment.1"),
        ("RMSprop", "state.square_average.0"),
    ],
)
def test_a_negative_mean_square_is_refused_naming_the_entry(name, key):
    """A mean of squares is >= 0; a negative one would make the step take sqrt of it."""
    donor = build(name, "autoencoder")
    donor.step(*batches("autoencoder")[0])
    flat = donor.state_dict()
    corrupt = flat[key].copy()
    corrupt.flat[0] = -1e-3
    target = build(name, "autoencoder", seed=FRESH_SEED)
    before = target.state_dict()
    with pytest.raises(ValueError, match=f"'{key}' must be >= 0"):
        target.load_state_dict(dict(flat, **{key: corrupt}))
    assert_unchanged(target, before)


@pytest.mark.parametrize("name", sorted(SETTINGS))
def test_entries_the_optimizer_does_not_have_are_refused_and_change_nothing(name):
    donor = build(name, "autoencoder")
    donor.step(*batches("autoencoder")[0])
    flat = donor.state_dict()
    layers = len(donor.model.trainable_indices)
    target = build(name, "autoencoder", seed=FRESH_SEED)
    before = target.state_dict()
    with pytest.raises(ValueError, match="more weight arrays than the model has trainable layers"):
        target.load_state_dict(dict(flat, **{f"weights.{layers}": flat["weights.0"]}))
    assert_unchanged(target, before)
    with pytest.raises(ValueError, match=r"does not have: \['state.extra'\]"):
        target.load_state_dict(dict(flat, **{"state.extra": np.zeros(2)}))
    assert_unchanged(target, before)
    with pytest.raises(ValueError, match=r"'step_count' must be >= 0, got -1"):
        target.load_state_dict(dict(flat, step_count=np.array(-1)))
    assert_unchanged(target, before)


#: One configuration per class, enum options away from their defaults where there is a choice.
CONFIGS_TO_WRITE_DOWN = [
    optim.SGDMomentumConfig(lr=0.05, nesterov=True, form=optim.MomentumForm.AVERAGE),
    optim.AdamConfig(lr=3e-4, beta2=0.99, weight_decay=1e-5),
    optim.RMSpropConfig(momentum=0.5),
    optim.KFACConfig(
        momentum_form=optim.MomentumForm.HEAVY_BALL,
        fisher=FisherType.TYPE2,
        damping_split=optim.KFACDampingSplit.EQUAL,
        seed=7,
    ),
    optim.ShampooConfig(root_interval=3, momentum_form=optim.MomentumForm.HEAVY_BALL),
    optim.KBFGSConfig(variant=optim.KBFGSVariant.AUTHORS_2020, damping=0.1),
    optim.KBFGSLConfig(
        damping_split=optim.KBFGSDampingSplit.SQRT_T, memory=5, conv_position_average=True
    ),
    optim.KBFGSLConfig(variant=optim.KBFGSVariant.CONVERGENT, memory_light=True, momentum=0.0),
]


@pytest.mark.parametrize("config", CONFIGS_TO_WRITE_DOWN, ids=lambda c: type(c).__name__)
def test_every_configuration_round_trips_through_json(config):
    """config -> dict of plain values (enums by value, as summary.json spells them) -> JSON ->
    ``Config(**dict)`` gives an equal configuration with enum members, not strings."""
    plain = {
        key: value.value if isinstance(value, enum.Enum) else value
        for key, value in dataclasses.asdict(config).items()
    }
    assert all(isinstance(value, bool | int | float | str) for value in plain.values())
    restored = type(config)(**json.loads(json.dumps(plain)))
    assert restored == config
    for key, value in dataclasses.asdict(config).items():
        assert type(getattr(restored, key)) is type(value), key


def test_an_optimizer_accepts_enum_options_as_strings():
    model = TASKS["autoencoder"][0]()
    assert optim.KBFGS(model, variant="2020").config.variant is optim.KBFGSVariant.AUTHORS_2020
    kfac = optim.KFAC(model, damping_split="equal", momentum_form="heavy_ball", fisher="type2")
    assert kfac.config == optim.KFACConfig(
        damping_split=optim.KFACDampingSplit.EQUAL,
        momentum_form=optim.MomentumForm.HEAVY_BALL,
        fisher=FisherType.TYPE2,
    )
