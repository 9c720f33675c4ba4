"""Optimizer guarantees of ``docs/reliability.md``: checkpoints, copies at the boundary, legal
extremes (a zero-trace K-FAC factor, a Shampoo ``eigh`` that does not converge).
"""

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from kfqn_ref import nn, optim
from kfqn_ref.optim import KBFGS, KBFGSL, KBFGSVariant, NonFiniteError
from kfqn_ref.optim.kfac import KFACDampingSplit, split_damping
from kfqn_ref.optim.shampoo import spd_inverse_root

REPO = Path(__file__).resolve().parents[2]

#: One of each optimizer class (and each K-BFGS variant), built from a model.
OPTIMIZERS = {
    "KBFGS-2020": lambda m: KBFGS(m, variant=KBFGSVariant.AUTHORS_2020),
    "KBFGS-2022": lambda m: KBFGS(m),
    "KBFGSL": lambda m: KBFGSL(m, memory=2),
    "KBFGSL-convergent": lambda m: KBFGSL(
        m, variant="convergent", memory=2, memory_light=True, momentum=0.0
    ),
    "KFAC": lambda m: optim.KFAC(m, inverse_interval=2),
    "Shampoo": lambda m: optim.Shampoo(m),
    "Adam": lambda m: optim.Adam(m),
    "RMSprop": lambda m: optim.RMSprop(m),
    "SGDMomentum": lambda m: optim.SGDMomentum(m),
}


def model() -> nn.Sequential:
    layers = [nn.Dense(4, 3), nn.Tanh(), nn.Dense(3, 2)]
    return nn.Sequential(layers, nn.SquaredError(), seed=0)


