"""Malformed and hostile input: one behaviour only.

Whatever the bytes, ``tclint check`` either reports normally (exit 0/1) or exits 2 with exactly one
``tclint: error: ...`` line; never a traceback, a hang or a crash. ``main()`` runs in-process under a
SIGALRM timeout guard (``tclint.sweep.run_main``), and a few cases run the installed ``tclint``
command in a subprocess (a crash of the interpreter would show there).

Hypothesis mutates real models (a conv net, a small GPT-2, a single GEMM): raw bytes (flips,
truncation, insertions) and graph fields (dims, attributes, dangling inputs, cycles, duplicate
names, wrong dtypes, huge and negative dims, empty graphs, opset 1, opsets newer than onnx).
Explicit tests cover each bad input of the developers' guide, external data outside the model's
folder, and dims whose FLOP counts overflow.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import resource
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

from tclint import examples
from tclint.sweep import run_main
from tests.helpers import data_file_of

TIMEOUT_S = 30.0
WRITERS = ["fix", "convert"]
MAX_OPSET = onnx.defs.onnx_opset_version()
#: writers the fuzz drives (TCLINT_FUZZ_WRITERS=fix to fuzz one alone)
FUZZ_WRITERS = [c for c in os.environ.get("TCLINT_FUZZ_WRITERS", ",".join(WRITERS)).split(",") if c in WRITERS]


def _control_flow_model() -> onnx.ModelProto:
    """An If whose branches hold GEMMs on an outer-scope weight, and a model-local function."""
    f = TensorProto.FLOAT
    w = numpy_helper.from_array(np.ones((20, 36), np.float32), "w")
    then_g = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["t"], name="then_mm")],
                               "then", [], [helper.make_tensor_value_info("t", f, [6, 36])])
    else_g = helper.make_graph([helper.make_node("Gemm", ["x", "w"], ["e"], name="else_gemm")],
                               "else", [], [helper.make_tensor_value_info("e", f, [6, 36])])
    fn = helper.make_function("local", "Lin", ["a", "b"], ["c"],
                              [helper.make_node("MatMul", ["a", "b"], ["c"])],
                              [helper.make_opsetid("", 17)])
    v = numpy_helper.from_array(np.ones((36, 10), np.float32), "v")
    g = helper.make_graph(
        [helper.make_node("If", ["cond"], ["y"], name="branch", then_branch=then_g, else_branch=else_g),
         helper.make_node("Lin", ["y", "v"], ["z"], name="call", domain="local")],
        "cf", [helper.make_tensor_value_info("cond", TensorProto.BOOL, []),
               helper.make_tensor_value_info("x", f, [6, 20])],
        [helper.make_tensor_value_info("z", f, [6, 10])], [w, v])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("local", 1)],
                             functions=[fn])


def _base_models() -> dict[str, onnx.ModelProto]:
    return {
        "conv": examples.single_conv(c=3, k=30, image=8),
        "gpt2": examples.gpt2(layers=1, hidden=32, heads=4, vocab=100),
        "gemm": examples.single_gemm(m=24, n=40, k=20, transposed=True),
        "control_flow": _control_flow_model(),
    }


BASES = _base_models()
BASE_BYTES = {k: m.SerializeToString() for k, m in BASES.items()}


def assert_one_behaviour(run, *, allow_report: bool = True, quiet_ok: bool = False) -> None:
    """Exit 0/1 with a report on stdout, or exit 2 with one ``tclint: error:`` line."""
    assert not run.error, run.error  # a traceback or a timeout
    assert "Traceback" not in run.stderr, run.stderr
    errors = [line for line in run.stderr.splitlines() if line.startswith("tclint: error:")]
    if run.exit_code == 2:
        assert len(errors) == 1, run.stderr
        assert len(errors[0]) < 2000, errors[0]
    else:
        assert allow_report, (run.exit_code, run.stderr)
        assert run.exit_code in (0, 1), (run.exit_code, run.stderr)
        assert errors == [], run.stderr
        assert quiet_ok or run.stdout.strip(), "a normal report prints something"


#: address space a check of a tiny model may use (a blow-up fails instead of taking the machine)
MEMORY_LIMIT = 6 << 30


@contextlib.contextmanager
def memory_limit(limit: int = MEMORY_LIMIT):
    """Cap this process's address space while a command runs (allocations then fail with
    MemoryError, which main() reports as 'out of memory': the tests treat that as a failure)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    try:
        resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    except (ValueError, OSError):
        yield
        return
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


