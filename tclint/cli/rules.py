"""``tclint rules``: list the rule catalogue."""

from __future__ import annotations

import argparse
import json
import sys

from tabulate import tabulate

from tclint.rules import RULES


def register(sub) -> None:
    p = sub.add_parser("rules", help="list every rule code, name and severity")
    p.add_argument("--format", choices=["table", "json"], default="table")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.format == "json":
        data = [{"code": r.code, "name": r.name, "severity": r.severity, "summary": r.summary}
                for r in RULES.values()]
        sys.stdout.write(json.dumps(data, indent=2) + "\n")
    else:
        rows = [[r.code, r.name, r.severity, r.summary] for r in RULES.values()]
        sys.stdout.write(tabulate(rows, headers=["code", "name", "severity", "summary"]) + "\n")
    return 0
