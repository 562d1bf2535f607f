"""One test per rule code, each on a real graph that triggers it (and a twin that does not)."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import helper

from tclint import examples
from tclint.errors import UsageError
from tclint.rules import RULES, select_rules, validate_prefixes
from tests.helpers import analyse_proto, init, model, vi


def codes(m, tmp_path, **opts):
    return [f.code for f in analyse_proto(m, tmp_path, **opts).findings]


def findings(m, tmp_path, code, **opts):
    return [f for f in analyse_proto(m, tmp_path, **opts).findings if f.code == code]


def test_registry_codes_are_unique_and_documented():
    from tclint.catalog import rule_page

    assert len({r.name for r in RULES.values()}) == len(RULES)
    for code, r in RULES.items():
        page = rule_page(code)
        assert page.startswith(f"# {code} {r.name}"), code
        for section in ("## What it does", "## Why is this bad?", "## Example", "## Use instead"):
            assert section in page, (code, section)


def test_select_ignore_prefixes():
    assert {r.code for r in select_rules(["TC2"], ["TC205"])} == {"TC201", "TC202", "TC203", "TC204"}
    assert "TC901" not in {r.code for r in select_rules(None, ["TC9"])}
    with pytest.raises(UsageError):
        validate_prefixes(["XY1"])


def test_tc101_k(tmp_path):
    f = findings(examples.single_gemm(m=256, n=256, k=2730), tmp_path, "TC101")
    assert len(f) == 1 and f[0].dims["K"] == 2730 and f[0].suggested == {"K": 2736}
    assert f[0].multiple == 16 and f[0].path == "matmul"
    assert not findings(examples.single_gemm(m=256, n=256, k=2736), tmp_path, "TC101")


def test_tc102_n_and_the_tier_per_arch(tmp_path):
    m = examples.single_gemm(m=256, n=1000, k=512, op="Gemm")
    f = findings(m, tmp_path, "TC102")
    assert f and f[0].suggested == {"N": 1008}  # 16 on A100
    assert not findings(m, tmp_path, "TC102", arch="t4")  # 8 on T4: 1000 is aligned
    assert findings(m, tmp_path, "TC102", arch="t4", strict=True)[0].multiple == 64


def test_tc103_m_is_runtime(tmp_path):
    m = model([helper.make_node("MatMul", ["x", "w"], ["y"], name="fc")],
              [vi("x", ["batch", "seq", 512])], [vi("y", None)], [init("w", (512, 512))])
    f = findings(m, tmp_path, "TC103", dims={"batch": 1, "seq": 77})
    assert f and f[0].dims["M"] == 77 and "pad_to_multiple_of=16" in f[0].fix
    assert not findings(m, tmp_path, "TC103", dims={"batch": 1, "seq": 80})


def test_tc104_vocab(tmp_path):
    m = examples.gpt2(layers=1, hidden=64, heads=2, vocab=50257)
    f = findings(m, tmp_path, "TC104", dims={"batch": 1, "seq": 64})
    assert len(f) == 1 and f[0].path == "lm_head" and f[0].suggested == {"N": 50304}
    assert not findings(examples.gpt2(layers=1, hidden=64, heads=2, vocab=50304), tmp_path, "TC104",
                        dims={"batch": 1, "seq": 64})


def test_tc105_head_dim(tmp_path):
    m = examples.gpt2(layers=1, hidden=120, heads=2, vocab=512)  # head_dim 60
    f = findings(m, tmp_path, "TC105", dims={"batch": 1, "seq": 64})
    assert {x.dims["head_dim"] for x in f} == {60}
    assert len(f) == 2  # Q.K^T (K) and P.V (N)


def test_tc110_quantization(tmp_path):
    # 129 rows of 128-row tiles: almost a whole wasted tile row, compute-bound
    m = examples.single_gemm(m=129 * 108, n=128, k=8192)
    f = findings(m, tmp_path, "TC110", quantization_threshold=0.3)
    assert f and "tile" in f[0].message
    assert not findings(examples.single_gemm(m=128 * 108, n=128, k=8192), tmp_path, "TC110", quantization_threshold=0.3)


def test_tc201_and_tc202_conv_channels(tmp_path):
    m = examples.single_conv(c=28, k=40)
    got = {f.code: f for f in analyse_proto(m, tmp_path).findings if f.path == "conv"}
    assert got["TC201"].dims == {"C": 28, "K": 40} and got["TC201"].suggested == {"C": 32}
    assert got["TC202"].suggested == {"K": 48}
    assert not {"TC201", "TC202"} & set(codes(examples.single_conv(c=32, k=64), tmp_path))


def test_tc203_grouped_per_group(tmp_path):
    m = examples.single_conv(c=48, k=48, groups=4)  # 12 per group
    f = findings(m, tmp_path, "TC203")
    assert f and f[0].suggested == {"C/g": 16, "K/g": 16}
    depthwise = examples.single_conv(c=48, k=48, groups=48)
    assert not findings(depthwise, tmp_path, "TC203")


def test_tc204_first_layer(tmp_path):
    m = examples.single_conv(c=3, k=64, pre=None, image=224)
    f = findings(m, tmp_path, "TC204")
    assert f and f[0].suggested == {"C": 4} and f[0].multiple == 4
    assert "TC201" not in codes(m, tmp_path)
    # a 3-channel conv deep in the network is TC201, not TC204
    inner = examples.single_conv(c=3, k=64)
    assert "TC204" not in codes(inner, tmp_path) and "TC201" in codes(inner, tmp_path)


def test_tc205_layout(tmp_path):
    f = findings(examples.single_conv(c=64, k=64, image=56), tmp_path, "TC205")
    assert len(f) == 1 and f[0].dims == {"convs": 2} and "nhwc" in f[0].fix


def test_tc901_unresolved(tmp_path):
    m = model([helper.make_node("MatMul", ["x", "w"], ["y"], name="fc")],
              [vi("x", ["batch", 64])], [vi("y", None)], [init("w", (64, 50))])
    a = analyse_proto(m, tmp_path)
    f = [x for x in a.findings if x.code == "TC901"]
    assert f and f[0].path == "batch" and "--dim batch=N" in f[0].fix
    # K and N come from the weight: still checked
    assert "TC102" in [x.code for x in a.findings]


def test_tc902_uncovered(tmp_path):
    m = model([helper.make_node("SecretGemm", ["x"], ["y"], domain="acme")], [vi("x", [4])], [vi("y", None)])
    m.opset_import.append(helper.make_opsetid("acme", 1))
    f = findings(m, tmp_path, "TC902")
    assert f and f[0].dims == {"nodes": 1} and f[0].op == "acme.SecretGemm"


def test_model_in_fp16_is_checked_in_fp16(tmp_path):
    m = model([helper.make_node("MatMul", ["x", "w"], ["y"], name="fc")],
              [vi("x", [64, 64], 10)], [vi("y", None, 10)], [init("w", (64, 1000), np.float16)])
    a = analyse_proto(m, tmp_path)
    assert a.target.dtype == "fp16" and a.view.layers[0].precision == "fp16"
    a8 = analyse_proto(examples.single_gemm(m=64, n=40, k=64), tmp_path, dtype="int8")
    assert a8.findings[0].multiple == 32  # 32 bytes on A100 = 32 int8 elements


def test_rule_metadata_is_the_one_list_of_fixable_codes():
    """How a rule is fixed lives in the registry: fix, the gate and the reports read it."""
    from tclint.fix import ALIGNMENT_CODES
    from tclint.rules import RULES, pad_codes

    assert pad_codes() == ALIGNMENT_CODES == {
        "TC101", "TC102", "TC104", "TC201", "TC202", "TC203", "TC204"}
    for r in RULES.values():
        assert (r.severity == "error") == bool(r.padding), r.code  # error = tclint fix pads it
        assert r.advice == (not r.padding)
    assert RULES["TC205"].fix == "layout" and RULES["TC105"].advice and RULES["TC103"].advice


def test_rules_command_says_how_each_rule_is_fixed(capsys):
    import json

    from tclint.cli import main

    assert main(["rules", "--format", "json"]) == 0
    data = {r["code"]: r for r in json.loads(capsys.readouterr().out)}
    assert data["TC204"]["padding"] == ["in"] and not data["TC204"]["advice"]
    assert data["TC205"]["fix"] == "layout" and data["TC205"]["advice"]
