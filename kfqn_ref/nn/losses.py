"""Losses on the network output ``z`` (N, d): value, gradient, Hessian and predictive sampling.

Conventions §6: a loss is summed over output units and averaged over the minibatch,
``f = (1/N) sum_n l(z_n, t_n)``. Each loss gives, in closed form,

* ``value(z, t)``: ``f`` (a Python float);
* ``output_gradient(z, t)``: the per-sample gradients ``dl_n/dz_n``, ``(N, d)`` (NOT divided by
  ``N``);
* ``output_hessian(z, t)``: the per-sample Hessians ``d2l_n/dz_n^2``, ``(N, d, d)``;
* ``output_hessian_sqrt(z, t)``: ``S_n`` ``(N, d, d)`` with ``S_n S_n^T = d2l_n/dz_n^2`` (exact
  GGN / "type-2" Fisher by backpropagating the columns of ``S_n``);
* ``sample_targets(z, rng)``: targets drawn from the model's predictive distribution (for
  Fisher-type curvature), with an explicit ``numpy.random.Generator``;
* ``mean_value(z, t, xp)``: ``f`` as a pure function of ``z``, written so that it also runs with
  ``xp = autograd.numpy`` (the autograd tests and the exact-Hessian code use it);
* ``check_targets(z, t)``: the check of ``z``'s form and of the targets ``t`` against it, which
  every public method taking ``t`` runs after checking ``z`` finite (``sample_targets`` takes
  no ``t`` and checks ``z`` alone).

Each public method checks its arguments and calls its core ``<method>_unchecked`` (same
signature, no checks), which trusted callers use on arguments they checked once at their edge
(``Sequential.forward_backward`` checks ``z`` when it is produced and ``t`` once). Subclasses give
the formulas by overriding the cores.

For all three losses ``z`` is the natural parameter of the predictive distribution, so the gradient
is ``mean - t`` and the Hessian is the covariance of the predictive distribution (independent of
``t``). Equations and their tests: ``docs/nn.md``.
"""

from __future__ import annotations

import numpy as np

from kfqn_ref._checks import check_float_array, check_generator, describe
from kfqn_ref.backend import SUPPORTED_DTYPES, Array, host_bool, host_scalar, to_host, xp_of
from kfqn_ref.nn.layers import sigmoid, sigmoid_pair, softplus

#: Rows of probability targets of :class:`SoftmaxCrossEntropy` must sum to 1 within this many
#: multiples of ``sqrt(machine epsilon)`` of their dtype.
PROBABILITY_SUM_TOLERANCE_IN_SQRT_EPS = 1.0


def _softmax(z):
    """Row-wise ``exp(z_i) / sum_j exp(z_j)``, shifted by the row maximum (no overflow)."""
    xp = xp_of(z)
    e = xp.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _diag_embed(v):
    """``(N, d)`` -> ``(N, d, d)`` with ``v_n`` on the diagonal of sample ``n``."""
    xp = xp_of(v)
    return v[:, :, None] * xp.eye(v.shape[1], dtype=v.dtype)


