"""Time K-BFGS and K-BFGS(L) against Adam on the paper's MNIST-shape autoencoder.

Run on demand (not collected by pytest; about a minute on a 2-core machine, ``--quick`` seconds):

    .venv/bin/python benchmarks/bench_kbfgs.py            # batch 1000, float32: the targets
    .venv/bin/python benchmarks/bench_kbfgs.py --quick    # smoke-size run (batch 100)
    .venv/bin/python benchmarks/bench_kbfgs.py --profile  # also cProfile some K-BFGS steps

The net is the MNIST autoencoder of Hinton & Salakhutdinov (2006) as trained by Goldfarb, Ren &
Bahamou (2020): Dense 784-1000-500-250-30-250-500-1000-784 with ReLU after every hidden layer
except the linear 30-unit code layer (the paper uses ReLU where the original used sigmoids; the
activation does not change the FLOP counts), sigmoid cross-entropy, targets = inputs. The data are
one random minibatch ``X ~ U[0, 1)`` of ``--batch`` rows, reused for every step.

What is measured, in this order:

1. **FLOPs, counted from the layer sizes** (matrix products only, ``2 m n k`` each; with
   ``P = sum d_out D1`` over layers, ``D1 = d_in + 1``): forward/backward ``2N P`` (forward)
   ``+ 2N P`` (weight gradients) ``+ 2N sum_{l>1} d_out d_in`` (input gradients); the second pass
   (forward + input gradients, no weight gradients); ``H_g M H_a`` for every layer
   (``2 d_out^2 D1 + 2 d_out D1^2``; a limited-memory store holding ``q`` pairs costs
   ``8 q d_out D1`` instead, from ``lbfgs_compact_apply``); the 2020 ``A`` update
   ``(1/N) a~^T a~`` (``2N D1^2``, the usual count; NumPy evaluates ``a~^T a~`` by a
   symmetric rank-k update, SYRK, which does half of that, so this part can show a GEMM
   fraction above 1 and the verdict also gives the fraction counting ``N D1^2``). The ``O(d^2)``
   rank-2 updates, Hessian-vector products and all elementwise work (activations, loss,
   momentum, Adam's moments, finiteness checks) are not counted: they are what a step spends
   beyond its matrix products.
2. **This machine's matrix-product rate**: one ``n x n @ n x n`` GEMM of the benchmark's dtype,
   best of ``GEMM_REPEATS``.
3. **Step times**: each optimizer gets a fresh model (same seed) and steps on the same minibatch.
   Step 0 is timed on its own (K-BFGS inverts every ``A + lambda_A I`` explicitly there). Then one
   update cycle (``update_interval`` steps; a full L-BFGS store for the K-BFGS(L) rows with
   interval 1, so that the compact representation holds all ``memory`` pairs) runs untimed, and
   the reported per-step time is the median over ``cycles`` cycles of the mean step time of one
   cycle: the median step for interval 1, the amortised step (19 light steps and one update step)
   for interval 20. "GEMM frac" is the step's counted FLOPs over its time over the GEMM rate.
4. **The parts of one K-BFGS step** timed alone on the state the interval-1 run left: forward/
   backward, ``H_g M H_a`` (``KBFGS.precondition``), the second pass and the ``A`` statistic;
   what the step spends beyond their sum is elementwise work, copies and checks.
5. **Optimizer-state bytes**: the sum of ``nbytes`` over the ``state.*`` entries of
   :meth:`Optimizer.state_dict`, i.e. the optimizer's own arrays (momentum, running ``A``, ``H_a``,
   ``H_g`` or their limited-memory stores of ``memory`` preallocated pairs, the averaged ``s``,
   ``y``; Adam: both moments). Not counted: the model weights (``weights.*``), the configuration
   (``config.*``), the class name and step counter; nor transient arrays of a step.

Targets (the speed goals the "Speed" remark of ``docs/optimizers/kbfgs.md`` reports on): at batch
1000, float32, K-BFGS/Adam step time ``<= 2.8`` (update every step) and
``<= 1.7`` (update interval 20); a K-BFGS step (interval 1) reaches ``>= 0.6`` of the GEMM rate;
memory-light K-BFGS(L) state ``<= 2.0`` x Adam's.
"""

import argparse
import cProfile
import dataclasses
import os
import platform
import pstats
import statistics
import time
from collections.abc import Callable

import numpy as np

