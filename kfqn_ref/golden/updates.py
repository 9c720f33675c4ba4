"""Golden cases of single quasi-Newton updates: BFGS, L-BFGS, Hessian action, damping.

Each case holds several sub-cases (``<sub>.<array>``) whose inputs are chosen to take every branch:
an accepted update, each skip rule, a damped and an undamped pair. Formulas and skip rules:
``docs/derivations/quasi-newton.md``.
"""

from __future__ import annotations

import numpy as np

from kfqn_ref import quasi_newton as qn
from kfqn_ref.golden.cases import EXACT, INPUT, SKIP_CODES, UPDATE
from kfqn_ref.golden.format import Case, Entry

DIM = 4
TOLERANCES = {"input": INPUT, "decision": EXACT, "update": UPDATE}


def _spd(rng, dim: int = DIM) -> np.ndarray:
    """A well-conditioned SPD matrix ``Q diag(0.5 .. 2) Q^T``."""
    q, _ = np.linalg.qr(rng.standard_normal((dim, dim)))
    return (q * np.linspace(0.5, 2.0, dim)) @ q.T


def _input(array, meaning: str) -> Entry:
    """A given array (order 0)."""
    return Entry(np.asarray(array), "input", meaning, 0)


def _decision_entries(prefix: str, updated: bool, reason: qn.SkipReason, order: int) -> dict:
    return {
        f"{prefix}.updated": Entry(
            np.array(updated), "decision", "whether the update was applied", order
        ),
        f"{prefix}.reason": Entry(
            np.array(SKIP_CODES[reason.value], dtype=np.int64),
            "decision",
            "skip code (setup.skip_codes)",
            order,
        ),
    }


# ---------------------------------------------------------------------------------------------
# BFGS
# ---------------------------------------------------------------------------------------------

BFGS_STEPS = (
    "inputs: H (d, d) SPD, s, y (d,), gbar_norm, relative_threshold",
    "skip rule: skip if s^T y, s^T s not finite (3), s^T y <= 0 (1), s^T y <= relative_threshold "
    "s^T s gbar_norm (2)",
    "H+ = H + (rho^2 y^T H y + rho) s s^T - rho (s (H y)^T + (H y) s^T), rho = 1/(s^T y); kept "
    "H if an entry of H+ is not finite (4); direct form "
    "B+ = B - B s s^T B/(s^T B s) + y y^T/(s^T y)",
)


def bfgs_updates() -> Case:
    """Inverse BFGS updates taking each branch, and one direct update."""
    rng = np.random.default_rng(4)
    H = _spd(rng)
    s = rng.standard_normal(DIM)
    tiny = np.zeros(DIM)
    tiny[0] = 1e-160
    pairs = {
        "accept": (s, H @ s + 0.1 * s, 1.0),
        "skip_non_positive": (s, -(H @ s), 1.0),
        "skip_relative": (s, 1e-6 * s, 1.0),
        "skip_non_finite": (tiny, tiny, 0.0),
    }
    entries = {}
    for name, (s_k, y_k, gbar_norm) in pairs.items():
        result = qn.bfgs_inverse_update(H, s_k, y_k, gbar_norm=gbar_norm, relative_threshold=1e-4)
        entries[f"{name}.H"] = _input(H, "H (d, d), SPD")
        entries[f"{name}.s"] = _input(s_k, "s (d,)")
        entries[f"{name}.y"] = _input(y_k, "y (d,)")
        entries[f"{name}.gbar_norm"] = _input(gbar_norm, "||gbar||")
        entries.update(_decision_entries(name, result.updated, result.reason, 1))
        entries[f"{name}.H_new"] = Entry(result.H, "update", "H+ (d, d) (H when skipped)", 2)
    s_a, y_a, _ = pairs["accept"]
    B = np.linalg.inv(H)
    entries["direct.B"] = _input(B, "B = H^-1 (d, d)")
    entries["direct.B_new"] = Entry(qn.bfgs_direct_update(B, s_a, y_a).B, "update", "B+", 2)
    return Case(
        name="bfgs_updates",
        kind="bfgs",
        description="BFGS inverse updates: accepted, and each skip rule; one direct update",
        net=None,
        data={"d": DIM},
        setup={"relative_threshold": 1e-4, "skip_codes": SKIP_CODES, "direct": "pair of 'accept'"},
        seeds={"data": 4},
        order_of_operations=BFGS_STEPS,
        tolerances=TOLERANCES,
        entries=entries,
    )


