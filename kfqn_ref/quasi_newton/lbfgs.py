"""Limited-memory BFGS: a memory of at most ``p`` pairs, initial matrix ``H_0 = gamma I``.

Equations are cited as ``[QN-n]`` from ``docs/derivations/quasi-newton.md`` section 4.

The state is an :class:`LBFGSState` of plain arrays and numbers: the pairs are the ROWS
``0 .. count-1`` of ``S`` and ``Y`` ``(p, d)``, OLDEST FIRST. When the memory ``p`` is full,
appending drops the oldest pair (a sliding window).

The same matrix ``H`` (the BFGS matrix obtained from ``gamma I`` by the stored pairs, oldest first)
is applied four ways, kept together by the tests:

* :func:`lbfgs_apply` — the product form [QN-13b], ``H = A^T D A + gamma (I - Y^T A)^T (I - Y^T A)``
  with ``A = R^-1 S`` kept up to date on every append (``O(q d)``): the fast form K-BFGS(L) uses;
* :func:`lbfgs_two_loop` — the two-loop recursion (Nocedal & Wright, Algorithm 7.4) [QN-12];
* :func:`lbfgs_compact_apply` — the compact representation of Byrd, Nocedal & Schnabel (1994),
  which the authors' ``LBFGS_Hv`` uses [QN-13];
* :func:`lbfgs_inverse_matrix` — the dense matrix by repeated dense BFGS updates [QN-11] (slow
  twin, for tests and small ``d``).

What a store derives from its pairs for the product form lives beside it, keyed on its arrays
(:func:`_store_factors`), not in the state: a loaded store rebuilds it bit for bit.

``V`` may be a vector ``(d,)`` or a matrix ``(d, k)`` whose columns are transformed: K-BFGS(L)
applies ``H_g`` to the gradient matrix ``(d_out, d_in + 1)`` as ``H_g @ grad``.

Every public function validates the store (:func:`check_lbfgs_state`: three full scans) and calls
its core ``*_unchecked``, which trusted callers such as K-BFGS(L) use directly.
"""

from __future__ import annotations

import enum
import math
import weakref
from collections.abc import Callable
from typing import NamedTuple

import numpy as np

from kfqn_ref._checks import (
    check_choice,
    check_curvature_pair,
    check_float_array,
    check_instance,
    check_int,
    check_non_negative,
    check_positive,
    check_spd_operator,
    check_vector,
)
from kfqn_ref.backend import Array, host_bool, host_scalar, resolve_dtype, to_host, xp, xp_of
from kfqn_ref.quasi_newton.bfgs import (
    AUTHORS_RELATIVE_THRESHOLD,
    SkipReason,
    apply_operator,
    curvature_skip_reason_unchecked,
)


class GammaRule(enum.Enum):
    """How ``gamma`` (``H_0 = gamma I``) evolves when a pair is accepted."""

    #: Keep ``state.gamma`` (the authors' K-BFGS(L): ``Kron_LBFGS_Hg_initial = 1``; the
    #: convergent variant needs a fixed ``gamma``).
    FIXED = "fixed"
    #: ``gamma = s^T y / y^T y`` of the newest accepted pair (Nocedal & Wright eq. 7.20; the
    #: authors' ``gamma = -1``). A rejected pair leaves ``gamma`` unchanged.
    NEWEST_PAIR = "newest_pair"


