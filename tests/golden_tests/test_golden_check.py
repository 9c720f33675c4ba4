"""The checker passes the project's own files and names each planted mismatch.

Every planted mismatch rewrites one array of a committed case the way a known convention
difference or bug would; the checker must FAIL the case at that array with the right diagnosis.
"""

import json

import numpy as np
import pytest

from golden_tests.helpers import GOLDEN, golden_arrays, write_candidate
from kfqn_ref import interop
from kfqn_ref.golden import check, export
from kfqn_ref.golden.cli import main
from kfqn_ref.golden.format import golden_case_names, read_golden_case


def test_the_committed_files_pass_against_themselves():
    report = check.check(GOLDEN, GOLDEN)
    assert [case.status for case in report.cases] == [check.Status.PASS] * len(report.cases)
    assert len(report.cases) == len(golden_case_names(GOLDEN)) == len(export.CASE_BUILDERS)
    assert report.exit_status == 0


def test_a_candidate_with_weights_only_is_incomplete_and_lists_what_is_missing(tmp_path, capsys):
    arrays = golden_arrays("traj_adam")
    weights = {name: a for name, a in arrays.items() if name.endswith(".weights")}
    write_candidate(tmp_path, "traj_adam", weights)
    status = main(
        [
            "golden",
            "check",
            "--golden",
            str(GOLDEN),
            "--candidate",
            str(tmp_path),
            "--case",
            "traj_adam",
        ]
    )
    out = capsys.readouterr().out
    assert status == 0
    assert out.startswith("INCOMPLETE traj_adam")
    assert f"{len(weights)} checked, 0 failed, {len(arrays) - len(weights)} missing" in out
    assert "missing: initial.state.first_moment.0, " in out


def test_a_perturbed_entry_at_step_7_is_located(tmp_path, capsys):
    arrays = golden_arrays("traj_kbfgs_2022")
    name = "step07.layer3.weights"
    arrays[name][1, 4] += 1e-5 * np.abs(arrays[name]).max()
    write_candidate(tmp_path, "traj_kbfgs_2022", arrays)
    status = main(
        ["golden", "check", "--golden", str(GOLDEN), "--candidate", str(tmp_path), "--json"]
    )
    assert status == 1
    report = json.loads(capsys.readouterr().out)
    assert report["exit_status"] == 1
    (case,) = [c for c in report["cases"] if c["status"] != "INCOMPLETE"]
    first = case["first_failure"]
    assert (case["case"], case["status"], case["failed"]) == ("traj_kbfgs_2022", "FAIL", 1)
    assert (first["name"], first["step"], first["layer"], first["where"]) == (name, 7, 3, [1, 4])
    assert case["layer_type"] == "Dense"
    assert first["max_rel_error"] == pytest.approx(1e-5, rel=1e-6)
    assert case["diagnosis"] is None


def _negate(*names):
    def plant(arrays):
        for name in names:
            arrays[name] = -arrays[name]

    return plant


def _set(name, value_of):
    def plant(arrays):
        arrays[name] = value_of(arrays)

    return plant


def _row_major_block(a):
    perm = interop.vec_permutation(5, 5)
    return interop.permute(a["layer0.hessian"], perm, (0, 1))


def _violated_guarantee(a):
    s, y = a["bad.dd2022.s_out"], a["bad.dd2022.y_out"]
    return y - (s @ y) / (s @ s) * s + 0.5 * 0.3 * s


def _damping_split_ya(a):
    """y_a of the conv layer damped with sqrt(lambda) sqrt(P) instead of sqrt(lambda)."""
    prefix = "step03.layer0.pair"
    root = np.sqrt(0.3)
    return a[f"{prefix}.y_a"] + (root * np.sqrt(4) - root) * a[f"{prefix}.s_a"]


def _flipped_powell(prefix, H):
    """Powell's step at ``prefix`` with the sign of ``H y`` flipped (mu1 = 0.2, as configured)."""

    def value_of(a):
        s, y = a[f"{prefix}.s_averaged"], a[f"{prefix}.y_averaged"]
        assert a[f"{prefix}.powell_damped"]  # Powell acts here, so a flipped sign shows
        Hy = a[H] @ y
        theta = (1 - 0.2) * (y @ Hy) / (y @ Hy - s @ y)
        return theta * s - (1 - theta) * Hy

    return value_of


