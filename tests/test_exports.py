"""The real-export smoke net: what must hold for every file in tests/data/exports.

The exports come from torch.onnx (dynamo and legacy TorchScript exporters), torchvision and
transformers models, and onnxruntime's BERT optimizer (tests/make_exports.py). Each one loads
and runs in onnxruntime, passes the ONNX checker, and `tclint check` reads it (exit 0 or 1,
never 2) and reports the odd dims the model carries on purpose (manifest.json's ``expect``).
"""

from __future__ import annotations

import hashlib
import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from tclint.cli import main
from tests.exports import DIR, EXPORTS, export_path, families, feeds, params, shape

#: the shapes the issue measured at (LLMs: batch 8, seq 512), besides the unbound default
BOUND = {"batch": 8, "seq": 512}


def test_files_are_the_ones_the_manifest_describes():
    """Regenerate with tests/make_exports.py, never by hand: sizes and hashes must match."""
    listed = set()
    for e in EXPORTS:
        for name, rec in e["files"].items():
            data = (DIR / name).read_bytes()
            assert len(data) == rec["bytes"], name
            assert hashlib.sha256(data).hexdigest() == rec["sha256"], name
            listed.add(name)
    on_disk = {p.name for p in DIR.iterdir() if p.suffix in (".onnx", ".data")}
    assert on_disk == listed, "files not in manifest.json (or missing)"


def test_the_set_covers_what_users_bring():
    """The cases the exports exist for, read from the files themselves."""
    fams = families()
    for fam in ("gpt2", "bert_mlm", "llama_odd"):
        assert {"dynamo", "legacy"} <= {e["exporter"] for e in fams[fam]}, fam
    # external data, with an int64 tensor in the data file (where `convert` lost position_ids)
    bert = onnx.load(str(export_path("bert_mlm_dynamo")), load_external_data=False)
    external = {t.name: t.data_type for t in bert.graph.initializer
                if t.data_location == onnx.TensorProto.EXTERNAL}
    assert external.get("m.bert.embeddings.position_ids") == onnx.TensorProto.INT64
    cnn = onnx.load(str(export_path("resnet_dynamo")), load_external_data=False)
    assert any(t.data_location == onnx.TensorProto.EXTERNAL for t in cnn.graph.initializer)
    # onnxruntime's fused BERT ops
    opt = onnx.load(str(export_path("bert_mlm_ort_optimized")), load_external_data=False)
    fused = {n.op_type for n in opt.graph.node if n.domain == "com.microsoft"}
    assert {"Attention", "SkipLayerNormalization"} <= fused
    # legacy node names are module paths
    legacy = onnx.load(str(export_path("bert_mlm_legacy")), load_external_data=False)
    assert "/m/cls/predictions/decoder/MatMul" in {n.name for n in legacy.graph.node}


def _session(export):
    return ort.InferenceSession(str(export_path(export["file"])),
                                providers=["CPUExecutionProvider"])


@pytest.mark.parametrize("export", params())
def test_runs_on_onnxruntime_cpu(export):
    (out,) = _session(export).run(None, feeds(export))
    assert out.shape == shape(export["outputs"][0])
    assert np.isfinite(out).all()
    assert out.std() > 1e-3, "degenerate model: outputs do not depend on the weights"


@pytest.mark.parametrize("family", sorted(f for f, es in families().items() if len(es) > 1))
def test_exports_of_one_model_compute_the_same(family):
    """dynamo, legacy and the ORT-optimized file are the same weights: same logits."""
    exports = families()[family]
    outs = {}
    for e in exports:
        outs[e["file"]] = _session(e).run(None, feeds(exports[0]))[0]
    first, *rest = outs
    for name in rest:
        np.testing.assert_allclose(outs[name], outs[first], rtol=1e-4, atol=1e-5, err_msg=name)


@pytest.mark.parametrize("export", params())
def test_onnx_checker_full(export):
    onnx.checker.check_model(str(export_path(export["file"])), full_check=True)


def _check(path, tmp_path, dims: dict[str, int] | None = None):
    out = tmp_path / "report.json"
    argv = ["check", str(path), "--format", "json", "-o", str(out)]
    for name, value in (dims or {}).items():
        argv += ["--dim", f"{name}={value}"]
    rc = main(argv)
    assert rc in (0, 1), f"tclint check exited {rc} on {path.name}"
    (report,) = json.loads(out.read_text())["models"]
    return rc, report


def _matches(finding: dict, want: dict) -> bool:
    return finding["code"] == want["code"] and all(
        finding["dims"].get(k) == v for k, v in want["dims"].items())


@pytest.mark.parametrize("bound", [False, True], ids=["unbound", "bound"])
@pytest.mark.parametrize("export", params())
def test_check_reports_the_odd_dims(export, bound, tmp_path):
    dims = {d: BOUND[d] for d in export["symbolic_dims"]} if bound else None
    rc, report = _check(export_path(export["file"]), tmp_path, dims)
    findings = report["findings"]
    for want in export["expect"]:
        assert any(_matches(f, want) for f in findings), (
            f"expected {want['code']} {want['dims']} ({want['why']}); got "
            f"{sorted({(f['code'], json.dumps(f['dims'])) for f in findings})}")
    if not export["expect"]:  # the aligned model: nothing to fix, gate passes
        assert not [f for f in findings if f["severity"] == "error"]
        assert rc == 0
    if bound:  # naming the dims resolves every layer
        assert report["summary"]["unresolved_dims"] == {}


def _dynamo_names(export):
    if export["exporter"] != "dynamo":
        return ()
    return pytest.mark.xfail(strict=True, reason=(
        "dynamo exports name nodes node_linear_7 / node_Conv_194; the module path "
        "(m.lm_head, conv1) is only in each node's metadata_props (namespace, "
        "pkg.torch.onnx.name_scopes), which tclint's findings do not use"))


@pytest.mark.parametrize("export", params(lambda e: any("node" in w for w in e["expect"]),
                                          marks=_dynamo_names))
def test_findings_name_the_module(export, tmp_path):
    """A finding points back at the PyTorch module (lm_head, cls.predictions.decoder, conv1)."""
    _, report = _check(export_path(export["file"]), tmp_path)
    for want in export["expect"]:
        if "node" not in want:
            continue
        nodes = [f["node"] for f in report["findings"] if _matches(f, want)]
        assert any(want["node"] in n for n in nodes), (
            f"{want['code']} {want['dims']} reported at {nodes}, not at {want['node']}")
