"""The problems of ``kfqn-ref compare`` and ``train``: a model, its data and its split.

Embedded problems (scikit-learn's 8x8 digits, no download; ``docs/cli.md`` tabulates them):

* ``digits-autoencoder`` — the papers' deep autoencoder (784-1000-500-250-30-250-500-1000-784)
  scaled to 64 inputs, ``64-48-32-16-8-16-32-48-64``, ReLU, sigmoid cross-entropy; trained and
  scored on all 1,797 images (the papers report training loss).
* ``digits-cnn`` — conv ``1->8`` (3x3, padding 1), ReLU, 2x2 max-pool, dense ``128->10``, softmax
  cross-entropy; a held-out test split of :data:`TEST_FRACTION` of the images, drawn once with
  ``numpy.random.default_rng(SPLIT_SEED)`` (the same split for every run seed).

The papers' problems need the user's files (``kfqn-ref train --data``): ``mnist-autoencoder``,
``faces-autoencoder``, ``curves-autoencoder`` (Goldfarb, Ren & Bahamou 2020, section 5) and
``cifar-cnn`` (32x32x3 images, the 3c3d layout of Ren, Bahamou & Goldfarb 2022 with 2x2 pools).
"""

from __future__ import annotations

import dataclasses
from typing import Callable, NamedTuple

import numpy as np

from kfqn_ref import data, nn

#: Fraction of a classifier's samples held out for the test accuracy.
TEST_FRACTION = 0.2
#: Seed of the one permutation that splits a classifier's samples into train and test.
SPLIT_SEED = 0


class Split(NamedTuple):
    """Training samples and, for a classifier, held-out test samples (``None`` otherwise)."""

    train: data.Dataset
    test: data.Dataset | None


@dataclasses.dataclass(frozen=True)
class Problem:
    """A model builder, the input shape of one sample, the loss's kind and a minibatch size.

    ``embedded(dtype)`` loads the problem's own data, or is ``None`` when the problem needs the
    user's files; ``classifier`` problems take class labels and report test accuracy.
    """

    slug: str
    title: str
    build: Callable[[], list]
    loss: Callable[[], nn.Loss]
    sample_shape: tuple[int, ...]
    classifier: bool
    batch_size: int
    embedded: Callable[[np.dtype], data.Dataset] | None = None

    def make_model(self, seed: int, dtype=np.float64) -> nn.Sequential:
        """A fresh model with weights drawn from ``seed``."""
        return nn.Sequential(self.build(), loss=self.loss(), seed=seed, dtype=dtype)

    def split(self, dataset: data.Dataset) -> Split:
        """Train/test split: everything is training data for an autoencoder (see module doc)."""
        if not self.classifier:
            return Split(dataset, None)
        order = np.random.default_rng(SPLIT_SEED).permutation(len(dataset.X))
        n_test = int(round(TEST_FRACTION * len(order)))
        test, train = order[:n_test], order[n_test:]
        return Split(
            dataset._replace(X=dataset.X[train], T=dataset.T[train]),
            dataset._replace(name=dataset.name + " (test)", X=dataset.X[test], T=dataset.T[test]),
        )

    def dataset_from_arrays(self, name: str, X: np.ndarray, y: np.ndarray | None) -> data.Dataset:
        """The user's arrays as this problem's data set (``X`` reshaped to the sample shape).

        Images may come as ``(n, H, W)`` for one channel and as ``(n, H, W, C)`` (channels last,
        transposed here to NCHW); flat rows are reshaped when their length fits.

        Raises
        ------
        ValueError
            If ``X`` does not fit :attr:`sample_shape`, a classifier has no labels ``y`` or more
            classes than outputs, or an autoencoder with sigmoid cross-entropy gets ``X`` outside
            ``[0, 1]``.
        """
        X = self._shaped_inputs(X)
        if not self.classifier:
            if isinstance(self.loss(), nn.SigmoidCrossEntropy) and (X.min() < 0 or X.max() > 1):
                raise ValueError(
                    f"X must lie in [0, 1] for {self.slug} (sigmoid cross-entropy targets), got "
                    f"values in [{X.min():g}, {X.max():g}]; scale it first"
                )
            return data.Dataset(name, X, X.copy())
        if y is None:
            raise ValueError(
                f"{self.slug} is a classifier and needs labels: array 'y' in the .npz file "
                "or an IDX labels file (--labels)"
            )
        n_classes = self.make_model(0).output_shape((1, *self.sample_shape))[1]
        if y.max() >= n_classes:
            raise ValueError(
                f"y must hold labels in [0, {n_classes - 1}] for {self.slug}, got {y.max()}"
            )
        return data.Dataset(name, X, y)

    def _shaped_inputs(self, X: np.ndarray) -> np.ndarray:
        n, shape = X.shape[0], self.sample_shape
        if X.shape[1:] == shape:
            return X
        if len(shape) == 3 and X.shape[1:] == (shape[1], shape[2], shape[0]):
            return np.ascontiguousarray(X.transpose(0, 3, 1, 2))
        if int(np.prod(X.shape[1:])) == int(np.prod(shape)) and (len(shape) == 1 or shape[0] == 1):
            return X.reshape((n, *shape))
        raise ValueError(
            f"X must hold samples of shape {shape} for {self.slug} (or the same pixels as "
            f"{'rows' if len(shape) == 1 else 'HxW or HxWxC images'}), got X of shape {X.shape}"
        )


