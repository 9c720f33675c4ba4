"""K-BFGS and K-BFGS(L): Kronecker-factored quasi-Newton methods for Dense and Conv2d layers.

Goldfarb, Ren & Bahamou (2020) and Ren, Bahamou & Goldfarb (2022). ``docs/optimizers/kbfgs.md``
writes every variant out as equations, names each equation's test and gives the sources
([code-2020], [code-cnn], [asdl]) of every option.

Per trainable layer (``W~`` of shape ``(d_out, D1)``, records ``a~``, ``h``, ``g``) and step ``k``::

    m   = rho m + (1 - rho)(grad f + tau W~)                          momentum   (d_out, D1)
    A   = beta A + (1 - beta)(1/N) sum_n a~ a~^T       (running A: dense layers, 2020/2022)
    p   = - H_g m H_a ;   W~ <- W~ + alpha p                          direction  (d_out, D1)
    on update steps (k % update_interval == 0), a second pass at the NEW weights, same minibatch:
    s, y = mean(h) - mean(h+), mean(g) - mean(g+)   -> averaged, damped -> BFGS / L-BFGS on H_g
    s_a = H_a abar,  y_a = (A + lambda_A I) s_a     -> Hessian-action BFGS on H_a

:class:`KBFGSVariant` selects the authors' 2020 iteration (replayed to 1e-12 by
``tests/optim/test_kbfgs_replay.py``), the 2022 conv extension (the default) or the convergent
variant of ``docs/derivations/convergence.md``.
"""

from __future__ import annotations

import dataclasses
import enum
import math
from collections.abc import Iterable, Sequence
from typing import NamedTuple

import numpy as np

from kfqn_ref import _checks, backend, nn
from kfqn_ref._checks import (
    check_bool,
    check_float_array,
    check_in_interval,
    check_int,
    check_non_negative,
    check_positive,
)
from kfqn_ref.backend import Array
from kfqn_ref.curvature.factors import kbfgs_input_factor_unchecked
from kfqn_ref.optim.base import Optimizer, check_loss_and_gradients, set_new_weights, store_choice
from kfqn_ref.optim.first_order import MomentumForm, momentum_update
from kfqn_ref.optim.kbfgs_factors import (
    KBFGSVariant,
    LayerState,
    PairDiagnostics,
    damp_output_pair,
    damped_inverse,
    ema_input_factor,
    lost_positive_definiteness,
    minibatch_action,
    position_count,
    precondition,
    running_action,
    running_mean,
    sample_position_mean,
    update_input_factor,
    update_output_factor,
)
from kfqn_ref.quasi_newton import DoubleDampedPair, LBFGSState, SkipReason, lbfgs_init


class KBFGSDampingSplit(enum.Enum):
    """How K-BFGS shares ``lambda`` between the factors of a layer with ``P`` output positions.

    ``EQUAL``: ``lambda_A = lambda_G = sqrt(lambda)`` (the authors' default [code-2020],
    [code-cnn]).
    ``SQRT_T``: ``lambda_A = sqrt(lambda) sqrt(P)``, ``lambda_G = sqrt(lambda) / sqrt(P)`` ([asdl];
    named after the "SqrtT" ablation of [code-cnn]). Dense layers have ``P = 1``: both splits
    agree there. K-BFGS holds inverse estimates, not ``A`` and ``G``, so it cannot balance by
    their traces as K-FAC does (:class:`~kfqn_ref.optim.kfac.KFACDampingSplit`).
    """

    EQUAL = "equal"
    SQRT_T = "sqrt_t"


