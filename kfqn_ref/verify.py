"""``kfqn-ref verify``: the derivations checked numerically on freshly drawn tiny nets and pairs.

Each check computes one identity or inequality of ``docs/derivations/`` through the package's
public functions and compares it with an independent route (autograd Hessians, an explicit
matrix square root, the closed-form bound). It reports the largest relative error (for an
inequality: the largest relative violation, 0 when it holds) and the tolerance it must stay
below. Identities that are exact in exact arithmetic are held to ``1e-10`` relative in float64
(``docs/conventions.md``, "Precision"). The same seed draws the same nets and pairs.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import numpy as np

from kfqn_ref import nn
from kfqn_ref import quasi_newton as qn
from kfqn_ref.curvature import hessian, kfac_factors, kron

#: Relative tolerance of the identities (float64; rounding of a few hundred operations).
IDENTITY_TOLERANCE = 1e-10
#: Relative slack of the inequalities (one inner product each, or an eigenvalue solve).
INEQUALITY_TOLERANCE = 1e-10


class CheckResult(NamedTuple):
    """One row of the table: the check, its largest relative error, its tolerance, the verdict."""

    name: str
    max_error: float
    tolerance: float
    passed: bool


def _relative(a: np.ndarray, b: np.ndarray) -> float:
    """``max|a - b| / max|b|`` (``max|a - b|`` when ``b = 0``)."""
    scale = float(np.max(np.abs(b)))
    return float(np.max(np.abs(a - b))) / (scale if scale > 0 else 1.0)


def _violation(value: float, bound: float) -> float:
    """How far ``value >= bound`` fails, relative to ``|bound|`` (0 when it holds)."""
    return max(0.0, bound - value) / max(abs(bound), np.finfo(float).tiny)


def _random_spd(rng: np.random.Generator, d: int) -> np.ndarray:
    """``Q diag(10^u) Q^T`` with ``Q`` orthogonal and ``u`` uniform in ``[-1, 1]``."""
    Q, _ = np.linalg.qr(rng.standard_normal((d, d)))
    return (Q * 10.0 ** rng.uniform(-1, 1, d)) @ Q.T


def _sym_sqrt(M: np.ndarray) -> np.ndarray:
    w, V = np.linalg.eigh(M)
    return (V * np.sqrt(w)) @ V.T


def _structure_error(model: nn.Sequential, X, T) -> float:
    """Largest error of ``structure_block`` against autograd's block over the trainable layers."""
    errors = []
    for record in model.forward_backward(X, T).records:
        layer = record.layer_index
        expected = hessian.layer_hessian(model, X, T, layer)
        per_sample = hessian.preactivation_hessians(model, X, T, layer)
        errors.append(_relative(hessian.structure_block(record, per_sample), expected))
    return max(errors)


def _classes(rng, n: int, k: int) -> np.ndarray:
    return rng.integers(0, k, size=n)


def dense_structure(rng: np.random.Generator) -> float:
    """Dense layer blocks: ``(1/N) sum_n a~ a~^T kron d2l/dh2`` = autograd (eq. 3)."""
    layers = [nn.Dense(3, 4), nn.Tanh(), nn.Dense(4, 3)]
    model = nn.Sequential(layers, nn.SoftmaxCrossEntropy(), seed=int(rng.integers(2**31)))
    return _structure_error(model, rng.standard_normal((5, 3)), _classes(rng, 5, 3))


def conv_structure(rng: np.random.Generator) -> float:
    """Conv layer blocks: the sum over position pairs ``(p, p')`` = autograd (eq. 4)."""
    layers = [nn.Conv2d(1, 2, 3), nn.Tanh(), nn.Flatten(), nn.Dense(2 * 3 * 3, 3)]
    model = nn.Sequential(layers, nn.SoftmaxCrossEntropy(), seed=int(rng.integers(2**31)))
    return _structure_error(model, rng.standard_normal((3, 1, 5, 5)), _classes(rng, 3, 3))