class LBFGSState(NamedTuple):
    """Limited-memory store (plain arrays and numbers).

    ``S, Y``: ``(p, d)``, rows oldest first, rows ``>= count`` zero; ``count``: number of stored
    pairs, ``0 <= count <= p``; ``gamma > 0``: ``H_0 = gamma I``.
    """

    S: object
    Y: object
    count: int
    gamma: float

    def check_loaded(self, prefix: str) -> None:
        """Ranges of a loaded store: ``0 <= count <= memory``, ``gamma > 0``, vouched-for pairs.

        The last is :func:`check_lbfgs_state`'s rule (every stored pair has ``s^T y > 0``), with
        the message naming the state entry: a store whose ``count`` claims pairs it does not hold
        is refused at load, not at the first step. Raises ``ValueError`` naming the entry, e.g.
        ``state.layers.0.H_g.count`` (:func:`kfqn_ref.optim.state_io.check_loaded_values` calls it).
        """
        memory = self.S.shape[0]
        if not 0 <= self.count <= memory:
            raise ValueError(
                f"state entry '{prefix}.count' must lie in [0, {memory}] (the memory), "
                f"got {self.count}"
            )
        check_positive(f"state entry '{prefix}.gamma'", self.gamma)
        try:
            check_lbfgs_state(self)
        except ValueError as error:
            raise ValueError(f"state entry '{prefix}': {error}") from None


class LBFGSAppend(NamedTuple):
    """Result of :func:`lbfgs_append`: the new state (the input state when rejected)."""

    state: LBFGSState
    accepted: bool
    reason: SkipReason


class CompactFactors(NamedTuple):
    """Small matrices of the compact representation [QN-13] of ``q = count`` stored pairs.

    ``S, Y``: ``(q, d)`` stored pairs (oldest first); ``R_inv``: ``(q, q)`` inverse of the upper
    triangle ``R`` of ``S Y^T`` (``R_ij = s_i^T y_j`` for ``i <= j``); ``D``: ``(q,)`` with
    ``D_i = s_i^T y_i``; ``YtY``: ``(q, q)`` Gram matrix ``Y Y^T``.
    """

    S: object
    Y: object
    R_inv: object
    D: object
    YtY: object


def lbfgs_init(dim: int, memory: int, *, gamma: float = 1.0, dtype=np.float64) -> LBFGSState:
    """Return an empty store for vectors of length ``dim``, at most ``memory`` (``p >= 1``) pairs.

    ``H = gamma I`` until the first pair is accepted. Arrays are created with the current array
    module (:func:`kfqn_ref.backend.xp`) and ``dtype`` (float64 or float32).
    """
    dim = check_int("dim", dim, minimum=1)
    memory = check_int("memory", memory, minimum=1)
    gamma = check_positive("gamma", gamma)
    zeros = xp().zeros((memory, dim), dtype=resolve_dtype(dtype))
    return LBFGSState(zeros, zeros.copy(), 0, gamma)


def lbfgs_pairs(state: LBFGSState) -> tuple[Array, Array]:
    """Return ``(S, Y)``, each ``(count, d)``: the stored pairs, oldest first."""
    return lbfgs_pairs_unchecked(check_lbfgs_state(state))


def lbfgs_pairs_unchecked(state: LBFGSState) -> tuple[Array, Array]:
    """As :func:`lbfgs_pairs`, without argument checks (for trusted callers)."""
    return state.S[: state.count], state.Y[: state.count]


def lbfgs_append(
    state: LBFGSState,
    s: Array,
    y: Array,
    *,
    gbar_norm: float = 0.0,
    relative_threshold: float = AUTHORS_RELATIVE_THRESHOLD,
    gamma_rule: GammaRule | str = GammaRule.FIXED,
) -> LBFGSAppend:
    """Append the pair ``(s, y)`` if the authors' acceptance rule holds; drop the oldest if full.

    Acceptance (``Kron_LBFGS_append_s_y``) is the complement of the BFGS skip rule [QN-5]:
    ``s^T y > relative_threshold * (s^T s) * gbar_norm`` with finite inner products, and
    ``s^T y > 0`` in any case (with ``gbar_norm = 0``, the default, just that). An acceptable pair
    is still rejected (``NON_FINITE_RESULT``) when the store with it would not be representable
    [QN-11b], so finite pairs never give a non-finite ``H``.

    ``state``: the current :class:`LBFGSState` (not modified); ``s, y``: finite ``(d,)`` of the
    state's dtype; ``gbar_norm``, ``relative_threshold``: as in
    :func:`~kfqn_ref.quasi_newton.bfgs_inverse_update`; ``gamma_rule``: a :class:`GammaRule` or its
    value. Returns ``LBFGSAppend(state, accepted, reason)`` (the input state when rejected).
    """
    check_lbfgs_state(state)
    check_curvature_pair(s, y, dim=state.S.shape[1], dtype=state.S.dtype)
    gbar_norm = check_non_negative("gbar_norm", gbar_norm)
    relative_threshold = check_non_negative("relative_threshold", relative_threshold)
    rule = check_choice("gamma_rule", gamma_rule, GammaRule)
    return lbfgs_append_unchecked(
        state, s, y, gbar_norm=gbar_norm, relative_threshold=relative_threshold, gamma_rule=rule
    )


