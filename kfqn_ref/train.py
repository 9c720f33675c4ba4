"""Training loops and comparison runs: the same data stream and initial weights for every method.

A comparison is fair only if every optimizer starts from the same weights and sees the same
minibatches in the same order. :func:`compare` builds a fresh model from one seed for every
optimizer and draws minibatches from one seeded stream (:func:`kfqn_ref.data.minibatches`).

:func:`run` is resumable: given an optimizer restored from a checkpoint (``step_count = k``) and
the log written with it, it skips the first ``k`` minibatches of the same stream and continues, so
the weights are bit-identical to those of an uninterrupted run (``docs/cli.md``, "Checkpoints").
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import time
from typing import Callable, NamedTuple

import numpy as np

from kfqn_ref import backend
from kfqn_ref import data as data_module
from kfqn_ref.optim import NonFiniteError, Optimizer

#: Samples per chunk when the full-data-set loss is evaluated (bounds the memory of one pass).
EVALUATION_CHUNK = 1000


class Divergence(NamedTuple):
    """Where a run stopped and why: the step index and the message of the refusal."""

    step: int
    reason: str


@dataclasses.dataclass
class RunLog:
    """What one training run measured (every number finite).

    Attributes
    ----------
    name:
        Label of the run (the optimizer's name in a comparison).
    epoch_losses:
        Mean loss over the training set at the initial weights and after each epoch.
    test_accuracies:
        Accuracy on the held-out set at the same moments (empty without a test set).
    epoch_wall_seconds:
        Wall-clock seconds since the run started (evaluations included) at the same moments.
    step_losses:
        Minibatch loss before each step, one per step.
    step_seconds:
        Wall-clock seconds of each ``optimizer.step`` call.
    prepass_seconds:
        Seconds of K-BFGS's ``A`` pre-pass (0 for the other methods).
    diverged:
        The :class:`Divergence` that ended the run, or ``None`` if every step succeeded.
    elapsed:
        Wall-clock seconds spent so far (carried over a resume).
    """

    name: str
    epoch_losses: list[float] = dataclasses.field(default_factory=list)
    test_accuracies: list[float] = dataclasses.field(default_factory=list)
    epoch_wall_seconds: list[float] = dataclasses.field(default_factory=list)
    step_losses: list[float] = dataclasses.field(default_factory=list)
    step_seconds: list[float] = dataclasses.field(default_factory=list)
    prepass_seconds: float = 0.0
    diverged: Divergence | None = None
    elapsed: float = 0.0

    @property
    def final_loss(self) -> float:
        """Training-set loss after the last completed epoch (NaN for a run that diverged)."""
        return float("nan") if self.diverged else self.epoch_losses[-1]

    @property
    def mean_step_seconds(self) -> float:
        """Mean wall-clock time of one step (NaN before the first step)."""
        return float(np.mean(self.step_seconds)) if self.step_seconds else float("nan")

    @property
    def median_step_seconds(self) -> float:
        """Median wall-clock time of one step: robust to a machine busy with other work."""
        return float(np.median(self.step_seconds)) if self.step_seconds else float("nan")

    def optimizer_seconds(self, steps_per_epoch: int) -> list[float]:
        """Cumulative optimizer time (pre-pass + steps) at each entry of :attr:`epoch_losses`."""
        cumulative = np.concatenate([[0.0], np.cumsum(self.step_seconds)]) + self.prepass_seconds
        return [float(cumulative[e * steps_per_epoch]) for e in range(len(self.epoch_losses))]


def dataset_loss(model, dataset: data_module.Dataset) -> float:
    """Mean loss of ``model`` over the whole data set, evaluated in chunks."""
    n = dataset.X.shape[0]
    total = 0.0
    for start in range(0, n, EVALUATION_CHUNK):
        X = backend.to_device(dataset.X[start : start + EVALUATION_CHUNK])
        T = backend.to_device(dataset.T[start : start + EVALUATION_CHUNK])
        total += model.loss.value(model.forward(X), T) * X.shape[0]
    return total / n


def accuracy(model, dataset: data_module.Dataset) -> float:
    """Fraction of samples whose largest output is the target class (``T`` class indices)."""
    hits = 0
    for start in range(0, dataset.X.shape[0], EVALUATION_CHUNK):
        z = model.forward(backend.to_device(dataset.X[start : start + EVALUATION_CHUNK]))
        predicted = backend.to_host(z.argmax(axis=1))
        hits += int(np.sum(predicted == dataset.T[start : start + EVALUATION_CHUNK]))
    return hits / dataset.X.shape[0]


def run(
    optimizer: Optimizer,
    dataset: data_module.Dataset,
    *,
    batch_size: int,
    epochs: int,
    seed: int = 0,
    name: str | None = None,
    test: data_module.Dataset | None = None,
    prepass: bool = False,
    log: RunLog | None = None,
    on_step: Callable[[RunLog], None] | None = None,
) -> RunLog:
    """Train ``optimizer.model`` for ``epochs`` epochs of seeded minibatches; return the log.

    ``prepass`` runs :meth:`~kfqn_ref.optim.KBFGS.initialize_A` on the first epoch's minibatches
    before step 0. ``test`` adds the test accuracy after every epoch. ``on_step(log)`` is called
    after every step (and its end-of-epoch evaluation), e.g. for progress bars and checkpoints.
    To resume, pass the restored optimizer and its ``log``: the first ``optimizer.step_count``
    minibatches of the stream are skipped.

    A step that overflows (:class:`~kfqn_ref.optim.NonFiniteError`, also for a damped factor that
    is numerically singular: ``docs/reliability.md``) is refused by the optimizer, so the model
    keeps the weights of the last good step; that, a pre-pass that
    overflows, or an end-of-epoch loss that is not finite ends the run: ``log.diverged`` records
    the step and the reason. Every other error propagates.

    Raises
    ------
    TypeError, ValueError
        Before anything runs, if ``batch_size`` is not an integer in ``[1, n]`` (``n`` samples),
        ``epochs`` not an integer ``>= 1``, or ``log`` does not match ``optimizer.step_count``.
    """
    stream = data_module.minibatches(dataset, batch_size, seed=seed, epochs=epochs)
    steps_per_epoch = len(dataset.X) // batch_size
    first = optimizer.step_count
    if log is None:
        log = RunLog(name or type(optimizer).__name__)
    elif len(log.step_losses) != first:
        raise ValueError(
            f"log holds {len(log.step_losses)} steps but the optimizer took {first}: "
            "resume with the log saved together with the optimizer's state"
        )
    started = time.perf_counter() - log.elapsed
    if first == 0 and not log.epoch_losses:
        if prepass:
            _prepass(optimizer, dataset, batch_size, seed, log)
        if log.diverged is None:
            _evaluate(optimizer.model, dataset, test, log, first, started)
    if log.diverged is not None:
        return log
    for step, (X, T) in enumerate(itertools.islice(stream, first, None), start=first):
        start = time.perf_counter()
        try:
            loss = optimizer.step(backend.to_device(X), backend.to_device(T))
        except NonFiniteError as error:
            log.diverged = Divergence(step, str(error))
            break
        log.step_seconds.append(time.perf_counter() - start)
        log.step_losses.append(loss)
        if (step + 1) % steps_per_epoch == 0:
            _evaluate(optimizer.model, dataset, test, log, step + 1, started)
            if log.diverged is not None:
                break
        log.elapsed = time.perf_counter() - started
        if on_step is not None:
            on_step(log)
    return log


def _prepass(optimizer, dataset, batch_size: int, seed: int, log: RunLog) -> None:
    """K-BFGS's ``A`` pre-pass over one epoch of the stream, timed; an overflow ends the run."""
    start = time.perf_counter()
    try:
        optimizer.initialize_A(
            backend.to_device(X) for X, _ in data_module.minibatches(dataset, batch_size, seed=seed)
        )
    except NonFiniteError as error:
        log.diverged = Divergence(0, f"A pre-pass: {error}")
    log.prepass_seconds = time.perf_counter() - start


def _evaluate(model, dataset, test, log: RunLog, step: int, started: float) -> None:
    """Append the training-set loss (and test accuracy) to ``log``, or record the divergence.

    An overflow in either (the test set's outputs can overflow where the training set's do not)
    ends the run as diverged at ``step``, and nothing of this evaluation enters the log.
    """
    try:
        loss = dataset_loss(model, dataset)
    except NonFiniteError as error:
        log.diverged = Divergence(step, f"training-set loss: {error}")
        return
    if not math.isfinite(loss):
        log.diverged = Divergence(step, f"training-set loss is {loss} (the loss overflowed)")
        return
    test_accuracy = None
    if test is not None:
        try:
            test_accuracy = accuracy(model, test)
        except NonFiniteError as error:
            log.diverged = Divergence(step, f"test accuracy: {error}")
            return
    log.epoch_losses.append(loss)
    if test_accuracy is not None:
        log.test_accuracies.append(test_accuracy)
    log.epoch_wall_seconds.append(time.perf_counter() - started)


def compare(
    make_model: Callable[[], object],
    make_optimizers: dict[str, Callable[[object], Optimizer]],
    dataset: data_module.Dataset,
    *,
    batch_size: int,
    epochs: int,
    seed: int = 0,
    on_step: Callable[[RunLog], None] | None = None,
) -> list[RunLog]:
    """Run every optimizer from the same initial weights on the same minibatch stream.

    ``make_model()`` must return a freshly initialised model with the same seed each call;
    ``make_optimizers`` maps a run's label to a function building its optimizer on a model.
    """
    return [
        run(
            make_optimizer(make_model()),
            dataset,
            batch_size=batch_size,
            epochs=epochs,
            seed=seed,
            name=label,
            on_step=on_step,
        )
        for label, make_optimizer in make_optimizers.items()
    ]
