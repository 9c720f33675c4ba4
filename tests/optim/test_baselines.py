"""The baselines' update rules, re-derived independently, and their progress on two tiny tasks.

Part 1 (exact, float64, 1e-10): for 3 steps on a stream of minibatches, each optimizer's weight
change equals the change its paper's recursion gives, written out HERE with its own state. The
gradients come from ``model.forward_backward`` at the optimizer's current weights (the layers'
gradients are tested in ``tests/nn``); everything downstream of the gradient is re-derived:

* SGD / Adam / RMSprop on the flattened parameter vector (Adam: Kingma & Ba 2015, Algorithm 1);
* K-FAC: factors from the records by their defining sums, then a dense
  ``((A + pi sqrt(lambda) I) kron (G + sqrt(lambda)/pi I))^{-1} vec(m)`` solve built with
  ``numpy.kron`` — no use of ``kron_matvec`` or of the optimizer's inverses;
* Shampoo: inverse fourth roots by ``scipy.linalg.fractional_matrix_power`` (Schur-Pade), not eigh.

Part 2: on the autoencoder and the CNN of ``tests/optim/__init__.py`` every optimizer lowers the
full-data loss by at least ``PROGRESS_FRACTION`` of what plain SGD achieves in the same number of
steps on the same minibatches from the same weights (the threshold is measured, not hard-coded).
"""

import numpy as np
import pytest
import scipy.linalg

from kfqn_ref import optim
from kfqn_ref.curvature.factors import FisherType, kfac_factors
from tests.helpers.compare import assert_close
from tests.optim import TASKS, flat, minibatches

EXACT_STEPS = 3
EXACT_BATCH = 16
EXACT_SAMPLES = 48
RTOL = 1e-10


def exact_stream(task: str):
    """A fresh model of ``task`` and ``EXACT_STEPS`` minibatches of its data."""
    build_model, build_data = TASKS[task]
    X, T = build_data(EXACT_SAMPLES)
    return build_model(), minibatches(X, T, EXACT_BATCH, EXACT_STEPS)


def check_steps(optimizer, batches, expected_change):
    """Run ``optimizer`` on ``batches``; compare each step's weight change with the re-derivation.

    ``expected_change(k, weights, forward_backward)`` returns the expected change of every layer's
    ``W~`` at step ``k`` and advances the test's own state.
    """
    model = optimizer.model
    for k, (X, T) in enumerate(batches):
        before = model.weights()
        expected = expected_change(k, before, model.forward_backward(X, T))
        optimizer.step(X, T)
        for i, (after, old, change) in enumerate(
            zip(model.weights(), before, expected, strict=True)
        ):
            assert_close(
                after - old,
                change,
                rtol=RTOL,
                what=f"{type(optimizer).__name__} weight change of trainable layer {i} at step {k}",
            )


def unflatten_like(vector, weights):
    """Split a :func:`flat` vector back into matrices shaped like ``weights`` (column-major)."""
    pieces, start = [], 0
    for w in weights:
        pieces.append(vector[start : start + w.size].reshape(w.shape, order="F"))
        start += w.size
    return pieces


# ---------------------------------------------------------------------------------------------
# Part 1: first-order rules on the flattened parameter vector.
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("nesterov", [False, True])
@pytest.mark.parametrize("form", list(optim.MomentumForm))
def test_sgd_momentum_matches_written_out_recursion(nesterov, form):
    """v = mu v + c d, p = v (or mu v + c d), theta -= alpha p (Sutskever et al. 2013)."""
    lr, mu, tau = 0.3, 0.8, 1e-2
    c = 1.0 if form is optim.MomentumForm.HEAVY_BALL else 1.0 - mu
    model, batches = exact_stream("autoencoder")
    opt = optim.SGDMomentum(
        model, lr=lr, momentum=mu, weight_decay=tau, nesterov=nesterov, form=form
    )
    velocity = np.zeros(flat(model.weights()).size)

    def expected_change(k, weights, result):
        nonlocal velocity
        d = flat(result.grads) + tau * flat(weights)
        velocity = mu * velocity + c * d
        step = mu * velocity + c * d if nesterov else velocity
        return unflatten_like(-lr * step, weights)

    check_steps(opt, batches, expected_change)