def lbfgs_append_unchecked(
    state: LBFGSState,
    s: Array,
    y: Array,
    *,
    gbar_norm: float = 0.0,
    relative_threshold: float = AUTHORS_RELATIVE_THRESHOLD,
    gamma_rule: GammaRule = GammaRule.FIXED,
) -> LBFGSAppend:
    """As :func:`lbfgs_append`, without argument checks (for trusted callers)."""
    reason = curvature_skip_reason_unchecked(
        s, y, gbar_norm=gbar_norm, relative_threshold=relative_threshold
    )
    if reason is not SkipReason.NONE:
        return LBFGSAppend(state, False, reason)
    gamma = state.gamma
    if gamma_rule is GammaRule.NEWEST_PAIR:
        gamma = _newest_pair_gamma(s, y)
        if gamma is None:
            return LBFGSAppend(state, False, SkipReason.NON_FINITE_INNER_PRODUCT)
    memory = state.S.shape[0]
    S, Y = _with_row(state.S, state.count, s), _with_row(state.Y, state.count, y)
    candidate = LBFGSState(S, Y, min(state.count + 1, memory), gamma)
    kept = _store_factors(state)
    if state.count == memory:  # the oldest pair leaves the window
        kept = _without_oldest_pair(kept)
    with np.errstate(all="ignore"):  # an overflow makes the factors non-finite: rejected below
        factors = _extended_factors(kept, *lbfgs_pairs_unchecked(candidate))
    if not _is_representable(factors, gamma):
        return LBFGSAppend(state, False, SkipReason.NON_FINITE_RESULT)
    _remember_factors(candidate, factors)
    return LBFGSAppend(candidate, True, reason)


def lbfgs_two_loop(state: LBFGSState, V: Array) -> Array:
    """Return ``H V`` by the two-loop recursion [QN-12] (``O(p d k)`` for ``V`` ``(d, k)``).

    ::

        q = V
        for i = newest .. oldest:   alpha_i = rho_i s_i^T q;   q -= y_i alpha_i
        r = gamma q
        for i = oldest .. newest:   beta_i = rho_i y_i^T r;    r += s_i (alpha_i - beta_i)
        return r                                               (rho_i = 1 / s_i^T y_i)

    ``V``: ``(d,)`` or ``(d, k)``; the result has the shape and dtype of ``V``.
    """
    _check_operand(check_lbfgs_state(state), V)
    S, Y = lbfgs_pairs_unchecked(state)
    module = xp_of(S)
    q = _as_columns(V)
    rho = 1.0 / (S * Y).sum(axis=1)
    alphas = [None] * state.count
    for i in reversed(range(state.count)):
        alphas[i] = (rho[i] * S[i]) @ q  # rho_i first: s_i^T q alone may overflow
        q = q - module.outer(Y[i], alphas[i])
    r = state.gamma * q
    for i in range(state.count):
        beta = (rho[i] * Y[i]) @ r
        r = r + module.outer(S[i], alphas[i] - beta)
    return r.reshape(V.shape)


def lbfgs_compact_factors(state: LBFGSState) -> CompactFactors:
    """Return the small matrices of the compact representation [QN-13] (:class:`CompactFactors`)."""
    return lbfgs_compact_factors_unchecked(check_lbfgs_state(state))


