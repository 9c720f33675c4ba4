"""Kronecker factors ``A`` and ``G`` as the methods estimate them: KFAC/KFC and K-BFGS.

Equation numbers refer to ``docs/derivations/hessian-structure.md``. Notation (conventions §1, §4):
``a`` are the homogeneous layer inputs ``a~`` of a record, dense ``(N, D+1)`` or conv
``(N, P, D+1)`` (``P`` output positions per sample); ``g`` the per-sample output gradients
``dl_n/dh_n``, dense ``(N, d_out)`` or conv ``(N, P, c_out)``. A dense array is treated as a conv
array with one position (``P = 1``).

KFAC (Martens & Grosse 2015) approximates the Fisher/GGN block of the MEAN loss
``f = (1/N) sum_n l_n`` of a dense layer by ``A kron G`` with (eq. 11)

    A = (1/N) sum_n a~_n a~_n^T,        G = (1/N) sum_n g_n g_n^T,

and KFC (Grosse & Martens 2016, §3.1, ``Omega kron Gamma``) a conv layer's block by (eq. 14)

    A = Omega = (1/N) sum_n sum_p a~_{n,p} a~_{n,p}^T       (SUM over the P positions),
    G = Gamma = (1/(N P)) sum_n sum_p g_{n,p} g_{n,p}^T     (MEAN over the P positions).

Only the product ``A kron G`` is determined by the method; the split of the factor ``1/P`` between
``A`` and ``G`` is this module's (and KFC's) choice. curvlinops' "expand" puts it on ``A`` instead
(eq. 15, ``tests/curvature/test_reference_replay.py``).
Records must be arrays (a list is refused, not converted) holding at least one sample.
"""

from __future__ import annotations

from enum import Enum
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

from kfqn_ref._checks import check_array_like, check_choice, check_generator, is_int
from kfqn_ref.backend import Array

if TYPE_CHECKING:
    from kfqn_ref.nn import ForwardPass, Sequential

DENSE_RECORD_NDIM = 2
CONV_RECORD_NDIM = 3


class FisherType(str, Enum):
    """Which output gradients the ``G`` factor of KFAC is built from (eq. 12).

    * ``EMPIRICAL``: the gradients of the loss at the TRUE targets, ``g_n = dl_n(y_n)/dh_n``: the
      "empirical Fisher" (Kunstner, Hennig & Balles 2019, "Limitations of the empirical Fisher
      approximation"; curvlinops ``FisherType.EMPIRICAL``).
    * ``MONTE_CARLO``: the gradients at targets ``y~_n`` drawn from the model's predictive
      distribution, one draw per sample; an unbiased estimate of the true Fisher (Martens & Grosse
      2015, §5).
    * ``TYPE2``: the exact GGN ("type-2" Fisher, Martens & Grosse 2015, §5): ``G`` is built from
      ``J_n^T s_{n,k}`` for every column ``s_{n,k}`` of a square root ``S_n S_n^T = d2l_n/dz_n^2``
      of the loss Hessian, so ``sum_k g^(k) g^(k)T = J_n^T (d2l_n/dz_n^2) J_n`` exactly.
    """

    EMPIRICAL = "empirical"
    MONTE_CARLO = "monte_carlo"
    TYPE2 = "type2"


class KroneckerFactors(NamedTuple):
    """One trainable layer's factors: ``A`` ``(D+1, D+1)`` (input side), ``G`` ``(d_out, d_out)``.

    ``A kron G`` acts on the column-major ``vec(W~)`` (conventions §5).
    """

    A: np.ndarray
    G: np.ndarray


def as_positions(name: str, x: Array) -> Array:
    """View a record array as ``(N, P, d)``: dense ``(N, d)`` gets ``P = 1``, conv stays.

    ``TypeError`` if ``x`` is not an array (e.g. a list), ``ValueError`` for another number of
    dimensions or no sample (``N = 0``); the message names ``name``.
    """
    check_array_like(name, x)
    if x.ndim not in (DENSE_RECORD_NDIM, CONV_RECORD_NDIM):
        raise ValueError(
            f"{name} must be a dense record (N, d) or a conv record (N, P, d), "
            f"got shape {tuple(x.shape)}"
        )
    if x.shape[0] < 1:
        raise ValueError(
            f"{name} must hold at least one sample (first axis N >= 1), got shape {tuple(x.shape)}"
        )
    return as_positions_unchecked(x)


