"""The array-module and dtype policy of kfqn_ref.backend (conventions §7, §9)."""

import os
import re
import subprocess
import sys
import tracemalloc
import types

import numpy as np
import pytest

from kfqn_ref import backend, checkpoint, cli, data, optim
from tests.helpers.archives import FORGED


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
    backend.use("numpy")


def test_use_selects_numpy_by_name_and_returns_it(restore_numpy):
    assert backend.use("numpy") is np
    assert backend.xp() is np


@pytest.mark.parametrize(
    ("name", "error", "message"),
    [
        ("banana", ValueError, "name must be one of 'numpy', 'cupy', got 'banana'"),
        ("CuPy", ValueError, "name must be one of 'numpy', 'cupy', got 'CuPy'"),
        (np, TypeError, "name must be one of the strings 'numpy', 'cupy', got module"),
    ],
)
def test_use_refuses_an_unknown_backend_and_keeps_numpy(restore_numpy, name, error, message):
    with pytest.raises(error, match=re.escape(message)):
        backend.use(name)
    assert backend.xp() is np


def test_use_cupy_without_cupy_says_it_is_missing_and_keeps_numpy(monkeypatch, restore_numpy):
    monkeypatch.setitem(sys.modules, "cupy", None)  # makes `import cupy` raise ImportError
    with pytest.raises(ImportError, match=r"not installed: pip install 'kfqn-ref\[cupy\]'"):
        backend.use("cupy")
    assert backend.xp() is np


def _no_device():
    raise RuntimeError("cudaErrorNoDevice: no CUDA-capable device is detected")


@pytest.mark.parametrize(
    ("get_device_count", "message"),
    [
        (_no_device, "CuPy is installed but no CUDA device is usable: cudaErrorNoDevice"),
        (lambda: 0, r"CuPy is installed but sees no CUDA device \(getDeviceCount\(\) == 0\)"),
    ],
)
def test_use_cupy_without_a_device_says_so_and_keeps_numpy(
    monkeypatch, restore_numpy, get_device_count, message
):
    # CuPy installed but no device: the ImportError that use's docstring promises.
    monkeypatch.setitem(sys.modules, "cupy", _fake_cupy(get_device_count))
    with pytest.raises(ImportError, match=message):
        backend.use("cupy")
    assert backend.xp() is np


def test_use_numpy_restores_numpy_after_use_cupy(monkeypatch, restore_numpy):
    fake = _fake_cupy(lambda: 1)
    monkeypatch.setitem(sys.modules, "cupy", fake)
    assert backend.use("cupy") is fake
    assert backend.xp() is fake
    backend.use("numpy")
    assert backend.xp() is np


def _import_backend(environment: str | None, prelude: str = "") -> subprocess.CompletedProcess:
    """Import kfqn_ref.backend in a fresh interpreter with ``KFQN_BACKEND=environment``."""
    env = {key: value for key, value in os.environ.items() if key != "KFQN_BACKEND"}
    if environment is not None:
        env["KFQN_BACKEND"] = environment
    code = prelude + "import sys; from kfqn_ref import backend; print(backend.xp().__name__, "
    code += "'cupy' in sys.modules)"
    return subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=False
    )


@pytest.mark.parametrize("environment", [None, "numpy"])
def test_kfqn_backend_unset_or_numpy_selects_numpy_without_importing_cupy(environment):
    done = _import_backend(environment)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["numpy", "False"]


@pytest.mark.parametrize(
    ("environment", "prelude", "message"),
    [
        ("banana", "", "ValueError: KFQN_BACKEND must be one of 'numpy', 'cupy', got 'banana'"),
        (
            "cupy",
            "import sys; sys.modules['cupy'] = None; ",
            "ImportError: KFQN_BACKEND='cupy' selects CuPy, which is not installed: "
            "pip install 'kfqn-ref[cupy]'",
        ),
    ],
)
def test_kfqn_backend_is_read_on_import_and_refuses_what_it_cannot_select(
    environment, prelude, message
):
    done = _import_backend(environment, prelude)
    assert done.returncode == 1
    assert message in done.stderr


