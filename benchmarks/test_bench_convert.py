"""FP16 conversion benchmarks: tclint vs onnxconverter-common vs onnxruntime.transformers.float16.

Run with timing: ``pytest benchmarks/test_bench_convert.py --benchmark-enable``; in CI
(``--benchmark-disable``) each case runs once and still checks correctness: the result loads and
runs in onnxruntime (CPU) and its error stays within FP16 tolerance. The comparison table with
Cast counts and errors is ``python benchmarks/compare_converters.py``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import _models as M  # noqa: E402
from benchmarks.compare_converters import CONVERTERS, casts, feeds_for, rel_error, run  # noqa: E402

MODELS = {
    "resnet50": lambda: M.resnet(),
    "vit_b16": lambda: M.vit(),
    "gpt2_4layers": lambda: M.gpt2(layers=4),
    "resize": lambda: M.resize_net(),
    "if_loop": lambda: M.control_flow_net(),
    "layernorm": lambda: M.layernorm_net(),
}
_CACHE: dict = {}


def _model(name):
    if name not in _CACHE:
        proto = MODELS[name]()
        feeds = feeds_for(proto)
        _CACHE[name] = (proto, feeds, run(proto, feeds))
    return _CACHE[name]


def _available(converter: str) -> bool:
    try:
        if converter == "onnxconverter-common":
            import onnxconverter_common  # noqa: F401
        elif converter == "ort.transformers.float16":
            from onnxruntime.transformers import float16  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.mark.parametrize("converter", list(CONVERTERS))
@pytest.mark.parametrize("name", list(MODELS))
def test_convert(benchmark, name, converter):
    if not _available(converter):
        pytest.skip(f"{converter} not importable")
    proto, feeds, ref = _model(name)
    out = benchmark.pedantic(CONVERTERS[converter], args=(proto,), rounds=3, iterations=1)
    got = run(out, feeds)
    error = rel_error(ref, got)
    benchmark.extra_info.update(casts_added=casts(out) - casts(proto), max_rel_error=error)
    if converter == "tclint":  # peers are recorded, not judged
        assert error < 2e-2
