"""The array-module and dtype policy of kfqn_ref.backend (conventions §7, §9)."""

import sys
import types

import numpy as np
import pytest

from kfqn_ref import backend


def test_default_module_is_numpy_and_default_dtype_is_float64():
    assert backend.xp() is np
    assert backend.xp_of(np.zeros(3)) is np
    assert backend.resolve_dtype(None) == np.float64


@pytest.mark.parametrize("dtype", [np.float64, np.float32, "float32", "float64"])
def test_supported_dtypes_resolve(dtype):
    assert backend.resolve_dtype(dtype) == np.dtype(dtype)


@pytest.mark.parametrize("dtype", [np.int64, np.float16, np.complex128, "banana"])
def test_unsupported_dtypes_are_rejected_with_the_allowed_ones_named(dtype):
    with pytest.raises(TypeError, match="float64 or float32"):
        backend.resolve_dtype(dtype)


def test_to_host_of_numpy_array_is_the_same_data():
    array = np.arange(6.0).reshape(2, 3)
    assert np.array_equal(backend.to_host(array), array)


# -- the optional CuPy backend, on a machine without it --------------------------------------------


def _fake_cupy(get_device_count):
    """A stand-in ``cupy`` module whose ``cuda.runtime.getDeviceCount`` is ``get_device_count``."""
    module = types.ModuleType("cupy")
    module.cuda = types.SimpleNamespace(
        runtime=types.SimpleNamespace(getDeviceCount=get_device_count)
    )
    return module


@pytest.fixture
def restore_numpy():
    yield
    backend.use_numpy()


def test_use_cupy_without_cupy_raises_import_error_and_keeps_numpy(monkeypatch, restore_numpy):
    monkeypatch.setitem(sys.modules, "cupy", None)  # makes `import cupy` raise ImportError
    with pytest.raises(ImportError, match=r"pip install 'kfqn-ref\[cupy\]'"):
        backend.use_cupy()
    assert backend.xp() is np


def _no_device():
    raise RuntimeError("cudaErrorNoDevice: no CUDA-capable device is detected")


@pytest.mark.parametrize(
    ("get_device_count", "message"),
    [
        (_no_device, "no usable CUDA device: cudaErrorNoDevice"),
        (lambda: 0, r"no CUDA device \(getDeviceCount\(\) == 0\)"),
    ],
)
def test_use_cupy_without_a_device_raises_import_error_and_keeps_numpy(
    monkeypatch, restore_numpy, get_device_count, message
):
    # CuPy installed but no device: the ImportError that use_cupy's docstring promises.
    monkeypatch.setitem(sys.modules, "cupy", _fake_cupy(get_device_count))
    with pytest.raises(ImportError, match=message):
        backend.use_cupy()
    assert backend.xp() is np


def test_use_numpy_restores_numpy_after_use_cupy(monkeypatch, restore_numpy):
    fake = _fake_cupy(lambda: 1)
    monkeypatch.setitem(sys.modules, "cupy", fake)
    backend.use_cupy()
    assert backend.xp() is fake
    backend.use_numpy()
    assert backend.xp() is np


def test_read_npz_reads_every_array_and_refuses_single_arrays_and_objects(tmp_path):
    X, T = np.arange(6.0).reshape(3, 2), np.arange(3)
    np.savez(tmp_path / "set.npz", X=X, T=T)
    arrays = backend.read_npz(tmp_path / "set.npz")
    assert sorted(arrays) == ["T", "X"]
    assert np.array_equal(arrays["X"], X) and np.array_equal(arrays["T"], T)
    np.save(tmp_path / "single.npy", X)
    with pytest.raises(ValueError, match="single .npy array"):
        backend.read_npz(tmp_path / "single.npy")
    np.savez(tmp_path / "objects.npz", x=np.array([object()], dtype=object))
    with pytest.raises(ValueError, match="allow_pickle"):
        backend.read_npz(tmp_path / "objects.npz")
