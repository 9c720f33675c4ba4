"""The nets, data and tolerances of the golden cases, and the cases of one pass of a net.

Two tiny nets serve every case: a dense net ``Dense(4, 5) - Tanh - Dense(5, 3)`` with softmax
cross-entropy (class-index targets) and a conv net ``Conv2d(2, 3, 2x2) - Tanh - Flatten -
Dense(12, 2)`` on ``(2, 3, 3)`` inputs (``P = 4`` output positions) with squared error. Cases of
single quasi-Newton updates are in :mod:`~kfqn_ref.golden.updates`, trajectories in
:mod:`~kfqn_ref.golden.trajectories`; ``docs/golden.md`` lists them all.
"""

from __future__ import annotations

import numpy as np

from kfqn_ref import curvature, nn
from kfqn_ref.curvature import FisherType
from kfqn_ref.golden.format import Case, Entry, Tolerance
from kfqn_ref.optim.kbfgs_factors import position_count
from kfqn_ref.optim.kfac import KFACApproximation, minibatch_factors

INPUT = Tolerance(
    1e-13,
    0.0,
    "given, not computed by the candidate (a copy matches exactly); some are generated with "
    "matrix products (a QR, z + noise), which another BLAS rounds differently by about 1e-16",
)
EXACT = Tolerance(
    0.0, 0.0, "a flag, a count or a skip code: a decision, equal or wrong (no rounding)"
)
RECORD = Tolerance(
    1e-11,
    1e-13,
    "one float64 pass: every entry is a few dozen roundings (about 1e-15 each); 1e-11 leaves "
    "room for another BLAS's summation order and is far below any convention error (factors 2, "
    "N, P, C or a transposition change entries by 1e-1 or more)",
)
CURVATURE = Tolerance(
    1e-10,
    1e-13,
    "exact second derivatives in float64 by another route (autograd here): sums of products of "
    "Jacobians, about 1e-14 relative; 1e-10 leaves room for the route and the BLAS",
)
UPDATE = Tolerance(
    1e-11,
    1e-13,
    "one closed-form quasi-Newton update in float64 (a few inner and outer products)",
)

DENSE_INPUT_SHAPE = (4,)
CONV_INPUT_SHAPE = (2, 3, 3)
#: The skip codes of trajectories and update cases (the authors' 0, 1, 2, 4 and ours, 3).
SKIP_CODES = {
    "none": 0,
    "non_positive_curvature": 1,
    "below_relative_threshold": 2,
    "non_finite_inner_product": 3,
    "non_finite_result": 4,
}


def dense_net(seed: int = 0) -> nn.Sequential:
    """``Dense(4, 5) - Tanh - Dense(5, 3)``, softmax cross-entropy."""
    layers = [nn.Dense(4, 5), nn.Tanh(), nn.Dense(5, 3)]
    return nn.Sequential(layers, nn.SoftmaxCrossEntropy(), seed=seed)


def conv_net(seed: int = 0) -> nn.Sequential:
    """``Conv2d(2, 3, 2x2) - Tanh - Flatten - Dense(12, 2)``, squared error."""
    layers = [nn.Conv2d(2, 3, kernel_size=2), nn.Tanh(), nn.Flatten(), nn.Dense(12, 2)]
    return nn.Sequential(layers, nn.SquaredError(), seed=seed)


def dense_data(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``X`` ``(n, 4)`` standard normal, ``T`` ``(n,)`` int64 class indices in ``[0, 3)``."""
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, 4)), rng.integers(0, 3, size=n).astype(np.int64)


def conv_data(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``X`` ``(n, 2, 3, 3)`` and ``T`` ``(n, 2)``, both standard normal."""
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, *CONV_INPUT_SHAPE)), rng.standard_normal((n, 2))


def layer_description(layer) -> dict:
    """A layer as plain JSON: its type and hyperparameters."""
    if isinstance(layer, nn.Dense):
        return {"type": "Dense", "d_in": layer.d_in, "d_out": layer.d_out, "bias": layer.has_bias}
    if isinstance(layer, nn.Conv2d):
        return {
            "type": "Conv2d",
            "c_in": layer.c_in,
            "c_out": layer.c_out,
            "kernel_size": list(layer.kernel_size),
            "stride": list(layer.stride),
            "padding": list(layer.padding),
            "dilation": list(layer.dilation),
            "bias": layer.has_bias,
        }
    return {"type": type(layer).__name__}