def test_kfqn_backend_cupy_selects_cupy_on_import(tmp_path):
    (tmp_path / "cupy.py").write_text(
        "import types\n"
        "cuda = types.SimpleNamespace(runtime=types.SimpleNamespace(getDeviceCount=lambda: 1))\n"
    )
    prelude = f"import sys; sys.path.insert(0, {str(tmp_path)!r}); "
    done = _import_backend("cupy", prelude)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["cupy", "True"]


def test_cli_backend_option_is_applied_before_the_command(monkeypatch, restore_numpy, capsys):
    fake = _fake_cupy(lambda: 1)
    monkeypatch.setitem(sys.modules, "cupy", fake)
    seen = []
    monkeypatch.setattr(cli, "run_verify", lambda args: seen.append(backend.xp()) or 0)
    assert cli.main(["--backend", "cupy", "verify"]) == 0
    assert seen == [fake]


def test_cli_backend_cupy_without_cupy_exits_2_naming_the_wheel(monkeypatch, restore_numpy, capsys):
    monkeypatch.setitem(sys.modules, "cupy", None)
    assert cli.main(["--backend", "cupy", "verify"]) == 2
    error = capsys.readouterr().err
    assert "--backend cupy" in error and "pip install 'kfqn-ref[cupy]'" in error
    assert backend.xp() is np


def test_cli_backend_refuses_an_unknown_name(capsys):
    with pytest.raises(SystemExit) as stopped:
        cli.main(["--backend", "banana", "verify"])
    assert stopped.value.code == 2
    assert "invalid choice: 'banana'" in capsys.readouterr().err


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


# --- damaged and forged archives, for every reader (docs/reliability.md) ---

#: reader name -> (read(path), how its message names the file; ``None``: read_npz names none).
READERS = {
    "backend.read_npz": (backend.read_npz, None),
    "data.load_npz": (data.load_npz, "cannot read data set from '{path}'"),
    "data.load_arrays": (data.load_arrays, "cannot read data set from '{path}'"),
    "optim.load_state": (optim.load_state, "cannot read optimizer state from '{path}'"),
    "checkpoint.identity": (checkpoint.identity, "cannot read checkpoint '{path}'"),
}


@pytest.mark.parametrize("reader", sorted(READERS))
@pytest.mark.parametrize("damage", sorted(FORGED))
def test_a_damaged_or_forged_archive_is_refused_without_allocating_its_claims(
    tmp_path, damage, reader
):
    write, pattern = FORGED[damage]
    path = tmp_path / "forged.npz"
    write(path)
    content = path.read_bytes()
    read, names_the_file = READERS[reader]
    tracemalloc.start()
    try:
        with pytest.raises(ValueError) as caught:
            read(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert re.search(pattern, str(caught.value)), str(caught.value)
    if names_the_file is not None:
        assert names_the_file.format(path=path) in str(caught.value)
    assert peak < 2**24  # 16 MiB: nothing of what a header or directory claims was allocated
    assert path.read_bytes() == content


def test_write_npz_keeps_the_name_and_leaves_no_temporary_file(tmp_path):
    backend.write_npz(tmp_path / "arrays.bin", {"a": np.arange(3.0), "b": 7})
    assert [p.name for p in tmp_path.iterdir()] == ["arrays.bin"]
    arrays = backend.read_npz(tmp_path / "arrays.bin")
    assert np.array_equal(arrays["a"], np.arange(3.0)) and arrays["b"] == 7


def test_write_npz_into_a_missing_folder_is_an_os_error(tmp_path):
    with pytest.raises(OSError):
        backend.write_npz(tmp_path / "missing" / "arrays.npz", {"a": np.zeros(2)})


@pytest.mark.parametrize(
    ("arrays", "pattern"),
    [
        ({"a": np.array([None], dtype=object)}, "array 'a' has dtype object"),
        ({"a": [object()]}, "array 'a' has dtype object"),
        ({3: np.zeros(2)}, "array names must be strings, got int 3"),
    ],
)
def test_write_npz_refuses_what_would_need_pickle_and_writes_nothing(tmp_path, arrays, pattern):
    path = tmp_path / "old.npz"
    backend.write_npz(path, {"old": np.ones(2)})
    before = path.read_bytes()
    with pytest.raises(TypeError, match=pattern):
        backend.write_npz(path, arrays)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["old.npz"]
