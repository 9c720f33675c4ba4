"""K-FAC (Martens & Grosse 2015; KFC for convolutions, Grosse & Martens 2016), a K-BFGS baseline.

Per trainable layer with homogeneous weight ``W~`` of shape ``(d_out, D)`` the Fisher (or GGN) block
of the mean loss over ``vec(W~)`` (column-major, ``docs/conventions.md`` §5) is approximated by
``A kron G`` with ``A`` ``(D, D)`` on the input side and ``G`` ``(d_out, d_out)`` on the output
side; :func:`minibatch_factors` computes the minibatch factors (by default
:func:`kfqn_ref.curvature.factors.kfac_factors`, KFC for Conv2d: ``A`` sums over output positions,
``G`` averages over them; Grosse & Martens 2016 §3; ``KFACApproximation.REDUCE``: KFAC-reduce).
The running factors average them with ``beta_j = min(1 - 1/(j+1), beta)`` (``WARM_START``, the
default; ``CONSTANT``: ``beta_j = beta``).

References
----------
* Martens & Grosse (2015), "Optimizing neural networks with Kronecker-factored approximate
  curvature", ICML: §3 (the factors), §5 (exponential averages with ``min(1 - 1/k, decay)``),
  §6.3 (factored Tikhonov damping and the ``pi`` rule), §8 (inverses refreshed every ``T3 = 20``
  iterations).
* Grosse & Martens (2016), "A Kronecker-factored approximate Fisher matrix for convolution
  layers", ICML.
* [code-2020]: github renyiryry/kbfgs_neurips2020_public, ``kfac_utils.py`` and
  ``training_function.py``: the K-FAC baseline of the K-BFGS paper (decay 0.9, inverses every 20
  steps, momentum 0.9 on the gradient, weight decay 1e-5, driver defaults ``lr = 0.3``,
  ``lambda = 0.3``).
* [code-cnn]: github renyiryry/tnt_neurips_2021 (early commits): the 2022 paper's baseline settings.

"""

from __future__ import annotations

import dataclasses
import enum
import math
from collections.abc import Callable, Iterable
from typing import NamedTuple

import numpy as np

from kfqn_ref import _checks, backend, nn
from kfqn_ref._checks import check_in_interval, check_int, check_non_negative, check_positive
from kfqn_ref.backend import Array
from kfqn_ref.curvature.factors import (
    FisherType,
    KroneckerFactors,
    input_factor,
    kfac_factors_of_records,
    output_factor,
)
from kfqn_ref.optim.base import Optimizer, check_loss_and_gradients, check_new_state, store_choice
from kfqn_ref.optim.first_order import (
    MomentumForm,
    apply_steps,
    momentum_update,
    zeros_like_weights,
)
from kfqn_ref.optim.kbfgs_factors import damped_inverse, running_mean


class KFACDampingSplit(enum.Enum):
    """How K-FAC shares the damping ``lambda`` between its two running factors ``A`` and ``G``.

    K-FAC holds ``A`` and ``G`` themselves, so it can balance by their traces; K-BFGS holds only
    inverse estimates and splits by the number of output positions instead
    (:class:`~kfqn_ref.optim.kbfgs.KBFGSDampingSplit`).

    ``PI``: ``(A + pi sqrt(lambda) I) kron (G + sqrt(lambda)/pi I)`` with
    ``pi = sqrt((tr A / dim A) / (tr G / dim G))`` (Martens & Grosse 2015, §6.3).
    ``EQUAL``: ``pi = 1``, i.e. ``sqrt(lambda)`` on each factor (the K-BFGS authors' K-FAC baseline
    [code-2020]).
    """

    PI = "pi"
    EQUAL = "equal"


class KFACAveraging(enum.Enum):
    """How the running factors average the minibatch estimates (update ``j``, from 0).

    ``WARM_START`` ("warm_start"): ``beta_j = min(1 - 1/(j+1), beta)`` (Martens & Grosse 2015, §5):
    the first update replaces the zero factors, the early ones are plain means.
    ``CONSTANT`` ("constant"): ``beta_j = beta`` from zero factors, or from the pre-pass
    :meth:`KFAC.initialize_factors` (the K-BFGS authors' K-FAC baseline [code-2020], as
    :meth:`kfqn_ref.optim.KBFGS.initialize_A` for K-BFGS).
    """

    WARM_START = "warm_start"
    CONSTANT = "constant"


