"""The K-BFGS step equals its slow dense twin (1e-10, float64), for dense and conv nets.

Expected values come from an independent route written out in this file: the gradient as
``(1/N) sum_n sum_t g a~^T`` (einsum), ``A`` as an explicit sum of outer products over samples and
positions, the direction as ``unvec(-(H_a kron H_g) vec(m))`` with an explicit Kronecker product
(column-major vec, conventions §5), the BFGS inverse update in its product form
``(I - rho s y^T) H (I - rho y s^T) + rho s s^T`` (the optimizer uses the expanded form), L-BFGS
stores as dense BFGS from ``gamma I`` over the last ``p`` accepted pairs, and the dampings and skip
rules of docs/optimizers/kbfgs.md written out. Only the network records ``a~, h, g`` are shared
(tested in ``tests/nn``).
"""

import math
from dataclasses import dataclass, field

import numpy as np
import pytest
from helpers.compare import assert_close

from kfqn_ref import nn
from kfqn_ref.optim import KBFGS, KBFGSL, KBFGSDampingSplit, KBFGSVariant
from kfqn_ref.quasi_newton import LBFGSState, lbfgs_compact_apply

RTOL = 1e-10
N, STEPS = 4, 5


def dense_net():
    layers = [nn.Dense(4, 3), nn.Tanh(), nn.Dense(3, 3, bias=False), nn.Sigmoid(), nn.Dense(3, 2)]
    return nn.Sequential(layers, loss=nn.SquaredError(), seed=1), (N, 4), 2


