"""tclint optimize: the whole pipeline end to end on CPU, on an example CNN and transformer."""

from __future__ import annotations

import hashlib
import json
from html.parser import HTMLParser

import _bench_models as bm
import onnx
import onnxruntime as ort
import pytest

from tclint.cli import main
from tclint.config import CheckOptions
from tclint.errors import VerificationError
from tclint.optimize import STEPS, optimize_model

FAST = {"warmup": 1, "runs": 10}


@pytest.fixture(scope="module")
def cnn(tmp_path_factory):
    return bm.save(bm.small_cnn(), tmp_path_factory.mktemp("opt") / "cnn.onnx")


@pytest.fixture(scope="module")
def mlp(tmp_path_factory):
    return bm.save(bm.small_mlp(), tmp_path_factory.mktemp("opt") / "mlp.onnx")


@pytest.fixture(scope="module")
def transformer(tmp_path_factory):
    return bm.save(bm.small_transformer(), tmp_path_factory.mktemp("opt") / "tr.onnx")


def _sha(path) -> str:
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


class _Bars(HTMLParser):
    def __init__(self):
        super().__init__()
        self.bars = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "rect" and attrs.get("class") == "bar":
            self.bars.append(attrs)


def _check_outputs(out, model_path, results, *, labels):
    files = sorted(p.name for p in out.iterdir())
    assert files == ["model.opt.onnx", "report.html", "report.json"]  # and no temp leftovers
    data = json.loads((out / "report.json").read_text())
    assert data == json.loads(json.dumps(results))
    assert [s["name"] for s in data["steps"]] == list(STEPS)
    assert all(s["status"] in {"done", "skipped"} and s["seconds"] >= 0 for s in data["steps"])

    # the optimized model is FP16 inside, keeps the original's inputs/outputs, and runs
    opt = onnx.load(str(out / "model.opt.onnx"))
    onnx.checker.check_model(opt)
    assert any(i.data_type == onnx.TensorProto.FLOAT16 for i in opt.graph.initializer)
    orig = onnx.load(model_path)
    assert [i.name for i in opt.graph.input] == [i.name for i in orig.graph.input]
    assert [o.name for o in opt.graph.output] == [o.name for o in orig.graph.output]
    ort.InferenceSession(str(out / "model.opt.onnx"), providers=["CPUExecutionProvider"])

    acc = data["accuracy"]
    assert acc["passed"] and 0 < acc["max_abs_diff"] <= acc["atol"] + acc["rtol"] * 100
    assert [o["name"] for o in acc["outputs"]] == [o.name for o in orig.graph.output]

    bench = data["bench"]
    assert bench["provider"] in {"cpu", "cuda", "tensorrt"}
    assert [m["label"] for m in bench["models"]] == labels
    assert [m["precision"] for m in bench["models"]] == ["fp32", "fp16", "fp16"]
    assert all(m["agreement"]["agrees"] for m in bench["models"][1:])
    summary = data["summary"]
    lo, hi = summary["measured_speedup_ci"]
    assert lo <= summary["measured_speedup"] <= hi
    assert summary["estimated_speedup"] == pytest.approx(
        summary["estimated_time_before_s"] / summary["estimated_time_after_s"]
    )

    layers = data["layers"]
    assert layers and all(layer["estimated_before_s"] > 0 for layer in layers)
    assert {f["code"] for f in data["findings"]}  # the examples are misaligned on purpose

    parser = _Bars()
    parser.feed((out / "report.html").read_text())
    layer_bars = [b for b in parser.bars if b["data-series"].startswith("estimated")]
    expected = sum(
        1
        for layer in layers
        for k in ("estimated_before_s", "estimated_after_s")
        if layer[k] is not None
    )
    assert len(layer_bars) == expected
    assert [b["data-layer"] for b in parser.bars if b["data-series"] == "median_s"] == labels
    return data


