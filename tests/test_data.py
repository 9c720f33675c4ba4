"""Embedded data sets, seeded minibatch streams and the .npz loader (kfqn_ref.data)."""

import gc
import gzip
import re
import warnings
from collections.abc import Callable
from typing import NamedTuple

import numpy as np
import pytest

from kfqn_ref import data


def test_digits_autoencoder_is_the_scaled_sklearn_digits():
    from sklearn.datasets import load_digits  # independent route: the raw scikit-learn array

    digits = data.digits_autoencoder()
    raw = load_digits().data
    assert digits.X.shape == (1797, 64) and digits.X.dtype == np.float64
    assert np.array_equal(digits.X, raw / 16.0)
    assert np.array_equal(digits.T, digits.X)
    assert 0.0 <= digits.X.min() and digits.X.max() == 1.0


def test_digits_classification_has_images_and_labels():
    digits = data.digits_classification(dtype=np.float32)
    assert digits.X.shape == (1797, 1, 8, 8) and digits.X.dtype == np.float32
    assert digits.T.shape == (1797,) and set(np.unique(digits.T)) == set(range(10))


def test_synthetic_regression_is_seeded_and_linear_up_to_noise():
    first = data.synthetic_regression(50, 4, 3, noise=0.0, seed=3)
    second = data.synthetic_regression(50, 4, 3, noise=0.0, seed=3)
    assert np.array_equal(first.X, second.X) and np.array_equal(first.T, second.T)
    # Without noise T lies exactly in the row space of X: the least-squares residual vanishes.
    W, residual, *_ = np.linalg.lstsq(first.X, first.T, rcond=None)
    assert np.allclose(first.X @ W, first.T, rtol=0, atol=1e-12 * np.abs(first.T).max())


