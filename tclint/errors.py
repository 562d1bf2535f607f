"""Errors that the command line turns into a one-line message and an exit code.

Library code raises these; ``tclint.cli.main`` catches them, prints ``tclint: error: <message>``
and returns the exit code. Nothing else should print a traceback to a user.
"""

from __future__ import annotations


class TclintError(Exception):
    """Base class. ``exit_code`` is what the CLI returns."""

    exit_code = 2


class InputError(TclintError):
    """Bad input: missing file, not ONNX, truncated, missing external data, unsupported opset,
    an unknown input name in ``--input-shape``, a shape that cannot be resolved, ..."""


class UsageError(TclintError):
    """Bad command-line usage or configuration."""


class VerificationError(TclintError):
    """A rewritten model does not compute the same outputs; nothing was written."""

    exit_code = 1


class OutputError(TclintError):
    """The output could not be written (read-only location, disk full, ...)."""
