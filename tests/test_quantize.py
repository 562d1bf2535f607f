"""tclint quantize on the real exports: onnxruntime's static quantizer with TensorRT's choices
(QDQ, symmetric int8, per-channel weights), the accuracy report on held-back samples, the
per-layer error ranking, exclusions, --target-cosine, and bad input.

Every quantized model is loaded in onnxruntime (CPU) and its structure read back: int8
weights with one scale per output channel and zero point 0, Q/DQ on activations with zero
point 0. The input files are hashed before and after, and their folder listed, so a run that
writes beside the user's model fails here.
"""

from __future__ import annotations

import hashlib
import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from tclint.cli import main
from tclint.cli.quantize import Progress
from tclint.quantize import output_accuracy, quantize_model
from tests.exports import BY_FILE, DIR, export_path, feeds
from tests.helpers import data_file_of

RESNET = export_path("resnet_dynamo")  # weights in resnet_dynamo.onnx.data
BERT = export_path("bert_mlm_legacy")
BERT_DECODER = "/m/cls/predictions/decoder/MatMul"  # the 30522-wide tied LM head


def _hashes(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())
            if p.is_file()}


@pytest.fixture(scope="module")
def exports_before():
    """The exports folder as it was: every run below must leave it byte for byte the same."""
    return _hashes(DIR)


def _npz(path: Path, entry: dict, seeds, **sizes) -> Path:
    samples = [feeds(entry, {"batch": 1, **sizes}, seed=s) for s in seeds]
    np.savez(path, **{k: np.stack([s[k] for s in samples]) for k in samples[0]})
    return path


def _graph(path: Path) -> onnx.GraphProto:
    m = onnx.load(str(path))
    onnx.checker.check_model(m, full_check=True)
    return m.graph


def _session(path: Path) -> ort.InferenceSession:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def _dq_weights(graph) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray | None, int]]:
    """DequantizeLinear of an initializer -> (int8 values, scale, zero point, axis), by the
    name of the consumer node and input index (``node:1`` is a weight)."""
    inits = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    producer = {o: n for n in graph.node for o in n.output}
    out = {}
    for node in graph.node:
        for k, name in enumerate(node.input):
            dq = producer.get(name)
            if dq is None or dq.op_type != "DequantizeLinear" or dq.input[0] not in inits:
                continue
            axis = next((a.i for a in dq.attribute if a.name == "axis"), 1)
            zp = inits.get(dq.input[2]) if len(dq.input) > 2 and dq.input[2] else None
            out[f"{node.name}:{k}"] = (inits[dq.input[0]], inits[dq.input[1]], zp, axis)
    return out


def _reads_dq(graph, node_name: str, index: int) -> bool:
    producer = {o: n for n in graph.node for o in n.output}
    node = next(n for n in graph.node if n.name == node_name)
    p = producer.get(node.input[index])
    return p is not None and p.op_type == "DequantizeLinear"


