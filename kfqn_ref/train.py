"""Training loops and comparison runs: the same data stream and initial weights for every method.

A comparison is fair only if every optimizer starts from the same weights and sees the same
minibatches in the same order. :func:`compare` builds a fresh model from one seed for every
optimizer and draws minibatches from one seeded stream (:func:`kfqn_ref.data.minibatches`).
"""

from __future__ import annotations

import dataclasses
import functools
import time
from typing import Callable

import numpy as np

from kfqn_ref import data as data_module
from kfqn_ref.optim.base import NonFiniteError, Optimizer

#: Samples per chunk when the full-data-set loss is evaluated (bounds the memory of one pass).
EVALUATION_CHUNK = 1000


@dataclasses.dataclass
class RunLog:
    """What one training run measured.

    Attributes
    ----------
    name:
        Label of the run (the optimizer's name in a comparison).
    step_losses:
        Minibatch loss before each step, one per step.
    step_seconds:
        Wall-clock seconds of each ``optimizer.step`` call.
    epoch_losses:
        Mean loss over the whole data set at the initial weights and after each epoch.
    diverged:
        The message of the :class:`~kfqn_ref.optim.base.NonFiniteError` that stopped the run
        (a step that overflowed was refused), or ``None`` if every step succeeded.
    """

    name: str
    step_losses: list[float] = dataclasses.field(default_factory=list)
    step_seconds: list[float] = dataclasses.field(default_factory=list)
    epoch_losses: list[float] = dataclasses.field(default_factory=list)
    diverged: str | None = None

    @property
    def final_loss(self) -> float:
        """Data-set loss after the last completed epoch (NaN for a run that diverged)."""
        return float("nan") if self.diverged else self.epoch_losses[-1]

    @property
    def mean_step_seconds(self) -> float:
        """Mean wall-clock time of one step."""
        return float(np.mean(self.step_seconds))


def dataset_loss(model, dataset: data_module.Dataset) -> float:
    """Mean loss of ``model`` over the whole data set, evaluated in chunks."""
    n = dataset.X.shape[0]
    total = 0.0
    for start in range(0, n, EVALUATION_CHUNK):
        X = dataset.X[start : start + EVALUATION_CHUNK]
        T = dataset.T[start : start + EVALUATION_CHUNK]
        total += model.loss.value(model.forward(X), T) * X.shape[0]
    return total / n


def run(
    optimizer: Optimizer,
    dataset: data_module.Dataset,
    *,
    batch_size: int,
    epochs: int,
    seed: int = 0,
    name: str | None = None,
    on_step: Callable[[int, float], None] | None = None,
) -> RunLog:
    """Train ``optimizer.model`` for ``epochs`` epochs of seeded minibatches; return the log.

    ``on_step(step_index, loss)`` is called after every step (for progress bars). A step that
    overflows (:class:`~kfqn_ref.optim.base.NonFiniteError`) ends the run: the optimizer refused
    it, so the model keeps the weights of the last good step, and the log records the message in
    ``diverged``. Every other error propagates.

    Raises
    ------
    TypeError, ValueError
        Before anything runs, if ``batch_size`` is not an integer in ``[1, n]`` (``n`` samples) or
        ``epochs`` not an integer ``>= 1``.
    """
    steps_per_epoch = _steps_per_epoch(dataset, batch_size, epochs)
    log = RunLog(name or type(optimizer).__name__)
    log.epoch_losses.append(dataset_loss(optimizer.model, dataset))
    stream = data_module.minibatches(dataset, batch_size, seed=seed, epochs=epochs)
    for step, (X, T) in enumerate(stream):
        start = time.perf_counter()
        try:
            loss = optimizer.step(X, T)
        except NonFiniteError as error:
            log.diverged = f"step {step}: {error}"
            break
        log.step_seconds.append(time.perf_counter() - start)
        log.step_losses.append(loss)
        if on_step is not None:
            on_step(step, loss)
        if (step + 1) % steps_per_epoch == 0:
            log.epoch_losses.append(dataset_loss(optimizer.model, dataset))
    return log


def _steps_per_epoch(dataset: data_module.Dataset, batch_size, epochs) -> int:
    """``floor(n / batch_size)`` after checking both arguments as :func:`data.minibatches` does.

    The minibatch stream is a generator, so its own checks run only at the first minibatch; these
    run before the division and before the initial data-set loss is evaluated.
    """
    n = dataset.X.shape[0]
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)):
        raise TypeError(f"batch_size must be an integer, got {type(batch_size).__name__}")
    if not 1 <= batch_size <= n:
        raise ValueError(f"batch_size must lie in [1, {n}] (the data set size), got {batch_size}")
    if isinstance(epochs, bool) or not isinstance(epochs, (int, np.integer)) or epochs < 1:
        raise ValueError(f"epochs must be an integer >= 1, got {epochs!r}")
    return n // batch_size


def compare(
    make_model: Callable[[], object],
    make_optimizers: dict[str, Callable[[object], Optimizer]],
    dataset: data_module.Dataset,
    *,
    batch_size: int,
    epochs: int,
    seed: int = 0,
    on_step: Callable[[str, int, float], None] | None = None,
) -> list[RunLog]:
    """Run every optimizer from the same initial weights on the same minibatch stream.

    ``make_model()`` must return a freshly initialised model with the same seed each call;
    ``make_optimizers`` maps a run's label to a function building its optimizer on a model.
    """
    logs = []
    for label, make_optimizer in make_optimizers.items():
        optimizer = make_optimizer(make_model())
        callback = None if on_step is None else functools.partial(on_step, label)
        logs.append(
            run(
                optimizer,
                dataset,
                batch_size=batch_size,
                epochs=epochs,
                seed=seed,
                name=label,
                on_step=callback,
            )
        )
    return logs