def as_positions_unchecked(x: Array) -> Array:
    """As :func:`as_positions`, without argument checks (for trusted callers)."""
    return x[:, None, :] if x.ndim == DENSE_RECORD_NDIM else x


def _second_moment(x, position_average: bool):
    """``(1/N) sum_n sum_p x_{n,p} x_{n,p}^T``, divided by ``P`` when ``position_average``."""
    x = as_positions_unchecked(x)
    n_samples, n_positions, width = x.shape
    rows = x.reshape(n_samples * n_positions, width)
    moment = rows.T @ rows  # one SYRK (NumPy sees the transpose of the same array), a new array
    moment /= n_samples
    if position_average and n_positions > 1:
        moment /= n_positions
    return moment


def input_factor(a: Array, *, position_average: bool = False) -> Array:
    """KFAC's input factor ``A`` (eq. 11, 14): ``(1/N) sum_n sum_p a~_{n,p} a~_{n,p}^T``.

    ``a``: dense ``(N, D+1)`` or conv ``(N, P, D+1)`` with ``N >= 1`` (:func:`as_positions`);
    returns ``(D+1, D+1)``. With ``position_average=True`` the sum over positions becomes a mean
    (divided by ``P``; the asdl and curvlinops-"expand" convention); dense arrays have ``P = 1``.
    """
    return _second_moment(as_positions("a", a), position_average)


def output_factor(g: Array, *, position_average: bool = False) -> Array:
    """KFAC's output factor ``G = (1/N) sum_n sum_p g_{n,p} g_{n,p}^T`` (eq. 11, 14).

    ``g``: dense ``(N, d_out)`` or conv ``(N, P, c_out)`` per-sample output gradients; returns
    ``(d_out, d_out)``. With ``position_average=True`` the sum over positions is divided by ``P``
    (KFC's ``Gamma``).
    """
    return _second_moment(as_positions("g", g), position_average)


def kbfgs_input_factor(a: Array, *, position_average: bool = False) -> Array:
    """K-BFGS's input factor ``A`` (eq. 16; ``docs/optimizers/kbfgs.md``), ``(D+1, D+1)``.

    Dense: ``(1/N) sum_n a~_n a~_n^T`` (Goldfarb, Ren & Bahamou 2020, the authors' code). Conv: the
    authors' KF-QN-CNN convention ``(1/N) sum_n sum_p a~_{n,p} a~_{n,p}^T`` (SUM over positions,
    mean over the minibatch); ``position_average=True`` divides by ``P`` (the asdl convention).
    These are the reductions of :func:`input_factor`; K-BFGS differs from KFAC on the ``G`` side.
    """
    return input_factor(a, position_average=position_average)


def kbfgs_input_factor_unchecked(a: Array, *, position_average: bool = False) -> Array:
    """As :func:`kbfgs_input_factor`, without argument checks (for trusted callers)."""
    return _second_moment(a, position_average)


def kbfgs_minibatch_action(a: Array, s: Array, *, position_average: bool = False) -> Array:
    """Apply the minibatch factor: ``A_B s = (1/N) sum_n sum_p a~_{n,p} (a~_{n,p}^T s)`` (eq. 17).

    Computed by two matrix-vector products with the ``(N P, D+1)`` matrix of patches, never forming
    ``A_B`` ("miniBatchADamped", ``docs/optimizers/kbfgs.md``). ``a``: dense ``(N, D+1)`` or conv
    ``(N, P, D+1)``; ``s``: ``(D+1,)``; returns ``(D+1,)``. ``position_average=True`` divides the
    result by ``P``.
    """
    as_positions("a", a)
    check_array_like("s", s)
    if s.shape != (a.shape[-1],):
        raise ValueError(
            f"s must be a vector of length D+1 = {a.shape[-1]} (the width of a), "
            f"got shape {tuple(s.shape)}"
        )
    return kbfgs_minibatch_action_unchecked(a, s, position_average=position_average)