class KFACApproximation(enum.Enum):
    """The factors of a conv layer with ``P`` output positions (Eschenhagen et al. 2023).

    ``EXPAND`` ("expand", KFC): ``A = (1/N) sum_n sum_p a~ a~^T``, ``G = (1/(N P)) sum_n sum_p
    g g^T``. ``REDUCE`` ("reduce"): ``A = (1/N) sum_n abar_n abar_n^T`` with ``abar_n = (1/P)
    sum_p a~_{n,p}``, ``G = (1/N) sum_n gsum_n gsum_n^T`` with ``gsum_n = sum_p g_{n,p}``
    (curvlinops ``KFACType.REDUCE``). Both agree on dense layers (``P = 1``).
    """

    EXPAND = "expand"
    REDUCE = "reduce"


#: ``source(z, draw) -> targets``: the Monte-Carlo targets of draw ``draw`` at network outputs
#: ``z`` (:class:`KFAC`'s ``target_source``).
TargetSource = Callable[[Array, int], Array]


@dataclasses.dataclass(frozen=True)
class KFACConfig:
    """Options of :class:`KFAC` (defaults and their sources).

    lr : float > 0
        Learning rate ``alpha``; 0.3, the K-BFGS paper driver's default [code-2020].
    damping : float > 0
        ``lambda`` of the factored Tikhonov damping; 0.3, the same driver's default [code-2020].
    ema_decay : float in [0, 1)
        ``beta``, the decay of the running factors; 0.9 (``kfac_rho`` [code-2020]).
    factor_interval : int >= 1
        The running factors are updated every ``factor_interval`` steps; 1 (Martens & Grosse 2015,
        §5, update the estimates at every iteration; ``kfac_cov_update_freq = 1`` [code-cnn]).
    inverse_interval : int >= 1
        The damped factors are re-inverted every ``inverse_interval`` steps; 20 (Martens & Grosse
        2015, ``T3 = 20``; ``kfac_inverse_update_freq`` [code-2020]).
    momentum : float in [0, 1)
        ``mu`` of the momentum on the gradient; 0.9 (``momentum_gradient_rho`` [code-2020]).
    momentum_form : MomentumForm
        ``AVERAGE`` (``m <- mu m + (1 - mu) d``, [code-2020]).
    weight_decay : float >= 0
        ``tau`` of the coupled L2 term; 1e-5 (``tau`` [code-2020]).
    fisher : FisherType
        Which curvature the factors estimate; ``MONTE_CARLO`` (targets sampled from the model's
        predictive distribution, Martens & Grosse 2015 §5).
    damping_split : KFACDampingSplit
        ``PI`` (Martens & Grosse 2015 §6.3).
    seed : int >= 0
        Seed of the Monte-Carlo targets; draw ``d`` (step ``k`` is draw ``k``, or ``J + k`` after a
        pre-pass over ``J`` minibatches) uses ``numpy.random.default_rng([seed, d])``, so a resumed
        run draws the same bits. Unused with a ``target_source``.
    averaging : KFACAveraging
        ``WARM_START`` (Martens & Grosse 2015 §5); ``CONSTANT`` for the K-BFGS authors' rule.
    conv_approximation : KFACApproximation
        ``EXPAND`` (KFC, Grosse & Martens 2016); ``REDUCE`` (Eschenhagen et al. 2023).
    """

    lr: float = 0.3
    damping: float = 0.3
    ema_decay: float = 0.9
    factor_interval: int = 1
    inverse_interval: int = 20
    momentum: float = 0.9
    momentum_form: MomentumForm = MomentumForm.AVERAGE
    weight_decay: float = 1e-5
    fisher: FisherType = FisherType.MONTE_CARLO
    damping_split: KFACDampingSplit = KFACDampingSplit.PI
    seed: int = 0
    averaging: KFACAveraging = KFACAveraging.WARM_START
    conv_approximation: KFACApproximation = KFACApproximation.EXPAND

    def __post_init__(self):
        check_positive("lr", self.lr)
        check_positive("damping", self.damping)
        check_in_interval("ema_decay", self.ema_decay, 0.0, 1.0, closed_low=True)
        check_int("factor_interval", self.factor_interval, minimum=1)
        check_int("inverse_interval", self.inverse_interval, minimum=1)
        check_in_interval("momentum", self.momentum, 0.0, 1.0, closed_low=True)
        store_choice(self, "momentum_form", MomentumForm)
        check_non_negative("weight_decay", self.weight_decay)
        store_choice(self, "fisher", FisherType)
        store_choice(self, "damping_split", KFACDampingSplit)
        check_int("seed", self.seed, minimum=0)
        store_choice(self, "averaging", KFACAveraging)
        store_choice(self, "conv_approximation", KFACApproximation)


