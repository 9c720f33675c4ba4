"""Bad input to every optimizer: one table, one row per refused call.

A row is ``(id, make, call, error, pattern)``: ``make()`` builds the object the call must leave
unchanged (an optimizer, or ``None`` for a constructor that has nothing to change), ``call(obj)``
is the refused call, ``error`` its exception type and ``pattern`` a regex its message must match
(it names the argument). After the call, the optimizer's whole ``state_dict`` (weights, state,
step counter) is compared bit for bit with the one before, and a K-BFGS ``last_step`` must be the
same object.
"""

import numpy as np
import pytest

from kfqn_ref import nn, optim
from kfqn_ref.optim import (
    KBFGS,
    KBFGSL,
    KBFGSConfig,
    KBFGSLConfig,
    KBFGSVariant,
    NonFiniteError,
)
from tests.optim import TASKS, minibatches

V = KBFGSVariant
BASELINES = [optim.SGDMomentum, optim.Adam, optim.RMSprop, optim.KFAC, optim.Shampoo]
BATCH = 16
#: Scale of the huge weights that make the squared-error loss overflow to inf.
HUGE = 1e200
N = 6


# ---------------------------------------------------------------------------------------------
# Builders
# ---------------------------------------------------------------------------------------------


def autoencoder_batch():
    return TASKS["autoencoder"][1](BATCH)


def stepped(optimizer_class, model=None):
    """A baseline (on the autoencoder unless ``model``) after two steps: non-trivial state."""
    model = TASKS["autoencoder"][0]() if model is None else model
    optimizer = optimizer_class(model)
    X, T = TASKS["autoencoder"][1](2 * BATCH)
    for X_batch, T_batch in minibatches(X, T, BATCH, 2):
        optimizer.step(X_batch, T_batch)
    return optimizer


def squared_error_net() -> nn.Sequential:
    return nn.Sequential([nn.Dense(16, 8), nn.Tanh(), nn.Dense(8, 16)], nn.SquaredError(), seed=0)


def with_last_weights(optimizer, value):
    """``optimizer`` with every output-layer weight set to ``value``."""
    weights = optimizer.model.weights()
    optimizer.model.set_weights(weights[:-1] + [np.full_like(weights[-1], value)])
    return optimizer


def dense_model(seed=0, loss=None):
    layers = [nn.Dense(5, 4), nn.Tanh(), nn.Dense(4, 3)]
    return nn.Sequential(layers, loss=loss or nn.SoftmaxCrossEntropy(), seed=seed)


def conv_model(seed=0, loss=None):
    layers = [
        nn.Conv2d(1, 2, 3, padding=1),
        nn.ReLU(),
        nn.AvgPool2d(2),
        nn.Flatten(),
        nn.Dense(8, 3),
    ]
    return nn.Sequential(layers, loss=loss or nn.SoftmaxCrossEntropy(), seed=seed)


def batches(model, count, seed=0, targets="classes"):
    """``count`` minibatches of N inputs with class-index (or real, for squared error) targets."""
    rng = np.random.default_rng(seed)
    shape = (N, 5) if isinstance(model.layers[0], nn.Dense) else (N, 1, 4, 4)
    return [
        (
            rng.standard_normal(shape),
            rng.integers(0, 3, size=N) if targets == "classes" else rng.standard_normal((N, 3)),
        )
        for _ in range(count)
    ]


def kbfgs_batch(model, targets="classes"):
    return batches(model, 1, targets=targets)[0]


#: The K-BFGS configurations of tests/optim/test_kbfgs_api.py.
KBFGS_CASES = {
    "dense-KBFGS-2020-prepass": (dense_model, KBFGS, dict(variant=V.AUTHORS_2020)),
    "conv-KBFGS-2022-interval3": (conv_model, KBFGS, dict(update_interval=3)),
    "conv-KBFGSL-2022-sqrtT": (conv_model, KBFGSL, dict(memory=2, damping_split="sqrt_t")),
    "conv-KBFGSL-memory-light": (conv_model, KBFGSL, dict(memory=3, memory_light=True)),
    "dense-KBFGSL-convergent": (
        dense_model,
        KBFGSL,
        dict(variant=V.CONVERGENT, memory=2, memory_light=True, momentum=0.0),
    ),
}


def kbfgs_squared_error(case):
    """A K-BFGS case on squared error after one step on real-valued targets."""
    make_model, cls, options = KBFGS_CASES[case]
    opt = cls(make_model(loss=nn.SquaredError()), **options)
    opt.step(*kbfgs_batch(opt.model, targets="real"))
    return opt


