"""From a finding back to the PyTorch code: tclint.source and tclint.advice on the real exports.

Every layer is found the way `check` finds it (tclint.lint.analyse: the same findings, paths and
nodes a report will carry); the expected modules are PyTorch's own names for them, read from
tests/data/exports/manifest.json where it names them.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import onnx_ir as ir
import pytest

from tclint import examples
from tclint.advice import ADVICE, HF_CONFIG_FIELDS, advise, find_advice
from tclint.config import CheckOptions
from tclint.lint import analyse
from tclint.load import load_model
from tclint.source import (
    NO_SOURCE,
    REWRITE_RULE,
    Source,
    SourceMap,
    _owner,
    frame_under,
    is_framework_file,
    legacy_module,
    parse_stack_trace,
    source_of,
)
from tests.exports import EXPORTS, export_path

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def checked():
    """export stem -> (analysis, SourceMap), each export linted once per module."""
    cache: dict = {}

    def get(stem: str):
        if stem not in cache:
            model = load_model(export_path(stem))
            a = analyse(model, CheckOptions(), model_name=f"{stem}.onnx")
            cache[stem] = (a, SourceMap(model, a.view))
        return cache[stem]

    return get


def _finding(checked, stem: str, code: str, **dims):
    a, sources = checked(stem)
    hits = [f for f in a.findings
            if f.code == code and all(f.dims.get(k) == v for k, v in dims.items())]
    assert hits, f"{stem}: no {code} {dims} in {[(f.code, f.dims) for f in a.findings]}"
    return hits, sources


# --------------------------------------------------------------------------------------------
# dynamo exports: module, class, file:line from the node metadata
# --------------------------------------------------------------------------------------------
def test_gpt2_dynamo_lm_head_names_module_class_file_and_line(checked):
    (f,), sources = _finding(checked, "gpt2_dynamo", "TC104", N=50257)
    s = sources.for_path(f.path)
    assert f.path == "node_linear"  # what the report shows today: the exporter's node name
    assert s.module == "m.lm_head"
    assert s.cls == "torch.nn.modules.linear.Linear"
    assert s.weight == "m.lm_head.weight" and s.weight_owner == "m.lm_head"  # the tied weight
    assert s.classes[1] == "transformers.models.gpt2.modeling_gpt2.GPT2LMHeadModel"
    # the call in model code, not nn.Linear's own F.linear line in torch
    assert s.file.endswith("transformers/models/gpt2/modeling_gpt2.py")
    frame = next(fr for fr in s.frames if fr.file == s.file and fr.line == s.line)
    assert frame.code == "logits = self.lm_head(hidden_states)"
    assert s.frames[-1].file.endswith("torch/nn/modules/linear.py")  # all frames kept
    assert s.frames[0].file.endswith("tests/make_exports.py")
    assert s.to_dict() == {"module": "m.lm_head", "class": "torch.nn.modules.linear.Linear",
                           "file": s.file, "line": s.line, "weight": "m.lm_head.weight"}


def test_gpt2_dynamo_conv1d_call_site_skips_transformers_generic_layer(checked):
    """GPT-2's Conv1D lives in transformers/pytorch_utils.py: the line is where the model calls it."""
    a, sources = checked("gpt2_dynamo")
    layer = next(lay for lay in a.view.layers if lay.op == "Gemm" and lay.n == 48)  # c_attn
    s = sources.node(layer.node)
    assert s.module == "m.transformer.h.0.attn.c_attn"
    assert s.cls == "transformers.pytorch_utils.Conv1D"
    assert s.file.endswith("modeling_gpt2.py")
    frame = next(fr for fr in s.frames if fr.line == s.line and fr.file == s.file)
    assert "self.c_attn(hidden_states)" in frame.code


