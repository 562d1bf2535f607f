"""fix_model / `tclint fix` on the architectures of issue 3, the model-zoo light models, and the CLI."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto

from tclint import examples
from tclint.cli import main
from tclint.config import CheckOptions
from tclint.errors import VerificationError
from tclint.examples import GraphBuilder
from tclint.fix import ALIGNMENT_CODES, fix_model
from tclint.lint import check_model
from tests.helpers import data_file_of

LIGHT = Path(onnx.__file__).parent / "backend" / "test" / "data" / "light"


def save(tmp_path: Path, proto: onnx.ModelProto, name: str) -> Path:
    p = tmp_path / name
    onnx.save(proto, p)
    return p


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def random_feeds(path: Path, seed: int = 7) -> dict:
    rng = np.random.default_rng(seed)
    m = onnx.load(str(path), load_external_data=False)
    inits = {i.name for i in m.graph.initializer}
    feeds = {}
    for v in m.graph.input:
        if v.name in inits:
            continue
        shape = [d.dim_value if d.HasField("dim_value") else 2 for d in v.type.tensor_type.shape.dim]
        if v.type.tensor_type.elem_type == TensorProto.INT64:
            feeds[v.name] = rng.integers(0, 50, shape).astype(np.int64)
        else:
            feeds[v.name] = rng.standard_normal(shape).astype(np.float32)
    return feeds


def ort_run(path: Path, feeds: dict) -> list[np.ndarray]:
    so = ort.SessionOptions()
    so.log_severity_level = 3
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"]).run(None, feeds)


def assert_equivalent(original: Path, fixed: Path) -> None:
    """An independent check (not fix's own verifier): new inputs, ORT CPU, allclose."""
    feeds = random_feeds(original)
    for r, g in zip(ort_run(original, feeds), ort_run(fixed, feeds)):
        assert r.shape == g.shape
        np.testing.assert_allclose(g, r, rtol=1e-5, atol=1e-5 * float(np.abs(r).max() or 1))


def alignment_findings(path: Path, **options) -> list:
    return [f for f in check_model(path, CheckOptions(**options)).findings if f.code in ALIGNMENT_CODES]


def llama_mlp_valid(**kw) -> onnx.ModelProto:
    return examples.llama_mlp(**kw)


ARCHITECTURES = {
    "squeezenet": lambda: examples.squeezenet(image=64, classes=10),
    "efficientnet": lambda: examples.efficientnet(image=64),
    "resnet": lambda: examples.resnet50(image=64, batchnorm=True, width=20, blocks=(1, 1)),
    "densenet": lambda: examples.densenet(),
    "gpt2": lambda: examples.gpt2(layers=1, hidden=64, heads=2, vocab=50257),
    "llama_mlp": lambda: llama_mlp_valid(hidden=256, ffn=2730, seq=8),
}


# --------------------------------------------------------------------------------------------
# Issue 3, "must show": every architecture
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(ARCHITECTURES))
def test_architecture_is_fully_aligned_and_equivalent(tmp_path, name):
    src = save(tmp_path, ARCHITECTURES[name](), f"{name}.onnx")
    before = digest(src)
    out = tmp_path / f"{name}.fixed.onnx"
    report = fix_model(src, out, force=True)
    assert digest(src) == before  # input never modified
    assert report.verification is not None and report.verification.ok
    assert report.changes and report.findings_before > 0
    assert alignment_findings(out) == []  # `check` on the fixed model: nothing left to align
    assert report.findings_after == 0 and not report.findings_left_on_changed
    assert_equivalent(src, out)
    # only Pad (first layer) and Slice/Gather (restores) were added
    orig_ops = [n.op_type for n in onnx.load(str(src)).graph.node]
    new_ops = [n.op_type for n in onnx.load(str(out)).graph.node]
    added = sorted(set(new_ops) - set(orig_ops)) or []
    assert set(added) <= {"Pad", "Slice", "Gather"}
    assert len(new_ops) == len(orig_ops) + len(report.inserted)


