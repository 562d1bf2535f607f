"""Every file tclint writes goes through this module: models with their external data, reports,
baselines, HTML pages, ``check -o``. Nothing lost: the inputs are never overwritten, an output is
at every instant absent, the old complete file or the new complete file, and a killed run's
leftovers are removed by the next run.

The protocol
============

Names
    A temporary entry (file or folder) is ``.tclint-tmp-<host>-<pid>-<start>-<token>``, created
    exclusively (``O_CREAT | O_EXCL | O_NOFOLLOW``: a planted file or symlink makes the create
    fail, it is never followed or reused) in the destination's own folder, so the final rename
    never crosses a file system. ``host`` is a hash of the boot id, pid namespace and host name
    (whose pids these are), ``pid`` and ``start`` (the process's start time, from /proc) name the
    owner, ``token`` is 16 random hex digits. A model's external data file is
    ``<output name>.<token>.data``, with the token of the writer's temporary model file.

Writing a model with external data (:func:`stage_model`, :func:`save_model_atomic`)
    1. Sweep the folder (:func:`sweep_leftovers`): temporary entries whose owner is dead (same
       host, pid gone, zombie, or reused with another start time) are removed, and with each the
       data file carrying its token, which no committed model can reference.
    2. Create the temporary model file ``T``. Its existence marks the token as in flight.
    3. Create the data file ``D = <out>.<token>.data`` exclusively and write every external tensor
       into it (the input's tensors stream from their files); fsync.
    4. Serialize the model with every external tensor pointing at ``D``'s name, and nothing
       else (checked on the written proto); write it to ``T``; fsync.
    5. The caller may now verify ``T``: it sits in the final folder next to ``D``, so it loads as
       the final model will (``tclint convert`` runs its comparison on these files).
    6. Commit: ``rename(T, out)``, the single commit point; fsync the folder. Before it,
       ``out`` is the old complete model (its own data file untouched); after it, the new one.
    7. Remove the data files of replaced outputs: every ``<out>.<tok>.data`` but our own, unless
       a live temporary file with ``tok`` exists (checked first: that writer has not committed),
       or a file of the folder that may be a model (``*.onnx``, or anything up to 64 MB) mentions
       its name (checked after: a later commit never references an older token again), or it is
       one of the command's inputs. A run killed between 6 and 7 leaves the replaced data file;
       the next write to the same output removes it.
    Any failure or interrupt before 6 unlinks ``D`` then ``T``; a SIGKILL leaves both, and step 1
    of the next write into that folder removes them. Two concurrent writers to one ``out`` each
    commit a complete pair; the last rename wins and the loser's data file is removed by whichever
    step 7 runs after both commits.

Writing text (:func:`write_text`)
    Same temporary file, same commit by rename. A destination that is a device, a FIFO or a socket
    (or a link into /dev or /proc, such as /dev/stdout) is written into, never renamed over; a
    folder is refused; a symlink elsewhere is replaced by the new file, never written through.

Never overwrite the inputs (:func:`refuse_overwriting`)
    Every path a command writes is compared with every file it reads (the model, each external
    data file it references, ``--inputs``, the calibration table), after resolving links (same
    device and inode): a match is refused with one line before anything runs. The conventional
    data file name ``<out>.data`` of a model output is checked too (other tools write there).

Limits, on purpose: data files of older tclint versions (``<out>.data``) and of other tools are
never removed; leftovers of processes on another host or pid namespace are left alone (their
liveness cannot be judged from here); references are searched in ``*.onnx`` files and in other
files up to 64 MB, so a model renamed to another extension and grown past that is not seen.
"""

from __future__ import annotations

import contextlib
import hashlib
import mmap
import os
import re
import secrets
import shutil
import signal
import socket
import stat
from collections.abc import Iterable, Iterator
from pathlib import Path

import onnx_ir as ir

from tclint.errors import InputError, OutputError, UsageError

#: Protobuf cannot serialize a message over 2 GiB; above this, weights go to external data.
PROTO_LIMIT_BYTES = 2**31 - 1
#: In external-data mode, tensors of at least this many bytes go to the data file (onnx-ir's
#: default); smaller ones (shape inputs such as Resize scales, which onnxruntime reads only from the
#: model) stay inline.
EXTERNAL_THRESHOLD_BYTES = 256
#: Longest file name most file systems take (bytes).
NAME_MAX = 255