# --------------------------------------------------------------------------------------------
# The real exports
# --------------------------------------------------------------------------------------------
def test_resnet_with_external_data_from_a_folder_of_npz(tmp_path, exports_before):
    """ResNet export whose weights are in resnet_dynamo.onnx.data; DATA is a folder of two
    .npz files (8 + 2 samples). Every Conv/Gemm weight is int8 per channel with zero point 0,
    activations carry symmetric Q/DQ, the int8 model runs in onnxruntime, and on the held-back
    samples its logits stay close to float (measured: cosine 0.99966 on 2 held-back samples)."""
    entry = BY_FILE["resnet_dynamo.onnx"]
    data = tmp_path / "data"
    data.mkdir()
    _npz(data / "a.npz", entry, range(8))
    _npz(data / "b.npz", entry, range(8, 10))
    out = tmp_path / "out" / "resnet_int8.onnx"
    out.parent.mkdir()
    report = quantize_model(RESNET, out, calibration_data=data)

    assert report.calibration_samples == 8 and report.eval_samples == 2
    assert "2 files" in report.calibration and "held back" in report.evaluation
    assert not report.warnings
    graph = _graph(out)
    ops = [n.op_type for n in graph.node]
    assert ops.count("QuantizeLinear") == report.quantize_linear > 0
    assert ops.count("DequantizeLinear") == report.dequantize_linear > 0
    weights = _dq_weights(graph)
    convs = [n for n in graph.node if n.op_type in ("Conv", "Gemm")]
    assert len(convs) == 14
    for node in convs:
        w, scale, zp, axis = weights[f"{node.name}:1"]
        assert w.dtype == np.int8
        # one scale per output channel: Conv weight [K, C, R, S], Gemm (transB=1) weight [N, K]
        assert axis == 0 and scale.shape == (w.shape[0],) and np.all(scale > 0), node.name
        assert zp is not None and zp.dtype == np.int8 and not zp.any(), node.name
        assert _reads_dq(graph, node.name, 0), f"{node.name}: input not quantized"
    # activations: symmetric too (zero point 0 everywhere, as TensorRT requires)
    for node in graph.node:
        if node.op_type == "QuantizeLinear":
            zp = next(i for i in graph.initializer if i.name == node.input[2])
            assert zp.data_type == TensorProto.INT8 and not numpy_helper.to_array(zp).any()
    assert report.nodes_quantized == 14 and report.weights_per_channel == 14
    # TensorRT placement: Q/DQ only on the inputs of the Convs and the Gemm (not around Relu,
    # Add, MaxPool: TensorRT fuses those), so every DequantizeLinear feeds a weighted op
    assert report.placement == "tensorrt"
    producer = {o: n for n in graph.node for o in n.output}
    for node in graph.node:
        if node.op_type not in ("Conv", "Gemm", "QuantizeLinear", "DequantizeLinear"):
            assert not any(i in producer and producer[i].op_type == "DequantizeLinear"
                           for i in node.input), node.name

    (logits,) = report.outputs
    assert logits.name == "logits" and logits.cosine >= 0.9993 and logits.max_error < 0.1
    assert logits.top1 is not None and logits.top5 is not None  # 1000 classes
    # the report's figures are what onnxruntime computes on the written file
    s_float, s_int8 = _session(RESNET), _session(out)
    x = np.load(data / "a.npz")["image"][4]  # a held-back sample (samples 4 and 9 of 10)
    a, b = s_float.run(None, {"image": x})[0], s_int8.run(None, {"image": x})[0]
    cos = float(np.dot(a.ravel(), b.ravel()) / np.linalg.norm(a) / np.linalg.norm(b))
    assert cos >= 0.999

    # layers ranked by the error they add; only layers of this graph, shares add up
    assert report.layers and all(layer.node in {n.name for n in graph.node}
                                 for layer in report.layers)
    assert sum(layer.share for layer in report.layers) == pytest.approx(1.0, abs=1e-6)
    assert [layer.added for layer in report.layers] == sorted(
        (layer.added for layer in report.layers), reverse=True)
    assert any(layer.module for layer in report.layers)  # dynamo metadata -> module path
    assert sorted(p.name for p in out.parent.iterdir()) == ["resnet_int8.onnx"]
    assert _hashes(DIR) == exports_before