class KFACState(NamedTuple):
    """Per trainable layer ``i`` (``W~`` of shape ``(d_out, D)``).

    momentum[i] : ``(d_out, D)``, the momentum buffer ``m``.
    A[i], G[i] : ``(D, D)`` and ``(d_out, d_out)``, the running factors (zero before step 0).
    A_inv[i], G_inv[i] : the inverses of the damped factors at the last refresh (zero before
        step 0), ``(A + pi sqrt(lambda) I)^-1`` and ``(G + sqrt(lambda)/pi I)^-1``.
    prepassed : the number ``J`` of minibatches of :meth:`KFAC.initialize_factors` (0 without).
    """

    momentum: tuple
    A: tuple
    G: tuple
    A_inv: tuple
    G_inv: tuple
    prepassed: int = 0


def split_damping(
    A: Array, G: Array, damping: float, split: KFACDampingSplit
) -> tuple[float, float]:
    """Return ``(lambda_A, lambda_G) = (pi sqrt(lambda), sqrt(lambda) / pi)``.

    ``pi = sqrt((tr A / dim A) / (tr G / dim G))`` for ``KFACDampingSplit.PI`` (Martens & Grosse
    2015, §6.3), ``pi = 1`` for ``KFACDampingSplit.EQUAL`` and for ``PI`` when a trace is 0 (a
    zero factor: dead ReLUs, a zero input; ``docs/reliability.md``). The product
    ``lambda_A lambda_G = lambda``.
    """
    pi = 1.0
    if split is KFACDampingSplit.PI:
        xp = backend.xp_of(A)
        mean_eigen_A = backend.host_scalar(xp.trace(A)) / A.shape[0]
        mean_eigen_G = backend.host_scalar(xp.trace(G)) / G.shape[0]
        if mean_eigen_A > 0.0 and mean_eigen_G > 0.0:
            pi = float(np.sqrt(mean_eigen_A / mean_eigen_G))
            if not 0.0 < pi < math.inf:  # the ratio under- or overflowed; its roots do not
                pi = math.sqrt(mean_eigen_A) / math.sqrt(mean_eigen_G)
    root = float(np.sqrt(damping))
    return pi * root, root / pi


def damped_inverses(
    A: Array, G: Array, damping: float, split: KFACDampingSplit
) -> tuple[Array, Array]:
    """Return ``((A + lambda_A I)^-1, (G + lambda_G I)^-1)`` with :func:`split_damping`'s shares."""
    lambda_A, lambda_G = split_damping(A, G, damping, split)
    return damped_inverse(A, lambda_A), damped_inverse(G, lambda_G)


def fisher_output_gradients(loss, z: Array, T, fisher: FisherType, drawn) -> list[Array]:
    """The per-sample output gradients ``(N, C)`` a Fisher type backpropagates.

    ``EMPIRICAL``: ``[dl_n/dz_n at T]``; ``MONTE_CARLO``: ``[dl_n/dz_n at the drawn targets]``;
    ``TYPE2``: the columns ``S[:, :, k]`` of the loss-Hessian root ``S_n S_n^T = d2 l_n/dz_n^2``.
    No checks: ``z`` is a checked forward pass's output, ``T`` and ``drawn`` are checked against it
    (:meth:`KFAC.draw_targets` checks the targets of a ``target_source``; its own draws are valid
    by construction).
    """
    if fisher is FisherType.EMPIRICAL:
        return [loss.output_gradient_unchecked(z, T)]
    if fisher is FisherType.MONTE_CARLO:
        return [loss.output_gradient_unchecked(z, drawn)]
    root = loss.output_hessian_sqrt_unchecked(z, T)
    return [root[:, :, k] for k in range(root.shape[2])]