def one_position_conv_is_dense(rng: np.random.Generator) -> float:
    """A kernel covering the image (``P = 1``): the conv blocks are those of the dense net."""
    seed = int(rng.integers(2**31))
    conv_layers = [nn.Conv2d(2, 3, 3), nn.Tanh(), nn.Flatten(), nn.Dense(3, 2)]
    conv = nn.Sequential(conv_layers, nn.SquaredError(), seed=seed)
    dense = nn.Sequential([nn.Dense(18, 3), nn.Tanh(), nn.Dense(3, 2)], nn.SquaredError())
    dense.set_weights(conv.weights())
    X, T = rng.standard_normal((4, 2, 3, 3)), rng.standard_normal((4, 2))
    X_flat = X.reshape(4, -1)
    return max(
        _relative(hessian.layer_hessian(conv, X, T, i), hessian.layer_hessian(dense, X_flat, T, j))
        for i, j in ((0, 0), (3, 2))
    )


def kfac_type2_deep_linear(rng: np.random.Generator) -> float:
    """Deep linear net, squared error: type-2 ``A kron G`` = GGN block = Hessian block (eq. 13)."""
    model = nn.Sequential(
        [nn.Dense(3, 4), nn.Dense(4, 2)], nn.SquaredError(), seed=int(rng.integers(2**31))
    )
    X, T = rng.standard_normal((6, 3)), rng.standard_normal((6, 2))
    factors = kfac_factors(model, model.forward_pass(X), T, "type2")
    errors = []
    for layer, f in zip(model.trainable_indices, factors, strict=True):
        block = kron(f.A, f.G)
        errors.append(_relative(block, hessian.layer_ggn(model, X, T, layer)))
        errors.append(_relative(block, hessian.layer_hessian(model, X, T, layer)))
    return max(errors)


def bfgs_secant(rng: np.random.Generator) -> float:
    """BFGS inverse update: ``H+ y = s`` for a pair with ``s^T y > 0`` (QN-3)."""
    d = 6
    H, s = _random_spd(rng, d), rng.standard_normal(d)
    y = _random_spd(rng, d) @ s  # s^T y > 0
    return _relative(qn.bfgs_inverse_update(H, s, y).H @ y, s)


def _negative_pair(rng: np.random.Generator, d: int) -> tuple[np.ndarray, np.ndarray]:
    """A pair of negative curvature: ``y = -s + noise``."""
    s = rng.standard_normal(d)
    return s, -s + 0.1 * rng.standard_normal(d)


def powell_guarantee(rng: np.random.Generator) -> float:
    """Powell damping on a negative-curvature pair: ``s^T y >= mu1 y^T H y`` after (QN-16)."""
    H, (s, y) = _random_spd(rng, 5), _negative_pair(rng, 5)
    pair = qn.powell_damping(s, y, H, mu1=0.2)
    return _violation(pair.s @ pair.y, 0.2 * (y @ H @ y))


def double_damping_guarantee(rng: np.random.Generator) -> float:
    """DD-2022 (Powell then Levenberg-Marquardt): ``s^T y >= mu2 s^T s`` after (QN-21)."""
    H, (s, y) = _random_spd(rng, 5), _negative_pair(rng, 5)
    pair = qn.double_damping_2022(s, y, H, mu2=0.1)
    return _violation(pair.s @ pair.y, 0.1 * (pair.s @ pair.s))


def second_damping_guarantee(rng: np.random.Generator) -> float:
    """The 2020 second damping: ``s^T y >= eps s^T s`` after (QN-18)."""
    s, y = _negative_pair(rng, 5)
    pair = qn.second_damping(s, y, eps=0.3)
    return _violation(pair.s @ pair.y, 0.3 * (pair.s @ pair.s))