def _flipped_powell_update(a):
    """The single Powell update of the negative-curvature pair with ``H y`` negated."""
    s, y, Hy = a["bad.s"], a["bad.y"], a["H"] @ a["bad.y"]
    theta = (1 - 0.2) * (y @ Hy) / (y @ Hy - s @ y)
    return theta * s - (1 - theta) * Hy


P_CONV = 4
PLANTED = [
    # (id, case, array that must fail, planting, diagnosis pattern)
    (
        "transposed",
        "dense_records",
        "layer2.grad",
        _set("layer2.grad", lambda a: a["layer2.grad"].T.copy()),
        "^transposed",
    ),
    (
        "row_major_vec",
        "dense_curvature",
        "layer0.hessian",
        _set("layer0.hessian", _row_major_block),
        "^row- vs column-major vec",
    ),
    (
        "bias_first_grad",
        "dense_records",
        "layer0.grad",
        _set("layer0.grad", lambda a: np.roll(a["layer0.grad"], 1, axis=1)),
        "^bias first vs last",
    ),
    (
        "bias_first_factor",
        "conv_kfac_factors",
        "layer0.A",
        _set("layer0.A", lambda a: np.roll(a["layer0.A"], 1, axis=(0, 1))),
        "^bias first vs last",
    ),
    (
        "missing_N",
        "dense_records",
        "layer0.g",
        _set("layer0.g", lambda a: a["layer0.g"] / 6),
        "^a missing factor N = 6",
    ),
    (
        "extra_P",
        "conv_records",
        "layer0.g",
        _set("layer0.g", lambda a: a["layer0.g"] * P_CONV),
        "^an extra factor P = 4",
    ),
    (
        "missing_C",
        "loss_functions",
        "squared_error.value",
        _set("squared_error.value", lambda a: a["squared_error.value"] / 4),
        "^a missing factor C = 4",
    ),
    (
        "sum_not_mean",
        "conv_kfac_factors",
        "layer0.G_type2",
        _set("layer0.G_type2", lambda a: a["layer0.G_type2"] * P_CONV),
        "^sum vs mean over positions: the candidate sums",
    ),
    (
        "mean_not_sum",
        "conv_kfac_factors",
        "layer0.A",
        _set("layer0.A", lambda a: a["layer0.A"] / P_CONV),
        "^sum vs mean over positions: the candidate averages",
    ),
    (
        "preactivation_order",
        "conv_curvature",
        "layer0.preactivation_hessians",
        _set(
            "layer0.preactivation_hessians",
            lambda a: interop.permute(
                a["layer0.preactivation_hessians"],
                interop.preactivation_permutation(P_CONV, 3),
                (1, 2),
            ),
        ),
        "^conv pre-activation order",
    ),
    (
        "sign_flip",
        "traj_kbfgs_2022",
        "step03.layer3.pair.s",
        _negate("step03.layer3.pair.s"),
        r"^sign flip of \(s, y\)",
    ),
    (
        "new_minus_old",
        "traj_kbfgs_2022",
        "step03.layer0.pair.s_raw",
        _negate("step03.layer0.pair.s_raw", "step03.layer0.pair.y_raw"),
        "^new-minus-old pairs",
    ),
    (
        "damping_split",
        "traj_kbfgs_2022",
        "step03.layer0.pair.y_a",
        _set("step03.layer0.pair.y_a", _damping_split_ya),
        r"^damping split: .*sqrt\(lambda\) sqrt\(P\)",
    ),
    (
        "unchanged_factor",
        "traj_kbfgs_2022",
        "step05.state.layers.1.H_g",
        _set("step05.state.layers.1.H_g", lambda a: a["step04.state.layers.1.H_g"]),
        "^unchanged: .*step04.state.layers.1.H_g",
    ),
    (
        "powell_sign_2020",
        "traj_kbfgs_2020",
        "step02.layer0.pair.s",
        _set(
            "step02.layer0.pair.s",
            _flipped_powell("step02.layer0.pair", "step01.state.layers.0.H_g"),
        ),
        r"^Powell step with the sign of H y flipped: .*H = step01\.state\.layers\.0\.H_g",
    ),
    (
        "powell_sign_2022",
        "traj_kbfgs_2022",
        "step00.layer0.pair.s",
        _set(
            "step00.layer0.pair.s",
            _flipped_powell("step00.layer0.pair", "initial.state.layers.0.H_g"),
        ),
        r"^Powell step with the sign of H y flipped: .*H = initial\.state\.layers\.0\.H_g",
    ),
    (
        "powell_sign_single_update",
        "damping_updates",
        "bad.powell.s_out",
        _set("bad.powell.s_out", _flipped_powell_update),
        "^Powell step with the sign of H y flipped",
    ),
    (
        "guarantee",
        "damping_updates",
        "bad.dd2022.y_out",
        _set("bad.dd2022.y_out", _violated_guarantee),
        r"^damped pair violates its guarantee s_dot_y >= c s_dot_s",
    ),
    (
        "other_minibatch_pair",
        "traj_kbfgs_2022",
        "step03.layer0.pair.s_raw",
        _set(
            "step03.layer0.pair.s_raw", lambda a: a["step03.layer0.hbar"] - a["step04.layer0.hbar"]
        ),
        "^second pass on another minibatch",
    ),
    (
        "other_minibatch_means",
        "traj_kbfgsl",
        "step06.layer2.hbar_new",
        _set("step06.layer2.hbar_new", lambda a: a["step07.layer2.hbar"]),
        "^second pass on another minibatch",
    ),
]


