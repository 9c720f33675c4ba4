"""Write a golden candidate with plain NumPy, without kfqn_ref: the format is usable by others.

    python examples/numpy_candidate.py GOLDEN_DIR CANDIDATE_DIR
    kfqn-ref golden check --golden GOLDEN_DIR --candidate CANDIDATE_DIR

An independent implementation (weights kept PyTorch-style as ``W`` and ``b``) of two cases: the
``dense_records`` case (one forward/backward pass of the net its manifest describes) and the
``bfgs_updates`` case (the BFGS inverse update with its skip rules). ``docs/golden.md`` explains
the format.
"""

import json
import sys
from pathlib import Path

import numpy as np


def load_case(golden: Path, name: str):
    """The manifest (plain JSON) and the arrays (``allow_pickle=False``) of one case."""
    manifest = json.loads((golden / f"{name}.json").read_text())
    with np.load(golden / manifest["npz"], allow_pickle=False) as archive:
        arrays = {key: archive[key] for key in archive.files}
    return manifest, arrays


ACTIVATIONS = {
    "Tanh": (np.tanh, lambda y: 1.0 - y**2),
    "ReLU": (lambda x: np.maximum(x, 0.0), lambda y: (y > 0).astype(y.dtype)),
    "Identity": (lambda x: x, np.ones_like),
}


def softmax_cross_entropy(z, labels):
    """Mean loss and per-sample gradients (softmax - onehot), NOT divided by N."""
    shifted = z - z.max(axis=1, keepdims=True)
    p = np.exp(shifted) / np.exp(shifted).sum(axis=1, keepdims=True)
    log_p = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    onehot = np.eye(z.shape[1])[labels]
    return -np.mean(np.sum(onehot * log_p, axis=1)), p - onehot


def dense_records(golden: Path) -> dict:
    """One pass of a net of Dense layers and activations with softmax cross-entropy."""
    manifest, arrays = load_case(golden, "dense_records")
    assert manifest["net"]["loss"] == "SoftmaxCrossEntropy"
    X, labels = arrays["X"], arrays["T"]
    N = X.shape[0]
    layers = manifest["net"]["layers"]
    params = {}  # PyTorch-style: W (out, in) and b (out,), split off the bias-last [W | b]
    for i, layer in enumerate(layers):
        if layer["type"] == "Dense":
            homogeneous = arrays[f"layer{i}.weights"]
            params[i] = (homogeneous[:, :-1], homogeneous[:, -1])
    out = {}
    x, cache = X, []
    for i, layer in enumerate(layers):
        if layer["type"] == "Dense":
            W, b = params[i]
            h = x @ W.T + b
            out[f"layer{i}.a"] = np.concatenate([x, np.ones((N, 1))], axis=1)
            out[f"layer{i}.h"] = h
            cache.append((i, x))
            x = h
        else:
            forward, _ = ACTIVATIONS[layer["type"]]
            x = forward(x)
            cache.append((i, x))
    out["output.z"] = x
    loss, dz = softmax_cross_entropy(x, labels)
    out["loss"] = np.array(loss)
    grad_out = dz  # per-sample dl_n/dz_n
    for i, saved in reversed(cache):
        if layers[i]["type"] == "Dense":
            W, _ = params[i]
            out[f"layer{i}.g"] = grad_out
            dW, db = grad_out.T @ saved / N, grad_out.mean(axis=0)
            out[f"layer{i}.grad"] = np.concatenate([dW, db[:, None]], axis=1)  # [dW | db]
            grad_out = grad_out @ W
        else:
            _, derivative = ACTIVATIONS[layers[i]["type"]]
            grad_out = grad_out * derivative(saved)
    return out


def bfgs_updates(golden: Path) -> dict:
    """BFGS inverse updates with the skip rules stated in the manifest."""
    manifest, arrays = load_case(golden, "bfgs_updates")
    threshold = manifest["setup"]["relative_threshold"]
    codes = manifest["setup"]["skip_codes"]
    out = {}
    for name in ("accept", "skip_non_positive", "skip_relative", "skip_non_finite"):
        H, s, y = arrays[f"{name}.H"], arrays[f"{name}.s"], arrays[f"{name}.y"]
        gbar_norm = float(arrays[f"{name}.gbar_norm"])
        H_new, reason = H, "none"
        if s @ y <= 0:
            reason = "non_positive_curvature"
        elif s @ y <= threshold * (s @ s) * gbar_norm:
            reason = "below_relative_threshold"
        else:
            with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
                rho = 1.0 / (s @ y)
                V = np.eye(len(s)) - rho * np.outer(s, y)
                candidate = V @ H @ V.T + rho * np.outer(s, s)
            if np.all(np.isfinite(candidate)):
                H_new = candidate
            else:
                reason = "non_finite_result"
        out[f"{name}.H_new"] = H_new
        out[f"{name}.updated"] = np.array(reason == "none")
        out[f"{name}.reason"] = np.array(codes[reason], dtype=np.int64)
    return out


def main(golden: str, candidate: str) -> None:
    """Write ``dense_records.npz`` and ``bfgs_updates.npz`` into ``candidate``."""
    golden, candidate = Path(golden), Path(candidate)
    candidate.mkdir(parents=True, exist_ok=True)
    np.savez(candidate / "dense_records.npz", **dense_records(golden))
    np.savez(candidate / "bfgs_updates.npz", **bfgs_updates(golden))
    assert "kfqn_ref" not in sys.modules, "this example must not depend on kfqn_ref"


if __name__ == "__main__":
    main(*sys.argv[1:])
