"""Strict loading: every unusable golden or candidate file gives a clear error and exit status 2."""

import hashlib
import json
import shutil

import jsonschema
import numpy as np
import pytest

from golden_tests.helpers import GOLDEN, golden_arrays, write_candidate
from kfqn_ref.golden.cli import main
from kfqn_ref.golden.format import (
    GoldenFormatError,
    load_schema,
    manifest_text,
    npz_bytes,
    read_golden_case,
)

CASE = "bfgs_updates"


@pytest.fixture
def golden_copy(tmp_path):
    """A copy of one committed case that a test may damage, and a matching candidate folder."""
    golden = tmp_path / "golden"
    golden.mkdir()
    for suffix in (".json", ".npz"):
        shutil.copy(GOLDEN / f"{CASE}{suffix}", golden / f"{CASE}{suffix}")
    candidate = write_candidate(tmp_path / "candidate", CASE, golden_arrays(CASE))
    return golden, candidate


def run_check(golden, candidate, capsys):
    status = main(["golden", "check", "--golden", str(golden), "--candidate", str(candidate)])
    return status, capsys.readouterr().err


def test_the_undamaged_copy_passes(golden_copy, capsys):
    assert run_check(*golden_copy, capsys)[0] == 0


def _rewrite_manifest(golden, change):
    path = golden / f"{CASE}.json"
    manifest = json.loads(path.read_text())
    change(manifest)
    path.write_text(manifest_text(manifest))


def _truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _flip_byte(path):
    data = bytearray(path.read_bytes())
    data[len(data) // 3] ^= 0xFF
    path.write_bytes(bytes(data))


def _pickle_bearing_golden(golden):
    """An object array, with the manifest's checksum updated so that only the pickle is wrong."""
    path = golden / f"{CASE}.npz"
    arrays = golden_arrays(CASE)
    arrays["accept.H"] = np.array([{"evil": 1}], dtype=object)
    np.savez(path, **arrays)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    _rewrite_manifest(golden, lambda m: m.update(sha256=digest))


DAMAGED_GOLDEN = [
    ("truncated_npz", lambda g: _truncate(g / f"{CASE}.npz"), "SHA-256 .* differs"),
    ("tampered_npz", lambda g: _flip_byte(g / f"{CASE}.npz"), "SHA-256 .* differs"),
    ("truncated_manifest", lambda g: _truncate(g / f"{CASE}.json"), "unreadable"),
    (
        "schema_major_2",
        lambda g: _rewrite_manifest(g, lambda m: m.update(schema_version="2.0")),
        "schema_version '2.0' is not supported",
    ),
    (
        "schema_missing_field",
        lambda g: _rewrite_manifest(g, lambda m: m.pop("tolerances")),
        "does not match the golden schema .*'tolerances' is a required property",
    ),
    (
        "schema_wrong_type",
        lambda g: _rewrite_manifest(g, lambda m: m["arrays"]["accept.H"].update(order=-1)),
        "does not match the golden schema at arrays/accept.H/order",
    ),
    ("pickle_bearing_npz", _pickle_bearing_golden, "not a readable .npz of plain arrays"),
]


@pytest.mark.parametrize(
    ("damage", "pattern"), [r[1:] for r in DAMAGED_GOLDEN], ids=[r[0] for r in DAMAGED_GOLDEN]
)
def test_a_damaged_golden_file_is_refused_with_status_2(golden_copy, capsys, damage, pattern):
    golden, candidate = golden_copy
    damage(golden)
    status, err = run_check(golden, candidate, capsys)
    assert status == 2
    assert err.startswith("unusable input: ")
    assert __import__("re").search(pattern, err), err


def _pickle_candidate(candidate):
    arrays = golden_arrays(CASE)
    arrays["accept.H_new"] = np.array([object()], dtype=object)
    np.savez(candidate / f"{CASE}.npz", **arrays)


def _string_candidate(candidate):
    arrays = golden_arrays(CASE)
    arrays["accept.H_new"] = np.array(["not a number"])
    np.savez(candidate / f"{CASE}.npz", **arrays)


DAMAGED_CANDIDATE = [
    (
        "truncated",
        lambda c: _truncate(c / f"{CASE}.npz"),
        "candidate arrays .* not a readable .npz",
    ),
    ("pickle_bearing", _pickle_candidate, "Object arrays cannot be loaded"),
    ("strings", _string_candidate, "has dtype <U12; only numeric and boolean arrays"),
    ("no_case_file", lambda c: (c / f"{CASE}.npz").unlink(), "holds no <case>.npz"),
    ("not_a_folder", lambda c: shutil.rmtree(c), "candidate folder .* does not exist"),
]


@pytest.mark.parametrize(
    ("damage", "pattern"), [r[1:] for r in DAMAGED_CANDIDATE], ids=[r[0] for r in DAMAGED_CANDIDATE]
)
def test_an_unusable_candidate_is_refused_with_status_2(golden_copy, capsys, damage, pattern):
    golden, candidate = golden_copy
    damage(candidate)
    status, err = run_check(golden, candidate, capsys)
    assert status == 2
    assert __import__("re").search(pattern, err), err


def test_an_unknown_case_and_bad_arguments_give_status_2(golden_copy, capsys):
    golden, candidate = golden_copy
    status = main(
        [
            "golden",
            "check",
            "--golden",
            str(golden),
            "--candidate",
            str(candidate),
            "--case",
            "nope",
        ]
    )
    assert status == 2
    assert "unknown case 'nope'" in capsys.readouterr().err
    assert main(["golden", "check", "--golden", str(golden)]) == 2


def test_json_output_reports_unusable_input(golden_copy, capsys):
    golden, candidate = golden_copy
    _truncate(golden / f"{CASE}.npz")
    status = main(
        ["golden", "check", "--golden", str(golden), "--candidate", str(candidate), "--json"]
    )
    report = json.loads(capsys.readouterr().out)
    assert status == report["exit_status"] == 2
    assert "SHA-256" in report["error"]


def test_every_committed_manifest_validates_against_the_shipped_schema():
    schema = load_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    for path in sorted(GOLDEN.glob("*.json")):
        manifest = json.loads(path.read_text())
        jsonschema.validate(manifest, schema)
        case = read_golden_case(GOLDEN, path.stem)
        assert (
            manifest["sha256"]
            == hashlib.sha256((GOLDEN / manifest["npz"]).read_bytes()).hexdigest()
        )
        for name, spec in manifest["arrays"].items():
            assert spec["order"] < len(manifest["order_of_operations"]), name
            assert case.arrays[name].dtype.kind in "fib"


def test_the_committed_files_are_small():
    total = sum(path.stat().st_size for path in GOLDEN.iterdir())
    assert total < 5 * 2**20


def test_npz_bytes_depend_on_the_arrays_only():
    arrays = {"b": np.arange(3.0), "a": np.eye(2), "c": np.array(True)}
    data = npz_bytes(arrays)
    assert data == npz_bytes(dict(reversed(arrays.items())))
    assert data != npz_bytes({**arrays, "c": np.array(False)})


def test_read_errors_are_golden_format_errors(golden_copy):
    golden, _ = golden_copy
    _flip_byte(golden / f"{CASE}.npz")
    with pytest.raises(GoldenFormatError, match="SHA-256"):
        read_golden_case(golden, CASE)
    assert issubclass(GoldenFormatError, ValueError)
