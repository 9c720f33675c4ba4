"""The golden file format: per case one ``<case>.npz`` of plain arrays and one ``<case>.json``.

The manifest (validated against ``schema.json``, shipped with the package) states the conventions,
the net, the data, the setup, the seeds, the library versions, the order of operations, the
tolerance of every quantity and, for every array, its shape, dtype, meaning, place in the order of
operations (``order``, ``step``, ``layer``) and hints the checker's diagnoses use. The ``.npz`` is
written deterministically (sorted members, fixed timestamps, no compression), so two exports of the
same case are byte-identical and ``sha256`` identifies it. Nothing is ever loaded with pickle.

A candidate folder holds ``<case>.npz`` files with any subset of a case's array names
(``docs/golden.md``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import platform
import zipfile
from importlib import resources
from pathlib import Path

import jsonschema
import numpy as np

import kfqn_ref
from kfqn_ref import backend

#: Written into every manifest; a checker reads every ``1.x`` and refuses other majors.
SCHEMA_VERSION = "1.1"
SUPPORTED_MAJOR = 1
#: The dtypes an array of a golden or candidate file may have.
ARRAY_DTYPES = ("float64", "float32", "int64", "bool")

#: The conventions every case follows (``docs/conventions.md``), stated in every manifest.
CONVENTIONS = {
    "weights": "homogeneous W~ = [W | b] per trainable layer, the bias the LAST column; Conv2d "
    "kernel (c_out, c_in, k_h, k_w) reshaped row-major to (c_out, c_in k_h k_w)",
    "vec": "column-major: vec(X) stacks the columns of X; a layer block over vec(W~) is A kron G",
    "loss_reduction": "f = (1/N) sum_n l_n, each l_n summed over the outputs",
    "g_scaling": "per-sample g_n = dl_n/dh_n = N df/dh_n (not divided by N)",
    "layout": "inputs NCHW; im2col patch order (c_in, k_h, k_w) with a trailing 1; output "
    "positions p = i W_out + j, P = H_out W_out; conv records (N, P, C), per-sample conv "
    "pre-activation index p C + c",
    "pairs": "old minus new: s = mean(h) - mean(h+), y = mean(g) - mean(g+) over samples and "
    "positions, h+ and g+ from a second pass at the new weights on the SAME minibatch",
    "layer_names": "layer<i>: i indexes the model's layer list (every layer, trainable or not)",
}


class GoldenFormatError(ValueError):
    """A golden or candidate file that cannot be used (the checker's exit status 2)."""


@dataclasses.dataclass(frozen=True)
class Tolerance:
    """``|c - g|_max <= atol + rtol |g|_max`` for a candidate ``c`` of a golden array ``g``."""

    rtol: float
    atol: float
    reason: str


@dataclasses.dataclass(frozen=True)
class Entry:
    """One array of a case with its manifest metadata (``docs/golden.md``, "arrays")."""

    array: np.ndarray
    quantity: str
    meaning: str
    order: int
    step: int | None = None
    layer: int | None = None
    hints: dict = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class Case:
    """A case ready to be written: manifest fields and its arrays."""

    name: str
    kind: str
    description: str
    net: dict | None
    data: dict
    setup: dict
    seeds: dict
    order_of_operations: tuple[str, ...]
    tolerances: dict[str, Tolerance]
    entries: dict[str, Entry]


@dataclasses.dataclass(frozen=True)
class GoldenCase:
    """A golden case read back and verified: its manifest and its arrays."""

    manifest: dict
    arrays: dict[str, np.ndarray]


def library_versions() -> dict[str, str]:
    """Versions that produced a file (the platform too: BLAS kernels are chosen per CPU)."""
    return {
        "kfqn_ref": kfqn_ref.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
    }


# ---------------------------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------------------------


def npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    """A ``.npz`` archive of ``arrays`` whose bytes depend on the arrays only.

    Members are sorted, stored uncompressed, dated 1980-01-01 and marked as written on Unix.
    """
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_STORED) as archive:
        for name in sorted(arrays):
            member = io.BytesIO()
            array = np.asarray(arrays[name], order="C")
            np.lib.format.write_array(member, array, allow_pickle=False)
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.create_system = 3
            info.external_attr = 0o644 << 16
            archive.writestr(info, member.getvalue())
    return buffer.getvalue()


