"""Quasi-Newton building blocks: pure functions over arrays, no model inside.

What K-BFGS and K-BFGS(L) compose per Kronecker factor (``docs/derivations/quasi-newton.md``):

* :mod:`~kfqn_ref.quasi_newton.bfgs` — BFGS inverse and direct updates with the authors' skip
  rules (:class:`SkipReason`), the Hessian-action pair and update for a known SPD ``M``;
* :mod:`~kfqn_ref.quasi_newton.lbfgs` — the limited-memory store (:class:`LBFGSState`): two-loop
  recursion, compact representation, dense twin, limited-memory Hessian action;
* :mod:`~kfqn_ref.quasi_newton.damping` — Powell, the 2020 second damping, Levenberg–Marquardt and
  the double dampings DD-2020 and DD-2022;
* :mod:`~kfqn_ref.quasi_newton.convergent` — the convergent (SdLBFGS-style) variant and its
  eigenvalue bounds (``docs/derivations/convergence.md``).

Each public function checks its arguments once; the public functions that trusted callers
(K-BFGS) need have a core ``*_unchecked`` right below them in their module (not re-exported here);
``bfgs_inverse_formula`` is unchecked by design.
This package imports only :mod:`kfqn_ref.backend` and :mod:`kfqn_ref._checks`.
"""

from kfqn_ref.quasi_newton.bfgs import (
    AUTHORS_RELATIVE_THRESHOLD,
    BFGSUpdate,
    CurvaturePair,
    DirectBFGSUpdate,
    SkipReason,
    bfgs_direct_update,
    bfgs_inverse_formula,
    bfgs_inverse_update,
    curvature_skip_reason,
    hessian_action_bfgs_update,
    hessian_action_pair,
)
from kfqn_ref.quasi_newton.convergent import (
    EigenvalueBounds,
    convergent_damping,
    convergent_eigenvalue_bounds,
    convergent_lbfgs_append,
    curvature_constant,
)
from kfqn_ref.quasi_newton.damping import (
    AUTHORS_MU1,
    DampedPair,
    DoubleDampedPair,
    double_damping_2020,
    double_damping_2022,
    levenberg_marquardt_damping,
    powell_damping,
    second_damping,
)
from kfqn_ref.quasi_newton.lbfgs import (
    CompactFactors,
    GammaRule,
    LBFGSAppend,
    LBFGSState,
    hessian_action_lbfgs_append,
    lbfgs_append,
    lbfgs_apply,
    lbfgs_compact_apply,
    lbfgs_compact_factors,
    lbfgs_init,
    lbfgs_inverse_matrix,
    lbfgs_pairs,
    lbfgs_two_loop,
)

__all__ = [
    "AUTHORS_MU1",
    "AUTHORS_RELATIVE_THRESHOLD",
    "BFGSUpdate",
    "CompactFactors",
    "CurvaturePair",
    "DampedPair",
    "DirectBFGSUpdate",
    "DoubleDampedPair",
    "EigenvalueBounds",
    "GammaRule",
    "LBFGSAppend",
    "LBFGSState",
    "SkipReason",
    "bfgs_direct_update",
    "bfgs_inverse_formula",
    "bfgs_inverse_update",
    "convergent_damping",
    "convergent_eigenvalue_bounds",
    "convergent_lbfgs_append",
    "curvature_constant",
    "curvature_skip_reason",
    "double_damping_2020",
    "double_damping_2022",
    "hessian_action_bfgs_update",
    "hessian_action_lbfgs_append",
    "hessian_action_pair",
    "lbfgs_append",
    "lbfgs_apply",
    "lbfgs_compact_apply",
    "lbfgs_compact_factors",
    "lbfgs_init",
    "lbfgs_inverse_matrix",
    "lbfgs_pairs",
    "lbfgs_two_loop",
    "levenberg_marquardt_damping",
    "powell_damping",
    "second_damping",
]
