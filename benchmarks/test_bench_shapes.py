"""The models' speed: misaligned shapes vs their aligned twins, FP32 and FP16, CPU and CUDA.

Two kinds of test per (case, precision, provider):
- ``test_time_*``: pytest-benchmark times one variant (original or fixed) alone; the groups put
  both variants of a case side by side in ``pytest benchmarks --benchmark-enable``.
- ``test_ab_*``: tclint's own harness runs original and fixed interleaved, checks their outputs
  agree, and records the fixed model's speedup with a bootstrap CI (``--shapes-json PATH``).

CUDA tests are marked ``gpu`` and skip cleanly when no onnxruntime CUDA session can be created.
"""

from __future__ import annotations

import onnx
import onnxruntime as ort
import pytest
from _shapes import CASES

from tclint.bench import (
    ModelSpec,
    bench_models,
    cuda_available,
    gpu_info,
    make_inputs,
    provider_list,
)
from tclint.config import CheckOptions
from tclint.lint import check_model
from tclint.specs import GPUS

CPU_CASES = [c for c in CASES if not c.gpu_only]
gpu = [
    pytest.mark.gpu,
    pytest.mark.skipif(not cuda_available(), reason="no onnxruntime CUDA session can be created"),
]
PROVIDERS = [pytest.param("cpu", id="cpu"), pytest.param("cuda", id="cuda", marks=gpu)]


def _save_pair(case, dtype, device, tmp_path):
    original, fixed = case.pair(dtype, device=device)
    paths = []
    for name, model in (("original", original), ("fixed", fixed)):
        path = tmp_path / f"{case.name}_{dtype}_{name}.onnx"
        onnx.save(model, str(path))
        paths.append(str(path))
    return paths


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("dtype", ["fp32", "fp16"])
@pytest.mark.parametrize("variant", ["original", "fixed"])
@pytest.mark.parametrize("case", CPU_CASES, ids=lambda c: c.name)
def test_time_variant(benchmark, case, variant, dtype, provider, tmp_path):
    device = "cpu" if provider == "cpu" else "cuda"
    paths = dict(zip(("original", "fixed"), _save_pair(case, dtype, device, tmp_path)))
    session = ort.InferenceSession(paths[variant], providers=provider_list(provider))
    feeds = make_inputs(session)
    benchmark.group = f"{case.name}-{dtype}-{provider}"
    benchmark.extra_info.update(
        case=case.description, variant=variant, dtype=dtype, provider=provider
    )
    outputs = benchmark(session.run, None, feeds)
    assert outputs[0].shape == tuple(session.get_outputs()[0].shape)


def _arch() -> str:
    """The GPU the cost model predicts for: this machine's when tclint.specs knows it."""
    info = gpu_info() if cuda_available() else None
    name = (info[0] if info else "").lower().replace(" ", "")
    return next((g for g in GPUS if g in name), "a100")


def predicted_speedup(paths, dtype: str, *, layout: bool = False) -> tuple[float, str]:
    """tclint's cost-model estimate of fixed over original (what the measurement checks)."""
    arch = _arch()
    options = CheckOptions(arch=arch, dtype="fp16" if dtype == "fp16" else "tf32")
    before = check_model(paths[0], options)
    if layout:
        s = before.summary
        return s["speedup_if_all_fixed"] / s["speedup_if_aligned"], arch
    after = check_model(paths[1], options)
    return before.summary["estimated_time_us"] / after.summary["estimated_time_us"], arch


def _record(report, case, dtype, provider, shape_results, paths):
    original, fixed = report.models
    predicted, arch = predicted_speedup(paths, dtype, layout=case.name == "nchw_nhwc")
    shape_results.append(
        {
            "case": case.name,
            "description": case.description,
            "rule": case.rule,
            "dtype": dtype,
            "provider": provider,
            "device": report.device,
            "onnxruntime": report.onnxruntime,
            "runs": report.runs,
            "original_median_s": original.latency.median_s,
            "fixed_median_s": fixed.latency.median_s,
            "speedup": fixed.speedup.value,
            "speedup_ci": [fixed.speedup.ci_low, fixed.speedup.ci_high],
            "predicted_speedup": predicted,
            "predicted_for": arch,
            "max_abs_diff": fixed.agreement.max_abs_diff,
        }
    )


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("dtype", ["fp32", "fp16"])
@pytest.mark.parametrize("case", CPU_CASES, ids=lambda c: c.name)
def test_ab_fixed_vs_original(case, dtype, provider, tmp_path, shape_results, request):
    device = "cpu" if provider == "cpu" else "cuda"
    runs = request.config.getoption("--shapes-runs") or (100 if provider == "cpu" else 200)
    paths = _save_pair(case, dtype, device, tmp_path)
    report = bench_models(paths, provider=provider, warmup=10, runs=runs)
    fixed = report.models[1]
    # The fixed twin computes the same outputs (zero padding), so a speedup must be reported.
    assert fixed.agreement.agrees, fixed.agreement.message
    assert fixed.agreement.max_abs_diff <= 1e-3
    assert fixed.speedup.ci_low <= fixed.speedup.value <= fixed.speedup.ci_high
    _record(report, case, dtype, provider, shape_results, paths)


@pytest.mark.gpu
@pytest.mark.skipif(not cuda_available(), reason="no onnxruntime CUDA session can be created")
@pytest.mark.parametrize("dtype", ["fp32", "fp16"])
def test_ab_nchw_vs_nhwc(dtype, tmp_path, shape_results, request):
    (case,) = [c for c in CASES if c.name == "nchw_nhwc"]
    path = _save_pair(case, dtype, "cuda", tmp_path)[0]
    runs = request.config.getoption("--shapes-runs") or 200
    report = bench_models(
        [
            ModelSpec(path, label="nchw", prefer_nhwc=False),
            ModelSpec(path, label="nhwc", prefer_nhwc=True),
        ],
        provider="cuda",
        warmup=10,
        runs=runs,
    )
    assert report.models[1].agreement.agrees, report.models[1].agreement.message
    _record(report, case, dtype, "cuda", shape_results, [path, path])
