"""What ``kfqn-ref compare`` and ``train`` write: per-run logs, the selection, summary, report.

Selection rule (the papers'): for each problem and method, the grid setting with the lowest final
training-set loss, averaged over the seeds; a setting with a diverged seed scores ``+inf``.
JSON files hold only finite numbers: a quantity that does not exist (the final loss of a diverged
run) is ``null`` and the reason is written next to it. Layout of the files: ``docs/cli.md``.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import os
from typing import NamedTuple

import numpy as np

from kfqn_ref import __version__, backend, optim
from kfqn_ref.methods import Method, Setting
from kfqn_ref.optim import state_io
from kfqn_ref.problems import Problem
from kfqn_ref.train import RunLog

#: Columns of every per-run CSV log (one row per evaluation: the start and each epoch's end).
CSV_COLUMNS = ("epoch", "train_loss", "test_accuracy", "wall_seconds", "optimizer_seconds")


@dataclasses.dataclass
class RunResult:
    """One run: what it trained (problem, method, setting, seed) and what it measured."""

    problem: Problem
    method: Method
    setting: Setting
    seed: int
    log: RunLog
    config: dict
    state_bytes: int
    batch_size: int
    steps_per_epoch: int
    epochs: int

    @property
    def finished(self) -> bool:
        """Whether the run diverged or completed its epochs (not stopped by Ctrl-C)."""
        return self.log.diverged is not None or len(self.log.epoch_losses) == self.epochs + 1

    @property
    def run_id(self) -> str:
        """``kbfgs_lr0.3_d0.03_seed0``: the run's file name in ``runs/<problem>/``."""
        return f"{self.method.slug}_{self.setting.slug()}_seed{self.seed}"

    @property
    def score(self) -> float:
        """The selection score: the final training loss, ``+inf`` for a diverged run."""
        return math.inf if self.log.diverged else self.log.epoch_losses[-1]


def optimizer_config(optimizer: optim.Optimizer) -> dict:
    """The optimizer's configuration as JSON data (enum options spelled by their string value)."""
    return {
        field.name: state_io.stored_config_value(getattr(optimizer.config, field.name))
        for field in dataclasses.fields(optimizer.config)
    }


def state_bytes(optimizer: optim.Optimizer) -> int:
    """Bytes of the optimizer's state arrays (``state.*`` of its state dict; no weights)."""
    return sum(
        int(backend.to_host(leaf).nbytes)
        for _, leaf in state_io.iter_leaves(optimizer.state, "state")
    )


class Selection(NamedTuple):
    """A method's best setting on a problem (``None`` if every setting diverged) and its runs."""

    problem: Problem
    method: Method
    setting: Setting | None
    best_runs: list[RunResult]
    all_runs: list[RunResult]


def select(results: list[RunResult]) -> list[Selection]:
    """The best setting of each (problem, method), in the order the runs were made."""
    groups: dict[tuple[str, str], list[RunResult]] = {}
    for result in results:
        groups.setdefault((result.problem.slug, result.method.slug), []).append(result)
    selections = []
    for runs in groups.values():
        by_setting: dict[Setting, list[RunResult]] = {}
        for result in runs:
            by_setting.setdefault(result.setting, []).append(result)
        scores = {s: float(np.mean([r.score for r in rs])) for s, rs in by_setting.items()}
        best = min(scores, key=scores.get)
        if math.isinf(scores[best]):
            selections.append(Selection(runs[0].problem, runs[0].method, None, [], runs))
        else:
            selections.append(
                Selection(runs[0].problem, runs[0].method, best, by_setting[best], runs)
            )
    return selections


# -- JSON and CSV ----------------------------------------------------------------------------------


