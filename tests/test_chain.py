"""The chain check -> fix -> check -> convert on every real export and shipped example (issue 9).

For each model, at batch 1 and at a large batch (LLMs: batch 8, seq 512):

- ``tclint check`` on ``tclint fix``'s output (same target, same dims) passes the gate of the
  padding rules, and fix says so (nothing left);
- fix never makes the model slower by its own estimate;
- the fixed model equals the original element-wise on onnxruntime CPU (an independent run, not
  fix's own verification);
- its FP16 conversion (``tclint convert``) loads and runs (in a session made like tclint's own
  verification sessions: onnxruntime 1.31's CPU provider segfaults on an FP16 Transpose->MatMul
  fusion in every FP16 ViT, see ``tclint.verify.CPU_DISABLED_OPTIMIZERS``).

And with ``--force`` (every padding rule applied, so every export is really rewritten): the
written model passes ``onnx.checker.check_model(full_check=True)`` (no stale ``value_info``)
and ``check`` reads the padded dims back (no padding finding left on a layer fix padded).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from tclint import examples
from tclint.config import CheckOptions
from tclint.convert import convert_model
from tclint.fix import fix_model
from tclint.lint import check_model
from tclint.rules import pad_codes
from tclint.verify import cpu_session
from tests.exports import EXPORTS, export_path, feeds, params

#: the exports' position tables hold 64 positions: batch 1 runs at seq 64. (CNNs: batch 16, to
#: keep the suite fast; benchmarks/chain.py runs them at 32.)
LLM_SIZES = ({"batch": 1, "seq": 64}, {"batch": 8, "seq": 512})
CNN_SIZES = ({"batch": 1}, {"batch": 16})

#: export -> layers fix padded at the large batch (filled by test_export_chain_closes)
PADDED: dict[str, int] = {}


def _is_llm(entry: dict) -> bool:
    return "seq" in entry["symbolic_dims"]


def _sizes(entry: dict):
    return LLM_SIZES if _is_llm(entry) else CNN_SIZES


def _session(path: Path) -> ort.InferenceSession:
    so = ort.SessionOptions()
    so.log_severity_level = 3
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def _assert_elementwise_equal(got: np.ndarray, ref: np.ndarray) -> None:
    typical = float(np.percentile(np.abs(ref), 90))
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-6 + 1e-5 * typical)


def _gate(report) -> list:
    return [f for f in report.findings if f.gate]


def _chain(src: Path, out: Path, dims: dict[str, int]):
    options = CheckOptions(dims=dims)
    before = check_model(src, options)
    fixed = fix_model(src, out, options=options)
    after = check_model(out, options)
    return before, fixed, after


def _assert_chain_closes(before, fixed, after) -> None:
    assert not _gate(after), [(f.code, f.path, f.fix_note) for f in _gate(after)]
    assert not fixed.left and not fixed.gate_after
    # every finding that failed the gate before was fixed (it is not on the output any more)
    left = {(f.code, f.path) for f in after.findings}
    assert not [(f.code, f.path) for f in _gate(before) if (f.code, f.path) in left]
    assert fixed.estimated_time_us_after <= fixed.estimated_time_us_before * (1 + 1e-9)
    assert after.summary["estimated_time_us"] <= before.summary["estimated_time_us"] * (1 + 1e-6)
    assert fixed.verification is not None and fixed.verification.ok


@pytest.mark.parametrize("size", [0, 1], ids=["batch1", "large"])
@pytest.mark.parametrize("export", params())
def test_export_chain_closes(export, size, tmp_path):
    src = export_path(export["file"])
    dims = {k: v for k, v in _sizes(export)[size].items() if k in export["symbolic_dims"]}
    out = tmp_path / "fixed.onnx"
    before, fixed, after = _chain(src, out, dims)
    _assert_chain_closes(before, fixed, after)
    if size == 1:
        PADDED[export["file"]] = len(fixed.changes)
    x = feeds(export)
    _assert_elementwise_equal(_session(out).run(None, x)[0], _session(src).run(None, x)[0])
    if size == 1:  # one FP16 conversion per export: the padded, larger-batch one
        fp16 = tmp_path / "fp16.onnx"
        convert_model(out, fp16)
        (y,) = cpu_session(str(fp16)).run(None, x)
        assert y.shape == _session(src).run(None, x)[0].shape and np.isfinite(y).all()


@pytest.mark.parametrize("export", params())
def test_export_force_leaves_no_stale_annotation(export, tmp_path):
    """Every padding rule applied: the dynamo exporter's value_info for every intermediate
    (GPT-2's tied head Transpose, BERT's decoder, LLaMA's FFN) must follow the new dims."""
    src = export_path(export["file"])
    dims = {k: v for k, v in _sizes(export)[1].items() if k in export["symbolic_dims"]}
    out = tmp_path / "forced.onnx"
    report = fix_model(src, out, options=CheckOptions(dims=dims), force=True)
    vocab = {"gpt2": 50304, "bert_mlm": 30528, "llama_odd": 32064}.get(export["family"])
    if vocab:  # the heads the issue is about are really padded
        assert any(c.dims_after.get("N") == vocab for c in report.changes), report.changes
    onnx.checker.check_model(str(out), full_check=True)
    after = check_model(out, CheckOptions(dims=dims))
    changed = {c.node: c for c in report.changes}
    for f in after.findings:
        if f.code in pad_codes() and f.path in changed and f.code in ("TC102", "TC104", "TC202"):
            pytest.fail(f"{f.code} {f.path} {f.dims}: check reads the dims fix padded as misaligned")
    x = feeds(export)
    _assert_elementwise_equal(_session(out).run(None, x)[0], _session(src).run(None, x)[0])


def test_the_exports_give_fix_work_to_do():
    """Not a vacuous chain: at the large batch fix pads some exports (runs after the chain
    tests above, file order)."""
    if len(PADDED) < len(EXPORTS):
        pytest.skip("run with test_export_chain_closes")
    assert sum(1 for n in PADDED.values() if n) >= 3, PADDED


# --------------------------------------------------------------------------------------------
# The shipped examples (python -m tclint.examples NAME), small sizes
# --------------------------------------------------------------------------------------------
EXAMPLES = {
    "squeezenet": lambda: examples.squeezenet(batch="batch", image=64, classes=10),
    "efficientnet": lambda: examples.efficientnet(batch="batch", image=64),
    "densenet": lambda: examples.densenet(batch="batch"),
    "resnet50": lambda: examples.resnet50(batch="batch", image=64, batchnorm=True, width=20, blocks=(1, 1)),
    "gpt2": lambda: examples.gpt2(layers=1, hidden=64, heads=2, vocab=50257),
    "llama": lambda: examples.llama(layers=1, hidden=128, heads=4, kv_heads=2, ffn=2730, vocab=32001),
    "llama_mlp": lambda: examples.llama_mlp(hidden=256, ffn=2730, batch="batch", seq=8),
}
LLM_EXAMPLES = {"gpt2", "llama"}


def _example_feeds(path: Path) -> dict:
    rng = np.random.default_rng(5)
    m = onnx.load(str(path), load_external_data=False)
    out = {}
    for v in m.graph.input:
        dims = [d.dim_value if d.HasField("dim_value") else 2 for d in v.type.tensor_type.shape.dim]
        if v.type.tensor_type.elem_type == onnx.TensorProto.INT64:
            out[v.name] = rng.integers(-100, 100, dims).astype(np.int64)  # negative ids too
        else:
            out[v.name] = rng.standard_normal(dims).astype(np.float32)
    return out


@pytest.mark.parametrize("size", [0, 1], ids=["batch1", "large"])
@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_example_chain_closes(name, size, tmp_path):
    src = tmp_path / f"{name}.onnx"
    onnx.save(EXAMPLES[name](), src)
    dims = (LLM_SIZES if name in LLM_EXAMPLES else CNN_SIZES)[size]
    out = tmp_path / "fixed.onnx"
    before, fixed, after = _chain(src, out, dims)
    _assert_chain_closes(before, fixed, after)
    x = _example_feeds(src)
    _assert_elementwise_equal(_session(out).run(None, x)[0], _session(src).run(None, x)[0])
    if size == 1:
        fp16 = tmp_path / "fp16.onnx"
        convert_model(out, fp16)
        (y,) = cpu_session(str(fp16)).run(None, x)
        assert np.isfinite(y).all()


def test_readme_squeezenet_chain_closes(tmp_path):
    """The README's example, at its own sizes: check fails nothing fix would not fix, fix
    writes, check on the result passes."""
    from tclint.cli import main

    src = tmp_path / "sq.onnx"
    onnx.save(examples.squeezenet(), src)
    out = tmp_path / "f.onnx"
    rc_check = main(["check", str(src), "--format", "json", "-o", str(tmp_path / "r1.json")])
    assert main(["fix", str(src), "-o", str(out)]) == 0
    assert main(["check", str(out), "--format", "json", "-o", str(tmp_path / "r2.json")]) == 0
    assert rc_check in (0, 1)


@pytest.mark.parametrize("name", ["densenet", "llama_mlp", "efficientnet"])
def test_checks_gate_is_what_fix_pads(name, tmp_path):
    """One decision: every finding check fails the gate on is one fix pads (same options), and
    every padding finding check marks `fix` is padded; the rest fix leaves, with check's reason."""
    src = tmp_path / f"{name}.onnx"
    onnx.save(EXAMPLES[name](), src)
    options = CheckOptions(dims=dict(CNN_SIZES[1]))
    report = check_model(src, options)
    plan = fix_model(src, None, options=options, dry_run=True)
    padded = {c.node for c in plan.changes}
    will = [f for f in report.findings if f.fix_status == "fix"]
    assert {f.path for f in report.findings if f.gate} <= {f.path for f in will}
    for f in will:
        assert f.path in padded, (f.code, f.path)
    skipped: dict[str, list[str]] = {}
    for s in plan.skipped:
        skipped.setdefault(s.node, []).append(s.reason)
    for f in report.findings:
        if f.fix_status in ("no-gain", "unsafe") and f.code in ("TC102", "TC104", "TC202", "TC204"):
            assert f.fix_note in skipped.get(f.path, ()), (f.code, f.path, f.fix_note)


@pytest.mark.parametrize("name", ["bert_mlm_ort_optimized", "vit_dynamo", "llama_odd_legacy"])
def test_optimize_runs_the_chain_on_real_exports(name, tmp_path):
    """optimize = check -> fix -> convert -> verify (-> bench): on onnxruntime's fused BERT (no
    value_info: convert must infer types), on the ViT (onnxruntime's CPU provider segfaulted on its
    FP16 attention) and a legacy LLaMA; `check` on model.opt.onnx passes the gate."""
    from tclint.optimize import optimize_model

    e = next(x for x in EXPORTS if x["file"] == f"{name}.onnx")
    dims = {k: v for k, v in {"batch": 2, "seq": 16}.items() if k in e["symbolic_dims"]}
    report = optimize_model(export_path(e["file"]), tmp_path / "out",
                            options=CheckOptions(dims=dims), bench=False)
    assert report.results["accuracy"]["passed"]
    assert report.results["gate"] == {"failed": False, "left": []}
    assert not check_model(report.optimized_model, CheckOptions(dims=dims)).gate_failed


@pytest.mark.parametrize("name", ["resnet_dynamo", "efficientnet_dynamo", "regnet_legacy"])
def test_layout_pass_leaves_no_stale_annotation(name, tmp_path):
    """--layout nhwc rewrites conv chains to NhwcConv: the written model passes the full ONNX
    checker, check reads it (TC205 gone where the layout paid) and it verifies (through the
    expanded graph: NhwcConv has no CPU kernel). resnet_dynamo has external data."""
    e = next(x for x in EXPORTS if x["file"] == f"{name}.onnx")
    out = tmp_path / "nhwc.onnx"
    report = fix_model(export_path(e["file"]), out, options=CheckOptions(dims={"batch": 1}),
                       layout="nhwc")
    assert report.verification.ok and report.layout_changes.get("convs_converted")
    onnx.checker.check_model(str(out), full_check=True)
    after = check_model(out, CheckOptions(dims={"batch": 1}))
    assert "TC205" not in {f.code for f in after.findings} and not after.gate_failed
    assert report.estimated_time_us_after < report.estimated_time_us_before
