"""Embedded data sets, seeded minibatch streams and the .npz loader (kfqn_ref.data)."""

import gc
import warnings

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


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"batch_size": 0}, ValueError, r"batch_size must be an integer in \[1, 10\], got 0"),
        ({"batch_size": 11}, ValueError, r"batch_size must be an integer in \[1, 10\], got 11"),
        ({"batch_size": 2.0}, TypeError, "batch_size must be an integer, got float"),
        ({"batch_size": True}, TypeError, "batch_size must be an integer, got bool"),
        ({"batch_size": 2, "epochs": 0}, ValueError, "epochs must be an integer >= 1, got 0"),
        ({"batch_size": 2, "epochs": 1.0}, TypeError, "epochs must be an integer, got float"),
        ({"batch_size": 2, "seed": -1}, ValueError, "seed must be an integer >= 0, got -1"),
        ({"batch_size": 2, "seed": 0.5}, TypeError, "seed must be an integer, got float"),
        ({"batch_size": 2, "seed": None}, TypeError, "seed must be an integer, got NoneType"),
    ],
)
def test_minibatches_reject_bad_arguments_on_the_call(kwargs, error, message):
    # Checked when minibatches() is called, before the first minibatch is asked for.
    dataset = data.Dataset("count", np.zeros((10, 1)), np.zeros(10))
    with pytest.raises(error, match=message):
        data.minibatches(dataset, **kwargs)


def test_minibatches_reject_targets_of_another_length_and_a_non_dataset():
    with pytest.raises(
        ValueError,
        match=r"dataset.T must hold one target per input: len\(dataset.X\) = 4 but "
        r"len\(dataset.T\) = 2",
    ):
        data.minibatches(data.Dataset("short", np.zeros((4, 1)), np.zeros(2)), 2)
    with pytest.raises(TypeError, match=r"dataset must be a kfqn_ref.data.Dataset \(name, X, T\)"):
        data.minibatches((np.zeros((4, 1)), np.zeros(4)), 2)


@pytest.mark.parametrize(
    ("args", "kwargs", "error", "message"),
    [
        ((0, 2, 2), {}, ValueError, "n_samples must be an integer >= 1, got 0"),
        ((3, 0, 2), {}, ValueError, "d_in must be an integer >= 1, got 0"),
        ((3, 2, -1), {}, ValueError, "d_out must be an integer >= 1, got -1"),
        ((3.0, 2, 2), {}, TypeError, "n_samples must be an integer, got float"),
        ((3, True, 2), {}, TypeError, "d_in must be an integer, got bool"),
        ((3, 2, 2), {"noise": -1.0}, ValueError, r"noise must be a finite number >= 0, got -1.0"),
        ((3, 2, 2), {"noise": np.inf}, ValueError, r"noise must be a finite number >= 0, got inf"),
        ((3, 2, 2), {"noise": "a"}, TypeError, "noise must be a real number, got str"),
        ((3, 2, 2), {"seed": -1}, ValueError, "seed must be an integer >= 0, got -1"),
        ((3, 2, 2), {"seed": 1.5}, TypeError, "seed must be an integer, got float"),
        ((3, 2, 2), {"dtype": np.int64}, TypeError, "dtype must be float64 or float32"),
    ],
)
def test_synthetic_regression_rejects_bad_arguments(args, kwargs, error, message):
    with pytest.raises(error, match=message):
        data.synthetic_regression(*args, **kwargs)


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


def test_load_npz_rejects_missing_keys_corrupt_files_objects_and_nan(tmp_path):
    np.savez(tmp_path / "nokey.npz", X=np.zeros((2, 2)))
    with pytest.raises(ValueError, match="missing arrays"):
        data.load_npz(tmp_path / "nokey.npz")
    (tmp_path / "corrupt.npz").write_bytes(b"PK\x03\x04 truncated zip")
    with pytest.raises(ValueError, match="cannot read data set"):
        data.load_npz(tmp_path / "corrupt.npz")
    (tmp_path / "garbage.npz").write_bytes(b"neither a zip archive nor an .npy file")
    with pytest.raises(ValueError, match="cannot read data set"):
        data.load_npz(tmp_path / "garbage.npz")
    np.savez(tmp_path / "objects.npz", X=np.array([{"a": 1}, None], dtype=object), T=np.zeros(2))
    with pytest.raises(ValueError, match="cannot read data set"):
        data.load_npz(tmp_path / "objects.npz")
    np.savez(tmp_path / "nan.npz", X=np.array([[np.nan, 1.0]]), T=np.zeros(1))
    with pytest.raises(ValueError, match="NaN or Inf"):
        data.load_npz(tmp_path / "nan.npz")
    np.savez(tmp_path / "mismatch.npz", X=np.zeros((3, 2)), T=np.zeros(2))
    with pytest.raises(ValueError, match="same n"):
        data.load_npz(tmp_path / "mismatch.npz")