def kbfgs_minibatch_action_unchecked(
    a: Array, s: Array, *, position_average: bool = False
) -> Array:
    """As :func:`kbfgs_minibatch_action`, without argument checks (for trusted callers)."""
    patches = as_positions_unchecked(a)
    n_samples, n_positions, width = patches.shape
    rows = patches.reshape(n_samples * n_positions, width)
    action = rows.T @ (rows @ s) / n_samples
    return action / n_positions if position_average else action


def _empirical_output_gradients(loss, z, T, rng):
    """Return the true-target gradients ``dl_n/dz_n`` ``(N, d_out)``: one set."""
    return [loss.output_gradient(z, T)]


def _monte_carlo_output_gradients(loss, z, T, rng):
    """Return the gradients at targets drawn from the predictive distribution: one set."""
    return [loss.output_gradient(z, loss.sample_targets(z, rng))]


def _type2_output_gradients(loss, z, T, rng):
    """Return the columns ``S[:, :, k]`` of the loss-Hessian root ``(N, d_out, r)``: ``r`` sets."""
    root = loss.output_hessian_sqrt(z, T)
    return [root[:, :, k] for k in range(root.shape[2])]


_OUTPUT_GRADIENTS = {
    FisherType.EMPIRICAL: _empirical_output_gradients,
    FisherType.MONTE_CARLO: _monte_carlo_output_gradients,
    FisherType.TYPE2: _type2_output_gradients,
}


def kfac_factors(
    model: Sequential,
    forward_pass: ForwardPass,
    T: Array,
    fisher: FisherType | str,
    rng: np.random.Generator | int | None = None,
) -> list[KroneckerFactors]:
    """KFAC's factors of every trainable layer: ``A kron G`` ~ that layer's Fisher/GGN block.

    The block approximated is that of the MEAN loss ``f = (1/N) sum_n l_n`` (eq. 12): dense layers
    get eq. 11, conv layers KFC's ``Omega kron Gamma`` (eq. 14; ``A`` sums over positions, ``G``
    averages over them). The output gradients ``g`` are backpropagated by ``model.backward_pass`` on
    ``forward_pass`` (no weight gradients formed), from the output gradients of ``fisher``
    (:class:`FisherType`). For ``TYPE2`` every column of ``loss.output_hessian_sqrt`` is propagated
    and their outer products are summed.

    ``forward_pass``: ``model.forward_pass(X)`` on the minibatch; ``T``: its targets (used by
    ``EMPIRICAL`` and ``TYPE2``, ignored by ``MONTE_CARLO``); ``fisher``: a :class:`FisherType` or
    its value; ``rng``: a ``numpy.random.Generator`` or an integer seed, required for
    ``MONTE_CARLO``. Returns one :class:`KroneckerFactors` per trainable layer, in network order.
    """
    fisher = check_choice("fisher", fisher, FisherType)
    if fisher is FisherType.MONTE_CARLO:
        rng = check_generator("rng", np.random.default_rng(rng) if is_int(rng) else rng)
    output_gradients = _OUTPUT_GRADIENTS[fisher](model.loss, forward_pass.z, T, rng)
    per_set = [
        model.backward_pass(forward_pass, gradients, weight_gradients=False)
        for gradients in output_gradients
    ]
    return kfac_factors_of_records(forward_pass.records, per_set)


def kfac_factors_of_records(input_records, output_records_per_set) -> list[KroneckerFactors]:
    """The core of :func:`kfac_factors`: eq. 11/14 from records already computed (no checks).

    ``input_records``: one record per trainable layer with its ``a`` (a forward pass's records);
    ``output_records_per_set``: for each set of output gradients (one for the empirical and the
    Monte-Carlo Fisher, ``r`` for type-2), the records of its backward pass, with their ``g``.
    Per layer ``A = input_factor(a)`` and ``G = sum over the sets of output_factor(g,
    position_average=True)``.
    """
    factors = []
    for position, record in enumerate(input_records):
        G = None
        for records in output_records_per_set:
            G_set = _second_moment(records[position].g, position_average=True)
            G = G_set if G is None else G + G_set
        factors.append(KroneckerFactors(_second_moment(record.a, False), G))
    return factors
