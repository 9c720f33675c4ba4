"""The golden cases and ``kfqn-ref golden export``: one function per case, written in one call.

A case's name is its builder's name and its one-line summary the builder's docstring, so
``kfqn-ref golden list`` needs no computation. ``export(DIR)`` rewrites every case; the committed
files under ``tests/golden/`` are reproduced by ``kfqn-ref golden export tests/golden``.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from kfqn_ref.golden import cases, trajectories, updates
from kfqn_ref.golden.format import Case, write_case

#: Every case, in the order ``list`` shows them.
CASE_BUILDERS: tuple[Callable[[], Case], ...] = (
    cases.dense_records,
    cases.conv_records,
    cases.loss_functions,
    cases.dense_curvature,
    cases.conv_curvature,
    cases.dense_kfac_factors,
    cases.conv_kfac_factors,
    updates.bfgs_updates,
    updates.lbfgs_updates,
    updates.hessian_action_updates,
    updates.damping_updates,
    trajectories.traj_kbfgs_2020,
    trajectories.traj_kbfgs_2022,
    trajectories.traj_kbfgsl,
    trajectories.traj_kbfgsl_memory_light,
    trajectories.traj_kbfgsl_convergent,
    trajectories.traj_kfac,
    trajectories.traj_kfac_reduce,
    trajectories.traj_shampoo,
    trajectories.traj_adam,
)


def case_summaries() -> list[tuple[str, str]]:
    """``(name, one-line summary)`` of every case."""
    return [(build.__name__, build.__doc__.strip().splitlines()[0]) for build in CASE_BUILDERS]


def export(directory: str | os.PathLike, names: list[str] | None = None) -> list[Path]:
    """Build and write the cases ``names`` (all by default) into ``directory``.

    Returns the paths of the manifests written.

    Raises ``ValueError`` for an unknown name (listing the known ones).
    """
    known = {build.__name__: build for build in CASE_BUILDERS}
    unknown = sorted(set(names or ()) - set(known))
    if unknown:
        raise ValueError(f"unknown golden case(s) {unknown}; known: {', '.join(known)}")
    paths = []
    for name, build in known.items():
        if names is None or name in names:
            case = build()
            assert case.name == name, f"builder {name} made case {case.name}"
            paths.append(write_case(directory, case))
    return paths
