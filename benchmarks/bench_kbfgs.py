"""Time K-BFGS, K-BFGS(L) and K-FAC against Adam: every figure a ratio measured in one run.

Run on demand (not collected by pytest; ``docs/performance.md`` gives the figures and targets):

    .venv/bin/python benchmarks/bench_kbfgs.py mnist     # MNIST-shape autoencoder, float32
    .venv/bin/python benchmarks/bench_kbfgs.py digits    # digits autoencoder, float64
    .venv/bin/python benchmarks/bench_kbfgs.py cnn       # the digits CNN, float64
    .venv/bin/python benchmarks/bench_kbfgs.py digits --profile "K-BFGS(L)"   # cProfile a row
    .venv/bin/python benchmarks/bench_kbfgs.py mnist --parts K-BFGS   # time and rate per part

Problems (random data ``X ~ U[0, 1)``, one minibatch reused for every step):

* ``mnist``: Dense 784-1000-500-250-30-250-500-1000-784 (ReLU, linear code layer), sigmoid
  cross-entropy, targets = inputs, batch 1000, float32 (Goldfarb, Ren & Bahamou 2020);
* ``digits``: Dense 64-32-8-32-64, the same losses, batch 100, float64;
* ``cnn``: ``kfqn_ref.problems.PROBLEMS["digits-cnn"]`` (conv 1->8 3x3, pool, dense 128->10,
  softmax cross-entropy on random labels), batch 100, float64.

How: every optimizer gets a fresh model (same seed), then a warm-up (one update cycle; the
``memory`` steps that fill the K-BFGS(L) stores for the "full store" rows). Then ``--reps``
repetitions, each timing every row in turn (interleaved) over one cycle of steps (``--steps``
steps, or the 20 steps of an update interval of 20), and, for ``mnist``, one large GEMM right
before each row (the speed of a shared machine drifts within a repetition). Each
figure is a ratio within one repetition (a row's step time over Adam's; counted FLOPs over time
over the GEMM rate); the table prints the median over the repetitions and the spread
``(max - min) / median``, so that the load of other processes on the machine cancels, and
("best") the ratio of the fastest steps over all repetitions, the steadier figure where the
machine's speed drifts (interference only slows a step down).

FLOPs (dense nets, matrix products only, ``2 m n k`` each, ``D1 = d_in + 1``): forward
``2N d_out D1`` per layer, weight gradients the same, input gradients ``2N d_out d_in`` (all but
the first layer); the second pass of an update step (forward + input gradients); ``H_g M H_a``
(``2 d_out^2 D1 + 2 d_out D1^2``; a store of ``q`` pairs ``8 q d_out D1`` instead); the running
``A`` statistic ``2N D1^2``, counted as a GEMM although NumPy runs ``a~^T a~`` as a SYRK (half).
Update-step parts are amortised over the update interval.
"""

import argparse
import cProfile
import dataclasses
import pstats
import statistics
import time
from collections.abc import Callable

import numpy as np

from kfqn_ref import nn
from kfqn_ref.optim import KBFGS, KBFGSL, KFAC, Adam
from kfqn_ref.problems import PROBLEMS
from kfqn_ref.quasi_newton import LBFGSState
from kfqn_ref.report import state_bytes

MNIST_WIDTHS = (784, 1000, 500, 250, 30, 250, 500, 1000, 784)
GEMM_SIZE = 2000
GEMM_REPEATS = 3


@dataclasses.dataclass(frozen=True)
class Problem:
    """A model builder, one minibatch ``(X, T)`` and the step count of an interval-1 cycle."""

    title: str
    make_model: Callable[[], nn.Sequential]
    batch: Callable[[], tuple]
    steps: int
    gemm: bool
    skip: tuple = ()


def dense_autoencoder(widths, dtype):
    """Dense ``widths[0] -> ... -> widths[-1]``, ReLU after hidden layers but the narrowest."""
    code = min(widths)
    layers = []
    for d_in, d_out in zip(widths[:-1], widths[1:], strict=True):
        layers.append(nn.Dense(d_in, d_out))
        if d_out not in (code, widths[-1]):
            layers.append(nn.ReLU())
    return nn.Sequential(layers, loss=nn.SigmoidCrossEntropy(), seed=0, dtype=dtype)