# ---------------------------------------------------------------------------------------------
# L-BFGS
# ---------------------------------------------------------------------------------------------

LBFGS_STEPS = (
    "inputs: an empty store (memory 3, gamma), pairs s_i, y_i appended in order, a vector v",
    "append i: accepted iff s^T y > 0 (finite); when full the oldest pair leaves; the store keeps "
    "rows S, Y oldest first (rows >= count are zero)",
    "after the last append: H v by the two-loop recursion, and the dense H",
)


def lbfgs_updates() -> Case:
    """Five appends to a store of memory 3 (one rejected, one dropping the oldest), then ``H v``."""
    rng = np.random.default_rng(5)
    M = _spd(rng)
    state = qn.lbfgs_init(DIM, 3, gamma=0.7)
    entries = {"gamma": _input(0.7, "gamma of H_0 = gamma I")}
    for i in range(5):
        s = rng.standard_normal(DIM)
        y = -s if i == 2 else M @ s
        result = qn.lbfgs_append(state, s, y)
        state = result.state
        entries[f"append{i}.s"] = _input(s, "s (d,)")
        entries[f"append{i}.y"] = _input(y, "y (d,)")
        entries.update(_decision_entries(f"append{i}", result.accepted, result.reason, 1))
        entries[f"append{i}.S"] = Entry(state.S, "update", "S (memory, d), oldest first", 1)
        entries[f"append{i}.Y"] = Entry(state.Y, "update", "Y (memory, d), oldest first", 1)
        entries[f"append{i}.count"] = Entry(
            np.array(state.count, dtype=np.int64), "decision", "pairs", 1
        )
    v = rng.standard_normal(DIM)
    entries["v"] = _input(v, "v (d,)")
    entries["H_v"] = Entry(qn.lbfgs_two_loop(state, v), "update", "H v (d,)", 2)
    entries["H"] = Entry(qn.lbfgs_inverse_matrix(state), "update", "the dense H (d, d)", 2)
    return Case(
        name="lbfgs_updates",
        kind="lbfgs",
        description="L-BFGS appends (memory 3): accepted, rejected, oldest dropped; H v and H",
        net=None,
        data={"d": DIM},
        setup={"memory": 3, "gamma_rule": "fixed", "skip_codes": SKIP_CODES},
        seeds={"data": 5},
        order_of_operations=LBFGS_STEPS,
        tolerances=TOLERANCES,
        entries=entries,
    )


# ---------------------------------------------------------------------------------------------
# Hessian action
# ---------------------------------------------------------------------------------------------

ACTION_STEPS = (
    "inputs: H (d, d) SPD or an L-BFGS store, v (d,), M (d, d) SPD",
    "pair: s = H v, y = M s",
    "update: the BFGS update of H with (s, y) (dense: gbar_norm = ||v||), or the L-BFGS append",
)


def hessian_action_updates() -> Case:
    """Hessian-action BFGS on a dense ``H`` and on a limited-memory store."""
    rng = np.random.default_rng(6)
    H, M, v = _spd(rng), _spd(rng), rng.standard_normal(DIM)
    entries = {
        "H": _input(H, "H (d, d)"),
        "M": _input(M, "M (d, d), the known SPD matrix"),
        "v": _input(v, "v (d,)"),
    }
    s, y = qn.hessian_action_pair(H, v, M)
    entries["dense.s"] = Entry(
        s, "update", "s = H v", 1, hints={"pair": {"role": "s", "partner": "dense.y"}}
    )
    entries["dense.y"] = Entry(
        y, "update", "y = M s", 1, hints={"pair": {"role": "y", "partner": "dense.s"}}
    )
    result = qn.hessian_action_bfgs_update(H, v, M, gbar_norm=float(np.linalg.norm(v)))
    entries.update(_decision_entries("dense", result.updated, result.reason, 2))
    entries["dense.H_new"] = Entry(result.H, "update", "H+ (d, d)", 2)
    store = qn.lbfgs_init(DIM, 2, gamma=1.0)
    for i in range(3):
        appended = qn.hessian_action_lbfgs_append(
            store, v if i == 0 else rng.standard_normal(DIM), M
        )
        store = appended.state
    entries["store.S"] = Entry(store.S, "update", "S after three appends (v, then two draws)", 2)
    entries["store.Y"] = Entry(store.Y, "update", "Y after three appends", 2)
    return Case(
        name="hessian_action_updates",
        kind="hessian_action",
        description="Hessian-action BFGS: dense H and a limited-memory store (memory 2)",
        net=None,
        data={"d": DIM},
        setup={"memory": 2, "store_inputs": "v, then two standard normal draws after M and v"},
        seeds={"data": 6},
        order_of_operations=ACTION_STEPS,
        tolerances=TOLERANCES,
        entries=entries,
    )