def test_bert_token_ids_exclusion_and_symbolic_fallback(tmp_path, exports_before, monkeypatch):
    """bert_mlm_legacy: int64 token ids and masks; onnxruntime's symbolic shape inference
    fails on it, so pre-processing falls back to the optimizer and ONNX shape inference and
    says so. The excluded LM head (30522 wide) keeps its float weight; every other MatMul
    with a weight gets int8 per channel (axis 1, the output columns). Measured: cosine
    0.99998, top-1 93.8% of 32 token positions."""
    entry = BY_FILE["bert_mlm_legacy.onnx"]
    data = _npz(tmp_path / "tokens.npz", entry, range(6), seq=16)
    out = tmp_path / "bert_int8.onnx"
    cwd = tmp_path / "cwd"  # onnxruntime's failed symbolic inference dumps files into the cwd
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    report = quantize_model(BERT, out, calibration_data=data, exclude_nodes=[BERT_DECODER],
                            holdout=0.34)
    assert report.calibration_samples == 4 and report.eval_samples == 2
    assert any("symbolic shape inference failed" in step for step in report.preprocess)
    assert "optimizer" in report.preprocess
    graph = _graph(out)
    weights = _dq_weights(graph)
    assert f"{BERT_DECODER}:1" not in weights
    decoder = next(n for n in graph.node if n.name == BERT_DECODER)
    assert decoder.input[1] in {i.name for i in graph.initializer}
    assert next(i for i in graph.initializer if i.name == decoder.input[1]).data_type == \
        TensorProto.FLOAT
    matmuls = [n for n in graph.node if n.op_type == "MatMul" and f"{n.name}:1" in weights]
    assert len(matmuls) >= 10
    for node in matmuls:
        w, scale, zp, axis = weights[f"{node.name}:1"]
        assert w.dtype == np.int8 and axis == 1 and scale.shape == (w.shape[1],)
        assert not zp.any()
    assert BERT_DECODER in report.excluded_nodes
    assert BERT_DECODER not in {layer.node for layer in report.layers}
    (logits,) = report.outputs
    assert logits.cosine >= 0.9995
    assert logits.top1 is not None and logits.top1 >= 0.75
    # runs in onnxruntime on token ids it was not calibrated on
    s = _session(out)
    sample = feeds(entry, {"batch": 1, "seq": 24}, seed=99)
    assert s.run(None, sample)[0].shape == (1, 24, 30522)
    assert list(cwd.iterdir()) == []
    assert _hashes(DIR) == exports_before


def test_onnxruntime_placement_and_exclude_op(tmp_path):
    """--placement onnxruntime (quantize_static's default op set: Q/DQ around Relu, Add,
    MaxPool too); --exclude-op Add,Gemm keeps those float; --external-data writes r.onnx's data
    file beside it (r.onnx.<token>.data, tclint/io.py)."""
    entry = BY_FILE["resnet_dynamo.onnx"]
    data = _npz(tmp_path / "d.npz", entry, range(5))
    out = tmp_path / "r.onnx"
    report = quantize_model(RESNET, out, calibration_data=data, exclude_ops=["Add", "Gemm"],
                            placement="onnxruntime", layer_report=False, external_data=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.npz", "r.onnx", data_file_of(out).name]
    _session(out)
    graph = _graph(out)
    consumers = {}
    for n in graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n.op_type)
    inits = {i.name for i in graph.initializer}
    adds = [n for n in graph.node if n.op_type == "Add"]
    (gemm,) = [n for n in graph.node if n.op_type == "Gemm"]
    assert len(adds) == 4
    for node in adds:  # may read dequantized values, but its output is not quantized again
        assert "QuantizeLinear" not in consumers.get(node.output[0], []), node.name
    assert gemm.input[1] in inits and not _reads_dq(graph, gemm.name, 1)  # float weight
    # 13 Convs and some of the Relus and the MaxPool; not the 4 Adds nor the Gemm (30 nodes)
    relus = [n for n in graph.node if n.op_type in ("Relu", "MaxPool")
             and "QuantizeLinear" in consumers.get(n.output[0], []) and _reads_dq(graph, n.name, 0)]
    assert relus and report.nodes_quantized == 13 + len(relus) <= 30 - 5
    assert report.excluded_ops == ("Add", "Gemm")
    assert all(o.cosine > 0.99 for o in report.outputs)


