"""K-BFGS, K-BFGS(L) and Adam on NumPy (CPU) against CuPy (GPU), in one run.

Run on demand, on a machine with a CUDA device and the ``cupy`` extra (not collected by pytest):

    .venv/bin/python benchmarks/bench_backends.py            # batch 1000, float32 and float64
    .venv/bin/python benchmarks/bench_backends.py --quick    # batch 100, a smoke run

The net is the MNIST-shape autoencoder of ``benchmarks/bench_kbfgs.py`` (Dense
784-1000-500-250-30-250-500-1000-784, ReLU, sigmoid cross-entropy, targets = inputs) on one random
minibatch ``X ~ U[0, 1)``. For each optimizer and backend: a fresh model (same seed, so the same
initial weights on both backends), one untimed step, then the median time of ``--steps`` steps
(``cupy.cuda.Device().synchronize()`` before each clock reading, so the GPU work is counted).
Then the agreement: 10 K-BFGS steps from the same weights on both backends, and the largest
relative difference of the weights, ``max |W_cpu - W_gpu| / max |W_cpu|`` over the layers, for
float64 and float32. Without CuPy or a device the NumPy rows are printed and the script says what
is missing (``docs/backends.md``).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import numpy as np

from kfqn_ref import backend, nn, optim

WIDTHS = (784, 1000, 500, 250, 30, 250, 500, 1000, 784)
OPTIMIZERS = {
    "K-BFGS": lambda model: optim.KBFGS(model, lr=0.3, damping=0.3),
    "K-BFGS(L)": lambda model: optim.KBFGSL(model, lr=0.3, damping=0.3),
    "Adam": lambda model: optim.Adam(model, lr=1e-3),
}


def autoencoder(dtype) -> nn.Sequential:
    """The MNIST-shape autoencoder, weights drawn from seed 0 on the selected backend."""
    layers = []
    for i, (d_in, d_out) in enumerate(zip(WIDTHS[:-1], WIDTHS[1:], strict=True)):
        layers.append(nn.Dense(d_in, d_out))
        if i < len(WIDTHS) - 2 and d_out != 30:  # the 30-unit code layer is linear
            layers.append(nn.ReLU())
    return nn.Sequential(layers, loss=nn.SigmoidCrossEntropy(), seed=0, dtype=dtype)


def synchronize() -> None:
    """Wait for the GPU (a no-op under NumPy)."""
    if backend.xp() is not np:
        backend.xp().cuda.Device().synchronize()


def median_step_seconds(make, X, steps: int) -> float:
    """Median wall time of one step after one untimed step, on the selected backend."""
    model = autoencoder(X.dtype)
    opt = make(model)
    X = backend.to_device(X)
    opt.step(X, X)
    times = []
    for _ in range(steps):
        synchronize()
        start = time.perf_counter()
        opt.step(X, X)
        synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def weights_after_kbfgs(X, steps: int = 10) -> list[np.ndarray]:
    """Host copies of the weights after ``steps`` K-BFGS steps on the selected backend."""
    model = autoencoder(X.dtype)
    opt = OPTIMIZERS["K-BFGS"](model)
    X = backend.to_device(X)
    for _ in range(steps):
        opt.step(X, X)
    return [backend.to_host(w) for w in model.weights()]


def max_relative_difference(a: list[np.ndarray], b: list[np.ndarray]) -> float:
    """``max |a - b| / max |a|`` over the layers."""
    return max(float(np.max(np.abs(x - y)) / np.max(np.abs(x))) for x, y in zip(a, b, strict=True))


def main(argv: list[str] | None = None) -> int:
    """Print the step-time table and the CPU/GPU agreement."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="batch 100 and 3 timed steps")
    parser.add_argument("--steps", type=int, default=10, help="timed steps per row (default 10)")
    args = parser.parse_args(argv)
    batch, steps = (100, 3) if args.quick else (1000, args.steps)
    X32 = np.random.default_rng(0).uniform(size=(batch, WIDTHS[0])).astype(np.float32)
    try:
        backend.use("cupy")
        has_gpu = True
        device = backend.xp().cuda.runtime.getDeviceProperties(0)["name"].decode()
    except ImportError as error:
        has_gpu, device = False, f"none ({error})"
    backend.use("numpy")
    print(f"batch {batch}, float32; GPU: {device}")
    print(f"{'optimizer':10s} {'NumPy CPU ms':>13s} {'CuPy GPU ms':>12s} {'CPU / GPU':>10s}")
    for name, make in OPTIMIZERS.items():
        cpu = median_step_seconds(make, X32, steps)
        gpu = None
        if has_gpu:
            backend.use("cupy")
            gpu = median_step_seconds(make, X32, steps)
            backend.use("numpy")
        gpu_text = f"{gpu * 1e3:12.1f} {cpu / gpu:10.1f}" if gpu else f"{'-':>12s} {'-':>10s}"
        print(f"{name:10s} {cpu * 1e3:13.1f} {gpu_text}")
    if has_gpu:
        for dtype in (np.float64, np.float32):
            X = X32.astype(dtype)
            cpu_weights = weights_after_kbfgs(X)
            backend.use("cupy")
            gpu_weights = weights_after_kbfgs(X)
            backend.use("numpy")
            difference = max_relative_difference(cpu_weights, gpu_weights)
            print(
                f"K-BFGS, 10 steps, {np.dtype(dtype).name}: max relative weight difference "
                f"CPU vs GPU {difference:.2e}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