def lbfgs_compact_factors_unchecked(state: LBFGSState) -> CompactFactors:
    """As :func:`lbfgs_compact_factors`, without argument checks (for trusted callers).

    Computed on each call, ``O(q^2 d + q^3)`` (``R^-1`` by a solve with ``R``): the fast path,
    :func:`lbfgs_apply`, keeps ``A = R^-1 S`` up to date instead [QN-13b].
    """
    return _compact_factors_of(*lbfgs_pairs_unchecked(state))


def lbfgs_compact_apply(state: LBFGSState, V: Array) -> Array:
    """Return ``H V`` by the compact representation of Byrd, Nocedal & Schnabel [QN-13].

    ::

        H = gamma I + [S^T  gamma Y^T] [[R^-T (D + gamma Y Y^T) R^-1,  -R^-T],
                                        [-R^-1,                         0   ]] [S; gamma Y]

    with the pairs as rows of ``S, Y`` (``(q, d)``): the authors' ``LBFGS_Hv``, and the twin of
    :func:`lbfgs_apply`. Cost ``O(q^2 d + q^3)`` for the factors (:func:`lbfgs_compact_factors`,
    on every call) and ``O(q d k + q^2 k)`` for the product. ``V``: ``(d,)`` or ``(d, k)``; the
    result has its shape.
    """
    _check_operand(check_lbfgs_state(state), V)
    return lbfgs_compact_apply_unchecked(state, V)


def lbfgs_compact_apply_unchecked(state: LBFGSState, V: Array) -> Array:
    """As :func:`lbfgs_compact_apply`, without argument checks (for trusted callers)."""
    Q = _as_columns(V)
    S, Y, R_inv, D, YtY = lbfgs_compact_factors_unchecked(state)
    SV = S @ Q
    YV = Y @ Q
    a = R_inv @ SV  # R^-1 S V
    inner = R_inv.T @ (D[:, None] * a + state.gamma * (YtY @ a) - state.gamma * YV)
    result = state.gamma * Q + S.T @ inner - state.gamma * (Y.T @ a)
    return result.reshape(V.shape)


def lbfgs_apply(state: LBFGSState, V: Array) -> Array:
    """Return ``H V`` by the product form of [QN-13] (the fast form K-BFGS(L) uses).

    With ``A = R^-1 S`` (``(q, d)``, kept up to date on every append) the compact representation
    multiplies out to [QN-13b]::

        H = A^T D A + gamma (I - Y^T A)^T (I - Y^T A)

    A store holding fewer pairs than its dimension applies it as
    ``H V = gamma u + A^T (D w - gamma Y u)`` with ``w = A V``, ``u = V - Y^T w``
    (``4 q d k`` multiply-adds, no ``q x q`` product and no ``d x d`` matrix). A store holding
    ``count >= d`` pairs forms the dense ``H`` once (``O(q d^2 + d^3)``, no more memory than
    ``S`` and ``Y``) and applies it in ``O(d^2 k)``. Both agree with :func:`lbfgs_compact_apply`
    and the dense twin to rounding (``tests/quasi_newton/test_lbfgs.py``). ``V``: ``(d,)`` or
    ``(d, k)``; the result has its shape.
    """
    _check_operand(check_lbfgs_state(state), V)
    return lbfgs_apply_unchecked(state, V)


def lbfgs_apply_unchecked(state: LBFGSState, V: Array) -> Array:
    """As :func:`lbfgs_apply`, without argument checks (for trusted callers)."""
    if state.count < state.S.shape[1]:
        return _product_form_apply(_store_factors(state), state.gamma, V)
    key = _factors_key(state)
    gamma, H = _DENSE.get(key, (None, None))
    if gamma != state.gamma:  # not formed yet, or formed for a store with another gamma
        H = _product_form_matrix(_store_factors(state), state.gamma)
        # _store_factors has remembered the factors under this key: H leaves with them
        _DENSE[key] = (state.gamma, H)
    return H @ V


