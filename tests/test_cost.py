"""The cost model and its table of facts."""

from __future__ import annotations

import dataclasses
import json

import pytest

from tclint.cost import alignment_factor, layer_cost
from tclint.errors import UsageError
from tclint.specs import (DEFAULT_CONSTANTS, GPUS, PRECISIONS, Constant, get_gpu, load_calibration,
                          make_target, required_multiple)
from tclint.view import Layer

A100 = make_target("a100", "fp16")


def gemm(m, n, k, batch=1, precision="fp16"):
    return Layer(op="MatMul", name="g", path="g", part="", m=m, n=n, k=k, batch=batch,
                 precision=precision, elem_bytes=PRECISIONS[precision].bytes, sources={},
                 unresolved={}, weight_dims=frozenset({"N", "K"}))


def test_every_fact_has_a_source():
    for gpu in GPUS.values():
        assert gpu.source and gpu.sms > 0 and gpu.dram_gbs > 0 and gpu.peak_tflops
    for f in dataclasses.fields(DEFAULT_CONSTANTS):
        value = getattr(DEFAULT_CONSTANTS, f.name)
        if isinstance(value, Constant):
            assert value.source, f.name


def test_alignment_table():
    assert required_multiple(get_gpu("a100"), "fp16") == 16
    assert required_multiple(get_gpu("sm90"), "fp16") == 16
    assert required_multiple(get_gpu("t4"), "fp16") == 8
    assert required_multiple(get_gpu("v100"), "tf32") == 4
    assert required_multiple(get_gpu("a100"), "fp16", strict=True) == 64
    assert required_multiple(get_gpu("l4"), "fp8") == 16
    with pytest.raises(UsageError):
        make_target("v100", "bf16")


def test_wave_quantization_one_tile_over_a_full_wave():
    """108 SMs: 108 tiles of 256x128 are one wave; 109 tiles need a second, mostly empty wave."""
    full = layer_cost(gemm(256 * 108, 128, 8192), A100)
    tail = layer_cost(gemm(256 * 108 + 16, 128, 8192), A100)  # still 16-aligned
    assert tail.alignment_factor == full.alignment_factor == 1.0
    assert tail.compute_s > 1.15 * full.compute_s
    assert tail.waste > full.waste + 0.1 and full.waste < 0.01


def test_misaligned_k_is_slower_than_aligned():
    aligned = layer_cost(gemm(4096, 4096, 8192), A100)
    odd = layer_cost(gemm(4096, 4096, 8190), A100)
    tier = layer_cost(gemm(4096, 4096, 8184), A100)  # a multiple of 8, not of 16
    assert odd.time_s > tier.time_s > aligned.time_s
    assert odd.speedup_if_fixed > 1.5
    assert alignment_factor({"K": 8190}, "fp16", A100) == DEFAULT_CONSTANTS.misaligned_minimum_factor.value


def test_memory_bound_gemv_ignores_alignment():
    gemv = layer_cost(gemm(1, 1000, 2048), A100)
    assert gemv.bound in ("memory", "launch") and gemv.speedup_if_fixed == 1.0


def test_padding_that_does_not_pay_is_not_counted():
    # N=17: padding to 32 nearly doubles the work of a compute-bound layer
    c = layer_cost(gemm(65536, 17, 4096), A100)
    assert c.fixed_time_s <= c.time_s


def test_calibration_table_replaces_constants(tmp_path):
    table = tmp_path / "cal.json"
    table.write_text(json.dumps({"gpu": "NVIDIA A100-SXM4-80GB", "driver": "550.54",
                                 "command": "python benchmarks/calibrate.py",
                                 "constants": {"misaligned_minimum_factor": 0.7, "gemm_efficiency": 0.9}}))
    constants, meta = load_calibration(table)
    assert constants.misaligned_minimum_factor.value == 0.7
    assert "A100" in constants.misaligned_minimum_factor.source
    assert constants.launch_overhead_s == DEFAULT_CONSTANTS.launch_overhead_s
    assert meta["driver"] == "550.54"
    calibrated = make_target("a100", "fp16", calibration=table)
    odd = gemm(4096, 4096, 8190)
    assert layer_cost(odd, calibrated).speedup_if_fixed < layer_cost(odd, A100).speedup_if_fixed
    table.write_text(json.dumps({"constants": {"warp_drive": 1}}))
    with pytest.raises(UsageError, match="warp_drive"):
        load_calibration(table)


def test_nchw_share_matches_published_measurements(tmp_path):
    """TC205's estimate for ResNet-50 FP16 at a training-size batch sits within the published
    14% (Paddle, V100) and 16% (TensorFlow) of GPU time spent on NCHW<->NHWC transposes."""
    from tclint import examples
    from tclint.config import CheckOptions
    from tclint.lint import check_model
    from tests.helpers import save

    path = save(tmp_path, examples.resnet50(batch="N", weights="external", data_path=tmp_path / "r.data"))
    report = check_model(path, CheckOptions(dims={"N": 128}, select=["TC205"]))
    (layout,) = report.findings
    assert 0.13 <= layout.share <= 0.17