def autoencoder_problem(widths, batch, dtype, steps, gemm=False) -> Problem:
    def make_batch():
        X = np.random.default_rng(0).random((batch, widths[0])).astype(dtype)
        return X, X

    title = f"Dense {'-'.join(map(str, widths))} autoencoder, batch {batch}, {np.dtype(dtype)}"
    return Problem(title, lambda: dense_autoencoder(widths, dtype), make_batch, steps, gemm)


def cnn_problem(batch, steps) -> Problem:
    problem = PROBLEMS["digits-cnn"]

    def make_batch():
        rng = np.random.default_rng(0)
        return rng.random((batch, *problem.sample_shape)), rng.integers(0, 10, batch)

    title = f"{problem.title}, batch {batch}, float64"
    return Problem(title, lambda: problem.make_model(0, np.float64), make_batch, steps, False)


def problems():
    return {
        "mnist": dataclasses.replace(
            autoencoder_problem(MNIST_WIDTHS, 1000, np.float32, steps=3, gemm=True),
            skip=("KFAC", "K-BFGS(L) memory 10"),
        ),
        "digits": autoencoder_problem((64, 32, 8, 32, 64), 100, np.float64, steps=20),
        "cnn": cnn_problem(100, steps=20),
    }


@dataclasses.dataclass(frozen=True)
class Row:
    """An optimizer configuration; ``fill``: warm up ``memory`` steps (full L-BFGS stores)."""

    name: str
    build: Callable
    interval: int = 1
    fill: bool = False


ROWS = (
    Row("Adam", Adam),
    Row("KFAC", KFAC),
    Row("K-BFGS", KBFGS),
    Row("K-BFGS interval 20", lambda m: KBFGS(m, update_interval=20), interval=20),
    Row("K-BFGS(L)", KBFGSL, fill=True),
    Row("K-BFGS(L) memory 10", lambda m: KBFGSL(m, memory=10), fill=True),
    Row("K-BFGS(L) light", lambda m: KBFGSL(m, memory_light=True), fill=True),
    Row(
        "K-BFGS(L) light int. 20",
        lambda m: KBFGSL(m, memory_light=True, update_interval=20),
        interval=20,
    ),
)


# ---------------------------------------------------------------------------------------------
# Counting
# ---------------------------------------------------------------------------------------------


#: The parts of a step that ``--parts`` times: (label, function name as cProfile lists it).
PARTS = (
    ("first pass (loss, gradients)", "forward_backward"),
    ("second pass (K-BFGS update steps)", "_second_pass"),
    ("running A (update steps)", "_input_factor_for_step"),
    ("direction H_g m H_a", "precondition"),
    ("factor updates (pairs, damping, BFGS)", "_update_factors"),
)


def part_flops(optimizer, N: int) -> dict[str, float]:
    """Counted matrix-product FLOPs per step of each part of :data:`PARTS` (dense nets).

    The count of the module docstring: passes, the amortised second pass and running ``A``, and
    the direction ``H_g M H_a`` (``2 d`` per entry of ``M`` for a dense factor of size ``d``,
    ``8 q`` for a store of ``q`` pairs).
    """
    dense = [layer for layer in optimizer.model.layers if isinstance(layer, nn.Dense)]
    shapes = [(layer.d_out, layer.d_in) for layer in dense]
    forward = sum(2 * N * d_out * (d_in + 1) for d_out, d_in in shapes)
    input_grads = sum(2 * N * d_out * d_in for d_out, d_in in shapes[1:])
    flops = {"forward_backward": 2 * forward + input_grads}
    if isinstance(optimizer, Adam):
        return flops
    interval = optimizer.config.update_interval
    flops["_second_pass"] = (forward + input_grads) / interval
    flops["_input_factor_for_step"] = sum(
        2 * N * layer_state.A.shape[0] ** 2 / interval
        for layer_state in optimizer.state.layers
        if layer_state.A is not None
    )
    flops["precondition"] = 0.0
    for layer_state in optimizer.state.layers:
        d_out, width = layer_state.momentum.shape
        for factor, dim in ((layer_state.H_g, d_out), (layer_state.H_a, width)):
            per_entry = 8 * factor.count if isinstance(factor, LBFGSState) else 2 * dim
            flops["precondition"] += per_entry * d_out * width
    return flops


def step_flops(optimizer, N: int) -> float | None:
    """Counted matrix-product FLOPs of one step on a dense net (module doc; None for K-FAC)."""
    if isinstance(optimizer, KFAC):
        return None
    return sum(part_flops(optimizer, N).values())


