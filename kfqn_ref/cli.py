"""The ``kfqn-ref`` command line: ``compare`` (alias ``demo``), ``train`` and ``verify``.

* ``compare`` trains K-BFGS, K-BFGS(L), KFAC, Shampoo, Adam, RMSprop and SGD-momentum over their
  grids (:mod:`kfqn_ref.methods`) on the embedded problems (:mod:`kfqn_ref.problems`), from the
  same initial weights on the same minibatch stream per seed, selects each method's setting by
  training loss and writes logs, plots, ``report.md`` and ``summary.json`` (:mod:`kfqn_ref.report`).
* ``train`` runs one method with one setting on one problem, on embedded data or the user's files,
  with checkpoints (:mod:`kfqn_ref.checkpoint`) and bit-identical resumption.
* ``verify`` runs the derivation checks of :mod:`kfqn_ref.verify`.

Every command sets its ``handler`` with ``set_defaults``; :func:`main` calls ``args.handler(args)``.
Exit status: 0 done, 1 a failed check, 2 a refused argument, 130 interrupted (Ctrl-C). The commands,
their outputs and the checkpoint format: ``docs/cli.md``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import shutil
import sys

import numpy as np

from kfqn_ref import __version__, backend, checkpoint, data, report, train
from kfqn_ref.golden.cli import add_golden_command
from kfqn_ref.methods import METHODS, Method, Setting
from kfqn_ref.problems import EMBEDDED, PROBLEMS, Problem

#: Exit status of a run stopped by Ctrl-C (128 + SIGINT), as shells report it.
EXIT_INTERRUPTED = 130
#: Epochs of ``compare`` and ``train`` without ``--epochs`` (``--quick``: :data:`QUICK_EPOCHS`).
DEFAULT_EPOCHS = 20
QUICK_EPOCHS = 2
DEFAULT_SEEDS = (0, 1)
#: What ``--overwrite`` removes from an output folder before writing (nothing else is touched).
OUTPUTS = ("runs", "report.md", "summary.json", "loss.png", "accuracy.png", "checkpoint.npz")


class CommandError(Exception):
    """A refusal found after parsing; :func:`main` prints it and exits with status 2."""


# -- argument types --------------------------------------------------------------------------------


def _choice(registry: dict, what: str):
    """Argparse type: a case-insensitive slug of ``registry``; unknown ones list the valid ones."""

    def parse(text: str):
        if text.lower() not in registry:
            raise argparse.ArgumentTypeError(
                f"unknown {what} {text!r}; choose from {', '.join(registry)}"
            )
        return registry[text.lower()]

    return parse


def _int_at_least(minimum: int):
    """Argparse type: an integer ``>= minimum`` (the message names the expected form)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < minimum:
            raise argparse.ArgumentTypeError(f"expected an integer >= {minimum}, got {text!r}")
        return value

    return parse


