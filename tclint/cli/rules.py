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


def _fixed_by(r) -> str:
    """How the rule is fixed (the registry's metadata, the same the gate reads)."""
    if r.padding:
        return "tclint fix"
    if r.fix == "layout":
        return "advice: tclint fix --layout nhwc"
    return "advice"


def run(args: argparse.Namespace) -> int:
    if args.format == "json":
        data = [{"code": r.code, "name": r.name, "severity": r.severity, "summary": r.summary,
                 "fix": r.fix, "padding": list(r.padding), "advice": r.advice}
                for r in RULES.values()]
        sys.stdout.write(json.dumps(data, indent=2) + "\n")
    else:
        rows = [[r.code, r.name, r.severity, _fixed_by(r), r.summary] for r in RULES.values()]
        sys.stdout.write(tabulate(rows, headers=["code", "name", "severity", "fixed by", "summary"])
                         + "\n")
    return 0
