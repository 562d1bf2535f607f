"""The cost of naming the PyTorch source of every finding (tclint.source + tclint.advice).

The graph: the residual MLP chain of test_bench_limits.py (5 nodes per block, every GEMM
misaligned, so 2 findings per block), each node carrying dynamo-exporter metadata as
torch.onnx writes it for a Hugging Face LLaMA MLP (name_scopes, class_hierarchy, a 3-frame
stack_trace, namespace: ~1.4 kB per node, 13x the file size of the same graph without it).

Measured as CPU time (``time.process_time``: the development machine is shared, load ~6 on 2
cores) of loading, of ``analyse`` (shapes, view, cost, rules: everything `check` does after
loading) and of ``SourceMap.for_path`` + ``advise`` for every finding, in one process
(2026-12-01, python 3.11, onnx-ir 1.1):

    nodes     findings   load CPU s   analyse CPU s   sources+advice CPU s
    20,000      8,000        1.0          2.4          0.17  (5.0% of load+analyse)
    200,000    80,000       12.9         27.4          1.62  (4.0% of load+analyse; 20 us/finding)

That is the worst case (every layer misaligned); a model with a few hundred findings pays
milliseconds. The metadata itself makes the file 13x larger and its load 40% slower (200k
nodes: 10.6 -> 14.8 s CPU, plain vs with metadata): that is parsing the user's file, paid with or
without this feature.

Reading the metadata costs nothing until a finding asks: the per-finding work is a few string
splits and regexes over that node's metadata (stack traces and class lists are parsed once per
distinct string: layers repeat them), one short walk from the weight input to its initializer
name, and the advice table lookup.

Run: ``pytest benchmarks/test_bench_source.py -s`` (TCLINT_BENCH_SOURCE_BLOCKS=40000 for 200k
nodes, about 3 minutes).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import onnx
import pytest

from tclint.advice import advise
from tclint.config import CheckOptions
from tclint.examples import GraphBuilder
from tclint.lint import analyse
from tclint.load import load_model
from tclint.source import SourceMap

pytestmark = pytest.mark.slow

BLOCKS = int(os.environ.get("TCLINT_BENCH_SOURCE_BLOCKS", "4000"))
#: naming the source of every finding may add at most this fraction to `analyse`
MAX_RATIO = 0.15

_CLASSES = ["__main__.HF", "transformers.models.llama.modeling_llama.LlamaForCausalLM",
            "transformers.models.llama.modeling_llama.LlamaModel",
            "transformers.models.llama.modeling_llama.LlamaDecoderLayer",
            "transformers.models.llama.modeling_llama.LlamaMLP",
            "torch.nn.modules.linear.Linear", "aten.linear.default"]
_TRACE = (
    'File "/home/u/repo/train.py", line 40, in forward\n    return self.m(x)\n'
    '  File "/venv/lib/python3.11/site-packages/transformers/models/llama/modeling_llama.py", '
    'line 164, in forward\n'
    '    down_proj = self.down_proj(self.act_fn(self.gate_proj(x)) * self.up_proj(x))\n'
    '  File "/venv/lib/python3.11/site-packages/torch/nn/modules/linear.py", line 134, in forward\n'
    '    return F.linear(input, self.weight, self.bias)')


def build(folder: Path, blocks: int) -> Path:
    g = GraphBuilder("chain", weights="external", data_path=folder / "w.bin")
    x = g.input("x", [8, 128, 64])
    for _ in range(blocks):
        h = g.linear(x, 64, 72)
        h = g.node("Relu", [h])
        h = g.linear(h, 72, 64, bias=False)
        x = g.node("Add", [x, h])
    g.output(x)
    model = g.model()
    for i, node in enumerate(model.graph.node):
        block, leaf = i // 5, ("up_proj" if i % 5 < 2 else "down_proj")
        mlp = f"m.model.layers.{block}.mlp"
        scopes = ["", "m", "m.model", f"m.model.layers.{block}", mlp, f"{mlp}.{leaf}", f"linear_{i}"]
        for key, value in (("pkg.torch.onnx.name_scopes", repr(scopes)),
                           ("pkg.torch.onnx.class_hierarchy", repr(_CLASSES)),
                           ("pkg.torch.onnx.stack_trace", _TRACE),
                           ("namespace", "/".join(f"{s}: {c}" for s, c in zip(scopes, _CLASSES)))):
            entry = node.metadata_props.add()
            entry.key, entry.value = key, value
    path = folder / "chain.onnx"
    onnx.save(model, str(path))
    return path


def test_naming_the_source_of_every_finding_is_a_small_part_of_check(tmp_path):
    path = build(tmp_path, BLOCKS)
    t = time.process_time()
    model = load_model(path)
    load_s = time.process_time() - t
    t = time.process_time()
    a = analyse(model, CheckOptions())
    analyse_s = time.process_time() - t
    t = time.process_time()
    sources = SourceMap(model, a.view)
    named = advised = 0
    for f in a.findings:
        s = sources.for_path(f.path)
        named += s.module is not None
        advised += advise(s, f.code, f.dims, f.suggested, f.multiple) is not None
    source_s = time.process_time() - t
    print(f"\n{BLOCKS * 5} nodes, {len(a.findings)} findings: load {load_s:.2f} s CPU, analyse "
          f"{analyse_s:.2f} s, sources+advice {source_s:.2f} s ({source_s / analyse_s:.1%} of "
          f"analyse, {source_s / (load_s + analyse_s):.1%} of load+analyse)")
    assert len(a.findings) == 2 * BLOCKS
    assert named == advised == len(a.findings)  # every finding named and advised
    assert source_s < MAX_RATIO * analyse_s