def test_adam_matches_algorithm_1():
    """Kingma & Ba (2015), Algorithm 1, with g_t = grad f + tau theta, t = 1, 2, 3."""
    alpha, beta1, beta2, eps, tau = 0.01, 0.8, 0.95, 1e-6, 1e-3
    model, batches = exact_stream("autoencoder")
    opt = optim.Adam(model, lr=alpha, beta1=beta1, beta2=beta2, eps=eps, weight_decay=tau)
    m = v = np.zeros(flat(model.weights()).size)

    def expected_change(k, weights, result):
        nonlocal m, v
        t = k + 1
        g = flat(result.grads) + tau * flat(weights)
        m = beta1 * m + (1 - beta1) * g
        v = beta2 * v + (1 - beta2) * g**2
        m_hat = m / (1 - beta1**t)
        v_hat = v / (1 - beta2**t)
        return unflatten_like(-alpha * m_hat / (np.sqrt(v_hat) + eps), weights)

    check_steps(opt, batches, expected_change)


def test_rmsprop_matches_written_out_recursion():
    """s = rho s + (1 - rho) d^2, b = mu b + d / (sqrt(s) + eps), theta -= alpha b."""
    lr, rho, eps, mu, tau = 0.01, 0.9, 1e-6, 0.5, 1e-3
    model, batches = exact_stream("autoencoder")
    opt = optim.RMSprop(model, lr=lr, decay=rho, eps=eps, momentum=mu, weight_decay=tau)
    s = b = np.zeros(flat(model.weights()).size)

    def expected_change(k, weights, result):
        nonlocal s, b
        d = flat(result.grads) + tau * flat(weights)
        s = rho * s + (1 - rho) * d**2
        b = mu * b + d / (np.sqrt(s) + eps)
        return unflatten_like(-lr * b, weights)

    check_steps(opt, batches, expected_change)


# ---------------------------------------------------------------------------------------------
# Part 1: K-FAC against a dense Kronecker solve.
# ---------------------------------------------------------------------------------------------


def empirical_factors(record):
    """The minibatch factors from their defining sums (Martens & Grosse 2015; KFC 2016, §3.1).

    Dense: ``A = (1/N) sum_n a~ a~^T``, ``G = (1/N) sum_n g g^T``. Conv (``T`` positions):
    ``A = (1/N) sum_n sum_t a~ a~^T`` and ``G = (1/(N T)) sum_n sum_t g g^T``. ``g`` are the
    true-target gradients of the record, i.e. the empirical Fisher.
    """
    a, g = record.a, record.g
    n_samples = a.shape[0]
    if a.ndim == 2:
        return a.T @ a / n_samples, g.T @ g / n_samples
    n_positions = a.shape[1]
    A = np.einsum("ntd,nte->de", a, a) / n_samples
    G = np.einsum("ntd,nte->de", g, g) / (n_samples * n_positions)
    return A, G


def dense_kfac_direction(A, G, damping, momentum_matrix):
    """``unvec(((A + pi r I) kron (G + r/pi I))^{-1} vec(m))``, ``r = sqrt(lambda)``, dense."""
    pi = np.sqrt((np.trace(A) / A.shape[0]) / (np.trace(G) / G.shape[0]))
    root = np.sqrt(damping)
    damped = np.kron(A + pi * root * np.eye(A.shape[0]), G + root / pi * np.eye(G.shape[0]))
    solution = np.linalg.solve(damped, momentum_matrix.ravel(order="F"))
    return solution.reshape(momentum_matrix.shape, order="F")