def pairs_held(optimizer) -> str:
    """``"q_min-q_max"`` pairs held by the limited-memory stores, or ``"-"``."""
    counts = [
        factor.count
        for layer_state in getattr(optimizer.state, "layers", ())
        for factor in (layer_state.H_g, layer_state.H_a)
        if isinstance(factor, LBFGSState)
    ]
    return f"{min(counts)}-{max(counts)}" if counts else "-"


# ---------------------------------------------------------------------------------------------
# Timing
# ---------------------------------------------------------------------------------------------


def seconds(function) -> float:
    start = time.perf_counter()
    function()
    return time.perf_counter() - start


def gemm_rate(dtype) -> float:
    """FLOP/s of one ``(n, n) @ (n, n)`` product in ``dtype``, best of ``GEMM_REPEATS``."""
    rng = np.random.default_rng(1)
    a, b = (rng.standard_normal((GEMM_SIZE, GEMM_SIZE)).astype(dtype) for _ in range(2))
    return 2 * GEMM_SIZE**3 / min(seconds(lambda: a @ b) for _ in range(GEMM_REPEATS))


def prepared(row: Row, problem: Problem, X, T):
    """A fresh optimizer after its warm-up (one update cycle, or a full store)."""
    optimizer = row.build(problem.make_model())
    for _ in range(optimizer.config.memory if row.fill else row.interval):
        optimizer.step(X, T)
    return optimizer


def cycle_seconds(optimizer, steps: int, X, T) -> float:
    """Mean seconds per step over ``steps`` consecutive steps."""
    return seconds(lambda: [optimizer.step(X, T) for _ in range(steps)]) / steps