def check(path: Path, *extra: str, fmt: str = "json"):
    with memory_limit():
        run = run_main(["check", str(path), "--format", fmt, *extra], timeout_s=TIMEOUT_S)
    assert "out of memory" not in run.stderr, f"a tiny model blew up memory: {run.stderr}"
    for text in (run.stdout, run.stderr):  # also where a library caught it and carried on
        assert "MemoryError" not in text and "bad_alloc" not in text, f"memory blow-up: {text[:2000]}"
    # GitHub annotations are only printed for findings: a clean model prints nothing
    assert_one_behaviour(run, quiet_ok=fmt == "github")
    if run.exit_code in (0, 1) and fmt == "json":
        text = run.stdout
        assert "Infinity" not in text and "NaN" not in text, "report numbers must be finite"
        json.loads(text)
    return run


def _write(tmp: Path, data: bytes, name: str = "m.onnx") -> Path:
    p = tmp / name
    p.write_bytes(data)
    return p


# --------------------------------------------------------------------------------------------
# Fuzzing
# --------------------------------------------------------------------------------------------
#: examples per fuzz test; raise it for a longer campaign (TCLINT_FUZZ_EXAMPLES=2000 pytest ...)
EXAMPLES = int(os.environ.get("TCLINT_FUZZ_EXAMPLES", "80"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize=False,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

_INTERESTING = [0, 1, -1, -7, 3, 7, 8, 15, 17, 2**31, 2**40, 2**62, 2**63 - 1, -(2**63)]
dims = st.one_of(st.sampled_from(_INTERESTING), st.integers(-(2**63), 2**63 - 1), st.integers(0, 64))


@FUZZ
@given(base=st.sampled_from(sorted(BASES)), data=st.data())
def test_fuzz_bytes(tmp_path_factory, base, data):
    raw = bytearray(BASE_BYTES[base])
    for _ in range(data.draw(st.integers(1, 4), label="edits")):
        kind = data.draw(st.sampled_from(["flip", "truncate", "insert", "delete", "splice"]), label="kind")
        pos = data.draw(st.integers(0, max(0, len(raw) - 1)), label="pos")
        if kind == "flip" and raw:
            raw[pos] ^= data.draw(st.integers(1, 255), label="mask")
        elif kind == "truncate":
            del raw[pos:]
        elif kind == "insert":
            raw[pos:pos] = data.draw(st.binary(min_size=1, max_size=16), label="bytes")
        elif kind == "delete":
            del raw[pos:pos + data.draw(st.integers(1, 32), label="n")]
        else:
            other = BASE_BYTES[data.draw(st.sampled_from(sorted(BASES)), label="other")]
            cut = data.draw(st.integers(0, len(other)), label="cut")
            raw[pos:] = other[cut:]
    path = _write(tmp_path_factory.mktemp("fz"), bytes(raw))
    check(path)


def _values(graph: onnx.GraphProto) -> list[onnx.ValueInfoProto]:
    return [*graph.input, *graph.output, *graph.value_info]


def _mutate(m: onnx.ModelProto, data) -> str:
    """Apply one drawn mutation to ``m`` in place; return its name (for the failure report)."""
    g = m.graph
    inner = [a.g for n in g.node for a in n.attribute if a.type == onnx.AttributeProto.GRAPH]
    if inner and data.draw(st.booleans(), label="in_subgraph"):
        g = data.draw(st.sampled_from(inner), label="subgraph")
    elif m.functions and data.draw(st.booleans(), label="in_function"):
        fn = m.functions[0]
        if not fn.node:
            return "function:empty"
        n = fn.node[0]
        what = data.draw(st.sampled_from(["op", "input", "output", "drop"]), label="fn_mutation")
        if what == "op":
            n.op_type = data.draw(st.sampled_from(["Gemm", "Conv", "NotAnOp", "Lin"]), label="fn_op")
        elif what == "input":
            n.input[0] = data.draw(st.sampled_from(["b", "nope", "c"]), label="fn_in")
        elif what == "output":
            fn.output[0] = data.draw(st.sampled_from(["a", "nope"]), label="fn_out")
        else:
            del fn.node[:]
        return f"function:{what}"
    kind = data.draw(st.sampled_from([
        "dim", "dim_param", "drop_shape", "attr_int", "attr_ints", "dangling", "cycle",
        "dup_output", "dup_node", "dup_init", "dup_input", "dtype", "init_dtype", "init_dims",
        "empty_graph", "no_outputs", "opset", "op_type", "domain", "drop_init", "ir_version",
        "self_loop", "drop_input",
    ]), label="mutation")
    nodes = list(g.node)
    pick_node = (lambda: g.node[data.draw(st.integers(0, len(g.node) - 1), label="node")]) if nodes else None
    if kind == "dim":
        vis = [v for v in _values(g) if v.type.tensor_type.shape.dim]
        if vis:
            v = data.draw(st.sampled_from(vis), label="value")
            d = data.draw(st.sampled_from(list(v.type.tensor_type.shape.dim)), label="which")
            d.dim_value = data.draw(dims, label="dim")
    elif kind == "dim_param":
        vis = [v for v in _values(g) if v.type.tensor_type.shape.dim]
        if vis:
            v = data.draw(st.sampled_from(vis), label="value")
            d = data.draw(st.sampled_from(list(v.type.tensor_type.shape.dim)), label="which")
            d.dim_param = data.draw(st.sampled_from(["", "batch", "seq", "N", "a b", "?"]), label="param")
    elif kind == "drop_shape":
        vis = [v for v in _values(g) if v.type.HasField("tensor_type")]
        if vis:
            data.draw(st.sampled_from(vis), label="value").type.tensor_type.ClearField("shape")
    elif kind in ("attr_int", "attr_ints") and nodes:
        n = pick_node()
        if n.attribute:
            a = data.draw(st.sampled_from(list(n.attribute)), label="attr")
            if a.type == onnx.AttributeProto.INT:
                a.i = data.draw(dims, label="i")
            elif a.type == onnx.AttributeProto.INTS:
                a.ints[:] = data.draw(st.lists(dims, max_size=6), label="ints")
            elif a.type == onnx.AttributeProto.FLOAT:
                a.f = data.draw(st.floats(allow_nan=True, allow_infinity=True, width=32), label="f")
        else:
            n.attribute.append(helper.make_attribute(
                data.draw(st.sampled_from(["group", "axis", "transB", "perm", "kernel_shape"]), label="name"),
                data.draw(st.lists(dims, min_size=1, max_size=4), label="value")))
    elif kind == "dangling" and nodes:
        n = pick_node()
        if n.input:
            n.input[data.draw(st.integers(0, len(n.input) - 1), label="slot")] = "no_such_value"
    elif kind == "cycle" and len(nodes) >= 2:
        i = data.draw(st.integers(0, len(nodes) - 2), label="i")
        j = data.draw(st.integers(i, len(nodes) - 1), label="j")
        if g.node[i].input and g.node[j].output:
            g.node[i].input[0] = g.node[j].output[0]
    elif kind == "self_loop" and nodes:
        n = pick_node()
        if n.input and n.output:
            n.input[0] = n.output[0]
    elif kind == "dup_output" and len(nodes) >= 2:
        i, j = data.draw(st.lists(st.integers(0, len(nodes) - 1), min_size=2, max_size=2, unique=True), label="ij")
        if g.node[i].output and g.node[j].output:
            g.node[j].output[0] = g.node[i].output[0]
    elif kind == "dup_node" and nodes:
        g.node.append(copy.deepcopy(pick_node()))
    elif kind == "dup_init" and g.initializer:
        g.initializer.append(copy.deepcopy(data.draw(st.sampled_from(list(g.initializer)), label="init")))
    elif kind == "dup_input" and g.input:
        g.input.append(copy.deepcopy(g.input[0]))
    elif kind == "dtype":
        vis = [v for v in _values(g) if v.type.HasField("tensor_type")]
        if vis:
            data.draw(st.sampled_from(vis), label="value").type.tensor_type.elem_type = data.draw(
                st.integers(0, 40), label="elem")
    elif kind == "init_dtype" and g.initializer:
        data.draw(st.sampled_from(list(g.initializer)), label="init").data_type = data.draw(
            st.integers(0, 40), label="elem")
    elif kind == "init_dims" and g.initializer:
        t = data.draw(st.sampled_from(list(g.initializer)), label="init")
        t.dims[:] = data.draw(st.lists(dims, max_size=5), label="dims")
    elif kind == "empty_graph":
        what = data.draw(st.sampled_from(["node", "input", "output", "initializer", "all"]), label="what")
        for f in (["node", "input", "output", "initializer"] if what == "all" else [what]):
            g.ClearField(f)
    elif kind == "no_outputs":
        g.ClearField("output")
    elif kind == "opset":
        m.opset_import[0].version = data.draw(st.one_of(
            st.sampled_from([1, 2, 6, 7, MAX_OPSET, MAX_OPSET + 1, 99, 0, -1]),
            st.integers(-(2**63), 2**63 - 1)), label="opset")
    elif kind == "op_type" and nodes:
        pick_node().op_type = data.draw(st.sampled_from(
            ["Conv", "MatMul", "Gemm", "ConvTranspose", "Attention", "Relu", "Reshape", "If",
             "Loop", "Einsum", "BatchNormalization", "NotAnOp", ""]), label="op")
    elif kind == "domain" and nodes:
        pick_node().domain = data.draw(st.sampled_from(["com.microsoft", "ai.onnx.ml", "custom", "ai.onnx"]),
                                       label="domain")
    elif kind == "drop_init" and g.initializer:
        del g.initializer[data.draw(st.integers(0, len(g.initializer) - 1), label="i")]
    elif kind == "drop_input" and g.input:
        del g.input[0]
    elif kind == "ir_version":
        m.ir_version = data.draw(st.sampled_from([0, 1, 3, 7, 10, 11, 99]), label="ir")
    return kind


@FUZZ
@given(base=st.sampled_from(sorted(BASES)), data=st.data())
def test_fuzz_graph_fields(tmp_path_factory, base, data):
    m = copy.deepcopy(BASES[base])
    done = [_mutate(m, data) for _ in range(data.draw(st.integers(1, 3), label="count"))]
    try:
        raw = m.SerializeToString()
    except Exception:  # protobuf refuses some values (e.g. out-of-range ints): not our input
        return
    path = _write(tmp_path_factory.mktemp("fz"), raw)
    extra = data.draw(st.sampled_from([(), ("--dim", "batch=2", "--dim", "seq=7"), ("--layers", "5"),
                                       ("--arch", "t4", "--dtype", "int8"), ("--strict",)]), label="flags")
    fmt = data.draw(st.sampled_from(["json", "table", "sarif", "github"]), label="format")
    run = check(path, *extra, fmt=fmt)
    note = f"mutations {done}"
    assert run.exit_code in (0, 1, 2), note


@settings(max_examples=max(10, EXAMPLES // 3), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_fuzz_writers_refuse_or_write_cleanly(tmp_path_factory, data):
    """fix/convert on mutated models: exit 0 with an output, or a one-line error and no file."""
    m = copy.deepcopy(BASES[data.draw(st.sampled_from(sorted(BASES)), label="base")])
    _mutate(m, data)
    try:
        raw = m.SerializeToString()
    except Exception:
        return
    folder = tmp_path_factory.mktemp("fzw")
    path = _write(folder, raw)
    if data.draw(st.booleans(), label="external_data"):
        try:  # the same mutated model with its weights in external data
            onnx.save(onnx.load_from_string(raw), str(path), save_as_external_data=True,
                      location="m.onnx.data", size_threshold=0)
        except Exception:  # noqa: BLE001 - onnx refuses to save some mutants: keep them inline
            path = _write(folder, raw)
    inputs = {p: p.read_bytes() for p in folder.iterdir() if p.is_file()}
    out = folder / "out" / "o.onnx"
    out.parent.mkdir()
    command = data.draw(st.sampled_from(FUZZ_WRITERS), label="command")
    run = run_main([command, str(path), "-o", str(out)], timeout_s=60)
    assert not run.error, run.error
    if run.exit_code == 0:
        assert out.exists()
    else:
        assert run.exit_code in (1, 2), run.stderr
        errors = [line for line in run.stderr.splitlines() if line.startswith("tclint: error:")]
        assert len(errors) == 1, run.stderr
        assert not out.exists()
    names = sorted(p.name for p in out.parent.iterdir())
    written = ["o.onnx"] if names == ["o.onnx"] else sorted(["o.onnx", data_file_of(out).name]) if out.exists() else []
    assert names == written, names
    assert {p: p.read_bytes() for p in inputs} == inputs, "an input changed"


# --------------------------------------------------------------------------------------------
# A real process for a few cases (an interpreter crash or a hang would show here)
# --------------------------------------------------------------------------------------------
def _tclint_cmd() -> list[str]:
    exe = Path(sys.executable).with_name("tclint")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "tclint"]


@pytest.mark.parametrize("case", ["truncated", "flipped", "cycle"])
def test_subprocess_one_line_error_or_report(tmp_path, case):
    raw = bytearray(BASE_BYTES["gpt2"])
    if case == "truncated":
        raw = raw[: len(raw) // 3]
    elif case == "flipped":
        for i in range(20, len(raw), 97):
            raw[i] ^= 0x5A
    else:
        m = copy.deepcopy(BASES["gpt2"])
        m.graph.node[0].input[0] = m.graph.node[-1].output[0]
        raw = bytearray(m.SerializeToString())
    path = _write(tmp_path, bytes(raw))
    proc = subprocess.run([*_tclint_cmd(), "check", str(path)], capture_output=True, text=True, timeout=120)
    assert proc.returncode in (0, 1, 2), proc.stderr
    assert "Traceback" not in proc.stderr
    if proc.returncode == 2:
        assert proc.stderr.count("tclint: error:") == 1, proc.stderr
    if case == "truncated":
        assert proc.returncode == 2 and "truncated" in proc.stderr


# --------------------------------------------------------------------------------------------
# The developers' guide's bad inputs, one by one
# --------------------------------------------------------------------------------------------
def _exit2(argv: list[str], *needles: str) -> str:
    run = run_main(argv, timeout_s=TIMEOUT_S)
    assert_one_behaviour(run, allow_report=False)
    line = next(line for line in run.stderr.splitlines() if line.startswith("tclint: error:"))
    for needle in needles:
        assert needle in line, line
    return line


COMMANDS = ["check", *WRITERS]


def _argv(command: str, path: Path, tmp_path: Path) -> list[str]:
    return [command, str(path)] + ([] if command == "check" else ["-o", str(tmp_path / "out.onnx")])


@pytest.mark.parametrize("command", COMMANDS)
def test_missing_file(tmp_path, command):
    _exit2(_argv(command, tmp_path / "nope.onnx", tmp_path), "no such file")
    assert not (tmp_path / "out.onnx").exists()


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("content,needle", [
    (b"", "empty"),
    (b"hello, this is a text file\n" * 20, "not"),
    (bytes(range(256)) * 8, "not"),
])
def test_not_onnx(tmp_path, command, content, needle):
    _exit2(_argv(command, _write(tmp_path, content), tmp_path), needle)
    assert not (tmp_path / "out.onnx").exists()


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("fraction", [0.1, 0.5, 0.9, 0.999])
def test_truncated(tmp_path, command, fraction):
    raw = BASE_BYTES["conv"]
    _exit2(_argv(command, _write(tmp_path, raw[: int(len(raw) * fraction)]), tmp_path))
    assert not (tmp_path / "out.onnx").exists()


def test_directory_without_models(tmp_path):
    _exit2(["check", str(tmp_path)], "no .onnx files")


@pytest.mark.parametrize("command", COMMANDS)
def test_unsupported_op(tmp_path, command):
    m = copy.deepcopy(BASES["conv"])
    m.graph.node[1].op_type = "NoSuchOp"
    _exit2(_argv(command, _write(tmp_path, m.SerializeToString()), tmp_path), "NoSuchOp")


@pytest.mark.parametrize("command", COMMANDS)
def test_opset_newer_than_onnx(tmp_path, command):
    m = copy.deepcopy(BASES["conv"])
    m.opset_import[0].version = MAX_OPSET + 1
    _exit2(_argv(command, _write(tmp_path, m.SerializeToString()), tmp_path), "newer", "upgrade onnx")


def test_opset_1_gets_a_report_or_one_line(tmp_path):
    m = copy.deepcopy(BASES["gemm"])
    m.opset_import[0].version = 1
    check(_write(tmp_path, m.SerializeToString()))


def test_negative_value_dim_is_unknown_negative_weight_dim_refused(tmp_path):
    m = copy.deepcopy(BASES["gemm"])
    m.graph.input[0].type.tensor_type.shape.dim[0].dim_value = -1  # "dynamic", as some exporters write
    run = check(_write(tmp_path, m.SerializeToString()))
    row = json.loads(run.stdout)["models"][0]["layers"][0]
    assert row["M"] is None or row["M"] > 0
    assert (row["N"], row["K"]) == (40, 20)
    m = copy.deepcopy(BASES["conv"])
    m.graph.initializer[0].dims[0] = -3
    _exit2(["check", str(_write(tmp_path, m.SerializeToString()))], "negative dim")


def _gpt2_path(tmp_path: Path) -> Path:
    return _write(tmp_path, BASE_BYTES["gpt2"])


#: commands that take --input-shape / --dim
SHAPED = ["check", "fix"]


@pytest.mark.parametrize("command", SHAPED)
def test_input_shape_not_an_input(tmp_path, command):
    _exit2([*_argv(command, _gpt2_path(tmp_path), tmp_path), "--input-shape", "logits:1x8"],
           "not a model input", "input_ids")
    assert not (tmp_path / "out.onnx").exists()


@pytest.mark.parametrize("command", SHAPED)
def test_input_shape_wrong_rank(tmp_path, command):
    _exit2([*_argv(command, _gpt2_path(tmp_path), tmp_path), "--input-shape", "input_ids:1x8x3"],
           "rank 3")
    assert not (tmp_path / "out.onnx").exists()


def test_input_shape_conflicts_with_fixed_dim(tmp_path):
    path = _write(tmp_path, BASE_BYTES["conv"])
    name = BASES["conv"].graph.input[0].name
    _exit2(["check", str(path), "--input-shape", f"{name}:2x3x9x9"], "conflicts")


@pytest.mark.parametrize("flags", [["--input-shape", "input_ids"], ["--input-shape", "input_ids:1xAx3"],
                                   ["--dim", "batch=0"], ["--dim", "batch"], ["--arch", "sm12"],
                                   ["--select", "XX9"]])
def test_bad_flags(tmp_path, flags):
    _exit2(["check", str(_gpt2_path(tmp_path)), *flags])


def test_unbound_dims_still_report(tmp_path):
    """Symbolic dims nobody binds: a normal report that says what it assumed."""
    run = check(_gpt2_path(tmp_path))
    report = json.loads(run.stdout)["models"][0]
    assert report["summary"]["unresolved_dims"]


# --------------------------------------------------------------------------------------------
# External data: missing, truncated, outside the folder
# --------------------------------------------------------------------------------------------
def _external_model(folder: Path, *, location: str | None = None) -> Path:
    """A conv+gemm model with its weights in ``w.bin`` (or ``location``)."""
    m = examples.single_conv(c=3, k=30, image=8)
    onnx.save(m, str(folder / "m.onnx"), save_as_external_data=True, all_tensors_to_one_file=True,
              location="w.bin", size_threshold=0)
    if location is not None:
        m2 = onnx.load(str(folder / "m.onnx"), load_external_data=False)
        for t in m2.graph.initializer:
            for e in t.external_data:
                if e.key == "location":
                    e.value = location
        onnx.save(m2, str(folder / "m.onnx"))
    return folder / "m.onnx"


def _writers_refuse(path: Path, tmp_path: Path, *needles: str) -> None:
    for command in WRITERS:
        out = path.parent / f"out_{command}.onnx"
        before = sorted(p.name for p in path.parent.iterdir())
        line = _exit2([command, str(path), "-o", str(out)], *needles)
        assert not out.exists(), line
        assert sorted(p.name for p in path.parent.iterdir()) == before


def test_missing_external_data_check_lints_writers_refuse(tmp_path):
    path = _external_model(tmp_path)
    (tmp_path / "w.bin").unlink()
    run = check(path)
    assert run.exit_code in (0, 1)
    layers = json.loads(run.stdout)["models"][0]["layers"]
    assert any(row["op"] == "Conv" and row["N"] == 30 for row in layers), "dims come from the structure"
    _writers_refuse(path, tmp_path, "missing")


def test_truncated_external_data_writers_refuse(tmp_path):
    path = _external_model(tmp_path)
    data = (tmp_path / "w.bin").read_bytes()
    (tmp_path / "w.bin").write_bytes(data[: len(data) // 2])
    assert check(path).exit_code in (0, 1)
    _writers_refuse(path, tmp_path, "truncated")


def _fifo(path: Path) -> Path:
    """A named pipe: opening it for reading blocks, so any read of it shows up as a timeout."""
    os.mkfifo(path)
    return path


@pytest.mark.parametrize("style", ["relative", "absolute"])
def test_external_data_outside_the_folder(tmp_path, style):
    outside = tmp_path / "outside"
    outside.mkdir()
    secret = _fifo(outside / "secret.bin")
    model_dir = tmp_path / "a" / "b"
    model_dir.mkdir(parents=True)
    location = "../../outside/secret.bin" if style == "relative" else str(secret)
    path = _external_model(model_dir, location=location)
    (model_dir / "w.bin").unlink()
    snapshot = sorted((p.name, stat.S_IFMT(p.lstat().st_mode)) for p in outside.iterdir())
    # check never reads weights: it lints from the structure (and does not block on the pipe)
    assert check(path).exit_code in (0, 1)
    _writers_refuse(path, tmp_path, "outside the model's folder")
    assert sorted((p.name, stat.S_IFMT(p.lstat().st_mode)) for p in outside.iterdir()) == snapshot


def test_etc_passwd_style_location_is_refused(tmp_path):
    path = _external_model(tmp_path, location="../../../../../../../../etc/passwd")
    _writers_refuse(path, tmp_path, "outside the model's folder")


def test_require_readable_weights_directly(tmp_path):
    from tclint.errors import InputError
    from tclint.io import require_readable_weights
    from tclint.load import load_model

    (tmp_path / "ok").mkdir()
    ok = _external_model(tmp_path / "ok")
    require_readable_weights(load_model(ok), ok)
    (tmp_path / "x").mkdir()
    bad = _external_model(tmp_path / "x", location="/etc/hostname")
    with pytest.raises(InputError, match="outside"):
        require_readable_weights(load_model(bad), bad)
    # a symlink inside the folder that leads outside is outside too
    (tmp_path / "y").mkdir()
    link = _external_model(tmp_path / "y", location="link.bin")
    os.symlink(tmp_path / "ok" / "w.bin", tmp_path / "y" / "link.bin")
    with pytest.raises(InputError, match="outside"):
        require_readable_weights(load_model(link), link)


# --------------------------------------------------------------------------------------------
# Dims that overflow FLOP counts
# --------------------------------------------------------------------------------------------
def _matmul(a_shape, b_shape) -> onnx.ModelProto:
    g = helper.make_graph(
        [helper.make_node("MatMul", ["A", "B"], ["Y"], name="mm")], "g",
        [helper.make_tensor_value_info("A", TensorProto.FLOAT, a_shape),
         helper.make_tensor_value_info("B", TensorProto.FLOAT, b_shape)],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, None)])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def test_huge_dims_report_with_finite_numbers(tmp_path):
    """2^40 x 2^40 x 2^40: 2^121 FLOPs; Python ints and floats carry it, the report stays finite."""
    big = 2**40 + 1
    run = check(_write(tmp_path, _matmul([big, big], [big, big]).SerializeToString()))
    report = json.loads(run.stdout)["models"][0]
    row = report["layers"][0]
    assert (row["M"], row["N"], row["K"]) == (big, big, big)
    assert np.isfinite(row["time_us"]) and row["time_us"] > 1e20
    assert np.isfinite(report["summary"]["speedup_if_all_fixed"])
    assert {f["code"] for f in report["findings"]} & {"TC101", "TC102", "TC103", "TC105"}


@pytest.mark.parametrize("fmt", ["table", "json", "sarif", "github"])
def test_dims_beyond_float_range_are_one_line_errors(tmp_path, fmt):
    """Rank-18 batched GEMM of 2^63-1 dims: the FLOP count (~2^1260) does not fit a float."""
    h = 2**63 - 1
    path = _write(tmp_path, _matmul([h] * 18, [h] * 18).SerializeToString())
    run = run_main(["check", str(path), "--format", fmt], timeout_s=TIMEOUT_S)
    assert_one_behaviour(run, allow_report=False)
    assert "too large to count FLOPs" in run.stderr


def test_huge_conv_image(tmp_path):
    m = copy.deepcopy(BASES["conv"])
    for d in m.graph.input[0].type.tensor_type.shape.dim[2:]:
        d.dim_value = 2**62
    check(_write(tmp_path, m.SerializeToString()))


def test_huge_initializer_dims_are_not_allocated(tmp_path):
    """An initializer claiming 2^40 x 2^40 elements (external, no file): check must not read it."""
    t = TensorProto(name="W", data_type=TensorProto.FLOAT, dims=[2**40 + 3, 2**40 + 5],
                    data_location=TensorProto.EXTERNAL)
    e = t.external_data.add()
    e.key, e.value = "location", "w.bin"
    g = helper.make_graph([helper.make_node("MatMul", ["A", "W"], ["Y"], name="mm")], "g",
                          [helper.make_tensor_value_info("A", TensorProto.FLOAT, [8, 2**40 + 3])],
                          [helper.make_tensor_value_info("Y", TensorProto.FLOAT, None)], [t])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    path = _write(tmp_path, m.SerializeToString())
    run = check(path)
    assert json.loads(run.stdout)["models"][0]["layers"][0]["N"] == 2**40 + 5
    _writers_refuse(path, tmp_path, "missing")



@pytest.mark.parametrize("command", WRITERS)
@pytest.mark.parametrize("case", ["undefined_type", "no_shape", "string_type"])
def test_writers_on_inputs_without_usable_type_or_shape(tmp_path, command, case):
    """Found by the fuzz: verification feeds random inputs built from the input's type and shape;
    without a usable one the writer must decline in one line (or write a model that loads)."""
    m = copy.deepcopy(BASES["conv"])
    tt = m.graph.input[0].type.tensor_type
    if case == "undefined_type":
        tt.elem_type = TensorProto.UNDEFINED
    elif case == "no_shape":
        tt.ClearField("shape")
    else:
        tt.elem_type = TensorProto.STRING
    path = _write(tmp_path, m.SerializeToString())
    out = tmp_path / "out.onnx"
    run = run_main([command, str(path), "-o", str(out)], timeout_s=TIMEOUT_S)
    assert not run.error, run.error
    if run.exit_code == 0:
        assert out.exists()
    else:
        assert run.exit_code in (1, 2)
        assert len([line for line in run.stderr.splitlines() if line.startswith("tclint: error:")]) == 1
        assert not out.exists()
    assert _leftovers_ok(tmp_path)


def _leftovers_ok(folder: Path) -> bool:
    return sorted(p.name for p in folder.iterdir()) in (["m.onnx"], ["m.onnx", "out.onnx"])


# --------------------------------------------------------------------------------------------
# Output paths: whatever the destination is, the inputs survive and nothing is left behind
# --------------------------------------------------------------------------------------------
_DESTS = ["new", "existing", "input", "input-data", "symlink-to-input", "hardlink-to-input",
          "symlink-to-data", "hardlink-to-data", "symlink-to-victim", "dangling-symlink", "directory"]
_OUTPUT_COMMANDS = ["check -o", "check --update-baseline", "fix -o", "fix --report", "convert -o"]


@settings(max_examples=max(len(_DESTS) * len(_OUTPUT_COMMANDS) * 2, EXAMPLES // 4), deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(command=st.sampled_from(_OUTPUT_COMMANDS), dest=st.sampled_from(_DESTS), external=st.booleans())
def test_fuzz_output_paths(tmp_path_factory, command, dest, external):
    folder = tmp_path_factory.mktemp("fzo")
    src = folder / "m.onnx"
    m = copy.deepcopy(BASES["conv"])  # onnx.save converts the proto it saves in place
    if external:
        onnx.save(m, str(src), save_as_external_data=True, location="m.onnx.data", size_threshold=0)
    else:
        onnx.save(m, str(src))
    victim = folder / "victim.txt"
    victim.write_text("precious")
    target = folder / "dest"
    data_file = folder / "m.onnx.data"
    if dest == "existing":
        target.write_text("old output")
    elif dest == "input":
        target = src
    elif dest == "input-data":
        target = data_file if external else src
    elif dest.startswith(("symlink", "hardlink", "dangling")):
        what = {"input": src, "data": data_file if external else src, "victim": victim,
                "symlink": folder / "nowhere"}[dest.rsplit("-", 1)[1]]
        (os.symlink if dest.startswith(("symlink", "dangling")) else os.link)(what, target)
    elif dest == "directory":
        target.mkdir()
    inputs = {p: p.read_bytes() for p in (src, data_file, victim) if p.exists()}
    argv = {"check -o": ["check", src, "-o", target, "--exit-zero"],
            "check --update-baseline": ["check", src, "--baseline", target, "--update-baseline"],
            "fix -o": ["fix", src, "-o", target, "--force"],
            "fix --report": ["fix", src, "--dry-run", "--report", target],
            "convert -o": ["convert", src, "-o", target]}[command]
    run = run_main([str(a) for a in argv], timeout_s=60)
    assert_one_behaviour(run, quiet_ok=True)
    for p, raw in inputs.items():  # the victim too: a link at the destination is replaced
        assert p.read_bytes() == raw, f"{p.name} changed ({command} into {dest})"
    assert not [n for n in os.listdir(folder) if n.startswith(".tclint-tmp-")]
    if dest == "directory":
        assert target.is_dir()
    if run.exit_code == 0 and dest not in ("directory",):
        assert target.is_file() and not target.is_symlink()