class Loss:
    """Base class: validation shared by the losses; subclasses give the formulas."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"

    # -- validation --------------------------------------------------------------------------------

    def check_targets(self, z: Array, t: Array) -> None:
        """Validate the output form of ``z`` and the targets ``t`` against it.

        ``z`` must be ``(N, d)`` with ``N >= 1`` and a float dtype (only its shape and dtype are
        read, so ``z`` may be an autograd box). Raises ``TypeError`` for non-float or mismatched
        dtypes and ``ValueError`` for wrong shapes, NaN/Inf, or targets outside the loss's domain.
        """
        name = type(self).__name__
        if len(z.shape) != 2 or z.shape[0] < 1:
            raise ValueError(
                f"{name} expects network outputs z of shape (N, d) with N >= 1, "
                f"got {tuple(z.shape)}"
            )
        if np.dtype(z.dtype) not in SUPPORTED_DTYPES:
            raise TypeError(f"{name}: network output z must be float64 or float32, got {z.dtype}")
        self._check_target_values(z, t)

    def _check_target_values(self, z, t) -> None:
        """Check float targets: ``z``'s shape and dtype, finite (subclasses may add a range)."""
        name = type(self).__name__
        check_float_array(f"{name} targets t", t, dtype=z.dtype)
        if tuple(t.shape) != tuple(z.shape):
            raise ValueError(
                f"{name} targets t must have the shape of the output z, {tuple(z.shape)}, "
                f"got {tuple(t.shape)}"
            )

    def _validated(self, z, t) -> None:
        """Check a concrete ``z`` (finite too) and ``t``: the checks of every public method."""
        check_float_array(f"{type(self).__name__}: network output z", z)
        self.check_targets(z, t)

    # -- the public interface and its cores (the formulas, per subclass) ---------------------------

    def mean_value(self, z: Array, t: Array, xp) -> Array:
        """``f = (1/N) sum_n l(z_n, t_n)`` as a pure function of ``z`` (autograd-compatible)."""
        raise NotImplementedError

    def value(self, z: Array, t: Array) -> float:
        """``f = (1/N) sum_n l(z_n, t_n)``."""
        self._validated(z, t)
        return self.value_unchecked(z, t)

    def value_unchecked(self, z: Array, t: Array) -> float:
        """As :meth:`value`, without argument checks (for trusted callers)."""
        return host_scalar(self.mean_value(z, t, xp_of(z)))

    def output_gradient(self, z: Array, t: Array) -> Array:
        """Per-sample ``dl_n/dz_n``, ``(N, d)``."""
        self._validated(z, t)
        return self.output_gradient_unchecked(z, t)

    def output_gradient_unchecked(self, z: Array, t: Array) -> Array:
        """As :meth:`output_gradient`, without argument checks (for trusted callers)."""
        return self._mean(z) - self._dense_targets(z, t)

    def output_hessian(self, z: Array, t: Array) -> Array:
        """Per-sample ``d2l_n/dz_n^2``, ``(N, d, d)``."""
        self._validated(z, t)
        return self.output_hessian_unchecked(z, t)

    def output_hessian_unchecked(self, z: Array, t: Array) -> Array:
        """As :meth:`output_hessian`, without argument checks (for trusted callers)."""
        raise NotImplementedError

    def output_hessian_sqrt(self, z: Array, t: Array) -> Array:
        """Per-sample ``S_n``, ``(N, d, d)``, with ``S_n S_n^T = d2l_n/dz_n^2``."""
        self._validated(z, t)
        return self.output_hessian_sqrt_unchecked(z, t)

    def output_hessian_sqrt_unchecked(self, z: Array, t: Array) -> Array:
        """As :meth:`output_hessian_sqrt`, without argument checks (for trusted callers)."""
        raise NotImplementedError

    def sample_targets(self, z: Array, rng: np.random.Generator) -> Array:
        """Targets drawn from the predictive distribution at ``z`` (finite ``(N, d)``, ``N >= 1``).

        The draw is the subclass's (``sample_targets_unchecked``).
        """
        check_generator("rng", rng)
        name = type(self).__name__
        check_float_array(f"{name}: network output z", z, ndim=2)
        if z.shape[0] < 1:
            raise ValueError(
                f"{name}.sample_targets expects network outputs z of shape (N, d) with N >= 1, "
                f"got {tuple(z.shape)}"
            )
        return self.sample_targets_unchecked(z, rng)

    def sample_targets_unchecked(self, z: Array, rng: np.random.Generator) -> Array:
        """As :meth:`sample_targets`, without argument checks (for trusted callers)."""
        raise NotImplementedError

    def _mean(self, z):
        """Mean of the predictive distribution, ``(N, d)``."""
        raise NotImplementedError

    def _dense_targets(self, z, t):
        """Targets as an ``(N, d)`` float array."""
        return t


