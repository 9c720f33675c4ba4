"""Shared builders for the optimizer tests: two tiny networks on scikit-learn's digits.

* :func:`autoencoder` — a 16-8-4-8-16 sigmoid autoencoder with sigmoid cross-entropy (the K-BFGS
  papers' MLP autoencoder task, shrunk) on :func:`digits_4x4`, the 8x8 digits averaged over 2x2
  blocks to 4x4 and scaled to [0, 1].
* :func:`cnn` — conv 3x3 (1 -> 2 channels) -> ReLU -> max-pool 2 -> flatten -> dense 18 -> 10 with
  softmax cross-entropy on :func:`digits_8x8` (one-hot targets).

Both are float64 and built from a seed, so "a fresh model built the same way" has the same bits.
"""

from functools import lru_cache

import numpy as np
from sklearn.datasets import load_digits

from kfqn_ref import nn

#: Pixel values of scikit-learn's digits are integers in [0, 16].
DIGITS_MAX_PIXEL = 16.0
DIGITS_CLASSES = 10
DIGITS_SIDE = 8
#: The autoencoder sees the digits averaged over POOL x POOL blocks (8x8 -> 4x4 = 16 inputs).
POOL = 2


@lru_cache(maxsize=1)
def _digits():
    data = load_digits()
    return data.images / DIGITS_MAX_PIXEL, data.target


def digits_4x4(n_samples: int) -> tuple[np.ndarray, np.ndarray]:
    """``(X, T)`` with ``X = T``, ``(n_samples, 16)`` in [0, 1]: the autoencoder's data."""
    images, _ = _digits()
    side = DIGITS_SIDE // POOL
    pooled = images[:n_samples].reshape(n_samples, side, POOL, side, POOL).mean(axis=(2, 4))
    X = pooled.reshape(n_samples, side * side)
    return X, X.copy()


def digits_8x8(n_samples: int) -> tuple[np.ndarray, np.ndarray]:
    """``(X, T)``: images ``(n_samples, 1, 8, 8)`` in [0, 1], one-hot labels ``(n_samples, 10)``."""
    images, labels = _digits()
    X = images[:n_samples, None, :, :].copy()
    T = np.eye(DIGITS_CLASSES)[labels[:n_samples]]
    return X, T


def autoencoder(seed: int = 0) -> nn.Sequential:
    """16-8-4-8-16 sigmoid autoencoder, sigmoid cross-entropy."""
    layers = [
        nn.Dense(16, 8), nn.Sigmoid(),
        nn.Dense(8, 4), nn.Sigmoid(),
        nn.Dense(4, 8), nn.Sigmoid(),
        nn.Dense(8, 16),
    ]  # fmt: skip
    return nn.Sequential(layers, nn.SigmoidCrossEntropy(), seed=seed)


def cnn(seed: int = 0) -> nn.Sequential:
    """1x8x8 -> conv 3x3 (2 channels) -> ReLU -> max-pool 2 -> flatten (18) -> dense 10; softmax."""
    layers = [
        nn.Conv2d(1, 2, 3), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Dense(2 * 3 * 3, DIGITS_CLASSES),
    ]  # fmt: skip
    return nn.Sequential(layers, nn.SoftmaxCrossEntropy(), seed=seed)


#: name -> (model builder, data builder): the two tasks every optimizer is run on.
TASKS = {"autoencoder": (autoencoder, digits_4x4), "cnn": (cnn, digits_8x8)}


def minibatches(X, T, batch_size: int, count: int):
    """The first ``count`` consecutive minibatches of ``(X, T)``, cycling through the data."""
    n_samples = X.shape[0]
    batches = []
    for k in range(count):
        index = (np.arange(batch_size) + k * batch_size) % n_samples
        batches.append((X[index], T[index]))
    return batches


def flat(weights) -> np.ndarray:
    """All parameters as one vector: ``vec`` (column-major) of each ``W~``, in network order."""
    return np.concatenate([w.ravel(order="F") for w in weights])