def json_ready(value):
    """``value`` with every non-finite float replaced by ``None`` (JSON has no NaN or Inf)."""
    if isinstance(value, dict):
        return {key: json_ready(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_ready(item) for item in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_json(path: str, value) -> None:
    """Write ``value`` as strict JSON (``allow_nan=False``, after :func:`json_ready`)."""
    with open(path, "w") as handle:
        json.dump(json_ready(value), handle, indent=1, allow_nan=False)
        handle.write("\n")


def run_record(result: RunResult) -> dict:
    """One run as JSON data: identity, configuration, every measured series, divergence."""
    log = result.log
    diverged = log.diverged
    return {
        "id": result.run_id,
        "problem": result.problem.slug,
        "method": result.method.slug,
        "method_name": result.method.name,
        "setting": result.setting._asdict(),
        "seed": result.seed,
        "optimizer": result.method.optimizer.__name__,
        "config": result.config,
        "batch_size": result.batch_size,
        "steps_per_epoch": result.steps_per_epoch,
        "final_loss": None if diverged or not log.epoch_losses else log.epoch_losses[-1],
        "diverged": None if diverged is None else diverged._asdict(),
        "epoch_losses": log.epoch_losses,
        "test_accuracies": log.test_accuracies,
        "epoch_wall_seconds": log.epoch_wall_seconds,
        "optimizer_seconds": log.optimizer_seconds(result.steps_per_epoch),
        "prepass_seconds": log.prepass_seconds,
        "step_losses": log.step_losses,
        "step_seconds": log.step_seconds,
        "mean_step_seconds": log.mean_step_seconds,
        "median_step_seconds": log.median_step_seconds,
        "state_bytes": result.state_bytes,
    }


def write_run_logs(folder: str, result: RunResult) -> None:
    """``<folder>/<run id>.json`` (:func:`run_record`) and ``.csv`` (:data:`CSV_COLUMNS`)."""
    os.makedirs(folder, exist_ok=True)
    write_json(os.path.join(folder, result.run_id + ".json"), run_record(result))
    log = result.log
    seconds = log.optimizer_seconds(result.steps_per_epoch)
    with open(os.path.join(folder, result.run_id + ".csv"), "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(CSV_COLUMNS)
        for epoch, loss in enumerate(log.epoch_losses):
            accuracy = log.test_accuracies[epoch] if log.test_accuracies else ""
            wall = log.epoch_wall_seconds[epoch]
            writer.writerow([epoch, repr(loss), accuracy, f"{wall:.6f}", f"{seconds[epoch]:.6f}"])


# -- summary.json and report.md --------------------------------------------------------------------


def _best_row(selection: Selection, adam_row: dict | None) -> dict:
    """The numbers of one table row (``None`` where there is nothing to report).

    ``adam_row``: Adam's row on the same problem (its ratios unset), or ``None``.
    """
    runs = selection.best_runs
    row = {
        "problem": selection.problem.slug,
        "method": selection.method.slug,
        "method_name": selection.method.name,
        "setting": None if selection.setting is None else selection.setting._asdict(),
        "final_loss_mean": None,
        "final_loss_min": None,
        "final_loss_max": None,
        "test_accuracy_mean": None,
        "ms_per_step": None,
        "ms_per_step_vs_adam": None,
        "state_bytes": selection.all_runs[0].state_bytes,
        "state_vs_adam": None,
        "diverged_runs": sum(r.log.diverged is not None for r in selection.all_runs),
        "runs": len(selection.all_runs),
    }
    if runs:
        losses = [r.log.epoch_losses[-1] for r in runs]
        row.update(
            final_loss_mean=float(np.mean(losses)),
            final_loss_min=min(losses),
            final_loss_max=max(losses),
            ms_per_step=1e3 * float(np.mean([r.log.median_step_seconds for r in runs])),
        )
        if selection.problem.classifier:
            row["test_accuracy_mean"] = float(np.mean([r.log.test_accuracies[-1] for r in runs]))
    if adam_row is not None:
        row["state_vs_adam"] = row["state_bytes"] / adam_row["state_bytes"]
        if row["ms_per_step"] is not None and adam_row["ms_per_step"] is not None:
            row["ms_per_step_vs_adam"] = row["ms_per_step"] / adam_row["ms_per_step"]
    return row


def best_rows(selections: list[Selection]) -> list[dict]:
    """One row per (problem, method); ratios are relative to Adam on the same problem."""
    adam_rows = {s.problem.slug: _best_row(s, None) for s in selections if s.method.slug == "adam"}
    return [_best_row(s, adam_rows.get(s.problem.slug)) for s in selections]


def summary(results: list[RunResult], selections: list[Selection], options: dict) -> dict:
    """``summary.json``: the options, the problems, the rule, the best rows and every run."""
    problems = {r.problem.slug: r.problem for r in results}
    return {
        "package_version": __version__,
        "options": options,
        "selection_rule": "lowest final training loss, mean over seeds; a diverged seed "
        "scores +inf",
        "problems": {
            slug: {"title": p.title, "classifier": p.classifier, "batch_size": p.batch_size}
            for slug, p in problems.items()
        },
        "best": best_rows(selections),
        "runs": [_summary_run(r) for r in results],
    }


_SUMMARY_RUN_KEYS = (
    "id",
    "problem",
    "method",
    "setting",
    "seed",
    "config",
    "final_loss",
    "diverged",
    "median_step_seconds",
    "state_bytes",
)


def _summary_run(result: RunResult) -> dict:
    """The :data:`_SUMMARY_RUN_KEYS` of the run's record and the path of its log."""
    record = run_record(result)
    return {key: record[key] for key in _SUMMARY_RUN_KEYS} | {"log": _log_path(result)}


def _log_path(result: RunResult) -> str:
    return f"runs/{result.problem.slug}/{result.run_id}.json"


def _number(value, form: str) -> str:
    return "—" if value is None else format(value, form)


def divergence_note(result: RunResult) -> str:
    """``K-BFGS lr=1 damping=0.03, seed 0: step 12: new weights of ... is not finite``."""
    step, reason = result.log.diverged
    run = f"{result.method.name} {result.setting.label()}, seed {result.seed}"
    return f"{run}: step {step}: {reason.split(';')[0]}"


def report_markdown(selections: list[Selection], options: dict, plots: list[str]) -> str:
    """``report.md``: per problem, the table of best settings, then the plots and divergences."""
    rows = best_rows(selections)
    lines = [
        "# kfqn-ref comparison",
        "",
        f"kfqn_ref {__version__}; epochs {options['epochs']}, seeds {options['seeds']}, dtype "
        f"{options['dtype']}. Each method's setting is the one of its grid with the lowest final "
        "training loss (mean over seeds). Time per step and optimizer-state memory are also "
        "given relative to Adam.",
    ]
    if options.get("interrupted"):
        lines += ["", "**Interrupted** (Ctrl-C): the table covers the runs finished before."]
    for slug in dict.fromkeys(row["problem"] for row in rows):
        problem = next(s.problem for s in selections if s.problem.slug == slug)
        lines += ["", f"## {problem.title} (`{slug}`)", ""]
        lines += _table([row for row in rows if row["problem"] == slug], problem.classifier)
    lines += [""] + [f"![{name}]({name})" for name in plots]
    notes = [divergence_note(r) for s in selections for r in s.all_runs if r.log.diverged]
    if notes:
        lines += ["", "## Diverged runs", ""] + [f"* {note}" for note in notes]
    return "\n".join(lines) + "\n"


def _table(rows: list[dict], classifier: bool) -> list[str]:
    header = ["method", "best setting", "final train loss"]
    header += ["test accuracy"] if classifier else []
    header += ["ms / step (median)", "x Adam", "state KiB", "x Adam", "diverged"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        setting = row["setting"]
        loss = _number(row["final_loss_mean"], ".4f")
        if row["final_loss_min"] is not None and row["final_loss_min"] != row["final_loss_max"]:
            loss += f" [{row['final_loss_min']:.4f}, {row['final_loss_max']:.4f}]"
        cells = [
            row["method_name"],
            "all diverged" if setting is None else Setting(**setting).label(),
            loss,
        ]
        cells += [_number(row["test_accuracy_mean"], ".3f")] if classifier else []
        cells += [
            _number(row["ms_per_step"], ".2f"),
            _number(row["ms_per_step_vs_adam"], ".1f"),
            f"{row['state_bytes'] / 1024:.1f}",
            _number(row["state_vs_adam"], ".1f"),
            f"{row['diverged_runs']}/{row['runs']}",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return lines
