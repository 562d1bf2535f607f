"""Real exported architectures give the right answers (issue 2's "must show")."""

from __future__ import annotations

import pytest

from tclint import examples
from tclint.config import CheckOptions
from tclint.lint import check_model
from tests.helpers import onnx_test_data, save

ALIGNMENT = {"TC101", "TC102", "TC103", "TC104", "TC105", "TC201", "TC202", "TC203", "TC204"}


def _check(tmp_path, proto, name="m.onnx", **opts):
    return check_model(save(tmp_path, proto, name), CheckOptions(**opts))


@pytest.mark.parametrize("batchnorm", [False, True])
def test_resnet50_stem_is_reported_and_says_why_it_does_not_fail(tmp_path, batchnorm):
    """Issue 9: the stem's TC204 was HOT by its share of time while fix declined it. One
    decision now: padding it does not pay at batch 1 (the in-graph Pad costs more than the C=4
    kernels save), so it is reported with the reason and the batch from which it pays, and the
    gate passes; the only hot finding is TC205 (advice: channels-last)."""
    report = _check(tmp_path, examples.resnet50(batchnorm=batchnorm))
    [stem] = [f for f in report.findings if f.code == "TC204"]
    assert stem.dims["C"] == 3 and stem.fix_status == "no-gain" and not stem.hot and not stem.gate
    assert stem.fix_note.startswith("does not pay at batch 1") and stem.pays_from > 1
    head = [f for f in report.findings if f.path == "fc"]
    assert head and not any(f.hot for f in head)
    assert head[0].code == "TC104" and head[0].dims["N"] == 1000
    assert [f.code for f in report.findings if f.hot] == ["TC205"]
    assert not report.gate_failed


def test_resnet50_larger_batch_the_stem_pays_but_is_not_hot(tmp_path):
    """At batch 32 the Pad is paid for: fix pads the stem (a positive net saving, well under
    1% of the time), so it is fixable and not hot, and the gate passes either way."""
    report = _check(tmp_path, examples.resnet50(batch="N"), dims={"N": 32})
    [stem] = [f for f in report.findings if f.code == "TC204"]
    assert stem.fix_status == "fix" and 0 < stem.saving < 0.01 and not stem.hot
    assert not any(f.hot for f in report.findings if f.code in ALIGNMENT)
    assert not report.gate_failed
    assert not any(f.hot for f in report.findings if f.path == "fc")


def test_gpt2_lm_head_is_the_top_hot_finding(tmp_path):
    proto = examples.gpt2(layers=12, weights="external", data_path=tmp_path / "gpt2.onnx.data")
    report = _check(tmp_path, proto, "gpt2.onnx", dims={"batch": 1, "seq": 1024})
    top = report.findings[0]
    assert (top.code, top.path, top.dims["N"], top.hot) == ("TC104", "lm_head", 50257, True)
    assert top.suggested == {"N": 50304}
    assert top.speedup > 1.1


def test_llama_shapes_have_no_gemm_alignment_findings(tmp_path):
    proto = examples.llama(layers=4, hidden=2048, heads=32, kv_heads=4, ffn=5632, vocab=32000,
                           weights="external", data_path=tmp_path / "llama.onnx.data")
    report = _check(tmp_path, proto, "llama.onnx", dims={"batch": 1, "seq": 512})
    assert not [f for f in report.findings if f.code in ALIGNMENT]
    assert report.summary["layers"] == 4 * 9 + 1
    assert not report.gate_failed


def test_llama_ffn_2730_is_flagged(tmp_path):
    report = _check(tmp_path, examples.llama_mlp(ffn=2730, seq=512))
    got = {(f.code, f.path) for f in report.findings}
    assert {("TC102", "gate_proj"), ("TC102", "up_proj"), ("TC101", "down_proj")} <= got


@pytest.mark.parametrize("name", ["squeezenet", "efficientnet", "densenet"])
def test_cnn_styles_report_channel_findings(tmp_path, name):
    report = _check(tmp_path, examples.BUILDERS[name](), f"{name}.onnx")
    codes = {f.code for f in report.findings}
    assert "TC204" in codes
    if name != "squeezenet":
        assert codes & {"TC201", "TC202", "TC101", "TC102"}


def test_model_zoo_light_models(tmp_path):
    """The CNNs shipped in the onnx wheel lint, each with its stem flagged."""
    folder = onnx_test_data() / "light"
    models = sorted(folder.glob("light_*.onnx"))
    assert len(models) >= 8
    for path in models:
        report = check_model(path, CheckOptions())
        assert report.summary["layers"] > 0, path.name
        assert not report.summary["uncovered_ops"], path.name
        codes = {f.code for f in report.findings}
        assert "TC204" in codes, path.name
