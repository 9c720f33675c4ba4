"""The ``on`` fixture: each backend-parametrised test runs on NumPy and on the strict backend."""

import dataclasses
import types

import numpy as np
import pytest

from kfqn_ref import backend
from tests.backends import strict


@dataclasses.dataclass(frozen=True)
class On:
    """One backend: its module, how host data goes to it and how its results come back."""

    name: str
    module: types.ModuleType

    def array(self, host: np.ndarray):
        """``host`` as an array of this backend (a copy)."""
        return self.module.asarray(np.array(host))

    def host(self, value):
        """``value`` back on the host, explicitly: its arrays (also in tuples) via ``to_host``.

        Every array in it must belong to this backend; other values (bools, enums, numbers) pass.
        """
        if isinstance(value, tuple) and hasattr(value, "_fields"):
            return type(value)(*(self.host(item) for item in value))
        if isinstance(value, (tuple, list)):
            return type(value)(self.host(item) for item in value)
        if not hasattr(value, "shape"):
            return value
        assert backend.xp_of(value) is self.module, f"{self.name} result is {type(value)}"
        return backend.to_host(value)

    def call(self, function, *args, **kwargs):
        """``function`` called with its host array arguments on this backend, result on the host."""
        moved = [self.array(a) if isinstance(a, np.ndarray) else a for a in args]
        return self.host(function(*moved, **kwargs))


def numpy_reference(function, *args, **kwargs):
    """``function(*args, **kwargs)`` with NumPy selected: the expected result."""
    selected = backend._current_module
    backend._current_module = np
    try:
        return function(*args, **kwargs)
    finally:
        backend._current_module = selected


def assert_same(got, expected, path="result"):
    """``got == expected`` bit for bit: arrays, numbers, enums, also nested in tuples."""
    if isinstance(expected, tuple):
        assert type(got) is type(expected) and len(got) == len(expected), path
        for i, (a, b) in enumerate(zip(got, expected, strict=True)):
            assert_same(a, b, f"{path}[{i}]")
    elif isinstance(expected, np.ndarray):
        np.testing.assert_array_equal(got, expected, err_msg=path, strict=True)
    else:
        assert got == expected, path


@pytest.fixture(params=["numpy", "strict"])
def on(request, monkeypatch):
    """The backend under test, also selected as ``backend.xp()`` for what the package creates."""
    module = np if request.param == "numpy" else strict.module
    monkeypatch.setattr(backend, "_current_module", module)
    return On(request.param, module)
