"""A fuzz of ``step`` for every optimizer on tiny nets with extreme but finite data.

Inputs (random, constant or zero), targets and weights are scaled by ``10^e`` with ``e`` in
``[-30, 30]``, on a batch of one (or two) samples, in float32 and float64, with a damping down to
``1e-300`` where there is one.
Each step must either return a finite loss and leave finite weights and state, or raise a
documented error (``ValueError``, of which ``NonFiniteError`` is one, or ``TypeError``) and change
nothing: never another exception type (``docs/reliability.md``, "Transactional steps"). The
examples come from the ``ci`` profile of ``tests/conftest.py`` (derandomized, bounded).
"""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from kfqn_ref import nn, optim
from kfqn_ref.optim import KBFGS, KBFGSL, KBFGSVariant

#: optimizer name -> ``make(model, damping)``; damping is that of the optimizers that have one.
OPTIMIZERS = {
    "KBFGS-2020": lambda m, d: KBFGS(m, variant=KBFGSVariant.AUTHORS_2020, damping=d),
    "KBFGS-2022": lambda m, d: KBFGS(m, variant=KBFGSVariant.KFQN_2022, damping=d),
    "KBFGSL-2022": lambda m, d: KBFGSL(m, memory=2, damping=d),
    "KBFGSL-convergent": lambda m, d: KBFGSL(
        m, variant=KBFGSVariant.CONVERGENT, memory=2, memory_light=True, momentum=0.0, damping=d
    ),
    "KFAC": lambda m, d: optim.KFAC(m, damping=d, inverse_interval=1, fisher="empirical"),
    "KFAC-monte-carlo": lambda m, d: optim.KFAC(m, damping=d, inverse_interval=1),
    "Shampoo": lambda m, d: optim.Shampoo(m),
    "Adam": lambda m, d: optim.Adam(m),
    "RMSprop": lambda m, d: optim.RMSprop(m),
    "SGDMomentum": lambda m, d: optim.SGDMomentum(m),
}
STEPS = 2


def tiny_net(dtype, weight_scale: float) -> nn.Sequential:
    """Dense 3 -> Tanh -> Dense 2, squared error, its weights scaled by ``weight_scale``."""
    model = nn.Sequential(
        [nn.Dense(3, 2), nn.Tanh(), nn.Dense(2, 2)], nn.SquaredError(), seed=0, dtype=dtype
    )
    model.set_weights([(w * weight_scale).astype(dtype) for w in model.weights()])
    return model


def assert_finite_state(optimizer) -> None:
    for key, value in optimizer.state_dict().items():
        if value.dtype.kind == "f":
            assert np.all(np.isfinite(value)), f"{key} is not finite after a successful step"


def assert_unchanged(optimizer, before: dict) -> None:
    after = optimizer.state_dict()
    assert after.keys() == before.keys()
    for key, value in before.items():
        assert np.array_equal(after[key], value), f"{key} changed by a refused step"


scales = st.integers(min_value=-30, max_value=30).map(lambda e: 10.0**e)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
@given(
    dtype=st.sampled_from([np.float64, np.float32]),
    x_scale=scales,
    t_scale=scales,
    w_scale=scales,
    damping=st.sampled_from([0.3, 1e-3, 1e-30, 1e-300]),
    batch=st.sampled_from([1, 1, 2]),
    inputs=st.sampled_from(["normal", "constant", "zero"]),
    seed=st.integers(min_value=0, max_value=2**16),
)
def test_a_step_is_finite_or_a_documented_refusal_that_changes_nothing(
    name, dtype, x_scale, t_scale, w_scale, damping, batch, inputs, seed
):
    """``inputs``: standard normal, all ones (rank-one factors) or zeros (zero-trace factors),
    times ``x_scale``."""
    rng = np.random.default_rng(seed)
    optimizer = OPTIMIZERS[name](tiny_net(dtype, w_scale), damping)
    X = {
        "normal": rng.standard_normal((batch, 3)),
        "constant": np.ones((batch, 3)),
        "zero": np.zeros((batch, 3)),
    }[inputs]
    X = (X * x_scale).astype(dtype)
    T = (rng.standard_normal((batch, 2)) * t_scale).astype(dtype)
    for _ in range(STEPS):
        before = optimizer.state_dict()
        try:
            with np.errstate(all="ignore"):
                loss = optimizer.step(X, T)
        except (ValueError, TypeError):  # NonFiniteError is a ValueError
            assert_unchanged(optimizer, before)
            return
        assert np.isfinite(loss)
        assert_finite_state(optimizer)