def test_cnn_end_to_end(cnn, tmp_path):
    digest = _sha(cnn)
    seen = []
    report = optimize_model(
        cnn,
        tmp_path / "out",
        options=CheckOptions(dims={"batch": 2}),
        progress=lambda i, n, step: seen.append((i, n, step)),
        **FAST,
    )
    assert _sha(cnn) == digest  # the input is never modified
    steps = [(i, n, s) for i, n, s in seen if ":" not in s]
    assert steps == [(i + 1, len(STEPS), s) for i, s in enumerate(STEPS)]
    # the long convert step reports its own stages under its number
    assert any(i == 3 and s.startswith("convert (fixed): ") for i, _, s in seen)
    assert [i for i, _, _ in seen] == sorted(i for i, _, _ in seen)
    data = _check_outputs(
        tmp_path / "out", cnn, report.results, labels=["original fp32", "plain fp16", "fixed+fp16"]
    )
    codes = {f["code"] for f in data["findings"]}
    assert {"TC204", "TC202"} <= codes  # C=3 first layer, K=28
    assert data["target"].startswith("a100")


def test_transformer_end_to_end_cli(transformer, tmp_path, capsys):
    out = tmp_path / "out"
    rc = main(
        [
            "optimize",
            transformer,
            "-o",
            str(out),
            "--dim",
            "batch=2",
            "--runs",
            "10",
            "--warmup",
            "1",
        ]
    )
    assert rc == 0
    printed = capsys.readouterr().out
    assert (
        "report.html" in printed
        and "measured speedup" in printed
        and "accuracy vs original" in printed
    )
    data = json.loads((out / "report.json").read_text())
    _check_outputs(out, transformer, data, labels=["original fp32", "plain fp16", "fixed+fp16"])
    assert any(layer["name"] == "lm_head" for layer in data["layers"])


def test_out_of_tolerance_writes_nothing(cnn, tmp_path):
    out = tmp_path / "out"
    with pytest.raises(VerificationError, match="out of tolerance"):
        optimize_model(cnn, out, options=CheckOptions(dims={"batch": 2}), rtol=0, atol=0, **FAST)
    assert list(out.iterdir()) == []
    assert (
        main(
            [
                "optimize",
                cnn,
                "-o",
                str(out),
                "--dim",
                "batch=2",
                "--rtol",
                "0",
                "--atol",
                "0",
                "--runs",
                "2",
            ]
        )
        == 1
    )


def test_no_bench_and_bad_input(cnn, tmp_path, capsys):
    report = optimize_model(
        cnn, tmp_path / "out", options=CheckOptions(dims={"batch": 1}), bench=False
    )
    assert report.results["bench"] is None and "measured_speedup" not in report.results["summary"]
    assert [s.name for s in report.steps] == [s for s in STEPS if s != "bench"]
    assert main(["optimize", str(tmp_path / "missing.onnx"), "-o", str(tmp_path / "o")]) == 2
    assert main(["optimize", cnn, "-o", str(tmp_path / "o2")]) == 2  # symbolic batch not bound
    err = capsys.readouterr().err
    assert "--dim batch=N" in err and "Traceback" not in err
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert main(["optimize", cnn, "-o", str(blocker / "sub"), "--dim", "batch=1"]) == 2


def test_measured_layers_in_the_chart(cnn, tmp_path):
    # On CPU per-layer times are off by default (they are not GPU times); asked for, they come
    # from onnxruntime's profiler and land next to the estimates in the chart.
    default = optimize_model(cnn, tmp_path / "a", options=CheckOptions(dims={"batch": 1}), **FAST)
    if default.results["bench"]["provider"] == "cpu":
        assert all("measured_before_s" not in layer for layer in default.results["layers"])
    report = optimize_model(
        cnn, tmp_path / "b", options=CheckOptions(dims={"batch": 1}), measure_layers=True, **FAST
    )
    layers = {layer["name"]: layer for layer in report.results["layers"]}
    assert set(layers) == {"conv1", "conv2", "fc"}
    for layer in layers.values():
        assert layer["measured_before_s"] > 0 and layer["measured_after_s"] > 0
    parser = _Bars()
    parser.feed((tmp_path / "b" / "report.html").read_text())
    measured = [b for b in parser.bars if b["data-series"].startswith("measured")]
    assert len(measured) == 6
    assert {float(b["data-value"]) for b in measured} == {
        layers[n][k] for n in layers for k in ("measured_before_s", "measured_after_s")
    }