def test_bert_dynamo_decoder(checked):
    (f,), sources = _finding(checked, "bert_mlm_dynamo", "TC104", N=30522)
    s = sources.for_path(f.path)
    assert s.module == "m.cls.predictions.decoder"
    assert s.file.endswith("transformers/models/bert/modeling_bert.py") and s.line > 0


def test_fused_conv_bn_is_the_conv_module_not_the_batchnorm(checked):
    """The exporter folds bn1 into conv1 and keeps bn1's metadata: the weight names conv1."""
    (f,), sources = _finding(checked, "resnet_dynamo", "TC204", C=3)
    node = sources.node_at(f.path)
    assert "FuseBatchNormIntoConv" in node.metadata_props[REWRITE_RULE]
    assert "bn1" in node.metadata_props["pkg.torch.onnx.name_scopes"]
    s = sources.for_path(f.path)
    assert s.module == "conv1" and s.weight == "conv1.weight"
    assert s.cls is None and s.file is None and s.frames == ()  # bn1's, not conv1's: not claimed


@pytest.mark.parametrize("stem", [e["file"][:-5] for e in EXPORTS if e["exporter"] == "dynamo"])
def test_dynamo_module_is_the_owner_of_every_named_weight(stem):
    """On every GEMM/conv of every dynamo export whose weight kept its parameter name, the
    module tclint names owns that parameter or calls the submodule that does (ViT's
    MultiheadAttention uses ``out_proj.weight`` without calling ``out_proj``); tied LM heads
    included: the exporter names the shared initializer after the head."""
    model = ir.load(export_path(stem))
    checked_nodes = 0
    for node in model.graph:
        if node.op_type not in ("MatMul", "Gemm", "Conv"):
            continue
        s = source_of(node)
        if s.weight is None:
            continue
        owner = _owner(s.weight)
        assert owner == s.module or owner.startswith(s.module + "."), (node.name, s)
        checked_nodes += 1
    assert checked_nodes > 0


# --------------------------------------------------------------------------------------------
# legacy exports: the module path in the node name
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("stem", ["bert_mlm_legacy", "bert_mlm_ort_optimized"])
def test_legacy_bert_decoder(checked, stem):
    (f,), sources = _finding(checked, stem, "TC104", N=30522)
    assert f.path == "/m/cls/predictions/decoder/MatMul"
    s = sources.for_path(f.path)
    assert s.module == "m.cls.predictions.decoder"
    assert s.cls is None and s.file is None  # the legacy exporter records no class or line


def test_legacy_llama_modules(checked):
    for code, dim, module in (("TC102", "N", "m.model.layers.0.mlp.gate_proj"),
                              ("TC101", "K", "m.model.layers.0.mlp.down_proj"),
                              ("TC104", "N", "m.lm_head")):
        hits, sources = _finding(checked, "llama_odd_legacy", code)
        assert module in {sources.for_path(f.path).module for f in hits}


@pytest.mark.parametrize("stem", ["gpt2_legacy", "mobilenetv3_legacy", "regnet_legacy"])
def test_legacy_names_rebuild_pytorch_module_paths(stem):
    """Legacy scope segments are unqualified names (``features.0.0``, ``layers.0``); where the
    weight kept its parameter name (Gemm and un-fused Conv weights in these three exports;
    MatMul weights become ``onnx::MatMul_N``), the rebuilt path is exactly the parameter's module."""
    model = ir.load(export_path(stem))
    checked_nodes = 0
    for node in model.graph:
        s = source_of(node)
        if s.weight is None or node.op_type not in ("MatMul", "Gemm", "Conv"):
            continue
        assert legacy_module(node.name) == _owner(s.weight), node.name
        checked_nodes += 1
    assert checked_nodes > 0