def _autoencoder(widths: tuple[int, ...]) -> Callable[[], list]:
    """Dense layers ``widths[0] -> widths[1] -> ...`` with ReLU between them."""

    def build():
        layers = []
        for d_in, d_out in zip(widths[:-1], widths[1:], strict=True):
            layers += [nn.Dense(d_in, d_out), nn.ReLU()]
        return layers[:-1]

    return build


def _digits_cnn() -> list:
    return [
        nn.Conv2d(1, 8, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Dense(8 * 4 * 4, 10),
    ]


def _cifar_cnn() -> list:
    """3c3d: convs of 64 (5x5), 96, 128 (3x3), each ReLU + 2x2 max-pool; dense 2048-512-256-10."""
    return [
        nn.Conv2d(3, 64, 5, padding=2),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(64, 96, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(96, 128, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Dense(128 * 4 * 4, 512),
        nn.ReLU(),
        nn.Dense(512, 256),
        nn.ReLU(),
        nn.Dense(256, 10),
    ]


PROBLEMS = {
    problem.slug: problem
    for problem in (
        Problem(
            "digits-autoencoder",
            "digits autoencoder 64-48-32-16-8-16-32-48-64",
            _autoencoder((64, 48, 32, 16, 8, 16, 32, 48, 64)),
            nn.SigmoidCrossEntropy,
            (64,),
            classifier=False,
            batch_size=100,
            embedded=data.digits_autoencoder,
        ),
        Problem(
            "digits-cnn",
            "digits CNN conv(8, 3x3)-pool-dense",
            _digits_cnn,
            nn.SoftmaxCrossEntropy,
            (1, 8, 8),
            classifier=True,
            batch_size=100,
            embedded=data.digits_classification,
        ),
        Problem(
            "mnist-autoencoder",
            "MNIST autoencoder 784-1000-500-250-30-250-500-1000-784",
            _autoencoder((784, 1000, 500, 250, 30, 250, 500, 1000, 784)),
            nn.SigmoidCrossEntropy,
            (784,),
            classifier=False,
            batch_size=1000,
        ),
        Problem(
            "faces-autoencoder",
            "FACES autoencoder 625-2000-1000-500-30-500-1000-2000-625",
            _autoencoder((625, 2000, 1000, 500, 30, 500, 1000, 2000, 625)),
            nn.SquaredError,
            (625,),
            classifier=False,
            batch_size=1000,
        ),
        Problem(
            "curves-autoencoder",
            "CURVES autoencoder 784-400-200-100-50-25-6-25-50-100-200-400-784",
            _autoencoder((784, 400, 200, 100, 50, 25, 6, 25, 50, 100, 200, 400, 784)),
            nn.SigmoidCrossEntropy,
            (784,),
            classifier=False,
            batch_size=1000,
        ),
        Problem(
            "cifar-cnn",
            "CIFAR-style CNN 3c3d for 32x32x3 images",
            _cifar_cnn,
            nn.SoftmaxCrossEntropy,
            (3, 32, 32),
            classifier=True,
            batch_size=128,
        ),
    )
}

#: The problems ``kfqn-ref compare`` runs by default (those with embedded data).
EMBEDDED = tuple(slug for slug, problem in PROBLEMS.items() if problem.embedded is not None)