def lbfgs_inverse_matrix(state: LBFGSState) -> Array:
    """Return the dense ``(d, d)`` matrix ``H`` (the slow twin of the two fast forms).

    ``gamma I`` updated by the stored pairs, oldest first, with the dense BFGS formula [QN-11],
    evaluated in the scale-safe order [QN-11c] (:func:`_dense_update`) so that it is finite
    whenever the store is (an accepted pair, [QN-11b]).
    """
    S, Y = lbfgs_pairs_unchecked(check_lbfgs_state(state))
    module = xp_of(S)
    H = state.gamma * module.eye(S.shape[1], dtype=S.dtype)
    for s, y in zip(S, Y, strict=True):
        H = _dense_update(H, s, y)
    return H


def hessian_action_lbfgs_append(
    state: LBFGSState,
    v: Array,
    M: Array | Callable,
    *,
    gbar_norm: float = 0.0,
    relative_threshold: float = AUTHORS_RELATIVE_THRESHOLD,
    gamma_rule: GammaRule | str = GammaRule.FIXED,
) -> LBFGSAppend:
    """Append a limited-memory Hessian-action pair [QN-14] for a known SPD ``M``.

    ``s = H v`` (product form [QN-13b]), ``y = M s``, then :func:`lbfgs_append`, so that
    ``H ~ M^{-1}`` without forming ``M`` or any ``(d, d)`` matrix. ``v``: ``(d,)``; ``M``: SPD
    ``(d, d)`` or a callable ``u -> M u``. The authors' ``Hessian-action-LBFGS`` passes
    ``gbar_norm = 0``.
    """
    check_lbfgs_state(state)
    check_vector("v", v, dim=state.S.shape[1], dtype=state.S.dtype)
    M = check_spd_operator("M", M, v.shape[0], v.dtype)
    gbar_norm = check_non_negative("gbar_norm", gbar_norm)
    relative_threshold = check_non_negative("relative_threshold", relative_threshold)
    rule = check_choice("gamma_rule", gamma_rule, GammaRule)
    s = _product_form_apply(_store_factors(state), state.gamma, v)
    y = apply_operator(M, s)
    return lbfgs_append_unchecked(
        state, s, y, gbar_norm=gbar_norm, relative_threshold=relative_threshold, gamma_rule=rule
    )


# ---------------------------------------------------------------------------------------------


class _StoreFactors(NamedTuple):
    """What a store keeps up to date from its ``q`` pairs for the product form [QN-13b].

    ``S, Y``: ``(q, d)`` pairs, oldest first; ``A = R^-1 S`` ``(q, d)``; ``D`` ``(q,)``,
    ``D_i = s_i^T y_i``; ``R_inv_rows2`` ``(q,)``, the squared norms of the rows of ``R^-1`` (for
    the rule [QN-11b]). ``R^-1`` itself is not kept.
    """

    S: object
    Y: object
    A: object
    D: object
    R_inv_rows2: object


#: :class:`_StoreFactors` of live stores, keyed by :func:`_factors_key` (the store's arrays are
#: not kept: they would keep themselves alive). Stores are values (their arrays are never written
#: in place), so a store's factors never change; an entry leaves when the store's ``S`` or ``Y``
#: is freed, so no key's ``id`` is reused while its entry exists.
_FACTORS: dict[tuple[int, int, int], tuple] = {}

#: ``(gamma, H)``: the dense ``H`` of live stores that :func:`lbfgs_apply` applies densely, and
#: the ``gamma`` it was formed with (the factors do not depend on ``gamma``, ``H`` does). Same
#: keys, and only for stores that have an entry in ``_FACTORS`` (whose removal removes this one).
_DENSE: dict[tuple[int, int, int], tuple] = {}


def _factors_key(state: LBFGSState) -> tuple[int, int, int]:
    return id(state.S), id(state.Y), state.count


def _forget(key) -> None:
    _FACTORS.pop(key, None)
    _DENSE.pop(key, None)


def _store_factors(state: LBFGSState) -> _StoreFactors:
    """The store's :class:`_StoreFactors`: remembered ones, else built pair by pair."""
    small = _FACTORS.get(_factors_key(state))
    if small is not None:
        return _StoreFactors(*lbfgs_pairs_unchecked(state), *small)
    factors = _built_factors(state)
    _remember_factors(state, factors)
    return factors


