"""Nothing lost, nothing wrong: one test per failure class of issue 10 (and issue 9 #5).

Each class is tested as a property over several instances, not on its one reproducer:

- every path a command writes against every file it reads (model, its data, links, hardlinks);
- the writers (tclint/io.py): no predictable temp name, no link followed, devices and FIFOs
  written into, folders refused, leftovers of dead runs removed;
- external data in -> external data out, for fix, convert and optimize, loadable from a copy of
  the output folder elsewhere (the real BERT export with int64 position_ids included);
- check never opens external data (FIFO, missing file, directory; initializers, ReduceMean axes,
  Constant nodes, the current directory);
- [tool.tclint] and --calibration validated: one line naming the file, the key and the value;
- odd inputs: NUL/overlong locations, string arrays, sparse initializers, zero-sized batches,
  FIFOs as models, deep JSON, recursive functions, onnxruntime's own log lines.

Kills and concurrent writers are in tests/test_interrupt.py.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from tclint import examples
from tclint.sweep import run_main
from tests.exports import export_path, feeds
from tests.helpers import data_file_of

TIMEOUT_S = 60.0
F = TensorProto.FLOAT


def _cmd() -> list[str]:
    exe = Path(sys.executable).with_name("tclint")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "tclint"]


def _sha(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _snapshot(folder: Path) -> dict[str, str]:
    """name -> content hash (or kind) of everything in ``folder``."""
    out = {}
    for p in sorted(folder.iterdir()):
        st = p.lstat()
        if stat.S_ISLNK(st.st_mode):
            out[p.name] = "link:" + os.readlink(p)
        elif stat.S_ISREG(st.st_mode):
            out[p.name] = _sha(p)
        else:
            out[p.name] = f"kind:{stat.S_IFMT(st.st_mode)}"
    return out


def one_error(run, *needles: str, code: int = 2) -> str:
    """Exit ``code`` with exactly one ``tclint: error:`` line, nothing else on stderr (Python's or
    onnxruntime's native one), no traceback."""
    assert not run.error, run.error
    assert run.exit_code == code, (run.exit_code, run.stderr, run.native_stderr)
    lines = [line for line in run.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("tclint: error:"), run.stderr
    assert "Traceback" not in run.stderr + run.native_stderr
    assert "onnxruntime" not in run.native_stderr, run.native_stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def _main(argv, timeout_s=TIMEOUT_S):
    return run_main([str(a) for a in argv], timeout_s=timeout_s)


def conv_model() -> onnx.ModelProto:
    return examples.single_conv(c=3, k=30, image=8)


def save_external(m: onnx.ModelProto, path: Path, location: str | None = None) -> Path:
    onnx.save(m, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
              location=location or path.name + ".data", size_threshold=0)
    return path


def _run_ort(path: Path, feed: dict) -> list[np.ndarray]:
    so = ort.SessionOptions()
    so.log_severity_level = 4
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"]).run(None, feed)


def _conv_feed(seed=0, shape=(1, 16, 8, 8)):
    """Inputs of :func:`conv_model` (its stem conv takes 16 channels)."""
    return {"x": np.random.default_rng(seed).standard_normal(shape).astype(np.float32)}


# ============================================================================================
# Never overwrite the inputs (issue 10 #4, #5)
# ============================================================================================
def _input_cases():
    """(id, argv template, files to create): {m} inline model, {e} external-data model whose data
    file is model.onnx.data, {d} a folder."""
    return [
        ("convert-onto-model", ["convert", "{m}", "-o", "{m}"]),
        ("fix-fp16-onto-model", ["fix", "{m}", "-o", "{m}", "--fp16"]),
        ("fix-onto-model", ["fix", "{m}", "-o", "{m}", "--force"]),
        ("check-report-onto-model", ["check", "{m}", "-o", "{m}"]),
        ("fix-report-onto-model", ["fix", "{m}", "-o", "{d}/x.onnx", "--report", "{m}"]),
        ("fix-report-equals-output", ["fix", "{m}", "-o", "{d}/x.onnx", "--report", "{d}/x.onnx"]),
        ("fix-output-is-conventional-data-of-input", ["fix", "{e}", "-o", "{d}/model.onnx", "--force"]),
        ("convert-output-is-conventional-data-of-input", ["convert", "{e}", "-o", "{d}/model.onnx"]),
        ("fix-output-is-input-data", ["fix", "{e}", "-o", "{d}/model.onnx.data", "--force"]),
        ("convert-output-is-input-data", ["convert", "{e}", "-o", "{d}/model.onnx.data"]),
        ("check-report-is-input-data", ["check", "{e}", "-o", "{d}/model.onnx.data"]),
        ("fix-report-is-input-data", ["fix", "{e}", "-o", "{d}/y.onnx", "--report", "{d}/model.onnx.data"]),
        ("baseline-is-model", ["check", "{m}", "--baseline", "{m}", "--update-baseline"]),
        ("convert-onto-symlink-to-model", ["convert", "{m}", "-o", "{d}/link.onnx"]),
        ("convert-onto-hardlink-to-model", ["convert", "{m}", "-o", "{d}/hard.onnx"]),
        ("fix-onto-hardlink-of-data", ["fix", "{e}", "-o", "{d}/hard.data", "--force"]),
        ("fix-inputs-npz-as-report", ["fix", "{m}", "-o", "{d}/z.onnx", "--inputs", "{d}/in.npz",
                                      "--report", "{d}/in.npz"]),
    ]


@pytest.mark.parametrize("argv", [c[1] for c in _input_cases()], ids=[c[0] for c in _input_cases()])
def test_no_command_writes_over_a_file_it_reads(tmp_path, argv):
    m = tmp_path / "m.onnx"
    onnx.save(conv_model(), str(m))
    e = save_external(conv_model(), tmp_path / "model_fp32.onnx", location="model.onnx.data")
    os.symlink(m, tmp_path / "link.onnx")
    os.link(m, tmp_path / "hard.onnx")
    os.link(tmp_path / "model.onnx.data", tmp_path / "hard.data")
    np.savez(tmp_path / "in.npz", x=_conv_feed()["x"])
    before = _snapshot(tmp_path)
    run = _main([a.format(m=m, e=e, d=tmp_path) for a in argv])
    line = one_error(run)
    assert "must not overwrite" in line or "same file" in line or "named twice" in line, line
    assert _snapshot(tmp_path) == before, "a refused command wrote something"


def test_optimize_into_the_folder_of_its_input(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    onnx.save(conv_model(), str(out / "model.opt.onnx"))
    before = _snapshot(out)
    one_error(_main(["optimize", out / "model.opt.onnx", "-o", out, "--no-bench"]), "must not overwrite")
    assert _snapshot(out) == before


def test_an_output_elsewhere_with_the_same_name_is_fine(tmp_path):
    """The guard compares files, not names: model.onnx in another folder is another file."""
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    src = save_external(conv_model(), tmp_path / "a" / "model_fp32.onnx", location="model.onnx.data")
    run = _main(["convert", src, "-o", tmp_path / "b" / "model.onnx"])
    assert run.exit_code == 0, run.stderr
    data_file_of(tmp_path / "b" / "model.onnx")


# ============================================================================================
# The writers: temp files, links, devices, folders (issue 10 #6, #10, #12)
# ============================================================================================
def _text_writers(tmp_path: Path, dest: Path) -> dict[str, list]:
    m = tmp_path / "m.onnx"
    if not m.exists():
        onnx.save(conv_model(), str(m))
    return {
        "check -o": ["check", m, "--format", "json", "-o", dest, "--exit-zero"],
        "fix --report": ["fix", m, "--dry-run", "--report", dest],
        "check --update-baseline": ["check", m, "--baseline", dest, "--update-baseline"],
    }


@pytest.mark.parametrize("writer", ["check -o", "fix --report", "check --update-baseline"])
def test_text_writes_follow_no_planted_link(tmp_path, writer):
    """The old writers used ``<path>.tmp``: a link planted there redirected the write. Plant links
    at every name the old code used, and make the destination itself a link: no victim changes,
    the destination becomes a regular file with the report."""
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    dest = tmp_path / "r.json"
    for name in ("r.json.tmp", ".r.json.tmp"):
        os.symlink(victim, tmp_path / name)
    argv = _text_writers(tmp_path, dest)[writer]
    for _ in range(2):  # a fresh destination, then one that exists
        run = _main(argv)
        assert run.exit_code == 0, run.stderr
        assert victim.read_text() == "precious\n"
        assert dest.is_file() and not dest.is_symlink()
        json.loads(dest.read_text())
    dest.unlink()
    os.symlink(victim, dest)  # the destination itself a link: replaced, never written through
    assert _main(argv).exit_code == 0
    assert victim.read_text() == "precious\n"
    assert dest.is_file() and not dest.is_symlink()
    assert not [n for n in os.listdir(tmp_path) if n.startswith(".tclint-tmp-")]


@pytest.mark.parametrize("writer", ["check -o", "fix --report", "check --update-baseline"])
def test_text_writes_go_into_a_fifo_and_refuse_a_folder(tmp_path, writer):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    got = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_bytes()), daemon=True)
    reader.start()
    run = _main(_text_writers(tmp_path, fifo)[writer])
    reader.join(10)
    assert run.exit_code == 0, run.stderr
    assert stat.S_ISFIFO(fifo.lstat().st_mode), "the FIFO was replaced"
    json.loads(got[0])
    folder = tmp_path / "dir"
    folder.mkdir()
    before = _snapshot(tmp_path)
    one_error(_main(_text_writers(tmp_path, folder)[writer]), "directory")
    assert _snapshot(tmp_path) == before, "a <dir>.tmp or other file was left"


def test_text_write_into_a_device_node(tmp_path):
    node = tmp_path / "null"
    try:
        os.mknod(node, stat.S_IFCHR | 0o666, os.makedev(1, 3))
    except (PermissionError, OSError):
        pytest.skip("cannot create a device node here")
    for writer, argv in _text_writers(tmp_path, node).items():
        run = _main(argv)
        assert run.exit_code == 0, (writer, run.stderr)
        assert stat.S_ISCHR(node.lstat().st_mode), writer


def test_model_writer_refuses_links_to_devices(tmp_path):
    """``-o`` a link to /dev/null: renaming over the link would be harmless here, but as root
    /dev/stdout is such a link; models are refused for anything that is not a regular file."""
    src = tmp_path / "m.onnx"
    onnx.save(conv_model(), str(src))
    link = tmp_path / "out.onnx"
    os.symlink("/dev/null", link)
    one_error(_main(["convert", src, "-o", link]), "not a regular file")
    assert os.readlink(link) == "/dev/null"


def test_temp_names_are_unique_exclusive_and_owned(tmp_path):
    from tclint import io

    names = {io.temp_name() for _ in range(1000)}
    assert len(names) == 1000
    m = io._TEMP_RE.match(next(iter(names)))
    assert m and int(m["pid"]) == os.getpid()
    # a planted file at the exact name is never reused or followed
    victim = tmp_path / "victim"
    victim.write_text("precious")
    planted = tmp_path / names.pop()
    os.symlink(victim, planted)
    with pytest.raises(FileExistsError):
        io._create_exclusive(planted)
    assert victim.read_text() == "precious"


def test_sweep_removes_only_dead_owners_leftovers(tmp_path):
    """Leftovers of a dead process (and the data file carrying its token) go; a live process's
    temp files, other hosts' entries and unrelated files stay."""
    from tclint import io

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    host, me, start = io._me()
    token_dead, token_live = "a" * 16, "b" * 16
    files = {
        f".tclint-tmp-{host}-{dead.pid}-1-{token_dead}": "dead temp",
        f"out.onnx.{token_dead}.data": "dead data",
        f".tclint-tmp-{host}-{me}-{start}-{token_live}": "live temp",
        f"out.onnx.{token_live}.data": "live data",
        f".tclint-tmp-00000000-{dead.pid}-1-{'c' * 16}": "other host",
        "out.onnx.data": "a user's data file",
        "notes.txt": "unrelated",
    }
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    (tmp_path / f".tclint-tmp-{host}-{dead.pid}-1-{'d' * 16}").mkdir()  # a dead temp folder
    removed = io.sweep_leftovers(tmp_path)
    left = set(os.listdir(tmp_path))
    assert left == set(files) - {f".tclint-tmp-{host}-{dead.pid}-1-{token_dead}", f"out.onnx.{token_dead}.data"}
    assert len(removed) == 3


# ============================================================================================
# External data in -> external data out; loads from its final folder (issue 9 #5)
# ============================================================================================
def _mixed_dtype_model() -> onnx.ModelProto:
    """A conv net with an int64 table gathered at run time (like position_ids), a float64
    constant, and a Constant node whose tensor ends up in external data."""
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((30, 3, 3, 3)).astype(np.float32), "w")
    table = numpy_helper.from_array(np.arange(64, dtype=np.int64).reshape(1, 64), "position_ids")
    scale = numpy_helper.from_array(np.linspace(0.5, 1.5, 64), "scale64")
    const = numpy_helper.from_array(rng.standard_normal((30, 1, 1)).astype(np.float32), "bias_c")
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("Constant", [], ["bias"], name="bias_const", value=const),
        helper.make_node("Add", ["c", "bias"], ["y"], name="add"),
        helper.make_node("Gather", ["position_ids", "idx"], ["g"], name="gather", axis=1),
        helper.make_node("Cast", ["g"], ["gf"], to=TensorProto.DOUBLE, name="cast"),
        helper.make_node("Gather", ["scale64", "idx"], ["s"], name="gather_s", axis=0),
        helper.make_node("Mul", ["gf", "s"], ["z"], name="mul"),
    ]
    g = helper.make_graph(nodes, "mixed",
                          [helper.make_tensor_value_info("x", F, [1, 3, 8, 8]),
                           helper.make_tensor_value_info("idx", TensorProto.INT64, [4])],
                          [helper.make_tensor_value_info("y", F, [1, 30, 8, 8]),
                           helper.make_tensor_value_info("z", TensorProto.DOUBLE, [1, 4])],
                          [w, table, scale])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m


