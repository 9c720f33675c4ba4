"""Flattening nested optimizer state to plain arrays and back (kfqn_ref.optim.state_io)."""

import dataclasses
import gc
import warnings
from typing import NamedTuple

import numpy as np
import pytest

from kfqn_ref.optim import state_io


class Pair(NamedTuple):
    s: np.ndarray
    count: int


@dataclasses.dataclass(frozen=True)
class State:
    momentum: tuple
    pair: Pair
    scale: float


def make_state(offset=0.0):
    return State(
        momentum=(np.arange(6.0).reshape(2, 3) + offset, np.ones(4, np.float32)),
        pair=Pair(np.full(3, 2.0 + offset), 7),
        scale=0.5 + offset,
    )


def test_flatten_then_unflatten_restores_every_leaf_bit_for_bit(tmp_path):
    state = make_state(offset=1.0)
    flat = state_io.flatten_state(state, "state")
    assert set(flat) == {
        "state.momentum.0",
        "state.momentum.1",
        "state.pair.s",
        "state.pair.count",
        "state.scale",
    }
    state_io.save_state(tmp_path / "s.npz", flat)
    restored = state_io.unflatten_like(
        make_state(), state_io.load_state(tmp_path / "s.npz"), "state"
    )
    assert isinstance(restored, State) and isinstance(restored.pair, Pair)
    assert np.array_equal(restored.momentum[0], state.momentum[0])
    assert restored.momentum[1].dtype == np.float32
    assert restored.pair.count == 7 and restored.scale == 1.5


def test_unflatten_rejects_a_state_of_another_shape_or_dtype_or_with_missing_entries():
    flat = state_io.flatten_state(make_state(), "state")
    wrong_shape = dict(flat, **{"state.pair.s": np.zeros(4)})
    with pytest.raises(ValueError, match="expects shape"):
        state_io.unflatten_like(make_state(), wrong_shape, "state")
    wrong_dtype = dict(flat, **{"state.momentum.1": np.ones(4)})
    with pytest.raises(ValueError, match="dtype"):
        state_io.unflatten_like(make_state(), wrong_dtype, "state")
    missing = {key: value for key, value in flat.items() if key != "state.scale"}
    with pytest.raises(ValueError, match="missing entry 'state.scale'"):
        state_io.unflatten_like(make_state(), missing, "state")
    with_nan = dict(flat, **{"state.pair.s": np.array([0.0, np.nan, 1.0])})
    with pytest.raises(ValueError, match="NaN or Inf"):
        state_io.unflatten_like(make_state(), with_nan, "state")


def test_load_state_refuses_pickled_objects_and_corrupt_files(tmp_path):
    np.savez(tmp_path / "objects.npz", x=np.array([object()], dtype=object))
    with pytest.raises(ValueError, match="cannot read optimizer state"):
        state_io.load_state(tmp_path / "objects.npz")
    for name, content in (("corrupt.npz", b"PK\x03\x04 truncated"), ("garbage.npz", b"plain text")):
        (tmp_path / name).write_bytes(content)
        # The file must be closed on the error path: a leaked handle is a ResourceWarning.
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ResourceWarning)
            with pytest.raises(ValueError, match="cannot read optimizer state"):
                state_io.load_state(tmp_path / name)
            gc.collect()
        assert [w for w in caught if issubclass(w.category, ResourceWarning)] == []
