"""KBFGS/KBFGSL variant 2020 replays the authors' recorded runs to 1e-12 (docs/optimizers/kbfgs.md).

Expected values come from an independent implementation: the authors' public PyTorch code
(renyiryry/kbfgs_neurips2020_public), driven function by function and recorded in
``tests/data/mlp6-5-4-6_sigmoidce_minibatch__kbfgs{,l}.npz`` (see ``tests/data/README.md``,
section "kbfgs2020 runs"). The optimizer starts from the recorded initial weights, runs the
recorded pre-pass and minibatches, and every recorded intermediate it computes is compared:
network records of both passes, losses, gradients, momentum, direction, weights, ``A``,
``H_a``/``H_g`` before and after their updates, the ``G`` pair at every stage, the Hessian-action
pair, damping and skip flags, and (K-BFGS(L)) the L-BFGS store. The authors' letters ``a``/``h``
are swapped with ours (conventions §1): their ``h`` is our ``a~`` without the trailing 1, their
``a`` our ``h``, their ``a_grad`` our ``g``.
"""

import functools
import hashlib
import json
import math
import pathlib
from collections import defaultdict

import numpy as np
import pytest
from helpers.compare import assert_close

from kfqn_ref import nn
from kfqn_ref.optim import KBFGS, KBFGSL, KBFGSVariant
from kfqn_ref.quasi_newton import LBFGSState, SkipReason, lbfgs_compact_apply, lbfgs_compact_factors

DATA = pathlib.Path(__file__).resolve().parents[1] / "data"
RTOL = 1e-12
CASES = {"kbfgs": KBFGS, "kbfgsl": KBFGSL}
#: The authors' get_BFGS_formula statuses.
STATUS = {
    0: SkipReason.NONE,
    1: SkipReason.NON_POSITIVE_CURVATURE,
    2: SkipReason.BELOW_RELATIVE_THRESHOLD,
    4: SkipReason.NON_FINITE_RESULT,
}


@functools.cache
def load_case(case):
    """The recorded arrays and hyperparameters, after checking the npz against its sidecar."""
    stem = DATA / f"mlp6-5-4-6_sigmoidce_minibatch__{case}"
    meta = json.loads(stem.with_suffix(".json").read_text())
    digest = hashlib.sha256(stem.with_suffix(".npz").read_bytes()).hexdigest()
    assert digest == meta["npz_sha256"], f"{stem}.npz differs from the recording"
    with np.load(stem.with_suffix(".npz"), allow_pickle=False) as archive:
        recording = {key: archive[key] for key in archive.files}
    return recording, meta["hyperparameters"]


def build(case, recording, hyper):
    """The recorded net, initial weights and hyperparameters as a model and an optimizer."""
    sizes, activations = hyper["layersizes"], hyper["activations"]
    layers = []
    for d_in, d_out, activation in zip(sizes[:-1], sizes[1:], activations, strict=True):
        layers.append(nn.Dense(d_in, d_out))
        if activation == "relu":
            layers.append(nn.ReLU())
    model = nn.Sequential(layers, loss=nn.SigmoidCrossEntropy())
    model.set_weights(
        [
            np.hstack([recording[f"init_W_l{layer}"], recording[f"init_b_l{layer}"][:, None]])
            for layer in range(len(sizes) - 1)
        ]
    )
    options = dict(
        variant=KBFGSVariant.AUTHORS_2020,
        lr=hyper["lr_alpha"],
        damping=hyper["lambda_damping"],
        weight_decay=hyper["tau_weight_decay"],
        momentum=hyper["momentum_gradient_rho"],
        a_decay=hyper["Kron_BFGS_A_decay"],
        pair_decay=hyper["s_y_momentum_decay"],
        powell_mu1=hyper["powell_mu1"],
        skip_threshold=hyper["skip_threshold_1e_4"],
        hg_initial=float(hyper["Kron_LBFGS_Hg_initial"]),
    )
    if case == "kbfgsl":
        options["memory"] = hyper["Kron_BFGS_number_s_y"]
    return model, CASES[case](model, **options)


def dense_matrix(H):
    """A factor as a matrix; an L-BFGS store by its compact form applied to I (the recording's)."""
    if isinstance(H, LBFGSState):
        return lbfgs_compact_apply(H, np.eye(H.S.shape[1]))
    return H


class Recorder:
    """Collects ``(label, actual, expected)`` per recorded array name (without the ``_l{layer}``
    suffix): float values (compared to 1e-12) and flags (compared exactly)."""

    def __init__(self, case):
        self.case = case
        self.values = defaultdict(list)
        self.flags = defaultdict(list)

    def value(self, name, k, layer, actual, expected):
        label = f"{self.case}: {name}, step {k}, layer {layer}"
        self.values[name].append((label, actual, expected))

    def flag(self, name, k, layer, actual, expected):
        label = f"{self.case}: {name}, step {k}, layer {layer}"
        self.flags[name].append((label, actual, expected))


