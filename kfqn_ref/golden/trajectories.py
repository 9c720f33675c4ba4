"""Golden trajectories: 12 optimizer steps on a fixed minibatch stream, everything recorded.

Per step ``k`` the recording holds the minibatch, the weights before the step, the loss, the
first-pass means ``hbar = mean(h)``, ``gbar = mean(g)``, the gradients, the applied change
``W~_{k+1} - W~_k`` and, read from what the optimizer exposes, its direction and curvature pairs
(``StepDiagnostics``, K-BFGS only) and every entry of its state after the step
(``state_dict()``). Array names are derived from those structures (``step03.state.layers.0.H_g``),
so a renamed state field needs no change here: re-run ``kfqn-ref golden export``.
"""

from __future__ import annotations

import dataclasses
import enum
import itertools
import math
from collections.abc import Callable

import numpy as np

from kfqn_ref import data, optim
from kfqn_ref.golden.cases import (
    CONV_INPUT_SHAPE,
    DENSE_INPUT_SHAPE,
    EXACT,
    INPUT,
    SKIP_CODES,
    conv_data,
    conv_net,
    dense_data,
    dense_net,
    net_description,
)
from kfqn_ref.golden.format import Case, Entry, Tolerance
from kfqn_ref.optim.kbfgs_factors import position_count, sample_position_mean

STEPS = 12
BATCH = 4
SAMPLES = 12

TRAJECTORY = Tolerance(
    1e-8,
    1e-12,
    "12 steps of a preconditioned iteration amplify rounding differences by the conditioning of "
    "the factors; between OpenBLAS kernels (OPENBLAS_CORETYPE) the drift measured was below 2e-12 "
    "relative, and 1e-8 stays far below any convention error, which shows at step 0 or 1",
)

#: The operations of one step, in order: the key of ``ORDER`` and the manifest's text.
_OPERATIONS = (
    ("inputs", "inputs of step k: the minibatch X_k, T_k (given)"),
    (
        "weights",
        "weights W~_k before step k (W~_0 given; stepNN with NN = 12 holds the final weights)",
    ),
    ("loss", "loss f(W~_k) on the minibatch"),
    ("means", "first-pass means over samples and positions: hbar = mean(h), gbar = mean(g)"),
    ("gradient", "gradients df/dW~ at W~_k (without weight decay)"),
    ("direction", "K-BFGS direction p_k (W~_{k+1} = W~_k + lr p_k)"),
    ("change", "applied change W~_{k+1} - W~_k"),
    (
        "second_pass",
        "K-BFGS second pass at W~_{k+1} on the SAME minibatch: hbar_new = mean(h+), "
        "gbar_new = mean(g+)",
    ),
    ("raw", "raw pairs s_raw = hbar - hbar_new, y_raw = gbar - gbar_new (old minus new)"),
    ("averaged", "averaged pairs: s_avg = beta s_avg + (1 - beta) s_raw (the same for y)"),
    ("damped", "damped pairs s, y and the damping flags (variant's double damping)"),
    ("g_update", "H_g update decision (skip code)"),
    ("abar", "A side: abar = mean(a~)"),
    ("a_pair", "A side Hessian-action pair s_a = H_a abar, y_a = (A + lambda_A I) s_a"),
    ("a_update", "H_a update decision (skip code)"),
    ("state", "the optimizer state after step k (state_dict entries)"),
)
TRAJECTORY_STEPS = tuple(text for _, text in _OPERATIONS)
ORDER = {key: i for i, (key, _) in enumerate(_OPERATIONS)}
PAIR_ORDER = {
    "s_raw": ORDER["raw"],
    "y_raw": ORDER["raw"],
    "s_averaged": ORDER["averaged"],
    "y_averaged": ORDER["averaged"],
    "g_update": ORDER["g_update"],
    "abar": ORDER["abar"],
    "s_a": ORDER["a_pair"],
    "y_a": ORDER["a_pair"],
    "a_update": ORDER["a_update"],
}