def test_legacy_module_names():
    assert legacy_module("/m/cls/predictions/decoder/MatMul") == "m.cls.predictions.decoder"
    assert legacy_module("/features/features.0/features.0.0/Conv") == "features.0.0"
    assert legacy_module("/m/model/layers.0/mlp/gate_proj/MatMul") == "m.model.layers.0.mlp.gate_proj"
    assert legacy_module("/trunk_output/block1/block1-0/f/se/fc1/Conv") == "trunk_output.block1.block1-0.f.se.fc1"
    assert legacy_module("/MatMul") is None  # the root: nothing to name
    assert legacy_module("gate_proj") is None and legacy_module("Attention_0") is None
    assert legacy_module("StatefulPartitionedCall/model/dense/MatMul") is None  # tf2onnx


# --------------------------------------------------------------------------------------------
# models that say nothing
# --------------------------------------------------------------------------------------------
def test_hand_built_model_has_no_source_and_no_advice():
    model = ir.from_proto(examples.llama_mlp(hidden=64, ffn=2730))
    a = analyse(model, CheckOptions())
    sources = SourceMap(model, a.view)
    gemm = [f for f in a.findings if f.code in ("TC101", "TC102")]
    assert gemm, "the hand-built FFN of width 2730 must have findings"
    for f in a.findings:
        s = sources.for_path(f.path)
        assert s == NO_SOURCE and s.empty
        assert s.to_dict() == {"module": None, "class": None, "file": None, "line": None,
                               "weight": None}
        assert advise(s, f.code, f.dims, f.suggested, f.multiple) is None


def test_metadata_without_module_scope_gives_nothing():
    """A node outside any module (the exporter's runtime-assert hook in ViT) names no module,
    and its torch-only stack trace gives no file."""
    model = ir.load(export_path("vit_dynamo"))
    node = next(n for n in model.graph
                if "_empty_nn_module_stack" in n.metadata_props.get("pkg.torch.onnx.name_scopes", ""))
    s = source_of(node)
    assert s.module is None and s.cls is None and s.file is None


def test_namespace_is_read_when_the_scope_lists_are_missing():
    model = ir.load(export_path("gpt2_dynamo"))
    node = next(n for n in model.graph if n.name == "node_linear")
    full = source_of(node)
    del node.metadata_props["pkg.torch.onnx.name_scopes"]
    del node.metadata_props["pkg.torch.onnx.class_hierarchy"]
    assert "namespace" in node.metadata_props
    assert dataclasses.astuple(source_of(node)) == dataclasses.astuple(full)


def test_stack_trace_parsing():
    frames = parse_stack_trace(
        'File "/a/b/model.py", line 12, in forward\n    y = self.fc(x)\n'
        '  File "/venv/lib/python3.11/site-packages/torch/nn/modules/linear.py", line 134, in forward\n'
        '  File "/a/b/other.py", line 3, in <lambda>\n    return "File x"')
    assert [(f.file, f.line, f.function, f.code) for f in frames] == [
        ("/a/b/model.py", 12, "forward", "y = self.fc(x)"),
        ("/venv/lib/python3.11/site-packages/torch/nn/modules/linear.py", 134, "forward", None),
        ("/a/b/other.py", 3, "<lambda>", 'return "File x"')]
    assert is_framework_file(frames[1].file)
    assert is_framework_file("/usr/lib/python3.11/functools.py")
    assert not is_framework_file("/venv/lib/python3.11/site-packages/transformers/models/llama/modeling_llama.py")
    assert not is_framework_file("/home/me/torchlike/model.py")


# --------------------------------------------------------------------------------------------
# framework advice
# --------------------------------------------------------------------------------------------
def test_llama_ffn_advice_names_intermediate_size(checked):
    hits, sources = _finding(checked, "llama_odd_dynamo", "TC102", N=2730)
    assert {sources.for_path(f.path).module for f in hits} == {
        "m.model.layers.0.mlp.gate_proj", "m.model.layers.0.mlp.up_proj"}
    for f in hits:
        assert f.suggested == {"N": 2736}  # the rule's own suggestion (multiple 8 or 16)
        text = advise(sources.for_path(f.path), f.code, f.dims, f.suggested, f.multiple)
        assert "`intermediate_size` 2730 -> 2736" in text and "LlamaForCausalLM" in text
    (down,), _ = _finding(checked, "llama_odd_dynamo", "TC101", K=2730)
    text = advise(sources.for_path(down.path), down.code, down.dims, down.suggested, down.multiple)
    assert "`intermediate_size` 2730 -> 2736" in text and "down_proj" in text


