"""`fix` (analysis, padding, ONNX checker, onnxruntime CPU verification on two random inputs,
atomic write) on a ResNet-50-sized graph (224x224, 25.6 M parameters): target under 10 s on CPU.

Run: pytest benchmarks/test_bench_fix.py --benchmark-enable
"""

from __future__ import annotations

import onnx
import pytest

from tclint import examples
from tclint.fix import fix_model


@pytest.fixture(scope="module")
def resnet50(tmp_path_factory):
    path = tmp_path_factory.mktemp("resnet50") / "resnet50.onnx"
    onnx.save(examples.resnet50(image=224), str(path))
    return path


@pytest.mark.parametrize("force", [False, True], ids=["cost-gated", "force"])
def test_fix_resnet50_speed(benchmark, resnet50, tmp_path, force):
    out = tmp_path / "fixed.onnx"
    report = benchmark.pedantic(fix_model, args=(resnet50, out), kwargs={"force": force},
                                rounds=3, iterations=1)
    assert report.verification is not None and report.verification.ok
    if force:  # the 3-channel stem (TC204) and the 1000-class head (TC104) are padded
        assert {c.node for c in report.changes} == {"conv", "fc"}
    assert benchmark.stats["mean"] < 10.0