def _remember_factors(state: LBFGSState, factors: _StoreFactors) -> None:
    """Keep the store's factors until its ``S`` or ``Y`` is freed."""
    key = _factors_key(state)
    _FACTORS[key] = tuple(factors)[2:]
    for rows in (state.S, state.Y):
        weakref.finalize(rows, _forget, key)


def _built_factors(state: LBFGSState) -> _StoreFactors:
    """A store's factors, built pair by pair (oldest first) by :func:`_extended_factors`.

    ``O(q^2 d)`` with ``q`` Python steps: for a store met without remembered factors only.
    """
    S, Y = lbfgs_pairs_unchecked(state)
    factors = _StoreFactors(S[:0], Y[:0], S[:0], S[:0, 0], S[:0, 0])
    with np.errstate(all="ignore"):  # a loaded store was representable; no overflow to detect
        for count in range(1, state.count + 1):
            factors = _extended_factors(factors, S[:count], Y[:count])
    return factors


def _pair_dots(rows, v):
    """``rows @ v`` as one dot product per row, ``(q, d) -> (q,)``.

    Each row is summed over its own ``d`` products only, so a row's dot product does not depend on
    the other rows or on its position (a matrix-vector product may regroup by position).
    """
    return (rows * v).sum(axis=1)


def _extended_factors(kept: _StoreFactors, S, Y) -> _StoreFactors:
    """The factors of the ``q`` pairs ``S, Y`` (newest last) from ``kept``, those of ``q - 1``.

    With the newest pair ``(s, y)`` and ``delta = s^T y``, the new last column of ``R`` is
    ``[S_old y; delta]``, so (block inverse of an upper-triangular matrix, [QN-13])::

        R^-1 = [[R_old^-1, c], [0, 1 / delta]],   c = -R_old^-1 S_old y / delta = -A_old y / delta
        A = R^-1 S = [[A_old + c s^T], [s^T / delta]],   D = [D_old, delta]

    and row ``i`` of ``R^-1`` gains the entry ``c_i``. ``O(q d)``. Every entry is computed from the
    rows it belongs to: dot products row by row (:func:`_pair_dots`), and row ``i`` of ``A`` (and
    of ``R^-1``) from the pairs ``t >= i`` only, added in the order they came. So the factors of a
    window of pairs do not depend on the pairs that left it: a store rebuilt from its arrays
    (:func:`_built_factors`, a loaded state) gets them bit for bit.
    """
    module = xp_of(S)
    s, y = S[-1], Y[-1]
    delta = _pair_dots(S[-1:], y)  # (1,)
    c = -_pair_dots(kept.A, y) / delta
    inverse_delta = 1.0 / delta
    A = module.concatenate([kept.A + c[:, None] * s, inverse_delta[:, None] * s], axis=0)
    rows2 = module.concatenate([kept.R_inv_rows2 + c * c, inverse_delta * inverse_delta])
    return _StoreFactors(S, Y, A, module.concatenate([kept.D, delta]), rows2)


def _without_oldest_pair(factors: _StoreFactors) -> _StoreFactors:
    """The factors once the oldest pair has left: drop its row (exact, no arithmetic).

    Row ``i`` of ``R^-1`` and of ``A`` holds nothing of the pairs ``t < i``, and the inverse of a
    trailing block of the upper-triangular ``R`` is the trailing block of ``R^-1``.
    """
    S, Y, A, D, R_inv_rows2 = factors
    return _StoreFactors(S[1:], Y[1:], A[1:], D[1:], R_inv_rows2[1:])


def _compact_factors_of(S, Y) -> CompactFactors:
    """:class:`CompactFactors` of the pairs ``S, Y`` ``(q, d)``: ``R^-1`` by a solve with ``R``."""
    module = xp_of(S)
    S_Yt = S @ Y.T
    eye = module.eye(S.shape[0], dtype=S.dtype)
    R_inv = module.linalg.solve(module.triu(S_Yt), eye)
    return CompactFactors(S, Y, R_inv, module.diagonal(S_Yt).copy(), Y @ Y.T)


