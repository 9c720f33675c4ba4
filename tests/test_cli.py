"""The ``kfqn-ref`` command line: what compare, train and verify write, resumption, exit status.

Refused arguments and malformed files: ``tests/cli/test_bad_input.py``.
"""

import csv
import json
import os
import signal
import subprocess
import sys
import time

import matplotlib.pyplot as plt
import numpy as np
import pytest

from kfqn_ref import __version__, backend, checkpoint, cli, data, methods, problems, report, verify
from tests.cli.files import digit_like_images, write_idx

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RUN_KEYS = {
    "id", "problem", "method", "method_name", "setting", "seed", "optimizer", "config",
    "batch_size", "steps_per_epoch", "final_loss", "diverged", "epoch_losses", "test_accuracies",
    "epoch_wall_seconds", "optimizer_seconds", "prepass_seconds", "step_losses", "step_seconds",
    "mean_step_seconds", "median_step_seconds", "state_bytes",
}  # fmt: skip


def assert_png(path):
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    image = plt.imread(path)
    assert image.ndim == 3 and image.shape[0] > 200 and image.shape[1] > 200


def reject_non_finite(constant):
    raise AssertionError(f"{constant} written to a JSON file")


def read_csv(path):
    with open(path, newline="") as handle:
        return list(csv.reader(handle))


def table_rows(markdown, problem_slug):
    """The table rows (without header and rule) of the problem's section of report.md."""
    section = markdown.split(f"(`{problem_slug}`)")[1].split("\n## ")[0]
    return [line for line in section.splitlines() if line.startswith("| ")][1:]


# -- compare ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def compare_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("compare") / "out"
    status = cli.main(
        ["compare", "--quick", "--methods", "KBFGS", "kfac", "Adam", "--out", str(out), "--quiet"]
    )
    return status, out


def test_compare_writes_logs_plots_report_and_summary(compare_run):
    status, out = compare_run
    assert status == 0
    summary = json.loads((out / "summary.json").read_text(), parse_constant=reject_non_finite)
    assert set(summary) == {
        "package_version", "options", "selection_rule", "problems", "best", "runs"
    }  # fmt: skip
    assert summary["options"] == {"epochs": 2, "seeds": [0], "dtype": "float64", "quick": True}
    grid_sizes = {"kbfgs": 4, "kfac": 4, "adam": 3}
    assert len(summary["runs"]) == 2 * sum(grid_sizes.values())
    for run in summary["runs"]:
        record = json.loads((out / run["log"]).read_text())
        assert set(record) == RUN_KEYS
        assert len(record["step_losses"]) == 2 * record["steps_per_epoch"] or record["diverged"]
        rows = read_csv(out / run["log"].replace(".json", ".csv"))
        assert rows[0] == list(report.CSV_COLUMNS)
        assert [float(row[1]) for row in rows[1:]] == record["epoch_losses"]
        has_accuracy = run["problem"] == "digits-cnn"
        assert all((row[2] != "") == has_accuracy for row in rows[1:])
    kbfgs = next(run for run in summary["runs"] if run["method"] == "kbfgs")
    assert kbfgs["config"]["variant"] == "2022"  # enum options spelled as strings
    assert {row["method"] for row in summary["best"]} == set(grid_sizes)
    assert_png(out / "loss.png")
    assert_png(out / "accuracy.png")


def test_report_has_one_row_per_method_and_problem_and_embeds_the_plots(compare_run):
    _, out = compare_run
    markdown = (out / "report.md").read_text()
    summary = json.loads((out / "summary.json").read_text())
    for slug in problems.EMBEDDED:
        rows = table_rows(markdown, slug)
        assert [row.split(" | ")[0][2:] for row in rows] == ["K-BFGS", "KFAC", "Adam"]
        adam = next(r for r in summary["best"] if r["problem"] == slug and r["method"] == "adam")
        assert adam["state_vs_adam"] == 1.0 and adam["ms_per_step_vs_adam"] == 1.0
    assert "![loss.png](loss.png)" in markdown and "![accuracy.png](accuracy.png)" in markdown


def test_selected_setting_has_the_lowest_final_training_loss(compare_run):
    _, out = compare_run
    summary = json.loads((out / "summary.json").read_text())
    for best in summary["best"]:
        finals = [
            run["final_loss"]
            for run in summary["runs"]
            if (run["problem"], run["method"]) == (best["problem"], best["method"])
            and run["final_loss"] is not None
        ]
        assert best["final_loss_mean"] == min(finals)


def test_compare_losses_equal_a_hand_written_run_of_the_same_setting(compare_run):
    """Independent route: build model and optimizer directly, pre-pass, step through the stream."""
    _, out = compare_run
    run_id = "kbfgs_lr0.3_d0.03_seed0"
    record = json.loads((out / "runs" / "digits-autoencoder" / f"{run_id}.json").read_text())
    problem = problems.PROBLEMS["digits-autoencoder"]
    dataset = data.digits_autoencoder()
    model = problem.make_model(0)
    optimizer = methods.METHODS["kbfgs"].optimizer(model, lr=0.3, damping=0.03)
    optimizer.initialize_A(X for X, _ in data.minibatches(dataset, 100, seed=0))
    stream = data.minibatches(dataset, 100, seed=0, epochs=2)
    assert record["step_losses"] == [optimizer.step(X, T) for X, T in stream]
    final = model.loss.value(model.forward(dataset.X), dataset.T)
    assert record["epoch_losses"][-1] == pytest.approx(final, rel=1e-12)