def kfac_reduce_factors(input_records, output_records_per_set) -> list[KroneckerFactors]:
    """KFAC-reduce factors of every trainable layer (:class:`KFACApproximation`).

    ``A = input_factor(mean_p a~)`` from ``input_records``; ``G`` sums ``output_factor(sum_p g)``
    over ``output_records_per_set``, the records of the backward pass of each set of output
    gradients (:func:`fisher_output_gradients`). Dense records have ``P = 1``.
    """

    def reduce(x, over_positions):
        return over_positions(x, axis=1) if x.ndim == 3 else x

    factors = []
    for position, record in enumerate(input_records):
        xp = backend.xp_of(record.a)
        G = sum(
            output_factor(reduce(records[position].g, xp.sum)) for records in output_records_per_set
        )
        factors.append(KroneckerFactors(input_factor(reduce(record.a, xp.mean)), G))
    return factors


def minibatch_factors(
    model,
    forward_pass,
    T,
    fisher: FisherType,
    drawn,
    approximation: KFACApproximation,
    *,
    true_target_records=None,
) -> list[KroneckerFactors]:
    """The minibatch factors of :class:`KFAC` (``drawn``: the Monte-Carlo targets, or ``None``).

    ``EXPAND`` is :func:`kfqn_ref.curvature.kfac_factors` (its core
    :func:`~kfqn_ref.curvature.factors.kfac_factors_of_records`); the Monte-Carlo factors are its
    empirical factors at the drawn targets. Each set of :func:`fisher_output_gradients` is
    backpropagated once (no weight gradients), except that the empirical ``G`` reuses
    ``true_target_records``, the records of the gradient's backward pass at ``T``, when given.
    ``forward_pass`` must be checked (finite ``z``) and ``T``, ``drawn`` checked against it.
    """
    if fisher is FisherType.EMPIRICAL and true_target_records is not None:
        per_set = [true_target_records]
    else:
        per_set = [
            model.backward_pass_unchecked(forward_pass, gradients, weight_gradients=False)
            for gradients in fisher_output_gradients(model.loss, forward_pass.z, T, fisher, drawn)
        ]
    if approximation is KFACApproximation.REDUCE:
        return kfac_reduce_factors(forward_pass.records, per_set)
    return kfac_factors_of_records(forward_pass.records, per_set)


def factor_decay(update_index: int, ema_decay: float) -> float:
    """Decay of the ``update_index``-th factor update (0-based): ``min(1 - 1/(j+1), beta)``.

    Martens & Grosse (2015, §5) use ``min(1 - 1/k, decay)`` with ``k`` counted from 1; the first
    update therefore replaces the (zero) initial factors by the minibatch estimate, and the early
    updates are plain means of the estimates so far.
    """
    return min(1.0 - 1.0 / (update_index + 1), ema_decay)