def conv_net():
    layers = [
        nn.Conv2d(1, 2, 3, padding=1),
        nn.Tanh(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Dense(8, 3),
    ]
    return nn.Sequential(layers, loss=nn.SoftmaxCrossEntropy(), seed=2), (N, 1, 4, 4), 3


def minibatches(net, seed=0):
    model, shape, classes = net
    rng = np.random.default_rng(seed)
    for _ in range(STEPS):
        X = rng.standard_normal(shape)
        T = (
            rng.standard_normal((N, classes))
            if isinstance(model.loss, nn.SquaredError)
            else rng.integers(0, classes, size=N)
        )
        yield X, T


# --------------------------------------------------------------------------------------------
# The twin
# --------------------------------------------------------------------------------------------


def as_positions(x):
    """Records as (N, T, d): dense arrays get T = 1."""
    return x if x.ndim == 3 else x[:, None, :]


def vec(M):
    return M.flatten(order="F")


def unvec(v, shape):
    return v.reshape(shape, order="F")


def bfgs_product_form(H, s, y):
    rho = 1.0 / (s @ y)
    V = np.eye(len(s)) - rho * np.outer(y, s)
    return V.T @ H @ V + rho * np.outer(s, s)


def dense_from_pairs(gamma, pairs, d):
    H = gamma * np.eye(d)
    for s, y in pairs:
        H = bfgs_product_form(H, s, y)
    return H


def powell(s, y, H, mu1):
    """Powell in H-form: s <- theta s + (1 - theta) H y when s^T y < mu1 y^T H y."""
    Hy = H @ y
    if s @ y < mu1 * (y @ Hy):
        theta = (1 - mu1) * (y @ Hy) / (y @ Hy - s @ y)
        s = theta * s + (1 - theta) * Hy
    return s


def second_damping_2020(s, y, eps):
    if s @ y < eps * (s @ s):
        theta = (1 - eps) * (s @ s) / (s @ s - s @ y)
        y = theta * y + (1 - theta) * s
    return y


def accepted(s, y, threshold, gbar_norm):
    return s @ y > 0 and s @ y > threshold * (s @ s) * gbar_norm


@dataclass
class TwinLayer:
    m: np.ndarray
    A: np.ndarray | None
    H_a: np.ndarray | None  # dense H_a, or None when pairs_a is used
    H_g: np.ndarray | None  # dense H_g, or None when pairs_g is used
    s_avg: np.ndarray
    y_avg: np.ndarray
    pairs_a: list = field(default_factory=list)
    pairs_g: list = field(default_factory=list)


class Twin:
    """K-BFGS of docs/optimizers/kbfgs.md with explicit Kronecker products and dense matrices."""

    def __init__(self, model, cfg, limited_g, memory_light):
        self.model, self.cfg = model, cfg
        self.limited_g, self.memory_light = limited_g, memory_light
        self.variant = cfg.variant
        self.weights = model.weights()
        self.k = 0
        self.prepassed = False
        self.a_powell_acted = 0  # convergent A-side pairs that Powell changed
        self.layers = []
        for index, W in zip(model.trainable_indices, self.weights, strict=True):
            d_out, d1 = W.shape
            running = self.variant is KBFGSVariant.AUTHORS_2020 or (
                self.variant is KBFGSVariant.KFQN_2022
                and not memory_light
                and isinstance(model.layers[index], nn.Dense)
            )
            self.layers.append(
                TwinLayer(
                    m=np.zeros_like(W),
                    A=np.zeros((d1, d1)) if running else None,
                    H_a=None if memory_light else np.eye(d1),
                    H_g=None if limited_g else cfg.hg_initial * np.eye(d_out),
                    s_avg=np.zeros(d_out),
                    y_avg=np.zeros(d_out),
                )
            )

    # the factors as matrices
    def H_a(self, layer, d1):
        return (
            layer.H_a
            if layer.H_a is not None
            else dense_from_pairs(self.cfg.ha_initial, layer.pairs_a, d1)
        )

    def H_g(self, layer, d_out):
        return (
            layer.H_g
            if layer.H_g is not None
            else dense_from_pairs(self.cfg.hg_initial, layer.pairs_g, d_out)
        )

    def shares(self, a):
        root = math.sqrt(self.cfg.damping)
        if self.cfg.damping_split is KBFGSDampingSplit.SQRT_T:
            sqrt_T = math.sqrt(as_positions(a).shape[1])
            return root * sqrt_T, root / sqrt_T
        return root, root

    def batch_A(self, a, position_average):
        a3 = as_positions(a)
        A = np.einsum("nti,ntj->ij", a3, a3) / a3.shape[0]
        return A / a3.shape[1] if position_average else A

    def prepass(self, inputs):
        for j, X in enumerate(inputs, start=1):
            self.model.set_weights(self.weights)
            for layer, record in zip(self.layers, self.model.forward_pass(X).records, strict=True):
                if layer.A is not None:
                    layer.A = (layer.A * (j - 1) + self.batch_A(record.a, False)) / j
        self.prepassed = True

    def records(self, weights, X, T):
        self.model.set_weights(weights)
        return self.model.forward_backward(X, T, weight_gradients=False).records

    def step(self, X, T):
        cfg, k = self.cfg, self.k
        update = k % cfg.update_interval == 0
        first = self.records(self.weights, X, T)
        directions = []
        for layer, record, W in zip(self.layers, first, self.weights, strict=True):
            a3, g3 = as_positions(record.a), as_positions(record.g)
            grad = np.einsum("nti,ntj->ij", g3, a3) / a3.shape[0]
            layer.m = cfg.momentum * layer.m + (1 - cfg.momentum) * (grad + cfg.weight_decay * W)
            if update and layer.A is not None and not (k == 0 and self.prepassed):
                layer.A = cfg.a_decay * layer.A + (1 - cfg.a_decay) * self.batch_A(record.a, False)
            if update and k == 0 and layer.H_a is not None:
                A0 = (
                    layer.A
                    if layer.A is not None
                    else self.batch_A(record.a, cfg.conv_position_average)
                )
                layer.H_a = np.linalg.inv(A0 + self.shares(record.a)[0] * np.eye(len(A0)))
            d_out, d1 = W.shape
            H = np.kron(self.H_a(layer, d1), self.H_g(layer, d_out))
            directions.append(unvec(-H @ vec(layer.m), W.shape))
        new_weights = [W + cfg.lr * p for W, p in zip(self.weights, directions, strict=True)]
        if update:
            second = self.records(new_weights, X, T)
            for layer, old, new in zip(self.layers, first, second, strict=True):
                self.update_g(layer, old, new)
                self.update_a(layer, old)
        self.weights, self.k = new_weights, k + 1
        return directions

    def update_g(self, layer, old, new):
        cfg = self.cfg
        lambda_G = self.shares(old.a)[1]

        def mean(x):
            return as_positions(x).reshape(-1, x.shape[-1]).mean(axis=0)

        gbar = mean(old.g)
        s_new = mean(old.h) - mean(new.h)
        layer.s_avg = cfg.pair_decay * layer.s_avg + (1 - cfg.pair_decay) * s_new
        layer.y_avg = cfg.pair_decay * layer.y_avg + (1 - cfg.pair_decay) * (gbar - mean(new.g))
        s, y = layer.s_avg, layer.y_avg
        d_out = len(s)
        if self.variant is KBFGSVariant.CONVERGENT:
            s = powell(s, y, cfg.hg_initial * np.eye(d_out), cfg.powell_mu1)
            y = y + lambda_G * s
            gbar_norm = 0.0
        else:
            s = powell(s, y, self.H_g(layer, d_out), cfg.powell_mu1)
            y = (
                second_damping_2020(s, y, lambda_G)
                if self.variant is KBFGSVariant.AUTHORS_2020
                else y + lambda_G * s
            )
            gbar_norm = np.linalg.norm(gbar)
        if not accepted(s, y, cfg.skip_threshold, gbar_norm):
            return
        if layer.H_g is not None:
            layer.H_g = bfgs_product_form(layer.H_g, s, y)
        else:
            layer.pairs_g = (layer.pairs_g + [(s, y)])[-cfg.memory :]

    def update_a(self, layer, old):
        cfg = self.cfg
        lambda_A = self.shares(old.a)[0]
        abar = as_positions(old.a).reshape(-1, old.a.shape[-1]).mean(axis=0)
        d1 = len(abar)
        A = layer.A if layer.A is not None else self.batch_A(old.a, cfg.conv_position_average)
        s = self.H_a(layer, d1) @ abar
        if self.variant is KBFGSVariant.CONVERGENT:
            y = A @ s
            damped = powell(s, y, cfg.ha_initial * np.eye(d1), cfg.powell_mu1)
            self.a_powell_acted += not np.array_equal(damped, s)
            s = damped
            y = y + lambda_A * s
        else:
            y = (A + lambda_A * np.eye(d1)) @ s
        gbar_norm = np.linalg.norm(abar) if layer.H_a is not None else 0.0
        if not accepted(s, y, cfg.skip_threshold, gbar_norm):
            return
        if layer.H_a is not None:
            layer.H_a = bfgs_product_form(layer.H_a, s, y)
        else:
            layer.pairs_a = (layer.pairs_a + [(s, y)])[-cfg.memory :]


# --------------------------------------------------------------------------------------------
# The comparison
# --------------------------------------------------------------------------------------------


def as_matrix(H):
    if isinstance(H, LBFGSState):
        return lbfgs_compact_apply(H, np.eye(H.S.shape[1]))
    return H


CASES = {
    "dense-KBFGS-2020-prepass": (dense_net, KBFGS, dict(variant=KBFGSVariant.AUTHORS_2020)),
    "dense-KBFGSL-2020-prepass": (
        dense_net,
        KBFGSL,
        dict(variant=KBFGSVariant.AUTHORS_2020, memory=2),
    ),
    "dense-KBFGS-2022-interval2": (dense_net, KBFGS, dict(update_interval=2, weight_decay=1e-2)),
    "conv-KBFGS-2022": (conv_net, KBFGS, dict()),
    # a large skip threshold makes the authors' relative skip rule reject some pairs of each side
    "dense-KBFGS-2022-skips": (dense_net, KBFGS, dict(skip_threshold=3.0)),
    "conv-KBFGSL-2022-skips": (conv_net, KBFGSL, dict(skip_threshold=3.0, memory=2)),
    "conv-KBFGS-2022-sqrtT-mean-interval2": (
        conv_net,
        KBFGS,
        dict(damping_split=KBFGSDampingSplit.SQRT_T, conv_position_average=True, update_interval=2),
    ),
    "conv-KBFGSL-2022": (conv_net, KBFGSL, dict(memory=2)),
    "conv-KBFGSL-2022-memory-light": (conv_net, KBFGSL, dict(memory=2, memory_light=True)),
    "dense-KBFGSL-convergent": (
        dense_net,
        KBFGSL,
        dict(
            variant=KBFGSVariant.CONVERGENT,
            memory=2,
            memory_light=True,
            momentum=0.0,
            hg_initial=0.5,
            ha_initial=2.0,
        ),
    ),
    "conv-KBFGSL-convergent": (
        conv_net,
        KBFGSL,
        dict(variant=KBFGSVariant.CONVERGENT, memory=2, memory_light=True, momentum=0.0),
    ),
    # H_0 = gamma I with gamma = ha_initial != 1 on the A side, where Powell acts (asserted
    # below): the damping must use the store's gamma, not 1
    "conv-KBFGSL-convergent-ha-initial": (
        conv_net,
        KBFGSL,
        dict(
            variant=KBFGSVariant.CONVERGENT,
            memory=2,
            memory_light=True,
            momentum=0.0,
            hg_initial=0.5,
            ha_initial=2.0,
        ),
    ),
}

#: Cases whose A-side Powell damping must act at least once (else gamma would not be tested).
A_POWELL_ACTS = {"conv-KBFGSL-convergent-ha-initial"}


@pytest.mark.parametrize("case", sorted(CASES))
def test_step_equals_dense_kronecker_twin(case):
    make_net, cls, options = CASES[case]
    net = make_net()
    opt = cls(net[0], **options)
    memory_light = getattr(opt.config, "memory_light", False)
    twin = Twin(make_net()[0], opt.config, cls is KBFGSL, memory_light)
    if "prepass" in case:
        inputs = [X for X, _ in minibatches(net, seed=1)][:2]
        opt.initialize_A(inputs)
        twin.prepass(inputs)
    updates = 0
    for k, (X, T) in enumerate(minibatches(net)):
        opt.step(X, T)
        expected = twin.step(X, T)
        updates += bool(opt.last_step.pairs)
        for layer_index, (state, layer) in enumerate(
            zip(opt.state.layers, twin.layers, strict=True)
        ):
            where = f"{case}, step {k}, layer {layer_index}"
            d_out, d1 = state.momentum.shape
            assert_close(
                opt.last_step.directions[layer_index],
                expected[layer_index],
                rtol=RTOL,
                what=f"direction, {where}",
            )
            assert_close(
                as_matrix(state.H_g), twin.H_g(layer, d_out), rtol=RTOL, what=f"H_g, {where}"
            )
            assert_close(as_matrix(state.H_a), twin.H_a(layer, d1), rtol=RTOL, what=f"H_a, {where}")
            if layer.A is not None:
                assert_close(state.A, layer.A, rtol=RTOL, what=f"A, {where}")
            assert_close(
                opt.model.weights()[layer_index],
                twin.weights[layer_index],
                rtol=RTOL,
                what=f"W, {where}",
            )
    assert updates == -(-STEPS // opt.config.update_interval)
    if case in A_POWELL_ACTS:
        assert twin.a_powell_acted > 0, f"{case}: A-side Powell never acted"
