"""Run ``check``, ``fix`` and ``convert`` on every model the onnx wheel ships, and judge each run.

The onnx wheel carries real test models under ``onnx/backend/test/data``: ``light`` (model-zoo CNNs),
``pytorch-converted``, ``pytorch-operator`` and ``simple``. (``real`` holds only ``data.json`` files
with download URLs; nothing to run offline, so it is skipped and said so.)

Each command runs in-process through :func:`tclint.cli.main` (stdout and stderr captured, output in
a temporary folder, a timeout per run) and gets one outcome:

- ``ok``: check exits 0 or 1 with a JSON report that parses; fix exits 0 and writes a model whose
  outputs match the original's on onnxruntime CPU (re-checked here, independently of the fixer's
  own verification), or exits 1 having written such a model and named, in its report, each
  finding left that fails check's gate (like ``ruff check --fix``); convert exits 0 and writes a
  model that onnxruntime CPU loads.
- ``declined``: fix/convert exit 1 or 2 with one ``tclint: error: ...`` line and write nothing;
  check exits 2 that way only on a model that ``onnx.checker`` rejects.
- ``failed``: anything else: an exception escaping ``main()`` (a traceback), a timeout, exit 2
  from check on a valid model, a decline without a one-line reason, a written file on a decline,
  temporary files left behind, an input file changed, a fixed model whose outputs differ, a
  converted model that does not load.

Usage::

    python -m tclint.sweep                       # all commands that exist, summary on stdout
    python -m tclint.sweep --commands check,convert --json sweep.json
    python -m tclint.sweep --update-expected tests/data/sweep_expected.json

The library API is :func:`run_sweep` (returns a :class:`SweepResult`), :func:`summarize`
(text), :func:`compare_expected` (regressions against a committed expectation).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import hashlib
import importlib.util
import io
import json
import logging
import multiprocessing
import os
import re
import signal
import sys
import tempfile
import time
import traceback
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

logger = logging.getLogger(__name__)

WHEEL_SUITES = ("light", "pytorch-converted", "pytorch-operator", "simple", "real")
#: "examples": small real architectures from tclint.examples with stored weights, which the wheel's
#: models lack (their weights are graph inputs or ConstantOfShape): the only models fix can pad
SUITES = (*WHEEL_SUITES, "examples")
#: extra flags per suite and command: on the examples, fix pads every reported layer (--force)
#: even where the cost model says it does not pay, so that the rewrite itself is exercised
SUITE_FLAGS = {"examples": {"fix": ("--force",)}}


def _example_models() -> dict:
    """Name -> builder of a small instance of each architecture (a second or less to run)."""
    from tclint import examples as ex

    return {
        "resnet50": lambda: ex.resnet50(image=32),
        "resnet50_bn": lambda: ex.resnet50(image=32, batchnorm=True, blocks=(1, 1, 1, 1)),
        "squeezenet": lambda: ex.squeezenet(image=64),
        "efficientnet": lambda: ex.efficientnet(image=32),
        "densenet": lambda: ex.densenet(image=32),
        "gpt2": lambda: ex.gpt2(layers=1, hidden=96, heads=4, vocab=1000),
        "llama": lambda: ex.llama(layers=1, hidden=128, heads=4, kv_heads=2, ffn=344, vocab=1000),
        "llama_mlp": lambda: ex.llama_mlp(hidden=256, ffn=682),
        "first_conv_c3": lambda: ex.single_conv(c=3, k=30, pre=None),
        "conv_13_30": lambda: ex.single_conv(c=13, k=30),
        "grouped_conv": lambda: ex.single_conv(c=48, k=60, groups=4),
        "matmul_100x60": lambda: ex.single_gemm(m=24, n=100, k=60, transposed=True),
        "gemm_100x60": lambda: ex.single_gemm(m=24, n=100, k=60, op="Gemm"),
    }


def materialize_examples(folder: Path) -> list[Path]:
    """Write each example model to ``folder/<name>/model.onnx``."""
    import onnx

    paths = []
    for name, build in _example_models().items():
        (folder / name).mkdir(parents=True, exist_ok=True)
        path = folder / name / "model.onnx"
        onnx.save(build(), str(path))
        paths.append(path)
    return paths
COMMANDS = ("check", "fix", "convert")
OUTCOMES = ("ok", "declined", "failed")
#: worse outcomes have higher ranks; a model whose rank rises is a regression
_RANK = {"ok": 0, "declined": 1, "failed": 2}

#: seconds one command may take on one model before it counts as hung
DEFAULT_TIMEOUT_S = 120.0
#: a fixed model's outputs must match the original's within these (float32 padding only)
FIX_RTOL = 1e-3
FIX_ATOL = 1e-4


# --------------------------------------------------------------------------------------------
# Finding the models
# --------------------------------------------------------------------------------------------
def data_root() -> Path:
    import onnx

    return Path(onnx.__file__).parent / "backend" / "test" / "data"


def discover(suites: Iterable[str] = WHEEL_SUITES, root: Path | None = None,
             examples_dir: Path | None = None) -> tuple[list[Path], dict[str, str]]:
    """Every ``.onnx`` file in the given suites, and a note per suite that has none to run.
    The "examples" suite is written into ``examples_dir`` (skipped without one)."""
    root = root or data_root()
    models: list[Path] = []
    skipped: dict[str, str] = {}
    for suite in suites:
        if suite == "examples":
            if examples_dir is None:
                skipped[suite] = "no folder given to write the example models into"
            else:
                models.extend(materialize_examples(examples_dir))
            continue
        folder = root / suite
        found = sorted(p for p in folder.rglob("*.onnx") if p.is_file()) if folder.is_dir() else []
        if found:
            models.extend(found)
        elif folder.is_dir():
            kinds = sorted({p.name for p in folder.rglob("*") if p.is_file()})
            skipped[suite] = (f"no .onnx files (only {', '.join(kinds) or 'nothing'}: "
                              "download URLs, not runnable offline)")
        else:
            skipped[suite] = "folder not present in this onnx wheel"
    return models, skipped


def model_id(path: Path, root: Path | None = None) -> str:
    """``pytorch-converted/test_Conv2d/model.onnx`` -> ``pytorch-converted/test_Conv2d``."""
    root = root or data_root()
    if not path.is_relative_to(root):  # the examples suite, written elsewhere
        return f"examples/{path.parent.name}"
    rel = path.relative_to(root)
    return str(rel.parent if rel.name == "model.onnx" else rel.with_suffix("")).replace(os.sep, "/")


def available_commands() -> list[str]:
    """The sweepable commands that this tree has (fix and convert are optional modules)."""
    return [c for c in COMMANDS if importlib.util.find_spec(f"tclint.cli.{c}") is not None]


# --------------------------------------------------------------------------------------------
# Results
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Outcome:
    """One command on one model."""

    model: str
    command: str
    outcome: str  # ok | declined | failed
    exit_code: int | None
    #: one line: the decline message, the failure, or what was verified for ``ok``
    reason: str
    seconds: float
    #: an independent check of a fixed/converted model ("outputs match", "ort loads", ...)
    verified: str = ""
    #: fix: layers padded (0: nothing changed); None when unknown or not fix
    changed: int | None = None
    #: fix: why reported layers were left alone (the fixer's own one-line reasons)
    skipped: tuple[str, ...] = ()


@dataclass(frozen=True)
class SweepResult:
    models: int
    commands: tuple[str, ...]
    skipped: dict[str, str]
    invalid: tuple[str, ...]
    outcomes: tuple[Outcome, ...]
    seconds: float
    #: model -> sorted set of commands that produced native (onnxruntime C++) log lines on stderr
    native_noise: dict[str, list[str]] = field(default_factory=dict)

    def by_command(self, command: str) -> list[Outcome]:
        return [o for o in self.outcomes if o.command == command]

    def counts(self, command: str) -> dict[str, int]:
        c = Counter(o.outcome for o in self.by_command(command))
        return {k: c.get(k, 0) for k in OUTCOMES}

    def failures(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.outcome == "failed"]

    def to_expected(self) -> dict:
        """The committed expectation: counts and per-model outcome per command."""
        return {
            "models": self.models,
            "skipped": self.skipped,
            "invalid": list(self.invalid),
            "fixed": sorted(o.model for o in self.by_command("fix") if o.changed),
            "commands": {
                cmd: {
                    "counts": self.counts(cmd),
                    "models": {o.model: o.outcome for o in sorted(self.by_command(cmd), key=lambda o: o.model)},
                }
                for cmd in self.commands
            },
        }

    def to_dict(self) -> dict:
        return {**self.to_expected(), "seconds": round(self.seconds, 2),
                "outcomes": [asdict(o) for o in self.outcomes], "native_noise": self.native_noise}


# --------------------------------------------------------------------------------------------
# Running one command in-process
# --------------------------------------------------------------------------------------------
class _Timeout(BaseException):
    """Raised by the alarm; a BaseException so that no ``except Exception`` in tclint eats it."""


@dataclass
class _Run:
    exit_code: int | None
    stdout: str
    stderr: str
    native_stderr: str
    error: str  # an exception that escaped main(), with its last traceback frame
    seconds: float


def run_main(argv: Sequence[str], *, timeout_s: float = DEFAULT_TIMEOUT_S) -> _Run:
    """``tclint.cli.main(argv)`` with stdout/stderr captured; exceptions and timeouts recorded.

    Python-level output is captured through ``sys.stdout``/``sys.stderr``; native writes to
    file descriptor 2 (onnxruntime's C++ logger) are captured separately.
    """
    from tclint.cli import main

    out, err = io.StringIO(), io.StringIO()
    root = logging.getLogger()
    handlers = list(root.handlers)
    error = ""
    code: int | None = None
    alarm = _alarm(timeout_s)
    with tempfile.TemporaryFile(mode="w+b") as native:
        saved_fd = _redirect_fd(2, native.fileno())
        started = time.perf_counter()
        try:
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), alarm:
                code = main(list(argv))
        except _Timeout:
            error = f"timeout after {timeout_s:.0f} s"
        except SystemExit as exc:  # argparse: usage errors exit through SystemExit
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)
        except BaseException as exc:  # noqa: BLE001 - the point is to catch everything
            if os.environ.get("TCLINT_SWEEP_RAISE") == "1":  # debugging: see the whole traceback
                raise
            frames = traceback.extract_tb(exc.__traceback__)
            where = f" at {Path(frames[-1].filename).name}:{frames[-1].lineno}" if frames else ""
            error = f"traceback: {type(exc).__name__}: {_one_line(str(exc))}{where}"
        finally:
            seconds = time.perf_counter() - started
            _restore_fd(2, saved_fd)
            # main() calls logging.basicConfig, whose handler would keep our StringIO: drop it.
            for h in list(root.handlers):
                if h not in handlers:
                    root.removeHandler(h)
        native.seek(0)
        native_text = native.read().decode("utf-8", "replace")
    return _Run(code, out.getvalue(), err.getvalue(), native_text, error, seconds)


@contextlib.contextmanager
def _alarm(seconds: float):
    def handler(_signum, _frame):
        raise _Timeout()

    try:
        previous = signal.signal(signal.SIGALRM, handler)
    except ValueError:  # not the main thread: run unguarded
        yield
        return
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _redirect_fd(fd: int, target: int) -> int | None:
    try:
        sys.stderr.flush()
        saved = os.dup(fd)
        os.dup2(target, fd)
        return saved
    except OSError:
        return None


def _restore_fd(fd: int, saved: int | None) -> None:
    if saved is not None:
        os.dup2(saved, fd)
        os.close(saved)


def _one_line(text: str, limit: int = 300) -> str:
    return " ".join(text.split())[:limit]


def _error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("tclint: error:")]


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _input_files(model: Path) -> list[Path]:
    """The model file and the files beside it that it may read (external data)."""
    return [p for p in sorted(model.parent.iterdir()) if p.is_file()]


# --------------------------------------------------------------------------------------------
# Judging
# --------------------------------------------------------------------------------------------
def _judge_check(name: str, run: _Run, valid: bool) -> Outcome:
    def outcome(kind: str, reason: str) -> Outcome:
        return Outcome(name, "check", kind, run.exit_code, reason, run.seconds)

    if run.error:
        return outcome("failed", run.error)
    if run.exit_code in (0, 1):
        try:
            report = json.loads(run.stdout)
        except ValueError:
            return outcome("failed", f"exit {run.exit_code} but stdout is not the JSON report")
        n = sum(len(r.get("findings", [])) for r in report) if isinstance(report, list) else "?"
        return outcome("ok", f"exit {run.exit_code}, {n} findings")
    lines = _error_lines(run.stderr)
    if run.exit_code == 2 and len(lines) == 1:
        if valid:
            return outcome("failed", f"exit 2 on a valid model: {lines[0]}")
        return outcome("declined", lines[0])
    return outcome("failed", f"exit {run.exit_code} with {len(lines)} error lines: {_one_line(run.stderr)}")


def _judge_writer(command: str, name: str, run: _Run, model: Path, out: Path, workdir: Path) -> Outcome:
    """fix/convert: exit 0 and a usable output, or a clean one-line decline and no output."""
    def outcome(kind: str, reason: str, verified: str = "") -> Outcome:
        return Outcome(name, command, kind, run.exit_code, reason, run.seconds, verified)

    if run.error:
        return outcome("failed", run.error)
    written = sorted(p.name for p in workdir.iterdir())
    expected = {out.name, out.name + ".data"}
    stray = [n for n in written if n not in expected]
    if stray:
        return outcome("failed", f"left files behind: {', '.join(stray)}")
    lines = _error_lines(run.stderr)
    if run.exit_code == 0:
        if not out.exists():
            # "nothing to do" is fine when said: exit 0 without output and a message on stderr/stdout
            note = _one_line(run.stderr or run.stdout, 200)
            if note:
                return outcome("ok", f"nothing written: {note}", "no output")
            return outcome("failed", "exit 0 but no output file and no message")
        ok, verified = (_verify_fixed(model, out) if command == "fix" else _verify_converted(out))
        return outcome("ok" if ok else "failed", verified if not ok else "exit 0", verified)
    if run.exit_code == 1 and command == "fix" and out.exists():
        left = _fix_left(run.stdout)
        if not left:
            return outcome("failed", f"exit 1, {out.name} written, and no finding left named")
        ok, verified = _verify_fixed(model, out)
        return outcome("ok" if ok else "failed",
                       verified if not ok else f"exit 1: {len(left)} gate finding(s) left", verified)
    if run.exit_code in (1, 2):
        if out.exists():
            return outcome("failed", f"exit {run.exit_code} but {out.name} was written")
        if len(lines) != 1:
            return outcome("failed", f"exit {run.exit_code} with {len(lines)} 'tclint: error:' lines: "
                           f"{_one_line(run.stderr, 200)}")
        return outcome("declined", lines[0])
    return outcome("failed", f"unexpected exit {run.exit_code}: {_one_line(run.stderr, 200)}")


def _session(path_or_bytes):
    import onnxruntime as ort

    from tclint.verify import cpu_session

    opts = ort.SessionOptions()
    opts.log_severity_level = 4
    return cpu_session(path_or_bytes, opts)


def _verify_converted(out: Path) -> tuple[bool, str]:
    try:
        _session(str(out))
    except Exception as exc:  # noqa: BLE001 - onnxruntime raises several types
        return False, f"written model does not load in onnxruntime: {_one_line(str(exc), 200)}"
    return True, "onnxruntime CPU loads the output"


def random_inputs(session, *, seed: int = 0) -> dict:
    """One random feed per session input (symbolic dims 1, integers in [0, 2))."""
    import numpy as np

    from tclint.verify import random_tensor

    rng = np.random.default_rng(seed)
    feeds = {}
    for i in session.get_inputs():
        dims = [d if isinstance(d, int) and d >= 0 else 1 for d in i.shape]
        kind = i.type[len("tensor("):-1] if i.type.startswith("tensor(") else None
        if kind is None:
            raise ValueError(f"input {i.name} of type {i.type} is not a tensor")
        dtype = {"float": np.float32, "double": np.float64, "float16": np.float16, "bool": np.bool_,
                 "string": np.str_}.get(kind) or np.dtype(kind)
        if dtype is np.str_:
            feeds[i.name] = np.full(dims, "a", dtype=object)
        else:
            feeds[i.name] = random_tensor(rng, dims, dtype)
    return feeds


def compare_outputs(original: Path, rewritten: Path, *, rtol: float = FIX_RTOL,
                    atol: float = FIX_ATOL, seed: int = 0) -> tuple[bool | None, str]:
    """Run both models on the same random inputs on onnxruntime CPU.

    Returns (True, ...) when all outputs match, (False, why) when they do not, and
    (None, why) when the original itself cannot run on random inputs (nothing to compare).
    """
    import numpy as np

    try:
        ref_session = _session(str(original))
        feeds = random_inputs(ref_session, seed=seed)
        reference = ref_session.run(None, feeds)
    except Exception as exc:  # noqa: BLE001
        return None, f"original does not run on random inputs: {_one_line(str(exc), 150)}"
    try:
        session = _session(str(rewritten))
        names = {i.name for i in session.get_inputs()}
        got = session.run(None, {k: v for k, v in feeds.items() if k in names})
    except Exception as exc:  # noqa: BLE001
        return False, f"rewritten model does not run: {_one_line(str(exc), 200)}"
    if len(got) != len(reference):
        return False, f"{len(got)} outputs instead of {len(reference)}"
    for i, (r, g) in enumerate(zip(reference, got)):
        r, g = np.asarray(r), np.asarray(g)
        if r.shape != g.shape or r.dtype != g.dtype:
            return False, f"output {i}: {g.dtype}{list(g.shape)} instead of {r.dtype}{list(r.shape)}"
        if np.issubdtype(r.dtype, np.floating):
            if not np.allclose(g, r, rtol=rtol, atol=atol, equal_nan=True):
                diff = float(np.nanmax(np.abs(g.astype(np.float64) - r))) if r.size else 0.0
                return False, f"output {i} differs (max abs diff {diff:.3g})"
        elif not np.array_equal(r, g):
            return False, f"output {i} differs"
    return True, "outputs match the original on onnxruntime CPU"


def _verify_fixed(model: Path, out: Path) -> tuple[bool, str]:
    same, why = compare_outputs(model, out)
    if same is False:
        return False, f"fixed model: {why}"
    return True, why


def _sweep_one(job: tuple[str, str, tuple[str, ...], float, bool]) -> tuple[list[Outcome], list[str]]:
    """All commands on one model (runs in a worker process or in-process)."""
    path_text, root_text, commands, timeout_s, valid = job
    path, root = Path(path_text), Path(root_text)
    name = model_id(path, root)
    flags = SUITE_FLAGS.get(name.split("/")[0], {})
    before = {p: _sha256(p) for p in _input_files(path)}
    outcomes: list[Outcome] = []
    noisy: list[str] = []
    for command in commands:
        with tempfile.TemporaryDirectory(prefix="tclint-sweep-") as tmp:
            workdir = Path(tmp)
            out = workdir / "out.onnx"
            if command == "check":
                run = run_main(["check", str(path), "--format", "json"], timeout_s=timeout_s)
                result = _judge_check(name, run, valid)
            else:
                fmt = ["--format", "json"] if command == "fix" else []
                run = run_main([command, str(path), "-o", str(out), *fmt, *flags.get(command, ())],
                               timeout_s=timeout_s)
                result = _judge_writer(command, name, run, path, out, workdir)
                if command == "fix" and result.outcome == "ok":
                    result = _with_fix_report(result, run.stdout)
        changed = [p.name for p, digest in before.items() if not p.exists() or _sha256(p) != digest]
        if changed:
            result = Outcome(name, command, "failed", result.exit_code,
                             f"input changed: {', '.join(changed)}", result.seconds)
            before = {p: _sha256(p) for p in _input_files(path)}
        if run.native_stderr.strip():
            noisy.append(command)
        outcomes.append(result)
    return outcomes, noisy


def _fix_left(stdout: str) -> list:
    """The findings fix's JSON report says it left (each with why)."""
    try:
        report = json.loads(stdout)
    except ValueError:
        return []
    left = report.get("left") if isinstance(report, dict) else None
    return [f for f in left or () if isinstance(f, dict) and f.get("why")]


def _with_fix_report(result: Outcome, stdout: str) -> Outcome:
    """Add what the fixer reports it did (layers padded, reasons for leaving others alone)."""
    try:
        report = json.loads(stdout)
    except ValueError:
        return result
    if not isinstance(report, dict):
        return result
    changed = len(report.get("changes") or ())
    skipped = tuple(str(s.get("reason", "")) for s in report.get("skipped") or () if isinstance(s, dict))
    return dataclasses.replace(result, changed=changed, skipped=skipped)


def is_valid(path: Path) -> bool:
    """What the sweep calls a valid model: one that ``onnx.checker`` accepts."""
    import onnx

    try:
        onnx.checker.check_model(str(path))
    except Exception:  # noqa: BLE001 - checker raises ValidationError and others
        return False
    return True


# --------------------------------------------------------------------------------------------
# The sweep
# --------------------------------------------------------------------------------------------
def run_sweep(
    *,
    commands: Sequence[str] | None = None,
    models: Sequence[Path] | None = None,
    suites: Iterable[str] = SUITES,
    jobs: int = 1,
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> SweepResult:
    """Run ``commands`` (default: every one this tree has) on ``models`` (default: all found).

    ``suites``: the wheel's folders plus "examples" (small builds of tclint.examples' real
    architectures, written to a temporary folder for the run)."""
    with tempfile.TemporaryDirectory(prefix="tclint-sweep-examples-") as examples_dir:
        return _run_sweep(commands=commands, models=models, suites=suites, jobs=jobs,
                          timeout_s=timeout_s, examples_dir=Path(examples_dir))


def _run_sweep(*, commands, models, suites, jobs, timeout_s, examples_dir: Path) -> SweepResult:
    started = time.perf_counter()
    root = data_root()
    skipped: dict[str, str] = {}
    if models is None:
        models, skipped = discover(suites, root, examples_dir=examples_dir)
    commands = tuple(commands or available_commands())
    unknown = [c for c in commands if c not in COMMANDS]
    if unknown:
        raise ValueError(f"unknown commands {unknown}; known: {', '.join(COMMANDS)}")
    validity = {str(m): is_valid(m) for m in models}
    job_list = [(str(m), str(root), commands, timeout_s, validity[str(m)]) for m in models]
    if jobs > 1 and len(job_list) > 1:
        # spawn: onnxruntime's threads do not survive fork well
        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=jobs, mp_context=ctx) as pool:
            results = list(pool.map(_sweep_one, job_list, chunksize=4))
    else:
        results = [_sweep_one(job) for job in job_list]
    outcomes = tuple(o for outs, _ in results for o in outs)
    noise = {model_id(m, root): cmds for m, (_, cmds) in zip(models, results) if cmds}
    invalid = tuple(model_id(m, root) for m in models if not validity[str(m)])
    return SweepResult(models=len(models), commands=commands, skipped=skipped, invalid=invalid,
                       outcomes=outcomes, seconds=time.perf_counter() - started, native_noise=noise)


def reason_group(reason: str) -> str:
    """Group decline/failure reasons: drop paths, quoted names and numbers."""
    text = reason.removeprefix("tclint: error: ")
    text = re.sub(r"(?:[\w.\-]*/)+[\w.\-]+(?:\.onnx|\.data)?:?\s*", "", text)
    text = re.sub(r"\[ONNXRuntimeError\] : \d+ : ", "", text)
    text = re.sub(r"'[^']*'|\"[^\"]*\"", "'…'", text)
    text = re.sub(r"\b\d+\.\d+(e-?\d+)?\b|\b\d{3,}\b", "N", text)  # measurements, big numbers
    text = re.sub(r"\b([A-Z]\w*)=\d+", r"\1=N", text)  # dims: C=2, K=10
    text = re.sub(r"Name:'…' Status Message:.*", "", text)
    return text.strip()[:160]


def summarize(result: SweepResult) -> str:
    """The text summary: counts per command, then reasons grouped."""
    lines = [f"tclint sweep: {result.models} models (the onnx wheel's backend test data and tclint.examples), "
             f"commands {', '.join(result.commands)} ({result.seconds:.1f} s)"]
    for suite, why in result.skipped.items():
        lines.append(f"  skipped suite {suite!r}: {why}")
    if result.invalid:
        lines.append(f"  rejected by onnx.checker: {len(result.invalid)} ({', '.join(result.invalid)})")
    lines.append("")
    lines.append(f"  {'command':<9}{'ok':>6}{'declined':>10}{'failed':>8}")
    for cmd in result.commands:
        c = result.counts(cmd)
        lines.append(f"  {cmd:<9}{c['ok']:>6}{c['declined']:>10}{c['failed']:>8}")
    for kind in ("declined", "failed"):
        for cmd in result.commands:
            groups: dict[str, list[str]] = defaultdict(list)
            for o in result.by_command(cmd):
                if o.outcome == kind:
                    groups[reason_group(o.reason)].append(o.model)
            if not groups:
                continue
            lines.append("")
            lines.append(f"{cmd} {kind}:")
            for reason, names in sorted(groups.items(), key=lambda kv: (-len(kv[1]), kv[0])):
                shown = ", ".join(names[:3]) + (f", ... (+{len(names) - 3})" if len(names) > 3 else "")
                lines.append(f"  {len(names):>4}  {reason}")
                lines.append(f"        {shown}")
    fixes = [o for o in result.by_command("fix") if o.outcome == "ok"]
    if fixes:
        padded = [o for o in fixes if o.changed]
        lines.append("")
        lines.append(f"fix: {len(padded)} models padded ({sum(o.changed for o in padded)} layers), "
                     f"{len(fixes) - len(padded)} written unchanged")
        if padded:
            lines.append("        " + ", ".join(o.model for o in padded[:8])
                         + (", ..." if len(padded) > 8 else ""))
        reasons: dict[str, set[str]] = defaultdict(set)
        for o in fixes:
            for why in o.skipped:
                reasons[reason_group(why)].add(o.model)
        if reasons:
            lines.append("fix left reported layers alone because:")
            for why, names in sorted(reasons.items(), key=lambda kv: (-len(kv[1]), kv[0])):
                lines.append(f"  {len(names):>4}  {why}")
    unverified = [o for o in result.outcomes if o.command == "fix" and o.outcome == "ok"
                  and o.verified.startswith("original does not run")]
    if unverified:
        lines.append("")
        lines.append(f"fix ok but not independently compared (original does not run on random "
                     f"inputs): {len(unverified)}")
    if result.native_noise:
        lines.append("")
        lines.append(f"native (onnxruntime C++) log lines on stderr: {len(result.native_noise)} models "
                     f"({', '.join(sorted(result.native_noise)[:5])}{', ...' if len(result.native_noise) > 5 else ''})")
    return "\n".join(lines) + "\n"


def compare_expected(result: SweepResult, expected: dict) -> tuple[list[str], list[str]]:
    """(regressions, improvements) of ``result`` against a committed expectation.

    A regression: a command the expectation has is missing, a model's outcome got worse
    (ok -> declined/failed, declined -> failed), a model disappeared, or a count of ok went
    down / of failed went up. An improvement is the reverse (the expectation is then stale).
    """
    regressions: list[str] = []
    improvements: list[str] = []
    if "fix" in result.commands and "fixed" in expected:
        now_fixed = {o.model for o in result.by_command("fix") if o.changed}
        for name in sorted(set(expected["fixed"]) - now_fixed):
            regressions.append(f"fix {name}: was padded, now left unchanged")
        for name in sorted(now_fixed - set(expected["fixed"])):
            improvements.append(f"fix {name}: now padded")
    for cmd, exp in expected.get("commands", {}).items():
        if cmd not in result.commands:
            regressions.append(f"{cmd}: expected in the sweep but not run (command missing?)")
            continue
        now = {o.model: o for o in result.by_command(cmd)}
        for name, was in exp["models"].items():
            o = now.get(name)
            if o is None:
                regressions.append(f"{cmd} {name}: model no longer swept")
            elif _RANK[o.outcome] > _RANK[was]:
                regressions.append(f"{cmd} {name}: {was} -> {o.outcome} ({o.reason})")
            elif _RANK[o.outcome] < _RANK[was]:
                improvements.append(f"{cmd} {name}: {was} -> {o.outcome}")
        counts = result.counts(cmd)
        if counts["ok"] < exp["counts"]["ok"]:
            regressions.append(f"{cmd}: ok {exp['counts']['ok']} -> {counts['ok']}")
        if counts["failed"] > exp["counts"]["failed"]:
            regressions.append(f"{cmd}: failed {exp['counts']['failed']} -> {counts['failed']}")
    return regressions, improvements


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------
def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tclint.sweep", description=__doc__.split("\n")[0])
    parser.add_argument("--commands", default=None,
                        help=f"comma-separated subset of {','.join(COMMANDS)} (default: all that exist)")
    parser.add_argument("--suites", default=",".join(SUITES), help="comma-separated suites to sweep")
    parser.add_argument("--json", metavar="FILE", help="write every outcome as JSON here")
    parser.add_argument("--expected", metavar="FILE", help="compare with this expectation; exit 1 on regression")
    parser.add_argument("--update-expected", metavar="FILE", help="write the expectation file from this run")
    parser.add_argument("-j", "--jobs", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S, help="seconds per command per model")
    args = parser.parse_args(argv)
    from tclint.io import write_text

    commands = [c.strip() for c in args.commands.split(",") if c.strip()] if args.commands else None
    suites = [s.strip() for s in args.suites.split(",") if s.strip()]
    result = run_sweep(commands=commands, suites=suites, jobs=args.jobs, timeout_s=args.timeout)
    sys.stdout.write(summarize(result))
    if args.json:
        write_text(args.json, json.dumps(result.to_dict(), indent=1) + "\n")
    if args.update_expected:
        write_text(args.update_expected, json.dumps(result.to_expected(), indent=1, sort_keys=True) + "\n")
    status = 1 if result.failures() else 0
    if args.expected:
        expected = json.loads(Path(args.expected).read_text())
        regressions, improvements = compare_expected(result, expected)
        for line in regressions:
            print(f"REGRESSION {line}")
        for line in improvements:
            print(f"improved   {line}")
        status = status or (1 if regressions else 0)
    for o in result.failures():
        print(f"FAILED {o.command} {o.model}: {o.reason}")
    return status


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