def positive_float(text: str) -> float:
    """Argparse type: a finite number ``> 0`` (learning rates, dampings)."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"expected a finite number > 0, got {text!r}")
    return value


method_type = _choice(METHODS, "method")
problem_type = _choice(PROBLEMS, "problem")
embedded_problem_type = _choice({slug: PROBLEMS[slug] for slug in EMBEDDED}, "problem")
positive_int = _int_at_least(1)
non_negative_int = _int_at_least(0)


# -- the parser ------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    """The ``kfqn-ref`` parser: one sub-command per job, each with its ``handler``."""
    parser = argparse.ArgumentParser(
        prog="kfqn-ref",
        description="Kronecker-factored quasi-Newton methods (K-BFGS, K-BFGS(L)) and their "
        "baselines in NumPy: compare them, train one, verify the derivations, check another "
        "implementation against the golden files.",
    )
    parser.add_argument("--version", action="version", version=f"kfqn-ref {__version__}")
    parser.add_argument(
        "--backend",
        choices=backend.BACKENDS,
        default=None,
        help="array module of every command, given before it: kfqn-ref --backend cupy train ... "
        "(default: $KFQN_BACKEND, else numpy; docs/backends.md)",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_compare(commands)
    _add_train(commands)
    _add_verify(commands)
    add_golden_command(commands)
    return parser


def _add_output_options(command, default_out: str | None) -> None:
    if default_out is not None:
        command.add_argument(
            "--out",
            default=default_out,
            help="output folder; refused if it exists and is not empty, unless --overwrite "
            "(default: %(default)s)",
        )
    command.add_argument(
        "--overwrite",
        action="store_true",
        help=f"write into an existing --out, replacing its {', '.join(OUTPUTS)}",
    )
    command.add_argument(
        "--dtype",
        choices=("float64", "float32"),
        default=None,
        help="floating-point precision of data, weights and optimizer state (default: float64, "
        "or the checkpoint's with --resume)",
    )
    command.add_argument("--quiet", action="store_true", help="no progress bar on stderr")


def _add_compare(commands) -> None:
    compare = commands.add_parser(
        "compare",
        aliases=["demo"],
        help="compare the seven methods on the embedded digits problems (the main job)",
        description="Train every method over its grid of learning rates (and dampings) from the "
        "same initial weights on the same minibatches, select each method's setting by final "
        "training loss, and write runs/*/*.csv|json, loss.png, accuracy.png, report.md and "
        "summary.json into --out.",
    )
    compare.add_argument(
        "--problems",
        nargs="+",
        type=embedded_problem_type,
        default=[PROBLEMS[slug] for slug in EMBEDDED],
        metavar="NAME",
        help=f"problems to run, from {', '.join(EMBEDDED)} (default: all)",
    )
    compare.add_argument(
        "--methods",
        nargs="+",
        type=method_type,
        default=list(METHODS.values()),
        metavar="NAME",
        help=f"methods to run (case-insensitive), from {', '.join(METHODS)} (default: all)",
    )
    compare.add_argument(
        "--seeds",
        nargs="+",
        type=non_negative_int,
        default=None,
        metavar="SEED",
        help="seeds of the initial weights and the minibatch order; several give a spread "
        f"(default: {' '.join(map(str, DEFAULT_SEEDS))}; 0 with --quick)",
    )
    compare.add_argument(
        "--epochs",
        type=positive_int,
        default=None,
        help=f"passes over the training set (default: {DEFAULT_EPOCHS}; {QUICK_EPOCHS} with "
        "--quick)",
    )
    compare.add_argument(
        "--quick", action="store_true", help=f"{QUICK_EPOCHS} epochs, seed 0: a smoke test"
    )
    _add_output_options(compare, os.path.join("runs", "compare"))
    compare.set_defaults(handler=run_compare)


def _add_train(commands) -> None:
    trainer = commands.add_parser(
        "train",
        help="train one method on one problem (embedded data or your files), with checkpoints",
        description="Train one method with one setting on one problem and write the same "
        "outputs as compare, plus checkpoint.npz. A run resumed with --resume continues "
        "bit-identically.",
    )
    trainer.add_argument(
        "--problem",
        type=problem_type,
        default=None,
        help=f"one of {', '.join(PROBLEMS)} (default: digits-autoencoder, or the checkpoint's)",
    )
    trainer.add_argument(
        "--method",
        type=method_type,
        default=None,
        help=f"one of {', '.join(METHODS)}, case-insensitive (required unless --resume)",
    )
    trainer.add_argument(
        "--lr",
        type=positive_float,
        default=None,
        help="learning rate (default: the method's first grid value)",
    )
    trainer.add_argument(
        "--damping",
        type=positive_float,
        default=None,
        help="damping lambda of K-BFGS, K-BFGS(L), KFAC (default: the first grid value)",
    )
    trainer.add_argument(
        "--seed",
        type=non_negative_int,
        default=None,
        help="seed of weights and minibatches (default: 0)",
    )
    trainer.add_argument(
        "--epochs",
        type=positive_int,
        default=None,
        help=f"passes over the data (default: {DEFAULT_EPOCHS})",
    )
    trainer.add_argument(
        "--batch-size",
        type=positive_int,
        default=None,
        help="minibatch size (default: the problem's)",
    )
    trainer.add_argument(
        "--data",
        default=None,
        metavar="FILE",
        help="your data: a .npz with arrays X (inputs) and y (labels, classifiers), or an IDX "
        "file of inputs (MNIST format, .gz allowed)",
    )
    trainer.add_argument(
        "--labels", default=None, metavar="FILE", help="IDX file of labels for an IDX --data"
    )
    trainer.add_argument(
        "--checkpoint-every",
        type=positive_int,
        default=None,
        metavar="K",
        help="write checkpoint.npz every K steps (always written at the end)",
    )
    where = trainer.add_mutually_exclusive_group()
    where.add_argument(
        "--out",
        default=None,
        help="output folder (default: runs/train); refused if not empty, unless --overwrite",
    )
    where.add_argument(
        "--resume",
        default=None,
        metavar="DIR",
        help="continue the run whose outputs are in DIR from its checkpoint.npz, writing there",
    )
    _add_output_options(trainer, None)
    trainer.set_defaults(handler=run_train)


def _add_verify(commands) -> None:
    verify = commands.add_parser(
        "verify",
        help="check the derivations numerically on freshly drawn tiny nets",
        description="Run the derivation checks (Hessian structure, KFAC exactness, secant, "
        "damping guarantees, eigenvalue bounds, Hessian-action identity) and print check, "
        "max error and tolerance; exit status 1 if any check fails.",
    )
    verify.add_argument(
        "--seed", type=non_negative_int, default=0, help="seed of the tiny nets (default: 0)"
    )
    verify.add_argument("--json", action="store_true", help="print the results as JSON")
    verify.set_defaults(handler=run_verify)


# -- shared pieces ---------------------------------------------------------------------------------


def prepare_out(folder: str, overwrite: bool) -> str:
    """Create ``folder`` (or clear our outputs in it with ``overwrite``) before any training.

    Raises :class:`CommandError` for a file in the way, a folder that is not empty without
    ``overwrite``, or a folder that cannot be created or written.
    """
    if os.path.exists(folder) and not os.path.isdir(folder):
        raise CommandError(f"--out {folder!r} is a file, not a folder")
    if os.path.isdir(folder) and os.listdir(folder):
        if not overwrite:
            raise CommandError(
                f"--out {folder!r} exists and is not empty; pass --overwrite to replace its "
                "outputs, or choose another folder"
            )
        for name in OUTPUTS:
            path = os.path.join(folder, name)
            if os.path.isdir(path):
                shutil.rmtree(path)
            elif os.path.exists(path):
                os.remove(path)
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as error:
        raise CommandError(f"--out {folder!r} cannot be created: {error.strerror}") from None
    if not os.access(folder, os.W_OK | os.X_OK):
        raise CommandError(f"--out {folder!r} is not writable")
    return folder


def _progress(total: int, quiet: bool):
    try:
        from tqdm import tqdm
    except ImportError as error:  # pragma: no cover - depends on the installation
        raise ImportError("progress bars need tqdm: pip install 'kfqn-ref[cli]'") from error
    return tqdm(total=total, file=sys.stderr, disable=quiet, unit="step", dynamic_ncols=True)


def _one_blas_thread(limit: bool):
    """One BLAS thread while training the small embedded problems (``docs/cli.md``, "Threads").

    Their matrices are at most 65 x 65: a multi-threaded BLAS spends more time waking threads than
    multiplying (measured 3-4x slower here), and one thread makes step times comparable.
    """
    if not limit:
        return contextlib.nullcontext()
    from threadpoolctl import threadpool_limits  # installed with scikit-learn (the cli extra)

    return threadpool_limits(limits=1, user_api="blas")


def _new_result(problem, method, setting, seed, optimizer, batch_size, n_train, epochs):
    return report.RunResult(
        problem=problem,
        method=method,
        setting=setting,
        seed=seed,
        log=train.RunLog(f"{method.name} {setting.label()}"),
        config=report.optimizer_config(optimizer),
        state_bytes=report.state_bytes(optimizer),
        batch_size=batch_size,
        steps_per_epoch=n_train // batch_size,
        epochs=epochs,
    )


def write_outputs(folder: str, results: list[report.RunResult], options: dict) -> str:
    """Write every run's logs, the plots, ``report.md`` and ``summary.json``; return the tables."""
    from kfqn_ref import plots

    for result in results:
        report.write_run_logs(os.path.join(folder, "runs", result.problem.slug), result)
    selections = report.select([result for result in results if result.finished])
    names = []
    if plots.plot_losses(os.path.join(folder, "loss.png"), selections):
        names.append("loss.png")
    if plots.plot_accuracy(os.path.join(folder, "accuracy.png"), selections):
        names.append("accuracy.png")
    markdown = report.report_markdown(selections, options, names)
    with open(os.path.join(folder, "report.md"), "w") as handle:
        handle.write(markdown)
    report.write_json(
        os.path.join(folder, "summary.json"), report.summary(results, selections, options)
    )
    return markdown