@pytest.mark.parametrize(("factor_interval", "inverse_interval"), [(1, 2), (2, 1)])
@pytest.mark.parametrize("task", ["autoencoder", "cnn"])
def test_kfac_matches_dense_kronecker_solve(task, factor_interval, inverse_interval):
    """3 steps; factors averaged at steps ``k % factor_interval == 0``, inverses refreshed at steps
    ``k % inverse_interval == 0`` (so stale factors and stale inverses are both exercised).

    Expected, per layer: at the ``j``-th factor update ``A <- beta_j A + (1 - beta_j) A_B`` with
    ``beta_j = min(1 - 1/(j+1), beta)`` (same for ``G``); at a refresh the damped factors are
    frozen; ``m = mu m + (1 - mu) d``; the change is ``-alpha`` times the dense Kronecker solve of
    :func:`dense_kfac_direction` with the frozen factors.
    """
    lr, damping, beta, mu, tau = 0.2, 0.05, 0.6, 0.7, 1e-3
    model, batches = exact_stream(task)
    opt = optim.KFAC(
        model, lr=lr, damping=damping, ema_decay=beta, momentum=mu, weight_decay=tau,
        factor_interval=factor_interval, inverse_interval=inverse_interval,
        fisher=FisherType.EMPIRICAL,
    )  # fmt: skip
    layers = len(model.trainable_indices)
    A, G, frozen = [0.0] * layers, [0.0] * layers, [None] * layers
    m = [np.zeros_like(w) for w in model.weights()]
    factor_updates = 0

    def expected_change(k, weights, result):
        nonlocal factor_updates
        decay = min(1 - 1 / (factor_updates + 1), beta)
        update_factors = k % factor_interval == 0
        factor_updates += update_factors
        changes = []
        for i, record in enumerate(result.records):
            if update_factors:
                A_batch, G_batch = empirical_factors(record)
                A[i] = decay * A[i] + (1 - decay) * A_batch
                G[i] = decay * G[i] + (1 - decay) * G_batch
            if k % inverse_interval == 0:
                frozen[i] = (A[i], G[i])
            m[i] = mu * m[i] + (1 - mu) * (record.grad + tau * weights[i])
            changes.append(-lr * dense_kfac_direction(*frozen[i], damping, m[i]))
        return changes

    check_steps(opt, batches, expected_change)


@pytest.mark.parametrize("task", ["autoencoder", "cnn"])
def test_kfac_monte_carlo_step_uses_the_documented_draws(task):
    """Step 0 with the default Monte-Carlo Fisher: the factors are ``kfac_factors`` drawn with
    ``default_rng([seed, 0])`` (KFACConfig.seed), and the change is the dense Kronecker solve."""
    lr, damping, seed = 0.2, 0.05, 7
    model, batches = exact_stream(task)
    X, T = batches[0]
    opt = optim.KFAC(model, lr=lr, damping=damping, momentum=0.0, weight_decay=0.0, seed=seed)
    factors = kfac_factors(
        model,
        model.forward_pass(X),
        T,
        FisherType.MONTE_CARLO,
        rng=np.random.default_rng([seed, 0]),
    )
    grads = model.forward_backward(X, T).grads
    before = model.weights()
    opt.step(X, T)
    for i, (after, old, f, grad) in enumerate(
        zip(model.weights(), before, factors, grads, strict=True)
    ):
        expected = -lr * dense_kfac_direction(f.A, f.G, damping, grad)
        assert_close(after - old, expected, rtol=RTOL, what=f"KFAC (MC) change of layer {i}")


def test_kfac_damping_split_keeps_the_product_and_equalises_the_mean_eigenvalues():
    """pi rule (Martens & Grosse 2015, §6.3): lambda_A lambda_G = lambda and lambda_A / lambda_G =
    pi^2 = mean eigenvalue of A / mean eigenvalue of G; the EQUAL split gives sqrt(lambda) each."""
    rng = np.random.default_rng(0)
    a, g = rng.standard_normal((5, 3)), rng.standard_normal((2, 4))
    A, G, damping = a.T @ a, 10.0 * g.T @ g, 0.3
    lambda_A, lambda_G = optim.kfac.split_damping(A, G, damping, optim.KFACDampingSplit.PI)
    assert_close(lambda_A * lambda_G, damping, what="lambda_A lambda_G")
    assert_close(lambda_A / lambda_G, (np.trace(A) / 3) / (np.trace(G) / 4), what="pi^2")
    equal = optim.kfac.split_damping(A, G, damping, optim.KFACDampingSplit.EQUAL)
    assert_close(np.array(equal), np.full(2, np.sqrt(damping)), what="EQUAL split")


# ---------------------------------------------------------------------------------------------
# Part 1: Shampoo against scipy's fractional matrix power.
# ---------------------------------------------------------------------------------------------


def inverse_fourth_root(M):
    """``M^{-1/4}`` by scipy's Schur-Pade ``fractional_matrix_power`` (complex dtype, real here)."""
    root = scipy.linalg.fractional_matrix_power(M, -0.25)
    assert np.max(np.abs(root.imag)) <= RTOL * np.max(np.abs(root.real)), "M^{-1/4} is not real"
    return root.real


