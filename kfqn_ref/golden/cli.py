"""The ``golden`` command: ``export DIR``, ``list``, ``check --golden DIR --candidate DIR``.

Exit status: 0 when every checked case passes or is incomplete, 1 when one fails, 2 for unusable
input (a missing folder, an unknown case, a truncated, tampered, schema-incompatible or
pickle-bearing file). ``add_golden_command`` registers the command on the ``kfqn-ref`` parser;
``main`` parses ``golden ...`` arguments on its own.
"""

from __future__ import annotations

import argparse
import json
import sys

from kfqn_ref.golden import check, export
from kfqn_ref.golden.format import GoldenFormatError

UNUSABLE_INPUT = 2


def _export(args: argparse.Namespace) -> int:
    paths = export.export(args.directory)
    print(f"wrote {len(paths)} golden cases to {args.directory}")
    return 0


def _list(args: argparse.Namespace) -> int:
    for name, summary in export.case_summaries():
        print(f"{name:<26} {summary}")
    return 0


def _check(args: argparse.Namespace) -> int:
    try:
        report = check.check(args.golden, args.candidate, args.case)
    except GoldenFormatError as error:
        if args.json:
            print(json.dumps({"exit_status": UNUSABLE_INPUT, "error": str(error)}))
        else:
            print(f"unusable input: {error}", file=sys.stderr)
        return UNUSABLE_INPUT
    print(json.dumps(report.as_dict(), indent=1) if args.json else report.text())
    return report.exit_status


def add_golden_command(subparsers) -> argparse.ArgumentParser:
    """Register ``golden`` and its sub-commands; each sets ``handler`` (``args -> exit status``)."""
    golden = subparsers.add_parser(
        "golden", help="golden reference files: export, list, check another implementation"
    )
    commands = golden.add_subparsers(dest="golden_command", required=True)
    exporter = commands.add_parser("export", help="write every golden case into DIR")
    exporter.add_argument("directory", metavar="DIR")
    exporter.set_defaults(handler=_export)
    lister = commands.add_parser("list", help="list the golden cases")
    lister.set_defaults(handler=_list)
    checker = commands.add_parser("check", help="compare a candidate folder with the golden files")
    checker.add_argument("--golden", required=True, metavar="DIR", help="folder of golden cases")
    checker.add_argument("--candidate", required=True, metavar="DIR", help="folder of <case>.npz")
    checker.add_argument("--case", metavar="NAME", help="check this case only")
    checker.add_argument("--json", action="store_true", help="print the report as JSON")
    checker.set_defaults(handler=_check)
    return golden


def main(argv: list[str] | None = None) -> int:
    """Run ``golden ...`` (``argv`` without the program name) and return the exit status."""
    parser = argparse.ArgumentParser(prog="kfqn-ref")
    add_golden_command(parser.add_subparsers(dest="command", required=True))
    try:
        args = parser.parse_args(argv)
    except SystemExit as error:  # argparse's usage errors: unusable input
        return UNUSABLE_INPUT if error.code else 0
    return args.handler(args)


if __name__ == "__main__":
    sys.exit(main())