def kbfgs_with_zero_first_column(case):
    """The first layer ignores input coordinate 0 (zero weight column)."""
    opt = kbfgs_squared_error(case)
    weights = opt.model.weights()
    weights[0][:, 0] = 0.0
    opt.model.set_weights(weights)
    return opt


def prepassed_2020():
    opt = KBFGS(dense_model(), variant=V.AUTHORS_2020)
    opt.initialize_A(X for X, _ in batches(opt.model, 2, seed=9))
    opt.step(*kbfgs_batch(opt.model))
    return opt


def huge_targets(opt):
    """Squared-error targets of 1e200 overflow the loss."""
    X, T = kbfgs_batch(opt.model, targets="real")
    return opt.step(X, T * 1e200)


def huge_first_input(opt):
    X, T = kbfgs_batch(opt.model, targets="real")
    X = X.copy()
    X[:, 0] = 1e308
    return opt.step(X, T * 1e5)


# ---------------------------------------------------------------------------------------------
# The table
# ---------------------------------------------------------------------------------------------


def scaled_inputs(opt, scale):
    X, T = kbfgs_batch(opt.model)
    return X * scale, T


def construct(config_class, **options):
    return lambda _: config_class(**options)


def nothing():
    """For a constructor row: there is no object the call could change."""
    return None


NONE = nothing

ROWS = []


def row(id, make, call, error, pattern):
    ROWS.append(pytest.param(make, call, error, pattern, id=id))


# Options of the baselines: out of range -> ValueError, wrong kind -> TypeError.
for config_class, field, value in [
    (optim.SGDMomentumConfig, "lr", -0.1),
    (optim.SGDMomentumConfig, "lr", 0.0),
    (optim.SGDMomentumConfig, "momentum", 1.0),
    (optim.SGDMomentumConfig, "weight_decay", -1e-5),
    (optim.SGDMomentumConfig, "form", "heavy-ball"),
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
    (optim.KFACConfig, "momentum_form", "nesterov"),
    (optim.KFACConfig, "damping_split", "PI"),
    (optim.KFACConfig, "fisher", "exact"),
    (optim.KFACConfig, "seed", -1),
    (optim.ShampooConfig, "lr", -0.1),
    (optim.ShampooConfig, "eps", 0.0),
    (optim.ShampooConfig, "root_interval", 0),
    (optim.ShampooConfig, "momentum", 1.0),
    (optim.ShampooConfig, "momentum_form", "Average"),
    (optim.ShampooConfig, "weight_decay", -1.0),
]:
    row(
        f"{config_class.__name__}-{field}={value!r}",
        NONE,
        construct(config_class, **{field: value}),
        ValueError,
        field,
    )
for config_class, field, value in [
    (optim.SGDMomentumConfig, "nesterov", 1),
    (optim.SGDMomentumConfig, "form", 0),
    (optim.AdamConfig, "lr", "0.001"),
    (optim.KFACConfig, "inverse_interval", 20.0),
    (optim.KFACConfig, "fisher", None),
    (optim.ShampooConfig, "root_interval", True),
]:
    row(
        f"{config_class.__name__}-{field}={value!r}",
        NONE,
        construct(config_class, **{field: value}),
        TypeError,
        field,
    )
row(
    "AdamConfig-lr=nan",
    NONE,
    construct(optim.AdamConfig, lr=float("nan")),
    ValueError,
    "lr must be finite",
)