def test_vocab_advice_per_model_type(checked):
    for stem, n, padded, model in (("gpt2_dynamo", 50257, 50304, "GPT2LMHeadModel"),
                                   ("llama_odd_dynamo", 32001, 32064, "LlamaForCausalLM"),
                                   ("bert_mlm_dynamo", 30522, 30528, "BertForMaskedLM")):
        (f,), sources = _finding(checked, stem, "TC104", N=n)
        text = advise(sources.for_path(f.path), f.code, f.dims, f.suggested, f.multiple)
        assert f"`vocab_size` {n} -> {padded}" in text, text
        assert f"resize_token_embeddings(len(tokenizer), pad_to_multiple_of={f.multiple})" in text
        assert model in text


def test_gpt2_config_names_its_own_fields(checked):
    """GPT-2's config says n_inner / n_embd, not intermediate_size / hidden_size."""
    a, sources = checked("gpt2_dynamo")
    c_fc = next(lay for lay in a.view.layers if lay.op == "Gemm" and lay.n == 64)
    s = sources.node(c_fc.node)
    assert s.module == "m.transformer.h.0.mlp.c_fc"
    assert advise(s, "TC102", {"N": 64}, {"N": 72}, 8).startswith("`n_inner` 64 -> 72")
    assert advise(s, "TC101", {"K": 16}, {"K": 24}, 8).startswith("`n_embd` 16 -> 24")
    attn = next(lay for lay in a.view.layers if lay.role == "attention_qk")
    head = advise(sources.node(attn.node), "TC105", {"head_dim": 20}, {"head_dim": 24}, 8)
    assert "`n_embd` / `n_head`" in head and "24" in head
    tok = advise(sources.node(attn.node), "TC103", {"M": 100}, {"M": 104}, 8)
    assert "pad_to_multiple_of=8" in tok


def test_first_conv_advice_is_four_channels(checked):
    (f,), sources = _finding(checked, "resnet_dynamo", "TC204", C=3)
    text = advise(sources.for_path(f.path), f.code, f.dims, f.suggested, f.multiple)
    assert text.startswith("`conv1` takes 3 channels")
    assert "nn.Conv2d(4, 64, ...)" in text and "zero channel" in text


def test_torchvision_advice_names_the_constructor_argument(checked):
    (f, *_), sources = _finding(checked, "regnet_dynamo", "TC203")
    assert "`group_width` 8 -> 16" in advise(sources.for_path(f.path), f.code, f.dims,
                                             f.suggested, f.multiple)
    hits, sources = _finding(checked, "densenet_dynamo", "TC202", K=12)
    for f in hits:
        assert advise(sources.for_path(f.path), f.code, f.dims, f.suggested,
                      f.multiple).startswith("`growth_rate` 12 -> 16")


def test_legacy_exports_get_no_framework_advice(checked):
    """The legacy exporter records no classes: tclint does not guess the framework from names."""
    (f,), sources = _finding(checked, "gpt2_legacy", "TC104", N=50257)
    assert sources.for_path(f.path).module == "m.lm_head"
    assert advise(sources.for_path(f.path), f.code, f.dims, f.suggested, f.multiple) is None


def test_advice_table_is_data_with_sources():
    ids = [a.id for a in ADVICE]
    assert len(ids) == len(set(ids))
    for a in ADVICE:
        assert a.source.startswith("https://"), a.id
        assert a.family in ("transformers", "torchvision", "torch"), a.id
    for name, fields in HF_CONFIG_FIELDS.items():
        assert fields.source.startswith("https://huggingface.co/"), name
    assert find_advice(Source(module="x"), "TC102", {"N": 10}, None) is None