TEMP_PREFIX = ".tclint-tmp-"
_TEMP_RE = re.compile(
    r"^\.tclint-tmp-(?P<host>[0-9a-f]{8})-(?P<pid>\d+)-(?P<start>\d+)-(?P<token>[0-9a-f]{16})")
_DATA_RE = re.compile(r"^(?P<stem>.*)\.(?P<token>[0-9a-f]{16})\.data$")


# --------------------------------------------------------------------------------------------
# Who owns a temporary name
# --------------------------------------------------------------------------------------------
_identity: dict[int, tuple[str, int, int]] = {}


def _read(path: str) -> str:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return ""


def _host_tag() -> str:
    try:
        pidns = os.readlink("/proc/self/ns/pid")
    except OSError:
        pidns = ""
    seed = "|".join((_read("/proc/sys/kernel/random/boot_id"), pidns, socket.gethostname()))
    return hashlib.sha1(seed.encode()).hexdigest()[:8]


def _proc_stat(pid: int) -> tuple[str, int] | None:
    """(state, start time in clock ticks) of ``pid`` from /proc, or None where /proc says nothing."""
    text = _read(f"/proc/{pid}/stat")
    if not text or ")" not in text:
        return None
    fields = text.rsplit(")", 1)[1].split()
    try:
        return fields[0], int(fields[19])
    except (IndexError, ValueError):
        return None


def _me() -> tuple[str, int, int]:
    pid = os.getpid()  # per pid: a forked worker is another owner
    if pid not in _identity:
        st = _proc_stat(pid)
        _identity[pid] = (_host_tag(), pid, st[1] if st else 0)
    return _identity[pid]


def temp_name(token: str | None = None) -> str:
    host, pid, start = _me()
    return f"{TEMP_PREFIX}{host}-{pid}-{start}-{token or secrets.token_hex(8)}"


def _owner_alive(host: str, pid: int, start: int) -> bool:
    """True unless we can tell the owner is gone (another host's entries count as alive)."""
    if host != _me()[0]:
        return True
    if pid == os.getpid():
        return start == _me()[2] or start == 0
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # another user's live process
    except OSError:
        return True
    st = _proc_stat(pid)
    if st is None:
        return True
    state, started = st
    if state in ("Z", "X"):
        return False  # killed, not yet reaped
    return start == 0 or started == start


def _live_tokens(names: Iterable[str]) -> tuple[set[str], set[str], list[str]]:
    """Tokens of live and of dead temporary entries, and the dead entries' names."""
    live, dead, dead_names = set(), set(), []
    for name in names:
        m = _TEMP_RE.match(name)
        if not m:
            continue
        if _owner_alive(m["host"], int(m["pid"]), int(m["start"])):
            live.add(m["token"])
        else:
            dead.add(m["token"])
            dead_names.append(name)
    return live, dead - live, dead_names


def _remove(path: Path) -> None:
    with contextlib.suppress(OSError):
        st = path.lstat()
        if stat.S_ISDIR(st.st_mode):
            shutil.rmtree(path, ignore_errors=True)  # never follows links inside
        else:
            path.unlink()


def sweep_leftovers(folder: str | os.PathLike) -> list[str]:
    """Remove what killed tclint runs left in ``folder``: temporary entries of dead owners and the
    data files carrying their tokens (never committed, so nothing references them). Returns the
    names removed."""
    folder = Path(folder)
    try:
        names = os.listdir(folder)
    except OSError:
        return []
    if not any(n.startswith(TEMP_PREFIX) for n in names):
        return []
    _, dead, dead_names = _live_tokens(names)
    removed = []
    for name in names:  # data files first: their temporary model file marks them in flight
        m = _DATA_RE.match(name)
        if m and m["token"] in dead:
            _remove(folder / name)
            removed.append(name)
    for name in dead_names:
        _remove(folder / name)
        removed.append(name)
    return removed


# --------------------------------------------------------------------------------------------
# Signals during the critical sections
# --------------------------------------------------------------------------------------------
@contextlib.contextmanager
def _deferred_signals() -> Iterator[None]:
    """Hold SIGINT/SIGTERM during a rename or a create-and-record, replay them after."""
    received: list[int] = []
    previous = {}

    def handler(signum, _frame):  # pragma: no cover - exercised by the kill tests
        received.append(signum)

    try:
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, handler)
    except ValueError:  # not in the main thread: nothing to defer
        previous = {}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
        for sig in received:
            os.kill(os.getpid(), sig)


