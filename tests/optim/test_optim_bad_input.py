"""Bad input to the baselines: rejected options, layers, minibatches, and refused non-finite steps.

Conventions §10: a ValueError/TypeError naming the argument, and a rejected call changes nothing —
checked bit for bit on the whole ``state_dict`` (weights, state, step counter).
"""

import numpy as np
import pytest

from kfqn_ref import nn, optim
from tests.optim import TASKS, minibatches

OPTIMIZERS = [optim.SGDMomentum, optim.Adam, optim.RMSprop, optim.KFAC, optim.Shampoo]
BATCH = 16
#: Scale of the huge weights that make the squared-error loss overflow to inf.
HUGE = 1e200


def autoencoder_batch():
    X, T = TASKS["autoencoder"][1](BATCH)
    return X, T


# ---------------------------------------------------------------------------------------------
# Options.
# ---------------------------------------------------------------------------------------------

BAD_OPTIONS = [
    (optim.SGDMomentumConfig, "lr", -0.1),
    (optim.SGDMomentumConfig, "lr", 0.0),
    (optim.SGDMomentumConfig, "momentum", 1.0),
    (optim.SGDMomentumConfig, "weight_decay", -1e-5),
    (optim.SGDMomentumConfig, "form", "heavy_ball"),
    (optim.AdamConfig, "lr", -1e-3),
    (optim.AdamConfig, "beta1", 1.0),
    (optim.AdamConfig, "beta1", -0.1),
    (optim.AdamConfig, "beta2", 1.5),
    (optim.AdamConfig, "eps", 0.0),
    (optim.RMSpropConfig, "decay", 1.0),
    (optim.RMSpropConfig, "momentum", -0.5),
    (optim.RMSpropConfig, "eps", -1e-8),
    (optim.KFACConfig, "lr", -0.3),
    (optim.KFACConfig, "damping", 0.0),
    (optim.KFACConfig, "damping", -0.3),
    (optim.KFACConfig, "inverse_interval", 0),
    (optim.KFACConfig, "factor_interval", 0),
    (optim.KFACConfig, "ema_decay", 1.0),
    (optim.KFACConfig, "momentum", 1.0),
    (optim.KFACConfig, "damping_split", "pi"),
    (optim.KFACConfig, "fisher", "exact"),
    (optim.KFACConfig, "seed", -1),
    (optim.ShampooConfig, "lr", -0.1),
    (optim.ShampooConfig, "eps", 0.0),
    (optim.ShampooConfig, "root_interval", 0),
    (optim.ShampooConfig, "momentum", 1.0),
    (optim.ShampooConfig, "weight_decay", -1.0),
]


@pytest.mark.parametrize(("config_class", "field", "value"), BAD_OPTIONS)
def test_out_of_range_options_raise_value_error_naming_the_field(config_class, field, value):
    with pytest.raises(ValueError, match=field):
        config_class(**{field: value})


BADLY_TYPED_OPTIONS = [
    (optim.SGDMomentumConfig, "nesterov", 1),
    (optim.AdamConfig, "lr", "0.001"),
    (optim.KFACConfig, "inverse_interval", 20.0),
    (optim.ShampooConfig, "root_interval", True),
]


@pytest.mark.parametrize(("config_class", "field", "value"), BADLY_TYPED_OPTIONS)
def test_badly_typed_options_raise_type_error_naming_the_field(config_class, field, value):
    with pytest.raises(TypeError, match=field):
        config_class(**{field: value})


def test_non_finite_option_is_rejected():
    with pytest.raises(ValueError, match="lr must be finite"):
        optim.AdamConfig(lr=float("nan"))


def test_config_and_keyword_options_together_are_rejected():
    with pytest.raises(TypeError, match="either a config object or keyword options"):
        optim.Adam(TASKS["autoencoder"][0](), optim.AdamConfig(), lr=0.1)


# ---------------------------------------------------------------------------------------------
# Layers.
# ---------------------------------------------------------------------------------------------


class ElementwiseScale(nn.TrainableLayer):
    """A trainable layer that is neither Dense nor Conv2d (only what construction needs)."""

    def __init__(self, width: int):
        self.weight_shape = (width, 1)
        self.has_bias = False
        self.fan_in = 1


@pytest.mark.parametrize("optimizer_class", [optim.KFAC, optim.Shampoo])
def test_kronecker_factored_methods_reject_other_trainable_layers(optimizer_class):
    model = nn.Sequential([nn.Dense(4, 3), ElementwiseScale(3)], nn.SquaredError())
    with pytest.raises(TypeError, match=r"layers\[1\] is a ElementwiseScale"):
        optimizer_class(model)