def _assert_self_contained(out: Path, *, dtypes: set[int]) -> Path:
    """The output references only its own data file beside it, every tensor of 256 bytes or
    more (of every dtype in ``dtypes``) lives there, and nothing refers to the source."""
    from onnx.external_data_helper import _get_all_tensors

    data = data_file_of(out)
    proto = onnx.load(str(out), load_external_data=False)
    external = {t.data_type for t in _get_all_tensors(proto) if t.data_location == TensorProto.EXTERNAL}
    assert dtypes <= external, (dtypes, external)
    for t in _get_all_tensors(proto):
        if t.data_location != TensorProto.EXTERNAL:
            assert len(t.raw_data) < 256 or not t.raw_data, t.name
    return data


def _moved(folder: Path, tmp_path: Path) -> Path:
    """Copy ``folder`` somewhere else and remove the original: the output must not need it."""
    dest = tmp_path / "elsewhere" / folder.name
    shutil.copytree(folder, dest)
    shutil.rmtree(folder)
    return dest


@pytest.mark.parametrize("command", ["fix", "convert", "fix --fp16"])
def test_external_data_in_external_data_out_loadable_anywhere(tmp_path, command):
    src_dir, out_dir = tmp_path / "src", tmp_path / "out"
    src_dir.mkdir()
    out_dir.mkdir()
    src = save_external(_mixed_dtype_model(), src_dir / "m.onnx")
    feed = {**_conv_feed(shape=(1, 3, 8, 8)), "idx": np.array([0, 5, 17, 63], np.int64)}
    ref = _run_ort(src, feed)
    out = out_dir / "o.onnx"
    argv = [*command.split()[:1], src, "-o", out, *command.split()[1:]]
    if command == "fix":
        argv.append("--force")
    run = _main(argv)
    assert run.exit_code == 0, run.stderr
    _assert_self_contained(out, dtypes={TensorProto.INT64, TensorProto.DOUBLE})
    before = _snapshot(src_dir)
    moved = _moved(out_dir, tmp_path) / "o.onnx"
    got = _run_ort(moved, feed)
    np.testing.assert_array_equal(got[1], ref[1])  # the int64/float64 path is untouched
    tol = 1e-5 if command == "fix" else 2e-2
    np.testing.assert_allclose(got[0], ref[0], rtol=tol, atol=tol * np.abs(ref[0]).max())
    assert _snapshot(src_dir) == before