from kfqn_ref import nn
from kfqn_ref.curvature.factors import kbfgs_input_factor
from kfqn_ref.optim import KBFGS, KBFGSL, Adam, KBFGSVariant
from kfqn_ref.quasi_newton import LBFGSState

#: Layer widths of the MNIST autoencoder; the 30-unit code layer is linear.
SIZES = (784, 1000, 500, 250, 30, 250, 500, 1000, 784)
CODE_WIDTH = 30
#: Expected FLOP figures at batch 1000 (GFLOP, worked out by hand), checked against the count.
EXPECTED_GFLOP = {
    "forward/backward": 15.4,
    "H_g M H_a (dense)": 9.0,
    "second pass": 9.8,
    "A update (2020)": 6.5,
}
#: The speed targets, judged at batch 1000 in float32.
TARGET_RATIO_EVERY_STEP = 2.8
TARGET_RATIO_INTERVAL_20 = 1.7
TARGET_GEMM_FRACTION = 0.6
TARGET_STATE_RATIO = 2.0
GEMM_REPEATS = 5
PART_REPEATS = 3


# ---------------------------------------------------------------------------------------------
# The problem and its FLOP count
# ---------------------------------------------------------------------------------------------


def make_model(dtype, seed=0):
    """The autoencoder: Dense layers of ``SIZES``, ReLU after each hidden layer but the code."""
    layers = []
    for d_in, d_out in zip(SIZES[:-1], SIZES[1:], strict=False):
        layers.append(nn.Dense(d_in, d_out))
        if d_out not in (CODE_WIDTH, SIZES[-1]):
            layers.append(nn.ReLU())
    return nn.Sequential(layers, loss=nn.SigmoidCrossEntropy(), seed=seed, dtype=dtype)


def make_batch(batch, dtype, seed=0):
    """One random minibatch ``X ~ U[0, 1)`` ``(batch, 784)``; targets are the inputs."""
    return np.random.default_rng(seed).random((batch, SIZES[0])).astype(dtype)


def layer_shapes():
    """``(d_out, d_in)`` per Dense layer."""
    return list(zip(SIZES[1:], SIZES[:-1], strict=False))


@dataclasses.dataclass(frozen=True)
class FlopCount:
    """FLOPs of the parts of a step on a minibatch of ``N`` rows (matrix products only)."""

    forward_backward: float
    second_pass: float
    precondition_dense: float
    a_update: float


def count_flops(batch) -> FlopCount:
    """Count the parts from the layer sizes (module docstring, item 1)."""
    forward = sum(2 * batch * d_out * (d_in + 1) for d_out, d_in in layer_shapes())
    input_grads = sum(2 * batch * d_out * d_in for d_out, d_in in layer_shapes()[1:])
    return FlopCount(
        forward_backward=2 * forward + input_grads,
        second_pass=forward + input_grads,
        precondition_dense=sum(
            2 * d_out**2 * (d_in + 1) + 2 * d_out * (d_in + 1) ** 2
            for d_out, d_in in layer_shapes()
        ),
        a_update=sum(2 * batch * (d_in + 1) ** 2 for _, d_in in layer_shapes()),
    )


def precondition_flops(optimizer) -> float:
    """FLOPs of ``H_g M H_a`` over all layers with the factors the optimizer holds now."""
    total = 0.0
    for layer_state in optimizer.state.layers:
        d_out, width = layer_state.momentum.shape
        for factor, dim in ((layer_state.H_g, d_out), (layer_state.H_a, width)):
            if isinstance(factor, LBFGSState):
                total += 8 * factor.count * d_out * width
            else:
                total += 2 * dim * d_out * width
    return total


def step_flops(optimizer, flops: FlopCount) -> float:
    """Counted FLOPs of one step, amortised over the update interval (Adam: forward/backward)."""
    if isinstance(optimizer, Adam):
        return flops.forward_backward
    keeps_A = any(s.A is not None for s in optimizer.state.layers)
    on_update = flops.second_pass + (flops.a_update if keeps_A else 0.0)
    return (
        flops.forward_backward
        + precondition_flops(optimizer)
        + on_update / optimizer.config.update_interval
    )


# ---------------------------------------------------------------------------------------------
# Timing
# ---------------------------------------------------------------------------------------------


def seconds(function) -> float:
    """Wall time of one call."""
    start = time.perf_counter()
    function()
    return time.perf_counter() - start


def best_seconds(function, repeats) -> float:
    """Minimum wall time of ``repeats`` calls."""
    return min(seconds(function) for _ in range(repeats))


