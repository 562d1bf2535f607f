"""Export small real models with the real exporters into tests/data/exports/ (run by hand).

tclint's own example graphs are not its users' models. This script writes what users actually
feed it: torchvision and transformers models exported by torch.onnx's dynamo exporter (the
default since torch 2.9) and by the legacy TorchScript exporter (``dynamo=False``), a BERT
optimized by onnxruntime's transformers optimizer (fused com.microsoft ops), and exports whose
weights live in an external ``*.onnx.data`` file. Models are built from configs with random
weights (fixed seeds, no hub downloads); hidden sizes are tiny so the files stay small, while the
dims tclint is about (vocab 50257, FFN 2730, 3-channel first convs, grouped convs, ...) are real.

torch, torchvision and transformers are not dependencies of tclint: run this in its own venv.

    python3 -m venv /work/exportenv/venv
    /work/exportenv/venv/bin/pip install torch==2.14.1 torchvision==0.29.1 \\
        transformers==5.24.0 onnxscript==0.7.2 onnx==1.23.2 onnxruntime==1.32.0
    /work/exportenv/venv/bin/python tests/make_exports.py            # all exports
    /work/exportenv/venv/bin/python tests/make_exports.py gpt2 bert  # only these families

It rewrites the files and ``manifest.json`` (per file: model, exporter, opset, library versions,
inputs with their symbolic dims, the odd dims it carries on purpose, external data, and the
findings a user should expect). Every export is run in onnxruntime against the torch model before
it is recorded; the difference is written to the manifest. tests/test_exports.py reads it.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import os
import sys
import warnings
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import onnxscript
import torch
import torchvision
import transformers
from torch import nn

OUT = Path(__file__).resolve().parent / "data" / "exports"
SEED = 0
#: example sizes the exporters trace with (symbolic dims stay symbolic in the files)
TRACE = {"batch": 2, "seq": 8}

VERSIONS = {
    "torch": torch.__version__, "torchvision": torchvision.__version__,
    "transformers": transformers.__version__, "onnxscript": onnxscript.__version__,
    "onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__,
    "python": sys.version.split()[0],
}


# --------------------------------------------------------------------------------------------
# What to export
# --------------------------------------------------------------------------------------------
@dataclass
class Input:
    name: str
    dtype: str  # numpy dtype name
    shape: list  # ints and symbolic names ("batch", "seq")
    low: int | float = 0  # values drawn uniformly from [low, high) (ints) or N(0, 1) (floats)
    high: int | float = 1


@dataclass
class Family:
    """One model, exported by one or more exporters."""

    name: str
    build: Callable[[], nn.Module]
    inputs: list[Input]
    outputs: list[str]
    config: dict
    odd_dims: dict
    expect: list[dict]  # findings a user should see: {"code", "dims", "node"?, "why"}
    exporters: tuple[str, ...] = ("dynamo", "legacy")
    external_data: tuple[str, ...] = ()  # exporters whose file keeps its weights in *.onnx.data
    notes: dict = field(default_factory=dict)  # per exporter; "*": for all of them


class HF(nn.Module):
    """A transformers model behind a plain-tensor forward (logits only, no KV cache).

    The attribute is ``m``, so legacy node names read ``/m/cls/predictions/decoder/MatMul``
    and dynamo namespaces ``m.lm_head``, as in exports users bring.
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        self.m = model

    def forward(self, input_ids, attention_mask, token_type_ids=None):
        if token_type_ids is not None:  # BERT
            return self.m(input_ids=input_ids, attention_mask=attention_mask,
                          token_type_ids=token_type_ids).logits
        return self.m(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits


def _hf(model_cls, config_cls, config: dict) -> Callable[[], nn.Module]:
    return lambda: HF(model_cls(config_cls(**config)))


def text_inputs(vocab: int, names=("input_ids", "attention_mask")) -> list[Input]:
    spec = {
        "input_ids": Input("input_ids", "int64", ["batch", "seq"], 0, vocab),
        "attention_mask": Input("attention_mask", "int64", ["batch", "seq"], 1, 2),
        "token_type_ids": Input("token_type_ids", "int64", ["batch", "seq"], 0, 1),
    }
    return [spec[n] for n in names]


def image_input(size: int) -> list[Input]:
    return [Input("image", "float32", ["batch", 3, size, size])]


class NarrowResNet(torchvision.models.ResNet):
    """torchvision's ResNet with every stage ``width``/64 as wide (its stem stays 64 wide).

    torchvision's ResNet has no width argument for BasicBlock stages; this scales the planes that
    ``ResNet.__init__`` asks ``_make_layer`` for, and sizes ``fc`` to match. Everything else
    (stem, blocks, downsample, pooling) is torchvision's code.
    """

    def __init__(self, layers, width: int = 16, num_classes: int = 1000):
        self._width_scale = width / 64
        super().__init__(torchvision.models.resnet.BasicBlock, layers, num_classes=num_classes)
        self.fc = nn.Linear(self.inplanes, num_classes)

    def _make_layer(self, block, planes, blocks, stride=1, dilate=False):
        return super()._make_layer(block, int(planes * self._width_scale), blocks, stride, dilate)


def _mobilenet():
    return torchvision.models.mobilenet_v3_small(width_mult=0.25, num_classes=10)


def _efficientnet():
    from torchvision.models.efficientnet import EfficientNet, _efficientnet_conf

    setting, last = _efficientnet_conf("efficientnet_b0", width_mult=0.25, depth_mult=0.25)
    return EfficientNet(setting, dropout=0.2, last_channel=last, num_classes=10)


REGNET_PARAMS = {"depth": 4, "w_0": 16, "w_a": 8.0, "w_m": 2.0, "group_width": 8, "se_ratio": 0.25}


def _regnet():
    from torchvision.models.regnet import BlockParams, RegNet

    return RegNet(BlockParams.from_init_params(**REGNET_PARAMS), stem_width=16, num_classes=1000)


DENSENET = {"growth_rate": 12, "block_config": (2, 2, 2), "num_init_features": 24,
            "bn_size": 4, "num_classes": 1000}
VIT = {"image_size": 224, "patch_size": 16, "num_layers": 2, "num_heads": 2, "hidden_dim": 32,
       "mlp_dim": 128, "num_classes": 1000}

GPT2 = {"vocab_size": 50257, "n_positions": 64, "n_embd": 16, "n_layer": 1, "n_head": 1}
BERT = {"vocab_size": 30522, "hidden_size": 16, "num_hidden_layers": 2, "num_attention_heads": 1,
        "intermediate_size": 64, "max_position_embeddings": 512, "type_vocab_size": 2}
LLAMA_ODD = {"vocab_size": 32001, "hidden_size": 16, "intermediate_size": 2730,
             "num_hidden_layers": 1, "num_attention_heads": 2, "num_key_value_heads": 1,
             "head_dim": 16, "max_position_embeddings": 128, "tie_word_embeddings": True}
LLAMA_ALIGNED = {**LLAMA_ODD, "vocab_size": 32000, "intermediate_size": 64}


def families() -> list[Family]:
    from transformers import (
        BertConfig,
        BertForMaskedLM,
        GPT2Config,
        GPT2LMHeadModel,
        LlamaConfig,
        LlamaForCausalLM,
    )

    bert_in = ["input_ids", "attention_mask", "token_type_ids"]
    return [
        Family(
            "gpt2", _hf(GPT2LMHeadModel, GPT2Config, GPT2),
            text_inputs(GPT2["vocab_size"]), ["logits"],
            {"class": "transformers.GPT2LMHeadModel", **GPT2},
            {"vocab": 50257},
            [{"code": "TC104", "dims": {"N": 50257}, "node": "lm_head",
              "why": "tied LM head: vocab 50257 is not a multiple of 64"}],
        ),
        Family(
            "bert_mlm", _hf(BertForMaskedLM, BertConfig, BERT),
            text_inputs(BERT["vocab_size"], bert_in), ["logits"],
            {"class": "transformers.BertForMaskedLM", **BERT},
            {"vocab": 30522},
            [{"code": "TC104", "dims": {"N": 30522}, "node": "decoder",
              "why": "tied MLM decoder: vocab 30522 is not a multiple of 64"}],
            external_data=("dynamo",),
            notes={"dynamo": "weights in bert_mlm_dynamo.onnx.data, the int64 position_ids "
                             "buffer included (the case where `tclint convert` wrote a model "
                             "that did not load)"},
        ),
        Family(
            "llama_odd", _hf(LlamaForCausalLM, LlamaConfig, LLAMA_ODD),
            text_inputs(LLAMA_ODD["vocab_size"]), ["logits"],
            {"class": "transformers.LlamaForCausalLM", **LLAMA_ODD},
            {"intermediate": 2730, "vocab": 32001},
            [{"code": "TC102", "dims": {"N": 2730}, "node": "gate_proj",
              "why": "FFN width 2730 is not a multiple of 16 (gate/up projections)"},
             {"code": "TC101", "dims": {"K": 2730}, "node": "down_proj",
              "why": "down projection reduces over 2730"},
             {"code": "TC104", "dims": {"N": 32001}, "node": "lm_head",
              "why": "vocab 32001 (32000 + a pad token) is not a multiple of 64"}],
            notes={"*": "GQA (2 query heads, 1 KV head, head_dim 16); tied embeddings (as in "
                        "Llama 3.2) to keep the files small."},
        ),
        Family(
            "llama_aligned", _hf(LlamaForCausalLM, LlamaConfig, LLAMA_ALIGNED),
            text_inputs(LLAMA_ALIGNED["vocab_size"]), ["logits"],
            {"class": "transformers.LlamaForCausalLM", **LLAMA_ALIGNED},
            {},
            [],  # nothing to fix: no alignment finding expected
            exporters=("dynamo",),
            notes={"dynamo": "aligned twin of llama_odd (vocab 32000, FFN 64); no legacy export: "
                             "it would add 4 MB (the legacy exporter folds the tied head's "
                             "transpose into a second copy of the embedding) and nothing "
                             "llama_odd_legacy does not show"},
        ),
        Family(
            "resnet", lambda: NarrowResNet([1, 1, 1, 1], width=16), image_input(224), ["logits"],
            {"class": "torchvision.models.ResNet (BasicBlock, stages 16/32/64/128 wide)",
             "layers": [1, 1, 1, 1], "width": 16, "num_classes": 1000, "image": 224},
            {"image_channels": 3, "classes": 1000},
            [{"code": "TC204", "dims": {"C": 3}, "node": "conv1",
              "why": "first conv takes the 3-channel image"},
             {"code": "TC104", "dims": {"N": 1000}, "node": "fc",
              "why": "1000-class head is not a multiple of 64"}],
            exporters=("dynamo",), external_data=("dynamo",),
            notes={"dynamo": "weights in resnet_dynamo.onnx.data (torch.onnx's default "
                             "external_data=True)"},
        ),
        Family(
            "mobilenetv3", _mobilenet, image_input(224), ["logits"],
            {"class": "torchvision.models.mobilenet_v3_small", "width_mult": 0.25,
             "num_classes": 10, "image": 224},
            {"image_channels": 3, "stem_channels": 8, "se_squeeze": 8, "classes": 10},
            [{"code": "TC204", "dims": {"C": 3}, "node": "features.0",
              "why": "first conv takes the 3-channel image"},
             {"code": "TC202", "dims": {"K": 8},
              "why": "width_mult 0.25 rounds channels to multiples of 8, not 16 (stem, SE)"}],
            exporters=("dynamo", "legacy"),
        ),
        Family(
            "efficientnet", _efficientnet, image_input(224), ["logits"],
            {"class": "torchvision.models.EfficientNet (efficientnet_b0 config)",
             "width_mult": 0.25, "depth_mult": 0.25, "num_classes": 10, "image": 224},
            {"image_channels": 3, "stem_channels": 8, "classes": 10},
            [{"code": "TC204", "dims": {"C": 3}, "node": "features.0",
              "why": "first conv takes the 3-channel image"},
             {"code": "TC202", "dims": {"K": 8},
              "why": "width_mult 0.25 rounds channels to multiples of 8, not 16"}],
            exporters=("dynamo",),
        ),
        Family(
            "regnet", _regnet, image_input(224), ["logits"],
            {"class": "torchvision.models.RegNet (RegNetY-style, SE)", **REGNET_PARAMS,
             "stem_width": 16, "num_classes": 1000, "image": 224},
            {"image_channels": 3, "group_width": 8, "classes": 1000},
            [{"code": "TC204", "dims": {"C": 3}, "node": "stem",
              "why": "first conv takes the 3-channel image"},
             {"code": "TC203", "dims": {"groups": 2},
              "why": "grouped 3x3 convs with 8 channels per group (group_width=8)"}],
        ),
        Family(
            "densenet", lambda: torchvision.models.DenseNet(**DENSENET), image_input(224),
            ["logits"],
            {"class": "torchvision.models.DenseNet", **DENSENET, "image": 224},
            {"image_channels": 3, "growth_rate": 12, "classes": 1000},
            [{"code": "TC204", "dims": {"C": 3}, "node": "conv0",
              "why": "first conv takes the 3-channel image"},
             {"code": "TC202", "dims": {"K": 12},
              "why": "each dense layer adds growth_rate=12 channels"},
             {"code": "TC201", "dims": {"C": 36},
              "why": "concatenated features 24 + 12 = 36 channels feed the next 1x1 conv"}],
            exporters=("dynamo",),
        ),
        Family(
            "vit", lambda: torchvision.models.VisionTransformer(**VIT), image_input(224),
            ["logits"],
            {"class": "torchvision.models.VisionTransformer", **VIT},
            {"image_channels": 3, "tokens": 197, "classes": 1000},
            [{"code": "TC204", "dims": {"C": 3}, "node": "conv_proj",
              "why": "the patch embedding conv takes the 3-channel image"},
             {"code": "TC104", "dims": {"N": 1000}, "node": "heads",
              "why": "1000-class head is not a multiple of 64"}],
            exporters=("dynamo",),
        ),
    ]


# --------------------------------------------------------------------------------------------
# Exporting
# --------------------------------------------------------------------------------------------
def example(inputs: list[Input], sizes: dict[str, int], seed: int = SEED) -> dict[str, np.ndarray]:
    """Deterministic inputs for the given symbolic sizes (the tests build theirs the same way)."""
    rng = np.random.default_rng(seed)
    out = {}
    for spec in inputs:
        shape = [sizes[d] if isinstance(d, str) else d for d in spec.shape]
        if spec.dtype.startswith("int"):
            out[spec.name] = rng.integers(spec.low, spec.high, size=shape, dtype=spec.dtype)
        else:
            out[spec.name] = rng.standard_normal(shape).astype(spec.dtype)
    return out


def _dynamic(inputs: list[Input]) -> dict[str, dict[int, str]]:
    return {s.name: {i: d for i, d in enumerate(s.shape) if isinstance(d, str)} for s in inputs}


@contextlib.contextmanager
def _quiet():
    """The exporters print progress and warnings by the page; keep the script's own output."""
    buf = io.StringIO()
    with warnings.catch_warnings(), contextlib.redirect_stdout(buf), \
            contextlib.redirect_stderr(buf):
        warnings.simplefilter("ignore")
        try:
            yield buf
        except Exception:
            sys.__stderr__.write(buf.getvalue()[-4000:])
            raise


def export(fam: Family, model: nn.Module, exporter: str, path: Path) -> None:
    """Export with torch.onnx's defaults but for the names and dynamic dims, as a user would."""
    args = tuple(torch.from_numpy(v) for v in example(fam.inputs, TRACE).values())
    names = [s.name for s in fam.inputs]
    dyn = _dynamic(fam.inputs)
    for stale in (path, Path(f"{path}.data")):
        stale.unlink(missing_ok=True)
    with _quiet(), torch.no_grad():
        if exporter == "dynamo":
            program = torch.onnx.export(
                model, args, dynamo=True, input_names=names, output_names=fam.outputs,
                dynamic_shapes=tuple(dyn[n] for n in names))
            program.save(str(path), external_data=exporter in fam.external_data)
        else:
            text = any("seq" in s.shape for s in fam.inputs)
            out_dyn = {o: {0: "batch", 1: "seq"} if text else {0: "batch"} for o in fam.outputs}
            torch.onnx.export(model, args, str(path), dynamo=False, input_names=names,
                              output_names=fam.outputs, dynamic_axes={**dyn, **out_dyn})


def export_ort_bert(fam: Family) -> dict:
    """onnxruntime.transformers' BERT optimizer on a legacy export: fused com.microsoft ops.

    The optimizer fuses Attention only from eager attention (transformers' default, sdpa,
    leaves it unfused: SkipLayerNormalization and BiasGelu only), so the legacy export it
    starts from is the same BERT (same seed, same weights) with attn_implementation="eager",
    as onnxruntime's BERT guide exports it. That intermediate file is not kept.
    """
    import tempfile

    from onnxruntime.transformers.optimizer import optimize_model
    from transformers import BertConfig, BertForMaskedLM

    torch.manual_seed(SEED)
    model = HF(BertForMaskedLM(BertConfig(**BERT, attn_implementation="eager"))).eval()
    wake(model, fam)
    dst = OUT / "bert_mlm_ort_optimized.onnx"
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "bert_mlm_legacy_eager.onnx"
        export(fam, model, "legacy", src)
        with _quiet():
            opt = optimize_model(str(src), model_type="bert",
                                 num_heads=BERT["num_attention_heads"],
                                 hidden_size=BERT["hidden_size"])
            fused = {k: v for k, v in opt.get_fused_operator_statistics().items() if v}
            opt.save_model_to_file(str(dst))
    diff = compare(dst, model, fam)
    e = entry(fam, "legacy+ort-optimizer", dst, diff, fused_ops=fused)
    e["config"]["attn_implementation"] = "eager"
    e["note"] = ("optimize_model(<legacy export with attn_implementation='eager'>, "
                 f"model_type='bert', num_heads=1, hidden_size=16) fused {fused}")
    report(e)
    return e


def describe(path: Path) -> dict:
    """What the file says about itself (structure only, no weights)."""
    m = onnx.load(str(path), load_external_data=False)

    def value(v):
        t = v.type.tensor_type
        return {"name": v.name, "dtype": onnx.helper.tensor_dtype_to_np_dtype(t.elem_type).name,
                "shape": [d.dim_param if d.dim_param else d.dim_value for d in t.shape.dim]}

    ops = Counter((n.domain or "ai.onnx", n.op_type) for n in m.graph.node)
    external = sorted({e.value for t in m.graph.initializer for e in t.external_data
                       if e.key == "location"})
    external_inits = sorted(t.name for t in m.graph.initializer
                            if t.data_location == onnx.TensorProto.EXTERNAL)
    files = [path.name, *external]
    return {
        "opset": next(o.version for o in m.opset_import if o.domain in ("", "ai.onnx")),
        "opset_imports": {o.domain or "ai.onnx": o.version for o in m.opset_import},
        "ir_version": m.ir_version,
        "producer": f"{m.producer_name} {m.producer_version}".strip(),
        "inputs": [value(v) for v in m.graph.input
                   if v.name not in {t.name for t in m.graph.initializer}],
        "outputs": [value(v) for v in m.graph.output],
        "nodes": len(m.graph.node),
        "value_info": len(m.graph.value_info),
        "ops": {f"{d}::{op}" if d != "ai.onnx" else op: n for (d, op), n in sorted(ops.items())},
        "external_data": bool(external),
        "external_initializers": len(external_inits),
        "external_int64": sorted(t.name for t in m.graph.initializer
                                 if t.data_location == onnx.TensorProto.EXTERNAL
                                 and t.data_type == onnx.TensorProto.INT64),
        "files": {f: {"bytes": (path.parent / f).stat().st_size,
                      "sha256": hashlib.sha256((path.parent / f).read_bytes()).hexdigest()}
                  for f in files},
    }


def compare(path: Path, model: nn.Module, fam: Family) -> tuple[float, float]:
    """Max |onnxruntime - torch| on fresh inputs of other sizes than the traced ones, and the
    std of torch's output (how far from degenerate the random model is)."""
    sizes = {"batch": 3, "seq": 11}
    feeds = example(fam.inputs, sizes, seed=SEED + 1)
    with torch.no_grad():
        want = model(*(torch.from_numpy(v) for v in feeds.values())).numpy()
    sess = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = sess.run(None, feeds)[0]
    if got.shape != want.shape:
        raise AssertionError(f"{path.name}: shape {got.shape}, torch says {want.shape}")
    return float(np.max(np.abs(got - want))), float(want.std())


def build(fam: Family) -> nn.Module:
    torch.manual_seed(SEED)
    model = fam.build().eval()
    wake(model, fam)
    return model


def wake(model: nn.Module, fam: Family) -> None:
    """Make a randomly initialised model look trained enough to test on.

    Straight from the constructors, biases and norm shifts are 0, norm scales 1, some heads 0
    (ViT's) and BatchNorm is the identity: torchvision logits on random images come out 1e-13
    or exactly 0, and a padding bug that mishandles a bias would be invisible. So every
    parameter that is one constant gets random values (matrices N(0, 1/fan_in), vectors of ones
    1 + N(0, 0.1^2), of zeros N(0, 0.1^2)), and BatchNorm statistics are measured on two random
    batches (cumulative average), as a trained model's are. Deterministic (SEED).
    """
    gen = torch.Generator().manual_seed(SEED)
    with torch.no_grad():
        for p in model.parameters():
            if p.numel() < 2 or not bool((p == p.flatten()[0]).all()):
                continue
            noise = torch.randn(p.shape, generator=gen)
            if p.dim() >= 2:
                p.copy_(noise * p[0].numel() ** -0.5)
            else:
                p.copy_(p + 0.1 * noise)
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not bns:
        return
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None
    model.train()
    with torch.no_grad():
        for i in range(2):
            batch = example(fam.inputs, {"batch": 8}, SEED + 10 + i)
            model(*(torch.from_numpy(v) for v in batch.values()))
    for bn in bns:
        bn.momentum = 0.1
    model.eval()


def entry(fam: Family, exporter: str, path: Path, diff: tuple[float, float], **extra) -> dict:
    return {
        "file": path.name, "family": fam.name, "model": fam.config["class"],
        "exporter": exporter, "config": {k: v for k, v in fam.config.items() if k != "class"},
        "odd_dims": fam.odd_dims, "expect": fam.expect,
        "symbolic_dims": sorted({d for s in fam.inputs for d in s.shape if isinstance(d, str)}),
        "input_ranges": {s.name: [s.low, s.high] for s in fam.inputs if s.dtype.startswith("int")},
        "max_abs_diff_vs_torch": diff[0], "output_std": diff[1],
        "note": " ".join(n for n in (fam.notes.get("*"), fam.notes.get(exporter)) if n),
        **extra, **describe(path),
    }


def report(e: dict) -> None:
    size = sum(f["bytes"] for f in e["files"].values()) / 1e6
    print(f"{e['file']:30s} {size:5.2f} MB  max |ort - torch| {e['max_abs_diff_vs_torch']:.1e}"
          f" (output std {e['output_std']:.2g}){'  ' + e['note'] if e['note'] else ''}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("only", nargs="*", help="families to (re)export; default all")
    args = parser.parse_args(argv)
    OUT.mkdir(parents=True, exist_ok=True)
    manifest_path = OUT / "manifest.json"
    old = json.loads(manifest_path.read_text()) if manifest_path.exists() else {"exports": []}
    keep = [e for e in old["exports"] if args.only and e["family"] not in args.only]
    failures = [f for f in old.get("failed", []) if args.only and f["family"] not in args.only]
    exports = []
    for fam in families():
        if args.only and fam.name not in args.only:
            continue
        model = build(fam)
        for exporter in fam.exporters:
            path = OUT / f"{fam.name}_{exporter}.onnx"
            try:
                export(fam, model, exporter, path)
                diff = compare(path, model, fam)
            except Exception as exc:  # noqa: BLE001 - an exporter failure is data: record it
                msg = " ".join(f"{type(exc).__name__}: {exc}".split())[:500]
                print(f"FAILED {path.name}: {msg}", file=sys.stderr)
                for partial in (path, Path(f"{path}.data")):
                    partial.unlink(missing_ok=True)
                failures.append({"family": fam.name, "exporter": exporter, "error": msg})
                continue
            exports.append(entry(fam, exporter, path, diff))
            report(exports[-1])
        if fam.name == "bert_mlm":
            exports.append(export_ort_bert(fam))
    order = {f.name: i for i, f in enumerate(families())}
    exports = sorted(keep + exports, key=lambda e: (order[e["family"]], e["file"]))
    manifest = {
        "about": "Real exports for tclint's tests; written by tests/make_exports.py (do not "
                 "edit by hand). Symbolic dims: batch, seq. Inputs: int64 ids drawn from "
                 "input_ranges, float32 images from N(0, 1).",
        "command": "/work/exportenv/venv/bin/python tests/make_exports.py",
        "versions": VERSIONS, "seed": SEED, "trace_sizes": TRACE,
        "exports": exports, "failed": failures,
    }
    tmp = manifest_path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(manifest, indent=1) + "\n")
    os.replace(tmp, manifest_path)
    total = sum(f["bytes"] for e in exports for f in e["files"].values())
    print(f"{len(exports)} exports, {len(failures)} failed, {total / 1e6:.1f} MB in {OUT}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
