"""onnxruntime, configured once for tclint: its own log lines never reach the user.

onnxruntime's C++ logger prints ``[E:onnxruntime:...]`` lines to stderr for errors it also
raises as exceptions (a node that fails while running, a model that does not load). tclint turns
those exceptions into its own one-line errors, so the logger is limited to FATAL: every session
tclint creates takes :func:`session_options`, and :func:`quiet` sets the default logger the same
way (the environment's logger, used before a session has options).
"""

from __future__ import annotations

#: onnxruntime severities: 0 verbose, 1 info, 2 warning, 3 error, 4 fatal.
LOG_SEVERITY = 4


def quiet() -> None:
    import onnxruntime as ort

    ort.set_default_logger_severity(LOG_SEVERITY)


def session_options():
    """``onnxruntime.SessionOptions`` with tclint's log severity (callers add their own settings)."""
    import onnxruntime as ort

    quiet()
    options = ort.SessionOptions()
    options.log_severity_level = LOG_SEVERITY
    return options
