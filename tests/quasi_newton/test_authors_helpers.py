"""The quasi-Newton blocks reproduce the authors' 2020 helpers (``tests/data/units_helpers.npz``).

The recording (see ``tests/data/README.md``) calls ``kbfgs_utils.get_BFGS_formula``,
``get_BFGS_PowellHDamping``, ``get_BFGS_ModifiedDamping``, ``Kron_LBFGS_append_s_y`` and
``LBFGS_Hv`` of github renyiryry/kbfgs_neurips2020_public on hand-made float64 inputs chosen to
reach every branch. Expected values are the recorded outputs (an independent implementation, in
PyTorch); tolerances are 1e-12 relative to the largest recorded entry (same formulas, different
summation orders).
"""

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from kfqn_ref.quasi_newton import (
    GammaRule,
    SkipReason,
    bfgs_inverse_update,
    lbfgs_append,
    lbfgs_compact_apply,
    lbfgs_compact_factors,
    lbfgs_init,
    lbfgs_inverse_matrix,
    lbfgs_pairs,
    lbfgs_two_loop,
    powell_damping,
    second_damping,
)
from tests.helpers.compare import assert_close

DATA = Path(__file__).resolve().parents[1] / "data"
RTOL = 1e-12

#: The authors' integer statuses of get_BFGS_formula and what each recorded case checks.
BFGS_CASES = {
    0: (SkipReason.NONE, "ordinary update (s^T y > 0 above the relative threshold)"),
    1: (SkipReason.NON_POSITIVE_CURVATURE, "s^T y < 0: skipped, H unchanged"),
    2: (SkipReason.BELOW_RELATIVE_THRESHOLD, "0 < s^T y <= 1e-4 s^T s ||g_k||: skipped"),
    3: (SkipReason.NON_FINITE_RESULT, "s^T y = 1e-160: rho^2 overflows, H unchanged (status 4)"),
    4: (SkipReason.NON_POSITIVE_CURVATURE, "s^T y = 0 exactly with g_k = 0: skipped"),
}


@pytest.fixture(scope="module")
def recorded():
    sidecar = json.loads((DATA / "units_helpers.json").read_text())
    digest = hashlib.sha256((DATA / "units_helpers.npz").read_bytes()).hexdigest()
    assert digest == sidecar["npz_sha256"], "units_helpers.npz does not match its sidecar"
    with np.load(DATA / "units_helpers.npz", allow_pickle=False) as data:
        return {name: data[name] for name in data.files}


@pytest.mark.parametrize("case", sorted(BFGS_CASES))
def test_bfgs_formula_cases(recorded, case):
    """get_BFGS_formula cases 0-4: the skip status and the returned matrix."""
    reason, _what = BFGS_CASES[case]
    key = f"bfgs_{case}_"
    result = bfgs_inverse_update(
        recorded[key + "H_in"],
        recorded[key + "s"],
        recorded[key + "y"],
        gbar_norm=float(np.linalg.norm(recorded[key + "g_k"])),
    )
    assert result.reason is reason, f"case {case}: {result.reason} != {reason}"
    assert result.updated == (reason is SkipReason.NONE)
    assert_close(result.H, recorded[key + "H_out"], rtol=RTOL, what=f"bfgs case {case}: H_out")


def test_bfgs_formula_case_5_departs_from_the_recording_by_staying_finite(recorded):
    """Case 5 (s^T y = 1e-300, g_k = 0): rho^2 = inf times y^T H y underflowed to 0 is NaN; the
    authors' code tests only isinf, so it reports success (status 0) with a NaN matrix. Our update
    rejects any non-finite result (NON_FINITE_RESULT) and returns the input H."""
    key = "bfgs_5_"
    assert int(recorded[key + "status"]) == 0
    assert np.isnan(recorded[key + "H_out"]).any()
    result = bfgs_inverse_update(
        recorded[key + "H_in"],
        recorded[key + "s"],
        recorded[key + "y"],
        gbar_norm=float(np.linalg.norm(recorded[key + "g_k"])),
    )
    assert result.reason is SkipReason.NON_FINITE_RESULT
    assert result.H is recorded[key + "H_in"]


@pytest.mark.parametrize("case", [0, 1, 2])
def test_powell_damping_cases(recorded, case):
    """get_BFGS_PowellHDamping (mu1 = 0.2, H a matrix): case 0 ratio > mu1 (no damping), case 1
    0 < ratio < mu1, case 2 negative curvature (ratio < 0). y is never changed."""
    key = f"powell_{case}_"
    s, y, H = recorded[key + "s_in"], recorded[key + "y_in"], recorded[key + "H"]
    result = powell_damping(s, y, H, mu1=0.2)
    assert result.damped == bool(recorded[key + "ratio"] <= 0.2)
    assert_close(result.s, recorded[key + "s_out"], rtol=RTOL, what=f"powell case {case}: s")
    assert_close(result.y, recorded[key + "y_out"], rtol=RTOL, what=f"powell case {case}: y")