def test_demo_is_an_alias_of_compare(tmp_path, capsys):
    out = tmp_path / "demo"
    arguments = ["--quick", "--problems", "digits-cnn", "--methods", "sgd", "--quiet"]
    assert cli.main(["demo", *arguments, "--out", str(out)]) == 0
    assert "SGD-momentum" in capsys.readouterr().out
    assert len(json.loads((out / "summary.json").read_text())["runs"]) == 3


def test_a_diverging_run_is_recorded_and_the_comparison_goes_on(tmp_path, monkeypatch):
    """SGD with lr = 1e6 overflows; the other settings still run and are selected from."""
    grid = methods.METHODS["sgd"]._replace(lrs=(1e6, 0.01))
    monkeypatch.setitem(methods.METHODS, "sgd", grid)
    out = tmp_path / "out"
    arguments = ["compare", "--quick", "--problems", "digits-autoencoder", "--methods", "sgd"]
    assert cli.main([*arguments, "--out", str(out), "--quiet"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    diverged, finished = summary["runs"]
    assert diverged["final_loss"] is None and isinstance(diverged["diverged"]["step"], int)
    assert "not finite" in diverged["diverged"]["reason"]
    assert finished["diverged"] is None and summary["best"][0]["setting"]["lr"] == 0.01
    assert "## Diverged runs" in (out / "report.md").read_text()
    for path in [out / "summary.json", *out.glob("runs/*/*.json")]:
        json.loads(path.read_text(), parse_constant=reject_non_finite)


# -- train -----------------------------------------------------------------------------------------


def test_train_on_a_generated_npz(tmp_path):
    X = np.random.default_rng(0).uniform(size=(130, 64))
    np.savez(tmp_path / "mine.npz", X=X)
    out = tmp_path / "out"
    arguments = ["train", "--method", "Adam", "--data", str(tmp_path / "mine.npz")]
    arguments += ["--epochs", "2", "--batch-size", "10"]
    assert cli.main([*arguments, "--out", str(out), "--quiet"]) == 0
    path = out / "runs" / "digits-autoencoder" / "adam_lr0.003_seed0.json"
    record = json.loads(path.read_text())
    assert len(record["epoch_losses"]) == 3 and len(record["step_losses"]) == 2 * 13
    assert record["epoch_losses"][-1] < record["epoch_losses"][0]
    state, log = checkpoint.load(out / "checkpoint.npz", _identity_of(out))
    assert log.step_losses == record["step_losses"] and int(state["step_count"]) == 26
    assert_png(out / "loss.png")


def _identity_of(folder):
    return checkpoint.identity(folder / "checkpoint.npz")


def test_train_on_generated_idx_files_with_labels(tmp_path):
    images, labels = digit_like_images(150), np.arange(150, dtype=np.uint8) % 10
    write_idx(tmp_path / "images-idx3-ubyte", images)
    write_idx(tmp_path / "labels-idx1-ubyte.gz", labels)
    out = tmp_path / "out"
    arguments = ["train", "--problem", "digits-cnn", "--method", "kbfgsl", "--epochs", "1"]
    arguments += ["--data", str(tmp_path / "images-idx3-ubyte")]
    arguments += ["--labels", str(tmp_path / "labels-idx1-ubyte.gz"), "--batch-size", "40"]
    assert cli.main([*arguments, "--out", str(out), "--quiet"]) == 0
    rows = read_csv(out / "runs" / "digits-cnn" / "kbfgsl_lr0.3_d0.03_seed0.csv")
    assert rows[0] == list(report.CSV_COLUMNS) and len(rows) == 3
    assert all(0.0 <= float(row[2]) <= 1.0 for row in rows[1:])  # 30 held-out images
    assert len(table_rows((out / "report.md").read_text(), "digits-cnn")) == 1
    assert_png(out / "accuracy.png")


def test_idx_reader_returns_the_written_pixels(tmp_path):
    images = digit_like_images(7, seed=3)
    write_idx(tmp_path / "x.gz", images)
    np.testing.assert_array_equal(data.load_idx(tmp_path / "x.gz"), images)
    X, y = data.load_arrays(tmp_path / "x.gz")
    np.testing.assert_array_equal(X, images / 255.0)
    assert y is None


def _train_arguments(out, *extra):
    arguments = ["train", "--method", "kbfgs", "--epochs", "15", "--checkpoint-every", "5"]
    return [*arguments, *extra, "--out", str(out), "--quiet"]


def test_train_interrupted_then_resumed_ends_bit_identical(tmp_path):
    """A subprocess gets SIGINT (Ctrl-C) after its first checkpoint: exit 130, logs readable;
    ``--resume`` continues it to the same final weights, state and losses, bit for bit, as an
    uninterrupted run."""
    reference, interrupted = tmp_path / "reference", tmp_path / "interrupted"
    assert cli.main(_train_arguments(reference)) == 0
    environment = dict(os.environ, PYTHONPATH=ROOT)
    process = subprocess.Popen(
        [sys.executable, "-m", "kfqn_ref", *_train_arguments(interrupted)], env=environment
    )
    deadline = time.monotonic() + 60
    while not (interrupted / "checkpoint.npz").exists() and time.monotonic() < deadline:
        time.sleep(0.005)
    process.send_signal(signal.SIGINT)
    assert process.wait(timeout=60) == cli.EXIT_INTERRUPTED
    identity = _identity_of(interrupted)
    _, saved = checkpoint.load(interrupted / "checkpoint.npz", identity)
    assert 0 < len(saved.step_losses) < 15 * 17 and len(saved.step_losses) % 5 == 0
    summary = json.loads((interrupted / "summary.json").read_text())
    assert summary["options"]["interrupted"] is True
    assert cli.main(["train", "--resume", str(interrupted), "--quiet"]) == 0
    expected, expected_log = checkpoint.load(reference / "checkpoint.npz", identity)
    resumed, resumed_log = checkpoint.load(interrupted / "checkpoint.npz", identity)
    assert sorted(resumed) == sorted(expected)
    for key, value in expected.items():
        assert np.array_equal(resumed[key], value), key
    assert resumed_log.step_losses == expected_log.step_losses
    assert resumed_log.epoch_losses == expected_log.epoch_losses


def test_a_failed_checkpoint_save_leaves_the_previous_one(tmp_path, monkeypatch):
    out = tmp_path / "out"
    assert cli.main(_train_arguments(out, "--epochs", "1", "--method", "adam")) == 0
    before = (out / "checkpoint.npz").read_bytes()
    state, log = checkpoint.load(out / "checkpoint.npz", _identity_of(out))

    def savez_then_fail(handle, **arrays):
        handle.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", savez_then_fail)
    with pytest.raises(OSError, match="disk full"):
        checkpoint.save(out / "checkpoint.npz", state, log, _identity_of(out))
    assert (out / "checkpoint.npz").read_bytes() == before
    assert not [name for name in os.listdir(out) if name.endswith(".tmp")]


# -- verify, --version, python -m ------------------------------------------------------------------


def test_verify_passes_and_prints_every_check(capsys):
    assert cli.main(["verify", "--seed", "3"]) == 0
    table = capsys.readouterr().out
    for name, _, _ in verify.CHECKS:
        assert name in table
    assert f"{len(verify.CHECKS)} of {len(verify.CHECKS)} checks passed" in table


def test_verify_json_and_a_failing_check_exits_1(capsys, monkeypatch):
    assert cli.main(["verify", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [row["name"] for row in rows] == [name for name, _, _ in verify.CHECKS]
    assert all(set(row) == {"name", "max_error", "tolerance", "passed"} for row in rows)
    assert all(row["passed"] and row["max_error"] <= row["tolerance"] for row in rows)
    monkeypatch.setattr(verify, "CHECKS", (("always off", lambda rng: 1.0, 1e-10),))
    assert cli.main(["verify"]) == 1
    assert "always off" in capsys.readouterr().out


def test_version_and_python_dash_m():
    completed = subprocess.run(
        [sys.executable, "-m", "kfqn_ref", "--version"],
        env=dict(os.environ, PYTHONPATH=ROOT),
        capture_output=True,
        text=True,
        check=True,
    )
    assert completed.stdout.strip() == f"kfqn-ref {__version__}"


@pytest.mark.parametrize("command", ["compare", "train", "verify"])
def test_help_explains_every_option_with_its_default(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main([command, "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    assert "--seed" in text and "(default:" in text and "(default: None)" not in text


def test_golden_is_a_command_of_kfqn_ref(capsys):
    from kfqn_ref.golden import export

    assert cli.main(["golden", "list"]) == 0
    listed = [line.split()[0] for line in capsys.readouterr().out.splitlines() if line.strip()]
    assert listed == [name for name, _ in export.case_summaries()]
    golden = os.path.join(ROOT, "tests", "golden")
    # the committed golden files are a candidate that passes
    arguments = ["golden", "check", "--golden", golden, "--candidate", golden, "--case", listed[0]]
    assert cli.main(arguments) == 0


def test_resume_reads_the_checkpoint_once(tmp_path, monkeypatch):
    # The resumed run takes its options from the checkpoint's identity and its state from the
    # same read (expected: one read_npz call on checkpoint.npz, where there used to be two).
    out = tmp_path / "run"
    assert (
        cli.main(["train", "--method", "adam", "--epochs", "1", "--out", str(out), "--quiet"]) == 0
    )
    reads = []
    read_npz = backend.read_npz
    monkeypatch.setattr(
        backend, "read_npz", lambda path: reads.append(os.fspath(path)) or read_npz(path)
    )
    assert cli.main(["train", "--resume", str(out), "--quiet"]) == 0
    assert reads == [os.path.join(str(out), "checkpoint.npz")]