def net_description(model: nn.Sequential, input_shape: tuple[int, ...]) -> dict:
    """The net of a manifest: layers, loss, dtype and the shape of one input sample."""
    return {
        "layers": [layer_description(layer) for layer in model.layers],
        "loss": type(model.loss).__name__,
        "dtype": str(model.dtype),
        "input_shape": list(input_shape),
    }


def input_entries(X, T, model: nn.Sequential, *, prefix: str = "", step=None) -> dict:
    """Entries of the minibatch ``(X, T)`` and of the weights it is evaluated at (order 0/1)."""
    entries = {
        f"{prefix}X": Entry(X, "input", "minibatch inputs X (N, ...) (NCHW for images)", 0, step),
        f"{prefix}T": Entry(T, "input", "minibatch targets T (class indices or (N, C))", 0, step),
    }
    entries.update(weight_entries(model, prefix, step, "input", 0))
    return entries


def weight_entries(model: nn.Sequential, prefix: str, step, quantity: str, order: int) -> dict:
    """``<prefix>layer<i>.weights``: the homogeneous ``W~`` of every trainable layer."""
    return {
        f"{prefix}layer{index}.weights": Entry(
            weight,
            quantity,
            "homogeneous weights W~ = [W | b] (d_out, D + 1), bias last",
            order,
            step,
            index,
            {"bias_axes": [1]},
        )
        for index, weight in zip(model.trainable_indices, model.weights(), strict=True)
    }


# ---------------------------------------------------------------------------------------------
# One forward/backward pass
# ---------------------------------------------------------------------------------------------


RECORD_STEPS = (
    "inputs: X, T and the weights W~ of every trainable layer (given)",
    "forward: per trainable layer a~ = [x; 1] (conv: the im2col patches of every position with a "
    "trailing 1), h = W~ a~; z = the network output",
    "loss: f = (1/N) sum_n l_n(z_n, t_n)",
    "backward: per-sample dl_n/dz_n propagated to g_n = dl_n/dh_n (= N df/dh_n)",
    "weight gradients: grad = df/dW~ = (1/N) sum_n sum_p g_{n,p} a~_{n,p}^T",
)


def records_case(name: str, description: str, model, X, T, input_shape) -> Case:
    """The records ``a~, h, g`` and ``grad`` of every trainable layer, the output and the loss."""
    result = model.forward_backward(X, T)
    n_samples, n_outputs = result.output.shape
    entries = input_entries(X, T, model)
    entries["output.z"] = Entry(result.output, "record", "network output z (N, C)", 1)
    entries["loss"] = Entry(
        np.array(result.loss),
        "loss",
        "mean loss f = (1/N) sum_n l_n",
        2,
        hints={"scales": {"N": n_samples, "C": n_outputs}},
    )
    for record in result.records:
        index, P = record.layer_index, position_count(record.a)
        scales = {"N": n_samples, "P": P} if P > 1 else {"N": n_samples}
        layer_entries = {
            "a": (
                record.a,
                1,
                "homogeneous inputs a~ (N, D + 1) or (N, P, D + 1)",
                {"bias_axes": [-1]},
            ),
            "h": (record.h, 1, "pre-activations h = W~ a~ (N, C) or (N, P, C)", {}),
            "g": (
                record.g,
                3,
                "g = dl_n/dh_n, not divided by N (N, C) or (N, P, C)",
                {"scales": scales},
            ),
            "grad": (record.grad, 4, "df/dW~ (d_out, D + 1)", {"bias_axes": [1], "scales": scales}),
        }
        for field, (array, order, meaning, hints) in layer_entries.items():
            entries[f"layer{index}.{field}"] = Entry(
                array, "record", meaning, order, None, index, hints
            )
    return Case(
        name=name,
        kind="records",
        description=description,
        net=net_description(model, input_shape),
        data={"N": n_samples, "description": "standard normal inputs; see setup for the targets"},
        setup={"targets": _target_description(model)},
        seeds={"weights": 0, "data": 1},
        order_of_operations=RECORD_STEPS,
        tolerances={"input": INPUT, "record": RECORD, "loss": RECORD},
        entries=entries,
    )