def _finish(folder: str, markdown: str, interrupted: bool) -> int:
    tables = [line for line in markdown.splitlines() if line.startswith(("|", "##", "*"))]
    print("\n".join(tables))
    print(f"wrote {os.path.join(folder, 'report.md')} and the files beside it")
    if interrupted:
        print("interrupted: the logs above cover what ran before Ctrl-C", file=sys.stderr)
        return EXIT_INTERRUPTED
    return 0


# -- compare ---------------------------------------------------------------------------------------


def run_compare(args: argparse.Namespace) -> int:
    """``kfqn-ref compare``: every method over its grid, every seed, every problem."""
    epochs = args.epochs or (QUICK_EPOCHS if args.quick else DEFAULT_EPOCHS)
    seeds = args.seeds or ([0] if args.quick else list(DEFAULT_SEEDS))
    methods = list(dict.fromkeys(args.methods))
    problems = list(dict.fromkeys(args.problems))
    folder = prepare_out(args.out, args.overwrite)
    dtype = np.dtype(args.dtype or "float64")
    splits = {problem.slug: problem.split(problem.embedded(dtype)) for problem in problems}
    options = {"epochs": epochs, "seeds": seeds, "dtype": dtype.name, "quick": args.quick}
    results: list[report.RunResult] = []
    grid = [
        (problem, method, setting, seed)
        for problem in problems
        for method in methods
        for setting in method.grid()
        for seed in seeds
    ]
    total = sum(
        epochs * (len(splits[problem.slug].train.X) // problem.batch_size)
        for problem, _, _, _ in grid
    )
    try:
        with _progress(total, args.quiet) as bar, _one_blas_thread(True):
            for problem, method, setting, seed in grid:
                bar.set_description(f"{problem.slug} {method.slug} seed {seed}")
                split = splits[problem.slug]
                _compare_run(results, problem, split, method, setting, seed, epochs, dtype, bar)
    except KeyboardInterrupt:
        options["interrupted"] = True
    return _finish(folder, write_outputs(folder, results, options), "interrupted" in options)


def _compare_run(results, problem, split, method, setting, seed, epochs, dtype, bar) -> None:
    """Train one grid point; its result is in ``results`` before training (Ctrl-C keeps it)."""
    optimizer = method.build(problem.make_model(seed, dtype), setting)
    result = _new_result(
        problem, method, setting, seed, optimizer, problem.batch_size, len(split.train.X), epochs
    )
    results.append(result)
    _train(optimizer, result, split, on_step=lambda log: bar.update(1))
    bar.update(epochs * result.steps_per_epoch - len(result.log.step_losses))  # a diverged run


def _train(optimizer, result: report.RunResult, split, on_step) -> None:
    """Train ``optimizer`` on ``split`` as ``result`` records it, logging into ``result.log``.

    Batch size, epochs, seed and the ``A`` pre-pass are ``result``'s; the test split is
    evaluated each epoch and ``on_step(log)`` runs after every step.
    """
    train.run(
        optimizer,
        split.train,
        batch_size=result.batch_size,
        epochs=result.epochs,
        seed=result.seed,
        test=split.test,
        prepass=result.method.prepass,
        log=result.log,
        on_step=on_step,
    )


# -- train -----------------------------------------------------------------------------------------


def run_train(args: argparse.Namespace) -> int:
    """``kfqn-ref train``: one method, one setting, one problem; checkpoints and resumption."""
    resumed = _stored_checkpoint(args.resume) if args.resume else None
    stored = resumed.identity if resumed else {}
    problem = args.problem or PROBLEMS.get(stored.get("problem", "digits-autoencoder"))
    method = args.method or METHODS.get(stored.get("method"))
    if method is None or problem is None:
        raise CommandError(f"--method is required; choose from {', '.join(METHODS)}")
    dtype = np.dtype(args.dtype or stored.get("dtype", "float64"))
    dataset = _train_dataset(problem, args, dtype)
    split = problem.split(dataset)
    setting = _setting(method, args, stored)
    seed = args.seed if args.seed is not None else stored.get("seed", 0)
    epochs = args.epochs or stored.get("epochs", DEFAULT_EPOCHS)
    batch_size = args.batch_size or stored.get("batch_size", problem.batch_size)
    n_train = len(split.train.X)
    if batch_size > n_train:
        raise CommandError(
            f"--batch-size must be at most {n_train} (the training samples), got {batch_size}"
        )
    identity = {
        "problem": problem.slug,
        "method": method.slug,
        "lr": setting.lr,
        "damping": setting.damping,
        "seed": seed,
        "epochs": epochs,
        "batch_size": batch_size,
        "dtype": dtype.name,
        "data": checkpoint.data_digest(dataset),
    }
    optimizer = method.build(problem.make_model(seed, dtype), setting)
    result = _new_result(problem, method, setting, seed, optimizer, batch_size, n_train, epochs)
    if args.resume:
        folder = args.resume
        try:
            checkpoint.check_identity(resumed, identity, os.path.join(folder, "checkpoint.npz"))
            optimizer.load_state_dict(resumed.state)
        except ValueError as error:
            raise CommandError(str(error)) from None
        result.log = resumed.log
    else:
        folder = prepare_out(args.out or os.path.join("runs", "train"), args.overwrite)
    path = os.path.join(folder, "checkpoint.npz")
    options = {"epochs": epochs, "seeds": [seed], "dtype": dtype.name, "quick": False}

    def on_step(log):
        bar.update(1)
        if args.checkpoint_every and len(log.step_losses) % args.checkpoint_every == 0:
            checkpoint.save(path, optimizer.state_dict(), log, identity)

    done = len(result.log.step_losses)
    try:
        single = problem.embedded is not None and args.data is None
        with (
            _progress(epochs * result.steps_per_epoch, args.quiet) as bar,
            _one_blas_thread(single),
        ):
            bar.update(done)
            bar.set_description(f"{problem.slug} {method.slug}")
            _train(optimizer, result, split, on_step)
    except KeyboardInterrupt:
        options["interrupted"] = True
    else:
        checkpoint.save(path, optimizer.state_dict(), result.log, identity)
    return _finish(folder, write_outputs(folder, [result], options), "interrupted" in options)


def _stored_checkpoint(folder: str) -> checkpoint.Checkpoint:
    """The checkpoint of ``--resume folder``, read once (its identity fills unset options)."""
    path = os.path.join(folder, "checkpoint.npz")
    if not os.path.isfile(path):
        raise CommandError(f"--resume {folder!r} holds no checkpoint.npz")
    try:
        return checkpoint.read(path)
    except ValueError as error:
        raise CommandError(str(error)) from None


def _setting(method: Method, args, stored: dict) -> Setting:
    if method.dampings:
        damping = args.damping or stored.get("damping") or method.dampings[0]
    elif args.damping is not None:
        raise CommandError(f"--damping applies to kbfgs, kbfgsl, kfac, not to {method.slug}")
    else:
        damping = None
    return Setting(args.lr or stored.get("lr") or method.lrs[0], damping)


def _train_dataset(problem: Problem, args, dtype) -> data.Dataset:
    if args.data is None:
        if args.labels is not None:
            raise CommandError("--labels needs --data (an IDX file of inputs)")
        if problem.embedded is None:
            raise CommandError(
                f"{problem.slug} has no embedded data: give your files with --data "
                f"(problems with embedded data: {', '.join(EMBEDDED)})"
            )
        return problem.embedded(dtype)
    try:
        X, y = data.load_arrays(args.data, args.labels, dtype=dtype)
        return problem.dataset_from_arrays(os.path.basename(args.data), X, y)
    except ValueError as error:
        raise CommandError(f"--data: {error}") from None


# -- verify ----------------------------------------------------------------------------------------


def run_verify(args: argparse.Namespace) -> int:
    """``kfqn-ref verify``: the derivation checks; exit status 1 if any fails."""
    from kfqn_ref import verify

    results = verify.run_checks(args.seed)
    if args.json:
        rows = report.json_ready([result._asdict() for result in results])
        print(json.dumps(rows, indent=1, allow_nan=False))
    else:
        print(verify.format_table(results))
    return 0 if all(result.passed for result in results) else 1


# -- entry point -----------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``kfqn-ref`` console script and of ``python -m kfqn_ref``."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.backend is not None:
        try:
            backend.use(args.backend)
        except ImportError as error:
            print(f"kfqn-ref: error: --backend {args.backend}: {error}", file=sys.stderr)
            return 2
    try:
        with np.errstate(all="ignore"):  # overflow is detected and reported by the optimizers
            return args.handler(args)
    except CommandError as error:
        print(f"kfqn-ref {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover - exercised through the console script
    sys.exit(main())
