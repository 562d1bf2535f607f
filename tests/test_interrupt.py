"""Nothing lost: interrupted or failed writes leave no partial output, no temp file, the input intact.

``tclint fix`` and ``tclint convert`` run as real subprocesses on a ResNet-50 (224x224, ~100 MB of
weights, so writing takes a moment) and get SIGINT or SIGTERM:

- the moment their temporary output file appears (mid-write), and
- after delays spread over a whole run (two by default; the full grid of 9 delays x 2 signals
  with ``TCLINT_SLOW=1``, marked ``slow``).

Afterwards the output folder holds either nothing or the complete output (byte-identical to an
uninterrupted run), never a partial or temporary file, and the input's hash is unchanged.
Writing into a location that cannot take the file (a read-only folder, a file-size limit standing
in for a full disk, a device node such as /dev/full) fails with one ``tclint: error:`` line and
leaves nothing behind. ``save_model_atomic`` is also driven directly by a small script.
"""

from __future__ import annotations

import hashlib
import os
import resource
import signal
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import onnx
import pytest

from tclint import examples
from tests.helpers import data_file_of

WRITERS = ["fix", "convert"]


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _cmd() -> list[str]:
    exe = Path(sys.executable).with_name("tclint")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "tclint"]


@pytest.fixture(scope="module")
def big_model(tmp_path_factory) -> tuple[Path, str]:
    folder = tmp_path_factory.mktemp("in")
    path = folder / "resnet50.onnx"
    onnx.save(examples.resnet50(image=224), str(path))
    return path, _sha(path)


