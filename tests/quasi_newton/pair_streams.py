"""Random SPD matrices and adversarial (s, y) pair streams for the quasi-Newton tests.

Directions come from a seeded ``numpy.random.Generator``; hypothesis draws the seed, the kinds and
the scales, so a failing stream is reproducible from the printed example.
"""

import numpy as np
from hypothesis import strategies as st

#: Kinds of adversarial pairs (see :func:`make_pair`).
PAIR_KINDS = (
    "random",
    "negative_curvature",
    "parallel",
    "nearly_orthogonal",
    "repeat_previous",
    "zero_y",
)
#: Decimal exponents of the scales of s and y: from 1e-8 to 1e8.
LOG10_SCALE = (-8.0, 8.0)


def random_spd(rng, d, *, log10_eig=(-2.0, 2.0), dtype=np.float64):
    """``Q diag(lambda) Q^T`` with ``log10(lambda)`` uniform in ``log10_eig``, exactly symmetric."""
    Q, _ = np.linalg.qr(rng.standard_normal((d, d)))
    eigenvalues = 10.0 ** rng.uniform(*log10_eig, size=d)
    A = (Q * eigenvalues) @ Q.T
    return ((A + A.T) / 2).astype(dtype)


def unit(rng, d):
    v = rng.standard_normal(d)
    return v / np.linalg.norm(v)


def make_pair(rng, d, kind, log_s, log_y, previous=None):
    """One pair ``(s, y)`` of the given kind; ``||s|| = 10^log_s`` and ``||y|| ~ 10^log_y``.

    random: independent directions (either sign of curvature); negative_curvature:
    ``y = -c s + 1e-3 noise``; parallel: ``y = c s (1 + 1e-9 noise)``, nearly singular
    directions; nearly_orthogonal: ``y`` orthogonal to ``s`` up to ``1e-9`` (curvature of
    either sign, tiny); repeat_previous: the previous pair perturbed by ``1e-9`` (nearly parallel
    successive pairs); zero_y: ``y = 0``.
    """
    s = 10.0**log_s * unit(rng, d)
    u = unit(rng, d)
    if kind == "random":
        return s, 10.0**log_y * u
    if kind == "negative_curvature":
        return s, 10.0**log_y * (-s / np.linalg.norm(s) + 1e-3 * u)
    if kind == "parallel":
        return s, 10.0**log_y * (s / np.linalg.norm(s)) * (1.0 + 1e-9 * u)
    if kind == "nearly_orthogonal":
        w = u - (u @ s) / (s @ s) * s  # zero when d = 1
        w_norm = np.linalg.norm(w)
        w = (w / w_norm if w_norm > 0 else w) + 1e-9 * rng.standard_normal() * s / np.linalg.norm(s)
        return s, 10.0**log_y * w
    if kind == "repeat_previous" and previous is not None:
        s_prev, y_prev = previous
        return s_prev * (1.0 + 1e-9 * u), y_prev * (1.0 + 1e-9 * unit(rng, d))
    if kind == "repeat_previous":
        return s, 10.0**log_y * u
    if kind == "zero_y":
        return s, np.zeros(d)
    raise AssertionError(f"unknown pair kind {kind!r}")


def make_stream(seed, d, specs):
    """A list of pairs from ``specs`` = [(kind, log_s, log_y), ...]."""
    rng = np.random.default_rng(seed)
    pairs = []
    for kind, log_s, log_y in specs:
        pairs.append(make_pair(rng, d, kind, log_s, log_y, pairs[-1] if pairs else None))
    return pairs


def pair_specs(n_pairs):
    """Hypothesis strategy for ``n_pairs`` (kind, log_s, log_y) triples."""
    scale = st.floats(*LOG10_SCALE, allow_nan=False, allow_infinity=False)
    return st.lists(
        st.tuples(st.sampled_from(PAIR_KINDS), scale, scale),
        min_size=n_pairs,
        max_size=n_pairs,
    )


def positive_pair(rng, d, *, dtype=np.float64):
    """A pair with ``s^T y > 0`` well away from zero (a ``y = A s`` of a random SPD ``A``)."""
    s = rng.standard_normal(d)
    A = random_spd(rng, d, log10_eig=(-1.0, 1.0))
    return s.astype(dtype), (A @ s).astype(dtype)


#: Kinds of :func:`curved_stream` pairs.
CURVED_KINDS = ("curved", "negative", "zero_y")


def curved_stream(rng, d, kinds):
    """Well-scaled pairs: "curved" is ``y = A s`` for a fresh SPD ``A`` (eigenvalues in
    ``[0.1, 10]``), "negative" is ``-A s``, "zero_y" is ``y = 0``. Curvature ratios stay bounded,
    so plain BFGS stays well conditioned and floating-point comparisons stay meaningful."""
    pairs = []
    for kind in kinds:
        s, y = positive_pair(rng, d)
        pairs.append((s, {"curved": y, "negative": -y, "zero_y": np.zeros(d)}[kind]))
    return pairs