@dataclasses.dataclass(frozen=True)
class _KBFGSOptions:
    """Options shared by :class:`KBFGSConfig` and :class:`KBFGSLConfig` (docstring there)."""

    variant: KBFGSVariant = KBFGSVariant.KFQN_2022
    lr: float = 0.3
    damping: float = 0.3
    momentum: float = 0.9
    weight_decay: float = 1e-5
    a_decay: float = 0.9
    pair_decay: float = 0.9
    powell_mu1: float = 0.2
    skip_threshold: float = 1e-4
    hg_initial: float = 1.0
    update_interval: int = 1
    damping_split: KBFGSDampingSplit = KBFGSDampingSplit.EQUAL
    conv_position_average: bool = False

    def __post_init__(self):
        store_choice(self, "variant", KBFGSVariant)
        check_positive("lr", self.lr)
        check_positive("damping", self.damping)
        check_in_interval("momentum", self.momentum, 0.0, 1.0, closed_low=True)
        check_non_negative("weight_decay", self.weight_decay)
        check_in_interval("a_decay", self.a_decay, 0.0, 1.0, closed_low=True)
        check_in_interval("pair_decay", self.pair_decay, 0.0, 1.0, closed_low=True)
        check_in_interval("powell_mu1", self.powell_mu1, 0.0, 1.0)
        check_non_negative("skip_threshold", self.skip_threshold)
        check_positive("hg_initial", self.hg_initial)
        check_int("update_interval", self.update_interval, minimum=1)
        store_choice(self, "damping_split", KBFGSDampingSplit)
        check_bool("conv_position_average", self.conv_position_average)
        if self.variant is KBFGSVariant.AUTHORS_2020 and self.damping > 1.0:
            raise ValueError(
                "variant 2020 needs damping <= 1: its second damping uses "
                f"eps = sqrt(damping) in (0, 1], got damping = {self.damping}"
            )


@dataclasses.dataclass(frozen=True)
class KBFGSConfig(_KBFGSOptions):
    """Options of :class:`KBFGS` (dense ``H_g`` and ``H_a``).

    Defaults, ranges and sources: the options table of ``docs/optimizers/kbfgs.md``. Enum options
    accept their string values (``variant="2020"``).

    variant : which iteration, ``"2020"`` or ``"2022"`` (``"convergent"`` needs :class:`KBFGSL`).
    lr : ``alpha``, the step size.
    damping : ``lambda``, shared by the factors as ``damping_split`` says (2020: ``<= 1``).
    momentum : ``rho`` of ``m <- rho m + (1 - rho) d``.
    weight_decay : ``tau``, added to the gradient of ``W`` and ``b``.
    a_decay : ``beta`` of the running ``A``.
    pair_decay : decay of the averages of the ``G`` pairs (0 for full-batch training).
    powell_mu1 : Powell's ``mu1``.
    skip_threshold : ``c`` of the skip rule ``s^T y <= c (s^T s) ||gbar||``.
    hg_initial : ``H_g = hg_initial I`` at the start.
    update_interval : factors and second pass on steps ``k % update_interval == 0`` only.
    damping_split : :class:`KBFGSDampingSplit`.
    conv_position_average : divide the Conv2d ``A`` by ``P`` (else it sums over positions).
    """

    def __post_init__(self):
        store_choice(self, "variant", KBFGSVariant)
        if self.variant is KBFGSVariant.CONVERGENT:
            raise ValueError(
                "the convergent variant keeps both factors in limited memory: use "
                "KBFGSL(..., variant=KBFGSVariant.CONVERGENT, memory_light=True)"
            )
        super().__post_init__()


@dataclasses.dataclass(frozen=True)
class KBFGSLConfig(_KBFGSOptions):
    """Options of :class:`KBFGSL`: those of :class:`KBFGSConfig` plus the three below.

    memory : pairs kept by each limited-memory store.
    memory_light : ``H_a`` a limited-memory Hessian-action store too, the minibatch action for
        every layer (no ``D1 x D1`` or ``d_out x d_out`` matrix); needed by ``"convergent"``,
        refused by ``"2020"``.
    ha_initial : ``gamma`` of the limited-memory ``H_a`` store (``H_a = gamma I`` before a pair).
    """

    memory: int = 100
    memory_light: bool = False
    ha_initial: float = 1.0

    def __post_init__(self):
        super().__post_init__()
        check_int("memory", self.memory, minimum=1)
        check_bool("memory_light", self.memory_light)
        check_positive("ha_initial", self.ha_initial)
        if self.variant is KBFGSVariant.AUTHORS_2020 and self.memory_light:
            raise ValueError(
                "variant 2020 keeps H_a dense (the authors' code): memory_light "
                "needs variant 2022 or convergent"
            )
        if self.variant is KBFGSVariant.CONVERGENT and not self.memory_light:
            raise ValueError(
                "the convergent variant needs memory_light=True (both factors in "
                "limited memory, so that their eigenvalues stay bounded)"
            )
        if self.variant is KBFGSVariant.CONVERGENT and self.momentum != 0.0:
            raise ValueError(
                "the convergent variant steps along H_k grad f_k (assumption (ii) of "
                f"the theorem): set momentum=0, got momentum = {self.momentum}"
            )