@pytest.fixture(scope="module")
def reference(big_model, tmp_path_factory) -> dict[str, tuple[str, float]]:
    """An uninterrupted run of each writer: output hash and duration."""
    src, _ = big_model
    out = {}
    for command in WRITERS:
        folder = tmp_path_factory.mktemp(f"ref_{command}")
        dest = folder / "out.onnx"
        start = time.perf_counter()
        proc = subprocess.run([*_cmd(), command, str(src), "-o", str(dest)], capture_output=True,
                              text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr
        out[command] = (_sha(dest), time.perf_counter() - start)
    return out


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def _assert_nothing_lost(folder: Path, ref_sha: str, src: Path, src_sha: str) -> str:
    names = _leftovers(folder)
    assert names in ([], ["out.onnx"]), f"partial or temporary files left: {names}"
    assert _sha(src) == src_sha, "the input model changed"
    if names:
        assert _sha(folder / "out.onnx") == ref_sha, "an output exists but is not the complete one"
        return "complete"
    return "none"


def _interrupt(command: str, src: Path, folder: Path, sig: int, *, delay: float | None) -> subprocess.Popen:
    """Start ``command``; send ``sig`` after ``delay`` s, or (delay None) once its temp file appears."""
    proc = subprocess.Popen([*_cmd(), command, str(src), "-o", str(folder / "out.onnx")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    start = time.monotonic()
    while proc.poll() is None and time.monotonic() < deadline:
        if delay is None:
            if any(n.startswith(".") for n in os.listdir(folder)):
                proc.send_signal(sig)
                break
        elif time.monotonic() - start >= delay:
            proc.send_signal(sig)
            break
        time.sleep(0.002)
    proc.wait(timeout=300)
    return proc


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
@pytest.mark.parametrize("command", WRITERS)
def test_interrupt_mid_write(big_model, reference, tmp_path, command, sig):
    src, src_sha = big_model
    proc = _interrupt(command, src, tmp_path, sig, delay=None)
    state = _assert_nothing_lost(tmp_path, reference[command][0], src, src_sha)
    stderr = proc.stderr.read() if proc.stderr else ""
    assert "Traceback" not in stderr, stderr
    if state == "none":  # the signal landed while writing: the command stopped and said so
        if sig == signal.SIGINT:
            assert proc.returncode == 130 and "tclint: interrupted" in stderr, (proc.returncode, stderr)
        else:
            assert proc.returncode in (-signal.SIGTERM, 128 + signal.SIGTERM), proc.returncode


def _delay_cases(full: bool):
    fractions = [0.05, 0.2, 0.4, 0.6, 0.75, 0.85, 0.92, 0.97, 1.0] if full else [0.6, 0.9]
    return [(f, sig) for i, f in enumerate(fractions)
            for sig in ([signal.SIGINT, signal.SIGTERM] if full else [(signal.SIGINT, signal.SIGTERM)[i % 2]])]


@pytest.mark.parametrize("fraction,sig", _delay_cases(False))
@pytest.mark.parametrize("command", WRITERS)
def test_interrupt_after_delay(big_model, reference, tmp_path, command, fraction, sig):
    src, src_sha = big_model
    ref_sha, seconds = reference[command]
    _interrupt(command, src, tmp_path, sig, delay=fraction * seconds)
    _assert_nothing_lost(tmp_path, ref_sha, src, src_sha)


@pytest.mark.slow
@pytest.mark.skipif(os.environ.get("TCLINT_SLOW") != "1",
                    reason="full delay grid (36 runs, ~1 min): set TCLINT_SLOW=1")
@pytest.mark.parametrize("fraction,sig", _delay_cases(True))
@pytest.mark.parametrize("command", WRITERS)
def test_interrupt_delay_grid(big_model, reference, tmp_path, command, fraction, sig):
    src, src_sha = big_model
    ref_sha, seconds = reference[command]
    _interrupt(command, src, tmp_path, sig, delay=fraction * seconds)
    _assert_nothing_lost(tmp_path, ref_sha, src, src_sha)


# --------------------------------------------------------------------------------------------
# Locations that cannot take the output
# --------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def small_model(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("small") / "conv.onnx"
    onnx.save(examples.single_conv(c=3, k=30, image=16), str(path))
    return path


def _one_error_line(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.startswith("tclint: error:")]
    assert len(lines) == 1, proc.stderr
    return lines[0]


@pytest.mark.parametrize("command", WRITERS)
def test_read_only_folder(small_model, tmp_path, command):
    if os.geteuid() == 0:
        # root ignores permission bits; procfs refuses new files for everyone
        dest = Path("/proc/tclint-out.onnx")
    else:
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o555)
        dest = ro / "out.onnx"
    proc = subprocess.run([*_cmd(), command, str(small_model), "-o", str(dest)],
                          capture_output=True, text=True, timeout=300)
    line = _one_error_line(proc)
    assert "cannot write" in line and str(dest) in line
    assert not dest.exists()
    if os.geteuid() != 0:
        assert _leftovers(dest.parent) == []


def _limit_file_size(limit: int):
    def preexec():
        # a full disk, stand-in: writes past `limit` bytes fail with EFBIG (SIGXFSZ ignored)
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return preexec


@pytest.mark.parametrize("command", WRITERS)
def test_full_location(big_model, tmp_path, command):
    src, src_sha = big_model
    dest = tmp_path / "out.onnx"
    proc = subprocess.run([*_cmd(), command, str(src), "-o", str(dest)], capture_output=True,
                          text=True, timeout=300, preexec_fn=_limit_file_size(8 << 20))
    line = _one_error_line(proc)
    assert "cannot write" in line and "too large" in line.lower()
    assert _leftovers(tmp_path) == []
    assert _sha(src) == src_sha


@pytest.mark.parametrize("command", WRITERS)
def test_device_or_pipe_as_output_is_refused(small_model, tmp_path, command):
    """An output path that is not a regular file (a FIFO here; /dev/full or /dev/null alike)
    must not be replaced by a regular file: as root that would clobber the device node."""
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    proc = subprocess.run([*_cmd(), command, str(small_model), "-o", str(fifo)],
                          capture_output=True, text=True, timeout=300)
    line = _one_error_line(proc)
    assert "not a regular file" in line
    assert stat.S_ISFIFO(fifo.lstat().st_mode)
    assert _leftovers(tmp_path) == ["pipe"]


def test_dev_full_is_refused_without_touching_it(small_model, tmp_path):
    """/dev/full itself: refused before anything is written (checked on a copy of the node
    when we may create one, so a regression cannot replace the real device)."""
    node = tmp_path / "full"
    try:
        os.mknod(node, stat.S_IFCHR | 0o666, os.makedev(1, 7))
    except (PermissionError, OSError):
        pytest.skip("cannot create a device node here")
    proc = subprocess.run([*_cmd(), WRITERS[0], str(small_model), "-o", str(node)],
                          capture_output=True, text=True, timeout=300)
    assert "not a regular file" in _one_error_line(proc)
    assert stat.S_ISCHR(node.lstat().st_mode)


# --------------------------------------------------------------------------------------------
# save_model_atomic directly
# --------------------------------------------------------------------------------------------
_DRIVER = textwrap.dedent("""
    import sys, onnx_ir as ir
    from tclint.errors import OutputError
    from tclint.io import save_model_atomic
    model = ir.load(sys.argv[1])
    try:
        save_model_atomic(model, sys.argv[2], external_data=sys.argv[3] == "ext")
    except OutputError as exc:
        print(f"tclint: error: {exc}", file=sys.stderr)
        sys.exit(2)
""")


@pytest.mark.parametrize("external", ["inline", "ext"])
def test_save_model_atomic_under_a_file_size_limit(big_model, tmp_path, external):
    src, _ = big_model
    dest = tmp_path / "out.onnx"
    proc = subprocess.run([sys.executable, "-c", _DRIVER, str(src), str(dest), external],
                          capture_output=True, text=True, timeout=300,
                          preexec_fn=_limit_file_size(4 << 20))
    line = _one_error_line(proc)
    assert "too large" in line.lower()
    assert _leftovers(tmp_path) == []


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_save_model_atomic_interrupted(big_model, tmp_path, sig):
    src, _ = big_model
    dest = tmp_path / "out.onnx"
    proc = subprocess.Popen([sys.executable, "-c", _DRIVER, str(src), str(dest), "ext"],
                            stderr=subprocess.PIPE, text=True)
    while proc.poll() is None:
        if any(n.startswith(".") for n in os.listdir(tmp_path)):
            proc.send_signal(sig)
            break
        time.sleep(0.002)
    proc.wait(timeout=120)
    names = _leftovers(tmp_path)
    assert names in ([], sorted(["out.onnx", data_file_of(dest).name]) if dest.exists() else []), names


def test_save_model_atomic_keeps_umask_permissions(small_model, tmp_path):
    import onnx_ir as ir

    from tclint.io import save_model_atomic

    old = os.umask(0o022)
    try:
        save_model_atomic(ir.load(small_model), tmp_path / "out.onnx")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "out.onnx").stat().st_mode) == 0o644