def gemm_rate(n, dtype) -> float:
    """FLOP/s of one ``(n, n) @ (n, n)`` product in ``dtype``, best of ``GEMM_REPEATS``."""
    rng = np.random.default_rng(1)
    a, b = (rng.standard_normal((n, n)).astype(dtype) for _ in range(2))
    return 2 * n**3 / best_seconds(lambda: a @ b, GEMM_REPEATS)


@dataclasses.dataclass(frozen=True)
class Row:
    """One optimizer configuration of the table. ``fill_store``: run ``memory`` untimed steps
    first, so that the L-BFGS stores are full (interval 1 only)."""

    name: str
    build: Callable
    interval: int = 1
    fill_store: bool = False


ROWS = (
    Row("Adam", Adam),
    Row("K-BFGS", KBFGS),
    Row("K-BFGS interval 20", lambda m: KBFGS(m, update_interval=20), interval=20),
    Row("K-BFGS variant 2020", lambda m: KBFGS(m, variant=KBFGSVariant.AUTHORS_2020)),
    Row("K-BFGS(L)", KBFGSL, fill_store=True),
    Row("K-BFGS(L) light", lambda m: KBFGSL(m, memory_light=True), fill_store=True),
    Row(
        "K-BFGS(L) light int. 20",
        lambda m: KBFGSL(m, memory_light=True, update_interval=20),
        interval=20,
    ),
)


@dataclasses.dataclass
class Result:
    """What one row measured: seconds of step 0 and per step, FLOPs per step, state bytes."""

    row: Row
    optimizer: object
    step0: float
    per_step: float
    flops: float
    state_bytes: int
    pairs: str


def time_row(row: Row, X, cycles: int, fill_store: bool, flops: FlopCount) -> Result:
    """Step 0 alone, one untimed cycle (or a full store), then the median cycle-mean step time."""
    optimizer = row.build(make_model(X.dtype))
    step0 = seconds(lambda: optimizer.step(X, X))
    warmup = optimizer.config.memory if (row.fill_store and fill_store) else row.interval
    for _ in range(warmup):
        optimizer.step(X, X)
    cycle_means = []
    for _ in range(cycles):
        times = [seconds(lambda: optimizer.step(X, X)) for _ in range(row.interval)]
        cycle_means.append(sum(times) / len(times))
    return Result(
        row,
        optimizer,
        step0,
        statistics.median(cycle_means),
        step_flops(optimizer, flops),
        state_bytes(optimizer),
        pairs_held(optimizer),
    )


def state_bytes(optimizer) -> int:
    """Bytes of the optimizer's own state: the ``state.*`` entries of ``state_dict``."""
    return sum(
        array.nbytes for key, array in optimizer.state_dict().items() if key.startswith("state.")
    )


def pairs_held(optimizer) -> str:
    """``"q_min-q_max"`` pairs held by the limited-memory stores, or ``"-"``."""
    counts = [
        factor.count
        for layer_state in getattr(optimizer.state, "layers", ())
        for factor in (layer_state.H_g, layer_state.H_a)
        if isinstance(factor, LBFGSState)
    ]
    return f"{min(counts)}-{max(counts)}" if counts else "-"


def time_parts(optimizer, X) -> dict:
    """Seconds of each counted part of a K-BFGS step, alone, on the optimizer's current state."""
    model = optimizer.model
    first = model.forward_backward(X, X)
    gradients = first.grads

    def second_pass():
        forward = model.forward_pass(X)
        model.backward_pass(
            forward, model.loss.output_gradient(forward.z, X), weight_gradients=False
        )

    parts = {
        "forward/backward": lambda: model.forward_backward(X, X),
        "H_g M H_a (dense)": lambda: optimizer.precondition(gradients),
        "second pass": second_pass,
        "A update (2020)": lambda: [kbfgs_input_factor(r.a) for r in first.records],
    }
    return {name: best_seconds(part, PART_REPEATS) for name, part in parts.items()}


def profile_steps(X, steps: int, top: int = 18) -> None:
    """cProfile ``steps`` K-BFGS steps (after step 0 and one warm-up); print the top functions."""
    optimizer = KBFGS(make_model(X.dtype))
    optimizer.step(X, X)
    optimizer.step(X, X)
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(steps):
        optimizer.step(X, X)
    profiler.disable()
    print(f"\ncProfile of {steps} K-BFGS steps (interval 1), sorted by own time:")
    pstats.Stats(profiler).sort_stats("tottime").print_stats(top)


