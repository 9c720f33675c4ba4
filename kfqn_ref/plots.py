"""The figures of ``kfqn-ref compare`` and ``train`` (matplotlib, the ``cli`` extra).

``loss.png``: one row per problem, the training loss of each method's selected setting against
epochs (left) and against optimizer time (right, pre-pass + steps, evaluations excluded); the
line is the mean over seeds and the band spans the seeds' minimum to maximum. ``accuracy.png``:
the held-out test accuracy of the classifier problems against epochs. Log axes carry plain tick
labels (``0.2``, ``0.5``, ``1``); the legend sits below the panels, never over a curve.
"""

from __future__ import annotations

import numpy as np

from kfqn_ref.methods import METHODS
from kfqn_ref.report import Selection


def _pyplot():
    try:
        import matplotlib
    except ImportError as error:  # pragma: no cover - depends on the installation
        raise ImportError("the plots need matplotlib: pip install 'kfqn-ref[cli]'") from error
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _series(selection: Selection, attribute: str) -> np.ndarray:
    """``(seeds, points)``: one series per seed of the best setting, cut to the shortest."""
    if attribute == "optimizer_seconds":
        rows = [r.log.optimizer_seconds(r.steps_per_epoch) for r in selection.best_runs]
    else:
        rows = [getattr(r.log, attribute) for r in selection.best_runs]
    length = min(len(row) for row in rows)
    return np.array([row[:length] for row in rows])


def _draw(axes, x: np.ndarray, ys: np.ndarray, color, label: str) -> None:
    """The mean of ``ys`` over seeds as a line, their min-max range as a band."""
    axes.plot(x, ys.mean(axis=0), color=color, label=label, linewidth=1.6)
    if len(ys) > 1:
        axes.fill_between(x, ys.min(axis=0), ys.max(axis=0), color=color, alpha=0.2, linewidth=0)


def _plain_log_axis(axes) -> None:
    """A log y axis labelled 0.05, 0.1, 0.2, 0.5, 1, ... rather than ``10^{-1}``."""
    from matplotlib import ticker

    axes.set_yscale("log")
    axes.yaxis.set_major_locator(ticker.LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    axes.yaxis.set_major_formatter(ticker.FuncFormatter(lambda value, _: f"{value:g}"))
    axes.yaxis.set_minor_locator(ticker.LogLocator(base=10, subs=np.arange(1, 10)))
    axes.yaxis.set_minor_formatter(ticker.NullFormatter())


def _color(method_slug: str):
    """One color per method, the same in every panel, figure and run (its place in METHODS)."""
    return _pyplot().get_cmap("tab10")(list(METHODS).index(method_slug) % 10)


def _integer_epochs(axes) -> None:
    """Integer epoch ticks, the axis ending at the last epoch drawn."""
    from matplotlib import ticker

    axes.xaxis.set_major_locator(ticker.MaxNLocator(integer=True))
    last = max(line.get_xdata()[-1] for line in axes.get_lines())
    axes.set_xlim(0, max(last, 1))


def _legend_below(figure, axes_list) -> float:
    """One legend entry per method below the panels; returns the height it takes (inches)."""
    entries = {}
    for axes in axes_list:
        for handle, label in zip(*axes.get_legend_handles_labels(), strict=True):
            entries.setdefault(label, handle)
    columns = max(1, min(len(entries), int(figure.get_figwidth() / 1.5)))
    figure.legend(
        list(entries.values()),
        list(entries),
        loc="lower center",
        ncol=columns,
        frameon=False,
        fontsize="small",
    )
    return 0.1 + 0.25 * -(-len(entries) // columns)


def _by_problem(selections: list[Selection]) -> dict[str, list[Selection]]:
    grouped: dict[str, list[Selection]] = {}
    for selection in selections:
        if selection.best_runs:
            grouped.setdefault(selection.problem.slug, []).append(selection)
    return grouped


def plot_losses(path: str, selections: list[Selection]) -> bool:
    """``loss.png``: training loss vs epoch and vs optimizer time, one row per problem.

    ``False`` (and nothing written) if no selection has a best run to plot.
    """
    if not any(selection.best_runs for selection in selections):
        return False
    plt = _pyplot()
    grouped = _by_problem(selections)
    figure, axes = plt.subplots(
        len(grouped), 2, figsize=(11, 3.6 * len(grouped) + 0.6), squeeze=False
    )
    for (by_epoch, by_time), group in zip(axes, grouped.values(), strict=True):
        for selection in group:
            losses = _series(selection, "epoch_losses")
            seconds = _series(selection, "optimizer_seconds").mean(axis=0)
            color, name = _color(selection.method.slug), selection.method.name
            _draw(by_epoch, np.arange(losses.shape[1]), losses, color, name)
            _draw(by_time, seconds, losses, color, name)
        title = group[0].problem.title
        by_epoch.set(xlabel="epoch", ylabel="training loss", title=title)
        by_time.set(xlabel="optimizer time (s)", ylabel="training loss", title=title)
        _integer_epochs(by_epoch)
        for panel in (by_epoch, by_time):
            _plain_log_axis(panel)
            panel.title.set_fontsize("medium")
            panel.grid(True, which="major", alpha=0.3)
    _finish(figure, axes.ravel(), path)
    return True


def plot_accuracy(path: str, selections: list[Selection]) -> bool:
    """``accuracy.png``: test accuracy vs epoch of the classifier problems; ``False`` if none."""
    grouped = {
        slug: group
        for slug, group in _by_problem(selections).items()
        if group[0].problem.classifier
    }
    if not grouped:
        return False
    plt = _pyplot()
    figure, axes = plt.subplots(
        1, len(grouped), figsize=(max(7.0, 5.5 * len(grouped)), 4.4), squeeze=False
    )
    for panel, group in zip(axes[0], grouped.values(), strict=True):
        for selection in group:
            accuracies = _series(selection, "test_accuracies")
            x = np.arange(accuracies.shape[1])
            _draw(panel, x, accuracies, _color(selection.method.slug), selection.method.name)
        panel.set(xlabel="epoch", ylabel="held-out test accuracy", title=group[0].problem.title)
        panel.title.set_fontsize("medium")
        panel.grid(True, alpha=0.3)
        _integer_epochs(panel)
    _finish(figure, axes.ravel(), path)
    return True


def _finish(figure, axes_list, path: str) -> None:
    """Legend below, a layout that keeps titles and labels inside the canvas; save, close."""
    plt = _pyplot()
    legend_height = _legend_below(figure, axes_list)
    figure.tight_layout(rect=(0, legend_height / figure.get_figheight(), 1, 1))
    figure.savefig(path, dpi=110)
    plt.close(figure)
