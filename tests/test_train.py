"""Training loops: the data-set loss, fair comparisons, and runs that overflow."""

import numpy as np
import pytest

from kfqn_ref import data, nn, optim, train


def small_regression() -> data.Dataset:
    return data.synthetic_regression(60, 4, 3, seed=0)


def linear_model(seed: int = 0) -> nn.Sequential:
    return nn.Sequential([nn.Dense(4, 3)], loss=nn.SquaredError(), seed=seed)


def test_dataset_loss_in_chunks_equals_one_pass(monkeypatch):
    dataset = small_regression()
    model = linear_model()
    whole = model.loss.value(model.forward(dataset.X), dataset.T)
    monkeypatch.setattr(train, "EVALUATION_CHUNK", 7)  # 60 = 8 chunks of 7 and one of 4
    assert train.dataset_loss(model, dataset) == pytest.approx(whole, rel=1e-13)


def test_run_logs_every_step_and_every_epoch_as_a_hand_written_loop_does():
    dataset = small_regression()
    log = train.run(
        optim.SGDMomentum(linear_model(), lr=0.05, momentum=0.9),
        dataset,
        batch_size=20,
        epochs=2,
        seed=3,
        name="sgd",
    )
    # independent route: the same loop written out, with the loss evaluated in one pass
    model = linear_model()
    reference = optim.SGDMomentum(model, lr=0.05, momentum=0.9)
    step_losses, epoch_losses = [], [model.loss.value(model.forward(dataset.X), dataset.T)]
    for step, (X, T) in enumerate(data.minibatches(dataset, 20, seed=3, epochs=2)):
        step_losses.append(reference.step(X, T))
        if (step + 1) % 3 == 0:
            epoch_losses.append(model.loss.value(model.forward(dataset.X), dataset.T))
    assert log.name == "sgd" and log.diverged is None
    assert log.step_losses == step_losses
    np.testing.assert_allclose(log.epoch_losses, epoch_losses, rtol=1e-13)
    assert len(log.step_seconds) == 6 and min(log.step_seconds) > 0
    assert log.final_loss == log.epoch_losses[-1] < log.epoch_losses[0]


def test_compare_starts_every_method_from_the_same_weights_and_minibatches():
    dataset = small_regression()
    seen = {}

    def recording(name, optimizer_class, **options):
        def build(model):
            seen[name] = [w.copy() for w in model.weights()]
            return optimizer_class(model, **options)

        return build

    calls = []
    logs = train.compare(
        linear_model,
        {
            "sgd": recording("sgd", optim.SGDMomentum, lr=0.01),
            "kbfgs": recording("kbfgs", optim.KBFGS),
        },
        dataset,
        batch_size=20,
        epochs=1,
        on_step=lambda label, step, loss: calls.append((label, step, loss)),
    )
    assert calls == [
        (log.name, step, loss) for log in logs for step, loss in enumerate(log.step_losses)
    ]
    for first, second in zip(seen["sgd"], seen["kbfgs"], strict=True):
        np.testing.assert_array_equal(first, second)
    # the first minibatch loss is taken at the common initial weights on the common first batch
    assert logs[0].step_losses[0] == logs[1].step_losses[0]
    assert [log.name for log in logs] == ["sgd", "kbfgs"]


@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")
@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")
def test_a_run_that_overflows_stops_with_the_last_good_weights():
    dataset = data.synthetic_regression(60, 4, 3, seed=0)
    dataset = dataset._replace(X=1e100 * dataset.X)  # finite, but the squared error overflows
    model = linear_model()
    log = train.run(optim.SGDMomentum(model, lr=1.0), dataset, batch_size=20, epochs=1)
    assert log.diverged is not None and log.diverged.startswith("step ")
    assert np.isnan(log.final_loss)
    assert all(np.all(np.isfinite(w)) for w in model.weights())


@pytest.mark.parametrize(
    ("batch_size", "epochs", "error", "message"),
    [
        (0, 1, ValueError, r"batch_size must lie in \[1, 60\] \(the data set size\), got 0"),
        (-5, 1, ValueError, r"batch_size must lie in \[1, 60\]"),
        (61, 1, ValueError, r"batch_size must lie in \[1, 60\]"),
        (2.5, 1, TypeError, "batch_size must be an integer, got float"),
        (20, 0, ValueError, "epochs must be an integer >= 1, got 0"),
    ],
)
def test_run_rejects_bad_batch_size_or_epochs_before_anything_runs(
    batch_size, epochs, error, message
):
    """Checked before use: no ZeroDivisionError, no step, no data-set loss evaluated."""
    model = linear_model()
    before = model.weights()
    optimizer = optim.SGDMomentum(model, lr=0.01)
    with pytest.raises(error, match=message):
        train.run(optimizer, small_regression(), batch_size=batch_size, epochs=epochs)
    assert optimizer.step_count == 0
    assert all(np.array_equal(a, b) for a, b in zip(model.weights(), before, strict=True))