def cycle_length(problem: Problem, row: Row) -> int:
    """``problem.steps`` rounded up to whole update cycles of the row."""
    return -(-problem.steps // row.interval) * row.interval


@dataclasses.dataclass
class Figures:
    """Per repetition, one row's step time, its ratio to Adam's and (dense nets) GEMM fraction."""

    seconds: list = dataclasses.field(default_factory=list)
    time_ratio: list = dataclasses.field(default_factory=list)
    gemm_fraction: list = dataclasses.field(default_factory=list)


def measure(problem: Problem, rows, reps: int):
    """Interleaved repetitions; returns the optimizers and one :class:`Figures` per row."""
    X, T = problem.batch()
    optimizers = {row.name: prepared(row, problem, X, T) for row in rows}
    figures = {row.name: Figures() for row in rows}
    dtype = optimizers["Adam"].model.weights()[0].dtype
    for _ in range(reps):
        per_step, rate = {}, {}
        for row in rows:  # the GEMM rate right before each row: the machine's speed drifts
            rate[row.name] = gemm_rate(dtype) if problem.gemm else None
            steps = max(problem.steps, row.interval)
            per_step[row.name] = cycle_seconds(optimizers[row.name], steps, X, T)
        for row in rows:
            figures[row.name].seconds.append(per_step[row.name])
            figures[row.name].time_ratio.append(per_step[row.name] / per_step["Adam"])
            flops = step_flops(optimizers[row.name], X.shape[0]) if problem.gemm else None
            if flops is not None:
                fraction = flops / per_step[row.name] / rate[row.name]
                figures[row.name].gemm_fraction.append(fraction)
    return optimizers, figures


def summary(values) -> str:
    """``median (spread)``, the spread ``(max - min) / median`` in percent."""
    if not values:
        return f"{'-':>14s}"
    middle = statistics.median(values)
    return f"{middle:7.2f} ({(max(values) - min(values)) / middle:4.0%})"


def best_ratio(figures, name: str, base: str) -> float:
    """Fastest step of ``name`` over the fastest step of ``base`` (minima over repetitions).

    Interference only slows a step down, so on a machine whose speed drifts (a shared virtual
    machine) the minima of interleaved repetitions are the steadier estimate.
    """
    return min(figures[name].seconds) / min(figures[base].seconds)


def print_table(optimizers, figures) -> None:
    adam_bytes = state_bytes(optimizers["Adam"])
    print(
        f"\n{'optimizer':24s} {'x Adam time':>14s} {'best':>6s} {'GEMM fraction':>14s} "
        f"{'state x Adam':>12s} {'pairs':>7s}"
    )
    for name, optimizer in optimizers.items():
        print(
            f"{name:24s} {summary(figures[name].time_ratio)} "
            f"{best_ratio(figures, name, 'Adam'):6.2f} "
            f"{summary(figures[name].gemm_fraction)} "
            f"{state_bytes(optimizer) / adam_bytes:12.2f} {pairs_held(optimizer):>7s}"
        )
    base = figures["K-BFGS"].time_ratio
    for name in ("K-BFGS(L)", "K-BFGS(L) memory 10"):
        if name not in figures:
            continue
        ratios = [t / b for t, b in zip(figures[name].time_ratio, base, strict=True)]
        best = best_ratio(figures, name, "K-BFGS")
        print(f"{name + ' / K-BFGS':34s} {summary(ratios)} {best:6.2f}")


def parts_row(row: Row, problem: Problem, steps: int) -> None:
    """Seconds, counted GFLOP and GEMM fraction of each part of a step (cProfile cumulative
    times: on the MNIST shape a step makes a few thousand Python calls, so the profiler costs
    little there; on the digits net it inflates every part)."""
    X, T = problem.batch()
    optimizer = prepared(row, problem, X, T)
    rate = gemm_rate(optimizer.model.weights()[0].dtype)
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(steps):
        optimizer.step(X, T)
    profiler.disable()
    cumulative = {}
    for (file, _, name), (_, _, _, cumtime, _) in pstats.Stats(profiler).stats.items():
        if name == "step" and not file.endswith("base.py"):
            continue  # a subclass's step wraps Optimizer.step: count the base frame only
        cumulative[name] = cumulative.get(name, 0.0) + cumtime
    flops = part_flops(optimizer, X.shape[0])
    step = cumulative["step"] / steps
    print(
        f"\n{row.name}: {1e3 * step:.1f} ms per step ({steps} steps), GEMM {rate / 1e9:.0f} GFLOP/s"
    )
    print(f"{'part':40s} {'ms/step':>9s} {'share':>6s} {'GFLOP':>7s} {'x GEMM rate':>12s}")
    accounted = 0.0
    for label, name in PARTS:
        if name not in cumulative:
            continue
        seconds_per_step = cumulative[name] / steps
        accounted += seconds_per_step
        count = flops.get(name)
        fraction = f"{count / seconds_per_step / rate:12.2f}" if count else f"{'-':>12s}"
        gflop = f"{count / 1e9:7.2f}" if count else f"{'-':>7s}"
        share = seconds_per_step / step
        print(f"{label:40s} {1e3 * seconds_per_step:9.1f} {share:6.0%} {gflop} {fraction}")
    rest = step - accounted
    print(f"{'rest (momentum, moments, weight update)':40s} {1e3 * rest:9.1f} {rest / step:6.0%}")


def profile_row(row: Row, problem: Problem, steps: int, top: int = 25) -> None:
    """cProfile ``steps`` steps of ``row`` after its warm-up; print the top functions."""
    X, T = problem.batch()
    optimizer = prepared(row, problem, X, T)
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(steps):
        optimizer.step(X, T)
    profiler.disable()
    print(f"\ncProfile of {steps} steps of {row.name}, sorted by own time:")
    pstats.Stats(profiler).sort_stats("tottime").print_stats(top)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("problem", choices=("mnist", "digits", "cnn"))
    parser.add_argument("--reps", type=int, default=5, help="interleaved repetitions (5)")
    parser.add_argument("--steps", type=int, help="steps per interval-1 cycle")
    parser.add_argument("--profile", metavar="ROW", help="cProfile this row instead of timing")
    parser.add_argument("--parts", metavar="ROW", help="time and rate of each part of a step")
    args = parser.parse_args()
    problem = problems()[args.problem]
    if args.steps:
        problem = dataclasses.replace(problem, steps=args.steps)
    print(problem.title)
    if args.profile:
        profile_row(next(r for r in ROWS if r.name == args.profile), problem, problem.steps)
        return
    if args.parts:
        parts_row(next(r for r in ROWS if r.name == args.parts), problem, problem.steps)
        return
    rows = [row for row in ROWS if row.name not in problem.skip]
    optimizers, figures = measure(problem, rows, args.reps)
    print(f"{args.reps} interleaved repetitions; median (spread = (max - min) / median)")
    print_table(optimizers, figures)


if __name__ == "__main__":
    main()