def convergent_bounds(rng: np.random.Generator) -> float:
    """Convergent variant: ``kappa_lo <= eig(H) <= kappa_hi`` after every append (CV-7, CV-8)."""
    gamma, mu1, mu2, memory, d = 1.0, 0.2, 0.1, 5, 4
    kappa_lo, kappa_hi = qn.convergent_eigenvalue_bounds(gamma, mu1, mu2, memory)
    state, worst = qn.lbfgs_init(d, memory, gamma=gamma), 0.0
    for _ in range(30):
        s, y = rng.standard_normal(d), rng.standard_normal(d)  # either sign of curvature
        state = qn.convergent_lbfgs_append(state, s, y, mu1=mu1, mu2=mu2).state
        eigenvalues = np.linalg.eigvalsh(qn.lbfgs_inverse_matrix(state))
        worst = max(
            worst, _violation(eigenvalues[0], kappa_lo), _violation(kappa_hi, eigenvalues[-1])
        )
    return worst


def hessian_action_projection(rng: np.random.Generator) -> float:
    """Hessian-action BFGS in the metric of ``M``: ``K+ = P K P + (I - P)`` and ``H+ M s = s``."""
    d = 5
    H, M, v = _random_spd(rng, d), _random_spd(rng, d), rng.standard_normal(d)
    H_new = qn.hessian_action_bfgs_update(H, v, M).H
    root = _sym_sqrt(M)
    u = root @ (H @ v)
    P = np.eye(d) - np.outer(u, u) / (u @ u)
    K = root @ H @ root
    return max(
        _relative(root @ H_new @ root, P @ K @ P + (np.eye(d) - P)),
        _relative(H_new @ (M @ (H @ v)), H @ v),
    )


#: The checks, in the order of the table: (name, function of a generator, tolerance).
CHECKS: tuple[tuple[str, Callable[[np.random.Generator], float], float], ...] = (
    ("Hessian block = structure formula (dense)", dense_structure, IDENTITY_TOLERANCE),
    ("Hessian block = structure formula (conv)", conv_structure, IDENTITY_TOLERANCE),
    ("conv with P = 1 position = dense", one_position_conv_is_dense, IDENTITY_TOLERANCE),
    ("KFAC type-2 exact on a deep linear net", kfac_type2_deep_linear, IDENTITY_TOLERANCE),
    ("BFGS secant equation H+ y = s", bfgs_secant, IDENTITY_TOLERANCE),
    ("Powell damping: s'y >= mu1 y'Hy", powell_guarantee, INEQUALITY_TOLERANCE),
    ("DD-2022 damping: s'y >= mu2 s's", double_damping_guarantee, INEQUALITY_TOLERANCE),
    ("2020 second damping: s'y >= eps s's", second_damping_guarantee, INEQUALITY_TOLERANCE),
    ("convergent variant: eigenvalue bounds", convergent_bounds, INEQUALITY_TOLERANCE),
    ("Hessian-action projection identity", hessian_action_projection, IDENTITY_TOLERANCE),
)


def run_checks(seed: int = 0) -> list[CheckResult]:
    """Run every check of :data:`CHECKS`, each on its own generator ``default_rng([seed, i])``."""
    results = []
    for index, (name, check, tolerance) in enumerate(CHECKS):
        error = check(np.random.default_rng([seed, index]))
        results.append(CheckResult(name, error, tolerance, bool(error <= tolerance)))
    return results


def format_table(results: list[CheckResult]) -> str:
    """The results as a plain-text table: check, max error, tolerance, ``ok`` or ``FAILED``."""
    width = max(len(r.name) for r in results)
    lines = [f"{'check':<{width}}  {'max error':>10}  {'tolerance':>10}  result"]
    for r in results:
        verdict = "ok" if r.passed else "FAILED"
        lines.append(f"{r.name:<{width}}  {r.max_error:>10.2e}  {r.tolerance:>10.0e}  {verdict}")
    failed = sum(not r.passed for r in results)
    lines.append(f"{len(results) - failed} of {len(results)} checks passed")
    return "\n".join(lines)