def test_minibatches_cover_each_epoch_once_and_repeat_with_the_seed():
    dataset = data.Dataset("count", np.arange(10.0).reshape(10, 1), np.arange(10))
    batches = list(data.minibatches(dataset, 3, seed=1, epochs=2))
    assert len(batches) == 2 * (10 // 3)
    first_epoch = np.concatenate([T for _, T in batches[:3]])
    assert len(set(first_epoch.tolist())) == 9  # a permutation, the last 10 mod 3 samples dropped
    again = list(data.minibatches(dataset, 3, seed=1, epochs=2))
    assert all(np.array_equal(a[0], b[0]) for a, b in zip(batches, again, strict=True))


def test_load_npz_round_trip(tmp_path):
    X = np.random.default_rng(0).standard_normal((5, 3))
    T = np.arange(5)
    np.savez(tmp_path / "set.npz", X=X, T=T)
    loaded = data.load_npz(tmp_path / "set.npz")
    assert np.array_equal(loaded.X, X) and np.array_equal(loaded.T, T)


def _load_and_drop_the_error(path):
    """``load_npz(path)``, expecting ``ValueError``; the traceback is dropped on return."""
    with pytest.raises(ValueError, match="cannot read data set") as caught:
        data.load_npz(path)
    return str(caught.value)


@pytest.mark.parametrize(
    "content", [b"PK\x03\x04 truncated zip", b"neither a zip archive nor an .npy file"]
)
def test_load_npz_closes_the_file_it_could_not_read(tmp_path, content):
    # A leaked handle is reported as a ResourceWarning when it is garbage collected.
    (tmp_path / "bad.npz").write_bytes(content)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        _load_and_drop_the_error(tmp_path / "bad.npz")
        gc.collect()
    assert [w for w in caught if issubclass(w.category, ResourceWarning)] == []


def test_load_npz_returns_arrays_independent_of_the_closed_file(tmp_path):
    X = np.arange(6.0).reshape(3, 2)
    np.savez(tmp_path / "set.npz", X=X, T=np.arange(3))
    loaded = data.load_npz(tmp_path / "set.npz")
    (tmp_path / "set.npz").unlink()
    assert np.array_equal(loaded.X, X) and isinstance(loaded.X, np.ndarray)


def test_load_npz_rejects_a_single_npy_array(tmp_path):
    with open(tmp_path / "single.npz", "wb") as file:
        np.save(file, np.zeros((2, 2)))
    assert "expected a .npz archive" in _load_and_drop_the_error(tmp_path / "single.npz")


# -- bad input: one table (id, call, exception type, message regex) ------------------------------
# The loaders hold no state, so no row has one to compare; a file row writes its file first.


class Row(NamedTuple):
    id: str
    call: Callable[..., object]  # called with pytest's tmp_path
    error: type[Exception]
    pattern: str


COUNT = data.Dataset("count", np.zeros((10, 1)), np.zeros(10))


def _minibatches(**kwargs):
    return lambda tmp_path: data.minibatches(COUNT, **kwargs)


def _regression(*args, **kwargs):
    return lambda tmp_path: data.synthetic_regression(*args, **kwargs)


def _load(**arrays):
    """``load_npz`` of a file holding ``arrays`` (``np.savez``)."""

    def call(tmp_path):
        np.savez(tmp_path / "set.npz", **arrays)
        return data.load_npz(tmp_path / "set.npz")

    return call


def _saved(tmp_path, **arrays):
    np.savez(tmp_path / "set.npz", **arrays)
    return tmp_path / "set.npz"


def _load_as(tmp_path, dtype, **arrays):
    return data.load_npz(_saved(tmp_path, **arrays), dtype=dtype)


def _load_arrays(tmp_path, **arrays):
    return data.load_arrays(_saved(tmp_path, **arrays))


def _load_bytes(content: bytes):
    def call(tmp_path):
        (tmp_path / "bad.npz").write_bytes(content)
        return data.load_npz(tmp_path / "bad.npz")

    return call


def _load_damaged_gzip(tmp_path):
    """``load_idx`` of a ``.gz`` whose deflate data starts with a reserved block type."""
    compressed = bytearray(gzip.compress(bytes([0, 0, 8, 1, 0, 0, 0, 4, 1, 2, 3, 4])))
    compressed[10] = 0xFF  # first deflate byte (after the 10-byte header): BTYPE 11, invalid
    (tmp_path / "bad-idx1-ubyte.gz").write_bytes(bytes(compressed))
    return data.load_idx(tmp_path / "bad-idx1-ubyte.gz")


ROWS = [
    # minibatches: checked on the call, before the first minibatch is asked for
    Row(
        "batch_size-0",
        _minibatches(batch_size=0),
        ValueError,
        r"batch_size must be an integer in \[1, 10\], got 0",
    ),
    Row(
        "batch_size-above-n",
        _minibatches(batch_size=11),
        ValueError,
        r"batch_size must be an integer in \[1, 10\], got 11",
    ),
    Row(
        "batch_size-float",
        _minibatches(batch_size=2.0),
        TypeError,
        r"batch_size must be an integer, got float",
    ),
    Row(
        "batch_size-bool",
        _minibatches(batch_size=True),
        TypeError,
        r"batch_size must be an integer, got bool",
    ),
    Row(
        "epochs-0",
        _minibatches(batch_size=2, epochs=0),
        ValueError,
        r"epochs must be an integer >= 1, got 0",
    ),
    Row(
        "epochs-float",
        _minibatches(batch_size=2, epochs=1.0),
        TypeError,
        r"epochs must be an integer, got float",
    ),
    Row(
        "minibatch-seed-negative",
        _minibatches(batch_size=2, seed=-1),
        ValueError,
        r"seed must be an integer >= 0, got -1",
    ),
    Row(
        "minibatch-seed-float",
        _minibatches(batch_size=2, seed=0.5),
        TypeError,
        r"seed must be an integer, got float",
    ),
    Row(
        "minibatch-seed-none",
        _minibatches(batch_size=2, seed=None),
        TypeError,
        r"seed must be an integer, got NoneType",
    ),
    Row(
        "dataset-short-T",
        lambda tmp_path: data.minibatches(data.Dataset("short", np.zeros((4, 1)), np.zeros(2)), 2),
        ValueError,
        re.escape(
            "dataset.T must hold one target per input: len(dataset.X) = 4 but len(dataset.T) = 2"
        ),
    ),
    Row(
        "dataset-a-tuple",
        lambda tmp_path: data.minibatches((np.zeros((4, 1)), np.zeros(4)), 2),
        TypeError,
        re.escape("dataset must be a kfqn_ref.data.Dataset (name, X, T), got tuple"),
    ),
    # synthetic_regression
    Row(
        "n_samples-0", _regression(0, 2, 2), ValueError, r"n_samples must be an integer >= 1, got 0"
    ),
    Row("d_in-0", _regression(3, 0, 2), ValueError, r"d_in must be an integer >= 1, got 0"),
    Row(
        "d_out-negative",
        _regression(3, 2, -1),
        ValueError,
        r"d_out must be an integer >= 1, got -1",
    ),
    Row(
        "n_samples-float",
        _regression(3.0, 2, 2),
        TypeError,
        r"n_samples must be an integer, got float",
    ),
    Row("d_in-bool", _regression(3, True, 2), TypeError, r"d_in must be an integer, got bool"),
    Row(
        "noise-negative",
        _regression(3, 2, 2, noise=-1.0),
        ValueError,
        r"noise must be >= 0, got -1\.0",
    ),
    Row(
        "noise-inf",
        _regression(3, 2, 2, noise=np.inf),
        ValueError,
        r"noise must be finite, got inf",
    ),
    Row(
        "noise-huge-int",
        _regression(3, 2, 2, noise=10**400),
        ValueError,
        r"noise must be a finite real number",
    ),
    Row(
        "noise-str",
        _regression(3, 2, 2, noise="a"),
        TypeError,
        r"noise must be a real number, got str",
    ),
    Row(
        "regression-seed-negative",
        _regression(3, 2, 2, seed=-1),
        ValueError,
        r"seed must be an integer >= 0, got -1",
    ),
    Row(
        "regression-seed-float",
        _regression(3, 2, 2, seed=1.5),
        TypeError,
        r"seed must be an integer, got float",
    ),
    Row(
        "regression-dtype-int64",
        _regression(3, 2, 2, dtype=np.int64),
        TypeError,
        r"dtype must be float64 or float32",
    ),
    # load_npz: a file that cannot be read is a ValueError naming the file
    Row("npz-missing-key", _load(X=np.zeros((2, 2))), ValueError, r"missing arrays \['T'\]"),
    Row(
        "npz-truncated-zip",
        _load_bytes(b"PK\x03\x04 truncated zip"),
        ValueError,
        r"cannot read data set from '.*bad\.npz'",
    ),
    Row(
        "npz-garbage",
        _load_bytes(b"neither a zip archive nor an .npy file"),
        ValueError,
        r"cannot read data set",
    ),
    Row(
        "npz-objects",
        _load(X=np.array([{"a": 1}, None], dtype=object), T=np.zeros(2)),
        ValueError,
        r"cannot read data set.*allow_pickle",
    ),
    Row(
        "npz-nan",
        _load(X=np.array([[np.nan, 1.0]]), T=np.zeros(1)),
        ValueError,
        r"X contains NaN or Inf",
    ),
    Row(
        "npz-sample-counts",
        _load(X=np.zeros((3, 2)), T=np.zeros(2)),
        ValueError,
        r"same n, got \(3, 2\) and \(2,\)",
    ),
    # load_npz: casts that would overflow or wrap are reported as such
    Row(
        "npz-X-overflows-float32",
        lambda tmp_path: _load_as(tmp_path, np.float32, X=np.array([[1e300, 1.0]]), T=np.zeros(1)),
        ValueError,
        r"X holds values beyond the range of float32 \(largest \|X\| = 1e\+300\)",
    ),
    Row(
        "npz-T-overflows-float32",
        lambda tmp_path: _load_as(tmp_path, np.float32, X=np.ones((1, 2)), T=np.array([-1e40])),
        ValueError,
        r"T holds values beyond the range of float32 \(largest \|T\| = 1e\+40\)",
    ),
    Row(
        "npz-T-uint64-beyond-int64",
        _load(X=np.ones((2, 2)), T=np.array([1, 2**64 - 1], dtype=np.uint64)),
        ValueError,
        r"T holds integers up to 18446744073709551615, beyond int64 \(they would wrap",
    ),
    Row(
        "npz-X-1-D",
        _load(X=np.ones(3), T=np.ones(3)),
        ValueError,
        r"X must have shape \(n, \.\.\.\) with n samples, got \(3,\)",
    ),
    Row(
        "arrays-y-uint64-beyond-int64",
        lambda tmp_path: _load_arrays(
            tmp_path, X=np.ones((2, 2)), y=np.array([0, 2**63], np.uint64)
        ),
        ValueError,
        r"y holds integers up to 9223372036854775808, beyond int64",
    ),
    Row(
        "arrays-X-overflows-float32",
        lambda tmp_path: data.load_arrays(
            _saved(tmp_path, X=np.full((2, 2), -1e39)), dtype="float32"
        ),
        ValueError,
        r"X holds values beyond the range of float32",
    ),
    Row(
        "synthetic-seed-beyond-64-bits",
        _regression(3, 2, 2, seed=2**64),
        ValueError,
        r"seed must be an integer of magnitude <= 2\*\*63 - 1",
    ),
    Row(
        "minibatches-epochs-beyond-64-bits",
        _minibatches(batch_size=2, epochs=10**19),
        ValueError,
        r"epochs must be an integer of magnitude",
    ),
    Row(
        "idx-gz-damaged-deflate",
        _load_damaged_gzip,
        ValueError,
        r"cannot read IDX file '.*bad-idx1-ubyte\.gz': .*invalid block type",
    ),
    Row(
        "npz-strings",
        _load(X=np.array([["a", "b"]]), T=np.zeros(1)),
        ValueError,
        r"X must hold numbers, got dtype <U1",
    ),
]


@pytest.mark.parametrize("row", ROWS, ids=[row.id for row in ROWS])
def test_bad_input(row, tmp_path):
    with pytest.raises(row.error) as caught:
        row.call(tmp_path)
    assert re.search(row.pattern, str(caught.value)), f"{caught.value!s} !~ {row.pattern}"
