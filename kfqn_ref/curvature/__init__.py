"""What the curvature of a small net IS, and how Kronecker-factored methods approximate it.

* :mod:`~kfqn_ref.curvature.kronecker`: column-major ``vec``/``unvec``, ``kron``, the factored
  matvec ``(A kron G) vec(X) = vec(G X A^T)`` and the nearest Kronecker product (Van Loan &
  Pitsianis).
* :mod:`~kfqn_ref.curvature.hessian`: exact Hessians and GGNs by autograd (full, per layer, per
  sample w.r.t. a layer's pre-activation) and the structure formula of a layer block.
* :mod:`~kfqn_ref.curvature.factors`: the factors ``A`` and ``G`` of KFAC/KFC and the ``A`` of
  K-BFGS.

Derivations, with the test that checks each equation: ``docs/derivations/hessian-structure.md``.
"""

from kfqn_ref.curvature.factors import (
    FisherType,
    KroneckerFactors,
    input_factor,
    kbfgs_input_factor,
    kbfgs_minibatch_action,
    kfac_factors,
    output_factor,
)
from kfqn_ref.curvature.hessian import (
    MAX_EXPLICIT_PARAMETERS,
    full_ggn,
    full_hessian,
    layer_ggn,
    layer_hessian,
    preactivation_ggns,
    preactivation_hessians,
    structure_block,
)
from kfqn_ref.curvature.kronecker import (
    NearestKronecker,
    kron,
    kron_matvec,
    nearest_kronecker,
    unvec,
    vec,
)

__all__ = [
    "MAX_EXPLICIT_PARAMETERS",
    "FisherType",
    "KroneckerFactors",
    "NearestKronecker",
    "full_ggn",
    "full_hessian",
    "input_factor",
    "kbfgs_input_factor",
    "kbfgs_minibatch_action",
    "kfac_factors",
    "kron",
    "kron_matvec",
    "layer_ggn",
    "layer_hessian",
    "nearest_kronecker",
    "output_factor",
    "preactivation_ggns",
    "preactivation_hessians",
    "structure_block",
    "unvec",
    "vec",
]