def compare_records(rec, recording, k, result, suffix):
    """Their h (input), a (pre-activation), a_grad against our a~ (less the 1), h, g."""
    for layer, record in enumerate(result.records):
        if suffix == "":
            rec.value("h", k, layer, record.a[:, :-1], recording[f"h_l{layer}"][k])
        rec.value(f"a{suffix}", k, layer, record.h, recording[f"a{suffix}_l{layer}"][k])
        rec.value(f"agrad{suffix}", k, layer, record.g, recording[f"agrad{suffix}_l{layer}"][k])


def compare_full_loss(rec, recording, model, hyper, k):
    loss = model.forward_backward(recording["X_data"], recording["T_data"]).loss
    decay = 0.5 * hyper["tau_weight_decay"] * sum(float(np.sum(w * w)) for w in model.weights())
    rec.value("loss_full", k, "-", loss, recording["loss_full"][k])
    rec.value("loss_full_reg", k, "-", loss + decay, recording["loss_full_reg"][k])


def compare_layer(rec, recording, hyper, opt, before, weights_before, k, layer):
    """Everything the step computed for the layer with index ``layer``."""
    info, state = opt.last_step, opt.state.layers[layer]
    tau, eps = hyper["tau_weight_decay"], math.sqrt(hyper["lambda_damping"])
    gradient, direction = info.gradients[layer], info.directions[layer]
    rec.value("grad_W", k, layer, gradient[:, :-1], recording[f"grad_W_l{layer}"][k])
    rec.value("grad_b", k, layer, gradient[:, -1], recording[f"grad_b_l{layer}"][k])
    regularised = gradient + tau * weights_before[layer]
    rec.value("gradwd_W", k, layer, regularised[:, :-1], recording[f"gradwd_W_l{layer}"][k])
    rec.value("gradwd_b", k, layer, regularised[:, -1], recording[f"gradwd_b_l{layer}"][k])
    rec.value("gradmom_W", k, layer, state.momentum[:, :-1], recording[f"gradmom_W_l{layer}"][k])
    rec.value("gradmom_b", k, layer, state.momentum[:, -1], recording[f"gradmom_b_l{layer}"][k])
    rec.value("G_homo_used", k, layer, state.momentum, recording[f"G_homo_used_l{layer}"][k])
    rec.value("p_W", k, layer, direction[:, :-1], recording[f"p_W_l{layer}"][k])
    rec.value("p_b", k, layer, direction[:, -1], recording[f"p_b_l{layer}"][k])
    weight = opt.model.weights()[layer]
    rec.value("W_after", k, layer, weight[:, :-1], recording[f"W_after_l{layer}"][k])
    rec.value("b_after", k, layer, weight[:, -1], recording[f"b_after_l{layer}"][k])
    rec.value("A", k, layer, state.A, recording[f"A_l{layer}"][k])
    A_LM = state.A + eps * np.eye(state.A.shape[0])
    rec.value("A_LM", k, layer, A_LM, recording[f"A_LM_l{layer}"][k])
    rec.value("Hh_after", k, layer, state.H_a, recording[f"Hh_after_l{layer}"][k])
    rec.value("Hg_after", k, layer, dense_matrix(state.H_g), recording[f"Hg_after_l{layer}"][k])
    compare_pairs(rec, recording, info.pairs[layer], before.layers[layer].H_g, k, layer)
    if isinstance(state.H_g, LBFGSState):
        compare_store(rec, recording, state.H_g, info.pairs[layer].g_update, k, layer)
    else:
        status = STATUS[int(recording[f"bfgs_status_a_l{layer}"][k])]
        rec.flag("bfgs_status_a", k, layer, info.pairs[layer].g_update, status)


def compare_pairs(rec, recording, pair, H_g_before, k, layer):
    """The G pair at every stage, the Powell ratio, the flags, and the Hessian-action pair."""
    for ours, theirs in (
        ("s_raw", "s_a_raw"),
        ("y_raw", "y_a_raw"),
        ("s_averaged", "s_a_mom"),
        ("y_averaged", "y_a_mom"),
        ("s", "s_a_powell"),
        ("y", "y_a_final"),
        ("abar", "meanh_homo"),
        ("s_a", "s_h"),
        ("y_a", "y_h"),
    ):
        rec.value(theirs, k, layer, getattr(pair, ours), recording[f"{theirs}_l{layer}"][k])
    s, y = pair.s_averaged, pair.y_averaged
    ratio = (s @ y) / (y @ (dense_matrix(H_g_before) @ y))
    rec.value("powell_ratio", k, layer, ratio, recording[f"powell_ratio_l{layer}"][k])
    rec.flag(
        "powell_applied",
        k,
        layer,
        pair.powell_damped,
        bool(recording[f"powell_applied_l{layer}"][k]),
    )
    rec.flag("lm_applied", k, layer, pair.second_damped, bool(recording[f"lm_applied_l{layer}"][k]))
    rec.flag(
        "bfgs_status_h",
        k,
        layer,
        pair.a_update,
        STATUS[int(recording[f"bfgs_status_h_l{layer}"][k])],
    )