class KBFGSState(NamedTuple):
    """The state of :class:`KBFGS` and :class:`KBFGSL`.

    ``layers``: one :class:`~kfqn_ref.optim.kbfgs_factors.LayerState` per trainable layer;
    ``a_prepassed``: :meth:`KBFGS.initialize_A` has set the running ``A`` (so the first update
    step does not average ``A``, [code-2020]).
    """

    layers: tuple
    a_prepassed: bool


class StepDiagnostics(NamedTuple):
    """What the last successful step computed (``opt.last_step``; not part of the state).

    step : the step index ``k``. loss : minibatch loss at the old weights.
    gradients : ``grad f`` per layer (before weight decay). directions : ``p`` per layer
    (``W~_{k+1} = W~_k + lr p``). pairs : one :class:`PairDiagnostics` per layer on update steps,
    else ``()``.
    """

    step: int
    loss: float
    gradients: tuple
    directions: tuple
    pairs: tuple


class _KroneckerBFGS(Optimizer):
    """The iteration shared by :class:`KBFGS` and :class:`KBFGSL` (they differ in ``H_g``)."""

    supported_layers = (nn.Dense, nn.Conv2d)
    #: Whether ``H_g`` is an L-BFGS store (K-BFGS(L)) rather than a dense matrix.
    limited_memory_g = False

    def __init__(self, model, config=None, **options):
        self.last_step: StepDiagnostics | None = None
        self._pending: StepDiagnostics | None = None
        super().__init__(model, config, **options)

    # -- layout decided by the configuration -------------------------------------------------
    @property
    def _memory_light(self) -> bool:
        return getattr(self.config, "memory_light", False)

    def _keeps_running_A(self, layer) -> bool:
        """Running ``A``: every layer in 2020; Dense layers in 2022 unless memory-light."""
        if self.config.variant is KBFGSVariant.AUTHORS_2020:
            return True
        return (
            self.config.variant is KBFGSVariant.KFQN_2022
            and not self._memory_light
            and isinstance(layer, nn.Dense)
        )

    def _layer(self, position: int):
        return self.model.layers[self.model.trainable_indices[position]]

    def _damping_shares(self, a) -> tuple[float, float]:
        """``(lambda_A, lambda_G)`` for a layer whose record ``a`` has ``P`` positions."""
        root = math.sqrt(self.config.damping)
        if self.config.damping_split is KBFGSDampingSplit.SQRT_T:
            scale = math.sqrt(position_count(a))
            return root * scale, root / scale
        return root, root

    # -- state --------------------------------------------------------------------------------
    def _initial_state(self) -> KBFGSState:
        if self.config.variant is KBFGSVariant.AUTHORS_2020:
            for position in range(len(self.model.trainable_indices)):
                if not isinstance(self._layer(position), nn.Dense):
                    raise TypeError(
                        "variant 2020 is the authors' code for dense nets; layers["
                        f"{self.model.trainable_indices[position]}] is a "
                        f"{type(self._layer(position)).__name__}: use variant 2022"
                    )
        layers = tuple(
            self._initial_layer_state(position, weight)
            for position, weight in enumerate(self.model.weights())
        )
        return KBFGSState(layers=layers, a_prepassed=False)

    def _initial_layer_state(self, position: int, weight) -> LayerState:
        xp = backend.xp_of(weight)
        d_out, d_in1 = weight.shape
        dtype = weight.dtype
        cfg = self.config
        if self._memory_light:
            H_a = lbfgs_init(d_in1, cfg.memory, gamma=cfg.ha_initial, dtype=dtype)
        else:
            H_a = xp.eye(d_in1, dtype=dtype)  # replaced by (A + lambda_A I)^{-1} at step 0
        if self.limited_memory_g:
            H_g = lbfgs_init(d_out, cfg.memory, gamma=cfg.hg_initial, dtype=dtype)
        else:
            H_g = cfg.hg_initial * xp.eye(d_out, dtype=dtype)
        keeps_A = self._keeps_running_A(self._layer(position))
        return LayerState(
            momentum=xp.zeros_like(weight),
            A=xp.zeros((d_in1, d_in1), dtype=dtype) if keeps_A else None,
            H_a=H_a,
            H_g=H_g,
            s_avg=xp.zeros(d_out, dtype=dtype),
            y_avg=xp.zeros(d_out, dtype=dtype),
        )

    # -- public helpers -----------------------------------------------------------------------
    def initialize_A(self, inputs: Iterable[Array]) -> int:
        """The ``A`` pre-pass of [code-2020] (``train_initialization``).

        Before the first step, set every running ``A`` to the mean over the given minibatches of
        ``(1/N) sum_n a~ a~^T`` at the current weights; the first update step then does not
        average ``A`` again.

        ``inputs``: an iterable of input arrays ``X`` (the authors use the ``floor(n/N)``
        minibatches of one epoch: ``(X for X, _ in data.minibatches(dataset, N, seed=s))``).
        The mean is the authors' running mean ``A <- ((j-1)/j) A + (1/j) A_j``. Returns the number
        of minibatches used.

        ``TypeError`` if ``inputs`` is one array rather than an iterable of minibatches;
        ``ValueError`` after the first step, with no minibatch, or when no layer keeps a running
        ``A`` (memory-light, convergent, and Conv2d layers in 2022 use the minibatch action);
        :class:`NonFiniteError` if a running ``A`` overflows. Nothing is changed when it raises.
        """
        if hasattr(inputs, "shape"):
            raise TypeError(
                "inputs must be an iterable of input arrays (minibatches), not one "
                "array: pass [X] for a single minibatch"
            )
        if self.step_count != 0:
            raise ValueError(
                "initialize_A is the pre-pass before the first step; "
                f"{self.step_count} steps were taken already"
            )
        running = [
            position
            for position, layer_state in enumerate(self.state.layers)
            if layer_state.A is not None
        ]
        if not running:
            raise ValueError(
                "no layer keeps a running A in this configuration (memory-light, "
                "convergent and Conv2d layers in 2022 use the minibatch action)"
            )
        A = {position: self.state.layers[position].A for position in running}
        count = 0
        for X in inputs:
            count += 1
            records = self.model.forward_pass(X).records
            for position in running:
                batch = kbfgs_input_factor_unchecked(records[position].a)
                A[position] = running_mean(A[position], batch, count)
        if count == 0:
            raise ValueError("initialize_A needs at least one minibatch of inputs")
        for position in running:  # before any state is written: a refused pre-pass changes nothing
            _checks.check_computed_finite(f"running A of trainable layer {position}", A[position])
        layers = tuple(
            layer_state._replace(A=A[position]) if position in A else layer_state
            for position, layer_state in enumerate(self.state.layers)
        )
        self.state = KBFGSState(layers=layers, a_prepassed=True)
        return count

    def precondition(self, matrices: Sequence[Array]) -> list[Array]:
        """``H_g M H_a`` per trainable layer with the factors held now (``M`` shaped like ``W~``).

        This is the preconditioner the next step applies to its momentum, except at step 0 of
        the 2020/2022 variants with a dense ``H_a``, which is first set to ``(A + lambda_A I)^{-1}``
        from that step's minibatch.
        """
        if len(matrices) != len(self.state.layers):
            raise ValueError(
                f"expected {len(self.state.layers)} matrices (one per trainable "
                f"layer), got {len(matrices)}"
            )
        for i, (M, weight) in enumerate(zip(matrices, self.model.weights(), strict=True)):
            check_float_array(f"matrices[{i}]", M, dtype=weight.dtype, shape=weight.shape)
        return [
            precondition(layer_state.H_g, M, layer_state.H_a)
            for layer_state, M in zip(self.state.layers, matrices, strict=True)
        ]

    def step(self, X: Array, T: Array) -> float:
        """One K-BFGS step on ``(X, T)`` (see the module docstring); returns the loss before it.

        Sets :attr:`last_step` (:class:`StepDiagnostics`) when the step succeeds.
        """
        self._pending = None
        loss = super().step(X, T)
        self.last_step = self._pending
        return loss

    # -- the iteration ------------------------------------------------------------------------
    def _step(self, X, T):
        cfg = self.config
        k = self.step_count
        update = k % cfg.update_interval == 0
        first = self.model.forward_backward(X, T)
        check_loss_and_gradients(first.loss, first.grads)
        weights = first.weights  # the model's arrays: read only
        layers, directions = [], []
        for layer_state, record, weight in zip(
            self.state.layers, first.records, weights, strict=True
        ):
            regularised = record.grad + cfg.weight_decay * weight
            momentum = momentum_update(
                layer_state.momentum, regularised, cfg.momentum, MomentumForm.AVERAGE
            )
            A, H_a = self._input_factor_for_step(layer_state, record.a, update, k)
            directions.append(-precondition(layer_state.H_g, momentum, H_a))
            layers.append(layer_state._replace(momentum=momentum, A=A, H_a=H_a))
        set_new_weights(
            self.model, [w + cfg.lr * p for w, p in zip(weights, directions, strict=True)]
        )
        pairs = ()
        if update:
            second = self._second_pass(X, T)
            updated = [
                self._update_factors(position, layer_state, old, new)
                for position, (layer_state, old, new) in enumerate(
                    zip(layers, first.records, second, strict=True)
                )
            ]
            layers = [layer_state for layer_state, _ in updated]
            pairs = tuple(diagnostics for _, diagnostics in updated)
        self._pending = StepDiagnostics(k, first.loss, tuple(first.grads), tuple(directions), pairs)
        return first.loss, KBFGSState(layers=tuple(layers), a_prepassed=self.state.a_prepassed)

    def _second_pass(self, X, T) -> list:
        """Records ``h+``, ``g+`` at the new weights on the SAME minibatch.

        Forward, then backward without weight gradients (and without evaluating the loss, which
        nothing uses). ``X`` and ``T`` were checked by the first pass of this step; the output
        ``z`` is checked where it is produced.
        """
        forward = self.model.forward_pass_unchecked(X)
        output_gradients = self.model.loss.output_gradient_unchecked(forward.z, T)
        return self.model.backward_pass_unchecked(forward, output_gradients, weight_gradients=False)

    def _input_factor_for_step(self, layer_state: LayerState, a, update: bool, k: int):
        """``(A, H_a)`` for this step's direction.

        On update steps the running ``A`` is averaged (skipped at step 0 after the pre-pass) and
        at step 0 a dense ``H_a`` is set to ``(A + lambda_A I)^{-1}`` (Conv2d in 2022: ``A`` of
        this minibatch, as [asdl]). Neither is checked here: the ``A``-side action
        ``y_a = (A + lambda_A I) s_a`` of the same update step, and the new weights for ``H_a``,
        are non-finite if they are.
        """
        A, H_a = layer_state.A, layer_state.H_a
        if not update:
            return A, H_a
        running = A is not None
        if running and not (k == 0 and self.state.a_prepassed):
            A = ema_input_factor(A, kbfgs_input_factor_unchecked(a), self.config.a_decay)
        if k == 0 and not isinstance(H_a, LBFGSState):
            first_A = (
                A
                if running
                else kbfgs_input_factor_unchecked(
                    a, position_average=self.config.conv_position_average
                )
            )
            H_a = damped_inverse(first_A, self._damping_shares(a)[0])
        return A, H_a

    def _update_factors(self, position: int, layer_state: LayerState, old, new):
        """Both curvature pairs of one layer from the records ``old`` and ``new``.

        ``old`` is the first pass, ``new`` the second pass; returns the new :class:`LayerState`
        and its :class:`PairDiagnostics`. Raises :class:`NonFiniteError` when a record or a pair
        overflows (nothing changes).
        """
        where = f"of trainable layer {position}"
        lambda_A, lambda_G = self._damping_shares(old.a)
        H_g, g_side = self._output_side(layer_state, old, new, lambda_G, where)
        H_a, a_side = self._input_side(layer_state, old.a, lambda_A, where)
        diagnostics = PairDiagnostics(*g_side, *a_side)
        new_state = layer_state._replace(
            H_a=H_a, H_g=H_g, s_avg=diagnostics.s_averaged, y_avg=diagnostics.y_averaged
        )
        return new_state, diagnostics

    def _output_side(self, layer_state: LayerState, old, new, lambda_G: float, where: str):
        """K6: the ``G`` pair, its average, damping and the update of ``H_g``.

        The pair is old minus new spatial means. Returns ``(H_g, (s_raw, y_raw, s_avg, y_avg, s,
        y, powell_damped, second_damped, SkipReason))``.
        """
        cfg = self.config
        s_raw = sample_position_mean(old.h) - sample_position_mean(new.h)
        gbar = sample_position_mean(old.g)
        y_raw = gbar - sample_position_mean(new.g)
        s_avg = cfg.pair_decay * layer_state.s_avg + (1.0 - cfg.pair_decay) * s_raw
        y_avg = cfg.pair_decay * layer_state.y_avg + (1.0 - cfg.pair_decay) * y_raw
        with np.errstate(over="ignore"):  # one check of s_avg, y_avg and the second-pass h+, g+
            _checks.check_computed_finite(
                f"G-side s^T s + y^T y {where}", s_avg @ s_avg + y_avg @ y_avg
            )
        if cfg.variant is not KBFGSVariant.CONVERGENT and lost_positive_definiteness(
            layer_state.H_g, y_avg
        ):
            damped = DoubleDampedPair(s_avg, y_avg, False, False)
            H_g, reason = layer_state.H_g, SkipReason.NON_POSITIVE_CURVATURE
        else:
            damped = damp_output_pair(
                s_avg,
                y_avg,
                layer_state.H_g,
                variant=cfg.variant,
                lambda_G=lambda_G,
                mu1=cfg.powell_mu1,
            )
            H_g, reason = update_output_factor(
                layer_state.H_g,
                damped.s,
                damped.y,
                gbar,
                variant=cfg.variant,
                skip_threshold=cfg.skip_threshold,
            )
        return H_g, (s_raw, y_raw, s_avg, y_avg, *damped, reason)

    def _input_side(self, layer_state: LayerState, a, lambda_A: float, where: str):
        """K7: the Hessian-action pair of ``A`` and the update of ``H_a``.

        The pair uses the running ``A`` or the minibatch action. Returns
        ``(H_a, (abar, s_a, y_a, SkipReason))``.
        """
        cfg = self.config
        if layer_state.A is None:  # no running A: the minibatch action
            shift = 0.0 if cfg.variant is KBFGSVariant.CONVERGENT else lambda_A  # LM adds it
            action = minibatch_action(a, shift, cfg.conv_position_average)
        else:
            action = running_action(layer_state.A, lambda_A)
        abar = sample_position_mean(a)
        H_a, s_a, y_a, reason = update_input_factor(
            layer_state.H_a,
            abar,
            _checks.finite_valued(f"A-side curvature y_a {where}", action),
            variant=cfg.variant,
            lambda_A=lambda_A,
            mu1=cfg.powell_mu1,
            skip_threshold=cfg.skip_threshold,
        )
        return H_a, (abar, s_a, y_a, reason)


class KBFGS(_KroneckerBFGS):
    """K-BFGS: dense BFGS estimates ``H_g`` ``(d_out, d_out)`` and ``H_a`` ``(D1, D1)`` per layer.

    ``opt = KBFGS(model, lr=0.3, damping=0.3)``; options: :class:`KBFGSConfig`. For minibatch
    training call :meth:`initialize_A` with one epoch of inputs before the first step (the
    authors' pre-pass). Iteration: the module docstring and ``docs/optimizers/kbfgs.md``.
    """

    config_class = KBFGSConfig


class KBFGSL(_KroneckerBFGS):
    """K-BFGS(L): ``H_g`` is an L-BFGS store of ``memory`` pairs.

    ``H_g`` has ``H_0 = hg_initial I`` (fixed), applied by the product form of the compact
    representation (:func:`~kfqn_ref.quasi_newton.lbfgs_apply`); ``H_a`` is dense,
    or a limited-memory Hessian-action store with ``memory_light=True``. Options:
    :class:`KBFGSLConfig`.
    """

    config_class = KBFGSLConfig
    limited_memory_g = True