@pytest.mark.parametrize("task", ["autoencoder", "cnn"])
def test_shampoo_matches_fractional_matrix_power(task):
    """L += d d^T, R += d^T d from eps I; roots refreshed at steps 0 and 2 (interval 2);
    change = -eta L^{-1/4} m R^{-1/4} with heavy-ball momentum m = mu m + d."""
    lr, eps, mu, tau, interval = 0.05, 1e-2, 0.5, 1e-3, 2
    model, batches = exact_stream(task)
    opt = optim.Shampoo(
        model, lr=lr, eps=eps, momentum=mu, weight_decay=tau, root_interval=interval,
        momentum_form=optim.MomentumForm.HEAVY_BALL,
    )  # fmt: skip
    weights = model.weights()
    L = [eps * np.eye(w.shape[0]) for w in weights]
    R = [eps * np.eye(w.shape[1]) for w in weights]
    roots = [None] * len(weights)
    m = [np.zeros_like(w) for w in weights]

    def expected_change(k, weights, result):
        changes = []
        for i, (grad, w) in enumerate(zip(result.grads, weights, strict=True)):
            d = grad + tau * w
            L[i] = L[i] + d @ d.T
            R[i] = R[i] + d.T @ d
            if k % interval == 0:
                roots[i] = (inverse_fourth_root(L[i]), inverse_fourth_root(R[i]))
            m[i] = mu * m[i] + d
            changes.append(-lr * roots[i][0] @ m[i] @ roots[i][1])
        return changes

    check_steps(opt, batches, expected_change)


# ---------------------------------------------------------------------------------------------
# Part 2: progress on the two tasks, measured against plain SGD.
# ---------------------------------------------------------------------------------------------

PROGRESS_STEPS = 40
PROGRESS_BATCH = 64
PROGRESS_SAMPLES = 256
#: The first-order reference run: plain SGD (no momentum) with this learning rate.
REFERENCE_SGD_LR = 0.1
#: Each optimizer must lower the full-data loss by at least this fraction of the reference's
#: decrease (on the autoencoder all methods reach the same plateau, hence a fraction below 1).
PROGRESS_FRACTION = 0.9

#: One hyperparameter setting per optimizer, used on both tasks (chosen by hand on seed 0).
PROGRESS_SETTINGS = {
    "SGDMomentum": (optim.SGDMomentum, {"lr": 0.1, "momentum": 0.9}),
    "Adam": (optim.Adam, {"lr": 0.03}),
    "RMSprop": (optim.RMSprop, {"lr": 0.01}),
    "KFAC": (optim.KFAC, {"lr": 0.3, "damping": 0.1, "inverse_interval": 5}),
    "Shampoo": (optim.Shampoo, {"lr": 1.0, "momentum": 0.9}),
}


def loss_decrease(task: str, optimizer_class, options) -> float:
    """Full-data loss before minus after ``PROGRESS_STEPS`` steps on consecutive minibatches."""
    build_model, build_data = TASKS[task]
    X, T = build_data(PROGRESS_SAMPLES)
    model = build_model()
    optimizer = optimizer_class(model, **options)
    initial = model.loss.value(model.forward(X), T)
    for X_batch, T_batch in minibatches(X, T, PROGRESS_BATCH, PROGRESS_STEPS):
        optimizer.step(X_batch, T_batch)
    return initial - model.loss.value(model.forward(X), T)


@pytest.mark.parametrize("task", sorted(TASKS))
@pytest.mark.parametrize("name", sorted(PROGRESS_SETTINGS))
def test_every_optimizer_makes_at_least_most_of_plain_sgds_progress(task, name):
    reference = loss_decrease(task, optim.SGDMomentum, {"lr": REFERENCE_SGD_LR, "momentum": 0.0})
    assert reference > 0, f"the plain SGD reference did not lower the {task} loss"
    optimizer_class, options = PROGRESS_SETTINGS[name]
    decrease = loss_decrease(task, optimizer_class, options)
    assert decrease >= PROGRESS_FRACTION * reference, (
        f"{name} lowered the {task} loss by {decrease:.4f} in {PROGRESS_STEPS} steps; plain SGD "
        f"(lr {REFERENCE_SGD_LR}) by {reference:.4f}; required {PROGRESS_FRACTION} x that"
    )