def _target_description(model) -> str:
    if isinstance(model.loss, nn.SoftmaxCrossEntropy):
        return "int64 class indices (N,)"
    return "float (N, C)"


def dense_records() -> Case:
    """Records of one pass of the dense net."""
    X, T = dense_data(6, seed=1)
    return records_case(
        "dense_records",
        "one forward/backward pass of the dense net: records, output, loss",
        dense_net(),
        X,
        T,
        DENSE_INPUT_SHAPE,
    )


def conv_records() -> Case:
    """Records of one pass of the conv net."""
    X, T = conv_data(5, seed=1)
    return records_case(
        "conv_records",
        "one forward/backward pass of the conv net (P = 4 positions): records, output, loss",
        conv_net(),
        X,
        T,
        CONV_INPUT_SHAPE,
    )


# ---------------------------------------------------------------------------------------------
# Losses
# ---------------------------------------------------------------------------------------------


LOSS_STEPS = (
    "inputs: network outputs z (N, C) and targets t",
    "value f = (1/N) sum_n l_n (SquaredError l = 1/2 |z - t|^2; SigmoidCrossEntropy l = sum_i "
    "softplus(z_i) - t_i z_i; SoftmaxCrossEntropy l = logsumexp(z) - z_t)",
    "per-sample gradient dl_n/dz_n (N, C), not divided by N",
    "per-sample Hessian d2 l_n/dz_n^2 (N, C, C)",
)


def loss_functions() -> Case:
    """Value, per-sample gradient and Hessian of the three losses."""
    rng = np.random.default_rng(2)
    n, c = 3, 4
    z = rng.standard_normal((n, c))
    targets = {
        "squared_error": (nn.SquaredError(), rng.standard_normal((n, c))),
        "sigmoid_cross_entropy": (nn.SigmoidCrossEntropy(), rng.random((n, c))),
        "softmax_cross_entropy": (nn.SoftmaxCrossEntropy(), rng.integers(0, c, size=n)),
    }
    scales = {"scales": {"N": n, "C": c}}
    entries = {"input.z": Entry(z, "input", "network outputs z (N, C)", 0)}
    for name, (loss, t) in targets.items():
        entries[f"{name}.t"] = Entry(t, "input", "targets t", 0)
        entries[f"{name}.value"] = Entry(np.array(loss.value(z, t)), "loss", "f", 1, hints=scales)
        entries[f"{name}.gradient"] = Entry(
            loss.output_gradient(z, t), "loss", "dl_n/dz_n (N, C)", 2, hints=scales
        )
        entries[f"{name}.hessian"] = Entry(
            loss.output_hessian(z, t), "loss", "d2 l_n/dz_n^2 (N, C, C)", 3, hints=scales
        )
    return Case(
        name="loss_functions",
        kind="loss",
        description="value, per-sample gradient and Hessian of the three losses at random outputs",
        net=None,
        data={"N": n, "C": c},
        setup={"losses": sorted(targets)},
        seeds={"data": 2},
        order_of_operations=LOSS_STEPS,
        tolerances={"input": INPUT, "loss": RECORD},
        entries=entries,
    )


# ---------------------------------------------------------------------------------------------
# Exact curvature
# ---------------------------------------------------------------------------------------------


CURVATURE_STEPS = (
    "inputs: X, T and the weights W~ (given)",
    "Hessian of the mean loss f: over theta = [vec(W~_1); vec(W~_2); ...] (column-major vec) and "
    "each trainable layer's diagonal block over vec(W~)",
    "GGN = (1/N) sum_n J_n^T (d2 l_n/dz_n^2) J_n, J_n = dz_n/dtheta: full and per-layer blocks",
    "per-sample Hessians d2 l_n/dh_n^2 and GGNs w.r.t. a layer's pre-activation h_n (conv: "
    "index p C + c)",
)


