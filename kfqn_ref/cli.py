"""The ``kfqn-ref`` command line: offline comparison runs on the embedded data sets.

``kfqn-ref demo`` trains K-BFGS, K-BFGS(L) and the paper's baselines (KFAC, Shampoo, Adam,
RMSprop, SGD-momentum) from the same initial weights on the same seeded minibatch stream
(:func:`kfqn_ref.train.compare`) and writes, into ``--out``:

* ``summary.json`` — per run: the optimizer, its full configuration, the data-set loss at the start
  and after every epoch, the minibatch loss before and the wall-clock time of every step, and
  whether the run diverged (plain JSON: numbers, strings, lists);
* ``epoch_losses.csv`` — one row per epoch, one column per run;
* ``loss.png`` — the data-set loss against epochs and against wall-clock time (matplotlib).

Two tasks ship with the package, both on scikit-learn's bundled 8x8 digits (no download):

* ``autoencoder`` — the paper's MNIST autoencoder in miniature, 64-32-8-32-64 with ReLU and sigmoid
  cross-entropy (Goldfarb, Ren & Bahamou 2020, section 5);
* ``cnn`` — a small CNN (conv 3x3 with 4 channels, ReLU, 2x2 max-pool, dense 64->10) with softmax
  cross-entropy, the setting of the 2022 paper in miniature.

The hyperparameters of every method were chosen on seed 0 by a small grid over the learning rate
(and the damping for the second-order methods) on each task; they are listed in :data:`TASKS` and
written into ``summary.json``. Conventions of the losses and shapes: ``docs/conventions.md``.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import enum
import json
import os
import sys
from typing import Callable, NamedTuple

import numpy as np

from kfqn_ref import data, nn, optim, train


class Task(NamedTuple):
    """A data set, a model builder and one tuned setting per optimizer."""

    description: str
    load_dataset: Callable[[], data.Dataset]
    make_model: Callable[[int], nn.Sequential]
    batch_size: int
    settings: dict[str, tuple[type, dict]]


def digits_autoencoder_model(seed: int) -> nn.Sequential:
    """64-32-8-32-64 ReLU autoencoder with sigmoid cross-entropy (the paper's, in miniature)."""
    layers = [
        nn.Dense(64, 32),
        nn.ReLU(),
        nn.Dense(32, 8),
        nn.ReLU(),
        nn.Dense(8, 32),
        nn.ReLU(),
        nn.Dense(32, 64),
    ]
    return nn.Sequential(layers, loss=nn.SigmoidCrossEntropy(), seed=seed)


def digits_cnn_model(seed: int) -> nn.Sequential:
    """Conv 1->4 (3x3, padding 1), ReLU, 2x2 max-pool, dense 64->10, softmax cross-entropy."""
    layers = [
        nn.Conv2d(1, 4, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Dense(64, 10),
    ]
    return nn.Sequential(layers, loss=nn.SoftmaxCrossEntropy(), seed=seed)


TASKS = {
    "autoencoder": Task(
        description="digits autoencoder 64-32-8-32-64, ReLU, sigmoid cross-entropy",
        load_dataset=data.digits_autoencoder,
        make_model=digits_autoencoder_model,
        batch_size=100,
        settings={
            "K-BFGS": (optim.KBFGS, {"lr": 1.0, "damping": 0.3}),
            "K-BFGS(L)": (optim.KBFGSL, {"lr": 1.0, "damping": 0.3}),
            "KFAC": (optim.KFAC, {"lr": 0.3, "damping": 0.03, "inverse_interval": 5}),
            "Shampoo": (optim.Shampoo, {"lr": 1.0}),
            "Adam": (optim.Adam, {"lr": 0.03}),
            "RMSprop": (optim.RMSprop, {"lr": 0.003}),
            "SGD-momentum": (optim.SGDMomentum, {"lr": 0.03, "momentum": 0.9}),
        },
    ),
    "cnn": Task(
        description="digits CNN conv(1->4, 3x3)-ReLU-maxpool-dense(64->10), softmax cross-entropy",
        load_dataset=data.digits_classification,
        make_model=digits_cnn_model,
        batch_size=100,
        settings={
            "K-BFGS": (optim.KBFGS, {"lr": 1.0, "damping": 0.03}),
            "K-BFGS(L)": (optim.KBFGSL, {"lr": 1.0, "damping": 0.03}),
            "KFAC": (optim.KFAC, {"lr": 0.3, "damping": 0.03, "inverse_interval": 5}),
            "Shampoo": (optim.Shampoo, {"lr": 1.0}),
            "Adam": (optim.Adam, {"lr": 0.03}),
            "RMSprop": (optim.RMSprop, {"lr": 0.003}),
            "SGD-momentum": (optim.SGDMomentum, {"lr": 0.1, "momentum": 0.9}),
        },
    ),
}


# -- argument parsing ------------------------------------------------------------------------------


def positive_int(text: str) -> int:
    """Argparse type: an integer >= 1 (the message names the expected form)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {value}")
    return value


def non_negative_int(text: str) -> int:
    """Argparse type: an integer >= 0 (seeds)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The ``kfqn-ref`` argument parser (one sub-command per job)."""
    parser = argparse.ArgumentParser(
        prog="kfqn-ref",
        description="Kronecker-factored quasi-Newton methods (K-BFGS, K-BFGS(L)) and baselines, "
        "in NumPy.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser(
        "demo",
        help="compare K-BFGS, K-BFGS(L) and the baselines on an embedded data set",
        description="Train every method from the same initial weights on the same minibatches "
        "of an embedded data set; write summary.json, epoch_losses.csv and loss.png.",
    )
    demo.add_argument(
        "--task",
        choices=sorted(TASKS),
        default="autoencoder",
        help="the embedded task (default: autoencoder)",
    )
    demo.add_argument(
        "--out",
        default=os.path.join("runs", "demo"),
        help="output directory, created if missing (default: runs/demo)",
    )
    demo.add_argument("--epochs", type=positive_int, default=10, help="epochs (default: 10)")
    demo.add_argument(
        "--batch-size",
        type=positive_int,
        default=None,
        help="minibatch size (default: the task's, 100)",
    )
    demo.add_argument(
        "--seed",
        type=non_negative_int,
        default=0,
        help="seed of the initial weights and of the minibatch order (default: 0)",
    )
    demo.add_argument(
        "--methods",
        nargs="+",
        default=None,
        metavar="NAME",
        help="run only these methods (default: all of the task's)",
    )
    demo.add_argument("--no-plot", action="store_true", help="skip loss.png (no matplotlib)")
    return parser


# -- the demo --------------------------------------------------------------------------------------


def selected_settings(task: Task, methods: list[str] | None) -> dict[str, tuple[type, dict]]:
    """The task's settings, restricted to ``methods`` (in the task's order)."""
    if methods is None:
        return dict(task.settings)
    unknown = [name for name in methods if name not in task.settings]
    if unknown:
        raise ValueError(f"--methods: unknown {unknown}; choose from {list(task.settings)}")
    return {name: setting for name, setting in task.settings.items() if name in methods}


def plain(value):
    """A configuration value as JSON: enums by their value, everything else as it is."""
    return value.value if isinstance(value, enum.Enum) else value


def run_summary(log: train.RunLog, optimizer: optim.Optimizer) -> dict:
    """One run as plain JSON-ready data."""
    return {
        "name": log.name,
        "optimizer": type(optimizer).__name__,
        "config": {
            key: plain(value) for key, value in dataclasses.asdict(optimizer.config).items()
        },
        "epoch_losses": log.epoch_losses,
        "step_losses": log.step_losses,
        "step_seconds": log.step_seconds,
        "mean_step_seconds": log.mean_step_seconds if log.step_seconds else None,
        "diverged": log.diverged,
    }


def run_demo(
    task_name: str, *, epochs: int, batch_size: int | None, seed: int, methods: list[str] | None
) -> dict:
    """Run the comparison and return the summary (see the module docstring)."""
    task = TASKS[task_name]
    dataset = task.load_dataset()
    batch = task.batch_size if batch_size is None else batch_size
    settings = selected_settings(task, methods)
    optimizers = {}

    def make_optimizer(name):
        def build(model):
            optimizer_class, options = settings[name]
            optimizers[name] = optimizer_class(model, **options)
            return optimizers[name]

        return build

    builders = {name: make_optimizer(name) for name in settings}
    logs = train.compare(
        lambda: task.make_model(seed), builders, dataset, batch_size=batch, epochs=epochs, seed=seed
    )
    return {
        "task": task_name,
        "description": task.description,
        "dataset": dataset.name,
        "n_samples": int(dataset.X.shape[0]),
        "batch_size": batch,
        "epochs": epochs,
        "seed": seed,
        "runs": [run_summary(log, optimizers[log.name]) for log in logs],
    }


def write_epoch_csv(summary: dict, path: str) -> None:
    """``epoch_losses.csv``: epoch 0 (initial weights) to the last, one column per run."""
    runs = summary["runs"]
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["epoch"] + [run["name"] for run in runs])
        for epoch in range(summary["epochs"] + 1):
            row = [
                run["epoch_losses"][epoch] if epoch < len(run["epoch_losses"]) else ""
                for run in runs
            ]
            writer.writerow([epoch] + row)


def write_plot(summary: dict, path: str) -> None:
    """``loss.png``: data-set loss against epochs and against the optimizer's cumulative time."""
    import matplotlib  # optional dependency (the cli extra)

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (by_epoch, by_time) = plt.subplots(1, 2, figsize=(11, 4))
    for run in summary["runs"]:
        losses = run["epoch_losses"]
        by_epoch.plot(range(len(losses)), losses, marker="o", markersize=3, label=run["name"])
        elapsed = np.concatenate([[0.0], np.cumsum(run["step_seconds"])])
        steps_per_epoch = summary["n_samples"] // summary["batch_size"]
        seconds = [
            elapsed[min(epoch * steps_per_epoch, len(elapsed) - 1)] for epoch in range(len(losses))
        ]
        by_time.plot(seconds, losses, marker="o", markersize=3, label=run["name"])
    by_epoch.set(xlabel="epoch", ylabel="data-set loss", yscale="log", title=summary["description"])
    by_time.set(
        xlabel="optimizer time (s, sum of step times)", ylabel="data-set loss", yscale="log"
    )
    by_epoch.legend(fontsize="small")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def format_table(summary: dict) -> str:
    """A plain-text table: method, initial loss, final loss, mean step time."""
    lines = [
        f"{summary['description']}: {summary['n_samples']} samples, batch "
        f"{summary['batch_size']}, {summary['epochs']} epochs, seed {summary['seed']}",
        f"{'method':<14}{'initial loss':>14}{'final loss':>14}{'ms / step':>12}",
    ]
    for run in summary["runs"]:
        final = "diverged" if run["diverged"] else f"{run['epoch_losses'][-1]:.4f}"
        seconds = run["mean_step_seconds"]
        step_ms = "-" if seconds is None else f"{1e3 * seconds:.2f}"
        lines.append(f"{run['name']:<14}{run['epoch_losses'][0]:>14.4f}{final:>14}{step_ms:>12}")
    return "\n".join(lines)


def demo(arguments: argparse.Namespace) -> int:
    """``kfqn-ref demo``: run, write the three files, print the table."""
    summary = run_demo(
        arguments.task,
        epochs=arguments.epochs,
        batch_size=arguments.batch_size,
        seed=arguments.seed,
        methods=arguments.methods,
    )
    os.makedirs(arguments.out, exist_ok=True)
    with open(os.path.join(arguments.out, "summary.json"), "w") as handle:
        json.dump(summary, handle, indent=1)
    write_epoch_csv(summary, os.path.join(arguments.out, "epoch_losses.csv"))
    if not arguments.no_plot:
        write_plot(summary, os.path.join(arguments.out, "loss.png"))
    print(format_table(summary))
    print(
        f"wrote {arguments.out}/summary.json, epoch_losses.csv"
        + ("" if arguments.no_plot else ", loss.png")
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``kfqn-ref`` console script."""
    parser = build_parser()
    arguments = parser.parse_args(argv)
    if arguments.batch_size is not None:
        n_samples = TASKS[arguments.task].load_dataset().X.shape[0]
        if arguments.batch_size > n_samples:
            parser.error(
                f"--batch-size must be at most {n_samples} (the data set size), "
                f"got {arguments.batch_size}"
            )
    if arguments.methods is not None:
        try:
            selected_settings(TASKS[arguments.task], arguments.methods)
        except ValueError as error:
            parser.error(str(error))
    return demo(arguments)


if __name__ == "__main__":  # pragma: no cover - exercised through the console script
    sys.exit(main())
