"""Refused input of the command line, the training loop, the user-file readers and checkpoints.

Two tables. ``CLI_ROWS``: (id, arguments, exit status, regex of the message on stderr); every
refused command leaves its output folder exactly as it was (file names and bytes compared).
``LIBRARY_ROWS``: (id, call, exception type, regex, snapshot of what must be unchanged).
"""

import os
import re

import numpy as np
import pytest

from kfqn_ref import checkpoint, cli, data, optim, train
from tests.cli.files import digit_like_images, idx_bytes, write_idx

METHOD_LIST = "kbfgs, kbfgsl, kfac, shampoo, adam, rmsprop, sgd"


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Malformed and foreign files, written once: name -> path."""
    folder = tmp_path_factory.mktemp("files")
    npz = ("no_x", "wide", "unlabelled", "float_labels", "nan", "not_a_zip")
    idx = ("bad_magic", "truncated", "huge_header", "images", "a_file")
    paths = {name: str(folder / f"{name}.npz") for name in npz}
    paths.update({name: str(folder / name) for name in idx})
    rng = np.random.default_rng(0)
    np.savez(paths["no_x"], inputs=rng.uniform(size=(20, 64)))
    np.savez(paths["wide"], X=rng.uniform(size=(20, 65)))
    np.savez(paths["unlabelled"], X=rng.uniform(size=(20, 1, 8, 8)))
    np.savez(paths["float_labels"], X=rng.uniform(size=(20, 64)), y=rng.uniform(size=20))
    np.savez(paths["nan"], X=np.full((20, 64), np.nan))
    images = digit_like_images(20)
    raw = idx_bytes(images)
    with open(paths["bad_magic"], "wb") as handle:
        handle.write(b"\x00\x01" + raw[2:])
    with open(paths["truncated"], "wb") as handle:
        handle.write(raw[:-5])
    with open(paths["huge_header"], "wb") as handle:  # claims 10^12 elements, holds 4 bytes
        handle.write(bytes([0, 0, 8, 2]) + (10**6).to_bytes(4, "big") * 2 + b"\x00" * 4)
    write_idx(paths["images"], images)
    for name in ("not_a_zip", "a_file"):
        with open(paths[name], "w") as handle:
            handle.write("not an archive")
    return paths


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """A finished run with its checkpoint, and a copy whose format version is forged."""
    root = tmp_path_factory.mktemp("checkpoints")
    run = root / "run"
    assert (
        cli.main(["train", "--method", "adam", "--epochs", "1", "--out", str(run), "--quiet"]) == 0
    )
    forged = root / "forged"
    forged.mkdir()
    arrays = dict(np.load(run / "checkpoint.npz"))
    arrays["format_version"] = np.array(99)
    np.savez(forged / "checkpoint.npz", **arrays)
    return {"run": str(run), "forged": str(forged)}


def _compare(*arguments):
    return ["compare", "--quick", "--quiet", *arguments]


def _train(*arguments):
    return ["train", "--quiet", *arguments]


CLI_ROWS = [
    ("no command", [], 2, "the following arguments are required: COMMAND"),
    ("unknown command", ["fit"], 2, "invalid choice: 'fit'"),
    (
        "unknown method lists the valid ones",
        _compare("--methods", "LBFGS"),
        2,
        f"argument --methods: unknown method 'LBFGS'; choose from {METHOD_LIST}",
    ),
    (
        "compare runs embedded problems only",
        _compare("--problems", "mnist-autoencoder"),
        2,
        "unknown problem 'mnist-autoencoder'; choose from digits-autoencoder, digits-cnn",
    ),
    (
        "unknown train problem",
        _train("--problem", "mnist", "--method", "adam"),
        2,
        "choose from digits-autoencoder, digits-cnn, mnist-autoencoder, faces-autoencoder, "
        "curves-autoencoder, cifar-cnn",
    ),
    ("zero epochs", _compare("--epochs", "0"), 2, "--epochs: expected an integer >= 1, got '0'"),
    ("epochs not a number", _compare("--epochs", "two"), 2, "expected an integer >= 1, got 'two'"),
    ("negative seed", _compare("--seeds", "-1"), 2, "--seeds: expected an integer >= 0, got '-1'"),
    ("zero lr", _train("--method", "adam", "--lr", "0"), 2, "--lr: expected a finite number > 0"),
    ("NaN lr", _train("--method", "adam", "--lr", "nan"), 2, "--lr: expected a finite number > 0"),
    ("infinite damping", _train("--method", "kfac", "--damping", "inf"), 2, "--damping: expected"),
    ("bad dtype", _compare("--dtype", "float16"), 2, "--dtype: invalid choice: 'float16'"),
    ("train without method", _train(), 2, f"--method is required; choose from {METHOD_LIST}"),
    (
        "damping of a first-order method",
        _train("--method", "adam", "--damping", "0.1"),
        2,
        "--damping applies to kbfgs, kbfgsl, kfac, not to adam",
    ),  # fmt: skip
    (
        "paper problem without data",
        _train("--problem", "mnist-autoencoder", "--method", "adam"),
        2,
        "mnist-autoencoder has no embedded data: give your files with --data",
    ),
    (
        "labels without data",
        _train("--method", "adam", "--labels", "{images}"),
        2,
        "--labels needs --data",
    ),  # fmt: skip
    (
        "batch larger than the data",
        _train("--method", "adam", "--batch-size", "5000"),
        2,
        r"--batch-size must be at most 1797 \(the training samples\), got 5000",
    ),  # fmt: skip
    (
        "out and resume together",
        _train("--resume", "{run}", "--out", "{out}"),
        2,
        "argument --out: not allowed with argument --resume",
    ),  # fmt: skip
    (
        "data file missing",
        _train("--method", "adam", "--data", "missing.npz"),
        2,
        "--data: cannot read data set from 'missing.npz'",
    ),  # fmt: skip
    (
        "data not a zip",
        _train("--method", "adam", "--data", "{not_a_zip}"),
        2,
        "--data: cannot read data set from .*not_a_zip.npz",
    ),  # fmt: skip
    (
        "npz without X",
        _train("--method", "adam", "--data", "{no_x}"),
        2,
        r"must hold an array 'X' \(inputs, shape \(n, ...\)\) and optionally 'y'.* it holds "
        r"\['inputs'\]",
    ),
    (
        "X of the wrong shape",
        _train("--method", "adam", "--data", "{wide}"),
        2,
        r"X must hold samples of shape \(64,\) for digits-autoencoder .* got X of shape \(20, 65\)",
    ),
    (
        "classifier without labels",
        _train("--problem", "digits-cnn", "--method", "adam", "--data", "{unlabelled}"),
        2,
        "digits-cnn is a classifier and needs labels: array 'y'",
    ),
    (
        "float labels",
        _train("--method", "adam", "--data", "{float_labels}"),
        2,
        r"y must be integer class labels of shape \(20,\) .* got dtype float64",
    ),
    ("NaN in X", _train("--method", "adam", "--data", "{nan}"), 2, "X contains NaN or Inf"),
    (
        "IDX magic number",
        _train("--method", "adam", "--data", "{bad_magic}"),
        2,
        "the magic number must be 00 00 <type> <ndim> .* got 00 01 08 03",
    ),
    (
        "IDX sizes",
        _train("--method", "adam", "--data", "{truncated}"),
        2,
        r"sizes \(20, 8, 8\) of 1-byte elements need 1296 bytes, the file has 1291",
    ),
    (
        "IDX labels of another length",
        _train(
            "--problem",
            "digits-cnn",
            "--method",
            "adam",
            "--data",
            "{images}",
            "--labels",
            "{truncated}",
        ),
        2,
        "sizes",
    ),  # fmt: skip
    (
        "resume without checkpoint",
        ["train", "--resume", "{a_file_folder}"],
        2,
        "holds no checkpoint.npz",
    ),  # fmt: skip
    (
        "checkpoint of another method",
        ["train", "--resume", "{run}", "--method", "kbfgs"],
        2,
        r"belongs to another run: it has .*method 'adam' \(this run: 'kbfgs'\)",
    ),
    (
        "checkpoint of another problem",
        ["train", "--resume", "{run}", "--problem", "digits-cnn"],
        2,
        r"problem 'digits-autoencoder' \(this run: 'digits-cnn'\)",
    ),
    (
        "checkpoint of another version",
        ["train", "--resume", "{forged}"],
        2,
        "is not a kfqn-ref-checkpoint of version 1 .*version 99",
    ),
]


def _fill(arguments, names):
    return [argument.format(**names) for argument in arguments]


def _snapshot(folder):
    return {
        os.path.relpath(os.path.join(root, name), folder): open(
            os.path.join(root, name), "rb"
        ).read()
        for root, _, names in os.walk(folder)
        for name in names
    }


@pytest.mark.parametrize(
    ("case", "arguments", "status", "message"), CLI_ROWS, ids=[r[0] for r in CLI_ROWS]
)
def test_refused_command_lines(
    case, arguments, status, message, files, checkpoints, tmp_path, capsys
):
    empty = tmp_path / "empty"
    empty.mkdir()
    names = {**files, **checkpoints}
    names.update(a_file_folder=str(empty), out=str(tmp_path / "out"))
    arguments = _fill(arguments, names)
    if arguments[:1] in (["compare"], ["train"]) and "--resume" not in arguments:
        arguments += ["--out", names["out"]]
    before = _snapshot(checkpoints["run"])
    with pytest.raises(SystemExit) as exit_info:
        raise SystemExit(cli.main(arguments))
    assert exit_info.value.code == status
    assert re.search(message, capsys.readouterr().err), case
    assert not (tmp_path / "out").exists(), "a refused command writes nothing"
    assert _snapshot(checkpoints["run"]) == before, (
        "a refused resume leaves the run's folder as it was"
    )


@pytest.mark.parametrize("setup", ["a file", "not empty", "under a file"])
def test_out_is_validated_before_training(setup, files, tmp_path, capsys):
    """An --out that is a file, a folder that is not empty (without --overwrite), or a path that
    cannot be created: refused before any training, the path unchanged."""
    out = {
        "a file": files["a_file"],
        "not empty": str(tmp_path),
        "under a file": files["a_file"] + "/sub",
    }[setup]
    (tmp_path / "keep.txt").write_text("mine")
    before = _snapshot(str(tmp_path)), open(files["a_file"]).read()
    status = cli.main(["compare", "--quick", "--methods", "sgd", "--out", out, "--quiet"])
    expected = {"a file": "is a file, not a folder", "not empty": "exists and is not empty; pass "
                "--overwrite", "under a file": "cannot be created"}[setup]  # fmt: skip
    assert status == 2 and expected in capsys.readouterr().err
    assert (_snapshot(str(tmp_path)), open(files["a_file"]).read()) == before


def test_overwrite_replaces_only_the_outputs(tmp_path):
    (tmp_path / "keep.txt").write_text("mine")
    (tmp_path / "report.md").write_text("old")
    arguments = ["compare", "--quick", "--problems", "digits-cnn", "--methods", "sgd", "--quiet"]
    assert cli.main([*arguments, "--out", str(tmp_path), "--overwrite"]) == 0
    assert (tmp_path / "keep.txt").read_text() == "mine"
    assert (tmp_path / "report.md").read_text() != "old"


# -- library functions -----------------------------------------------------------------------------


def _small():
    return data.synthetic_regression(60, 4, 3, seed=0)


def _sgd():
    from kfqn_ref import nn

    return optim.SGDMomentum(nn.Sequential([nn.Dense(4, 3)], nn.SquaredError(), seed=0), lr=0.01)


LIBRARY_ROWS = [
    ("run: batch 0", lambda o: train.run(o, _small(), batch_size=0, epochs=1), ValueError,
     r"batch_size must be an integer in \[1, 60\], got 0"),
    ("run: batch too large", lambda o: train.run(o, _small(), batch_size=61, epochs=1), ValueError,
     r"batch_size must be an integer in \[1, 60\], got 61"),
    ("run: batch a float", lambda o: train.run(o, _small(), batch_size=2.5, epochs=1), TypeError,
     "batch_size must be an integer, got float"),
    ("run: epochs 0", lambda o: train.run(o, _small(), batch_size=20, epochs=0), ValueError,
     "epochs must be an integer >= 1, got 0"),
    ("run: epochs a float", lambda o: train.run(o, _small(), batch_size=20, epochs=1.5), TypeError,
     "epochs must be an integer, got float"),
    ("run: a log of another run", lambda o: train.run(o, _small(), batch_size=20, epochs=1,
     log=train.RunLog("x", step_losses=[1.0])), ValueError, "log holds 1 steps but the optimizer"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("case", "call", "error", "message"), LIBRARY_ROWS, ids=[r[0] for r in LIBRARY_ROWS]
)
def test_training_loop_refuses_before_anything_runs(case, call, error, message):
    optimizer = _sgd()
    before = optimizer.state_dict()
    with pytest.raises(error, match=message):
        call(optimizer)
    after = optimizer.state_dict()
    assert sorted(after) == sorted(before)
    assert all(np.array_equal(after[key], before[key]) for key in before)


FILE_ROWS = [
    ("idx: magic", lambda f: data.load_idx(f["bad_magic"]), "magic number must be 00 00"),
    ("idx: forged header allocates nothing", lambda f: data.load_idx(f["huge_header"]),
     r"sizes \(1000000, 1000000\) of 1-byte elements need 1000000000012 bytes, the file has 16"),
    ("idx: missing file", lambda f: data.load_idx(f["a_file"] + ".none"), "cannot read IDX file"),
    ("npz with labels given twice", lambda f: data.load_arrays(f["wide"], f["images"]),
     "a .npz file holds its own labels"),
    ("float32 overflow", lambda f: data.load_arrays(f["huge"], dtype=np.float32),
     "X holds values beyond the range of float32"),
    ("checkpoint: not a checkpoint", lambda f: checkpoint.load(f["wide"], {}),
     "is not a kfqn-ref-checkpoint of version 1"),
    ("checkpoint: garbage", lambda f: checkpoint.load(f["a_file"], {}), "cannot read checkpoint"),
]  # fmt: skip


@pytest.mark.parametrize(("case", "call", "message"), FILE_ROWS, ids=[r[0] for r in FILE_ROWS])
def test_malformed_files_raise_value_errors_and_stay_unchanged(
    case, call, message, files, tmp_path
):
    paths = dict(files)
    paths["huge"] = str(tmp_path / "huge.npz")
    np.savez(paths["huge"], X=np.full((3, 64), 1e300))
    before = {name: open(path, "rb").read() for name, path in paths.items()}
    with pytest.raises(ValueError, match=message):
        call(paths)
    assert {name: open(path, "rb").read() for name, path in paths.items()} == before


def test_a_checkpoint_of_another_run_names_every_difference(checkpoints):
    path = os.path.join(checkpoints["run"], "checkpoint.npz")
    identity = dict(checkpoint.identity(path), seed=3, lr=0.1)
    before = open(path, "rb").read()
    with pytest.raises(
        ValueError, match=r"it has lr 0.003 \(this run: 0.1\); seed 0 \(this run: 3\)"
    ):
        checkpoint.load(path, identity)
    assert open(path, "rb").read() == before