def test_squeezenet_first_layer_and_class_head(tmp_path):
    src = save(tmp_path, ARCHITECTURES["squeezenet"](), "sq.onnx")
    out = tmp_path / "sq.fixed.onnx"
    report = fix_model(src, out, force=True)
    changes = {c.node: c for c in report.changes}
    assert changes["conv"].dims_after["C"] == 4
    assert changes["classifier_conv"].dims_after["K"] == 16
    m = onnx.load(str(out))
    assert [i.name for i in m.graph.input] == ["data"]
    assert m.graph.node[0].op_type == "Pad" and m.graph.node[0].input[0] == "data"
    assert m.graph.output[0].name == "probs_in"
    assert [d.dim_value for d in m.graph.output[0].type.tensor_type.shape.dim] == [1, 10]


def test_efficientnet_squeeze_excitation_convs(tmp_path):
    src = save(tmp_path, ARCHITECTURES["efficientnet"](), "eff.onnx")
    report = fix_model(src, tmp_path / "eff.fixed.onnx", force=True)
    padded_k = {c.dims_before["K"]: c.dims_after["K"] for c in report.changes
                if c.dims_before["K"] != c.dims_after["K"]}
    assert padded_k[28] == 32 and padded_k[10] == 16 and padded_k[4] == 16
    assert padded_k[1000] == 1008
    # the SE expand convs read the padded SE channels through zero weight columns, no Slice
    assert all(n.op != "Slice" or "logits" in n.reason for n in report.inserted)


def test_resnet_residuals_and_batchnorm(tmp_path):
    src = save(tmp_path, ARCHITECTURES["resnet"](), "resnet.onnx")
    out = tmp_path / "resnet.fixed.onnx"
    report = fix_model(src, out, force=True)
    m = onnx.load(str(out))
    bns = [n for n in m.graph.node if n.op_type == "BatchNormalization"]
    inits = {i.name: onnx.numpy_helper.to_array(i) for i in m.graph.initializer}
    var_sizes = sorted({inits[n.input[4]].shape[0] for n in bns})
    assert all(s % 16 == 0 for s in var_sizes)
    fc = next(c for c in report.changes if c.node == "fc")
    assert fc.dims_after == {"K": 160, "N": 1024}  # TC104: the 1000-class head to 64
    assert sum(1 for n in m.graph.node if n.op_type == "Add") == 2  # residuals kept as they were


def test_densenet_concat_without_slices(tmp_path):
    src = save(tmp_path, ARCHITECTURES["densenet"](), "dense.onnx")
    report = fix_model(src, tmp_path / "dense.fixed.onnx", force=True)
    # one Pad for the stem and one Slice for the logits; every Concat carries its channel map
    assert sorted(n.op for n in report.inserted) == ["Pad", "Slice"]
    classifier = next(c for c in report.changes if c.node == "classifier")
    assert classifier.dims_before == {"K": 66, "N": 10} and classifier.dims_after == {"K": 80, "N": 16}


def test_gpt2_tied_lm_head(tmp_path):
    # hidden 384: wide enough that aligning the head beats slicing 8x512 logits back
    src = save(tmp_path, examples.gpt2(layers=1, hidden=384, heads=2, vocab=50257), "gpt2.onnx")
    out = tmp_path / "gpt2.fixed.onnx"
    report = fix_model(src, out, options=CheckOptions(dims={"batch": 8, "seq": 512}))
    [change] = report.changes
    assert change.node == "lm_head" and change.dims_after == {"K": 384, "N": 50304}
    m = onnx.load(str(out))
    wte = next(i for i in m.graph.initializer if i.name == "wte")
    assert list(wte.dims) == [50257, 384]  # the Gather keeps its table: the head reads a padded copy
    copy = next(i for i in m.graph.initializer if i.name == "wte_padded")
    assert list(copy.dims) == [50304, 384]
    assert m.graph.output[0].name == "logits"
    logits_shape = [d.dim_param or d.dim_value for d in m.graph.output[0].type.tensor_type.shape.dim]
    assert logits_shape == ["batch", "seq", 50257]
    assert [n.op for n in report.inserted] == ["Slice"]