# Options of K-BFGS.
for options, error, pattern in [
    (dict(lr=-0.1), ValueError, "lr must be > 0"),
    (dict(lr=0.0), ValueError, "lr must be > 0"),
    (dict(lr="0.1"), TypeError, "lr must be a real number"),
    (dict(damping=0.0), ValueError, "damping must be > 0"),
    (dict(damping=-1.0), ValueError, "damping must be > 0"),
    (dict(damping="x"), TypeError, "damping must be a real number"),
    (dict(powell_mu1=0.0), ValueError, r"powell_mu1 must lie in \(0, 1\)"),
    (dict(powell_mu1=1.0), ValueError, r"powell_mu1 must lie in \(0, 1\)"),
    (dict(powell_mu1=1.5), ValueError, r"powell_mu1 must lie in \(0, 1\)"),
    (dict(update_interval=0), ValueError, "update_interval must be an integer >= 1"),
    (dict(update_interval=2.0), TypeError, "update_interval must be an integer"),
    (dict(update_interval=2.5), TypeError, "update_interval must be an integer"),
    (dict(momentum=1.0), ValueError, r"momentum must lie in \[0, 1\)"),
    (dict(a_decay=-0.1), ValueError, r"a_decay must lie in \[0, 1\)"),
    (dict(pair_decay=1.0), ValueError, r"pair_decay must lie in \[0, 1\)"),
    (dict(weight_decay=-1e-5), ValueError, "weight_decay must be >= 0"),
    (dict(skip_threshold=-1.0), ValueError, "skip_threshold must be >= 0"),
    (dict(hg_initial=0.0), ValueError, "hg_initial must be > 0"),
    (dict(lr=float("nan")), ValueError, "lr must be finite"),
    (dict(variant="2021"), ValueError, "variant must be one of '2020', '2022', 'convergent'"),
    (dict(variant=2020), TypeError, "variant must be a KBFGSVariant or one of the strings"),
    (dict(damping_split="sqrtT"), ValueError, "damping_split must be one of 'equal', 'sqrt_t'"),
    (dict(conv_position_average=1), TypeError, "conv_position_average must be True or False"),
    (dict(variant=V.AUTHORS_2020, damping=2.0), ValueError, "damping <= 1"),
    (dict(variant="2020", damping=2.0), ValueError, "damping <= 1"),
    (dict(variant=V.CONVERGENT), ValueError, "use KBFGSL"),
]:
    row(f"KBFGSConfig-{options}", NONE, construct(KBFGSConfig, **options), error, pattern)
for options, error, pattern in [
    (dict(memory=0), ValueError, "memory must be an integer >= 1"),
    (dict(memory=2.5), TypeError, "memory must be an integer"),
    (dict(ha_initial=-1.0), ValueError, "ha_initial must be > 0"),
    (dict(memory_light="yes"), TypeError, "memory_light must be True or False"),
    (dict(variant=V.AUTHORS_2020, memory_light=True), ValueError, "variant 2020"),
    (dict(variant=V.CONVERGENT), ValueError, "memory_light=True"),
    (dict(variant="convergent", memory_light=True), ValueError, "momentum=0"),
]:
    row(f"KBFGSLConfig-{options}", NONE, construct(KBFGSLConfig, **options), error, pattern)

# Construction: model, configuration object, layers.
for cls in [*BASELINES, KBFGS, KBFGSL]:
    row(
        f"{cls.__name__}-model-not-Sequential",
        NONE,
        lambda _, cls=cls: cls([nn.Dense(4, 3)]),
        TypeError,
        "model must be a kfqn_ref.nn.Sequential",
    )
row(
    "Adam-config-and-keywords",
    NONE,
    lambda _: optim.Adam(TASKS["autoencoder"][0](), optim.AdamConfig(), lr=0.1),
    TypeError,
    "either a config object or keyword options",
)
row(
    "KBFGSL-given-KBFGSConfig",
    NONE,
    lambda _: KBFGSL(dense_model(), KBFGSConfig()),
    TypeError,
    "config must be a KBFGSLConfig",
)
row(
    "KBFGS-given-KBFGSLConfig",
    NONE,
    lambda _: KBFGS(dense_model(), KBFGSLConfig()),
    TypeError,
    "config must be a KBFGSConfig",
)


class ElementwiseScale(nn.TrainableLayer):
    """A trainable layer that is neither Dense nor Conv2d (only what construction needs)."""

    def __init__(self, width: int):
        self.weight_shape = (width, 1)
        self.has_bias = False
        self.fan_in = 1


class Diagonal(nn.TrainableLayer):
    """A trainable layer K-BFGS does not know."""

    weight_shape, has_bias, fan_in = (2, 3), True, 2

    def output_shape(self, input_shape, where):
        return input_shape


for cls in [optim.KFAC, optim.Shampoo]:
    row(
        f"{cls.__name__}-unsupported-layer",
        NONE,
        lambda _, cls=cls: cls(
            nn.Sequential([nn.Dense(4, 3), ElementwiseScale(3)], nn.SquaredError())
        ),
        TypeError,
        r"layers\[1\] is a ElementwiseScale",
    )
for cls in [KBFGS, KBFGSL]:
    row(
        f"{cls.__name__}-unsupported-layer",
        NONE,
        lambda _, cls=cls: cls(nn.Sequential([nn.Dense(3, 2), Diagonal()], loss=nn.SquaredError())),
        TypeError,
        r"layers\[1\] is a Diagonal",
    )
