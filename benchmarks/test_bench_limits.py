"""Limits: a graph of 200,000 nodes lints in bounded time and memory, and time grows linearly.

The graph: 40,000 residual MLP blocks on a [8, 128, 64] activation (MatMul 64->72 + bias Add,
Relu, MatMul 72->64, residual Add: 5 nodes per block), 120,000 initializers kept in one sparse
external-data file (1.8 GB apparent, no bytes on disk), 80,000 GEMM layers, every one misaligned
(N=72 or K=72 is not a multiple of 16 on sm80), so the report carries 80,000 findings.

Each run is ``tclint check MODEL --format json -o REPORT`` in a fresh subprocess, timed with
``time.perf_counter`` and measured with ``resource.getrusage(RUSAGE_SELF).ru_maxrss`` (peak RSS,
which includes onnx's C++ shape inference and onnxruntime).

Measured on the 2-core development machine (2026-11-24; python 3.11, onnx 1.23.2, onnx-ir 1.1.0,
other jobs sharing the machine, so times are +-30%), with
``pytest benchmarks/test_bench_limits.py -s --benchmark-enable``:

    nodes      wall s   peak RSS
    20,000       2.8     0.27 GB
    200,000     28.7     1.8 GB
    (JSON report of 200k nodes: 76 MB, 80,000 findings)

Before the fixes made with this benchmark, 200k nodes took 348 s (5:48, /usr/bin/time): hiding
initializers from shape inference tested ``value in graph.inputs`` (a list scan) once per
initializer, quadratic in the initializer count (``tclint/load.py``, now a set). Then 39 s and
3.3 GB: the FP16-hazard rule (TC301) read every constant of at most 1 MB, external data included;
it now reads inline constants only (``tclint/hazards.py: small_constant``), giving the table above.
The bounds below catch a return of quadratic behaviour (a 10x larger graph taking 100x longer).

Run: ``pytest benchmarks/test_bench_limits.py -v`` (about 1.5 minutes; marked ``slow``).
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import onnx
import pytest

from tclint.examples import GraphBuilder

pytestmark = pytest.mark.slow

#: bounds for 200k nodes: ~4x the measured time, ~1.5x the measured peak (CI machines vary)
MAX_SECONDS_200K = 150.0
MAX_RSS_MB_200K = 5000.0
#: 10x the nodes may take at most this many times longer (linear: ~10; quadratic: ~100)
MAX_SCALING = 25.0

_RUNNER = textwrap.dedent("""
    import json, resource, sys, time
    from tclint.cli import main
    start = time.perf_counter()
    code = main(sys.argv[1:])
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    print(json.dumps({"code": code, "seconds": seconds, "max_rss_mb": peak}))
""")


def build_chain(folder: Path, blocks: int) -> Path:
    """``blocks`` residual MLP blocks (5 nodes each) with sparse external weights."""
    g = GraphBuilder("chain", weights="external", data_path=folder / "w.bin")
    x = g.input("x", [8, 128, 64])
    for _ in range(blocks):
        h = g.linear(x, 64, 72)
        h = g.node("Relu", [h])
        h = g.linear(h, 72, 64, bias=False)
        x = g.node("Add", [x, h])
    g.output(x)
    path = folder / "m.onnx"
    onnx.save(g.model(), str(path))
    return path


def lint_in_subprocess(model: Path) -> dict:
    report = model.with_suffix(".json")
    proc = subprocess.run(
        [sys.executable, "-c", _RUNNER, "check", str(model), "--format", "json", "-o", str(report)],
        capture_output=True, text=True, timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    measured = json.loads(proc.stdout.strip().splitlines()[-1])
    measured["report"] = json.loads(report.read_text())["models"][0]
    return measured


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[int, dict]:
    out = {}
    for blocks in (4_000, 40_000):
        folder = tmp_path_factory.mktemp(f"chain{blocks}")
        out[blocks * 5] = lint_in_subprocess(build_chain(folder, blocks))
    for nodes, m in out.items():
        print(f"\n{nodes} nodes: {m['seconds']:.1f} s, peak RSS {m['max_rss_mb']:.0f} MB, "
              f"{m['report']['summary']['findings']} findings")
    return out


def test_200k_nodes_lint_in_bounded_time_and_memory(runs):
    m = runs[200_000]
    assert m["code"] in (0, 1)
    summary = m["report"]["summary"]
    assert summary["nodes"] == 200_000
    assert summary["layers"] == 80_000
    assert summary["findings"] >= 80_000
    assert m["seconds"] < MAX_SECONDS_200K, m
    assert m["max_rss_mb"] < MAX_RSS_MB_200K, m


def test_lint_time_grows_linearly(runs):
    small, big = runs[20_000], runs[200_000]
    assert small["report"]["summary"]["layers"] * 10 == big["report"]["summary"]["layers"]
    ratio = big["seconds"] / small["seconds"]
    assert ratio < MAX_SCALING, f"10x nodes took {ratio:.1f}x the time"
    assert big["max_rss_mb"] / small["max_rss_mb"] < MAX_SCALING


# --------------------------------------------------------------------------------------------
# A million tiny initializers (issue 10 #11)
# --------------------------------------------------------------------------------------------
#: Scalar float initializers, either read by nothing (``unused``, next to one MatMul) or all
#: read by one Concat (``used``). ``tclint check`` on 10^6 of them (/usr/bin/time, wall and peak
#: RSS, the 2-core machine at load ~1, 2026-12-01):
#:
#:                    before (a1b292e)        after
#:     unused 10^6    98 s, 3.9 GB            38 s, 1.9 GB
#:     used   10^6    108 s, 4.5 GB           53 s, 3.5 GB
#:
#: What went: TC301 converted each constant to numpy on its own (now one numpy pass over all
#: inline float values, tclint/hazards.py: _screen_constants); shape inference re-serialized every
#: initializer through onnx-ir (now the TensorProtos are copied in bulk, sized from the proto,
#: and unused ones skipped, tclint/load.py: _stripped_proto). What is left is onnx-ir building
#: one Value per initializer (about half of the time: 26 s of CPU for 10^6) and the memory those
#: objects and the shape-inference copies take.
MAX_SECONDS_1M_INITIALIZERS = 240.0
MAX_RSS_MB_1M_INITIALIZERS = 6000.0


def build_tiny_initializers(folder: Path, n: int, kind: str) -> Path:
    from onnx import TensorProto, helper, numpy_helper
    import numpy as np

    inits = [helper.make_tensor(f"c{i}", TensorProto.FLOAT, [1], [0.5]) for i in range(n)]
    if kind == "unused":
        nodes = [helper.make_node("MatMul", ["x", "W"], ["y"], name="mm")]
        inits.append(numpy_helper.from_array(np.ones((20, 30), np.float32), "W"))
        inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [8, 20])]
        outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, [8, 30])]
    else:
        nodes = [helper.make_node("Concat", [f"c{i}" for i in range(n)], ["cat"], axis=0, name="cat"),
                 helper.make_node("Add", ["x", "cat"], ["y"], name="add")]
        inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [n])]
        outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, [n])]
    g = helper.make_graph(nodes, "tiny", inputs, outputs, inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    path = folder / f"{kind}{n}.onnx"
    onnx.save(m, str(path))
    return path


@pytest.mark.parametrize("kind", ["unused", "used"])
def test_a_million_tiny_initializers(tmp_path, kind):
    small = lint_in_subprocess(build_tiny_initializers(tmp_path, 100_000, kind))
    big = lint_in_subprocess(build_tiny_initializers(tmp_path, 1_000_000, kind))
    print(f"\n{kind}: 10^5 {small['seconds']:.1f} s {small['max_rss_mb']:.0f} MB; "
          f"10^6 {big['seconds']:.1f} s {big['max_rss_mb']:.0f} MB")
    assert big["code"] in (0, 1)
    assert big["seconds"] < MAX_SECONDS_1M_INITIALIZERS, big
    assert big["max_rss_mb"] < MAX_RSS_MB_1M_INITIALIZERS, big
    assert big["seconds"] / small["seconds"] < MAX_SCALING