def test_llama_mlp_ffn_2730(tmp_path):
    src = save(tmp_path, ARCHITECTURES["llama_mlp"](), "mlp.onnx")
    report = fix_model(src, tmp_path / "mlp.fixed.onnx")
    dims = {c.node: c.dims_after for c in report.changes}
    assert dims == {"gate_proj": {"K": 256, "N": 2736}, "up_proj": {"K": 256, "N": 2736},
                    "down_proj": {"K": 2736, "N": 256}}
    assert not report.inserted  # carried through SiLU and the gate Mul into down_proj's K
    assert report.speedup > 1.0


def test_profit_gate_reports_skipped_layers(tmp_path):
    """Without --force, layers whose padding does not pay stay as they are, with the reason;
    the padded ones have no finding left."""
    src = save(tmp_path, examples.densenet(), "dense.onnx")
    out = tmp_path / "dense.fixed.onnx"
    report = fix_model(src, out)
    assert report.changes and report.skipped
    assert all(s.reason.startswith("does not pay") or " comes from " in s.reason
               for s in report.skipped)
    after = alignment_findings(out)
    changes = {c.node: c for c in report.changes}
    for f in after:
        # whatever is left fails no gate and says why: it does not pay (the plan is judged as
        # a whole: a carried padding may leave a consumer's C misaligned when that is cheaper
        # than padding its other producers, e.g. DenseNet's concat of 24 + 16 + 16)
        assert not f.gate and f.fix_status == "no-gain" and f.fix_note.startswith(("does not pay", "C=", "K="))
        if f.path in changes and f.code in ("TC202", "TC102", "TC104"):
            c = changes[f.path]  # fix never leaves its own output dim half-padded
            assert c.dims_before.get("K" if f.code == "TC202" else "N") == \
                c.dims_after.get("K" if f.code == "TC202" else "N"), f
    assert report.estimated_time_us_after < report.estimated_time_us_before
    assert not report.left and check_model(out).gate_failed is False


# --------------------------------------------------------------------------------------------
# The model-zoo light models: weights are ConstantOfShape, declined per layer
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("path", sorted(LIGHT.glob("light_*.onnx")), ids=lambda p: p.stem)
def test_light_models_decline_computed_weights(tmp_path, path):
    out = tmp_path / "fixed.onnx"
    report = fix_model(path, out)
    assert not report.changes and not report.inserted
    assert report.skipped  # every one of them has alignment findings
    reasons = {s.reason for s in report.skipped}
    # a layer is declined for its computed weight, or its input dim comes from such a layer
    assert all(r.startswith("weight is computed by") or " comes from " in r for r in reasons)
    assert ("weight is computed by ConstantOfShape (no stored values); "
            "tclint pads stored weights only") in reasons
    assert report.verification.ok
    a, b = onnx.load(str(path)), onnx.load(str(out))
    assert [n.op_type for n in a.graph.node] == [n.op_type for n in b.graph.node]


# --------------------------------------------------------------------------------------------
# Safety
# --------------------------------------------------------------------------------------------
def div_chain() -> onnx.ModelProto:
    g = GraphBuilder("div", seed=3)
    x = g.input("x", [1, 16, 8, 8])
    y = g.conv(x, 16, 10, 1, name="c1")
    y = g.node("Div", [y, g.weight("d", (10, 1, 1), value=np.full((10, 1, 1), 2.0, np.float32))])
    g.output(g.conv(y, 10, 16, 1, name="c2"), "y", shape=[1, 16, 8, 8])
    return g.model()


