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
        """``value`` (arrays, also in tuples and lists) back on the host, explicitly."""
        if isinstance(value, (tuple, list)):
            return type(value)(self.host(item) for item in value)
        if value is None or isinstance(value, (int, float, bool)):
            return value
        assert backend.xp_of(value) is self.module, f"{self.name} result is {type(value)}"
        return backend.to_host(value)


@pytest.fixture(params=["numpy", "strict"])
def on(request, monkeypatch):
    """The backend under test, also selected as ``backend.xp()`` for what the package creates."""
    module = np if request.param == "numpy" else strict.module
    monkeypatch.setattr(backend, "_current_module", module)
    return On(request.param, module)