@contextlib.contextmanager
def _terminate_cleanly() -> Iterator[None]:
    """While temporary files exist, turn SIGTERM into SystemExit(143) so that ``finally`` blocks
    remove them (the default action would kill the process and leave them for the next sweep)."""
    def handler(signum, _frame):
        raise SystemExit(128 + signum)

    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not in the main thread
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _test_stop(step: str) -> None:
    """Kill tests stop the writer at a named step (TCLINT_TEST_STOP_AT=step) to SIGKILL it there."""
    if os.environ.get("TCLINT_TEST_STOP_AT") == step:
        os.kill(os.getpid(), signal.SIGSTOP)


# --------------------------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------------------------
_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)


def _create_exclusive(path: Path) -> int:
    return os.open(path, _CREATE, 0o666)  # the umask applies, as for any new file


def _fsync_folder(folder: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _folder_of(dest: Path) -> Path:
    folder = dest.parent if str(dest.parent) else Path(".")
    if not folder.is_dir():
        raise OutputError(f"cannot write {dest}: folder {folder} does not exist")
    return folder


def _why(exc: OSError) -> str:
    return exc.strerror or str(exc)


def _keep_mode(fd: int, dest: Path) -> None:
    """A replaced file keeps its permissions (a new one gets the umask's)."""
    with contextlib.suppress(OSError):
        st = dest.lstat()
        if stat.S_ISREG(st.st_mode):
            os.fchmod(fd, stat.S_IMODE(st.st_mode))


def _special(dest: Path) -> bool:
    """A destination to write into rather than rename over: a device, FIFO or socket, or a link
    into /dev or /proc (/dev/stdout is a link to the process's own descriptor)."""
    try:
        lst = dest.lstat()
    except OSError:
        return False
    if stat.S_ISLNK(lst.st_mode):
        try:
            target = dest.stat()
        except OSError:
            return False  # dangling: replaced
        if not stat.S_ISREG(target.st_mode) and not stat.S_ISDIR(target.st_mode):
            return True
        return str(dest.absolute()).startswith(("/dev/", "/proc/"))
    return not stat.S_ISREG(lst.st_mode) and not stat.S_ISDIR(lst.st_mode)


def write_text(path: str | os.PathLike, text: str, *, protect: Iterable[str | os.PathLike] = ()) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically (see the module docstring).

    ``protect``: files this command reads; writing over one of them is refused. Raises
    :class:`OutputError` or :class:`UsageError` with a one-line message.
    """
    dest = Path(path)
    protect = list(protect)
    refuse_overwriting(reads=protect, writes=[dest])
    data = text.encode("utf-8")
    if dest.is_dir() and not dest.is_symlink():
        raise OutputError(f"cannot write {dest}: it is a directory")
    try:
        if _special(dest):
            flags = os.O_WRONLY | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_CLOEXEC", 0)
            if is_regular_file(dest):
                flags |= os.O_TRUNC  # /dev/stdout redirected to a file
            fd = os.open(dest, flags)
            try:
                _write_all(fd, data)
            finally:
                os.close(fd)
            return dest
        folder = _folder_of(dest)
        sweep_leftovers(folder)
        with _terminate_cleanly():
            tmp = None
            try:
                with _deferred_signals():
                    tmp = folder / temp_name()
                    fd = _create_exclusive(tmp)
                try:
                    _keep_mode(fd, dest)
                    half = len(data) // 2
                    _write_all(fd, data[:half])
                    _test_stop("text-partial")
                    _write_all(fd, data[half:])
                    os.fsync(fd)
                finally:
                    os.close(fd)
                _test_stop("text-written")
                with _deferred_signals():
                    os.replace(tmp, dest)
                    tmp = None
                _fsync_folder(folder)
            finally:
                if tmp is not None:
                    _remove(tmp)
        # a report written over a model tclint wrote: that model's data file goes with it
        remove_replaced_data(folder, dest.name, keep=None, protect=protect)
    except OSError as exc:
        raise OutputError(f"cannot write {dest}: {_why(exc)}") from None
    return dest


def _write_all(fd: int, data: bytes | memoryview) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


@contextlib.contextmanager
def temp_dir(folder: str | os.PathLike) -> Iterator[Path]:
    """A private folder inside ``folder`` (for intermediate models), removed on exit; after a
    SIGKILL the next sweep of ``folder`` removes it."""
    folder = Path(folder)
    if not folder.is_dir():
        raise OutputError(f"cannot write into {folder}: folder does not exist")
    sweep_leftovers(folder)
    with _terminate_cleanly():
        try:
            with _deferred_signals():
                path = folder / temp_name()
                os.mkdir(path, 0o700)
        except OSError as exc:
            raise OutputError(f"cannot write into {folder}: {_why(exc)}") from None
        try:
            yield path
        finally:
            _remove(path)


# --------------------------------------------------------------------------------------------
# What a command reads must not be what it writes
# --------------------------------------------------------------------------------------------
def _identity_of(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()  # follows links: a link to the input is the input
    except (OSError, ValueError):
        return None
    return st.st_dev, st.st_ino


def model_files(path: str | os.PathLike, model: ir.Model | None = None) -> list[Path]:
    """The model file and every external data file it references (only those that exist).

    With ``model`` (already loaded) nothing is read; without it the file's bytes are scanned for
    locations (no parse), and only when needed (see :func:`refuse_overwriting`)."""
    p = Path(path)
    files = [p]
    locations: set[str] = set()
    if model is not None:
        for tensor in external_tensors(model):
            locations.add(os.fspath(tensor.location))
    else:
        locations = _proto_locations(p)
    base = p.parent
    for loc in sorted(locations):
        if not location_problem(loc):
            files.append(base / loc)
    return files


#: An external_data entry as protobuf writes it: field 1 (key) = "location", then field 2 (value).
_LOCATION_RE = re.compile(rb"\x0a\x08location\x12")


def _proto_locations(path: Path) -> set[str]:
    """Every external-data ``location`` a model file names, found in its bytes without parsing
    it (a 2 GB inline model costs one scan, not a parse; a stray match only protects one more
    path). Covers initializers, sparse tensors, attribute tensors, subgraphs and functions."""
    out: set[str] = set()
    try:
        with open(path, "rb") as f:
            if not stat.S_ISREG(os.fstat(f.fileno()).st_mode) or os.fstat(f.fileno()).st_size == 0:
                return out
            with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
                for m in _LOCATION_RE.finditer(mm):
                    i = m.end()
                    if i >= len(mm):
                        break
                    n = mm[i]
                    i += 1
                    if n & 0x80 and i < len(mm):
                        n = (n & 0x7F) | (mm[i] << 7)
                        i += 1
                    out.add(bytes(mm[i:i + n]).decode("utf-8", "surrogateescape"))
    except (OSError, ValueError):
        pass
    return out


def conventional_data_name(path: str | os.PathLike) -> Path:
    """``<path>.data``: where onnx.save and most tools put a model's external data."""
    p = Path(path)
    return p.with_name(p.name + ".data")


def refuse_overwriting(*, reads: Iterable, writes: Iterable, models: Iterable = ()) -> None:
    """Refuse (exit 2, one line) when a path to write is a file read, after resolving links, or
    when two writes name the same file. ``reads``: plain files; ``models``: model paths, or
    (path, loaded model) pairs (their external data files count as read; looked up only when a
    write path already exists: a path that does not exist cannot be an input)."""
    writes = [Path(w) for w in writes if w is not None]
    seen: dict[str, Path] = {}
    for w in writes:
        key = os.path.realpath(w)
        if key in seen and seen[key] != w:
            raise UsageError(f"{seen[key]} and {w} are the same file: two outputs cannot share it")
        if key in seen:
            raise UsageError(f"{w} is named twice as an output")
        seen[key] = w
    existing = {}
    for w in writes:
        ident = _identity_of(w)
        if ident is not None:
            existing[ident] = w
    if not existing:
        return  # nothing to overwrite: an input exists, so it cannot be any of these
    read_paths = [(Path(r), "an input") for r in reads if r is not None]
    for m in models:
        if m is None:
            continue
        files = model_files(*m) if isinstance(m, tuple) else model_files(m)
        read_paths.append((files[0], "the input model"))
        read_paths += [(f, f"the external data of the input model {files[0].name}") for f in files[1:]]
    for r, what in read_paths:
        ident = _identity_of(r)
        if ident in existing:
            raise UsageError(f"refusing to write {existing[ident]}: it is {what} of this command, "
                             "and an output must not overwrite an input")


def refuse_overwriting_model_output(out: str | os.PathLike, *, reads: Iterable = (), models: Iterable = (),
                                    others: Iterable = ()) -> None:
    """:func:`refuse_overwriting` for a model output: its conventional data name counts too."""
    out = Path(out)
    refuse_overwriting(reads=reads, writes=[out, *others], models=models)
    data = conventional_data_name(out)
    try:
        refuse_overwriting(reads=reads, writes=[data], models=models)
    except UsageError:
        raise UsageError(f"refusing to write {out}: {data.name}, the usual name of its data file, "
                         "is an input of this command, and an output must not overwrite an input"
                         ) from None


# --------------------------------------------------------------------------------------------
# External data: which tensors, where, and whether their files are readable
# --------------------------------------------------------------------------------------------
def _function_nodes(model: ir.Model) -> Iterator[ir.Node]:
    for fn in model.functions.values():
        yield from ir.traversal.RecursiveGraphIterator(fn)


def _tensor_slots(model: ir.Model):
    """Every place a tensor lives: (getter, setter) pairs over initializers of every graph and
    TENSOR/TENSORS attributes of every node (graphs, subgraphs, model-local functions)."""
    for graph in model.graphs():
        for value in graph.initializers.values():
            if value.const_value is not None:
                yield value.const_value, (lambda t, v=value: setattr(v, "const_value", t))
    nodes = [n for g in model.graphs() for n in g]
    nodes += list(_function_nodes(model))
    for node in nodes:
        for key, attr in list(node.attributes.items()):
            if attr.is_ref() or attr.value is None:
                continue
            if attr.type == ir.AttributeType.TENSOR:
                def set_one(t, node=node, key=key, attr=attr):
                    node.attributes[key] = ir.Attr(key, ir.AttributeType.TENSOR, t, doc_string=attr.doc_string)
                yield attr.value, set_one
            elif attr.type == ir.AttributeType.TENSORS:
                for i, t in enumerate(attr.value):
                    def set_many(new, node=node, key=key, i=i):
                        cur = list(node.attributes[key].value)
                        cur[i] = new
                        node.attributes[key] = ir.Attr(key, ir.AttributeType.TENSORS, cur)
                    yield t, set_many


def external_tensors(model: ir.Model) -> list[ir.ExternalTensor]:
    return [t for t, _ in _tensor_slots(model) if isinstance(t, ir.ExternalTensor)]


def set_base_dir(model: ir.Model, base_dir: str) -> None:
    """External tensors resolve against the model's folder (attribute tensors and functions too;
    onnx-ir leaves those relative to the current directory)."""
    for tensor in external_tensors(model):
        tensor.base_dir = base_dir


def model_weight_bytes(model: ir.Model) -> int:
    """Bytes of all initializers, from their shapes and dtypes (no weight is read)."""
    total = 0
    for graph in model.graphs():
        for value in graph.initializers.values():
            tensor = value.const_value
            if tensor is not None:
                with contextlib.suppress(TypeError, ValueError):
                    total += tensor.nbytes
    return total


def location_problem(location: str) -> str | None:
    """Why an external ``location`` cannot be a file name here, or None."""
    if not isinstance(location, str) or not location:
        return "is empty"
    if "\x00" in location:
        return "contains a NUL byte"
    try:
        encoded = os.fsencode(location)
    except (UnicodeError, ValueError):
        return "is not a valid file name"
    if len(encoded) > 4096 or any(len(part) > NAME_MAX for part in encoded.split(b"/")):
        return f"is longer than the file system allows ({NAME_MAX} bytes per name)"
    return None


def _shown(location: str) -> str:
    text = location.encode("unicode_escape", "replace").decode("ascii", "replace")
    return text if len(text) <= 80 else text[:60] + f"... ({len(location)} characters)"


def require_readable_weights(model: ir.Model, model_path: str | os.PathLike) -> None:
    """Check that every external tensor can be read and lies inside the model's folder: a valid
    name, a regular file (never a FIFO or device), long enough. Used by the commands that need
    weight values (fix, convert); ``check`` never calls it."""
    base = Path(model_path).resolve().parent
    for tensor in external_tensors(model):
        name = tensor.name or "?"
        raw = os.fspath(tensor.location)
        problem = location_problem(raw)
        if problem:
            raise InputError(f"external data location of {name!r} {problem}: {_shown(raw)}")
        location = Path(raw)
        target = (Path(tensor.base_dir or base) / location).resolve()
        if location.is_absolute() or not target.is_relative_to(base):
            raise InputError(
                f"external data of {name!r} points outside the model's folder "
                f"({_shown(raw)}); refusing to read it"
            )
        try:
            st = target.stat()
        except FileNotFoundError:
            raise InputError(f"external data file {_shown(raw)} for {name!r} is missing "
                             f"(looked in {target.parent})") from None
        except OSError as exc:
            raise InputError(f"external data file {_shown(raw)} for {name!r}: {_why(exc)}") from None
        if not stat.S_ISREG(st.st_mode):
            raise InputError(f"external data file {_shown(raw)} for {name!r} is not a regular file")
        try:
            end = (tensor.offset or 0) + tensor.nbytes
        except (TypeError, ValueError):
            raise InputError(f"external tensor {name!r} has no valid element type") from None
        if end > st.st_size:
            raise InputError(
                f"external data file {_shown(raw)} is truncated: {name!r} needs "
                f"bytes up to {end}, the file has {st.st_size}"
            )


# --------------------------------------------------------------------------------------------
# Models
# --------------------------------------------------------------------------------------------
def _data_name(dest_name: str, token: str) -> str:
    suffix = f".{token}.data"
    stem = dest_name
    while len(os.fsencode(stem + suffix)) > NAME_MAX:
        stem = stem[:-1]
    return stem + suffix


class StagedModel:
    """A model written under its temporary name in the destination folder, not yet committed.

    ``path`` loads as the final model will (its data file already has its final name).
    :meth:`commit` renames it into place; leaving the ``with`` block without committing removes
    both files."""

    def __init__(self, dest: Path, folder: Path, token: str, protect: set):
        self.dest, self.folder, self.token = dest, folder, token
        self.path = folder / temp_name(token)
        self.data_path: Path | None = None
        self.committed = False
        self._protect = protect

    def commit(self) -> Path:
        try:
            _test_stop("model-written")
            with _deferred_signals():
                os.replace(self.path, self.dest)
                self.committed = True
            _fsync_folder(self.folder)
        except OSError as exc:
            raise OutputError(f"cannot write {self.dest}: {_why(exc)}") from None
        _test_stop("committed")
        remove_replaced_data(self.folder, self.dest.name, keep=self.token, protect=self._protect)
        return self.dest

    def discard(self) -> None:
        if self.committed:
            return
        if self.data_path is not None:
            _remove(self.data_path)  # first: the temporary file marks it in flight
        _remove(self.path)


#: Files the reference search reads besides ``*.onnx``: any file up to this size (a model that
#: keeps its weights in external data is small; larger non-.onnx files are data, not models).
MENTION_SEARCH_BYTES = 64 << 20


def remove_replaced_data(folder: Path, dest_name: str, *, keep: str | None, protect: Iterable = ()) -> list[str]:
    """Step 7 of the protocol: data files ``<dest>.<tok>.data`` no model references any more."""
    try:
        names = os.listdir(folder)
    except OSError:
        return []
    stem = _data_name(dest_name, "0" * 16)[: -len(".0000000000000000.data")]
    candidates = [n for n in names if (m := _DATA_RE.match(n)) and m["stem"] == stem and m["token"] != keep]
    if not candidates:
        return []
    protected = {i for i in (_identity_of(Path(p)) for p in protect) if i is not None}
    live, _, _ = _live_tokens(names)  # in flight: checked before looking for references
    removed = []
    readers = None
    for name in candidates:
        if _DATA_RE.match(name)["token"] in live:
            continue
        if readers is None:
            readers = _possible_models(folder)
        if any(_mentions(m, name) for m in readers):
            continue
        if _identity_of(folder / name) in protected:
            continue
        _remove(folder / name)
        removed.append(name)
    return removed


def _possible_models(folder: Path) -> list[Path]:
    """Files of ``folder`` that may be models referencing a data file: every ``*.onnx`` and any
    other regular file up to :data:`MENTION_SEARCH_BYTES`, except tclint's own data and temporary
    files (a renamed model keeps its data: ``mv out.onnx final.model`` still protects it)."""
    out = []
    for entry in os.scandir(folder):
        name = entry.name
        if name.startswith(TEMP_PREFIX) or _DATA_RE.match(name):
            continue
        try:
            st = entry.stat()  # follows links: a linked model reads its data from here too
        except OSError:
            continue
        if stat.S_ISREG(st.st_mode) and (name.endswith(".onnx") or st.st_size <= MENTION_SEARCH_BYTES):
            out.append(Path(entry.path))
    return out


def _mentions(path: Path, name: str) -> bool:
    """Whether the bytes of ``path`` contain ``name`` (a cheap, conservative reference test)."""
    try:
        with open(path, "rb") as f:
            if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
                return False
            size = os.fstat(f.fileno()).st_size
            if size == 0:
                return False
            with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
                return mm.find(name.encode()) >= 0
    except (OSError, ValueError):
        return True  # cannot tell: keep the data


def _wants_external(model: ir.Model, external_data: bool | None) -> bool:
    if external_data is not None:
        return external_data
    if external_tensors(model):
        return True  # external data in, external data out
    return model_weight_bytes(model) > PROTO_LIMIT_BYTES - 64 * 2**20


def _memory_tensor(tensor):
    from onnx_ir.external_data import convert_tensors_from_external

    return convert_tensors_from_external([tensor])[0]


def _write_tensor(f, tensor) -> int:
    start = f.tell()
    if hasattr(tensor, "tofile"):
        tensor.tofile(f)
    else:
        f.write(tensor.tobytes())
    return f.tell() - start


@contextlib.contextmanager
def stage_model(
    model: ir.Model,
    path: str | os.PathLike,
    *,
    external_data: bool | None = None,
    protect: Iterable[str | os.PathLike] = (),
) -> Iterator[StagedModel]:
    """Write ``model`` for ``path`` under temporary names (steps 1-4); yield the staged model.

    ``external_data``: True writes every tensor of 256 bytes or more (whatever its dtype) to
    ``<name>.<token>.data``; False inlines everything; None (default) keeps external data
    when the model has any and otherwise uses it only over 2 GB. ``protect``: files the command
    reads (the model's own external data files are always protected). The model object is left
    as it was. Raises :class:`OutputError` with a one-line message.
    """
    dest = Path(path)
    folder = _folder_of(dest)
    if _special(dest) or dest.is_dir():
        # renaming over a device (/dev/null, /dev/full), a FIFO or a folder would replace it
        raise OutputError(f"cannot write {dest}: not a regular file")
    sources = [Path(t.path) for t in external_tensors(model)]
    protect = {*map(str, protect), *map(str, sources)}
    refuse_overwriting(reads=protect, writes=[dest])
    external = _wants_external(model, external_data)
    sweep_leftovers(folder)
    token = secrets.token_hex(8)
    staged = StagedModel(dest, folder, token, protect)
    with _terminate_cleanly():
        try:
            try:
                _stage(model, staged, external)
            except OSError as exc:
                raise OutputError(f"cannot write {dest}: {_why(exc)}") from None
            yield staged
        finally:
            staged.discard()


def _stage(model: ir.Model, staged: StagedModel, external: bool) -> None:
    with _deferred_signals():
        fd = _create_exclusive(staged.path)
    try:
        _keep_mode(fd, staged.dest)
        data_name = _data_name(staged.dest.name, staged.token) if external else None
        restore = []
        try:
            slots = [(t, s) for t, s in _tensor_slots(model)
                     if t.dtype != ir.DataType.STRING and _nbytes(t) >= EXTERNAL_THRESHOLD_BYTES]
            if external and not slots:
                external, data_name = False, None  # nothing big enough: no empty data file
            # small tensors stay in the model (onnxruntime reads shape inputs such as Resize
            # scales only from there), and so does everything without external data
            chosen = {id(t) for t, _ in slots} if external else set()
            for tensor, setter in list(_tensor_slots(model)):
                if isinstance(tensor, ir.ExternalTensor) and id(tensor) not in chosen:
                    setter(_memory_tensor(tensor))
                    restore.append((setter, tensor))
            if external:
                with _deferred_signals():
                    staged.data_path = staged.folder / data_name
                    dfd = _create_exclusive(staged.data_path)
                _keep_mode(dfd, staged.dest)
                with os.fdopen(dfd, "wb") as f:
                    for i, (tensor, setter) in enumerate(slots):
                        offset = f.tell()
                        length = _write_tensor(f, tensor)
                        setter(ir.ExternalTensor(data_name, offset, length, tensor.dtype,
                                                 shape=tensor.shape, name=tensor.name,
                                                 base_dir=str(staged.folder)))
                        restore.append((setter, tensor))
                        if i == len(slots) // 2:
                            f.flush()
                            _test_stop("data-partial")
                    f.flush()
                    os.fsync(f.fileno())
                _test_stop("data-written")
            try:
                proto = ir.serde.serialize_model(model)
            except Exception as exc:  # noqa: BLE001 - onnx-ir wraps errors in SerdeError
                raise OutputError(f"cannot write {staged.dest}: the model cannot be serialized "
                                  f"({_root_cause(exc)})") from None
        finally:
            for setter, tensor in reversed(restore):
                setter(tensor)
        _check_locations(proto, data_name, staged.dest)
        try:
            blob = proto.SerializeToString()
        except ValueError:
            raise OutputError(f"cannot write {staged.dest}: the model is over 2 GB; use external "
                              "data (--external-data)") from None
        del proto
        half = len(blob) // 2
        _write_all(fd, memoryview(blob)[:half])
        _test_stop("model-partial")
        _write_all(fd, memoryview(blob)[half:])
        os.fsync(fd)
    finally:
        os.close(fd)


def _nbytes(tensor) -> int:
    try:
        return tensor.nbytes
    except (TypeError, ValueError):
        return -1


def _root_cause(exc: BaseException) -> str:
    while exc.__cause__ is not None:
        exc = exc.__cause__
    return " ".join(str(exc).split())[:200] or type(exc).__name__


def _check_locations(proto, data_name: str | None, dest: Path) -> None:
    """Postcondition: the written model references its own data file and nothing else."""
    import onnx
    from onnx.external_data_helper import _get_all_tensors

    for t in _get_all_tensors(proto):
        if t.data_location != onnx.TensorProto.EXTERNAL:
            continue
        where = next((e.value for e in t.external_data if e.key == "location"), None)
        if where != data_name:
            raise OutputError(f"cannot write {dest}: tensor {t.name!r} would reference "
                              f"{where!r} instead of the output's own data file")


def save_model_atomic(
    model: ir.Model,
    path: str | os.PathLike,
    *,
    external_data: bool | None = None,
    protect: Iterable[str | os.PathLike] = (),
) -> Path:
    """Save ``model`` to ``path`` atomically: :func:`stage_model`, then commit."""
    with stage_model(model, path, external_data=external_data, protect=protect) as staged:
        return staged.commit()


def check_inputs_file(path: str | os.PathLike | None) -> None:
    """``--inputs``: a readable .npz of numeric or boolean arrays (strings, objects, records and
    dates cannot feed a tensor input). One InputError naming the array, before any model runs."""
    if path is None:
        return
    import numpy as np

    if not is_regular_file(path):
        raise InputError(f"cannot read inputs {path}: " + ("no such file" if not os.path.exists(path)
                                                            else "not a regular file"))
    try:
        with np.load(path, allow_pickle=False) as data:
            if not hasattr(data, "files"):
                raise InputError(f"cannot read inputs {path}: not an .npz archive (np.savez writes one)")
            for name in data.files:
                kind = data[name].dtype.kind
                if kind not in "biufc":
                    raise InputError(f"inputs {path}: array {name!r} holds {data[name].dtype} values; "
                                     "inputs must be numeric or boolean arrays")
    except InputError:
        raise
    except Exception as exc:  # noqa: BLE001 - zipfile, numpy and OS errors alike
        raise InputError(f"cannot read inputs {path}: {' '.join(str(exc).split())[:200]}") from None


def not_a_regular_file(path: str | os.PathLike) -> str | None:
    """Why ``path`` cannot be read as a file (missing, a folder, a FIFO or device that would
    block or never end), or None. Readers of JSON/TOML tables call this before opening."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return "no such file"
    except (OSError, ValueError) as exc:
        return getattr(exc, "strerror", None) or str(exc)
    if stat.S_ISDIR(st.st_mode):
        return "it is a directory"
    if not stat.S_ISREG(st.st_mode):
        return "not a regular file (a FIFO, device or socket)"
    return None


def is_regular_file(path: str | os.PathLike) -> bool:
    try:
        return stat.S_ISREG(Path(path).stat().st_mode)
    except (OSError, ValueError):
        return False


__all__ = [
    "PROTO_LIMIT_BYTES",
    "StagedModel",
    "check_inputs_file",
    "conventional_data_name",
    "external_tensors",
    "location_problem",
    "model_files",
    "model_weight_bytes",
    "not_a_regular_file",
    "refuse_overwriting",
    "refuse_overwriting_model_output",
    "remove_replaced_data",
    "require_readable_weights",
    "save_model_atomic",
    "set_base_dir",
    "stage_model",
    "sweep_leftovers",
    "temp_dir",
    "temp_name",
    "write_text",
]