def curvature_case(name: str, description: str, model, X, T, input_shape) -> Case:
    """Exact Hessians and GGNs: full, per layer, per sample w.r.t. the pre-activations."""
    forward = model.forward_pass(X)
    n_samples, n_outputs = forward.z.shape
    shapes = [list(w.shape) for w in model.weights()]
    scales = {"N": n_samples, "C": n_outputs}
    entries = input_entries(X, T, model)
    for field, compute, order in (
        ("hessian", curvature.full_hessian, 1),
        ("ggn", curvature.full_ggn, 2),
    ):
        entries[f"full.{field}"] = Entry(
            compute(model, X, T),
            field,
            f"{field} of f over all parameters (P, P), layers in order, each vec(W~)",
            order,
            hints={"vec_shapes": shapes, "scales": scales},
        )
    for shape, record in zip(shapes, forward.records, strict=True):
        index = record.layer_index
        block_hints = {"vec_shapes": [shape], "scales": scales}
        entries[f"layer{index}.hessian"] = Entry(
            curvature.layer_hessian(model, X, T, index),
            "hessian",
            "diagonal Hessian block d2f/dvec(W~)^2",
            1,
            None,
            index,
            block_hints,
        )
        entries[f"layer{index}.ggn"] = Entry(
            curvature.layer_ggn(model, X, T, index), "ggn", "GGN block", 2, None, index, block_hints
        )
        sample_hints = {"scales": {"N": n_samples}}
        P = position_count(record.a)
        if P > 1:
            sample_hints["positions_channels"] = [P, record.h.shape[2]]
        for field, compute in (
            ("preactivation_hessians", curvature.preactivation_hessians),
            ("preactivation_ggns", curvature.preactivation_ggns),
        ):
            entries[f"layer{index}.{field}"] = Entry(
                compute(model, X, T, index),
                "preactivation",
                "per-sample d2 l_n/dh_n^2 (or GGN) (N, P C, P C), index p C + c",
                3,
                None,
                index,
                sample_hints,
            )
    return Case(
        name=name,
        kind="curvature",
        description=description,
        net=net_description(model, input_shape),
        data={"N": n_samples},
        setup={"targets": _target_description(model)},
        seeds={"weights": 0, "data": 1},
        order_of_operations=CURVATURE_STEPS,
        tolerances={
            "input": INPUT,
            "hessian": CURVATURE,
            "ggn": CURVATURE,
            "preactivation": CURVATURE,
        },
        entries=entries,
    )


def dense_curvature() -> Case:
    """Exact curvature of the dense net."""
    X, T = dense_data(3, seed=1)
    return curvature_case(
        "dense_curvature",
        "exact Hessian, GGN and pre-activation Hessians of the dense net",
        dense_net(),
        X,
        T,
        DENSE_INPUT_SHAPE,
    )


def conv_curvature() -> Case:
    """Exact curvature of the conv net."""
    X, T = conv_data(2, seed=1)
    return curvature_case(
        "conv_curvature",
        "exact Hessian, GGN and pre-activation Hessians of the conv net",
        conv_net(),
        X,
        T,
        CONV_INPUT_SHAPE,
    )


# ---------------------------------------------------------------------------------------------
# KFAC factors
# ---------------------------------------------------------------------------------------------


KFAC_STEPS = (
    "inputs: X, T, the weights W~ and the Monte-Carlo targets drawn from the model's "
    "predictive distribution (given)",
    "expand (KFC for conv): A = (1/N) sum_n sum_p a~_{n,p} a~_{n,p}^T (SUM over positions)",
    "expand: G = (1/(N P)) sum_n sum_p g_{n,p} g_{n,p}^T (MEAN over positions), g backpropagated "
    "from dl_n/dz_n at the true targets (empirical), at the drawn targets (Monte-Carlo) or from "
    "every column of a root S_n S_n^T = d2 l_n/dz_n^2 (type-2, summed over the columns)",
    "reduce (Eschenhagen et al. 2023, conv only): A = (1/N) sum_n abar_n abar_n^T with abar_n = "
    "(1/P) sum_p a~_{n,p}; G = (1/N) sum_n gsum_n gsum_n^T with gsum_n = sum_p g_{n,p}",
)