# --------------------------------------------------------------------------------------------
# --target-cosine, random data, methods, output formats
# --------------------------------------------------------------------------------------------
def test_target_cosine_not_met_exits_1_and_reports_each_attempt(tmp_path):
    """The real command (a subprocess, as a user runs it) with an unreachable target: a
    bounded number of attempts, each keeping more of the ranked layers float, the best one
    written, exit 1, a warning on stderr and nothing but the report on stdout."""
    data = _npz(tmp_path / "d.npz", BY_FILE["resnet_dynamo.onnx"], range(5))
    out = tmp_path / "r.onnx"
    proc = subprocess.run(
        [sys.executable, "-m", "tclint", "quantize", str(RESNET), "-o", str(out),
         "--calibration-data", str(data), "--target-cosine", "0.9999999", "--format", "json"],
        check=False, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 1, proc.stderr
    assert "not met" in proc.stderr and "Traceback" not in proc.stderr
    report = json.loads(proc.stdout)  # nothing but the report on stdout
    attempts = report["attempts"]
    assert 1 <= len(attempts) <= 5
    sizes = [len(a["excluded"]) for a in attempts]
    assert sizes == sorted(sizes) and len(set(sizes)) == len(sizes)
    assert sizes[-1] <= 14 // 2  # never more than half of the 14 int8 layers kept float
    assert report["nodes_quantized"] >= 14 - sizes[-1]
    assert report["target_met"] is False and not any(a["met"] for a in attempts)
    assert report["cosine"] >= max(a["cosine"] for a in attempts)  # the best one is written
    assert report["cosine"] == min(o["cosine"] for o in report["outputs"])
    _session(out)  # the written model loads


def test_random_calibration_warns_and_target_met_without_retry(tmp_path, capsys, caplog):
    """No DATA: 16 random calibration inputs and a loud warning; percentile calibration (a
    histogram method, whose onnxruntime code prints to stdout: kept off the JSON report)."""
    rc = main(["quantize", str(RESNET), "-o", str(tmp_path / "r.onnx"), "--target-cosine",
               "0.99", "--method", "percentile", "--format", "json"])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    report = json.loads(captured.out)
    assert report["method"] == "percentile" and report["target_met"] is True
    assert report["attempts"] == []
    assert report["calibration"] == "random (16 samples)" and report["eval_samples"] == 4
    warned = [r for r in caplog.records if r.levelname == "WARNING" and "random" in r.message]
    assert warned and warned[0].name == "tclint.quantize"
    assert any("random" in w for w in report["warnings"])


def test_table_report(tmp_path, capsys):
    entry = BY_FILE["mobilenetv3_dynamo.onnx"]
    data = _npz(tmp_path / "d.npz", entry, range(5))
    rc = main(["quantize", str(export_path("mobilenetv3_dynamo")), "-o",
               str(tmp_path / "m.onnx"), "--calibration-data", str(data), "--layers", "3"])
    out = capsys.readouterr().out
    assert rc == 0
    assert "int8 QDQ" in out and "Accuracy vs float" in out and "logits" in out
    assert "Layers adding most error" in out
    table = out.split("Layers adding most error", 1)[1].strip().splitlines()
    assert len(table) == 1 + 2 + 3  # title, header, rule, 3 layers


# --------------------------------------------------------------------------------------------
# Bad input: one line, exit 2, nothing written
# --------------------------------------------------------------------------------------------
def _bad_npz(tmp_path: Path) -> dict[str, Path]:
    entry = BY_FILE["resnet_dynamo.onnx"]
    good = feeds(entry, {"batch": 1})["image"]
    cases = {}
    (tmp_path / "not_npz.npz").write_bytes(b"not a zip file")
    cases["not_npz"] = tmp_path / "not_npz.npz"
    np.savez(tmp_path / "wrong_name.npz", pixels=good[None])
    cases["wrong_name"] = tmp_path / "wrong_name.npz"
    np.savez(tmp_path / "wrong_shape.npz", image=np.zeros((2, 1, 3, 32, 32), np.float32))
    cases["wrong_shape"] = tmp_path / "wrong_shape.npz"
    (tmp_path / "empty").mkdir()
    cases["empty_folder"] = tmp_path / "empty"
    cases["missing"] = tmp_path / "nope.npz"
    return cases


@pytest.mark.parametrize("case", ["not_npz", "wrong_name", "wrong_shape", "empty_folder",
                                  "missing"])
def test_bad_calibration_data_exits_2_with_one_line(tmp_path, capsys, case):
    data = _bad_npz(tmp_path)[case]
    out = tmp_path / "out.onnx"
    rc = main(["quantize", str(RESNET), "-o", str(out), "--calibration-data", str(data)])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2
    # progress lines (stderr is not a terminal here), then the error: one line, no traceback
    assert [line for line in err if line.startswith("tclint: error:")] == err[-1:]
    assert not any("Traceback" in line for line in err)
    assert not out.exists()


def test_bad_model_and_options_exit_2(tmp_path, capsys):
    q = tmp_path / "q.onnx"  # an already quantized model: x -> DequantizeLinear(int8 W) MatMul
    w = numpy_helper.from_array(np.ones((4, 4), np.int8), "w")
    s = numpy_helper.from_array(np.array(0.1, np.float32), "s")
    onnx.save(helper.make_model(helper.make_graph(
        [helper.make_node("DequantizeLinear", ["w", "s"], ["wf"]),
         helper.make_node("MatMul", ["x", "wf"], ["y"])], "q",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])], [w, s]),
        opset_imports=[helper.make_opsetid("", 17)]), q)
    cases = [
        [str(tmp_path / "missing.onnx"), "-o", str(tmp_path / "o.onnx")],
        [str(q), "-o", str(tmp_path / "o.onnx")],  # already quantized
        [str(RESNET), "-o", str(tmp_path / "o.onnx"), "--exclude-node", "no_such_node"],
        [str(RESNET), "-o", str(tmp_path / "o.onnx"), "--holdout", "1.5"],
        [str(RESNET), "-o", str(RESNET)],  # would overwrite the input
        [str(BERT), "-o", str(tmp_path / "o.onnx")],  # random ids need --dim seq=N
    ]
    for argv in cases:
        rc = main(["quantize", *argv])
        err = capsys.readouterr().err.strip().splitlines()
        assert rc == 2, argv
        assert err and err[-1].startswith("tclint: error:"), (argv, err)
        assert not any("Traceback" in line for line in err)
        assert not (tmp_path / "o.onnx").exists()


