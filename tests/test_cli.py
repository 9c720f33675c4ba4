"""The ``kfqn-ref`` command line: what ``demo`` writes, and how it refuses bad arguments."""

import csv
import json

import numpy as np
import pytest

from kfqn_ref import cli, data, optim

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    status = cli.main(
        [
            "demo",
            "--out",
            str(out),
            "--epochs",
            "2",
            "--batch-size",
            "300",
            "--methods",
            "K-BFGS",
            "KFAC",
            "Adam",
        ]
    )
    return status, out


def test_demo_writes_summary_csv_and_plot(demo_run):
    status, out = demo_run
    assert status == 0
    summary = json.loads((out / "summary.json").read_text())
    assert [run["name"] for run in summary["runs"]] == ["K-BFGS", "KFAC", "Adam"]
    for run in summary["runs"]:
        assert len(run["epoch_losses"]) == 3 and len(run["step_losses"]) == 2 * (1797 // 300)
        assert run["diverged"] is None
        assert run["epoch_losses"][-1] < run["epoch_losses"][0]
    assert summary["runs"][0]["config"]["variant"] == optim.KBFGSVariant.KFQN_2022.value
    with open(out / "epoch_losses.csv", newline="") as handle:
        rows = list(csv.reader(handle))
    assert rows[0] == ["epoch", "K-BFGS", "KFAC", "Adam"]
    np.testing.assert_array_equal(
        [[float(x) for x in row[1:]] for row in rows[1:]],
        np.array([run["epoch_losses"] for run in summary["runs"]]).T,
    )
    assert (out / "loss.png").read_bytes()[:8] == PNG_SIGNATURE


def test_demo_losses_equal_a_hand_written_run_of_the_same_setting(demo_run):
    """Independent route: build the model and optimizer directly and step through the stream."""
    _, out = demo_run
    summary = json.loads((out / "summary.json").read_text())
    optimizer_class, options = cli.TASKS["autoencoder"].settings["K-BFGS"]
    dataset = data.digits_autoencoder()
    model = cli.digits_autoencoder_model(seed=0)
    optimizer = optimizer_class(model, **options)
    losses = [optimizer.step(X, T) for X, T in data.minibatches(dataset, 300, seed=0, epochs=2)]
    assert summary["runs"][0]["step_losses"] == losses
    final = model.loss.value(model.forward(dataset.X), dataset.T)
    assert summary["runs"][0]["epoch_losses"][-1] == pytest.approx(final, rel=1e-12)


def test_cnn_task_runs_without_plot(tmp_path, capsys):
    assert (
        cli.main(
            [
                "demo",
                "--task",
                "cnn",
                "--out",
                str(tmp_path),
                "--epochs",
                "1",
                "--batch-size",
                "600",
                "--methods",
                "K-BFGS(L)",
                "--no-plot",
            ]
        )
        == 0
    )
    assert not (tmp_path / "loss.png").exists()
    assert "K-BFGS(L)" in capsys.readouterr().out
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["dataset"] == "digits-classification"


@pytest.mark.parametrize(
    "arguments, message",
    [
        (["demo", "--epochs", "0"], "--epochs: expected an integer >= 1, got 0"),
        (["demo", "--epochs", "two"], "--epochs: expected an integer >= 1, got 'two'"),
        (["demo", "--seed", "-1"], "--seed: expected an integer >= 0, got -1"),
        (["demo", "--batch-size", "5000"], "--batch-size must be at most 1797"),
        (["demo", "--task", "mnist"], "invalid choice: 'mnist'"),
        (["demo", "--methods", "LBFGS"], "--methods: unknown ['LBFGS']"),
        ([], "the following arguments are required: command"),
    ],
)
def test_bad_arguments_exit_with_a_message(arguments, message, capsys, tmp_path):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(arguments + ["--out", str(tmp_path)] if arguments else arguments)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err
    assert not any(tmp_path.iterdir()), "a refused command writes nothing"