def test_check_report_into_a_device_keeps_the_device(small_model, tmp_path):
    """``tclint check m.onnx -o /dev/null`` writes into the device; it must not rename a
    regular file over it (as root that replaces /dev/null). Checked on a copy of the node."""
    node = tmp_path / "null"
    try:
        os.mknod(node, stat.S_IFCHR | 0o666, os.makedev(1, 3))
    except (PermissionError, OSError):
        pytest.skip("cannot create a device node here")
    proc = subprocess.run([*_cmd(), "check", str(small_model), "--format", "json", "-o", str(node)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode in (0, 1), proc.stderr
    assert stat.S_ISCHR(node.lstat().st_mode)
    assert _leftovers(tmp_path) == ["null"]


# --------------------------------------------------------------------------------------------
# Killed at every write step, and two writers to one output: old or new, never torn
# --------------------------------------------------------------------------------------------
#: the writer's named steps (tclint/io.py stops at TCLINT_TEST_STOP_AT=<step>): model with
#: external data, then the --report text file
WRITE_STEPS = ["data-partial", "data-written", "model-partial", "model-written", "committed",
               "text-partial", "text-written"]


@pytest.fixture(scope="module")
def ext_world(tmp_path_factory):
    """A small model with external data, and the outputs of two different writers of it: the
    "old" output (convert, FP16) and the "new" one (fix --force), each as ONNX Runtime computes
    it, so a torn pair (one's graph with the other's data) cannot pass for either. Returns the
    source, the feed, the outputs and the old output's folder (copied in as the file to replace)."""
    import numpy as np
    import onnxruntime as ort

    folder = tmp_path_factory.mktemp("ext_src")
    src = folder / "m.onnx"
    onnx.save(examples.single_conv(c=16, k=30, image=8, pre=None), str(src), save_as_external_data=True,
              location="m.onnx.data", size_threshold=0)
    feed = {"x": np.random.default_rng(0).standard_normal((1, 16, 8, 8)).astype(np.float32)}
    outs, refs = {}, {}
    for kind, argv in {"old": ["convert"], "new": ["fix", "--force"]}.items():
        ref = tmp_path_factory.mktemp(f"ref_{kind}") / "out.onnx"
        proc = subprocess.run([*_cmd(), argv[0], str(src), "-o", str(ref), *argv[1:]],
                              capture_output=True, text=True, timeout=120, check=False)
        assert proc.returncode == 0, proc.stderr
        data_file_of(ref)
        outs[kind] = ort.InferenceSession(str(ref), providers=["CPUExecutionProvider"]).run(None, feed)[0]
        refs[kind] = ref
    assert not np.allclose(outs["old"], outs["new"], rtol=1e-5, atol=1e-6), "old and new must be told apart"
    return src, feed, outs, refs["old"]


def _put_old_output(world, folder: Path) -> Path:
    """The old complete output (model and its data file) in ``folder``, as a previous run left it."""
    import shutil

    old = world[3]
    shutil.copy2(old, folder / "out.onnx")
    shutil.copy2(data_file_of(old), folder / data_file_of(old).name)
    return folder / "out.onnx"


def _which(out: Path, world) -> str:
    """'old' or 'new': the complete model at ``out`` (its own data file, outputs of one of the
    two writers); fails on anything torn or missing."""
    import numpy as np
    import onnxruntime as ort

    _, feed, outs, _ = world
    data_file_of(out)
    got = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"]).run(None, feed)[0]
    for kind, ref in outs.items():
        if got.shape == ref.shape and np.allclose(got, ref, rtol=1e-5, atol=1e-6):
            return kind
    raise AssertionError("the output is neither the old nor the new model: torn")


def _report_state(path: Path) -> str:
    import json

    text = path.read_text()
    if text == '{"old": "report"}\n':
        return "old"
    json.loads(text)  # complete, or this raises
    return "new"


def _start(argv, env_extra=None) -> subprocess.Popen:
    env = {**os.environ, **(env_extra or {})}
    return subprocess.Popen([*_cmd(), *map(str, argv)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, env=env)


def _wait_stopped(proc: subprocess.Popen, timeout: float = 120) -> None:
    """Block until ``proc`` stopped itself (SIGSTOP at its step); fail if it exits instead."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pid, status = os.waitpid(proc.pid, os.WUNTRACED | os.WNOHANG)
        if pid and os.WIFSTOPPED(status):
            return
        if pid:
            proc.returncode = os.waitstatus_to_exitcode(status)
            raise AssertionError(f"exited ({proc.returncode}) before its step: {proc.stderr.read()}")
        time.sleep(0.01)
    proc.kill()
    raise AssertionError("never reached its step")


def _tclint_entries(folder: Path) -> list[str]:
    return sorted(n for n in os.listdir(folder) if n.startswith(".tclint-tmp-"))


@pytest.mark.parametrize("step", WRITE_STEPS)
def test_sigkill_at_every_write_step_leaves_old_or_new(ext_world, tmp_path, step):
    """Stopped at ``step`` and SIGKILLed there: the output is the old complete model or the new
    complete one (never a mix), the report old or complete; the next run writing into the
    folder removes what the killed one left."""
    src = ext_world[0]
    out, report = _put_old_output(ext_world, tmp_path), tmp_path / "r.json"
    old_data = data_file_of(out).name
    report.write_text('{"old": "report"}\n')
    assert _which(out, ext_world) == "old"
    proc = _start(["fix", src, "-o", out, "--force", "--report", report], {"TCLINT_TEST_STOP_AT": step})
    _wait_stopped(proc)
    committed = step in ("committed", "text-partial", "text-written")
    state = (_which(out, ext_world), _report_state(report))
    assert state == ("new" if committed else "old", "old")  # the report is written after the model
    if step != "committed":
        assert _tclint_entries(tmp_path), "a stopped writer holds its temporary file"
    proc.kill()
    proc.wait(timeout=60)
    assert (_which(out, ext_world), _report_state(report)) == state
    # any later run writing into the folder removes the dead run's temporary files and the data
    # it never committed
    proc = subprocess.run([*_cmd(), "check", str(src), "--format", "json", "-o", str(tmp_path / "c.json")],
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode in (0, 1), proc.stderr
    assert _tclint_entries(tmp_path) == []
    assert _which(out, ext_world) == state[0]
    expected = ["out.onnx", data_file_of(out).name, "r.json", "c.json"]
    if step == "committed":
        # killed between the commit and removing the replaced data file: the next write to
        # that output removes it
        assert sorted(os.listdir(tmp_path)) == sorted([*expected, old_data])
        proc = subprocess.run([*_cmd(), "fix", str(src), "-o", str(out), "--force"],
                              capture_output=True, text=True, timeout=120, check=False)
        assert proc.returncode == 0, proc.stderr
        expected[1] = data_file_of(out).name
    assert sorted(os.listdir(tmp_path)) == sorted(expected)


@pytest.mark.parametrize("first", ["fix", "convert"])
def test_two_writers_to_one_output_commit_whole_models(ext_world, tmp_path, first):
    """Two runs staged at once (both stopped just before their commit), then let go one after
    the other: the output is the last one's complete model, and exactly its data file is left."""
    src = ext_world[0]
    out = _put_old_output(ext_world, tmp_path)
    argv = {"fix": ["fix", src, "-o", out, "--force"], "convert": ["convert", src, "-o", out]}
    procs = {k: _start(a, {"TCLINT_TEST_STOP_AT": "model-written"}) for k, a in argv.items()}
    for p in procs.values():
        _wait_stopped(p)
    assert _which(out, ext_world) == "old"
    second = "convert" if first == "fix" else "fix"
    for name in (first, second):
        os.kill(procs[name].pid, signal.SIGCONT)
        assert procs[name].wait(timeout=120) == 0, procs[name].stderr.read()
        assert _which(out, ext_world) == ("new" if name == "fix" else "old")
    assert sorted(os.listdir(tmp_path)) == sorted(["out.onnx", data_file_of(out).name])


@pytest.mark.slow
@pytest.mark.skipif(os.environ.get("TCLINT_SLOW") != "1", reason="free-running race, 6 runs: set TCLINT_SLOW=1")
def test_two_free_running_writers_to_one_output(ext_world, tmp_path):
    """No stops: the two race for real, three times over; never torn, one data file left."""
    src = ext_world[0]
    out = tmp_path / "out.onnx"
    for _ in range(3):
        procs = [_start(["fix", src, "-o", out, "--force"]), _start(["convert", src, "-o", out])]
        for p in procs:
            assert p.wait(timeout=120) == 0, p.stderr.read()
        assert _which(out, ext_world) in ("old", "new")
        assert sorted(os.listdir(tmp_path)) == sorted(["out.onnx", data_file_of(out).name])


@pytest.mark.slow
@pytest.mark.skipif(os.environ.get("TCLINT_SLOW") != "1", reason="SIGKILL delay grid: set TCLINT_SLOW=1")
@pytest.mark.parametrize("fraction", [0.1, 0.3, 0.5, 0.7, 0.8, 0.9, 0.95, 1.0])
@pytest.mark.parametrize("command", WRITERS)
def test_sigkill_after_delay_then_cleaned(big_model, reference, tmp_path, command, fraction):
    """SIGKILL (no handler can run) at delays over a whole run: nothing but the complete output
    may remain once a later run has swept the folder."""
    src, src_sha = big_model
    ref_sha, seconds = reference[command]
    _interrupt(command, src, tmp_path, signal.SIGKILL, delay=fraction * seconds)
    subprocess.run([*_cmd(), "check", str(src), "-o", str(tmp_path / "c.json"), "--exit-zero"],
                   capture_output=True, timeout=300, check=False)
    (tmp_path / "c.json").unlink(missing_ok=True)
    _assert_nothing_lost(tmp_path, ref_sha, src, src_sha)