row(
    "KBFGS-2020-on-conv",
    NONE,
    lambda _: KBFGS(conv_model(), variant=V.AUTHORS_2020),
    TypeError,
    "variant 2020 is the authors' code for dense nets",
)


# Minibatches the baselines reject before anything changes.
def sample_mismatch(X, T):
    return X, T[:-1]


def nan_in_X(X, T):
    X = X.copy()
    X[3, 5] = np.nan
    return X, T


def float32_X(X, T):
    return X.astype(np.float32), T


for cls in BASELINES:
    for corrupt, error, pattern in [
        (sample_mismatch, ValueError, "same number of samples"),
        (nan_in_X, ValueError, "X contains NaN or Inf"),
        (float32_X, TypeError, "X has dtype float32"),
    ]:
        row(
            f"{cls.__name__}-{corrupt.__name__}",
            lambda cls=cls: stepped(cls),
            lambda opt, corrupt=corrupt: opt.step(*corrupt(*autoencoder_batch())),
            error,
            pattern,
        )
    row(
        f"{cls.__name__}-X-a-list",
        lambda cls=cls: stepped(cls),
        lambda opt: opt.step(autoencoder_batch()[0].tolist(), autoencoder_batch()[1]),
        TypeError,
        "X must be an array",
    )
    # Non-finite losses, outputs and gradients: the step is refused.
    row(
        f"{cls.__name__}-overflowing-loss",
        lambda cls=cls: with_last_weights(stepped(cls, squared_error_net()), HUGE),
        lambda opt: opt.step(*autoencoder_batch()),
        NonFiniteError,
        "loss is not finite",
    )
    row(
        f"{cls.__name__}-overflowing-forward-pass",
        lambda cls=cls: with_last_weights(
            stepped(cls, squared_error_net()), np.finfo(np.float64).max
        ),
        lambda opt: opt.step(*autoencoder_batch()),
        NonFiniteError,
        "network output z is not finite",
    )

# Minibatches K-BFGS rejects.
row(
    "KBFGS-sample-mismatch",
    lambda: KBFGS(conv_model(), update_interval=3),
    lambda opt: opt.step(kbfgs_batch(opt.model)[0], kbfgs_batch(opt.model)[1][:-1]),
    ValueError,
    "same number of samples",
)
row(
    "KBFGS-image-of-the-wrong-size",
    lambda: KBFGS(conv_model(), update_interval=3),
    lambda opt: opt.step(kbfgs_batch(opt.model)[0][:, :, :3], kbfgs_batch(opt.model)[1]),
    ValueError,
    r"expected input of shape \(N, 8\), got \(6, 4\)",
)
for case in sorted(KBFGS_CASES):
    row(
        f"{case}-overflowing-loss",
        lambda case=case: kbfgs_squared_error(case),
        lambda opt: opt.step(
            kbfgs_batch(opt.model, targets="real")[0],
            kbfgs_batch(opt.model, targets="real")[1] * 1e200,
        ),
        NonFiniteError,
        "loss is not finite",
    )
for case in sorted(case for case in KBFGS_CASES if case.startswith("dense")):
    # An input coordinate of 1e308 that the first layer ignores leaves the loss finite but
    # overflows that layer's gradient.
    row(
        f"{case}-overflowing-gradient",
        lambda case=case: kbfgs_with_zero_first_column(case),
        huge_first_input,
        NonFiniteError,
        "gradient of trainable layer 0 is not finite",
    )
# Huge inputs keep loss and gradients finite but overflow a curvature pair.
for scale, pattern in [
    (1e200, r"G-side s\^T s \+ y\^T y of trainable layer 0 is not finite"),
    (1e130, "A-side curvature y_a of trainable layer 0 is not finite"),
]:
    row(
        f"KBFGS-2020-curvature-overflow-{scale:g}",
        prepassed_2020,
        lambda opt, scale=scale: opt.step(
            kbfgs_batch(opt.model)[0] * scale, kbfgs_batch(opt.model)[1]
        ),
        NonFiniteError,
        pattern,
    )

# The A pre-pass and the preconditioner.
row(
    "initialize_A-one-array",
    lambda: KBFGS(dense_model()),
    lambda opt: opt.initialize_A(kbfgs_batch(opt.model)[0]),
    TypeError,
    r"inputs must be an iterable of input arrays.*\[X\]",
)
row(
    "initialize_A-no-minibatch",
    lambda: KBFGS(dense_model()),
    lambda opt: opt.initialize_A([]),
    ValueError,
    "at least one minibatch",
)


