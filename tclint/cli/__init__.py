"""The ``tclint`` command: a thin layer over the library.

Each subcommand lives in its own module ``tclint.cli.<name>`` exposing
``register(subparsers)`` (adds its parser and sets ``func``) and ``run(args) -> int``.
``main(argv) -> int`` parses, dispatches, and turns :class:`tclint.errors.TclintError` into a
one-line message with its exit code (2 for bad input or usage). It never lets a traceback out.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from tclint import __version__
from tclint.errors import TclintError

#: Subcommand modules, in the order ``tclint --help`` lists them.
COMMANDS = ["check", "explain", "rules", "fix", "convert", "quantize", "bench", "optimize"]


class _Parser(argparse.ArgumentParser):
    """argparse exits 2 on usage errors already; keep its message to one line."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(2, f"tclint: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="tclint", description="Tensor Core performance linter for ONNX models")
    parser.add_argument("--version", action="version", version=f"tclint {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"tclint.cli.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"tclint.cli.{name}":
                raise
            continue
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help(sys.stderr)
        return 2
    logging.basicConfig(
        level=logging.WARNING - 10 * min(args.verbose, 2),
        format="tclint: %(levelname)s: %(message)s",
    )
    try:
        return int(args.func(args))
    except TclintError as exc:
        print(f"tclint: error: {_one_line(exc)}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("tclint: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `tclint check m.onnx | head`
        return 0
    except RecursionError:
        print("tclint: error: model graph is too deeply nested to process", file=sys.stderr)
        return 2
    except MemoryError:
        print("tclint: error: out of memory while processing the model", file=sys.stderr)
        return 2


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text or type(exc).__name__


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