def manifest_of(case: Case, sha256: str) -> dict:
    """The manifest of ``case`` whose ``.npz`` has the SHA-256 ``sha256``."""
    return {
        "schema_version": SCHEMA_VERSION,
        "case": case.name,
        "kind": case.kind,
        "description": case.description,
        "npz": f"{case.name}.npz",
        "sha256": sha256,
        "conventions": CONVENTIONS,
        "net": case.net,
        "data": case.data,
        "setup": case.setup,
        "seeds": case.seeds,
        "library_versions": library_versions(),
        "order_of_operations": list(case.order_of_operations),
        "tolerances": {name: dataclasses.asdict(t) for name, t in case.tolerances.items()},
        "arrays": {name: _array_manifest(entry) for name, entry in case.entries.items()},
    }


def _array_manifest(entry: Entry) -> dict:
    return {
        "shape": list(entry.array.shape),
        "dtype": str(entry.array.dtype),
        "quantity": entry.quantity,
        "meaning": entry.meaning,
        "order": entry.order,
        "step": entry.step,
        "layer": entry.layer,
        "hints": entry.hints,
    }


def manifest_text(manifest: dict) -> str:
    """The manifest as written: sorted keys, one-space indent, a final newline."""
    return json.dumps(manifest, indent=1, sort_keys=True, allow_nan=False) + "\n"


def write_case(directory: str | os.PathLike, case: Case) -> Path:
    """Write ``<case>.npz`` and ``<case>.json`` into ``directory``; return the manifest's path.

    The manifest is validated before anything is written.
    """
    data = npz_bytes({name: entry.array for name, entry in case.entries.items()})
    manifest = manifest_of(case, hashlib.sha256(data).hexdigest())
    validate_manifest(manifest, f"case {case.name!r}")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / f"{case.name}.npz").write_bytes(data)
    path = directory / f"{case.name}.json"
    path.write_text(manifest_text(manifest), encoding="utf-8")
    return path


# ---------------------------------------------------------------------------------------------
# Reading and validation
# ---------------------------------------------------------------------------------------------


def load_schema() -> dict:
    """The JSON Schema of a manifest (``kfqn_ref/golden/schema.json``)."""
    text = resources.files("kfqn_ref.golden").joinpath("schema.json").read_text(encoding="utf-8")
    return json.loads(text)


def validate_manifest(manifest: dict, source: str) -> None:
    """:class:`GoldenFormatError` unless ``manifest`` is a valid schema-1.x manifest.

    Beyond the schema: the major version is supported, every array's ``order`` indexes
    ``order_of_operations``, its quantity has a tolerance and every array named in a hint exists.
    """
    version = manifest.get("schema_version") if isinstance(manifest, dict) else None
    if isinstance(version, str) and version.split(".")[0] != str(SUPPORTED_MAJOR):
        raise GoldenFormatError(
            f"{source}: schema_version {version!r} is not supported by this checker "
            f"(it reads {SUPPORTED_MAJOR}.x)"
        )
    try:
        jsonschema.validate(manifest, load_schema())
    except jsonschema.ValidationError as error:
        where = "/".join(str(part) for part in error.absolute_path) or "(top level)"
        raise GoldenFormatError(
            f"{source}: the manifest does not match the golden schema at {where}: {error.message}"
        ) from None
    arrays = manifest["arrays"]
    for name, spec in arrays.items():
        if spec["order"] >= len(manifest["order_of_operations"]):
            raise GoldenFormatError(
                f"{source}: array {name!r} has order {spec['order']}, beyond the "
                f"{len(manifest['order_of_operations'])} entries of order_of_operations"
            )
        if spec["quantity"] not in manifest["tolerances"]:
            raise GoldenFormatError(
                f"{source}: array {name!r} has quantity {spec['quantity']!r} without a tolerance"
            )
        for referenced in _hint_references(spec["hints"]):
            if referenced not in arrays:
                raise GoldenFormatError(
                    f"{source}: a hint of array {name!r} names {referenced!r}, which is not an "
                    "array of the case"
                )