def test_failed_verification_writes_nothing(tmp_path, monkeypatch, capsys):
    """Pad a Div's divisor with 0 instead of 1: padded channels become NaN, the consumer's zero
    weights do not cancel NaN, the outputs differ: exit 1, one line, no file."""
    from tclint.passes import pad

    src = save(tmp_path, div_chain(), "m.onnx")
    monkeypatch.setitem(pad._ELEMENTWISE_FILL, "Div", 0.0)
    out = tmp_path / "out.onnx"
    with pytest.raises(VerificationError, match="output 'y' differs"):
        fix_model(src, out, force=True)
    assert main(["fix", str(src), "-o", str(out), "--force"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("tclint: error:") and "max abs" in err[0]
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]


def unsorted_offset_model() -> onnx.ModelProto:
    """Issue 10 #1: Conv(16->30) -> Sigmoid -> ReduceMean(axes=[1]) -> Add(an offset with one
    element 1e4), nodes listed consumers first (onnxruntime runs it)."""
    g = GraphBuilder("unsorted", seed=21)
    x = g.input("x", [1, 16, 8, 8])
    y = g.node("Sigmoid", [g.conv(x, 16, 30, 3, name="conv")])
    y = g.node("ReduceMean", [y], axes=[1], keepdims=1)
    offset = np.zeros((1, 1, 8, 8), np.float32)
    offset[0, 0, 0, 0] = 1e4
    g.output(g.node("Add", [y, g.weight("offset", offset.shape, value=offset)]), "y", shape=[1, 1, 8, 8])
    m = g.model()
    nodes = list(m.graph.node)[::-1]
    del m.graph.node[:]
    m.graph.node.extend(nodes)
    return m


def test_unsorted_graph_is_planned_in_topological_order(tmp_path, capsys):
    src = save(tmp_path, unsorted_offset_model(), "u.onnx")
    out = tmp_path / "u2.onnx"
    assert main(["fix", str(src), "-o", str(out), "--force"]) == 0
    assert "ok" in capsys.readouterr().out
    onnx.checker.check_model(str(out))  # written topologically sorted
    feeds = {"x": np.random.default_rng(3).standard_normal((1, 16, 8, 8)).astype(np.float32)}
    ref, got = ort_run(src, feeds)[0], ort_run(out, feeds)[0]
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-6)  # every element, not max-scaled
    ops = [n.op_type for n in onnx.load(str(out)).graph.node]
    assert ops.index("Slice") < ops.index("ReduceMean")  # original channels before the mean
    # check plans the same way: the padding finding is reported and decided, no error
    report = check_model(src)
    assert any(f.code == "TC202" and f.fix_status in ("fix", "no-gain") for f in report.findings)