def test_optimize_output_is_self_contained(tmp_path):
    src = save_external(_mixed_dtype_model(), tmp_path / "m.onnx")
    out = tmp_path / "out"
    run = _main(["optimize", src, "-o", out, "--no-bench"], timeout_s=120)
    assert run.exit_code == 0, run.stderr
    _assert_self_contained(out / "model.opt.onnx", dtypes={TensorProto.INT64})
    moved = _moved(out, tmp_path)
    _run_ort(moved / "model.opt.onnx", {**_conv_feed(shape=(1, 3, 8, 8)), "idx": np.array([1, 2, 3, 4], np.int64)})
    assert sorted(p.name for p in moved.iterdir() if not p.name.endswith(".data")) == [
        "model.opt.onnx", "report.html", "report.json"]


def test_convert_real_bert_export_keeps_position_ids(tmp_path):
    """The issue 9 reproducer: transformers' BERT-MLM exported by the dynamo exporter with
    external data, int64 position_ids inside it."""
    src = export_path("bert_mlm_dynamo")
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    run = _main(["convert", src, "-o", out_dir / "b16.onnx"], timeout_s=180)
    assert run.exit_code == 0, run.stderr
    _assert_self_contained(out_dir / "b16.onnx", dtypes={TensorProto.INT64, TensorProto.FLOAT16})
    proto = onnx.load(str(out_dir / "b16.onnx"), load_external_data=False)
    pos = next(t for t in proto.graph.initializer if t.name == "m.bert.embeddings.position_ids")
    assert pos.data_location == TensorProto.EXTERNAL
    moved = _moved(out_dir, tmp_path) / "b16.onnx"
    from tests.exports import BY_FILE

    feed = feeds(BY_FILE["bert_mlm_dynamo.onnx"])
    ref = _run_ort(src, feed)[0]
    got = _run_ort(moved, feed)[0]
    assert np.abs(got - ref).max() <= 5e-2 * np.abs(ref).max()