@pytest.mark.parametrize("case", [0, 1, 2])
def test_second_damping_cases(recorded, case):
    """get_BFGS_ModifiedDamping with Kron_BFGS_H_epsilon = 0.3 (recorded as ``lm_*`` / ``mu2``, but
    it is the 2020 second damping ``y <- theta y + (1 - theta) s``, not Levenberg–Marquardt):
    case 0 s^T y / s^T s > eps (unchanged), case 1 0 < ratio < eps, case 2 negative curvature."""
    key = f"lm_{case}_"
    s, y = recorded[key + "s_in"], recorded[key + "y_in"]
    result = second_damping(s, y, eps=float(recorded[key + "mu2"]))
    assert result.damped == bool(s @ y <= float(recorded[key + "mu2"]) * (s @ s))
    assert_close(result.s, recorded[key + "s_out"], rtol=RTOL, what=f"second damping {case}: s")
    assert_close(result.y, recorded[key + "y_out"], rtol=RTOL, what=f"second damping {case}: y")


@pytest.mark.parametrize(
    ("tag", "gamma_rule"), [("g1", GammaRule.FIXED), ("gauto", GammaRule.NEWEST_PAIR)]
)
def test_lbfgs_sequence(recorded, tag, gamma_rule):
    """Kron_LBFGS_append_s_y + LBFGS_Hv, memory 3, seven pairs: step 2 has negative curvature and
    step 4 has s^T y = 1e-7 s^T s (both rejected); steps 5-6 wrap the window. 'g1' is a fixed
    gamma = 1 (K-BFGS(L)); 'gauto' is gamma = s^T y / y^T y of the newest pair. Checked after
    every call: acceptance, stored pairs (oldest first), gamma, R^{-1}, H v (compact form and
    two-loop) and the dense H (compact, two-loop and dense-BFGS twins)."""
    state = lbfgs_init(4, 3, gamma=1.0)
    for step in range(7):
        key = f"lbfgs_{tag}_step{step}_"
        result = lbfgs_append(
            state,
            recorded[key + "s"],
            recorded[key + "y"],
            gbar_norm=float(np.linalg.norm(recorded[key + "g_k"])),
            gamma_rule=gamma_rule,
        )
        state = result.state
        where = f"L-BFGS {tag} step {step}"
        assert result.accepted == bool(recorded[key + "accepted"]), where
        assert (result.reason is SkipReason.NONE) == result.accepted, where
        count = state.count
        S, Y = lbfgs_pairs(state)
        assert_close(S, recorded[key + "S"][:count], rtol=0.0, what=f"{where}: S")
        assert_close(Y, recorded[key + "Y"][:count], rtol=0.0, what=f"{where}: Y")
        assert np.isnan(recorded[key + "S"][count:]).all(), f"{where}: recording has more pairs"
        assert state.gamma == pytest.approx(float(recorded[key + "gamma"]), rel=RTOL), where
        R_inv = lbfgs_compact_factors(state).R_inv
        assert_close(
            R_inv, recorded[key + "Rinv"][:count, :count], rtol=RTOL, what=f"{where}: R^-1"
        )
        v = recorded[key + "v"]
        for apply in (lbfgs_compact_apply, lbfgs_two_loop):
            assert_close(apply(state, v), recorded[key + "Hv"], rtol=RTOL, what=f"{where}: H v")
            assert_close(
                apply(state, np.eye(4)), recorded[key + "Hdense"], rtol=RTOL, what=f"{where}: H"
            )
        assert_close(
            lbfgs_inverse_matrix(state), recorded[key + "Hdense"], rtol=RTOL, what=f"{where}: H"
        )


def test_lbfgs_rejections_are_the_recorded_ones(recorded):
    """The two rejected steps are rejected for the reasons the recording's notes give."""
    state = lbfgs_init(4, 3)
    reasons = []
    for step in range(7):
        key = f"lbfgs_g1_step{step}_"
        result = lbfgs_append(
            state,
            recorded[key + "s"],
            recorded[key + "y"],
            gbar_norm=float(np.linalg.norm(recorded[key + "g_k"])),
        )
        state = result.state
        reasons.append(result.reason)
    assert reasons[2] is SkipReason.NON_POSITIVE_CURVATURE
    assert reasons[4] is SkipReason.BELOW_RELATIVE_THRESHOLD
    assert [r for i, r in enumerate(reasons) if i not in (2, 4)] == [SkipReason.NONE] * 5