def _is_representable(factors: _StoreFactors, gamma: float) -> bool:
    """Whether the store of these factors has a finite ``H`` and finite forms (rule [QN-11b]).

    The rule: finite ``rho_i^2`` for every pair, a finite middle matrix ``M`` of the compact
    form [QN-13], and a finite ``gamma + ||M||_F max_j ||w_j||^2`` (``w_j`` the columns of
    ``[S; gamma Y]``), which bounds every entry of ``H`` and of every matrix the dense form passes
    through; why each is needed: ``docs/derivations/quasi-newton.md`` [QN-11b]. With
    ``B = D + gamma Y Y^T``, ``||M||_F^2 = ||R^-T B R^-1||_F^2 + 2 ||R^-1||_F^2``; the first term
    is bounded by ``(||R^-1||_F^2 (||D||_2 + gamma ||Y||_F^2))^2`` (``O(q d)``), and formed
    (``R^-1`` by a solve, two ``q x q`` products) only when that bound is not finite. ``A`` must
    be finite too (an overflow while extending the factors gives ``False``).
    """
    S, Y, A, D, R_inv_rows2 = factors
    module = xp_of(S)
    with np.errstate(all="ignore"):  # an overflow is what is being detected
        rho = 1.0 / D
        if not host_bool(module.isfinite(rho * rho).all() & module.isfinite(A).all()):
            return False
        gamma_Y = gamma * Y
        columns = host_scalar(((S * S).sum(axis=0) + (gamma_Y * gamma_Y).sum(axis=0)).max())
        R_inv_2 = host_scalar(R_inv_rows2.sum())
        # ||B||_F <= ||D||_2 + gamma ||Y Y^T||_F <= ||D||_2 + gamma ||Y||_F^2
        B_bound = math.sqrt(host_scalar((D * D).sum())) + gamma * host_scalar((Y * Y).sum())
        bound = R_inv_2 * B_bound  # products, not **: a float overflow is inf, not an error
        middle_norm = math.sqrt(bound * bound + 2.0 * R_inv_2)
        if not math.isfinite(gamma + middle_norm * columns):
            _, _, R_inv, _, YtY = _compact_factors_of(S, Y)
            inner = R_inv.T @ ((module.diag(D) + gamma * YtY) @ R_inv)
            middle_norm = math.sqrt(host_scalar((inner * inner).sum()) + 2.0 * R_inv_2)
    return math.isfinite(gamma + middle_norm * columns)


def _product_form_apply(factors: _StoreFactors, gamma: float, V):
    """``H V = gamma u + A^T (D w - gamma Y u)``, ``w = A V``, ``u = V - Y^T w`` [QN-13b].

    Four products with ``(q, d)`` matrices, ``4 q d k`` multiply-adds for ``V`` ``(d, k)``.
    """
    Q = _as_columns(V)
    w = factors.A @ Q
    u = Q - factors.Y.T @ w
    result = gamma * u + factors.A.T @ (factors.D[:, None] * w - gamma * (factors.Y @ u))
    return result.reshape(V.shape)


def _product_form_matrix(factors: _StoreFactors, gamma: float):
    """The dense ``H = G^T G + gamma E^T E`` of [QN-13b], ``G = D^(1/2) A``, ``E = I - Y^T A``.

    ``(d, d)``, symmetric bit for bit (each Gram product is one symmetric product) and positive
    semi-definite by construction. ``O(q d^2 + d^3)``.
    """
    module = xp_of(factors.S)
    G = module.sqrt(factors.D)[:, None] * factors.A
    E = module.eye(factors.S.shape[1], dtype=factors.S.dtype) - factors.Y.T @ factors.A
    return G.T @ G + gamma * (E.T @ E)