class RecordedDraws:
    """A KFAC ``target_source`` that draws as the default one and keeps every draw.

    ``take()`` returns (and forgets) the draws made since the last call, as ``{draw: targets}``.
    """

    def __init__(self, model, seed: int):
        """Draw for ``model``'s loss with ``default_rng([seed, draw])``."""
        self.model, self.seed, self.pending = model, seed, {}

    def __call__(self, z, draw: int):
        """The targets of draw ``draw`` at outputs ``z``, kept until :meth:`take`."""
        targets = self.model.loss.sample_targets(z, np.random.default_rng([self.seed, draw]))
        self.pending[draw] = targets
        return targets

    def take(self) -> dict:
        """The draws since the last call."""
        taken, self.pending = self.pending, {}
        return taken


def _record_draws(rec, opt, prefix: str, step) -> None:
    """The Monte-Carlo targets a :class:`RecordedDraws` source handed out (given to candidates)."""
    source = getattr(opt, "target_source", None)
    if isinstance(source, RecordedDraws):
        for draw, targets in source.take().items():
            meaning = f"Monte-Carlo targets of draw {draw} (feed them back as the draws)"
            rec.add(
                f"{prefix}.drawn_targets{draw}", targets, "input", meaning, ORDER["inputs"], step
            )


def minibatch_stream(X, T, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """The first ``STEPS`` minibatches of ``BATCH`` of :func:`kfqn_ref.data.minibatches`.

    Each epoch is a permutation drawn from one ``default_rng(seed)`` shared by all epochs.
    """
    epochs = math.ceil(STEPS / (len(X) // BATCH))
    stream = data.minibatches(data.Dataset("golden", X, T), BATCH, seed=seed, epochs=epochs)
    return list(itertools.islice(stream, STEPS))


def _as_array(value) -> np.ndarray:
    """A recorded leaf as a manifest dtype: bools, int64 codes and counts, float arrays."""
    if isinstance(value, enum.Enum):
        return np.array(SKIP_CODES[value.value], dtype=np.int64)
    array = np.asarray(value)
    if array.dtype.kind in "iu":
        return array.astype(np.int64)
    return array


def _state_layer(model, key: str) -> int | None:
    """The layer of a state entry: the first integer of its path is the trainable position."""
    for part in key.split("."):
        if part.isdigit():
            return model.trainable_indices[int(part)]
    return None


def _bias_axes(model, layer: int | None, shape: tuple) -> list[int]:
    """Axes of a state array of length ``D + 1`` of its layer (if that differs from ``d_out``)."""
    if layer is None:
        return []
    d_out, width = model.layers[layer].weight_shape
    if width == d_out or not model.layers[layer].has_bias:
        return []
    return [axis for axis, length in enumerate(shape) if length == width]


class _Recorder:
    """Collects the entries of one trajectory and the tolerance of each quantity."""

    def __init__(self, model):
        self.model = model
        self.entries: dict[str, Entry] = {}
        self.tolerances: dict[str, Tolerance] = {"input": INPUT}

    def add(
        self,
        name: str,
        value,
        quantity: str,
        meaning: str,
        order: int,
        step,
        layer=None,
        hints=None,
    ):
        array = _as_array(value)
        if quantity not in self.tolerances:
            self.tolerances[quantity] = TRAJECTORY if array.dtype.kind == "f" else EXACT
        self.entries[name] = Entry(array, quantity, meaning, order, step, layer, hints or {})

    def state(self, opt, prefix: str, step, previous_prefix: str | None) -> None:
        for key, value in opt.state_dict().items():
            if not key.startswith("state."):
                continue
            layer = _state_layer(self.model, key)
            quantity = ".".join(part for part in key.split(".") if not part.isdigit())
            hints = {}
            axes = _bias_axes(self.model, layer, np.shape(value))
            if axes:
                hints["bias_axes"] = axes
            if previous_prefix is not None:
                hints["previous"] = f"{previous_prefix}.{key}"
            self.add(
                f"{prefix}.{key}",
                value,
                quantity,
                f"optimizer {key} after the step",
                ORDER["state"],
                step,
                layer,
                hints,
            )

    def per_layer(
        self,
        prefix: str,
        field: str,
        arrays,
        quantity: str,
        meaning: str,
        order: int,
        step,
        hints=None,
    ):
        for index, array in zip(self.model.trainable_indices, arrays, strict=True):
            self.add(
                f"{prefix}.layer{index}.{field}",
                array,
                quantity,
                meaning,
                order,
                step,
                index,
                hints,
            )


def _means(records) -> tuple[list, list]:
    hbar = [sample_position_mean(r.h) for r in records]
    gbar = [sample_position_mean(r.g) for r in records]
    return hbar, gbar


def _kbfgs_lambdas(config, P: int) -> dict:
    """``lambda_A``, ``lambda_G`` used and those of the other split, for ``P`` positions."""
    root = math.sqrt(config.damping)
    equal = {"lambda_A": root, "lambda_G": root}
    sqrt_p = {"lambda_A": root * math.sqrt(P), "lambda_G": root / math.sqrt(P)}
    if config.damping_split is optim.KBFGSDampingSplit.SQRT_T:
        return {"used": sqrt_p, "other": equal, "other_name": "sqrt(lambda) (EQUAL split)"}
    return {
        "used": equal,
        "other": sqrt_p,
        "other_name": "sqrt(lambda) sqrt(P) on A, sqrt(lambda)/sqrt(P) on G",
    }


def _meets_guarantee(s: np.ndarray, y: np.ndarray, c: float) -> bool:
    """``s^T y >= c s^T s`` up to the rounding of both sides (``docs/golden.md``, "Diagnoses").

    A damping that attains the bound (the 2020 second damping) makes the two sides equal in exact
    arithmetic; computed, they differ by up to ``(d + 2) eps (|s|^T |y| + c s^T s)``, the forward
    error of two dot products of length ``d`` and of forming the damped ``y``.
    """
    slack = (len(s) + 2) * np.finfo(s.dtype).eps * (np.abs(s) @ np.abs(y) + c * (s @ s))
    return bool(s @ y >= c * (s @ s) - slack)


def _pair_hints(opt, step: int, index: int, field: str, pairs, P: int, last: bool) -> dict:
    """Diagnosis hints of one pair field (partner, other batch, Powell, guarantee, damping)."""
    prefix = f"step{step:02d}.layer{index}.pair"
    hints = {}
    fields = pairs._fields
    partner = {"s": "y", "y": "s"}.get(field[0])
    if partner and partner + field[1:] in fields:
        hints["pair"] = {"role": field[0], "partner": f"{prefix}.{partner}{field[1:]}"}
    if field in ("s_raw", "y_raw") and not last:
        mean = "hbar" if field == "s_raw" else "gbar"
        hints["other_batch"] = [
            f"step{step:02d}.layer{index}.{mean}",
            f"step{step + 1:02d}.layer{index}.{mean}",
        ]
    lambdas = _kbfgs_lambdas(opt.config, P)
    variant = opt.config.variant
    if field == "s" and not opt.limited_memory_g:
        before = "initial" if step == 0 else f"step{step - 1:02d}"
        position = opt.model.trainable_indices.index(index)
        hints["powell"] = {
            "H": f"{before}.state.layers.{position}.H_g",
            "s": f"{prefix}.s_averaged",
            "y": f"{prefix}.y_averaged",
            "mu1": opt.config.powell_mu1,
        }
    if field in ("s", "y"):
        c = lambdas["used"]["lambda_G"]
        if _meets_guarantee(pairs.s, pairs.y, c):
            hints["guarantee"] = {
                "form": "s_dot_y >= c s_dot_s",
                "c": c,
                "s": f"{prefix}.s",
                "y": f"{prefix}.y",
            }
    lm = variant is not optim.KBFGSVariant.AUTHORS_2020
    if P > 1 and lm and field == "y":
        hints["damping"] = {
            "form": "y_plus_lambda_s",
            "lambda": lambdas["used"]["lambda_G"],
            "s": f"{prefix}.s",
            "alternatives": {lambdas["other_name"]: lambdas["other"]["lambda_G"]},
        }
    if P > 1 and field == "y_a" and variant is optim.KBFGSVariant.KFQN_2022:
        hints["damping"] = {
            "form": "y_plus_lambda_s",
            "lambda": lambdas["used"]["lambda_A"],
            "s": f"{prefix}.s_a",
            "alternatives": {lambdas["other_name"]: lambdas["other"]["lambda_A"]},
        }
    return hints


def record_trajectory(model, opt, batches, prepass: Callable | None = None) -> _Recorder:
    """Run ``opt`` over ``batches`` and record every step (see the module docstring)."""
    rec = _Recorder(model)
    if prepass is not None:
        prepass(opt)
    _record_draws(rec, opt, "initial", None)
    rec.state(opt, "initial", None, None)
    P_of = {r.layer_index: position_count(r.a) for r in model.forward_pass(batches[0][0]).records}
    for k, (X, T) in enumerate(batches):
        step = f"step{k:02d}"
        rec.add(f"{step}.X", X, "input", "minibatch inputs X_k", ORDER["inputs"], k)
        rec.add(f"{step}.T", T, "input", "minibatch targets T_k", ORDER["inputs"], k)
        before = model.weights()
        _record_weights(rec, k, before)
        first = model.forward_backward(X, T)
        hbar, gbar = _means(first.records)
        means = "over samples and positions (C,)"
        rec.per_layer(step, "hbar", hbar, "means", f"mean(h) {means}", ORDER["means"], k)
        rec.per_layer(step, "gbar", gbar, "means", f"mean(g) {means}", ORDER["means"], k)
        bias = {"bias_axes": [1]}
        rec.per_layer(
            step, "gradient", first.grads, "gradient", "df/dW~", ORDER["gradient"], k, bias
        )
        loss = opt.step(X, T)
        _record_draws(rec, opt, step, k)
        rec.add(f"{step}.loss", np.array(loss), "loss", "minibatch loss f(W~_k)", ORDER["loss"], k)
        change = [new - old for new, old in zip(model.weights(), before, strict=True)]
        rec.per_layer(step, "change", change, "change", "W~_{k+1} - W~_k", ORDER["change"], k, bias)
        diagnostics = getattr(opt, "last_step", None)
        if diagnostics is not None:
            directions = diagnostics.directions
            rec.per_layer(
                step, "direction", directions, "direction", "p_k", ORDER["direction"], k, bias
            )
            if diagnostics.pairs:
                last = k == len(batches) - 1
                _record_pairs(rec, opt, k, X, T, diagnostics.pairs, P_of, last)
        rec.state(opt, step, k, "initial" if k == 0 else f"step{k - 1:02d}")
    _record_weights(rec, len(batches), model.weights())
    return rec


def _record_weights(rec: _Recorder, k: int, weights) -> None:
    """``stepNN.layer<i>.weights``: given at step 0, computed (with a ``previous`` hint) after."""
    for index, weight in zip(rec.model.trainable_indices, weights, strict=True):
        name = f"step{k:02d}.layer{index}.weights"
        hints = {"bias_axes": [1]}
        if k > 0:
            hints["previous"] = f"step{k - 1:02d}.layer{index}.weights"
        quantity = "input" if k == 0 else "weights"
        order = ORDER["inputs"] if k == 0 else ORDER["weights"]
        rec.add(name, weight, quantity, "weights W~_k before step k", order, k, index, hints)


def _record_pairs(rec: _Recorder, opt, k: int, X, T, pairs, P_of: dict, last: bool) -> None:
    """Second-pass means and every field of the step's ``PairDiagnostics``."""
    step = f"step{k:02d}"
    second = rec.model.forward_backward(X, T)
    hbar_new, gbar_new = _means(second.records)
    for field, means in (("hbar_new", hbar_new), ("gbar_new", gbar_new)):
        for index, mean in zip(rec.model.trainable_indices, means, strict=True):
            hints = {} if last else {"other_batch": [f"step{k + 1:02d}.layer{index}.{field[:4]}"]}
            rec.add(
                f"{step}.layer{index}.{field}",
                mean,
                "second_pass",
                f"{field[:4]} of the second pass",
                ORDER["second_pass"],
                k,
                index,
                hints,
            )
    for index, layer_pairs in zip(rec.model.trainable_indices, pairs, strict=True):
        for field, value in layer_pairs._asdict().items():
            hints = _pair_hints(opt, k, index, field, layer_pairs, P_of[index], last)
            order = PAIR_ORDER.get(field, ORDER["damped"])
            rec.add(
                f"{step}.layer{index}.pair.{field}",
                value,
                f"pair.{field}",
                f"PairDiagnostics.{field}",
                order,
                k,
                index,
                hints,
            )


def trajectory_case(
    name: str, description: str, model, opt, batches, input_shape, setup: dict, prepass=None
) -> Case:
    """A trajectory case from an optimizer and its minibatch stream."""
    rec = record_trajectory(model, opt, batches, prepass)
    config = {
        field.name: getattr(
            getattr(opt.config, field.name), "value", getattr(opt.config, field.name)
        )
        for field in dataclasses.fields(opt.config)
    }
    return Case(
        name=name,
        kind="trajectory",
        description=description,
        net=net_description(model, input_shape),
        data={
            "samples": SAMPLES,
            "batch": BATCH,
            "steps": STEPS,
            "stream": "each epoch a permutation of the samples by default_rng(seed); "
            "recorded per step",
        },
        setup={
            "optimizer": type(opt).__name__,
            "config": config,
            "skip_codes": SKIP_CODES,
            **setup,
        },
        seeds={"weights": 0, "data": 1, "stream": 2},
        order_of_operations=TRAJECTORY_STEPS,
        tolerances=rec.tolerances,
        entries=rec.entries,
    )


# ---------------------------------------------------------------------------------------------
# The trajectories
# ---------------------------------------------------------------------------------------------


def _dense_stream():
    X, T = dense_data(SAMPLES, seed=1)
    return dense_net(), minibatch_stream(X, T, seed=2)


def _conv_stream():
    X, T = conv_data(SAMPLES, seed=1)
    return conv_net(), minibatch_stream(X, T, seed=2)


def _first_epoch_prepass(batches):
    """The authors' ``A`` pre-pass over the first epoch's minibatches (steps 0, 1, 2)."""
    per_epoch = SAMPLES // BATCH
    return lambda opt: opt.initialize_A([X for X, _ in batches[:per_epoch]])


def traj_kbfgs_2020() -> Case:
    """K-BFGS, the authors' 2020 iteration, on the dense net with the ``A`` pre-pass."""
    model, batches = _dense_stream()
    opt = optim.KBFGS(model, variant=optim.KBFGSVariant.AUTHORS_2020, lr=0.1, weight_decay=1e-3)
    return trajectory_case(
        "traj_kbfgs_2020",
        "K-BFGS variant 2020 (dense net, A pre-pass over the first epoch), 12 steps",
        model,
        opt,
        batches,
        DENSE_INPUT_SHAPE,
        {"prepass": "initialize_A over the inputs of steps 0, 1, 2 before step 0"},
        _first_epoch_prepass(batches),
    )


def traj_kbfgs_2022() -> Case:
    """K-BFGS 2022 on the conv net (minibatch Hessian action for the conv ``A``)."""
    model, batches = _conv_stream()
    opt = optim.KBFGS(model, lr=0.1, weight_decay=1e-3)
    return trajectory_case(
        "traj_kbfgs_2022",
        "K-BFGS variant 2022 (conv net: conv A by the minibatch Hessian action), 12 steps",
        model,
        opt,
        batches,
        CONV_INPUT_SHAPE,
        {"prepass": "none"},
    )


def traj_kbfgsl() -> Case:
    """K-BFGS(L) 2022 on the dense net, memory 3 (the store wraps)."""
    model, batches = _dense_stream()
    opt = optim.KBFGSL(model, lr=0.1, memory=3, weight_decay=1e-3)
    return trajectory_case(
        "traj_kbfgsl",
        "K-BFGS(L) variant 2022 (dense net, memory 3), 12 steps",
        model,
        opt,
        batches,
        DENSE_INPUT_SHAPE,
        {"prepass": "none"},
    )


def traj_kbfgsl_memory_light() -> Case:
    """Memory-light K-BFGS(L) on the conv net: both factors limited-memory stores."""
    model, batches = _conv_stream()
    opt = optim.KBFGSL(model, lr=0.1, memory=3, memory_light=True, weight_decay=1e-3)
    return trajectory_case(
        "traj_kbfgsl_memory_light",
        "memory-light K-BFGS(L) 2022 (conv net, memory 3, H_a a Hessian-action store), 12 steps",
        model,
        opt,
        batches,
        CONV_INPUT_SHAPE,
        {"prepass": "none"},
    )


def traj_kbfgsl_convergent() -> Case:
    """The convergent K-BFGS(L) variant on the dense net (no momentum)."""
    model, batches = _dense_stream()
    opt = optim.KBFGSL(
        model,
        variant=optim.KBFGSVariant.CONVERGENT,
        memory_light=True,
        momentum=0.0,
        lr=0.1,
        memory=3,
    )
    return trajectory_case(
        "traj_kbfgsl_convergent",
        "convergent K-BFGS(L) (dense net, memory 3, momentum 0), 12 steps",
        model,
        opt,
        batches,
        DENSE_INPUT_SHAPE,
        {"prepass": "none"},
    )


def traj_kfac() -> Case:
    """KFAC on the conv net: Monte-Carlo Fisher (draws recorded), warm start, expand."""
    model, batches = _conv_stream()
    opt = optim.KFAC(
        model, target_source=RecordedDraws(model, seed=0), lr=0.1, damping=0.1, inverse_interval=5
    )
    return trajectory_case(
        "traj_kfac",
        "KFAC (conv net, Monte-Carlo Fisher with the drawn targets recorded, warm-start "
        "averaging, expand, inverses every 5 steps), 12 steps",
        model,
        opt,
        batches,
        CONV_INPUT_SHAPE,
        {"targets": "the Monte-Carlo draws are recorded as stepNN.drawn_targets<draw>"},
    )


def traj_kfac_reduce() -> Case:
    """KFAC with the K-BFGS authors' averaging after a pre-pass, and KFAC-reduce for conv."""
    model, batches = _conv_stream()
    opt = optim.KFAC(
        model,
        target_source=RecordedDraws(model, seed=0),
        lr=0.1,
        damping=0.1,
        inverse_interval=5,
        averaging=optim.kfac.KFACAveraging.CONSTANT,
        conv_approximation=optim.kfac.KFACApproximation.REDUCE,
    )
    per_epoch = SAMPLES // BATCH
    return trajectory_case(
        "traj_kfac_reduce",
        "KFAC (conv net, Monte-Carlo Fisher with recorded draws, constant decay after a factor "
        "pre-pass over the first epoch, KFAC-reduce), 12 steps",
        model,
        opt,
        batches,
        CONV_INPUT_SHAPE,
        {
            "prepass": "initialize_factors over the minibatches of steps 0, 1, 2 (draws 0, 1, 2; "
            "step k is draw 3 + k)",
            "targets": "the Monte-Carlo draws are recorded as initial.drawn_targets<draw> and "
            "stepNN.drawn_targets<draw>",
        },
        lambda opt: opt.initialize_factors(batches[:per_epoch]),
    )


def traj_shampoo() -> Case:
    """Shampoo on the dense net."""
    model, batches = _dense_stream()
    opt = optim.Shampoo(model, lr=0.05, momentum=0.5)
    return trajectory_case(
        "traj_shampoo", "Shampoo (dense net), 12 steps", model, opt, batches, DENSE_INPUT_SHAPE, {}
    )


def traj_adam() -> Case:
    """Adam on the dense net."""
    model, batches = _dense_stream()
    opt = optim.Adam(model, lr=0.01)
    return trajectory_case(
        "traj_adam", "Adam (dense net), 12 steps", model, opt, batches, DENSE_INPUT_SHAPE, {}
    )
