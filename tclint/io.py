"""Writing models safely: never touch the input, never leave a partial output.

A model is saved next to its destination under a temporary name (with its external data file,
if any, also under a temporary name) and renamed into place only when everything was written.
An interrupted or failed write leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import signal
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

import onnx_ir as ir

from tclint.errors import InputError, OutputError

#: Protobuf cannot serialize a message over 2 GiB; above this, weights go to external data.
PROTO_LIMIT_BYTES = 2**31 - 1


def model_weight_bytes(model: ir.Model) -> int:
    """Bytes of all initializers, from their shapes and dtypes (no weight is read)."""
    total = 0
    for graph in model.graphs():
        for value in graph.initializers.values():
            tensor = value.const_value
            if tensor is not None:
                total += tensor.nbytes
    return total


@contextlib.contextmanager
def _deferred_signals() -> Iterator[None]:
    """Hold SIGINT/SIGTERM during the final renames so they are not torn apart."""
    received: list[int] = []
    previous = {}

    def handler(signum, _frame):  # pragma: no cover - exercised by the kill test
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
    """While temporary files exist, turn SIGTERM into SystemExit(143) so that ``finally``
    blocks remove them (the default action would kill the process and leave them behind)."""
    def handler(signum, _frame):
        raise SystemExit(128 + signum)

    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not in the main thread: nothing to install
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _new_file_mode(dest: Path) -> int:
    """Permissions an ordinary ``open(dest, "w")`` would give (mkstemp makes files 0600)."""
    try:
        return stat.S_IMODE(dest.stat().st_mode)
    except OSError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


def save_model_atomic(
    model: ir.Model,
    path: str | os.PathLike,
    *,
    external_data: bool | None = None,
) -> Path:
    """Save ``model`` to ``path`` atomically.

    ``external_data``: True writes weights to ``<name>.data`` beside the model; None (default)
    does so automatically when the weights would not fit in one protobuf (over 2 GB).
    Returns the path written. Raises :class:`OutputError` with a one-line message on failure.
    """
    dest = Path(path)
    folder = dest.parent if str(dest.parent) else Path(".")
    if not folder.is_dir():
        raise OutputError(f"cannot write {dest}: folder {folder} does not exist")
    if dest.exists() and not dest.is_file():
        # renaming over a device (/dev/null, /dev/full), a FIFO or a folder would replace it
        raise OutputError(f"cannot write {dest}: not a regular file")
    if external_data is None:
        external_data = model_weight_bytes(model) > PROTO_LIMIT_BYTES - 64 * 2**20
    data_name = dest.name + ".data"
    try:
        with _terminate_cleanly():
            _write_and_rename(model, dest, folder, data_name, external_data)
    except OSError as exc:
        raise OutputError(f"cannot write {dest}: {exc.strerror or exc}") from None
    return dest


def _write_and_rename(model: ir.Model, dest: Path, folder: Path, data_name: str,
                      external_data: bool) -> None:
    """Write under temporary names, rename into place; remove the temporaries on any failure."""
    tmp_model = tmp_data = None
    try:
        # a signal between mkstemp creating the file and `tmp_model` naming it would orphan it
        with _deferred_signals():
            fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=folder)
            os.close(fd)
            tmp_model = Path(tmp_name)
        os.chmod(tmp_model, _new_file_mode(dest))
        if external_data:
            # The model refers to its data file by name; write it under a temporary name and
            # point the model at the final name only at rename time.
            tmp_data = folder / f".{data_name}.{os.getpid()}.tmp"
            ir.save(model, tmp_model, external_data=tmp_data.name)
            _retarget_external_data(tmp_model, tmp_data.name, data_name)
        else:
            ir.save(model, tmp_model)
        with _deferred_signals():
            if tmp_data is not None:
                os.replace(tmp_data, folder / data_name)
            os.replace(tmp_model, dest)
        tmp_model = tmp_data = None
    finally:
        for leftover in (tmp_model, tmp_data):
            if leftover is not None:
                with contextlib.suppress(OSError):
                    leftover.unlink()
                # onnx-ir writes external data through its own temporary folder
                # (".<name>.XXXX/"); an interrupt can leave it behind
                for stray in folder.glob(f".{glob.escape(leftover.name)}.*"):
                    with contextlib.suppress(OSError):
                        shutil.rmtree(stray) if stray.is_dir() else stray.unlink()


def _retarget_external_data(model_path: Path, old: str, new: str) -> None:
    """Rewrite the external-data ``location`` entries of a saved model (structure only)."""
    import onnx

    proto = onnx.load(str(model_path), load_external_data=False)
    for tensor in onnx.external_data_helper._get_all_tensors(proto):
        for entry in tensor.external_data:
            if entry.key == "location" and entry.value == old:
                entry.value = new
    with open(model_path, "wb") as f:
        f.write(proto.SerializeToString())
        f.flush()
        os.fsync(f.fileno())


def require_readable_weights(model: ir.Model, model_path: str | os.PathLike) -> None:
    """Check that every external tensor can be read and lies inside the model's folder.

    Used by commands that need weight values (fix, convert). ``check`` never calls it.
    """
    base = Path(model_path).resolve().parent
    for graph in model.graphs():
        for value in graph.initializers.values():
            tensor = value.const_value
            if not isinstance(tensor, ir.ExternalTensor):
                continue
            location = Path(tensor.location)
            target = (Path(tensor.base_dir) / location).resolve()
            if location.is_absolute() or not target.is_relative_to(base):
                raise InputError(
                    f"external data of {value.name!r} points outside the model's folder "
                    f"({tensor.location}); refusing to read it"
                )
            if not target.is_file():
                raise InputError(
                    f"external data file {tensor.location} for {value.name!r} is missing "
                    f"(looked in {target.parent})"
                )
            end = (tensor.offset or 0) + tensor.nbytes
            size = target.stat().st_size
            if end > size:
                raise InputError(
                    f"external data file {tensor.location} is truncated: {value.name!r} needs "
                    f"bytes up to {end}, the file has {size}"
                )
