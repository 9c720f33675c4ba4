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
        on_step=lambda log: calls.append((log.name, log.step_losses[-1])),
    )
    assert calls == [(log.name, loss) for log in logs for loss in log.step_losses]
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
    assert isinstance(log.diverged, train.Divergence) and 0 <= log.diverged.step < 3
    assert "not finite" in log.diverged.reason
    assert np.isnan(log.final_loss)
    assert all(np.all(np.isfinite(w)) for w in model.weights())


def test_a_non_finite_end_of_epoch_loss_is_logged_not_raised(monkeypatch):
    """The step succeeded but the data-set loss after it overflows: the run is recorded as
    diverged at that step, and no non-finite number enters the log."""
    dataset = small_regression()
    losses = iter([1.0, float("inf")])
    monkeypatch.setattr(train, "dataset_loss", lambda model, data_set: next(losses))
    log = train.run(
        optim.SGDMomentum(linear_model(), lr=0.01), dataset, batch_size=20, epochs=2, seed=0
    )
    assert log.diverged == train.Divergence(3, "training-set loss is inf (the loss overflowed)")
    assert log.epoch_losses == [1.0] and len(log.step_losses) == 3


def test_a_forward_overflow_at_the_end_of_an_epoch_is_logged_not_raised(monkeypatch):
    def overflow(model, data_set):
        raise optim.NonFiniteError("network output z is not finite")

    log = train.run(
        optim.SGDMomentum(linear_model(), lr=0.01), small_regression(), batch_size=20, epochs=1
    )
    assert log.diverged is None
    monkeypatch.setattr(train, "dataset_loss", overflow)
    log = train.run(
        optim.SGDMomentum(linear_model(), lr=0.01), small_regression(), batch_size=20, epochs=1
    )
    assert log.diverged == train.Divergence(0, "training-set loss: network output z is not finite")
    assert log.epoch_losses == [] and log.step_losses == []


def test_a_test_set_overflow_at_the_end_of_an_epoch_is_logged_not_raised(monkeypatch):
    """The training-set loss is finite but the test set's outputs overflow (here: accuracy
    raises as the forward pass's check does): the run is recorded as diverged at that step, and
    neither the loss nor an accuracy of that evaluation enters the log (the two stay aligned)."""

    def overflow(model, data_set):
        raise optim.NonFiniteError("network output z is not finite")

    monkeypatch.setattr(train, "accuracy", overflow)
    dataset = small_regression()
    log = train.run(
        optim.SGDMomentum(linear_model(), lr=0.01),
        dataset,
        batch_size=20,
        epochs=1,
        test=dataset,
    )
    assert log.diverged == train.Divergence(0, "test accuracy: network output z is not finite")
    assert log.epoch_losses == [] and log.test_accuracies == [] and log.step_losses == []


def test_a_resumed_run_continues_the_same_stream_bit_identically():
    dataset = small_regression()
    whole = optim.Adam(linear_model(), lr=0.05)
    full_log = train.run(whole, dataset, batch_size=20, epochs=3, seed=4)
    first = optim.Adam(linear_model(), lr=0.05)
    partial = train.run(first, dataset, batch_size=20, epochs=1, seed=4)  # 3 of the 9 steps
    resumed = optim.Adam(linear_model(seed=9), lr=0.05)  # other weights, replaced by the state
    resumed.load_state_dict(first.state_dict())
    log = train.run(resumed, dataset, batch_size=20, epochs=3, seed=4, log=partial)
    assert log.step_losses == full_log.step_losses and log.epoch_losses == full_log.epoch_losses
    for a, b in zip(resumed.model.weights(), whole.model.weights(), strict=True):
        np.testing.assert_array_equal(a, b)


def test_accuracy_counts_the_largest_output():
    model = nn.Sequential([nn.Dense(2, 3)], loss=nn.SoftmaxCrossEntropy(), seed=0)
    X = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [-1.0, 2.0]])
    predicted = np.argmax(model.forward(X), axis=1)
    targets = predicted.copy()
    targets[0] = (targets[0] + 1) % 3  # one of four wrong
    assert train.accuracy(model, data.Dataset("four", X, targets)) == 0.75
