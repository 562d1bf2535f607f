"""Small ONNX graphs with misaligned shapes, and their aligned ("fixed") twins.

Each fixed twin is what ``tclint fix`` produces for that pattern, built by hand here so the
benchmark does not depend on the fixer: padded weights are zero, so both graphs compute exactly
the same outputs (the bench harness checks that before reporting a speedup).

- ``lm_head``: logits = x @ W[hidden, vocab]; vocab 50257 vs 50304 (+ Slice back to 50257).
- ``mlp_k``: Relu(x @ W1[h, ffn]) @ W2[ffn, h]; ffn 2730 vs 2736 (zero columns in W1, rows in W2).
- ``conv_c3``: first conv on a 3-channel image vs the image padded to 4 channels inside the graph.
- ``conv_k28``: Conv(64->28) -> Relu -> Conv(28->64) vs K padded to 32 (and the next conv's C).
- ``nchw_nhwc``: one conv chain, run NCHW and with onnxruntime CUDA ``prefer_nhwc`` (GPU only).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import TensorProto, helper

from tclint.examples import make_model

OPSET = 17
DTYPES = {"fp32": (np.float32, TensorProto.FLOAT), "fp16": (np.float16, TensorProto.FLOAT16)}


def _w(rng, shape, np_dtype, fan_in):
    return (rng.standard_normal(shape) / np.sqrt(fan_in)).astype(np_dtype)


def _pad_axis(array: np.ndarray, axis: int, size: int) -> np.ndarray:
    widths = [(0, 0)] * array.ndim
    widths[axis] = (0, size - array.shape[axis])
    return np.pad(array, widths)


def lm_head(
    *, tokens: int, hidden: int, vocab: int, padded_vocab: int | None, dtype: str
) -> onnx.ModelProto:
    np_dtype, elem = DTYPES[dtype]
    w = _w(np.random.default_rng(0), (hidden, vocab), np_dtype, hidden)
    nodes, inits = [], {}
    if padded_vocab:
        inits["W"] = _pad_axis(w, 1, padded_vocab)
        inits.update(
            starts=np.array([0], np.int64),
            ends=np.array([vocab], np.int64),
            axes=np.array([1], np.int64),
        )
        nodes += [
            helper.make_node("MatMul", ["x", "W"], ["padded"], name="lm_head"),
            helper.make_node(
                "Slice", ["padded", "starts", "ends", "axes"], ["logits"], name="unpad"
            ),
        ]
    else:
        inits["W"] = w
        nodes.append(helper.make_node("MatMul", ["x", "W"], ["logits"], name="lm_head"))
    x = helper.make_tensor_value_info("x", elem, [tokens, hidden])
    y = helper.make_tensor_value_info("logits", elem, [tokens, vocab])
    return make_model(nodes, [x], [y], inits, "lm_head", opset=OPSET)


def mlp_k(
    *, tokens: int, hidden: int, ffn: int, padded_ffn: int | None, dtype: str
) -> onnx.ModelProto:
    np_dtype, elem = DTYPES[dtype]
    rng = np.random.default_rng(0)
    w1, w2 = _w(rng, (hidden, ffn), np_dtype, hidden), _w(rng, (ffn, hidden), np_dtype, ffn)
    if padded_ffn:
        w1, w2 = _pad_axis(w1, 1, padded_ffn), _pad_axis(w2, 0, padded_ffn)
    nodes = [
        helper.make_node("MatMul", ["x", "W1"], ["h"], name="fc1"),
        helper.make_node("Relu", ["h"], ["a"], name="act"),
        helper.make_node("MatMul", ["a", "W2"], ["y"], name="fc2"),
    ]
    x = helper.make_tensor_value_info("x", elem, [tokens, hidden])
    y = helper.make_tensor_value_info("y", elem, [tokens, hidden])
    return make_model(nodes, [x], [y], {"W1": w1, "W2": w2}, "mlp", opset=OPSET)


def conv_c3(
    *, batch: int, size: int, out_channels: int, padded: bool, dtype: str
) -> onnx.ModelProto:
    np_dtype, elem = DTYPES[dtype]
    rng = np.random.default_rng(0)
    w = _w(rng, (out_channels, 3, 7, 7), np_dtype, 3 * 49)
    b = _w(rng, (out_channels,), np_dtype, 10)
    nodes, inits = [], {"b": b}
    src = "image"
    if padded:
        inits["W"] = _pad_axis(w, 1, 4)
        inits["pads"] = np.array([0, 0, 0, 0, 0, 1, 0, 0], np.int64)
        nodes.append(helper.make_node("Pad", ["image", "pads"], ["image4"], name="pad_channels"))
        src = "image4"
    else:
        inits["W"] = w
    nodes += [
        helper.make_node(
            "Conv", [src, "W", "b"], ["c"], name="conv1", strides=[2, 2], pads=[3, 3, 3, 3]
        ),
        helper.make_node("Relu", ["c"], ["y"], name="relu"),
    ]
    x = helper.make_tensor_value_info("image", elem, [batch, 3, size, size])
    y = helper.make_tensor_value_info("y", elem, [batch, out_channels, size // 2, size // 2])
    return make_model(nodes, [x], [y], inits, "conv_c3", opset=OPSET)


def conv_k(
    *, batch: int, size: int, channels: int, k: int, padded_k: int | None, dtype: str
) -> onnx.ModelProto:
    np_dtype, elem = DTYPES[dtype]
    rng = np.random.default_rng(0)
    w1, b1 = _w(rng, (k, channels, 3, 3), np_dtype, channels * 9), _w(rng, (k,), np_dtype, 10)
    w2 = _w(rng, (channels, k, 3, 3), np_dtype, k * 9)
    if padded_k:
        w1, b1, w2 = (
            _pad_axis(w1, 0, padded_k),
            _pad_axis(b1, 0, padded_k),
            _pad_axis(w2, 1, padded_k),
        )
    nodes = [
        helper.make_node("Conv", ["x", "W1", "b1"], ["c1"], name="conv_k", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu"),
        helper.make_node("Conv", ["r1", "W2"], ["y"], name="conv_next", pads=[1, 1, 1, 1]),
    ]
    x = helper.make_tensor_value_info("x", elem, [batch, channels, size, size])
    y = helper.make_tensor_value_info("y", elem, [batch, channels, size, size])
    return make_model(nodes, [x], [y], {"W1": w1, "b1": b1, "W2": w2}, "conv_k", opset=OPSET)


@dataclass(frozen=True)
class Case:
    name: str
    description: str
    #: the tclint rule this case illustrates
    rule: str
    gpu_only: bool = False

    def pair(self, dtype: str, *, device: str) -> tuple[onnx.ModelProto, onnx.ModelProto]:
        """(original, fixed) at sizes that take milliseconds on ``device`` ("cpu" or "cuda")."""
        big = device != "cpu"
        if self.name == "lm_head":
            kw = {"tokens": 512 if big else 16, "hidden": 768, "vocab": 50257, "dtype": dtype}
            return lm_head(padded_vocab=None, **kw), lm_head(padded_vocab=50304, **kw)
        if self.name == "mlp_k":
            kw = {"tokens": 4096 if big else 64, "hidden": 1024, "ffn": 2730, "dtype": dtype}
            return mlp_k(padded_ffn=None, **kw), mlp_k(padded_ffn=2736, **kw)
        if self.name == "conv_c3":
            kw = {"batch": 32 if big else 1, "size": 224, "out_channels": 64, "dtype": dtype}
            return conv_c3(padded=False, **kw), conv_c3(padded=True, **kw)
        if self.name == "conv_k28":
            kw = {"batch": 32 if big else 1, "size": 56, "channels": 64, "k": 28, "dtype": dtype}
            return conv_k(padded_k=None, **kw), conv_k(padded_k=32, **kw)
        if self.name == "nchw_nhwc":
            model = conv_k(
                batch=32 if big else 1, size=56, channels=64, k=64, padded_k=None, dtype=dtype
            )
            return model, model
        raise KeyError(self.name)


CASES = (
    Case("lm_head", "GEMM N=50257 vs 50304 (LM head, vocab padded to 64)", "TC102/TC104"),
    Case("mlp_k", "GEMM K=2730 vs 2736 (MLP, FFN padded to 8)", "TC101"),
    Case("conv_c3", "conv C=3 vs 4 (first layer, image padded to 4 channels)", "TC204"),
    Case("conv_k28", "conv K=28 vs 32 (and the next conv's C)", "TC202/TC201"),
    Case(
        "nchw_nhwc",
        "conv chain NCHW vs NHWC (onnxruntime CUDA prefer_nhwc)",
        "TC205",
        gpu_only=True,
    ),
)
