"""tclint bench: end to end on onnxruntime CPU with real (small) models."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import _bench_models as bm
import numpy as np
import pytest

from tclint.bench import (
    ModelSpec,
    bench_models,
    bootstrap_speedup,
    compare_outputs,
    cuda_available,
    format_json,
    format_table,
    resolve_provider,
)
from tclint.cli import main
from tclint.errors import InputError, UsageError

ROOT = Path(__file__).resolve().parents[1]
FAST = {"warmup": 2, "runs": 15}


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    d = tmp_path_factory.mktemp("bench_models")
    cnn = bm.small_cnn()
    tr = bm.small_transformer()
    return {
        "cnn": bm.save(cnn, d / "cnn.onnx"),
        "cnn_copy": bm.save(cnn, d / "cnn_copy.onnx"),
        "cnn_other": bm.save(bm.small_cnn(seed=7), d / "cnn_other.onnx"),
        "cnn_fp16": bm.save(bm.to_fp16(cnn), d / "cnn_fp16.onnx"),
        "tr": bm.save(tr, d / "tr.onnx"),
        "tr_fp16": bm.save(bm.to_fp16(tr), d / "tr_fp16.onnx"),
        "tr_other": bm.save(bm.small_transformer(seed=5), d / "tr_other.onnx"),
    }


def _check_report_dict(data: dict, n_models: int, *, runs: int, batch: int) -> None:
    assert data["provider"] in {"cpu", "cuda", "tensorrt"}
    assert data["provider_note"].startswith(data["provider"])
    assert isinstance(data["providers_used"], list) and data["providers_used"]
    assert data["runs"] == runs and data["batch"] == batch
    assert data["interleaved"] is (n_models > 1)
    assert len(data["models"]) == n_models
    for i, m in enumerate(data["models"]):
        lat = m["latency"]
        assert 0 < lat["min_s"] <= lat["median_s"] <= lat["p90_s"] <= lat["p99_s"] <= lat["max_s"]
        assert m["throughput"] == pytest.approx(batch / lat["median_s"])
        assert m["precision"] in {"fp32", "fp16", "bf16"}
        if i == 0:
            assert m["agreement"] is None and m["speedup"] is None
        else:
            a = m["agreement"]
            assert isinstance(a["agrees"], bool) and a["max_abs_diff"] >= 0
            if a["agrees"]:
                s = m["speedup"]
                assert s["ci_low"] <= s["value"] <= s["ci_high"] and s["confidence"] == 0.95
            else:
                assert m["speedup"] is None and "outputs differ" in m["note"]


def test_cnn_end_to_end_cpu(models):
    report = bench_models(
        [models["cnn"], models["cnn_copy"], models["cnn_fp16"]],
        provider="cpu",
        dims={"batch": 4},
        **FAST,
    )
    assert report.provider == "cpu" and report.providers_used == ("CPUExecutionProvider",)
    assert report.io_binding is False
    assert [i.shape for i in report.inputs] == [(4, 3, 32, 32)]
    data = json.loads(format_json(report))
    _check_report_dict(data, 3, runs=15, batch=4)
    same, fp16 = report.models[1], report.models[2]
    # The same weights agree exactly; the FP16 copy within the FP16 tolerance (looser than FP32's).
    assert same.agreement.agrees and same.agreement.max_abs_diff == 0.0
    assert fp16.precision == "fp16" and fp16.agreement.agrees
    assert 0 < fp16.agreement.max_abs_diff and fp16.agreement.rtol > same.agreement.rtol
    assert all(m.peak_memory_bytes is None for m in report.models)  # no GPU memory on CPU
    assert len(same.samples_s) == 15


def test_transformer_end_to_end_cpu(models):
    report = bench_models([models["tr"], models["tr_fp16"]], batch=3, **FAST)
    if not cuda_available():
        assert report.provider == "cpu" and "no CUDA session" in report.provider_note
    # batch binds the symbolic leading dim; token ids stay below the embedding table's size
    assert report.inputs[0].shape == (3, 16) and report.inputs[0].dtype == "int64"
    _check_report_dict(json.loads(format_json(report)), 2, runs=15, batch=3)
    assert report.models[1].agreement.agrees and report.models[1].speedup is not None


def test_different_weights_get_no_speedup(models):
    report = bench_models(
        [models["tr"], models["tr_other"], models["tr_fp16"]], dims={"batch": 2}, **FAST
    )
    other = report.models[1]
    assert not other.agreement.agrees
    assert other.speedup is None and other.agreement.worst_output == "logits"
    assert report.models[2].speedup is not None  # the agreeing model still gets its speedup
    table = format_table(report)
    assert "NO (max diff" in table and "no speedup reported" in table


def test_npz_inputs_are_used(models, tmp_path):
    x = np.random.default_rng(3).standard_normal((2, 3, 32, 32)).astype(np.float32)
    np.savez(tmp_path / "in.npz", image=x)
    report = bench_models([models["cnn"]], inputs_npz=tmp_path / "in.npz", **FAST)
    assert report.inputs[0].source == "npz" and report.inputs[0].shape == (2, 3, 32, 32)
    assert report.batch == 2  # from the leading dim when --batch is not given
    np.savez(
        tmp_path / "stacked.npz", image=np.stack([x, 2 * x, 3 * x])
    )  # convert's samples format
    stacked = bench_models([models["cnn"]], inputs_npz=tmp_path / "stacked.npz", **FAST)
    assert (
        stacked.inputs[0].shape == (2, 3, 32, 32)
        and stacked.inputs[0].source == "npz (sample 1 of 3)"
    )
    np.savez(tmp_path / "rank.npz", image=x[0])
    with pytest.raises(InputError, match="rank"):
        bench_models([models["cnn"]], inputs_npz=tmp_path / "rank.npz", **FAST)
    np.savez(tmp_path / "bad.npz", wrong=x)
    with pytest.raises(InputError, match="missing inputs"):
        bench_models([models["cnn"]], inputs_npz=tmp_path / "bad.npz", **FAST)


def test_dim_errors(models):
    with pytest.raises(InputError, match="--dim batch=N"):
        bench_models([models["cnn"]], **FAST)
    with pytest.raises(InputError, match="conflicts"):
        bench_models([models["cnn"]], input_shapes={"image": (1, 4, 32, 32)}, **FAST)
    with pytest.raises(InputError, match="unknown input"):
        bench_models([models["cnn"]], input_shapes={"img": (1, 3, 32, 32)}, **FAST)
    with pytest.raises(InputError, match="share inputs"):
        bench_models([models["cnn"], models["tr"]], dims={"batch": 1}, **FAST)


def test_bootstrap_speedup_from_real_samples(models):
    # Real interleaved samples of one model against itself: the CI must contain 1.
    report = bench_models([models["cnn"], models["cnn_copy"]], dims={"batch": 1}, warmup=2, runs=40)
    s = report.models[1].speedup
    assert s.ci_low <= s.value <= s.ci_high
    ref, cand = report.models[0].samples_s, report.models[1].samples_s
    assert s.value == pytest.approx(np.median(ref) / np.median(cand))
    # A candidate that takes exactly half the time of each paired run is 2x, with a tight interval.
    half = bootstrap_speedup(ref, [t / 2 for t in ref])
    assert (
        half.value == pytest.approx(2.0)
        and half.ci_low == pytest.approx(2.0)
        and half.ci_high == pytest.approx(2.0)
    )
    noisy = bootstrap_speedup(ref, [t / 2 * (1 + 0.3 * math.sin(i)) for i, t in enumerate(ref)])
    assert noisy.ci_low < noisy.ci_high


def test_compare_outputs_shapes_and_scale():
    ref = {"y": np.array([100.0, 1.0], np.float32)}
    # 0.05 off on a 100-scale output is inside 1e-3 relative to the output's scale
    assert compare_outputs(
        ref, {"y": np.array([100.05, 1.0], np.float32)}, rtol=1e-3, atol=0
    ).agrees
    assert not compare_outputs(
        ref, {"y": np.array([100.5, 1.0], np.float32)}, rtol=1e-3, atol=0
    ).agrees
    bad = compare_outputs(ref, {"y": np.zeros(3, np.float32)}, rtol=1, atol=1)
    assert not bad.agrees and "shape" in bad.message
    nan = compare_outputs(ref, {"y": np.array([np.nan, 1.0], np.float32)}, rtol=1, atol=1)
    assert not nan.agrees and "non-finite" in nan.message


def test_per_model_options_and_labels(models):
    report = bench_models(
        [
            ModelSpec(models["cnn"], label="nchw"),
            ModelSpec(models["cnn"], label="nhwc", prefer_nhwc=True),
        ],
        dims={"batch": 1},
        **FAST,
    )
    assert [m.label for m in report.models] == ["nchw", "nhwc"]


@pytest.mark.skipif(cuda_available(), reason="this machine has CUDA")
def test_cuda_requested_without_gpu_is_a_usage_error():
    assert resolve_provider(None)[0] == "cpu"
    with pytest.raises(UsageError, match="CUDA session"):
        resolve_provider("cuda")
    with pytest.raises(UsageError, match="TensorRT session"):
        resolve_provider("tensorrt")
    with pytest.raises(UsageError, match="unknown provider"):
        resolve_provider("rocm")
    assert main(["bench", "x.onnx", "--provider", "cuda"]) == 2


def test_cli_json_and_output_file(models, tmp_path, capsys):
    out = tmp_path / "bench.json"
    rc = main(
        [
            "bench",
            models["cnn"],
            models["cnn_other"],
            "--input-shape",
            "image:[2,3,32,32]",
            "--warmup",
            "1",
            "--runs",
            "10",
            "--format",
            "json",
            "-o",
            str(out),
        ]
    )
    assert rc == 0
    printed = json.loads(capsys.readouterr().out)
    written = json.loads(out.read_text())
    _check_report_dict(printed, 2, runs=10, batch=2)
    assert len(written["models"][0]["samples_s"]) == 10  # the file keeps the raw samples
    assert printed["models"][1]["speedup"] is None


def test_cli_table_and_errors(models, capsys):
    assert main(["bench", models["cnn"], "--dim", "batch=2", "--runs", "5", "--warmup", "0"]) == 0
    out = capsys.readouterr().out
    assert "provider: " in out and "median ms" in out and "cnn.onnx" in out
    assert main(["bench", models["cnn"], "--dim", "batch=x"]) == 2
    assert main(["bench", models["cnn"], "--input-shape", "image"]) == 2
    assert (
        main(["bench", str(Path(models["cnn"]).with_name("missing.onnx")), "--dim", "batch=1"]) == 2
    )
    err = capsys.readouterr().err
    assert err.count("tclint: error:") == 3 and "Traceback" not in err


def test_installed_command(models):
    exe = shutil.which("tclint") or str(Path(sys.executable).with_name("tclint"))
    proc = subprocess.run(
        [exe, "bench", models["tr"], "--dim", "batch=1", "--runs", "5", "--format", "json"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["models"][0]["label"] == "tr.onnx"
    assert "libcublas" not in proc.stderr  # the CUDA probe stays quiet on machines without a GPU


@pytest.mark.skipif(cuda_available(), reason="this machine has CUDA: the GPU tests run instead")
def test_gpu_tests_skip_cleanly_without_cuda():
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-m", "gpu", "-p", "no:cacheprovider", __file__],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (
        "1 skipped" in proc.stdout
        and "passed" not in proc.stdout
        and "error" not in proc.stdout.lower()
    )


@pytest.mark.gpu
@pytest.mark.skipif(not cuda_available(), reason="no onnxruntime CUDA session can be created")
def test_cuda_io_binding_and_memory(models):
    report = bench_models([models["cnn"], models["cnn_fp16"]], dims={"batch": 8}, **FAST)
    assert report.provider == "cuda" and report.io_binding
    assert "CUDAExecutionProvider" in report.providers_used
    assert report.models[0].peak_memory_bytes is not None
    assert report.models[1].agreement.agrees


# --------------------------------------------------------------------------------------------
# benchmarks/calibrate.py: the plumbing (the real sweep needs a GPU)
# --------------------------------------------------------------------------------------------
CALIBRATE = ROOT / "benchmarks" / "calibrate.py"


@pytest.mark.skipif(cuda_available(), reason="this machine has CUDA")
def test_calibrate_refuses_cpu(tmp_path):
    proc = subprocess.run(
        [sys.executable, str(CALIBRATE), "--out", str(tmp_path / "c.json")],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "calibration measures a GPU" in proc.stderr
    assert not (tmp_path / "c.json").exists()


def test_calibrate_table_loads_into_the_cost_model(tmp_path):
    from tclint.specs import DEFAULT_CONSTANTS, load_calibration

    out = tmp_path / "c.json"
    proc = subprocess.run(
        [
            sys.executable,
            str(CALIBRATE),
            "--out",
            str(out),
            "--allow-cpu",
            "--sizes",
            "64,128",
            "--runs",
            "3",
            "--warmup",
            "1",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    data = json.loads(out.read_text())
    assert {"gpu", "driver", "command", "constants"} <= set(data)
    if not cuda_available():
        assert data["gpu"].startswith("cpu") and data["provider"] == "cpu"
        assert "gemm_efficiency" not in data["constants"]  # no GPU peak to compare with
    assert "--allow-cpu" in data["command"]
    constants, meta = load_calibration(out)
    measured = data["constants"]
    assert {"misaligned_minimum_factor", "conv_c3_factor", "launch_overhead_s"} <= set(measured)
    for name, value in measured.items():
        assert getattr(constants, name).value == value and value >= 0
        assert getattr(constants, name).source.startswith("measured: ")
    assert (
        constants.gemm_efficiency == DEFAULT_CONSTANTS.gemm_efficiency
        or "gemm_efficiency" in measured
    )
    gemms = [m for m in data["measurements"] if m["kind"] == "gemm"]
    assert {(m["m"], m["k"]) for m in gemms} >= {(64, 63), (128, 127), (64, 64)}
    assert meta["driver"] == data["driver"]


def test_profile_layers_names_every_node(models):
    from tclint.bench import profile_layers

    times = profile_layers(models["cnn"], dims={"batch": 2}, warmup=1, runs=3)
    nodes = [n.name for n in bm.small_cnn().graph.node]
    assert sorted(times) == sorted(nodes)  # optimizations off: nothing fused away or renamed
    assert all(t > 0 for t in times.values())
    assert max(times, key=times.get) in {"conv1", "conv2"}  # the convs dominate this CNN


def test_runtime_failure_is_one_line(tmp_path, capsys):
    from onnx import TensorProto, helper, numpy_helper

    graph = helper.make_graph(
        [helper.make_node("Reshape", ["x", "shape"], ["y"])],
        "bad_reshape",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3, 5])],
        [numpy_helper.from_array(np.array([3, 5], np.int64), "shape")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = bm.save(model, tmp_path / "bad.onnx")
    for warmup in (0, 2):
        with pytest.raises(InputError, match="failed to run"):
            bench_models([path], dims={"batch": 2}, warmup=warmup, runs=2)
    assert main(["bench", path, "--dim", "batch=2", "--warmup", "0"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("tclint: error:") and err.count("\n") == 1
