"""Kronecker factors ``A`` and ``G`` as the methods estimate them: KFAC/KFC and K-BFGS.

Equation numbers refer to ``docs/derivations/hessian-structure.md``. Notation (conventions §1, §4):
``a`` are the homogeneous layer inputs ``a~`` of a record, dense ``(N, D+1)`` or conv
``(N, T, D+1)``; ``g`` the per-sample output gradients ``dl_n/dh_n``, dense ``(N, d_out)`` or conv
``(N, T, c_out)``. A dense array is treated as a conv array with one position (``T = 1``).

KFAC (Martens & Grosse 2015) approximates the Fisher/GGN block of the MEAN loss
``f = (1/N) sum_n l_n`` of a dense layer by ``A kron G`` with (eq. 11)

    A = (1/N) sum_n a~_n a~_n^T,        G = (1/N) sum_n g_n g_n^T,

and KFC (Grosse & Martens 2016, §3.1, ``Omega kron Gamma``) a conv layer's block by (eq. 14)

    A = Omega = (1/N) sum_n sum_t a~_{n,t} a~_{n,t}^T       (SUM over the T positions),
    G = Gamma = (1/(N T)) sum_n sum_t g_{n,t} g_{n,t}^T     (MEAN over the T positions).

Only the product ``A kron G`` is determined by the method; the split of the factor ``1/T`` between
``A`` and ``G`` is this module's (and KFC's) choice. curvlinops' "expand" puts it on ``A`` instead
(eq. 15, ``tests/curvature/test_reference_replay.py``).

Inputs must be arrays (NumPy, CuPy; anything with ``shape`` and ``ndim``): a list is refused with
a ``TypeError`` naming the argument, not converted (the same rule as
:mod:`kfqn_ref.curvature.kronecker`). Records must hold at least one sample (``N >= 1``).
"""

from __future__ import annotations

import numbers
from enum import Enum
from typing import NamedTuple

import numpy as np

from kfqn_ref.curvature.kronecker import check_array

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


def as_positions(name: str, x):
    """View a record array as ``(N, T, d)``: dense ``(N, d)`` gets ``T = 1``, conv stays.

    Raises
    ------
    TypeError
        If ``x`` is not an array (e.g. a list); the message names ``name``.
    ValueError
        If ``x`` has neither 2 nor 3 dimensions, or no sample (``N = 0``); the message names
        ``name``.

    """
    check_array(name, x)
    if x.ndim not in (DENSE_RECORD_NDIM, CONV_RECORD_NDIM):
        raise ValueError(
            f"{name} must be a dense record (N, d) or a conv record (N, T, d), "
            f"got shape {tuple(x.shape)}"
        )
    if x.shape[0] < 1:
        raise ValueError(
            f"{name} must hold at least one sample (first axis N >= 1), got shape {tuple(x.shape)}"
        )
    return x[:, None, :] if x.ndim == DENSE_RECORD_NDIM else x


def _second_moment(name: str, x, position_average: bool):
    """``(1/N) sum_n sum_t x_{n,t} x_{n,t}^T``, divided by ``T`` when ``position_average``."""
    x = as_positions(name, x)
    n_samples, n_positions, width = x.shape
    rows = x.reshape(n_samples * n_positions, width)
    moment = rows.T @ rows / n_samples
    return moment / n_positions if position_average else moment


def input_factor(a, *, position_average: bool = False):
    """KFAC's input factor ``A`` (eq. 11, 14): ``(1/N) sum_n sum_t a~_{n,t} a~_{n,t}^T``.

    ``a``: dense ``(N, D+1)`` or conv ``(N, T, D+1)``; returns ``(D+1, D+1)``. With
    ``position_average=True`` the sum over positions becomes a mean (divided by ``T``; the asdl and
    curvlinops-"expand" convention). Dense arrays have ``T = 1``: the option changes nothing there.
    ``TypeError`` if ``a`` is not an array, ``ValueError`` if it is not ``(N, d)``/``(N, T, d)``
    with ``N >= 1`` (:func:`as_positions`).
    """
    return _second_moment("a", a, position_average)


def output_factor(g, *, position_average: bool = False):
    """KFAC's output factor ``G = (1/N) sum_n sum_t g_{n,t} g_{n,t}^T`` (eq. 11, 14).

    ``g``: dense ``(N, d_out)`` or conv ``(N, T, c_out)`` per-sample output gradients; returns
    ``(d_out, d_out)``. With ``position_average=True`` the sum over positions is divided by ``T``
    (KFC's ``Gamma``).
    """
    return _second_moment("g", g, position_average)