def _hint_references(hints: dict) -> list[str]:
    """The array names a hint refers to."""
    names = list(hints.get("other_batch", []))
    if "previous" in hints:
        names.append(hints["previous"])
    for key, fields in (
        ("pair", ("partner",)),
        ("damping", ("s",)),
        ("powell", ("H", "s", "y")),
        ("guarantee", ("s", "y", "H")),
    ):
        names.extend(hints[key][field] for field in fields if field in hints.get(key, {}))
    return names


def read_arrays(path: Path, what: str) -> dict[str, np.ndarray]:
    """All arrays of the ``.npz`` at ``path`` (no pickle, numeric dtypes only)."""
    try:
        arrays = backend.read_npz(path)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as error:
        raise GoldenFormatError(
            f"{what} {path}: not a readable .npz of plain arrays ({error})"
        ) from None
    for name, array in arrays.items():
        if array.dtype.kind not in "fiub":
            raise GoldenFormatError(
                f"{what} {path}: array {name!r} has dtype {array.dtype}; only numeric and "
                "boolean arrays are allowed"
            )
    return arrays


def golden_case_names(directory: str | os.PathLike) -> list[str]:
    """The case names of a golden folder (one per ``<case>.json``), sorted."""
    directory = Path(directory)
    if not directory.is_dir():
        raise GoldenFormatError(f"golden folder {directory} does not exist")
    names = sorted(path.stem for path in directory.glob("*.json"))
    if not names:
        raise GoldenFormatError(f"golden folder {directory} holds no <case>.json manifest")
    return names


def read_golden_case(directory: str | os.PathLike, name: str) -> GoldenCase:
    """Read, validate and verify one golden case (checksum, array names, shapes and dtypes)."""
    directory = Path(directory)
    manifest_path = directory / f"{name}.json"
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise GoldenFormatError(f"golden manifest {manifest_path}: unreadable ({error})") from None
    validate_manifest(manifest, f"golden manifest {manifest_path}")
    if manifest["case"] != name:
        raise GoldenFormatError(
            f"golden manifest {manifest_path} describes case {manifest['case']!r}"
        )
    npz_path = directory / manifest["npz"]
    try:
        digest = hashlib.sha256(npz_path.read_bytes()).hexdigest()
    except OSError as error:
        raise GoldenFormatError(f"golden arrays {npz_path}: unreadable ({error})") from None
    if digest != manifest["sha256"]:
        raise GoldenFormatError(
            f"golden arrays {npz_path}: SHA-256 {digest} differs from the manifest's "
            f"{manifest['sha256']} (the file was changed or truncated)"
        )
    arrays = read_arrays(npz_path, "golden arrays")
    _check_arrays_match_manifest(arrays, manifest, npz_path)
    return GoldenCase(manifest, arrays)


def _check_arrays_match_manifest(arrays: dict, manifest: dict, path: Path) -> None:
    specs = manifest["arrays"]
    if set(arrays) != set(specs):
        missing = sorted(set(specs) - set(arrays))
        extra = sorted(set(arrays) - set(specs))
        raise GoldenFormatError(
            f"golden arrays {path}: names differ from the manifest "
            f"(missing {missing}, extra {extra})"
        )
    for name, spec in specs.items():
        array = arrays[name]
        if list(array.shape) != spec["shape"] or str(array.dtype) != spec["dtype"]:
            raise GoldenFormatError(
                f"golden arrays {path}: {name!r} is {array.dtype}{list(array.shape)}, the manifest "
                f"says {spec['dtype']}{spec['shape']}"
            )


def read_candidate(directory: str | os.PathLike, name: str) -> dict[str, np.ndarray] | None:
    """The arrays of ``<name>.npz`` in a candidate folder, or ``None`` if there is no such file."""
    path = Path(directory) / f"{name}.npz"
    if not path.exists():
        return None
    return read_arrays(path, "candidate arrays")
