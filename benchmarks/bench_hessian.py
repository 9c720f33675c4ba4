"""Time the exact full Hessian (autograd) of a ~500-parameter net; target under 1 s.

Run on demand (not collected by pytest):

    .venv/bin/python benchmarks/bench_hessian.py

Prints the best-of-``REPEATS`` wall time of ``kfqn_ref.curvature.full_hessian`` and of
``full_ggn``, and their ratios to baselines measured in the same run on the same net and minibatch:
one autograd gradient of the same ``model.loss_function`` (the Hessian costs about ``P`` such
reverse passes over the gradient's graph) and one hand-written ``forward_backward``.
"""

import time

import autograd
import autograd.numpy as anp
import numpy as np

from kfqn_ref import nn
from kfqn_ref.curvature import full_ggn, full_hessian

#: Repetitions per measurement; the minimum is reported.
REPEATS = 5
#: Target wall time of one full Hessian, seconds.
TARGET_SECONDS = 1.0
BATCH = 8


def make_case():
    """Conv(1->4, 3x3) on 6x6 -> tanh -> Dense(64->7) -> tanh -> Dense(7->4), softmax CE, N = 8."""
    layers = [
        nn.Conv2d(1, 4, 3),
        nn.Tanh(),
        nn.Flatten(),
        nn.Dense(64, 7),
        nn.Tanh(),
        nn.Dense(7, 4),
    ]
    model = nn.Sequential(layers, nn.SoftmaxCrossEntropy(), seed=0)
    rng = np.random.default_rng(0)
    return model, rng.standard_normal((BATCH, 1, 6, 6)), rng.integers(0, 4, size=BATCH)


def best_time(function):
    """Minimum wall time of ``REPEATS`` calls, seconds."""
    times = []
    for _ in range(REPEATS):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return min(times)


def main():
    model, X, T = make_case()
    n_parameters = sum(w.size for w in model.weights())
    weights = model.weights()
    gradient = autograd.grad(lambda ws: model.loss_function(ws, X, T, anp))
    baseline_grad = best_time(lambda: gradient(weights))
    baseline_fb = best_time(lambda: model.forward_backward(X, T))
    hessian_time = best_time(lambda: full_hessian(model, X, T))
    ggn_time = best_time(lambda: full_ggn(model, X, T))
    print(f"net: {model!r}\nP = {n_parameters} parameters, N = {BATCH}, best of {REPEATS}")
    print(f"baseline autograd gradient:      {baseline_grad * 1e3:8.2f} ms")
    print(f"baseline forward_backward:       {baseline_fb * 1e3:8.2f} ms")
    for name, seconds in (("full_hessian", hessian_time), ("full_ggn", ggn_time)):
        verdict = "meets" if seconds < TARGET_SECONDS else "MISSES"
        print(
            f"{name + ':':33s}{seconds * 1e3:8.2f} ms = {seconds / baseline_grad:7.1f} x gradient "
            f"= {seconds / baseline_fb:8.1f} x forward_backward "
            f"({verdict} the {TARGET_SECONDS:g} s target)"
        )


if __name__ == "__main__":
    main()