def kbfgs_input_factor(a, *, position_average: bool = False):
    """K-BFGS's input factor ``A`` (ALGORITHMS.md §3 step 3 and §4; eq. 16), ``(D+1, D+1)``.

    Dense: ``(1/N) sum_n a~_n a~_n^T`` (Goldfarb, Ren & Bahamou 2020, the authors' code). Conv: the
    authors' KF-QN-CNN convention ``(1/N) sum_n sum_t a~_{n,t} a~_{n,t}^T`` (SUM over positions,
    mean over the minibatch); ``position_average=True`` divides by ``T`` (the asdl convention).
    These are the reductions of :func:`input_factor`; K-BFGS differs from KFAC on the ``G`` side.
    """
    return input_factor(a, position_average=position_average)


def kbfgs_minibatch_action(a, s, *, position_average: bool = False):
    """Apply the minibatch factor: ``A_B s = (1/N) sum_n sum_t a~_{n,t} (a~_{n,t}^T s)`` (eq. 17).

    Computed by two matrix-vector products with the ``(N T, D+1)`` matrix of patches, never forming
    ``A_B`` (ALGORITHMS.md §4, "miniBatchADamped"). ``a``: dense ``(N, D+1)`` or conv
    ``(N, T, D+1)``; ``s``: ``(D+1,)``; returns ``(D+1,)``. ``position_average=True`` divides the
    result by ``T``.

    Raises
    ------
    TypeError
        If ``a`` or ``s`` is not an array.
    ValueError
        If ``a`` is not a record with ``N >= 1`` or ``s`` is not a vector of length ``D+1``.

    """
    patches = as_positions("a", a)
    check_array("s", s)
    n_samples, n_positions, width = patches.shape
    if s.shape != (width,):
        raise ValueError(
            f"s must be a vector of length D+1 = {width} (the width of a), "
            f"got shape {tuple(s.shape)}"
        )
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


def _resolve_fisher(fisher) -> FisherType:
    try:
        return FisherType(fisher)
    except ValueError as error:
        choices = ", ".join(repr(member.value) for member in FisherType)
        raise ValueError(f"fisher must be a FisherType ({choices}), got {fisher!r}") from error


def _resolve_rng(fisher: FisherType, rng):
    if fisher is not FisherType.MONTE_CARLO:
        return rng
    if isinstance(rng, np.random.Generator):
        return rng
    if isinstance(rng, numbers.Integral) and not isinstance(rng, bool):
        return np.random.default_rng(rng)
    raise ValueError(
        "rng must be a numpy.random.Generator or an integer seed for FisherType.MONTE_CARLO "
        f"(targets are drawn from the model's predictive distribution), got {rng!r}"
    )


def kfac_factors(model, forward_pass, T, fisher, rng=None) -> list[KroneckerFactors]:
    """KFAC's factors of every trainable layer: ``A kron G`` ~ that layer's Fisher/GGN block.

    The block approximated is that of the MEAN loss ``f = (1/N) sum_n l_n`` (eq. 12): dense layers
    get eq. 11, conv layers KFC's ``Omega kron Gamma`` (eq. 14; ``A`` sums over positions, ``G``
    averages over them). The output gradients ``g`` are backpropagated by ``model.backward_pass`` on
    ``forward_pass`` (no weight gradients formed), from the output gradients of ``fisher``
    (:class:`FisherType`). For ``TYPE2`` every column of ``loss.output_hessian_sqrt`` is propagated
    and their outer products are summed.

    Parameters
    ----------
    model:
        A :class:`kfqn_ref.nn.Sequential`.
    forward_pass:
        ``model.forward_pass(X)`` on the minibatch.
    T:
        The minibatch targets (used by ``EMPIRICAL`` and ``TYPE2``; ignored by ``MONTE_CARLO``).
    fisher:
        A :class:`FisherType` (or its value string).
    rng:
        ``numpy.random.Generator`` or integer seed; required for ``MONTE_CARLO``.

    Returns
    -------
    One :class:`KroneckerFactors` per trainable layer, in network order.

    Raises
    ------
    ValueError
        For an unknown ``fisher``, or ``MONTE_CARLO`` without ``rng``.

    """
    fisher = _resolve_fisher(fisher)
    rng = _resolve_rng(fisher, rng)
    output_gradients = _OUTPUT_GRADIENTS[fisher](model.loss, forward_pass.z, T, rng)
    input_factors = [input_factor(record.a) for record in forward_pass.records]
    output_factors_per_set = [
        [
            output_factor(record.g, position_average=True)
            for record in model.backward_pass(forward_pass, gradients, weight_gradients=False)
        ]
        for gradients in output_gradients
    ]
    output_factors = [sum(per_layer) for per_layer in zip(*output_factors_per_set, strict=True)]
    return [KroneckerFactors(A, G) for A, G in zip(input_factors, output_factors, strict=True)]