# --------------------------------------------------------------------------------------------
# Pure parts
# --------------------------------------------------------------------------------------------
def test_output_accuracy_topk_and_scale():
    rng = np.random.default_rng(0)
    ref = [[rng.standard_normal((4, 100)).astype(np.float32)] for _ in range(3)]
    same = [[r[0].copy()] for r in ref]
    (o,) = output_accuracy(["logits"], ref, same)
    assert o.cosine == pytest.approx(1.0) and o.top1 == 1.0 and o.top5 == 1.0 and o.max_error == 0
    # swap each row's top class with its 3rd: top-1 lost, still inside the top 5
    swapped = []
    for r in ref:
        g = r[0].copy()
        order = np.argsort(-g, axis=-1)
        rows = np.arange(g.shape[0])
        g[rows, order[:, 0]], g[rows, order[:, 2]] = g[rows, order[:, 2]], g[rows, order[:, 0]]
        swapped.append([g])
    (o,) = output_accuracy(["logits"], ref, swapped)
    assert o.top1 == 0.0 and o.top5 == 1.0 and 0 < o.max_error < 1
    # hidden states and small last axes are not class logits
    (h,) = output_accuracy(["last_hidden_state"], ref, same)
    assert h.top1 is None
    (b,) = output_accuracy(["out"], [[np.ones((2, 4), np.float32)]], [[np.ones((2, 4))]])
    assert b.top1 is None
    # integer outputs are not compared
    assert output_accuracy(["ids"], [[np.arange(3)]], [[np.arange(3)]]) == []


def test_progress_lines_in_ci_logs_are_throttled():
    stream = io.StringIO()
    progress = Progress(stream, interval=3600)
    progress("loading")
    for i in range(1, 17):
        progress(f"calibrating: sample {i} of 16")
    progress("writing x.onnx")
    progress.done()
    lines = stream.getvalue().splitlines()
    assert len(lines) == 3  # one per step, not one per sample
    assert "loading" in lines[0] and "sample 1 of 16" in lines[1] and "writing" in lines[2]
    assert "\r" not in stream.getvalue()