def test_cyclic_graph_is_refused_in_one_line(tmp_path, capsys):
    m = unsorted_offset_model()
    sig = next(n for n in m.graph.node if n.op_type == "Sigmoid")
    conv = next(n for n in m.graph.node if n.op_type == "Conv")
    conv.input[0] = sig.output[0]  # conv reads its own consumer's output
    src = save(tmp_path, m, "cycle.onnx")
    assert main(["fix", str(src), "-o", str(tmp_path / "o.onnx"), "--force"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cycle" in err[0]
    assert not (tmp_path / "o.onnx").exists()


def test_tied_embedding_keeps_negative_ids_exact(tmp_path):
    """Issue 10 #2: the padded head reads a copy; Gather's [-V, V-1] keeps its meaning."""
    proto = examples.gpt2(layers=1, hidden=64, heads=4, vocab=1000)
    src = save(tmp_path, proto, "g.onnx")
    out = tmp_path / "g2.onnx"
    report = fix_model(src, out, force=True)
    assert any(c.node == "lm_head" and c.dims_after["N"] == 1024 for c in report.changes)
    feeds = {"input_ids": np.array([[-1, -2, 3, -1000]], np.int64)}
    ref, got = ort_run(src, feeds)[0], ort_run(out, feeds)[0]
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-6)
    assert (got.argmax(-1) == ref.argmax(-1)).all()
    with pytest.raises(Exception):  # id V is still out of range
        ort_run(out, {"input_ids": np.array([[1000]], np.int64)})


def save_external(proto: onnx.ModelProto, path: Path) -> None:
    from onnx.external_data_helper import convert_model_to_external_data

    convert_model_to_external_data(proto, all_tensors_to_one_file=True,
                                   location=path.name + ".data", size_threshold=0)
    onnx.save(proto, path)


def test_external_data_in_and_out(tmp_path):
    proto = div_chain()
    src = tmp_path / "ext.onnx"
    save_external(proto, src)
    out = tmp_path / "out" / "fixed.onnx"
    out.parent.mkdir()
    assert main(["fix", str(src), "-o", str(out), "--force", "--external-data"]) == 0
    data_file_of(out)
    assert_equivalent(src, out)


def test_external_input_gets_its_own_data_file(tmp_path):
    """Without --external-data, a model read with external data is still written with its own
    data file: the output never points at the input's."""
    src_dir, out_dir = tmp_path / "in", tmp_path / "out"
    src_dir.mkdir()
    out_dir.mkdir()
    src = src_dir / "ext.onnx"
    save_external(div_chain(), src)
    out = out_dir / "fixed.onnx"
    report = fix_model(src, out, force=True)
    assert report.changes
    data = data_file_of(out)
    locations = {e.value for i in onnx.load(str(out), load_external_data=False).graph.initializer
                 for e in i.external_data if e.key == "location"}
    assert locations == {data.name}
    assert_equivalent(src, out)
    inline = out_dir / "inline.onnx"
    fix_model(src, inline, force=True, external_data=False)
    assert not [p for p in out_dir.iterdir() if p.name.startswith("inline.onnx")][1:]
    assert all(not i.external_data for i in onnx.load(str(inline)).graph.initializer)
    assert_equivalent(src, inline)


def test_missing_external_data_is_an_input_error(tmp_path, capsys):
    src = tmp_path / "ext.onnx"
    save_external(div_chain(), src)
    (tmp_path / "ext.onnx.data").unlink()
    assert main(["fix", str(src), "-o", str(tmp_path / "o.onnx")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "missing" in err[0]


# --------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------
def test_cli_table_json_and_report(tmp_path, capsys):
    src = save(tmp_path, div_chain(), "m.onnx")
    out = tmp_path / "o.onnx"
    report_file = tmp_path / "fix.json"
    assert main(["fix", str(src), "-o", str(out), "--force", "--report", str(report_file)]) == 0
    text = capsys.readouterr().out
    assert "Padded:" in text and "verification (onnxruntime CPU): ok" in text
    data = json.loads(report_file.read_text())
    assert data["output"] == str(out) and data["verification"]["ok"]
    assert {c["node"] for c in data["changes"]} == {"c1", "c2"}
    assert main(["fix", str(src), "-o", str(out), "--force", "--format", "json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["changes"][0]["before"] == {"C": 16, "K": 10, "groups": 1}
    assert data["changes"][0]["after"] == {"C": 16, "K": 16, "groups": 1}


def test_cli_dry_run_writes_nothing(tmp_path, capsys):
    src = save(tmp_path, div_chain(), "m.onnx")
    assert main(["fix", str(src), "--dry-run", "--force", "--format", "json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["dry_run"] and data["output"] is None and data["verification"] is None
    assert len(data["changes"]) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]


@pytest.mark.parametrize("argv,needle", [
    (["fix", "{src}"], "-o OUTPUT"),
    (["fix", "{dir}/nope.onnx", "-o", "{dir}/x.onnx"], "no such file"),
    (["fix", "{src}", "-o", "{src}"], "must not overwrite"),
    (["fix", "{src}", "-o", "{dir}/x.onnx", "--nhwc-inputs"], "--nhwc-inputs needs --layout nhwc"),
    (["fix", "{src}", "-o", "{dir}/x.onnx", "--dim", "batch"], "NAME=VALUE"),
    (["fix", "{src}", "-o", "{dir}/x.onnx", "--rtol", "-1"], "--rtol"),
])
def test_cli_usage_errors_are_one_line(tmp_path, capsys, argv, needle):
    src = save(tmp_path, div_chain(), "m.onnx")
    argv = [a.format(src=src, dir=tmp_path) for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and needle in err[0]


def test_cli_shape_flags_and_target(tmp_path, capsys):
    g = GraphBuilder("dyn", seed=5)
    x = g.input("x", ["batch", 16, 8, 8])
    y = g.node("Relu", [g.conv(x, 16, 12, 3, name="c1")])
    g.output(g.conv(y, 12, 16, 3, name="c2"), "y", shape=["batch", 16, 8, 8])
    src = save(tmp_path, g.model(), "dyn.onnx")
    out = tmp_path / "o.onnx"
    # TF32 on a V100-class target needs multiples of 4: 12 is fine, nothing to do
    assert main(["fix", str(src), "-o", str(out), "--arch", "v100", "--dtype", "tf32",
                 "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["changes"] == []
    assert main(["fix", str(src), "-o", str(out), "--dim", "batch=4", "--force", "--format", "json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert len(data["changes"]) == 2 and data["verification"]["ok"]
    # the bound dim is for the analysis: the written model keeps its symbolic input
    dim = onnx.load(str(out)).graph.input[0].type.tensor_type.shape.dim[0]
    assert dim.dim_param == "batch"


def test_cli_layout_nhwc(tmp_path, capsys):
    src = save(tmp_path, examples.resnet50(image=32, blocks=(1, 1)), "r.onnx")
    out = tmp_path / "r.nhwc.onnx"
    assert main(["fix", str(src), "-o", str(out), "--layout", "nhwc", "--format", "json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["layout"] == "nhwc" and data["layout_changes"]["convs_converted"] > 0
    assert data["verification"]["ok"]
    assert any(n.op_type == "NhwcConv" for n in onnx.load(str(out)).graph.node)


def test_cli_fp16_after_fix(tmp_path, capsys):
    src = save(tmp_path, div_chain(), "m.onnx")
    out = tmp_path / "m.fp16.onnx"
    assert main(["fix", str(src), "-o", str(out), "--force", "--fp16", "--format", "json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["fp16"]["dtype"] == "fp16" and data["output"] == str(out)
    m = onnx.load(str(out))
    conv_w = [i for i in m.graph.initializer if list(i.dims) == [16, 16, 1, 1]]
    assert conv_w and all(i.data_type == TensorProto.FLOAT16 for i in conv_w)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.fp16.onnx", "m.onnx"]


def test_installed_command_runs(tmp_path):
    exe = shutil.which("tclint") or str(Path(sys.executable).parent / "tclint")
    src = save(tmp_path, div_chain(), "m.onnx")
    out = tmp_path / "o.onnx"
    proc = subprocess.run([exe, "fix", str(src), "-o", str(out), "--force"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "2 layers padded" in proc.stdout
    assert_equivalent(src, out)


def test_float16_model_keeps_its_type_and_verifies_at_float16_tolerance(tmp_path):
    g = GraphBuilder("half", seed=6, dtype=np.float16)
    x = g.input("x", [1, 16, 8, 8], TensorProto.FLOAT16)
    y = g.node("Relu", [g.conv(x, 16, 12, 3, name="c1")])
    g.output(g.conv(y, 12, 16, 3, name="c2"), "y", elem=TensorProto.FLOAT16, shape=[1, 16, 8, 8])
    src = save(tmp_path, g.model(), "half.onnx")
    out = tmp_path / "half.fixed.onnx"
    report = fix_model(src, out, force=True)
    assert report.verification.ok and len(report.changes) == 2
    m = onnx.load(str(out))
    assert {i.data_type for i in m.graph.initializer if len(i.dims) == 4} == {TensorProto.FLOAT16}
    # float32 tolerance is too tight for a float16 sum taken in another order
    with pytest.raises(VerificationError):
        fix_model(src, tmp_path / "strict.onnx", force=True, rtol=1e-6, atol=0)


def test_fix_is_idempotent(tmp_path):
    src = save(tmp_path, ARCHITECTURES["densenet"](), "d.onnx")
    once, twice = tmp_path / "once.onnx", tmp_path / "twice.onnx"
    fix_model(src, once, force=True)
    report = fix_model(once, twice, force=True)
    assert not report.changes and not report.inserted and report.findings_before == 0
    assert [n.op_type for n in onnx.load(str(once)).graph.node] == \
        [n.op_type for n in onnx.load(str(twice)).graph.node]


@pytest.mark.parametrize("name", ["test_Conv2d", "test_Conv1d_pad1"])
def test_old_ir_models_keep_initializers_listed_as_inputs(tmp_path, name):
    """IR version 3 / opset <= 9 exports (initializers listed as inputs, Slice-1 and Pad-2 take
    attributes) are padded with the ops of their own opset."""
    src = LIGHT.parent / "pytorch-converted" / name / "model.onnx"
    out = tmp_path / "fixed.onnx"
    report = fix_model(src, out, force=True)
    assert report.changes and report.verification.ok
    m = onnx.load(str(out))
    assert m.ir_version < 4
    assert {i.name for i in m.graph.initializer} <= {i.name for i in m.graph.input}
    real_inputs = [i.name for i in m.graph.input if i.name not in {t.name for t in m.graph.initializer}]
    assert real_inputs == [i.name for i in onnx.load(str(src)).graph.input
                           if i.name not in {t.name for t in onnx.load(str(src)).graph.initializer}]
    for n in m.graph.node:
        if n.op_type in ("Slice", "Pad"):
            assert len(n.input) == 1  # attribute form of the old opsets
    assert_equivalent(src, out)


def test_large_bound_dims_are_for_the_cost_model_not_for_random_verification(tmp_path):
    src = save(tmp_path, examples.gpt2(layers=1, hidden=16, heads=2, vocab=50257), "lm.onnx")
    report = fix_model(src, tmp_path / "lm.fixed.onnx",
                       options=CheckOptions(dims={"batch": 8, "seq": 256}), force=True)
    assert [c.node for c in report.changes] == ["lm_head"]
    assert report.verification.ok
    assert report.notes and "symbolic dims of 1" in report.notes[0]
    assert report.changes[0].extra_flops == 2 * 8 * 256 * 16 * (50304 - 50257)


def test_nhwc_inputs_are_verified_with_transposed_data(tmp_path):
    src = save(tmp_path, examples.resnet50(image=32, blocks=(1, 1)), "r.onnx")
    out = tmp_path / "r.nhwc.onnx"
    report = fix_model(src, out, layout="nhwc", nhwc_inputs=True)
    assert report.layout_changes["inputs_nhwc"] == ["input"] or \
        report.layout_changes["inputs_nhwc"] == ("input",)
    assert report.verification.ok
    dims = [d.dim_value for d in onnx.load(str(out)).graph.input[0].type.tensor_type.shape.dim]
    assert dims == [1, 32, 32, 3]


def test_fix_exits_1_naming_what_it_leaves_when_the_gate_asks_for_advice(tmp_path, capsys):
    """Like `ruff check --fix`: fix writes what it could; findings left that fail check's gate
    (here --fail-on advice from the config: TC205, channels-last) are named with why, exit 1.
    With --layout nhwc fix fixes that one too, and check on the result agrees."""
    folder = tmp_path / "proj"
    folder.mkdir()
    (folder / "pyproject.toml").write_text('[tool.tclint]\nfail-on = "advice"\n')
    src = save(folder, examples.resnet50(image=64, width=16, blocks=(1, 1)), "r.onnx")
    out = folder / "r.fixed.onnx"
    assert main(["check", str(src)]) == 1
    capsys.readouterr()
    assert main(["fix", str(src), "-o", str(out)]) == 1
    text = capsys.readouterr().out
    assert "left that fail check's gate" in text and "TC205 (model): advice:" in text
    assert out.exists() and main(["check", str(out)]) == 1  # check agrees: TC205 is still there
    capsys.readouterr()
    nhwc = folder / "r.nhwc.onnx"
    assert main(["fix", str(src), "-o", str(nhwc), "--layout", "nhwc"]) == 0
    assert "check's gate on the result: passes" in capsys.readouterr().out
    assert main(["check", str(nhwc)]) == 0


def test_a_hot_finding_fix_cannot_pad_is_advice_by_default(tmp_path):
    """A padding finding whose weight fix may not rewrite (a graph input) is reported, ranked
    and marked why; it fails the gate only under --fail-on advice."""
    g = GraphBuilder("shared", seed=31)
    x = g.input("x", [64, 256])
    g.inputs.append(onnx.helper.make_tensor_value_info("w", TensorProto.FLOAT, [256, 1000]))
    g.inits.append(onnx.numpy_helper.from_array(np.zeros((256, 1000), np.float32), "w"))
    g.output(g.node("MatMul", [x, "w"], name="mm"), "y", shape=[64, 1000])
    src = save(tmp_path, g.model(), "m.onnx")
    report = check_model(src)
    [f] = [f for f in report.findings if f.code == "TC104"]  # N=1000 at a graph output: a vocab-sized head
    assert f.fix_status == "unsafe" and "graph input" in f.fix_note and f.hot and not f.gate
    assert not report.gate_failed
    assert check_model(src, CheckOptions(fail_on="advice")).gate_failed