@pytest.mark.parametrize(
    ("case", "name", "plant", "pattern"),
    [row[1:] for row in PLANTED],
    ids=[row[0] for row in PLANTED],
)
def test_each_planted_mismatch_fails_with_its_diagnosis(tmp_path, case, name, plant, pattern):
    arrays = golden_arrays(case)
    plant(arrays)
    write_candidate(tmp_path, case, arrays)
    (result,) = check.check(GOLDEN, tmp_path, case).cases
    assert result.status is check.Status.FAIL
    assert result.first_failure.name == name
    assert result.diagnosis is not None
    assert __import__("re").search(pattern, result.diagnosis), result.diagnosis


def test_the_golden_values_satisfy_the_guarantees_their_hints_state():
    """A guarantee hint is only a diagnosis if the golden pair itself satisfies it."""
    count = 0
    for case in golden_case_names(GOLDEN):
        golden = read_golden_case(GOLDEN, case)
        for spec in golden.manifest["arrays"].values():
            guarantee = spec["hints"].get("guarantee")
            if guarantee is None:
                continue
            s, y = golden.arrays[guarantee["s"]], golden.arrays[guarantee["y"]]
            if guarantee["form"] == "s_dot_y >= c s_dot_s":
                bound = guarantee["c"] * (s @ s)
            else:
                bound = guarantee["c"] * (y @ golden.arrays[guarantee["H"]] @ y)
            assert s @ y >= bound * (1 - 1e-12), (case, guarantee)
            count += 1
    assert count > 50


@pytest.mark.parametrize("case", ["traj_kbfgs_2020", "traj_kbfgs_2022"])
def test_every_damped_pair_of_a_dense_kbfgs_carries_its_powell_and_guarantee_hints(case):
    """Powell names H_g before the step; the guarantee survives the rounding of its equality."""
    golden = read_golden_case(GOLDEN, case)
    specs = golden.manifest["arrays"]
    pairs = [name for name, spec in specs.items() if spec["quantity"] == "pair.s"]
    assert len(pairs) == 12 * 2
    layers = golden.manifest["net"]["layers"]
    trainable = [i for i, layer in enumerate(layers) if layer["type"] in ("Dense", "Conv2d")]
    for name in pairs:
        prefix, step, layer = name.removesuffix(".s"), specs[name]["step"], specs[name]["layer"]
        before = "initial" if step == 0 else f"step{step - 1:02d}"
        H = f"{before}.state.layers.{trainable.index(layer)}.H_g"
        assert specs[name]["hints"]["powell"] == {
            "H": H,
            "s": f"{prefix}.s_averaged",
            "y": f"{prefix}.y_averaged",
            "mu1": golden.manifest["setup"]["config"]["powell_mu1"],
        }
        for role in ("s", "y"):
            assert "guarantee" in specs[f"{prefix}.{role}"]["hints"], (name, role)