def batch(k: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(k)
    return rng.standard_normal((5, 4)), rng.standard_normal((5, 2))


def stepped(name: str, steps: int = 3):
    optimizer = OPTIMIZERS[name](model())
    for k in range(steps):
        optimizer.step(*batch(k))
    return optimizer


def assert_same_dict(after: dict, before: dict) -> None:
    assert after.keys() == before.keys()
    for key in before:
        assert np.array_equal(after[key], before[key]), key


# --- Checkpoints: save, kill, resume in a new process, bit for bit ---

#: Run in a child process: ``save`` steps 3 times, saves and kills itself with SIGKILL;
#: ``resume`` loads, steps 3 more times and saves the result.
CHILD = textwrap.dedent(
    """
    import os, signal, sys
    from kfqn_ref import optim
    from tests.optim.test_reliability import OPTIMIZERS, batch, model, stepped
    mode, folder = sys.argv[1], sys.argv[2]
    for name in sorted(OPTIMIZERS):
        path = os.path.join(folder, name + ".state")
        if mode == "save":
            optim.save_state(path, stepped(name).state_dict())
        else:
            optimizer = OPTIMIZERS[name](model())
            optimizer.load_state_dict(optim.load_state(path))
            for k in range(3, 6):
                optimizer.step(*batch(k))
            optim.save_state(path + ".final", optimizer.state_dict())
    if mode == "save":
        os.kill(os.getpid(), signal.SIGKILL)
    """
)


def run_child(mode: str, folder: Path) -> subprocess.CompletedProcess:
    env = dict(
        os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])
    )
    return subprocess.run(
        [sys.executable, "-c", CHILD, mode, str(folder)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_a_run_saved_killed_and_resumed_in_a_new_process_is_bit_identical(tmp_path):
    saved = run_child("save", tmp_path)
    assert saved.returncode == -signal.SIGKILL, saved.stderr
    resumed = run_child("resume", tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    for name in sorted(OPTIMIZERS):
        uninterrupted = stepped(name, steps=6).state_dict()
        # the file name has no .npz suffix: save_state keeps it exactly
        assert_same_dict(optim.load_state(tmp_path / f"{name}.state.final"), uninterrupted)


# --- Atomic saves: a failed save leaves the previous checkpoint ---


def test_a_save_that_fails_mid_write_leaves_the_previous_checkpoint_loadable(tmp_path, monkeypatch):
    path = tmp_path / "run.npz"
    previous = stepped("KBFGS-2022", steps=1).state_dict()
    optim.save_state(path, previous)
    original_write = np.lib.format.write_array
    written = []

    def write_then_fail(file, array, *args, **kwargs):
        original_write(file, array, *args, **kwargs)
        written.append(array.shape)
        if len(written) == 3:
            raise OSError(28, "No space left on device")

    monkeypatch.setattr(np.lib.format, "write_array", write_then_fail)
    with pytest.raises(OSError, match="No space left"):
        optim.save_state(path, stepped("KBFGS-2022", steps=2).state_dict())
    monkeypatch.undo()
    assert len(written) == 3  # the failure came after part of the archive was written
    assert_same_dict(optim.load_state(path), previous)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.npz"]  # no temporary file left


def test_an_object_array_is_refused_before_anything_is_written(tmp_path):
    path = tmp_path / "run.npz"
    previous = stepped("Adam", steps=1).state_dict()
    optim.save_state(path, previous)
    before = path.read_bytes()
    bad = dict(previous, extra=np.array([{"evil": 1}], dtype=object))
    with pytest.raises(TypeError, match="array 'extra' has dtype object.*never pickled"):
        optim.save_state(path, bad)
    with pytest.raises(TypeError, match="state must be a dict of arrays, got list"):
        optim.save_state(path, [previous])
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.npz"]


def test_save_state_keeps_the_name_exactly(tmp_path):
    state = stepped("SGDMomentum", steps=1).state_dict()
    optim.save_state(tmp_path / "checkpoint", state)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint"]
    assert_same_dict(optim.load_state(tmp_path / "checkpoint"), state)


# --- Copies at the boundary ---


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_load_state_dict_copies_every_array(name):
    """Writing into the dict (or the arrays) after loading leaves the optimizer as it was."""
    source = stepped(name)
    state = source.state_dict()
    optimizer = OPTIMIZERS[name](model())
    optimizer.load_state_dict(state)
    loaded = optimizer.state_dict()
    for value in state.values():
        if value.dtype.kind == "f" and value.ndim > 0:
            value[...] = np.nan
    assert_same_dict(optimizer.state_dict(), loaded)
    X, T = batch(9)
    assert optimizer.step(X, T) == source.step(X, T)
    assert_same_dict(optimizer.state_dict(), source.state_dict())


# --- K-FAC's pi with a zero-trace factor ---


def test_split_damping_with_a_zero_trace_factor_falls_back_to_the_equal_split():
    """``pi = sqrt((tr A / dim A) / (tr G / dim G))``; with a trace of 0 the rule is ``pi = 1``."""
    damping = 0.09
    A, G = np.diag([2.0, 4.0, 0.0]), np.diag([1.0, 0.5])
    pi = np.sqrt((6.0 / 3) / (1.5 / 2))
    assert split_damping(A, G, damping, KFACDampingSplit.PI) == pytest.approx(
        (pi * 0.3, 0.3 / pi), rel=1e-15
    )
    for A_zero, G_zero in ((0 * A, G), (A, 0 * G), (0 * A, 0 * G)):
        assert split_damping(A_zero, G_zero, damping, KFACDampingSplit.PI) == (0.3, 0.3)


def test_kfac_with_dead_relus_steps_by_the_equal_split_formula():
    """The first layer's units are dead (ReLU of a negative bias): its output-side factor and its
    gradient are 0, so its damping split is ``pi = 1``; the step is the independent formula
    ``W~ - lr G_inv g A_inv`` with ``A_inv = (A + sqrt(lambda) I)^-1``,
    ``G_inv = (G + sqrt(lambda) I)^-1`` and the traces' ``pi`` on the live layer."""
    net = nn.Sequential([nn.Dense(4, 3), nn.ReLU(), nn.Dense(3, 2)], nn.SquaredError(), seed=0)
    weights = net.weights()
    weights[0][:, :-1] = 0.0
    weights[0][:, -1] = -1.0  # every pre-activation is -1: dead units
    net.set_weights(weights)
    lr, damping = 0.1, 0.04
    kfac = optim.KFAC(
        net, lr=lr, damping=damping, momentum=0.0, weight_decay=0.0, fisher="empirical"
    )
    X, T = batch(0)
    records = net.forward_backward(X, T).records
    kfac.step(X, T)
    root = np.sqrt(damping)
    for i, (record, w) in enumerate(zip(records, weights, strict=True)):
        a, g = record.a, record.g
        A, G = a.T @ a / len(a), g.T @ g / len(g)  # warm start: the first update is the minibatch
        pi = 1.0
        if np.trace(A) > 0 and np.trace(G) > 0:
            pi = np.sqrt((np.trace(A) / A.shape[0]) / (np.trace(G) / G.shape[0]))
        A_inv = np.linalg.inv(A + pi * root * np.eye(A.shape[0]))
        G_inv = np.linalg.inv(G + root / pi * np.eye(G.shape[0]))
        expected = w - lr * G_inv @ record.grad @ A_inv
        np.testing.assert_allclose(kfac.model.weights()[i], expected, rtol=1e-12, atol=1e-15)
    assert np.trace(records[0].g.T @ records[0].g) == 0.0  # the zero-trace case was exercised


# --- Shampoo: an eigendecomposition that does not converge ---


def test_spd_inverse_root_of_an_overflowed_matrix_is_nan_not_a_linalg_error():
    with np.errstate(over="ignore"):
        d = np.random.default_rng(0).standard_normal((3, 3)) * 1e155
        M = 1e-4 * np.eye(3) + d @ d.T  # overflows: eigh does not converge
    with pytest.raises(np.linalg.LinAlgError):
        np.linalg.eigh(M)
    assert np.all(np.isnan(spd_inverse_root(M, 4)))


def test_a_shampoo_step_whose_eigh_does_not_converge_is_refused(monkeypatch):
    """``eigh`` failing on finite statistics (as LAPACK may near overflow) refuses the step."""
    shampoo = stepped("Shampoo")
    before = shampoo.state_dict()

    def does_not_converge(M):
        raise np.linalg.LinAlgError("Eigenvalues did not converge")

    monkeypatch.setattr(np.linalg, "eigh", does_not_converge)
    with pytest.raises(NonFiniteError, match=r"Shampoo L\^\{-1/4\} of trainable layer 0"):
        shampoo.step(*batch(5))
    assert_same_dict(shampoo.state_dict(), before)