def test_fix_step_pads_and_the_report_shows_it(mlp, tmp_path):
    report = optimize_model(mlp, tmp_path / "out", options=CheckOptions(dims={"batch": 64}), **FAST)
    data = _check_outputs(
        tmp_path / "out", mlp, report.results, labels=["original fp32", "plain fp16", "fixed+fp16"]
    )
    (fix,) = [s for s in data["steps"] if s["name"] == "fix"]
    assert fix["status"] == "done"
    changed = {c["node"]: c for c in data["changes"]}
    assert changed["fc1"]["before"]["N"] == 682 and changed["fc1"]["after"]["N"] % 8 == 0
    assert (
        changed["fc2"]["before"]["K"] == 682
        and changed["fc2"]["after"]["K"] == changed["fc1"]["after"]["N"]
    )
    # the optimized model really carries the padded weights
    opt = onnx.load(str(tmp_path / "out" / "model.opt.onnx"))
    dims = {i.name: list(i.dims) for i in opt.graph.initializer}
    assert any(d == [256, changed["fc1"]["after"]["N"]] for d in dims.values())
    # fixed layers lose their alignment findings; the estimate sees the gain
    assert not any(
        f["remaining_after"]
        for f in data["findings"]
        if f["node"] in changed and f["code"] in {"TC101", "TC102"}
    )
    layers = {layer["name"]: layer for layer in data["layers"]}
    assert layers["fc1"]["estimated_after_s"] < layers["fc1"]["estimated_before_s"]
    html = (tmp_path / "out" / "report.html").read_text()
    assert "N=682" in html and f"N={changed['fc1']['after']['N']}" in html


def test_optimized_model_passes_check_with_the_same_options(tmp_path, capsys):
    """Issue 9 #6: optimize runs the chain, and `tclint check` on model.opt.onnx (same options)
    passes the gate; a model whose gate fails before (LLaMA's FFN 2730) is fixed by it."""
    from tclint import examples

    src = tmp_path / "mlp.onnx"
    onnx.save(examples.llama_mlp(hidden=256, ffn=2730, seq=64), src)
    assert main(["check", str(src), "--format", "json", "-o", str(tmp_path / "before.json")]) == 1
    out = tmp_path / "out"
    assert main(["optimize", str(src), "-o", str(out), "--no-bench"]) == 0
    text = capsys.readouterr().out
    assert f"tclint check on {out / 'model.opt.onnx'}: the gate passes" in text
    assert main(["check", str(out / "model.opt.onnx")]) == 0
    data = json.loads((out / "report.json").read_text())
    assert data["gate"] == {"failed": False, "left": []}
    assert {c["node"] for c in data["changes"]} == {"gate_proj", "up_proj", "down_proj"}


def test_optimize_takes_force_and_layout_like_fix(tmp_path, capsys):
    from tclint import examples

    src = tmp_path / "sq.onnx"
    onnx.save(examples.squeezenet(image=64, classes=10), src)
    out = tmp_path / "forced"
    assert main(["optimize", str(src), "-o", str(out), "--no-bench", "--force"]) == 0
    data = json.loads((out / "report.json").read_text())
    assert {c["node"] for c in data["changes"]} >= {"conv", "classifier_conv"}  # padded, paying or not
    out = tmp_path / "nhwc"
    assert main(["optimize", str(src), "-o", str(out), "--layout", "nhwc"]) == 0
    m = onnx.load(str(out / "model.opt.onnx"))
    assert any(n.op_type == "NhwcConv" and n.domain == "com.microsoft" for n in m.graph.node)
    data = json.loads((out / "report.json").read_text())
    assert data["accuracy"]["passed"]  # verified on CPU through the expanded graph
    capsys.readouterr()
    assert main(["check", str(out / "model.opt.onnx"), "--format", "json"]) == 0
    (report,) = json.loads(capsys.readouterr().out)["models"]
    assert "TC205" not in {f["code"] for f in report["findings"]}  # channels-last: no transposes