# --------------------------------------------------------------------------------------------
# --source-root: the frame in the user's checkout
# --------------------------------------------------------------------------------------------
def _lm_head(checked) -> Source:
    (f,), sources = _finding(checked, "gpt2_dynamo", "TC104", N=50257)
    return sources.for_path(f.path)


def _mirror(root: Path, source: Source, suffix: str) -> None:
    """Write the frames of ``source`` whose path ends with ``suffix`` under ``root``, with the
    recorded code at the recorded line (the rest of the file blank)."""
    for fr in source.frames:
        if fr.file.endswith(suffix):
            path = root / suffix
            path.parent.mkdir(parents=True, exist_ok=True)
            lines = path.read_text().splitlines() if path.exists() else []
            lines += [""] * (fr.line - len(lines))
            lines[fr.line - 1] = f"        {fr.code}"
            path.write_text("\n".join(lines) + "\n")


def test_frame_under_a_checkout_with_another_path_prefix(checked, tmp_path):
    s = _lm_head(checked)
    site = tmp_path / "ci" / "site-packages"
    _mirror(site, s, "transformers/models/gpt2/modeling_gpt2.py")
    assert frame_under(s, site) == ("transformers/models/gpt2/modeling_gpt2.py", s.line)
    assert frame_under(s, site / "transformers") == ("models/gpt2/modeling_gpt2.py", s.line)
    assert frame_under(s, tmp_path / "elsewhere") is None


def test_frame_under_skips_framework_files_and_paths_that_climb_out(checked, tmp_path):
    s = _lm_head(checked)
    _mirror(tmp_path, s, "transformers/models/gpt2/modeling_gpt2.py")
    _mirror(tmp_path, s, "torch/nn/modules/linear.py")  # the innermost frame, also under root
    assert (tmp_path / "torch/nn/modules/linear.py").is_file()
    assert frame_under(s, tmp_path) == ("transformers/models/gpt2/modeling_gpt2.py", s.line)
    (tmp_path / "secret.py").write_text("x = 1\n")
    (tmp_path / "sub").mkdir()
    climbing = Source(frames=parse_stack_trace(
        f'File "{tmp_path}/sub/../secret.py", line 1, in f\n    x = 1'))
    assert frame_under(climbing, tmp_path / "sub") is None


def test_frame_under_refuses_a_file_whose_line_changed(checked, tmp_path):
    s = _lm_head(checked)
    path = tmp_path / "transformers/models/gpt2/modeling_gpt2.py"
    _mirror(tmp_path, s, "transformers/models/gpt2/modeling_gpt2.py")
    lines = path.read_text().splitlines()
    lines.insert(0, "# a line added since the export")
    path.write_text("\n".join(lines) + "\n")
    assert frame_under(s, tmp_path) is None


def test_frame_under_this_repository_finds_the_export_script(checked):
    """The exports were traced through tests/make_exports.py in a checkout of this repository
    elsewhere: with the repository as source root, the outermost frame is found in it."""
    s = _lm_head(checked)
    outer = s.frames[0]
    lines = (REPO / "tests/make_exports.py").read_text().splitlines()
    if len(lines) < outer.line or lines[outer.line - 1].strip() != outer.code:
        pytest.skip("tests/make_exports.py changed since the exports were made")
    assert frame_under(s, REPO) == ("tests/make_exports.py", outer.line)


EXPORT_VENV = Path("/work/exportenv/venv/lib/python3.11/site-packages/transformers")


@pytest.mark.skipif(not EXPORT_VENV.is_dir(), reason="the export venv is not on this machine")
def test_frame_under_the_installed_transformers(checked):
    s = _lm_head(checked)
    assert frame_under(s, EXPORT_VENV) == ("models/gpt2/modeling_gpt2.py", s.line)