def _dense_update(H, s, y):
    """The expanded BFGS formula [QN-2] in a scale-safe order [QN-11c] (``s^T y > 0``).

    ::

        v = rho y,   u = H v,   H+ = H - (s u^T + u s^T) + t t^T,   t = sqrt(v^T u + rho) s

    The same terms as :func:`~kfqn_ref.quasi_newton.bfgs.bfgs_inverse_formula`
    (``rho s (Hy)^T = s u^T``, ``rho^2 y^T H y + rho = v^T u + rho``), but every intermediate
    is of the size of a term of ``H+``: ``rho^2`` and ``y^T H y`` are never formed, so the twin
    does not overflow where the matrix itself is representable.
    """
    module = xp_of(H)
    v = y / (s @ y)
    u = H @ v
    # v^T u = rho^2 y^T H y >= 0 in exact arithmetic; a value made negative by rounding counts as 0
    t = math.sqrt(max(host_scalar(v @ u), 0.0) + 1.0 / host_scalar(s @ y)) * s
    return H - (module.outer(s, u) + module.outer(u, s)) + module.outer(t, t)  # exactly symmetric


def _newest_pair_gamma(s, y) -> float | None:
    """``s^T y / y^T y`` [NW 7.20], or ``None`` if ``y^T y`` under- or overflows."""
    y_dot_y = host_scalar(y @ y)
    if not 0.0 < y_dot_y < float("inf"):
        return None
    return host_scalar(s @ y) / y_dot_y


def _with_row(rows, count: int, new_row):
    """Return the rows with ``new_row`` after the ``count`` stored ones (a new array).

    Rows are oldest first; when the array is full the oldest row leaves.
    """
    module = xp_of(rows)
    if count < rows.shape[0]:
        updated = rows.copy()
        updated[count] = new_row
        return updated
    return module.concatenate([rows[1:], new_row[None, :]], axis=0)


def _as_columns(V):
    """``V`` as a ``(d, k)`` matrix (a vector becomes one column)."""
    return V.reshape(V.shape[0], -1)


def _check_operand(state: LBFGSState, V) -> None:
    """``V``: a finite ``(d,)`` or ``(d, k)`` array of the store's ``d`` and dtype."""
    check_float_array("V", V, dtype=state.S.dtype)
    if V.ndim not in (1, 2) or V.shape[0] != state.S.shape[1]:
        raise ValueError(
            f"V must have shape ({state.S.shape[1]},) or ({state.S.shape[1]}, k), "
            f"got {tuple(V.shape)}"
        )


def check_lbfgs_state(state: LBFGSState) -> LBFGSState:
    """Return ``state`` after checking it is a store its own fields agree with.

    ``S, Y``: finite ``(p, d)`` float arrays of one dtype, ``p >= 1``; ``0 <= count <= p``;
    ``gamma > 0``; every stored pair ``i < count`` has ``s_i^T y_i > 0`` (as every accepted pair
    has), so a ``count`` that claims pairs the rows do not hold (zero rows, say) raises
    ``ValueError`` rather than a division by zero or a singular ``R``. The full scans of ``S``
    and ``Y`` are why trusted callers use the cores.
    """
    check_instance("state", state, LBFGSState)
    check_float_array("state.S", state.S, ndim=2)
    check_float_array("state.Y", state.Y, dtype=state.S.dtype, ndim=2)
    if state.Y.shape != state.S.shape or state.S.shape[0] < 1:
        raise ValueError(
            f"state.S and state.Y must share a shape (p, d) with p >= 1, got "
            f"{tuple(state.S.shape)} and {tuple(state.Y.shape)}"
        )
    check_int("state.count", state.count, minimum=0, maximum=state.S.shape[0])
    check_positive("state.gamma", state.gamma)
    S, Y = lbfgs_pairs_unchecked(state)
    with np.errstate(over="ignore"):  # an overflowing s^T y is positive
        curvatures = (S * Y).sum(axis=1)
    held = curvatures > 0
    if not host_bool(xp_of(S).all(held)):
        first = int(to_host(xp_of(S).argmin(held)))
        raise ValueError(
            f"state.count = {state.count} claims stored pairs with s^T y > 0, but pair {first} "
            f"(row {first} of state.S and state.Y) has s^T y = {host_scalar(curvatures[first])!r}"
        )
    return state