# ---------------------------------------------------------------------------------------------
# Damping
# ---------------------------------------------------------------------------------------------

DAMPING_STEPS = (
    "inputs: s, y (d,), H (d, d) SPD, mu1 = 0.2, eps = mu2 = 0.3",
    "Powell: if s^T y < mu1 y^T H y: theta = (1 - mu1) y^T H y/(y^T H y - s^T y), s <- theta s + "
    "(1 - theta) H y; guarantee s^T y >= mu1 y^T H y",
    "second (2020): if s^T y < eps s^T s: theta = (1 - eps) s^T s/(s^T s - s^T y), y <- theta y + "
    "(1 - theta) s; guarantee s^T y >= eps s^T s. LM: y <- y + mu2 s",
    "double dampings: DD-2020 = Powell then second; DD-2022 = Powell then LM; convergent = "
    "Powell w.r.t. gamma I then LM",
)


def damping_updates() -> Case:
    """Every damping on a negative-curvature pair and, undamped, on a well-behaved one."""
    rng = np.random.default_rng(7)
    H = _spd(rng)
    s = rng.standard_normal(DIM)
    inputs = {
        "bad": (s, -0.5 * s + 0.1 * rng.standard_normal(DIM)),
        "good": (s, np.linalg.solve(H, s)),
    }
    mu1, eps = 0.2, 0.3
    entries = {"H": _input(H, "H (d, d)")}
    for name, (s_in, y_in) in inputs.items():
        entries[f"{name}.s"] = _input(s_in, "incoming s")
        entries[f"{name}.y"] = _input(y_in, "incoming y")
        dampings = {
            "powell": (qn.powell_damping(s_in, y_in, H, mu1=mu1), 1, "s_dot_y >= c y_H_y", mu1),
            "second": (qn.second_damping(s_in, y_in, eps=eps), 2, "s_dot_y >= c s_dot_s", eps),
            "dd2020": (
                qn.double_damping_2020(s_in, y_in, H, eps=eps, mu1=mu1),
                3,
                "s_dot_y >= c s_dot_s",
                eps,
            ),
            "dd2022": (
                qn.double_damping_2022(s_in, y_in, H, mu2=eps, mu1=mu1),
                3,
                "s_dot_y >= c s_dot_s",
                eps,
            ),
            "convergent": (
                qn.convergent_damping(s_in, y_in, gamma=1.0, mu2=eps, mu1=mu1),
                3,
                "s_dot_y >= c s_dot_s",
                eps,
            ),
        }
        if name == "good":
            dampings["lm"] = (
                qn.levenberg_marquardt_damping(s_in, y_in, mu2=eps),
                2,
                "s_dot_y >= c s_dot_s",
                eps,
            )
        for damping, (pair, order, form, c) in dampings.items():
            prefix = f"{name}.{damping}"
            guarantee = {"form": form, "c": c, "s": f"{prefix}.s_out", "y": f"{prefix}.y_out"}
            if form.endswith("y_H_y"):
                guarantee["H"] = "H"
            for role, other in (("s", "y"), ("y", "s")):
                hints = {
                    "pair": {"role": role, "partner": f"{prefix}.{other}_out"},
                    "guarantee": guarantee,
                }
                if role == "s" and damping in ("powell", "dd2020", "dd2022"):
                    hints["powell"] = {"H": "H", "s": f"{name}.s", "y": f"{name}.y", "mu1": mu1}
                entries[f"{prefix}.{role}_out"] = Entry(
                    getattr(pair, role), "update", f"damped {role}", order, hints=hints
                )
            flags = list(pair[2:])
            entries[f"{prefix}.damped"] = Entry(np.array(flags), "decision", "damping flags", order)
    return Case(
        name="damping_updates",
        kind="damping",
        description="Powell, second (2020), LM, DD-2020, DD-2022 and convergent dampings",
        net=None,
        data={"d": DIM},
        setup={
            "mu1": mu1,
            "eps": eps,
            "mu2": eps,
            "gamma": 1.0,
            "damped_flags": "[powell, second]",
        },
        seeds={"data": 7},
        order_of_operations=DAMPING_STEPS,
        tolerances=TOLERANCES,
        entries=entries,
    )