@pytest.mark.parametrize("optimizer_class", OPTIMIZERS)
def test_model_must_be_a_sequential(optimizer_class):
    with pytest.raises(TypeError, match="model must be a kfqn_ref.nn.Sequential"):
        optimizer_class([nn.Dense(4, 3)])


# ---------------------------------------------------------------------------------------------
# Minibatches: rejected before anything changes.
# ---------------------------------------------------------------------------------------------


def assert_state_dict_unchanged(optimizer, before: dict) -> None:
    after = optimizer.state_dict()
    assert after.keys() == before.keys()
    for key in after:
        assert np.array_equal(after[key], before[key]), f"{key} changed by a refused step"


def stepped(optimizer_class, model=None):
    """An optimizer (on the autoencoder unless ``model``) after two steps: non-trivial state."""
    model = TASKS["autoencoder"][0]() if model is None else model
    optimizer = optimizer_class(model)
    X, T = TASKS["autoencoder"][1](2 * BATCH)
    for X_batch, T_batch in minibatches(X, T, BATCH, 2):
        optimizer.step(X_batch, T_batch)
    return optimizer


def sample_mismatch(X, T):
    return X, T[:-1]


def nan_in_X(X, T):
    X = X.copy()
    X[3, 5] = np.nan
    return X, T


def float32_X(X, T):
    return X.astype(np.float32), T


BAD_BATCHES = [
    (sample_mismatch, ValueError, "same number of samples"),
    (nan_in_X, ValueError, "X contains NaN or Inf"),
    (float32_X, TypeError, "X has dtype float32"),
]


@pytest.mark.parametrize(("corrupt", "error", "message"), BAD_BATCHES)
@pytest.mark.parametrize("optimizer_class", OPTIMIZERS)
def test_bad_minibatch_is_rejected_and_changes_nothing(optimizer_class, corrupt, error, message):
    optimizer = stepped(optimizer_class)
    before = optimizer.state_dict()
    with pytest.raises(error, match=message):
        optimizer.step(*corrupt(*autoencoder_batch()))
    assert_state_dict_unchanged(optimizer, before)


# ---------------------------------------------------------------------------------------------
# Non-finite losses and gradients: the step is refused, nothing changes.
# ---------------------------------------------------------------------------------------------


def squared_error_net() -> nn.Sequential:
    return nn.Sequential([nn.Dense(16, 8), nn.Tanh(), nn.Dense(8, 16)], nn.SquaredError(), seed=0)


@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")
@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")
@pytest.mark.parametrize("optimizer_class", OPTIMIZERS)
def test_overflowing_loss_refuses_the_step(optimizer_class):
    """Output weights of 1e200 give outputs ~1e200 and a squared error of inf."""
    optimizer = stepped(optimizer_class, squared_error_net())
    weights = optimizer.model.weights()
    optimizer.model.set_weights(weights[:-1] + [np.full_like(weights[-1], HUGE)])
    before = optimizer.state_dict()
    with pytest.raises(optim.NonFiniteError, match="loss is not finite"):
        optimizer.step(*autoencoder_batch())
    assert_state_dict_unchanged(optimizer, before)


@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")
@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")
@pytest.mark.parametrize("optimizer_class", OPTIMIZERS)
def test_overflowing_forward_pass_refuses_the_step(optimizer_class):
    """Output weights at the largest float64 make the network output itself infinite."""
    optimizer = stepped(optimizer_class, squared_error_net())
    weights = optimizer.model.weights()
    largest = np.full_like(weights[-1], np.finfo(np.float64).max)
    optimizer.model.set_weights(weights[:-1] + [largest])
    before = optimizer.state_dict()
    with pytest.raises(optim.NonFiniteError, match="network output z is not finite"):
        optimizer.step(*autoencoder_batch())
    assert_state_dict_unchanged(optimizer, before)


@pytest.mark.parametrize("optimizer_class", OPTIMIZERS)
def test_nan_gradient_refuses_the_step(optimizer_class, monkeypatch):
    """The first layer's backward is patched to return a NaN weight gradient."""
    optimizer = stepped(optimizer_class)
    layer = optimizer.model.layers[0]
    original_backward = layer.backward

    def poisoned_backward(*args, **kwargs):
        result = original_backward(*args, **kwargs)
        return result if result.grad is None else result._replace(grad=result.grad * np.nan)

    monkeypatch.setattr(layer, "backward", poisoned_backward)
    before = optimizer.state_dict()
    with pytest.raises(optim.NonFiniteError, match="not finite"):
        optimizer.step(*autoencoder_batch())
    assert_state_dict_unchanged(optimizer, before)