# ============================================================================================
# check never opens external data (issue 10 #7)
# ============================================================================================
def _external(t: onnx.TensorProto, location: str) -> onnx.TensorProto:
    raw = t.raw_data
    t.ClearField("raw_data")
    t.data_location = TensorProto.EXTERNAL
    for k, v in (("location", location), ("offset", "0"), ("length", str(len(raw)))):
        e = t.external_data.add()
        e.key, e.value = k, v
    return t


def _hazard_models() -> dict[str, onnx.ModelProto]:
    """Models where check would want a value that lives in external data ``w.data``."""
    w = numpy_helper.from_array(np.ones((2048, 40), np.float32), "W")
    out = {}
    for op in ("ReduceMean", "ReduceSum"):
        axes = _external(numpy_helper.from_array(np.array([1], np.int64), "axes"), "w.data")
        g = helper.make_graph(
            [helper.make_node("MatMul", ["x", "W"], ["h"], name="mm"),
             helper.make_node(op, ["h", "axes"], ["y"], name="reduce")], "g",
            [helper.make_tensor_value_info("x", F, [8, 2048])],
            [helper.make_tensor_value_info("y", F, None)], [w, axes])
        out[op] = helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)])
    # a Constant node whose tensor is external, feeding a Reshape; a custom op leaves dims
    # unknown, so onnxruntime's symbolic inference runs (it read Constants from the cwd)
    shape = _external(numpy_helper.from_array(np.array([-1, 2048], np.int64), "shape_c"), "w.data")
    g = helper.make_graph(
        [helper.make_node("Constant", [], ["s"], value=shape, name="const"),
         helper.make_node("Reshape", ["x", "s"], ["r"], name="rs"),
         helper.make_node("MatMul", ["r", "W"], ["h"], name="mm"),
         helper.make_node("FastGelu", ["h"], ["y"], name="act", domain="com.microsoft")], "g",
        [helper.make_tensor_value_info("x", F, ["N", 2048])],
        [helper.make_tensor_value_info("y", F, None)], [w])
    out["Constant"] = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17),
                                                          helper.make_opsetid("com.microsoft", 1)])
    # a sparse initializer whose values and indices are in external data
    vals = _external(numpy_helper.from_array(np.ones(64, np.float32), "Ws"), "w.data")
    idx = _external(numpy_helper.from_array(np.arange(64, dtype=np.int64) * 7, "Ws_idx"), "w.data")
    g = helper.make_graph([helper.make_node("MatMul", ["x", "Ws"], ["y"], name="mm")], "g",
                          [helper.make_tensor_value_info("x", F, [8, 40])],
                          [helper.make_tensor_value_info("y", F, [8, 30])],
                          sparse_initializer=[helper.make_sparse_tensor(vals, idx, [40, 30])])
    out["sparse"] = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    out["sparse"].ir_version = 8
    # an If branch holding a Constant in external data
    c = _external(numpy_helper.from_array(np.ones((2048, 40), np.float32), "Wc"), "w.data")
    branch = helper.make_graph([helper.make_node("Constant", [], ["wc"], value=c, name="bc"),
                                helper.make_node("MatMul", ["x", "wc"], ["t"], name="mm_then")],
                               "then", [], [helper.make_tensor_value_info("t", F, [8, 40])])
    g = helper.make_graph([helper.make_node("If", ["cond"], ["y"], name="branch", then_branch=branch,
                                            else_branch=branch)], "g",
                          [helper.make_tensor_value_info("cond", TensorProto.BOOL, []),
                           helper.make_tensor_value_info("x", F, [8, 2048])],
                          [helper.make_tensor_value_info("y", F, [8, 40])])
    out["subgraph-Constant"] = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    # every initializer external (the big weight too)
    m = examples.single_gemm(m=24, n=40, k=20, transposed=True)
    for t in m.graph.initializer:
        _external(t, "w.data")
    out["initializers"] = m
    return out


_NEVER_OPENS = [(m, "fifo") for m in ("ReduceMean", "ReduceSum", "Constant", "sparse", "subgraph-Constant",
                                       "initializers")]
_NEVER_OPENS += [(m, d) for m in ("ReduceMean", "Constant") for d in ("missing", "directory")]