# ---------------------------------------------------------------------------------------------
# Reporting
# ---------------------------------------------------------------------------------------------


def machine_summary() -> str:
    """Platform, CPU, core count, NumPy and its BLAS (and the BLAS threads, if known)."""
    cpu = platform.processor() or "?"
    try:
        with open("/proc/cpuinfo") as info:
            cpu = next(
                line.split(":", 1)[1].strip() for line in info if line.startswith("model name")
            )
    except (OSError, StopIteration):
        pass
    blas = "?"
    try:
        config = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
        blas = f"{config['name']} {config['version']}"
    except Exception:  # the summary is informative only
        pass
    try:
        from threadpoolctl import threadpool_info  # optional

        pools = [
            f"{p['internal_api']} {p.get('architecture', '')} {p['num_threads']} threads"
            for p in threadpool_info()
            if p["user_api"] == "blas"
        ]
        blas += " (" + "; ".join(pools) + ")" if pools else ""
    except ImportError:
        pass
    return (
        f"{platform.platform()}, {cpu}, {os.cpu_count()} CPUs, Python "
        f"{platform.python_version()}, NumPy {np.__version__}, BLAS {blas}"
    )


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def print_flop_count(flops: FlopCount, batch: int) -> None:
    """The counted parts next to the expected figures (which are for batch 1000)."""
    print(f"\nFLOPs counted from the layer sizes, batch {batch} (expected at batch 1000):")
    counted = {
        "forward/backward": flops.forward_backward,
        "H_g M H_a (dense)": flops.precondition_dense,
        "second pass": flops.second_pass,
        "A update (2020)": flops.a_update,
    }
    for name, value in counted.items():
        expected = EXPECTED_GFLOP[name]
        agree = f"{value / 1e9 / expected:5.2f} x expected" if batch == 1000 else ""
        print(f"  {name:20s} {value / 1e9:7.2f} GFLOP   expected {expected:4.1f}   {agree}")
    every = (
        flops.forward_backward + flops.precondition_dense + flops.second_pass + flops.a_update
    ) / flops.forward_backward
    light = (
        flops.forward_backward + flops.precondition_dense + flops.second_pass / 20
    ) / flops.forward_backward
    print(
        f"  arithmetic K-BFGS/Adam: {every:.2f} (every step), {light:.2f} (interval 20, "
        "matrix-free A action)"
    )


def print_rows(results, rate: float) -> None:
    """The main table: per-step times, ratios to Adam, GEMM fraction, state bytes."""
    adam = results[0]
    print(
        f"\n{'optimizer':24s} {'step 0':>8s} {'per step':>9s} {'x Adam':>7s} "
        f"{'FLOP x':>7s} {'GFLOP':>6s} {'GEMM':>5s} {'state':>8s} {'x Adam':>7s} {'pairs':>7s}"
    )
    print(
        f"{'':24s} {'ms':>8s} {'ms':>9s} {'time':>7s} {'Adam':>7s} {'/step':>6s} "
        f"{'frac':>5s} {'MiB':>8s} {'state':>7s} {'held':>7s}"
    )
    for r in results:
        print(
            f"{r.row.name:24s} {r.step0 * 1e3:8.1f} {r.per_step * 1e3:9.1f} "
            f"{r.per_step / adam.per_step:7.2f} {r.flops / adam.flops:7.2f} "
            f"{r.flops / 1e9:6.1f} {r.flops / r.per_step / rate:5.2f} "
            f"{r.state_bytes / 2**20:8.1f} {r.state_bytes / adam.state_bytes:7.2f} "
            f"{r.pairs:>7s}"
        )


def print_parts(parts: dict, flops: FlopCount, step: Result, rate: float) -> None:
    """Each part's time and rate, and what the K-BFGS step spends beyond them."""
    counted = {
        "forward/backward": flops.forward_backward,
        "H_g M H_a (dense)": flops.precondition_dense,
        "second pass": flops.second_pass,
        "A update (2020)": flops.a_update,
    }
    print(f"\nParts of one K-BFGS step (interval 1), each timed alone, best of {PART_REPEATS}:")
    print(f"  {'part':20s} {'GFLOP':>6s} {'ms':>8s} {'GFLOP/s':>8s} {'GEMM frac':>9s}")
    for name, secs in parts.items():
        print(
            f"  {name:20s} {counted[name] / 1e9:6.2f} {secs * 1e3:8.1f} "
            f"{counted[name] / secs / 1e9:8.1f} {counted[name] / secs / rate:9.2f}"
        )
    print("  (the A statistic a~^T a~ runs as a SYRK: half the counted FLOPs, hence > 1)")
    rest = step.per_step - sum(parts.values())
    print(f"  {'sum of parts':20s} {'':6s} {sum(parts.values()) * 1e3:8.1f}")
    print(
        f"  {'rest of the step':20s} {'':6s} {rest * 1e3:8.1f}   (elementwise work, copies, "
        "checks, rank-2 updates)"
    )