def kfac_factors_case(name: str, description: str, model, X, T, input_shape, seed: int) -> Case:
    """KFAC factors of every trainable layer: empirical, Monte-Carlo, type-2; conv also reduce."""
    forward = model.forward_pass(X)
    z = forward.z
    n_samples, n_outputs = z.shape
    drawn = model.loss.sample_targets(z, np.random.default_rng(seed))
    entries = input_entries(X, T, model)
    entries["input.drawn_targets"] = Entry(
        drawn, "input", "Monte-Carlo targets drawn from the predictive distribution at z", 0
    )
    records = forward.records
    conv = any(position_count(record.a) > 1 for record in records)
    factors = {
        (fisher, approximation): minibatch_factors(model, forward, T, fisher, drawn, approximation)
        for fisher in FisherType
        for approximation in KFACApproximation
        if conv or approximation is KFACApproximation.EXPAND
    }
    expand = factors[FisherType.EMPIRICAL, KFACApproximation.EXPAND]
    reduce = factors.get((FisherType.EMPIRICAL, KFACApproximation.REDUCE))
    G_hints = []
    for position, record in enumerate(records):
        index, P = record.layer_index, position_count(record.a)
        scales = (
            {"N": n_samples, "P": P, "C": n_outputs} if P > 1 else {"N": n_samples, "C": n_outputs}
        )
        A_hints = {"bias_axes": [0, 1], "scales": scales}
        G_hints.append({"scales": scales})
        if P > 1:
            A_hints["position_reduction"] = "sum"
            G_hints[position]["position_reduction"] = "mean"
        entries[f"layer{index}.A"] = Entry(
            expand[position].A, "A", "input factor A (D + 1, D + 1)", 1, None, index, A_hints
        )
        if P > 1:
            entries[f"layer{index}.A_reduce"] = Entry(
                reduce[position].A,
                "A",
                "KFAC-reduce input factor (D + 1, D + 1)",
                3,
                None,
                index,
                {"bias_axes": [0, 1], "scales": scales, "position_reduction": "mean"},
            )
    for fisher in FisherType:
        for position, record in enumerate(records):
            index, P = record.layer_index, position_count(record.a)
            entries[f"layer{index}.G_{fisher.value}"] = Entry(
                factors[fisher, KFACApproximation.EXPAND][position].G,
                "G",
                f"output factor G ({fisher.value} Fisher) (C, C)",
                2,
                None,
                index,
                G_hints[position],
            )
            if P > 1:
                entries[f"layer{index}.G_reduce_{fisher.value}"] = Entry(
                    factors[fisher, KFACApproximation.REDUCE][position].G,
                    "G",
                    f"KFAC-reduce output factor ({fisher.value} Fisher) (C, C)",
                    3,
                    None,
                    index,
                    {"scales": G_hints[position]["scales"], "position_reduction": "sum"},
                )
    return Case(
        name=name,
        kind="kfac_factors",
        description=description,
        net=net_description(model, input_shape),
        data={"N": n_samples},
        setup={
            "fisher_types": [f.value for f in FisherType],
            "targets": _target_description(model),
        },
        seeds={"weights": 0, "data": 1, "drawn_targets": seed},
        order_of_operations=KFAC_STEPS,
        tolerances={"input": INPUT, "A": RECORD, "G": RECORD},
        entries=entries,
    )


def dense_kfac_factors() -> Case:
    """KFAC factors of the dense net."""
    X, T = dense_data(6, seed=1)
    return kfac_factors_case(
        "dense_kfac_factors",
        "KFAC factors of the dense net: empirical, Monte-Carlo (drawn targets stored), type-2",
        dense_net(),
        X,
        T,
        DENSE_INPUT_SHAPE,
        seed=3,
    )


def conv_kfac_factors() -> Case:
    """KFAC factors of the conv net, expand and reduce."""
    X, T = conv_data(5, seed=1)
    return kfac_factors_case(
        "conv_kfac_factors",
        "KFAC factors of the conv net: empirical, Monte-Carlo, type-2; expand (KFC) and reduce",
        conv_net(),
        X,
        T,
        CONV_INPUT_SHAPE,
        seed=3,
    )
