"""Embedded data sets, seeded minibatch streams and the .npz loader (kfqn_ref.data)."""

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
        ({"batch_size": 0}, ValueError, r"batch_size must lie in \[1, 10\]"),
        ({"batch_size": 11}, ValueError, r"batch_size must lie in \[1, 10\]"),
        ({"batch_size": 2.0}, TypeError, "batch_size must be an integer"),
        ({"batch_size": 2, "epochs": 0}, ValueError, "epochs must be an integer >= 1"),
    ],
)
def test_minibatches_reject_bad_arguments(kwargs, error, message):
    dataset = data.Dataset("count", np.zeros((10, 1)), np.zeros(10))
    with pytest.raises(error, match=message):
        next(data.minibatches(dataset, **kwargs))


def test_load_npz_round_trip(tmp_path):
    X = np.random.default_rng(0).standard_normal((5, 3))
    T = np.arange(5)
    np.savez(tmp_path / "set.npz", X=X, T=T)
    loaded = data.load_npz(tmp_path / "set.npz")
    assert np.array_equal(loaded.X, X) and np.array_equal(loaded.T, T)


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