def kbfgs_after_one_step():
    opt = KBFGS(dense_model())
    opt.step(*kbfgs_batch(opt.model))
    return opt


row(
    "initialize_A-after-a-step",
    kbfgs_after_one_step,
    lambda opt: opt.initialize_A([kbfgs_batch(opt.model)[0]]),
    ValueError,
    "before the first step",
)
row(
    "initialize_A-without-running-A",
    lambda: KBFGSL(dense_model(), memory_light=True),
    lambda opt: opt.initialize_A([kbfgs_batch(opt.model)[0]]),
    ValueError,
    "no layer keeps a running A",
)
row(
    "precondition-wrong-count",
    lambda: KBFGSL(dense_model(), memory_light=True),
    lambda opt: opt.precondition([np.zeros((4, 6))]),
    ValueError,
    "expected 2 matrices",
)

row(
    "precondition-nan-matrix",
    lambda: KBFGSL(dense_model(), memory_light=True),
    lambda opt: opt.precondition([np.full((4, 6), np.nan), np.zeros((3, 5))]),
    ValueError,
    r"matrices\[0\] contains NaN or Inf",
)
row(
    "precondition-wrong-shape",
    lambda: KBFGSL(dense_model(), memory_light=True),
    lambda opt: opt.precondition([np.zeros((4, 6)), np.zeros((5, 3))]),
    ValueError,
    r"matrices\[1\] must have shape \(3, 5\), got \(5, 3\)",
)
row(
    "precondition-float32-matrix",
    lambda: KBFGSL(dense_model(), memory_light=True),
    lambda opt: opt.precondition([np.zeros((4, 6), np.float32), np.zeros((3, 5))]),
    TypeError,
    r"matrices\[0\] has dtype float32 but float64 was expected",
)


# Arrays that are not plain ndarrays, and minibatches of the wrong form (docs/reliability.md).
def every_optimizer():
    """``(id, make, batch)`` for each baseline and K-BFGS case after a step, and a minibatch."""
    for cls in BASELINES:
        yield cls.__name__, lambda cls=cls: stepped(cls), lambda opt: autoencoder_batch()
    for case in sorted(KBFGS_CASES):
        yield (
            case,
            lambda case=case: kbfgs_squared_error(case),
            lambda opt: kbfgs_batch(opt.model, targets="real"),
        )


PLAIN = r"must be an array \(a plain numpy.ndarray, not a numpy.matrix or a masked array\)"
for name, make, good_batch in every_optimizer():
    for corrupt, change, error, pattern in [
        ("X-matrix", lambda X, T: (np.asmatrix(X.reshape(len(X), -1)), T), TypeError, "X " + PLAIN),
        ("X-masked", lambda X, T: (np.ma.masked_array(X), T), TypeError, "X " + PLAIN),
        ("T-matrix", lambda X, T: (X, np.asmatrix(T)), TypeError, "T " + PLAIN),
        ("T-masked", lambda X, T: (X, np.ma.masked_array(T)), TypeError, "T " + PLAIN),
        ("X-None", lambda X, T: (None, T), TypeError, "X must be an array"),
        ("T-None", lambda X, T: (X, None), TypeError, "T must be an array"),
        ("T-list", lambda X, T: (X, T.tolist()), TypeError, "T must be an array"),
        ("X-1-D", lambda X, T: (X.reshape(-1)[:3], T[:1]), ValueError, r"X must have shape \(N"),
    ]:
        row(
            f"{name}-{corrupt}",
            make,
            lambda opt, change=change, good_batch=good_batch: opt.step(*change(*good_batch(opt))),
            error,
            pattern,
        )

# A damping far below the data's rounding: A + lambda I is singular in floating point.
row(
    "KBFGS-2020-damping-1e-300-singular-H_a",
    lambda: KBFGS(dense_model(loss=nn.SquaredError()), variant=V.AUTHORS_2020, damping=1e-300),
    lambda opt: opt.step(np.full((1, 5), 1e10), np.ones((1, 3))),
    NonFiniteError,
    "new weights of trainable layer 0 is not finite",
)
row(
    "KFAC-damping-1e-300-singular-A",
    lambda: optim.KFAC(dense_model(loss=nn.SquaredError()), damping=1e-300),
    lambda opt: opt.step(np.full((1, 5), 1e10), np.ones((1, 3))),
    NonFiniteError,
    "damped inverse of A of trainable layer 0 is not finite",
)