class KFAC(Optimizer):
    r"""K-FAC with factored Tikhonov damping, fixed learning rate and momentum on the gradient.

    Step ``k`` on minibatch ``(X, T)``, per trainable layer (``W~`` of shape ``(d_out, D)``)::

        d_k = grad f(W~_k) + tau W~_k                            (d_out, D)
        if k % factor_interval == 0:  (j = number of earlier factor updates)
            A_B, G_B = minibatch_factors(...)                     (D, D), (d_out, d_out)
            beta_j = min(1 - 1/(j+1), beta)       (WARM_START; CONSTANT: beta_j = beta)
            A <- beta_j A + (1 - beta_j) A_B,   G <- beta_j G + (1 - beta_j) G_B
        if k % inverse_interval == 0:
            pi = sqrt((tr A / D) / (tr G / d_out))                 (KFACDampingSplit.PI)
            A_inv = (A + pi sqrt(lambda) I)^-1,  G_inv = (G + sqrt(lambda)/pi I)^-1
        m_k = mu m_{k-1} + c d_k          c = 1 - mu (AVERAGE) or 1 (HEAVY_BALL), m_{-1} = 0
        p_k = G_inv m_k A_inv             = unvec(((A + ..) kron (G + ..))^-1 vec(m_k))
        W~_{k+1} = W~_k - alpha p_k

    Momentum is applied to the gradient before preconditioning, as in the K-BFGS authors' K-FAC
    baseline [code-2020] (Martens & Grosse 2015 instead fit the step size and momentum with a
    quadratic model; this reference keeps both fixed, as the K-BFGS papers' comparisons do).
    Tested by ``tests/optim/test_baselines.py::test_kfac_matches_dense_kronecker_solve``.

    The Monte-Carlo targets of step ``k`` are draw ``k``, or draw ``J + k`` after a pre-pass
    :meth:`initialize_factors` over ``J`` minibatches (which used draws ``0 .. J-1``).
    ``target_source`` (a :data:`TargetSource`) replaces the Monte-Carlo draws
    ``loss.sample_targets(z, default_rng([seed, draw]))``: it is called as ``source(z, draw)``
    and returns targets for ``z``, so that recorded draws (a golden file's) can be fed back.
    """

    config_class = KFACConfig
    supported_layers = (nn.Dense, nn.Conv2d)

    def __init__(self, model, config=None, *, target_source: TargetSource | None = None, **options):
        if target_source is not None and not callable(target_source):
            raise TypeError(
                "target_source must be a callable (z, draw) -> targets or None, got "
                f"{_checks.describe(target_source)}"
            )
        self.target_source = target_source
        super().__init__(model, config, **options)

    def draw_targets(self, z: Array, draw: int):
        """The Monte-Carlo targets of draw ``draw`` at outputs ``z`` (from ``target_source``)."""
        if self.target_source is None:
            rng = np.random.default_rng([self.config.seed, draw])
            return self.model.loss.sample_targets_unchecked(z, rng)
        targets = self.target_source(z, draw)
        self.model.loss.check_targets(z, targets)
        return targets

    def initialize_factors(self, batches: Iterable) -> int:
        """The factor pre-pass: set ``A`` and ``G`` to the mean of their minibatch estimates.

        ``batches``: an iterable of minibatches ``(X, T)``, used at the current weights before
        the first step (needs ``averaging=CONSTANT``); the mean is the running mean
        ``A <- ((j-1)/j) A + (1/j) A_j``, as :meth:`kfqn_ref.optim.KBFGS.initialize_A`. Monte-Carlo
        targets are draws ``0 .. J-1``; step ``k`` then makes draw ``J + k``. Returns ``J``.

        Raises ``TypeError`` for a single array or a batch that is not a pair, ``ValueError``
        after the first step, with warm-start averaging or without a minibatch, and
        :class:`NonFiniteError` if a factor overflows (nothing is changed then).
        """
        if hasattr(batches, "shape"):
            raise TypeError("batches must be an iterable of (X, T) minibatches, not one array")
        if self.step_count != 0 or self.state.prepassed:
            raise ValueError("initialize_factors is a pre-pass before the first step, run once")
        if self.config.averaging is not KFACAveraging.CONSTANT:
            raise ValueError(
                "initialize_factors needs averaging='constant' (warm-start averaging replaces "
                "the factors at the first update)"
            )
        A, G, count = list(self.state.A), list(self.state.G), 0
        for batch in batches:
            if not isinstance(batch, tuple | list) or len(batch) != 2:
                raise TypeError(f"batches must yield (X, T) pairs, got {_checks.describe(batch)}")
            count += 1
            forward = self.model.forward_pass(batch[0])
            self.model.loss.check_targets(forward.z, batch[1])
            factors = self._batch_factors(forward, batch[1], count - 1)
            for i, f in enumerate(factors):
                A[i] = running_mean(A[i], f.A, count)
                G[i] = running_mean(G[i], f.G, count)
        if count == 0:
            raise ValueError("initialize_factors needs at least one minibatch")
        check_new_state("pre-pass A", A)
        check_new_state("pre-pass G", G)
        self.state = self.state._replace(A=tuple(A), G=tuple(G), prepassed=count)
        return count

    def _batch_factors(
        self, forward, T, draw: int, true_target_records=None
    ) -> list[KroneckerFactors]:
        """The minibatch factors of one forward pass (Monte-Carlo: draw ``draw``); ``T`` checked.

        ``true_target_records``: the records of the gradient's backward pass at ``T``, if made.
        """
        cfg = self.config
        drawn = None
        if cfg.fisher is FisherType.MONTE_CARLO:
            drawn = self.draw_targets(forward.z, draw)
        return minibatch_factors(
            self.model,
            forward,
            T,
            cfg.fisher,
            drawn,
            cfg.conv_approximation,
            true_target_records=true_target_records,
        )

    def _initial_state(self) -> KFACState:
        weights = self.model.weights()
        xp = backend.xp_of(weights[0])
        A = tuple(xp.zeros((w.shape[1], w.shape[1]), dtype=w.dtype) for w in weights)
        G = tuple(xp.zeros((w.shape[0], w.shape[0]), dtype=w.dtype) for w in weights)
        return KFACState(momentum=zeros_like_weights(self.model), A=A, G=G, A_inv=A, G_inv=G)

    def _step(self, X, T):
        cfg = self.config
        state = self.state
        k = self.step_count
        loss, weights, regularised, batch_factors = self._gradients_and_factors(X, T)
        if k % cfg.factor_interval == 0:
            state = self._average_factors(state, batch_factors)
        if k % cfg.inverse_interval == 0:
            state = self._refresh_inverses(state)
        momentum = tuple(
            momentum_update(m, d, cfg.momentum, cfg.momentum_form)
            for m, d in zip(state.momentum, regularised, strict=True)
        )
        steps = [
            G_inv @ m @ A_inv
            for m, A_inv, G_inv in zip(momentum, state.A_inv, state.G_inv, strict=True)
        ]
        apply_steps(self.model, weights, steps, cfg.lr)
        return loss, state._replace(momentum=momentum)

    def _gradients_and_factors(self, X, T):
        """Loss, weights, regularised gradients and (on factor steps) the minibatch factors.

        One forward pass serves both the gradient (true targets) and the factors.
        """
        cfg = self.config
        model = self.model
        forward = model.forward_pass(X)
        model.loss.check_targets(forward.z, T)  # z is finite (forward_pass checked it)
        loss = model.loss.value_unchecked(forward.z, T)
        output_gradients = model.loss.output_gradient_unchecked(forward.z, T)
        records = model.backward_pass_unchecked(forward, output_gradients)
        check_loss_and_gradients(loss, [r.grad for r in records])
        weights = forward.weights  # the model's arrays: read only
        regularised = [r.grad + cfg.weight_decay * w for r, w in zip(records, weights, strict=True)]
        batch_factors = None
        if self.step_count % cfg.factor_interval == 0:
            draw = self.state.prepassed + self.step_count
            batch_factors = self._batch_factors(forward, T, draw, true_target_records=records)
        return loss, weights, regularised, batch_factors

    def _average_factors(self, state: KFACState, batch_factors) -> KFACState:
        """Exponential averages of the factors with the decay of :class:`KFACAveraging`."""
        decay = self.config.ema_decay
        if self.config.averaging is KFACAveraging.WARM_START:
            earlier_updates = -(
                -self.step_count // self.config.factor_interval
            )  # ceil(k / interval)
            decay = factor_decay(earlier_updates, self.config.ema_decay)
        A = tuple(
            decay * A + (1.0 - decay) * f.A for A, f in zip(state.A, batch_factors, strict=True)
        )
        G = tuple(
            decay * G + (1.0 - decay) * f.G for G, f in zip(state.G, batch_factors, strict=True)
        )
        check_new_state("running A", A)
        check_new_state("running G", G)
        return state._replace(A=A, G=G)

    def _refresh_inverses(self, state: KFACState) -> KFACState:
        """Invert the damped running factors (Martens & Grosse 2015, §6.3)."""
        cfg = self.config
        pairs = [
            damped_inverses(A, G, cfg.damping, cfg.damping_split)
            for A, G in zip(state.A, state.G, strict=True)
        ]
        A_inv, G_inv = tuple(p[0] for p in pairs), tuple(p[1] for p in pairs)
        check_new_state("damped inverse of A", A_inv)
        check_new_state("damped inverse of G", G_inv)
        return state._replace(A_inv=A_inv, G_inv=G_inv)