@pytest.mark.parametrize("model,data", _NEVER_OPENS, ids=[f"{m}-{d}" for m, d in _NEVER_OPENS])
def test_check_never_opens_external_data(tmp_path, model, data):
    folder = tmp_path / "m"
    folder.mkdir()
    path = folder / "m.onnx"
    onnx.save(_hazard_models()[model], str(path))
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    for where in (folder, cwd):  # the cwd too: a path resolved against it would open this
        if data == "fifo":
            os.mkfifo(where / "w.data")
        elif data == "directory":
            (where / "w.data").mkdir()
    proc = subprocess.run([*_cmd(), "check", str(path), "--format", "json"], cwd=cwd,
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode in (0, 1), proc.stderr
    assert "Traceback" not in proc.stderr and proc.stderr.count("tclint: error") == 0, proc.stderr
    layers = json.loads(proc.stdout)["models"][0]["layers"]
    assert any(row["op"] in ("MatMul", "Gemm") for row in layers)


# ============================================================================================
# [tool.tclint] and --calibration (issue 10 #8, #9)
# ============================================================================================
BAD_CONFIG = [
    ('dims = { batch = "abc" }', "dims.batch"),
    ("dims = 5", "dims"),
    ("dims = { batch = 0 }", "dims.batch"),
    ("dims = { batch = -3 }", "dims.batch"),
    ("dims = { batch = 2.5 }", "dims.batch"),
    ("input-shapes = { x = 5 }", "input-shapes.x"),
    ('input-shapes = { x = "1xAx3" }', "input-shapes.x"),
    ('hot-threshold = "abc"', "hot-threshold"),
    ("hot-threshold = nan", "hot-threshold"),
    ("hot-threshold = 2", "hot-threshold"),
    ("quantization-threshold = true", "quantization-threshold"),
    ("arch = 5", "arch"),
    ('arch = "sm12"', "arch"),
    ('dtype = "fp64"', "dtype"),
    ("select = 5", "select"),
    ('select = ["XX9"]', "select"),
    ('ignore = [1]', "ignore"),
    ('overrides = "abc"', "overrides"),
    ("calibration = 5", "calibration"),
    ('strict = "no"', "strict"),
    ('fail-on = "sometimes"', "fail-on"),
    ("vocab-multiple = 0", "vocab-multiple"),
    ('provider = "gpu"', "provider"),
    ('unknown-key = 1', "unknown-key"),
    ('[[tool.tclint.overrides]]\nmodels = "*.onnx"\ndims = { batch = 0 }', "overrides[0].dims.batch"),
    ('[[tool.tclint.overrides]]\ndims = { batch = 2 }', "overrides[0].models"),
]


@pytest.mark.parametrize("text,key", BAD_CONFIG, ids=[k for _, k in BAD_CONFIG])
@pytest.mark.parametrize("command", ["check", "fix"])
def test_bad_config_is_one_line_naming_file_and_key(tmp_path, text, key, command):
    for name in ("a.onnx", "b.onnx"):
        onnx.save(conv_model(), str(tmp_path / name))
    cfg = tmp_path / "pyproject.toml"
    cfg.write_text(("[tool.tclint]\n" + text + "\n") if not text.startswith("[[") else text + "\n")
    argv = (["check", tmp_path / "a.onnx", tmp_path / "b.onnx", "-j", "2"] if command == "check"
            else ["fix", tmp_path / "a.onnx", "-o", tmp_path / "o.onnx"])
    line = one_error(_main(argv))
    assert str(cfg) in line and key in line, line
    assert not (tmp_path / "o.onnx").exists()


@pytest.mark.parametrize("text,needle", [
    ("[tool]\ntclint = 5\n", "[tool.tclint]"),
    ("tool = 5\n", "[tool]"),
    (b'[tool.tclint]\narch = "\xff\xfe"\n', "UTF-8"),
    ("[tool.tclint\n", "cannot read"),
    ('[tool.tclint.convert]\nrtol = "x"\n', "rtol"),
    ('[tool.tclint.convert]\nblock-ops = 3\n', "block-ops"),
])
def test_bad_config_files(tmp_path, text, needle):
    onnx.save(conv_model(), str(tmp_path / "m.onnx"))
    cfg = tmp_path / "pyproject.toml"
    cfg.write_bytes(text if isinstance(text, bytes) else text.encode())
    for argv in (["check", tmp_path / "m.onnx"], ["convert", tmp_path / "m.onnx", "-o", tmp_path / "o.onnx"]):
        line = one_error(_main(argv))
        assert str(cfg) in line and needle in line, line


BAD_CALIBRATION = [
    ("[]", "JSON object"),
    ('"abc"', "JSON object"),
    ('{"constants": []}', "constants"),
    ('{"constants": {"gemm_efficiency": null}}', "gemm_efficiency"),
    ('{"constants": {"bandwidth_efficiency": 0}}', "bandwidth_efficiency"),
    ('{"constants": {"gemm_efficiency": -0.5}}', "gemm_efficiency"),
    ('{"constants": {"gemm_efficiency": NaN}}', "NaN"),
    ('{"constants": {"launch_overhead_s": Infinity}}', "Infinity"),
    ('{"constants": {"gemm_efficiency": "0.8"}}', "gemm_efficiency"),
    ('{"constants": {"gemm_efficiency": true}}', "gemm_efficiency"),
    ('{"constants": {"nope": 1}}', "nope"),
    ('{"constants": {"tiles": 1}}', "tiles"),
    ("[" * 100_000 + "]" * 100_000, "nested too deeply"),
    ("{not json", "cannot read"),
]


@pytest.mark.parametrize("text,needle", BAD_CALIBRATION, ids=range(len(BAD_CALIBRATION)))
def test_bad_calibration_is_one_line(tmp_path, text, needle):
    for name in ("a.onnx", "b.onnx"):
        onnx.save(conv_model(), str(tmp_path / name))
    cal = tmp_path / "cal.json"
    cal.write_text(text)
    for argv in (["check", tmp_path / "a.onnx", tmp_path / "b.onnx", "--calibration", cal],
                 ["fix", tmp_path / "a.onnx", "-o", tmp_path / "o.onnx", "--calibration", cal]):
        line = one_error(_main(argv))
        assert needle in line and "cal.json" in line and "model graph" not in line, line
    assert not (tmp_path / "o.onnx").exists()


def test_calibration_from_config_is_validated_once(tmp_path):
    for name in ("a.onnx", "b.onnx"):
        onnx.save(conv_model(), str(tmp_path / name))
    (tmp_path / "cal.json").write_text('{"constants": {"gemm_efficiency": NaN}}')
    (tmp_path / "pyproject.toml").write_text('[tool.tclint]\ncalibration = "cal.json"\n')
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        one_error(_main(["check", "a.onnx", "b.onnx"]), "NaN")
    finally:
        os.chdir(cwd)


def test_a_good_calibration_still_loads(tmp_path):
    onnx.save(conv_model(), str(tmp_path / "m.onnx"))
    cal = tmp_path / "cal.json"
    cal.write_text('{"gpu": "x", "constants": {"gemm_efficiency": 0.7, "launch_overhead_s": 0}}')
    run = _main(["check", tmp_path / "m.onnx", "--calibration", cal, "--format", "json"])
    assert run.exit_code in (0, 1), run.stderr
    assert np.isfinite(json.loads(run.stdout)["models"][0]["summary"]["estimated_time_us"])


# ============================================================================================
# Odd inputs: one line, exit 2, or a normal run (issue 10 #10, #11)
# ============================================================================================
@pytest.mark.parametrize("location", ["w\x00.bin", "a" * 300 + ".bin", "d/" + "b" * 256 + "/w.bin"],
                         ids=["nul", "long-name", "long-component"])
@pytest.mark.parametrize("command", ["fix", "convert", "optimize"])
def test_unusable_external_locations(tmp_path, location, command):
    path = save_external(conv_model(), tmp_path / "m.onnx", location="w.bin")
    proto = onnx.load(str(path), load_external_data=False)
    for t in proto.graph.initializer:
        for e in t.external_data:
            if e.key == "location":
                e.value = location
    path.write_bytes(proto.SerializeToString())
    before = _snapshot(tmp_path)
    out = tmp_path / ("outdir" if command == "optimize" else "o.onnx")
    one_error(_main([command, path, "-o", out, *(["--no-bench"] if command == "optimize" else [])]),
              "location")
    assert {k: v for k, v in _snapshot(tmp_path).items() if k != "outdir"} == before
    run = _main(["check", path])  # check lints from the structure
    assert run.exit_code in (0, 1), run.stderr


@pytest.mark.parametrize("array", ["strings", "objects_as_strings", "dates", "record"])
@pytest.mark.parametrize("command", ["fix", "convert"])
def test_inputs_npz_of_the_wrong_kind(tmp_path, array, command):
    onnx.save(conv_model(), str(tmp_path / "m.onnx"))
    x = {"strings": np.array([["a", "b"]]), "objects_as_strings": np.array(["1.0"] * 192),
         "dates": np.array(["2024-01-01"], dtype="datetime64[D]"),
         "record": np.zeros(3, dtype=[("a", "f4"), ("b", "i4")])}[array]
    np.savez(tmp_path / "in.npz", x=x)
    one_error(_main([command, tmp_path / "m.onnx", "-o", tmp_path / "o.onnx", "--inputs", tmp_path / "in.npz"]),
              "in.npz")
    (tmp_path / "bad.npz").write_bytes(b"PK\x03\x04 not really a zip")
    one_error(_main([command, tmp_path / "m.onnx", "-o", tmp_path / "o.onnx", "--inputs", tmp_path / "bad.npz"]),
              "bad.npz")
    assert not (tmp_path / "o.onnx").exists()


def _sparse_model(*, coords: bool) -> tuple[onnx.ModelProto, np.ndarray]:
    rng = np.random.default_rng(1)
    w = np.where(rng.random((40, 20)) < 0.2, rng.standard_normal((40, 20)), 0).astype(np.float32)
    nz = np.flatnonzero(w)
    idx = np.stack(np.unravel_index(nz, w.shape), axis=1) if coords else nz
    sp = helper.make_sparse_tensor(numpy_helper.from_array(w.reshape(-1)[nz], "W"),
                                   numpy_helper.from_array(idx.astype(np.int64), "W_idx"), list(w.shape))
    g = helper.make_graph([helper.make_node("MatMul", ["x", "W"], ["y"], name="mm")], "g",
                          [helper.make_tensor_value_info("x", F, [8, 40])],
                          [helper.make_tensor_value_info("y", F, [8, 20])], sparse_initializer=[sp])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m, w


@pytest.mark.parametrize("coords", [False, True], ids=["linear-indices", "coordinates"])
def test_sparse_initializers_are_weights(tmp_path, coords):
    m, w = _sparse_model(coords=coords)
    src = tmp_path / "s.onnx"
    onnx.save(m, str(src))
    x = np.random.default_rng(2).standard_normal((8, 40)).astype(np.float32)
    np.testing.assert_allclose(_run_ort(src, {"x": x})[0], x @ w, rtol=1e-5, atol=1e-5)
    run = _main(["check", src, "--format", "json"])
    assert run.exit_code in (0, 1), run.stderr
    layer = json.loads(run.stdout)["models"][0]["layers"][0]
    assert (layer["op"], layer["N"], layer["K"]) == ("MatMul", 20, 40), "check must see the sparse weight"
    for argv in (["fix", src, "-o", tmp_path / "f.onnx", "--force"], ["convert", src, "-o", tmp_path / "c.onnx"]):
        run = _main(argv)
        assert run.exit_code == 0, run.stderr
        out = Path(argv[3])
        tol = 1e-5 if argv[0] == "fix" else 2e-2
        np.testing.assert_allclose(_run_ort(out, {"x": x})[0], x @ w, rtol=tol, atol=tol * np.abs(x @ w).max())


def test_sparse_initializer_out_of_bounds_is_one_line(tmp_path):
    m, _ = _sparse_model(coords=False)
    m.graph.sparse_initializer[0].indices.raw_data = np.array([10**6] * len(
        numpy_helper.to_array(m.graph.sparse_initializer[0].indices)), np.int64).tobytes()
    src = tmp_path / "s.onnx"
    onnx.save(m, str(src))
    one_error(_main(["fix", src, "-o", tmp_path / "o.onnx", "--force"]), "sparse_initializer")
    assert not (tmp_path / "o.onnx").exists()


@pytest.mark.parametrize("command", ["check", "fix", "convert"])
def test_zero_sized_batch_is_handled(tmp_path, command):
    m = conv_model()
    for vi in (m.graph.input[0], m.graph.output[0]):
        vi.type.tensor_type.shape.dim[0].dim_value = 0
    src = tmp_path / "z.onnx"
    onnx.save(m, str(src))
    out = tmp_path / "o.onnx"
    run = _main([command, src, *([] if command == "check" else ["-o", out]),
                 *(["--force"] if command == "fix" else []), *(["--format", "json"] if command == "check" else [])])
    assert run.exit_code in ((0, 1) if command == "check" else (0,)), run.stderr
    if command == "check":
        summary = json.loads(run.stdout)["models"][0]["summary"]
        assert all(np.isfinite(v) for v in summary.values() if isinstance(v, float))
    else:
        assert _run_ort(out, {"x": np.zeros((0, 16, 8, 8), np.float32)})[0].shape[0] == 0


@pytest.mark.parametrize("command", ["check", "fix", "convert"])
def test_non_regular_files_as_model_do_not_hang(tmp_path, command):
    fifo = tmp_path / "m.onnx"
    os.mkfifo(fifo)
    out = tmp_path / "o.onnx"
    proc = subprocess.run([*_cmd(), command, str(fifo), *([] if command == "check" else ["-o", str(out)])],
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "not a regular file" in proc.stderr, proc.stderr
    assert not out.exists()


def test_deep_json_says_json(tmp_path):
    onnx.save(conv_model(), str(tmp_path / "m.onnx"))
    deep = "[" * 100_000 + "]" * 100_000
    (tmp_path / "b.json").write_text('{"findings": ' + deep + "}")
    line = one_error(_main(["check", tmp_path / "m.onnx", "--baseline", tmp_path / "b.json"]), "JSON")
    assert "model graph" not in line


@pytest.mark.parametrize("shape", ["self", "mutual", "through-a-subgraph"])
@pytest.mark.parametrize("command", ["check", "fix", "convert"])
def test_recursive_functions_are_one_line(tmp_path, shape, command):
    opsets = [helper.make_opsetid("", 17), helper.make_opsetid("local", 1)]

    def fn(name, calls):
        node = helper.make_node(calls, ["a"], ["b"], domain="local")
        if shape == "through-a-subgraph" and name == "A":
            branch = helper.make_graph([helper.make_node(calls, ["a"], ["t"], domain="local")], "br", [],
                                       [helper.make_tensor_value_info("t", F, None)])
            node = helper.make_node("If", ["c"], ["b"], then_branch=branch, else_branch=branch)
            return helper.make_function("local", name, ["a", "c"], ["b"], [node], opsets)
        return helper.make_function("local", name, ["a"], ["b"], [node], opsets)

    fns = {"self": [fn("A", "A")], "mutual": [fn("A", "B"), fn("B", "A")],
           "through-a-subgraph": [fn("A", "B"), fn("B", "A")]}[shape]
    inputs = ["x", "c"] if shape == "through-a-subgraph" else ["x"]
    g = helper.make_graph([helper.make_node("A", inputs, ["y"], domain="local", name="call")], "g",
                          [helper.make_tensor_value_info("x", F, [2, 3]),
                           *([helper.make_tensor_value_info("c", TensorProto.BOOL, [])] if len(inputs) > 1 else [])],
                          [helper.make_tensor_value_info("y", F, [2, 3])])
    m = helper.make_model(g, opset_imports=opsets, functions=fns)
    m.ir_version = 8
    src = tmp_path / "r.onnx"
    onnx.save(m, str(src))
    one_error(_main([command, src, *([] if command == "check" else ["-o", tmp_path / "o.onnx"])]),
              "recursive")


def _runtime_failure_model() -> onnx.ModelProto:
    """Loads in onnxruntime, fails while running (a Reshape to an impossible shape)."""
    w = numpy_helper.from_array(np.ones((16, 30), np.float32), "W")
    shape = numpy_helper.from_array(np.array([7, -1], np.int64), "shape")
    g = helper.make_graph([helper.make_node("MatMul", ["x", "W"], ["h"], name="mm"),
                           helper.make_node("Reshape", ["h", "shape"], ["y"], name="rs")], "g",
                          [helper.make_tensor_value_info("x", F, [3, 16])],
                          [helper.make_tensor_value_info("y", F, None)], [w, shape])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m


@pytest.mark.parametrize("command", ["fix", "convert", "optimize"])
def test_onnxruntime_log_lines_never_reach_stderr(tmp_path, command):
    src = tmp_path / "bad.onnx"
    onnx.save(_runtime_failure_model(), str(src))
    out = tmp_path / ("outdir" if command == "optimize" else "o.onnx")
    run = _main([command, src, "-o", out, *(["--no-bench"] if command == "optimize" else []),
                 *(["--force"] if command == "fix" else [])], timeout_s=120)
    assert not run.error, run.error
    assert "[E:onnxruntime" not in run.native_stderr and "onnxruntime" not in run.native_stderr, run.native_stderr
    errors = [line for line in run.stderr.splitlines() if line.startswith("tclint: error:")]
    assert run.exit_code in (0, 1, 2) and len(errors) == (run.exit_code != 0), run.stderr


def _finite(obj) -> bool:
    if isinstance(obj, float):
        return np.isfinite(obj)
    if isinstance(obj, dict):
        return all(_finite(v) for v in obj.values())
    if isinstance(obj, list):
        return all(_finite(v) for v in obj)
    return True


@pytest.mark.parametrize("end", ["low", "high", "beyond"])
def test_calibration_at_the_ends_of_its_ranges_keeps_estimates_finite(tmp_path, end):
    """Every constant at the edge of its range (all at once): the report is finite and the
    gate decides; one step beyond either edge is refused."""
    from tclint.specs import CALIBRATION_RANGES

    models = {"conv": conv_model(), "gpt2": examples.gpt2(layers=1, hidden=32, heads=4, vocab=100)}
    for name, m in models.items():
        onnx.save(m, str(tmp_path / f"{name}.onnx"))
    if end == "beyond":
        for key, (low, high) in CALIBRATION_RANGES.items():
            for bad in (low - 1e-3 if low > 0 else -1e-9, high * 1.5):
                (tmp_path / "cal.json").write_text(json.dumps({"constants": {key: bad}}))
                one_error(_main(["check", tmp_path / "conv.onnx", "--calibration", tmp_path / "cal.json"]), key)
        return
    values = {k: (lo if end == "low" else hi) for k, (lo, hi) in CALIBRATION_RANGES.items()}
    (tmp_path / "cal.json").write_text(json.dumps({"constants": values}))
    for name in models:
        run = _main(["check", tmp_path / f"{name}.onnx", "--calibration", tmp_path / "cal.json",
                     "--format", "json", "--dim", "batch=2", "--dim", "seq=16"])
        assert run.exit_code in (0, 1), run.stderr
        assert "Infinity" not in run.stdout and "NaN" not in run.stdout, name
        assert _finite(json.loads(run.stdout)), name


@pytest.mark.parametrize("what", ["config", "calibration", "baseline", "inputs"])
def test_tables_that_are_fifos_do_not_hang(tmp_path, what):
    """Every file tclint reads besides the model, given as a FIFO (reading it would block until
    someone writes): one line, exit 2, at once."""
    onnx.save(conv_model(), str(tmp_path / "m.onnx"))
    fifo = tmp_path / "table"
    os.mkfifo(fifo)
    argv = {"config": ["check", "m.onnx", "--config", "table"],
            "calibration": ["check", "m.onnx", "--calibration", "table"],
            "baseline": ["check", "m.onnx", "--baseline", "table"],
            "inputs": ["fix", "m.onnx", "-o", "o.onnx", "--inputs", "table"]}[what]
    proc = subprocess.run([*_cmd(), *argv], cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert "not a regular file" in proc.stderr, proc.stderr


@pytest.mark.parametrize("read", ["pyproject.toml", "cal.json", "b.json"])
def test_check_does_not_write_over_its_configuration_or_tables(tmp_path, read):
    onnx.save(conv_model(), str(tmp_path / "m.onnx"))
    (tmp_path / "pyproject.toml").write_text('[tool.tclint]\narch = "a100"\n')
    (tmp_path / "cal.json").write_text('{"constants": {"gemm_efficiency": 0.7}}')
    assert _main(["check", tmp_path / "m.onnx", "--baseline", tmp_path / "b.json", "--update-baseline"]).exit_code == 0
    before = _snapshot(tmp_path)
    extra = {"cal.json": ["--calibration", tmp_path / "cal.json"],
             "b.json": ["--baseline", tmp_path / "b.json"]}.get(read, [])
    one_error(_main(["check", tmp_path / "m.onnx", *extra, "-o", tmp_path / read]), "must not overwrite")
    assert _snapshot(tmp_path) == before


def test_empty_select_is_refused(tmp_path):
    onnx.save(conv_model(), str(tmp_path / "m.onnx"))
    one_error(_main(["check", tmp_path / "m.onnx", "--select", ","]), "selects no rule")
    (tmp_path / "pyproject.toml").write_text("[tool.tclint]\nselect = []\n")
    one_error(_main(["check", tmp_path / "m.onnx"]), "select", "selects no rule")


def test_replacing_an_output_removes_only_its_own_stale_data(tmp_path):
    """Rewriting ``-o`` (with a model or with a report) removes the data file of the model it
    replaced, and nothing else: not a user's ``out.onnx.data``, not the data of a model renamed
    from the output (it still references it)."""
    src = tmp_path / "m.onnx"
    onnx.save(conv_model(), str(src))
    out = tmp_path / "out.onnx"
    (tmp_path / "out.onnx.data").write_text("a user's file")
    assert _main(["fix", src, "-o", out, "--force", "--external-data"]).exit_code == 0
    first = data_file_of(out)
    shutil.copy(out, tmp_path / "kept.model")  # a copy under another name still needs `first`
    assert _main(["fix", src, "-o", out, "--force", "--external-data"]).exit_code == 0
    second = data_file_of(out)
    assert first.exists() and second.exists()
    (tmp_path / "kept.model").unlink()
    assert _main(["fix", src, "-o", out, "--force", "--external-data"]).exit_code == 0
    third = data_file_of(out)
    assert not first.exists() and not second.exists()
    assert _main(["check", src, "-o", out, "--exit-zero"]).exit_code == 0  # a report over it
    assert not third.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx", "out.onnx", "out.onnx.data"]