# Integers beyond 64 bits, reals beyond a float.
for config_class, options, pattern in [
    (KBFGSLConfig, dict(memory=10**30), "memory must be an integer of magnitude <= 2\\*\\*63 - 1"),
    (optim.KFACConfig, dict(seed=2**64), "seed must be an integer of magnitude"),
    (optim.KFACConfig, dict(inverse_interval=10**400), "inverse_interval must be an integer of"),
    (optim.ShampooConfig, dict(root_interval=-(10**20)), "root_interval must be an integer of"),
    (KBFGSConfig, dict(update_interval=2**63), "update_interval must be an integer of"),
    (optim.AdamConfig, dict(lr=10**400), "lr must be a finite real number"),
    (KBFGSConfig, dict(damping=10**309), "damping must be a finite real number"),
]:
    row(
        f"{config_class.__name__}-{next(iter(options))}-huge",
        NONE,
        construct(config_class, **options),
        ValueError,
        pattern,
    )

# load_state_dict: the wrong kind of record, damaged entries.
for name, make in [
    ("Adam", lambda: stepped(optim.Adam)),
    ("KBFGSL", lambda: kbfgs_squared_error("conv-KBFGSL-2022-sqrtT")),
]:
    row(
        f"{name}-load_state_dict-None",
        make,
        lambda opt: opt.load_state_dict(None),
        TypeError,
        "state must be a dict of arrays, got NoneType",
    )
    row(
        f"{name}-load_state_dict-list",
        make,
        lambda opt: opt.load_state_dict(list(opt.state_dict().items())),
        TypeError,
        "state must be a dict of arrays, got list",
    )
    row(
        f"{name}-load_state_dict-object-entry",
        make,
        lambda opt: opt.load_state_dict(dict(opt.state_dict(), **{"weights.0": np.array(None)})),
        ValueError,
        "state entry 'weights.0' has shape",
    )
    row(
        f"{name}-load_state_dict-negative-step-count",
        make,
        lambda opt: opt.load_state_dict(dict(opt.state_dict(), step_count=np.array(-3))),
        ValueError,
        "state entry 'step_count' must be >= 0",
    )


# ---------------------------------------------------------------------------------------------
# The test
# ---------------------------------------------------------------------------------------------


def snapshot(obj):
    """What a refused call must leave unchanged: the state dict and a K-BFGS ``last_step``."""
    if obj is None:
        return None
    return (
        obj.state_dict(),
        getattr(obj, "last_step", None),
        getattr(obj.state, "a_prepassed", None),
    )


def assert_same_snapshot(after, before) -> None:
    if before is None:
        return
    (flat_after, last_after, prepassed_after), (flat_before, last_before, prepassed_before) = (
        after,
        before,
    )
    assert flat_after.keys() == flat_before.keys()
    for key in flat_before:
        assert np.array_equal(flat_after[key], flat_before[key]), f"{key} changed by a refused call"
    assert last_after is last_before
    assert prepassed_after is prepassed_before


@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")
@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")
@pytest.mark.filterwarnings("ignore:the matrix subclass:PendingDeprecationWarning")
@pytest.mark.parametrize(("make", "call", "error", "pattern"), ROWS)
def test_refused_call_raises_naming_the_argument_and_changes_nothing(make, call, error, pattern):
    obj = make()
    before = snapshot(obj)
    with np.errstate(over="ignore", invalid="ignore"), pytest.raises(error, match=pattern):
        call(obj)
    assert_same_snapshot(snapshot(obj), before)


@pytest.mark.parametrize("optimizer_class", BASELINES)
def test_nan_gradient_refuses_the_step(optimizer_class, monkeypatch):
    """The first layer's backward is patched to return a NaN weight gradient (a patch, hence not
    a row of the table)."""
    optimizer = stepped(optimizer_class)
    layer = optimizer.model.layers[0]
    original_backward = layer.backward

    def poisoned_backward(*args, **kwargs):
        result = original_backward(*args, **kwargs)
        return result if result.grad is None else result._replace(grad=result.grad * np.nan)

    monkeypatch.setattr(layer, "backward", poisoned_backward)
    before = snapshot(optimizer)
    with pytest.raises(NonFiniteError, match="gradient of trainable layer 0 is not finite"):
        optimizer.step(*autoencoder_batch())
    assert_same_snapshot(snapshot(optimizer), before)