class SquaredError(Loss):
    """``l(z, t) = 1/2 ||z - t||^2``; predictive distribution ``N(z, I)``.

    Gradient ``z - t``; Hessian ``I_d``; square root ``I_d``; sample ``t ~ z + N(0, I)``.
    """

    def mean_value(self, z, t, xp):
        """``f = (1/N) sum_n 1/2 ||z_n - t_n||^2``."""
        r = z - t
        return 0.5 * xp.sum(r * r) / z.shape[0]

    def _mean(self, z):
        return z

    def output_hessian_unchecked(self, z, t):
        """``I_d`` per sample."""
        xp = xp_of(z)
        n, d = z.shape
        return xp.broadcast_to(xp.eye(d, dtype=z.dtype), (n, d, d)).copy()

    def output_hessian_sqrt_unchecked(self, z, t):
        """``I_d`` per sample."""
        return self.output_hessian_unchecked(z, t)

    def sample_targets_unchecked(self, z, rng):
        """``t = z + e``, ``e ~ N(0, I)`` from ``rng.standard_normal`` (float64, then rounded)."""
        xp = xp_of(z)
        return z + xp.asarray(rng.standard_normal(z.shape)).astype(z.dtype)


class SigmoidCrossEntropy(Loss):
    """Binary cross-entropy from logits (the autoencoder loss of the K-BFGS paper).

    ``l(z, t) = sum_i [softplus(z_i) - t_i z_i] = -sum_i [t_i log s_i + (1 - t_i) log(1 - s_i)]``
    with ``s = sigmoid(z)`` and targets ``t in [0, 1]``; predictive distribution ``Bernoulli(s)``.
    Gradient ``s - t``; Hessian ``diag(s (1 - s))``; square root ``diag(sqrt(s (1 - s)))``, with
    ``1 - s = sigmoid(-z)`` from :func:`sigmoid_pair` (saturated logits: see ``docs/nn.md`` §6).
    """

    def _check_target_values(self, z, t):
        super()._check_target_values(z, t)
        xp = xp_of(t)
        if not host_bool(xp.all((t >= 0) & (t <= 1))):
            raise ValueError(
                "SigmoidCrossEntropy targets t must lie in [0, 1], got values in "
                f"[{host_scalar(t.min())}, {host_scalar(t.max())}]"
            )

    def mean_value(self, z, t, xp):
        """``f = (1/N) sum_{n,i} [logaddexp(0, z_ni) - t_ni z_ni]`` (autograd differentiates it)."""
        return xp.sum(xp.logaddexp(0, z) - t * z) / z.shape[0]

    def value_unchecked(self, z, t):
        """``f = (1/N) sum_{n,i} [softplus(z_ni) - t_ni z_ni]`` with the fast :func:`softplus`.

        ``softplus(z) = max(z, 0) + log1p(exp(-|z|))`` is what ``logaddexp(0, z)`` of
        :meth:`mean_value` evaluates, in vectorised ufuncs (several times faster).
        """
        return host_scalar(xp_of(z).sum(softplus(z) - t * z) / z.shape[0])

    def output_gradient_unchecked(self, z, t):
        """``s - t = (1 - t) s - t (1 - s)``, exact in form for ``t`` in ``{0, 1}``."""
        s, one_minus_s = sigmoid_pair(z)
        return (1 - t) * s - t * one_minus_s

    def output_hessian_unchecked(self, z, t):
        """``diag(s (1 - s))``."""
        s, one_minus_s = sigmoid_pair(z)
        return _diag_embed(s * one_minus_s)

    def output_hessian_sqrt_unchecked(self, z, t):
        """``diag(sqrt(s (1 - s)))``."""
        s, one_minus_s = sigmoid_pair(z)
        return _diag_embed(xp_of(z).sqrt(s * one_minus_s))

    def sample_targets_unchecked(self, z, rng):
        """``t_ni = 1`` if ``u_ni < sigmoid(z_ni)`` else 0, with ``u = rng.random(z.shape)``."""
        xp = xp_of(z)
        u = xp.asarray(rng.random(z.shape))
        return (u < sigmoid(z)).astype(z.dtype)