def print_verdicts(by_name: dict, rate: float, flops: FlopCount, standard: bool) -> None:
    """PASS/MISS against the four speed targets."""
    adam = by_name["Adam"]
    every, interval = by_name["K-BFGS"], by_name["K-BFGS interval 20"]
    light = by_name["K-BFGS(L) light"]
    checks = (
        (
            "K-BFGS / Adam step time (every step)",
            every.per_step / adam.per_step,
            "<=",
            TARGET_RATIO_EVERY_STEP,
        ),
        (
            "K-BFGS / Adam step time (interval 20)",
            interval.per_step / adam.per_step,
            "<=",
            TARGET_RATIO_INTERVAL_20,
        ),
        (
            "K-BFGS step GEMM-rate fraction",
            every.flops / every.per_step / rate,
            ">=",
            TARGET_GEMM_FRACTION,
        ),
        (
            "memory-light K-BFGS(L) / Adam state",
            light.state_bytes / adam.state_bytes,
            "<=",
            TARGET_STATE_RATIO,
        ),
    )
    print(
        "\nTargets"
        + (
            ""
            if standard
            else " (stated for batch 1000, float32: this run "
            "differs, so the verdicts are indicative only)"
        )
        + ":"
    )
    for name, value, relation, target in checks:
        ok = value <= target if relation == "<=" else value >= target
        print(f"  {name:40s} {value:6.2f} {relation} {target:4.1f}   {verdict(ok)}")
    executed = (every.flops - flops.a_update / 2) / every.per_step / rate
    print(f"  (GEMM-rate fraction counting the SYRK's N D1^2 for the A statistic: {executed:.2f})")


# ---------------------------------------------------------------------------------------------


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=1000, help="minibatch rows (default 1000)")
    parser.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    parser.add_argument(
        "--steps",
        type=int,
        default=7,
        help="timed steps of the interval-1 rows (median; default 7)",
    )
    parser.add_argument(
        "--cycles",
        type=int,
        default=2,
        help="timed 20-step cycles of the interval-20 rows (default 2)",
    )
    parser.add_argument("--gemm-size", type=int, default=2000, help="n of the n x n GEMM")
    parser.add_argument(
        "--no-fill", action="store_true", help="do not fill the K-BFGS(L) stores before timing"
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: batch 100, 2 steps, 1 cycle, GEMM 500, stores not filled",
    )
    parser.add_argument(
        "--profile", action="store_true", help="also print a cProfile of --steps K-BFGS steps"
    )
    args = parser.parse_args()
    if args.quick:
        args.batch, args.steps, args.cycles, args.gemm_size, args.no_fill = 100, 2, 1, 500, True
    return args


def main():
    args = parse_args()
    dtype = np.dtype(args.dtype)
    X = make_batch(args.batch, dtype)
    flops = count_flops(args.batch)
    print(f"machine: {machine_summary()}")
    print(
        f"net: {' -> '.join(map(str, SIZES))} (ReLU, linear code layer), sigmoid CE, "
        f"batch {args.batch}, {dtype}, random data"
    )
    print_flop_count(flops, args.batch)
    rate = gemm_rate(args.gemm_size, dtype)
    print(
        f"\nGEMM rate ({args.gemm_size}^2 @ {args.gemm_size}^2, {dtype}, best of "
        f"{GEMM_REPEATS}): {rate / 1e9:.1f} GFLOP/s"
    )
    results = []
    for row in ROWS:
        cycles = args.steps if row.interval == 1 else args.cycles
        results.append(time_row(row, X, cycles, not args.no_fill, flops))
    print_rows(results, rate)
    by_name = {r.row.name: r for r in results}
    parts = time_parts(by_name["K-BFGS"].optimizer, X)
    print_parts(parts, flops, by_name["K-BFGS"], rate)
    print_verdicts(by_name, rate, flops, standard=args.batch == 1000 and dtype == np.float32)
    if args.profile:
        profile_steps(X, args.steps)


if __name__ == "__main__":
    main()
