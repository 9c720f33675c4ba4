"""Count the full-array finiteness scans of one optimizer step, by the function that asks for them.

Run on demand (not collected by pytest; a second or two):

    .venv/bin/python benchmarks/count_finiteness_scans.py            # K-BFGS, variant 2022
    .venv/bin/python benchmarks/count_finiteness_scans.py --by-caller

A "scan" is one call of ``numpy.isfinite`` on an array (not a Python scalar): it reads every entry
of that array once. The script wraps ``numpy.isfinite`` for the duration of one step (the package
looks it up as ``xp.isfinite`` / ``np.isfinite`` at call time, so the wrapper sees every call),
after two warm-up steps so that the one-off work of step 0 (the explicit inverse of
``A + lambda I``) is not counted. The net is a three-layer MLP, Dense 20-16-12-20 with ReLU, on
a minibatch of 32 samples; the count does not depend on the sizes, only on the number of layers.

The figures go into the closing note of a change that moves checks: "scans per step" before and
after.
"""

from __future__ import annotations

import argparse
import collections
import sys
import traceback

import numpy as np

from kfqn_ref import nn, optim


def three_layer_mlp() -> nn.Sequential:
    """Dense 20-16-12-20 with ReLU between, sigmoid cross-entropy, seed 0."""
    layers = [nn.Dense(20, 16), nn.ReLU(), nn.Dense(16, 12), nn.ReLU(), nn.Dense(12, 20)]
    return nn.Sequential(layers, loss=nn.SigmoidCrossEntropy(), seed=0)


def count_scans(make_optimizer, steps_before: int = 2) -> collections.Counter:
    """Return ``Counter`` of (file, function) -> number of array ``isfinite`` calls in one step."""
    rng = np.random.default_rng(0)
    X = rng.uniform(size=(32, 20))
    model = three_layer_mlp()
    opt = make_optimizer(model)
    for _ in range(steps_before):
        opt.step(X, X)
    counts: collections.Counter = collections.Counter()
    original = np.isfinite

    def counting_isfinite(x, *args, **kwargs):
        if isinstance(x, np.ndarray) and x.size > 1:
            counts[first_caller_outside_checks()] += 1
        return original(x, *args, **kwargs)

    np.isfinite = counting_isfinite
    try:
        opt.step(X, X)
    finally:
        np.isfinite = original
    return counts


def first_caller_outside_checks() -> tuple[str, str]:
    """(file, function) of the innermost frame that is neither this script nor ``_checks.py``."""
    for frame in reversed(traceback.extract_stack()[:-2]):
        if not frame.filename.endswith(("_checks.py", "count_finiteness_scans.py")):
            return frame.filename.rsplit("kfqn_ref/", 1)[-1], frame.name
    return "?", "?"


OPTIMIZERS = {
    "K-BFGS (2022)": lambda model: optim.KBFGS(model, lr=0.1, damping=0.3),
    "K-BFGS (2020)": lambda model: optim.KBFGS(model, lr=0.1, damping=0.3, variant="2020"),
    "K-BFGS(L)": lambda model: optim.KBFGSL(model, lr=0.1, damping=0.3),
    "Adam": lambda model: optim.Adam(model, lr=1e-3),
    "KFAC": lambda model: optim.KFAC(model, lr=0.1, damping=0.3),
    "Shampoo": lambda model: optim.Shampoo(model, lr=0.1),
}


def main(argv: list[str] | None = None) -> int:
    """Print the number of full-array scans per step for each optimizer."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--by-caller", action="store_true", help="list the calling functions")
    args = parser.parse_args(argv)
    for name, make in OPTIMIZERS.items():
        try:
            counts = count_scans(make)
        except (TypeError, ValueError) as error:  # an option this version does not accept
            print(f"{name:15s} not run: {error}")
            continue
        print(f"{name:15s} {sum(counts.values()):4d} full-array finiteness scans per step")
        if args.by_caller:
            for (filename, function), count in counts.most_common():
                print(f"    {count:3d}  {filename}:{function}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
