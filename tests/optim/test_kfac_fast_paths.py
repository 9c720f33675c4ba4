"""KFAC's fast paths against their slow twins (bit for bit: the same arithmetic, fewer checks).

* :func:`kfqn_ref.optim.kfac.minibatch_factors` (unchecked output gradients, one backward pass
  per set, the empirical ``G`` from the records of the gradient's own backward pass) against the
  checked public :func:`kfqn_ref.curvature.kfac_factors` (tested against autograd and the PyTorch
  recordings in ``tests/curvature``) and, for ``REDUCE``, against the same function without the
  records of the first pass.
"""

import numpy as np
import pytest

from kfqn_ref.curvature.factors import FisherType, kfac_factors
from kfqn_ref.optim.kfac import KFACApproximation, minibatch_factors
from tests.optim import TASKS

BATCH = 12


def forward_and_records(task):
    """A fresh model of ``task``, its forward pass on a minibatch, ``T`` and drawn targets, and the
    records of the gradient's backward pass at ``T`` (as ``KFAC._step`` makes them)."""
    build_model, build_data = TASKS[task]
    model = build_model()
    X, T = build_data(BATCH)
    forward = model.forward_pass(X)
    drawn = model.loss.sample_targets(forward.z, np.random.default_rng(3))
    records = model.backward_pass(forward, model.loss.output_gradient(forward.z, T))
    return model, forward, T, drawn, records


def assert_same_factors(actual, expected, what):
    assert len(actual) == len(expected), what
    for i, (a, e) in enumerate(zip(actual, expected, strict=True)):
        assert np.array_equal(a.A, e.A), f"{what}: A of trainable layer {i}"
        assert np.array_equal(a.G, e.G), f"{what}: G of trainable layer {i}"


@pytest.mark.parametrize("fisher", list(FisherType))
@pytest.mark.parametrize("task", ["autoencoder", "cnn"])
def test_expand_factors_are_kfac_factors_bit_for_bit(task, fisher):
    """EXPAND: the Monte-Carlo factors are kfac_factors' empirical factors at the drawn targets,
    the others kfac_factors' own; with or without the records of the gradient's backward pass."""
    model, forward, T, drawn, records = forward_and_records(task)
    if fisher is FisherType.MONTE_CARLO:
        expected = kfac_factors(model, forward, drawn, FisherType.EMPIRICAL)
    else:
        expected = kfac_factors(model, forward, T, fisher)
    for reuse in (None, records):
        actual = minibatch_factors(
            model, forward, T, fisher, drawn, KFACApproximation.EXPAND, true_target_records=reuse
        )
        assert_same_factors(actual, expected, f"{fisher.value}, records given: {reuse is not None}")


@pytest.mark.parametrize("fisher", list(FisherType))
def test_reduce_factors_do_not_depend_on_reusing_the_first_pass(fisher):
    """REDUCE on the CNN: the records of the gradient's backward pass give the same bits as a
    second backward pass (its values: tests/golden_tests/test_kfac_options.py, curvlinops)."""
    model, forward, T, drawn, records = forward_and_records("cnn")
    args = (model, forward, T, fisher, drawn, KFACApproximation.REDUCE)
    assert_same_factors(
        minibatch_factors(*args, true_target_records=records),
        minibatch_factors(*args),
        f"reduce, {fisher.value}",
    )