def compare_store(rec, recording, store, g_update, k, layer):
    """K-BFGS(L): stored pairs (oldest first), count, acceptance, gamma and R^{-1}."""
    count = int(recording[f"lbfgs_count_l{layer}"][k])
    rec.flag("lbfgs_count", k, layer, store.count, count)
    accepted = bool(recording[f"lbfgs_accepted_l{layer}"][k])
    rec.flag("lbfgs_accepted", k, layer, g_update is SkipReason.NONE, accepted)
    rec.value("lbfgs_S", k, layer, store.S[:count], recording[f"lbfgs_S_l{layer}"][k][:count])
    rec.value("lbfgs_Y", k, layer, store.Y[:count], recording[f"lbfgs_Y_l{layer}"][k][:count])
    rec.value("lbfgs_gamma", k, layer, store.gamma, recording[f"lbfgs_gamma_l{layer}"][k])
    r_inv = lbfgs_compact_factors(store).R_inv
    rec.value("lbfgs_Rinv", k, layer, r_inv, recording[f"lbfgs_Rinv_l{layer}"][k][:count, :count])


@functools.cache
def replay(case):
    """Run the recorded case once; return the Recorder of every comparison."""
    recording, hyper = load_case(case)
    model, opt = build(case, recording, hyper)
    rec = Recorder(case)
    n_layers = len(hyper["layersizes"]) - 1
    used = opt.initialize_A(recording["X_data"][index] for index in recording["idx_prepass"])
    rec.flag("hp_num_prepass_minibatches", "-", "-", used, len(recording["idx_prepass"]))
    for layer in range(n_layers):
        rec.value("A_init", "-", layer, opt.state.layers[layer].A, recording[f"A_init_l{layer}"])
    for k in range(hyper["iterations"]):
        X, T = recording["X_mb"][k], recording["T_mb"][k]
        compare_full_loss(rec, recording, model, hyper, k)
        compare_records(rec, recording, k, model.forward_backward(X, T), "")
        before, weights_before = opt.state, model.weights()
        for layer in range(n_layers):
            H_g = dense_matrix(before.layers[layer].H_g)
            rec.value("Hg_dir", k, layer, H_g, recording[f"Hg_dir_l{layer}"][k])
            if k > 0:  # at step 0 H_a is (A_LM)^{-1} of that step: checked through p below
                rec.value(
                    "Hh_dir", k, layer, before.layers[layer].H_a, recording[f"Hh_dir_l{layer}"][k]
                )
        loss = opt.step(X, T)
        rec.value("loss_mb", k, "-", loss, recording["loss_mb"][k])
        for layer in range(n_layers):
            compare_layer(rec, recording, hyper, opt, before, weights_before, k, layer)
        second = model.forward_backward(X, T)  # the second pass, repeated at the new weights
        rec.value("loss_mb_after", k, "-", second.loss, recording["loss_mb_after"][k])
        compare_records(rec, recording, k, second, "_next")
    compare_full_loss(rec, recording, model, hyper, hyper["iterations"])
    return rec


#: Recorded arrays that are inputs, not outputs, of the replay (data, index lists, initial
#: weights; the hyperparameter copies ``hp_*``), and the authors' float32-rounded loss
#: (informative only, see its JSON sidecar).
NOT_COMPARED = {
    "X_data",
    "T_data",
    "X_mb",
    "T_mb",
    "idx_mb",
    "idx_prepass",
    "init_W",
    "init_b",
    "loss_mb_authors",
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_replay_compares_every_recorded_array(case):
    recording, _ = load_case(case)
    names = {key.rsplit("_l", 1)[0] if key[-1].isdigit() else key for key in recording}
    recorded = {name for name in names - NOT_COMPARED if not name.startswith("hp_")}
    compared = set(replay(case).values) | set(replay(case).flags)
    assert recorded - compared == set()


@pytest.mark.parametrize("case", sorted(CASES))
def test_replay_values_match_recording_to_1e_12(case):
    """Floating-point quantities agree to 1e-12 relative to the largest recorded entry."""
    for entries in replay(case).values.values():
        for label, actual, expected in entries:
            assert_close(
                np.asarray(actual, dtype=float), np.asarray(expected), rtol=RTOL, what=label
            )


@pytest.mark.parametrize("case", sorted(CASES))
def test_replay_flags_match_recording_exactly(case):
    """Damping flags, skip reasons (status codes), L-BFGS counts and acceptances, pre-pass size."""
    for entries in replay(case).flags.values():
        for label, actual, expected in entries:
            assert actual == expected, f"{label}: ours {actual!r}, recorded {expected!r}"
