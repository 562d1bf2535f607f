"""The linter's own speed: `check` on a LLaMA-7B-shaped graph (32 layers, ~27 GB of external
weights in a sparse file: no disk used) must take under 2 s and 500 MB peak memory.

Run: pytest benchmarks/test_bench_check.py --benchmark-enable --benchmark-json out.json
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import onnx
import pytest

from tclint import examples
from tclint.config import CheckOptions
from tclint.lint import check_model

LLAMA_7B = dict(layers=32, hidden=4096, heads=32, kv_heads=32, ffn=11008, vocab=32000)


@pytest.fixture(scope="module")
def llama7b(tmp_path_factory):
    folder = tmp_path_factory.mktemp("llama7b")
    data = folder / "llama7b.onnx.data"
    proto = examples.llama(**LLAMA_7B, weights="external", data_path=data)
    path = folder / "llama7b.onnx"
    onnx.save(proto, str(path))
    assert os.path.getsize(data) > 26e9  # the weights are really there, as a sparse file
    return path


def test_check_llama7b_speed(benchmark, llama7b):
    options = CheckOptions(dims={"batch": 1, "seq": 2048})
    report = benchmark(check_model, llama7b, options)
    assert report.summary["layers"] == 32 * 9 + 1
    assert report.summary["seconds"] < 2.0


def test_check_llama7b_time_and_peak_memory_in_a_fresh_process(llama7b):
    """Wall time and peak RSS of a whole `tclint check` process (imports included)."""
    code = textwrap.dedent(f"""
        import json, resource, sys, time
        t = time.perf_counter()
        from tclint.cli import main
        rc = main(["check", {str(llama7b)!r}, "--dim", "batch=1", "--dim", "seq=2048",
                   "--format", "json", "-o", "/dev/null"])
        print(json.dumps({{"rc": rc, "seconds": time.perf_counter() - t,
                           "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}}))
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    print(f"\nLLaMA-7B check: {result['seconds']:.2f} s, peak RSS {result['peak_mb']:.0f} MB")
    assert result["rc"] in (0, 1)
    assert result["seconds"] < 2.0  # imports included (interpreter start excluded)
    assert result["peak_mb"] < 500