class SoftmaxCrossEntropy(Loss):
    """Multiclass cross-entropy from logits: ``l(z, t) = logsumexp(z) - t^T z``.

    Targets are class indices ``c`` (integer array ``(N,)``, meaning ``t = e_c``) or float
    probability rows ``(N, K)`` (one-hot or soft; entries in ``[0, 1]``, rows summing to 1). With
    ``p = softmax(z)`` (predictive distribution ``Categorical(p)``): gradient ``p - t``; Hessian
    ``diag(p) - p p^T``; square root ``S = diag(sqrt p) - p sqrt(p)^T`` (``S S^T = diag(p) - p p^T``
    because ``sum_i p_i = 1``).
    """

    def _check_target_values(self, z, t):
        kind = t.dtype.kind if type(t) is xp_of(t).ndarray else None  # no matrix, masked array
        if kind in ("i", "u"):
            self._check_class_indices(z, t)
        elif kind == "f":
            self._check_probabilities(z, t)
        else:
            raise TypeError(
                "SoftmaxCrossEntropy targets t must be an integer array of class indices (N,) or a "
                f"float array of probability rows (N, K), got {describe(t)}"
            )

    def _check_class_indices(self, z, t):
        n, k = z.shape
        if tuple(t.shape) != (n,):
            raise ValueError(
                f"SoftmaxCrossEntropy class-index targets t must have shape (N,) = ({n},), "
                f"got {tuple(t.shape)}"
            )
        if not host_bool(((t >= 0) & (t < k)).all()):
            raise ValueError(
                f"SoftmaxCrossEntropy class indices must lie in [0, {k - 1}] for {k} classes, got "
                f"values in [{int(to_host(t.min()))}, {int(to_host(t.max()))}]"
            )

    def _check_probabilities(self, z, t):
        super()._check_target_values(z, t)
        xp = xp_of(t)
        tolerance = PROBABILITY_SUM_TOLERANCE_IN_SQRT_EPS * float(np.sqrt(np.finfo(t.dtype).eps))
        in_range = host_bool(xp.all((t >= 0) & (t <= 1)))
        if not in_range or host_scalar(xp.max(xp.abs(t.sum(axis=1) - 1))) > tolerance:
            raise ValueError(
                "SoftmaxCrossEntropy probability targets t must have entries in [0, 1] and rows "
                f"summing to 1 (within {tolerance:.1e}); pass integer class indices of shape (N,) "
                "or one-hot/probability rows of shape (N, K)"
            )

    def _dense_targets(self, z, t):
        """Class indices ``c`` -> one-hot rows ``e_c``; probability rows unchanged."""
        if t.ndim == 2:
            return t
        return (t[:, None] == xp_of(t).arange(z.shape[1])).astype(z.dtype)

    def mean_value(self, z, t, xp):
        """``f = (1/N) sum_n [m_n + log sum_i exp(z_ni - m_n) - t_n^T z_n]``, ``m_n = max z_n``."""
        m = xp.max(z, axis=1, keepdims=True)
        log_sum_exp = m[:, 0] + xp.log(xp.sum(xp.exp(z - m), axis=1))
        return xp.sum(log_sum_exp - xp.sum(self._dense_targets(z, t) * z, axis=1)) / z.shape[0]

    def _mean(self, z):
        return _softmax(z)

    def output_hessian_unchecked(self, z, t):
        """``diag(p) - p p^T``."""
        p = _softmax(z)
        return _diag_embed(p) - p[:, :, None] * p[:, None, :]

    def output_hessian_sqrt_unchecked(self, z, t):
        """``diag(sqrt p) - p sqrt(p)^T``."""
        p = _softmax(z)
        q = xp_of(z).sqrt(p)
        return _diag_embed(q) - p[:, :, None] * q[:, None, :]

    def sample_targets_unchecked(self, z, rng):
        """Class indices ``c_n ~ Categorical(softmax(z_n))``, int64 ``(N,)``, by inverting the CDF.

        ``c_n = #{i : P_ni < u_n P_nK}`` with ``P`` the row-wise cumulative sums of ``p`` and
        ``u = rng.random(N)`` (float64); scaling by ``P_nK`` keeps ``c_n <= K - 1`` under rounding.
        """
        xp = xp_of(z)
        cumulative = xp.cumsum(_softmax(z), axis=1)
        u = xp.asarray(rng.random(z.shape[0]))
        threshold = u[:, None] * cumulative[:, -1:]
        return (cumulative < threshold).sum(axis=1).astype(np.int64)
