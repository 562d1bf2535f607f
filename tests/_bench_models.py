"""Small example models for the bench / optimize / HTML report tests (built with onnx.helper).

- ``small_cnn``: 3-channel image -> Conv(3->28) -> BatchNorm -> Relu -> Conv(28->28) + residual
  -> Relu -> GlobalAveragePool -> Flatten -> Gemm(28->10): misaligned like real CNNs (C=3, K=28).
- ``small_transformer``: token ids -> embedding Gather -> one pre-LN block (attention with
  head_dim 12, MLP 50 -> 130) -> LM head over a vocab of 101.
Both take a symbolic ``batch`` dim. ``seed`` changes the weights (a "different model").
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper

from tclint.examples import make_model

OPSET = 17


def small_cnn(
    *, seed: int = 0, channels: int = 28, size: int = 32, classes: int = 10
) -> onnx.ModelProto:
    rng = np.random.default_rng(seed)
    c = channels

    def w(*shape, scale=None):
        scale = scale or (1.0 / np.sqrt(np.prod(shape[1:])))
        return (rng.standard_normal(shape) * scale).astype(np.float32)

    inits = {
        "conv1.w": w(c, 3, 3, 3),
        "conv1.b": w(c, scale=0.1),
        "bn.scale": (1 + 0.1 * rng.standard_normal(c)).astype(np.float32),
        "bn.bias": w(c, scale=0.1),
        "bn.mean": w(c, scale=0.1),
        "bn.var": (1 + 0.1 * rng.random(c)).astype(np.float32),
        "conv2.w": w(c, c, 3, 3),
        "conv2.b": w(c, scale=0.1),
        "fc.w": w(classes, c),
        "fc.b": w(classes, scale=0.1),
    }
    nodes = [
        helper.make_node(
            "Conv", ["image", "conv1.w", "conv1.b"], ["c1"], name="conv1", pads=[1, 1, 1, 1]
        ),
        helper.make_node(
            "BatchNormalization",
            ["c1", "bn.scale", "bn.bias", "bn.mean", "bn.var"],
            ["b1"],
            name="bn1",
        ),
        helper.make_node("Relu", ["b1"], ["r1"], name="relu1"),
        helper.make_node(
            "Conv", ["r1", "conv2.w", "conv2.b"], ["c2"], name="conv2", pads=[1, 1, 1, 1]
        ),
        helper.make_node("Add", ["c2", "r1"], ["a2"], name="residual"),
        helper.make_node("Relu", ["a2"], ["r2"], name="relu2"),
        helper.make_node("GlobalAveragePool", ["r2"], ["p"], name="pool"),
        helper.make_node("Flatten", ["p"], ["f"], name="flatten"),
        helper.make_node("Gemm", ["f", "fc.w", "fc.b"], ["logits"], name="fc", transB=1),
    ]
    x = helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", 3, size, size])
    y = helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", classes])
    return make_model(nodes, [x], [y], inits, "small_cnn", opset=OPSET)


def small_transformer(
    *,
    seed: int = 0,
    vocab: int = 101,
    hidden: int = 48,
    heads: int = 4,
    ffn: int = 130,
    seq: int = 16,
) -> onnx.ModelProto:
    rng = np.random.default_rng(seed)
    h, hd = hidden, hidden // heads

    def w(*shape):
        return (rng.standard_normal(shape) / np.sqrt(shape[0])).astype(np.float32)

    inits = {
        "emb": (0.5 * rng.standard_normal((vocab, h))).astype(np.float32),
        "ln1.g": np.ones(h, np.float32),
        "ln1.b": np.zeros(h, np.float32),
        "wq": w(h, h),
        "wk": w(h, h),
        "wv": w(h, h),
        "wo": w(h, h),
        "ln2.g": np.ones(h, np.float32),
        "ln2.b": np.zeros(h, np.float32),
        "w1": w(h, ffn),
        "b1": np.zeros(ffn, np.float32),
        "w2": w(ffn, h),
        "lm_head": w(h, vocab),
        "heads_shape": np.array([0, 0, heads, hd], np.int64),
        "merge_shape": np.array([0, 0, h], np.int64),
        "scale": np.array(1.0 / np.sqrt(hd), np.float32),
    }
    n = helper.make_node
    nodes = [
        n("Gather", ["emb", "input_ids"], ["x0"], name="embed"),
        n("LayerNormalization", ["x0", "ln1.g", "ln1.b"], ["l1"], name="ln1", axis=-1),
    ]
    for p in ("q", "k", "v"):
        nodes += [
            n("MatMul", ["l1", f"w{p}"], [f"{p}0"], name=f"attn.{p}_proj"),
            n("Reshape", [f"{p}0", "heads_shape"], [f"{p}1"], name=f"attn.{p}_split"),
            n(
                "Transpose",
                [f"{p}1"],
                [f"{p}2"],
                name=f"attn.{p}_heads",
                perm=[0, 2, 3, 1] if p == "k" else [0, 2, 1, 3],
            ),
        ]
    nodes += [
        n("MatMul", ["q2", "k2"], ["s0"], name="attn.qk"),
        n("Mul", ["s0", "scale"], ["s1"], name="attn.scale"),
        n("Softmax", ["s1"], ["s2"], name="attn.softmax", axis=-1),
        n("MatMul", ["s2", "v2"], ["o0"], name="attn.pv"),
        n("Transpose", ["o0"], ["o1"], name="attn.merge_t", perm=[0, 2, 1, 3]),
        n("Reshape", ["o1", "merge_shape"], ["o2"], name="attn.merge"),
        n("MatMul", ["o2", "wo"], ["o3"], name="attn.o_proj"),
        n("Add", ["x0", "o3"], ["x1"], name="attn.residual"),
        n("LayerNormalization", ["x1", "ln2.g", "ln2.b"], ["l2"], name="ln2", axis=-1),
        n("MatMul", ["l2", "w1"], ["m0"], name="mlp.fc1"),
        n("Add", ["m0", "b1"], ["m1"], name="mlp.fc1_bias"),
        n("Gelu", ["m1"], ["m2"], name="mlp.act", domain="")
        if OPSET >= 20
        else n("Relu", ["m1"], ["m2"], name="mlp.act"),
        n("MatMul", ["m2", "w2"], ["m3"], name="mlp.fc2"),
        n("Add", ["x1", "m3"], ["x2"], name="mlp.residual"),
        n("MatMul", ["x2", "lm_head"], ["logits"], name="lm_head"),
    ]
    x = helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", seq])
    y = helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", seq, vocab])
    return make_model(nodes, [x], [y], inits, "small_transformer", opset=OPSET)


def to_fp16(model: onnx.ModelProto) -> onnx.ModelProto:
    """A plain FP16 copy (onnxconverter-common, IO kept FP32): a second precision to compare."""
    from onnxconverter_common import float16

    return float16.convert_float_to_float16(model, keep_io_types=True)


def save(model: onnx.ModelProto, path) -> str:
    onnx.save(model, str(path))
    return str(path)


def small_mlp(*, seed: int = 0, hidden: int = 256, ffn: int = 682) -> onnx.ModelProto:
    """x[batch, hidden] -> MatMul(ffn) -> Relu -> MatMul(hidden): FFN 682 is not a multiple of 8,
    and padding it (zero columns, then zero rows in the next GEMM) needs no inserted node."""
    rng = np.random.default_rng(seed)
    inits = {
        "w1": (rng.standard_normal((hidden, ffn)) / np.sqrt(hidden)).astype(np.float32),
        "w2": (rng.standard_normal((ffn, hidden)) / np.sqrt(ffn)).astype(np.float32),
    }
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["h"], name="fc1"),
        helper.make_node("Relu", ["h"], ["a"], name="act"),
        helper.make_node("MatMul", ["a", "w2"], ["y"], name="fc2"),
    ]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", hidden])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", hidden])
    return make_model(nodes, [x], [y], inits, "small_mlp", opset=OPSET)
