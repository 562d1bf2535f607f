"""``tclint explain CODE``: show a rule's page."""

from __future__ import annotations

import argparse
import sys

from tclint.catalog import rule_page
from tclint.errors import UsageError
from tclint.rules import RULES


def register(sub) -> None:
    p = sub.add_parser("explain", help="show the documentation of a rule code")
    p.add_argument("code", help="a rule code, e.g. TC204")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    code = args.code.upper()
    if code not in RULES:
        raise UsageError(f"unknown rule {args.code!r} (see `tclint rules`)")
    sys.stdout.write(rule_page(code))
    return 0
