"""Builders for real architectures' graphs, with the shapes exporters produce.

Tests, benchmarks and the README's example use them; PyTorch is not needed. Each builder returns
an ``onnx.ModelProto``. Weights are random (seeded) by default; ``weights="external"`` writes
them as external data into a *sparse* file (no disk used, no bytes generated), which is how the
benchmarks make a LLaMA-7B-shaped model with 27 GB of weights in a fraction of a second.

Command line: ``python -m tclint.examples resnet50 -o resnet50.onnx`` (see ``--help``).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper

OPSET = 17


def make_model(nodes, inputs, outputs, inits: dict[str, np.ndarray], name: str, *,
               opset: int = OPSET, producer: str = "tclint.examples") -> onnx.ModelProto:
    """A checked model from nodes, value infos and ``{name: array}`` initializers."""
    graph = helper.make_graph(
        nodes, name, inputs, outputs, [onnx.numpy_helper.from_array(v, k) for k, v in inits.items()]
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)],
                              producer_name=producer)
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


class GraphBuilder:
    """A tiny helper over onnx.helper: unique names, initializers, external sparse weights."""

    def __init__(self, name: str, *, seed: int = 0, weights: str = "random",
                 data_path: str | os.PathLike | None = None, dtype=np.float32) -> None:
        self.name = name
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.inputs: list[onnx.ValueInfoProto] = []
        self.outputs: list[onnx.ValueInfoProto] = []
        self.rng = np.random.default_rng(seed)
        self.weights = weights
        self.data_path = Path(data_path) if data_path else None
        self.offset = 0
        self.counter: dict[str, int] = {}
        self.dtype = dtype

    def uid(self, prefix: str) -> str:
        n = self.counter.get(prefix, 0)
        self.counter[prefix] = n + 1
        return f"{prefix}_{n}" if n else prefix

    def input(self, name: str, shape, elem=TensorProto.FLOAT) -> str:
        self.inputs.append(helper.make_tensor_value_info(name, elem, shape))
        return name

    def output(self, value: str, name: str | None = None, elem=TensorProto.FLOAT, shape=None) -> str:
        if name and name != value:
            self.node("Identity", [value], name=name, outputs=[name])
            value = name
        self.outputs.append(helper.make_tensor_value_info(value, elem, shape))
        return value

    def weight(self, prefix: str, shape, *, scale: float | None = None, value: np.ndarray | None = None) -> str:
        name = self.uid(prefix)
        shape = tuple(int(d) for d in shape)
        if value is not None:
            self.inits.append(onnx.numpy_helper.from_array(np.asarray(value), name))
            return name
        if self.weights == "external":
            self._external(name, shape)
            return name
        fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else shape[0]
        s = scale if scale is not None else 1.0 / np.sqrt(max(fan_in, 1))
        arr = (self.rng.standard_normal(shape, dtype=np.float32) * s).astype(self.dtype)
        self.inits.append(onnx.numpy_helper.from_array(arr, name))
        return name

    def _external(self, name: str, shape) -> None:
        assert self.data_path is not None, "external weights need data_path"
        itemsize = np.dtype(self.dtype).itemsize
        length = int(np.prod(shape)) * itemsize
        t = TensorProto()
        t.name = name
        t.data_type = helper.np_dtype_to_tensor_dtype(np.dtype(self.dtype))
        t.dims.extend(shape)
        t.data_location = TensorProto.EXTERNAL
        for k, v in (("location", self.data_path.name), ("offset", str(self.offset)), ("length", str(length))):
            e = t.external_data.add()
            e.key, e.value = k, v
        self.offset += length
        # keep 4 KiB alignment, as real exporters do for mmap
        self.offset = -(-self.offset // 4096) * 4096
        self.inits.append(t)

    def const(self, prefix: str, value) -> str:
        return self.weight(prefix, (), value=np.asarray(value))

    def ints(self, prefix: str, values) -> str:
        return self.weight(prefix, (), value=np.asarray(values, dtype=np.int64))

    def node(self, op: str, inputs, *, name: str | None = None, outputs=None, n_out: int = 1,
             domain: str = "", **attrs) -> str | list[str]:
        name = name or self.uid(op)
        outs = outputs or ([f"{name}_out"] if n_out == 1 else [f"{name}_out{i}" for i in range(n_out)])
        self.nodes.append(helper.make_node(op, list(inputs), outs, name=name, domain=domain, **attrs))
        return outs[0] if n_out == 1 else outs

    def model(self, *, opset: int = OPSET, extra_opsets: dict | None = None) -> onnx.ModelProto:
        graph = helper.make_graph(self.nodes, self.name, self.inputs, self.outputs, self.inits)
        imports = [helper.make_opsetid("", opset)]
        for domain, version in (extra_opsets or {}).items():
            imports.append(helper.make_opsetid(domain, version))
        model = helper.make_model(graph, opset_imports=imports, producer_name="tclint.examples")
        model.ir_version = 8
        if self.weights == "external" and self.data_path is not None:
            # a sparse file: the size is right, no byte is written
            with open(self.data_path, "wb") as f:
                f.truncate(max(self.offset, 1))
        return model

    # --- layers ------------------------------------------------------------------------
    def conv(self, x: str, c: int, k: int, kernel: int = 3, *, stride: int = 1, groups: int = 1,
             bias: bool = True, name: str | None = None, pad: int | None = None) -> str:
        p = kernel // 2 if pad is None else pad
        w = self.weight("conv_w", (k, c // groups, kernel, kernel))
        ins = [x, w] + ([self.weight("conv_b", (k,), scale=0.1)] if bias else [])
        return self.node("Conv", ins, name=name or self.uid("conv"), kernel_shape=[kernel, kernel],
                         strides=[stride, stride], pads=[p, p, p, p], group=groups)

    def bn(self, x: str, c: int) -> str:
        scale = self.weight("bn_scale", (c,), value=(1 + 0.1 * self.rng.standard_normal(c)).astype(self.dtype))
        bias = self.weight("bn_bias", (c,), value=(0.1 * self.rng.standard_normal(c)).astype(self.dtype))
        mean = self.weight("bn_mean", (c,), value=(0.1 * self.rng.standard_normal(c)).astype(self.dtype))
        var = self.weight("bn_var", (c,), value=(1 + 0.1 * self.rng.random(c)).astype(self.dtype))
        return self.node("BatchNormalization", [x, scale, bias, mean, var], epsilon=1e-5)

    def linear(self, x: str, n_in: int, n_out: int, *, bias: bool = True, transposed: bool = False,
               name: str | None = None) -> str:
        """PyTorch nn.Linear as exporters write it: MatMul with a [in, out] weight, or MatMul with
        Transpose of an [out, in] weight (``transposed``)."""
        if transposed:
            w = self.weight("linear_w", (n_out, n_in))
            w = self.node("Transpose", [w], perm=[1, 0])
        else:
            w = self.weight("linear_w", (n_in, n_out))
        y = self.node("MatMul", [x, w], name=name or self.uid("matmul"))
        if bias:
            y = self.node("Add", [y, self.weight("linear_b", (n_out,), scale=0.1)])
        return y

    def layer_norm(self, x: str, d: int) -> str:
        g = self.weight("ln_g", (d,), value=np.ones(d, self.dtype))
        b = self.weight("ln_b", (d,), value=np.zeros(d, self.dtype))
        return self.node("LayerNormalization", [x, g, b], axis=-1, epsilon=1e-5)

    def rms_norm(self, x: str, d: int) -> str:
        sq = self.node("Mul", [x, x])
        mean = self.node("ReduceMean", [sq], axes=[-1], keepdims=1)  # axes attribute until opset 18
        eps = self.node("Add", [mean, self.const("eps", np.float32(1e-6))])
        r = self.node("Sqrt", [eps])
        y = self.node("Div", [x, r])
        return self.node("Mul", [y, self.weight("rms_g", (d,), value=np.ones(d, self.dtype))])


# ------------------------------------------------------------------------------------------
# CNNs
# ------------------------------------------------------------------------------------------
def resnet50(*, batch=1, image: int = 224, classes: int = 1000, width: int = 64,
             blocks=(3, 4, 6, 3), batchnorm: bool = False, seed: int = 0, weights: str = "random",
             data_path=None) -> onnx.ModelProto:
    """torchvision ResNet-50 as exported in eval mode (BN folded into conv biases unless
    ``batchnorm``): 7x7/2 stem on 3 channels, bottlenecks with residual Adds, a 1000-class Gemm."""
    g = GraphBuilder("resnet50", seed=seed, weights=weights, data_path=data_path)
    x = g.input("input", [batch, 3, image, image])

    def cbr(x, c, k, kernel, stride=1, relu=True):
        y = g.conv(x, c, k, kernel, stride=stride, bias=not batchnorm)
        if batchnorm:
            y = g.bn(y, k)
        return g.node("Relu", [y]) if relu else y

    y = cbr(x, 3, width, 7, 2)
    y = g.node("MaxPool", [y], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])
    c = width
    for stage, n in enumerate(blocks):
        mid = width * 2**stage
        out = mid * 4
        for i in range(n):
            stride = 2 if i == 0 and stage > 0 else 1
            h = cbr(y, c, mid, 1)
            h = cbr(h, mid, mid, 3, stride)
            h = cbr(h, mid, out, 1, relu=False)
            short = cbr(y, c, out, 1, stride, relu=False) if i == 0 else y
            y = g.node("Relu", [g.node("Add", [h, short])])
            c = out
    y = g.node("GlobalAveragePool", [y])
    y = g.node("Flatten", [y], axis=1)
    w = g.weight("fc_w", (classes, c))
    b = g.weight("fc_b", (classes,), scale=0.1)
    y = g.node("Gemm", [y, w, b], name="fc", transB=1)
    g.output(y, "logits", shape=[batch, classes])
    return g.model()


def squeezenet(*, batch=1, image: int = 224, classes: int = 1000, seed: int = 0) -> onnx.ModelProto:
    """SqueezeNet 1.1: 3-channel stem, fire modules (squeeze 1x1 -> expand 1x1 + 3x3, Concat),
    and a 1000-class 1x1 conv head followed by global pooling."""
    g = GraphBuilder("squeezenet", seed=seed)
    x = g.input("data", [batch, 3, image, image])
    y = g.node("Relu", [g.conv(x, 3, 64, 3, stride=2, pad=0)])
    y = g.node("MaxPool", [y], kernel_shape=[3, 3], strides=[2, 2])
    c = 64

    def fire(y, c, s, e):
        sq = g.node("Relu", [g.conv(y, c, s, 1)])
        e1 = g.node("Relu", [g.conv(sq, s, e, 1)])
        e3 = g.node("Relu", [g.conv(sq, s, e, 3)])
        return g.node("Concat", [e1, e3], axis=1), 2 * e

    for s, e in ((16, 64), (16, 64)):
        y, c = fire(y, c, s, e)
    y = g.node("MaxPool", [y], kernel_shape=[3, 3], strides=[2, 2])
    for s, e in ((32, 128), (32, 128)):
        y, c = fire(y, c, s, e)
    y = g.node("Relu", [g.conv(y, c, classes, 1, name="classifier_conv")])
    y = g.node("GlobalAveragePool", [y])
    y = g.node("Flatten", [y], axis=1)
    g.output(y, "probs_in", shape=[batch, classes])
    return g.model()


def efficientnet(*, batch=1, image: int = 224, classes: int = 1000, seed: int = 0,
                 stages=((1, 16, 1, 1, 8), (6, 24, 2, 2, 4), (6, 40, 2, 2, 10), (6, 80, 1, 2, 28))) -> onnx.ModelProto:
    """EfficientNet-B0-style: 3-channel stem (32), MBConv blocks (expand 1x1, depthwise 3x3,
    squeeze-excitation with small 1x1 convs such as 4, 8, 10 or 28 channels, project 1x1 with
    Sigmoid-gated Mul), a 1x1 head conv and a 1000-class 1x1 conv head.
    ``stages``: (expand ratio, out channels, repeats, stride, SE channels)."""
    g = GraphBuilder("efficientnet", seed=seed)
    x = g.input("images", [batch, 3, image, image])

    def swish(t):
        return g.node("Mul", [t, g.node("Sigmoid", [t])])

    y = swish(g.bn(g.conv(x, 3, 32, 3, stride=2, bias=False), 32))
    c = 32
    for expand, out, repeats, stride, se in stages:
        for i in range(repeats):
            s = stride if i == 0 else 1
            mid = c * expand
            h = swish(g.bn(g.conv(y, c, mid, 1, bias=False), mid)) if expand != 1 else y
            h = swish(g.bn(g.conv(h, mid, mid, 3, stride=s, groups=mid, bias=False), mid))
            pooled = g.node("GlobalAveragePool", [h])
            r = swish(g.conv(pooled, mid, se, 1))
            gate = g.node("Sigmoid", [g.conv(r, se, mid, 1)])
            h = g.node("Mul", [h, gate])
            h = g.bn(g.conv(h, mid, out, 1, bias=False), out)
            if s == 1 and c == out:
                h = g.node("Add", [h, y])
            y, c = h, out
    y = swish(g.bn(g.conv(y, c, 320, 1, bias=False), 320))
    y = g.node("GlobalAveragePool", [y])
    y = g.conv(y, 320, classes, 1, name="head_conv")
    y = g.node("Flatten", [y], axis=1)
    g.output(y, "logits", shape=[batch, classes])
    return g.model()


def densenet(*, batch=1, image: int = 64, growth: int = 12, layers=(3, 3), init: int = 24,
             classes: int = 10, seed: int = 0) -> onnx.ModelProto:
    """DenseNet-style: BN-Relu-Conv1x1(4g)-BN-Relu-Conv3x3(g) layers whose outputs are
    Concatenated onto their input along channels; transitions halve channels."""
    g = GraphBuilder("densenet", seed=seed)
    x = g.input("input", [batch, 3, image, image])
    y = g.conv(x, 3, init, 3, bias=False)
    c = init
    for bi, n in enumerate(layers):
        for _ in range(n):
            h = g.conv(g.node("Relu", [g.bn(y, c)]), c, 4 * growth, 1, bias=False)
            h = g.conv(g.node("Relu", [g.bn(h, 4 * growth)]), 4 * growth, growth, 3, bias=False)
            y = g.node("Concat", [y, h], axis=1)
            c += growth
        if bi != len(layers) - 1:
            out = c // 2
            y = g.conv(g.node("Relu", [g.bn(y, c)]), c, out, 1, bias=False)
            y = g.node("AveragePool", [y], kernel_shape=[2, 2], strides=[2, 2])
            c = out
    y = g.node("GlobalAveragePool", [g.node("Relu", [g.bn(y, c)])])
    y = g.node("Flatten", [y], axis=1)
    y = g.node("Gemm", [y, g.weight("fc_w", (classes, c)), g.weight("fc_b", (classes,))], transB=1, name="classifier")
    g.output(y, "logits", shape=[batch, classes])
    return g.model()


# ------------------------------------------------------------------------------------------
# Transformers
# ------------------------------------------------------------------------------------------
def _attention(g: GraphBuilder, x: str, *, hidden: int, heads: int, kv_heads: int, batch, seq,
               fused_qkv: bool, transposed: bool, bias: bool) -> str:
    head = hidden // heads
    if fused_qkv:  # GPT-2 Conv1D: one [hidden, 3*hidden] weight, then Split
        qkv = g.linear(x, hidden, 3 * hidden, bias=bias, name=g.uid("c_attn"))
        q, k, v = g.node("Split", [qkv, g.ints("split", [hidden] * 3)], axis=-1, n_out=3)
    else:
        q = g.linear(x, hidden, hidden, bias=bias, transposed=transposed, name=g.uid("q_proj"))
        k = g.linear(x, hidden, kv_heads * head, bias=bias, transposed=transposed, name=g.uid("k_proj"))
        v = g.linear(x, hidden, kv_heads * head, bias=bias, transposed=transposed, name=g.uid("v_proj"))

    def heads_of(t, n):
        t = g.node("Reshape", [t, g.ints("shape", [0, 0, n, head])])
        return g.node("Transpose", [t], perm=[0, 2, 1, 3])

    q, k, v = heads_of(q, heads), heads_of(k, kv_heads), heads_of(v, kv_heads)
    if kv_heads != heads:  # GQA: repeat kv heads
        rep = heads // kv_heads
        k = g.node("Reshape", [g.node("Tile", [g.node("Unsqueeze", [k, g.ints("ax", [2])]), g.ints("reps", [1, 1, rep, 1, 1])]), g.ints("shape", [0, heads, -1, head])])
        v = g.node("Reshape", [g.node("Tile", [g.node("Unsqueeze", [v, g.ints("ax", [2])]), g.ints("reps", [1, 1, rep, 1, 1])]), g.ints("shape", [0, heads, -1, head])])
    kt = g.node("Transpose", [k], perm=[0, 1, 3, 2])
    scores = g.node("MatMul", [q, kt], name=g.uid("attn_qk"))
    scores = g.node("Mul", [scores, g.const("scale", np.float32(1.0 / np.sqrt(head)))])
    probs = g.node("Softmax", [scores], axis=-1)
    ctx = g.node("MatMul", [probs, v], name=g.uid("attn_pv"))
    ctx = g.node("Transpose", [ctx], perm=[0, 2, 1, 3])
    ctx = g.node("Reshape", [ctx, g.ints("shape", [0, 0, hidden])])
    return g.linear(ctx, hidden, hidden, bias=bias, transposed=transposed, name=g.uid("o_proj"))


def gpt2(*, layers: int = 2, hidden: int = 768, heads: int = 12, vocab: int = 50257,
         ffn: int | None = None, batch="batch", seq="seq", seed: int = 0,
         weights: str = "random", data_path=None) -> onnx.ModelProto:
    """GPT-2 as exported by PyTorch: token + position embeddings (Gather), pre-LN blocks with a
    fused c_attn, GELU MLP, and a tied LM head: MatMul(h, Transpose(wte)) with N = vocab."""
    g = GraphBuilder("gpt2", seed=seed, weights=weights, data_path=data_path)
    ids = g.input("input_ids", [batch, seq], TensorProto.INT64)
    wte = g.weight("wte", (vocab, hidden), scale=0.02)
    x = g.node("Gather", [wte, ids], name="wte_gather")
    for _ in range(layers):
        a = _attention(g, g.layer_norm(x, hidden), hidden=hidden, heads=heads, kv_heads=heads,
                       batch=batch, seq=seq, fused_qkv=True, transposed=False, bias=True)
        x = g.node("Add", [x, a])
        h = g.linear(g.layer_norm(x, hidden), hidden, ffn or 4 * hidden, name=g.uid("c_fc"))
        h = g.node("Gelu", [h], domain="", approximate="tanh") if False else _gelu(g, h)
        x = g.node("Add", [x, g.linear(h, ffn or 4 * hidden, hidden, name=g.uid("c_proj"))])
    x = g.layer_norm(x, hidden)
    tied = g.node("Transpose", [wte], perm=[1, 0], name="lm_head_weight_T")
    logits = g.node("MatMul", [x, tied], name="lm_head")
    g.output(logits, "logits", shape=[batch, seq, vocab])
    return g.model()


def _gelu(g: GraphBuilder, x: str) -> str:
    # the erf form PyTorch exports at opset < 20
    e = g.node("Erf", [g.node("Div", [x, g.const("sqrt2", np.float32(np.sqrt(2.0)))])])
    return g.node("Mul", [g.node("Mul", [x, g.node("Add", [e, g.const("one", np.float32(1.0))])]), g.const("half", np.float32(0.5))])


def llama(*, layers: int = 2, hidden: int = 2048, heads: int = 32, kv_heads: int = 4,
          ffn: int = 5632, vocab: int = 32000, batch="batch", seq="seq", seed: int = 0,
          weights: str = "random", data_path=None, transposed: bool = True) -> onnx.ModelProto:
    """LLaMA as exported by PyTorch: RMSNorm, q/k/v/o projections as MatMul(x, Transpose(W)),
    grouped-query attention, SwiGLU MLP (gate/up/down) and an untied LM head.
    Defaults are TinyLlama-1.1B's; LLaMA-7B is hidden 4096, heads 32, kv 32, ffn 11008, 32 layers."""
    g = GraphBuilder("llama", seed=seed, weights=weights, data_path=data_path)
    ids = g.input("input_ids", [batch, seq], TensorProto.INT64)
    x = g.node("Gather", [g.weight("embed_tokens", (vocab, hidden), scale=0.02), ids])
    for _ in range(layers):
        a = _attention(g, g.rms_norm(x, hidden), hidden=hidden, heads=heads, kv_heads=kv_heads,
                       batch=batch, seq=seq, fused_qkv=False, transposed=transposed, bias=False)
        x = g.node("Add", [x, a])
        h = g.rms_norm(x, hidden)
        gate = g.linear(h, hidden, ffn, bias=False, transposed=transposed, name=g.uid("gate_proj"))
        up = g.linear(h, hidden, ffn, bias=False, transposed=transposed, name=g.uid("up_proj"))
        act = g.node("Mul", [gate, g.node("Sigmoid", [gate])])
        down = g.linear(g.node("Mul", [act, up]), ffn, hidden, bias=False, transposed=transposed,
                        name=g.uid("down_proj"))
        x = g.node("Add", [x, down])
    x = g.rms_norm(x, hidden)
    logits = g.linear(x, hidden, vocab, bias=False, transposed=transposed, name="lm_head")
    g.output(logits, "logits", shape=[batch, seq, vocab])
    return g.model()


def llama_mlp(*, hidden: int = 1024, ffn: int = 2730, batch=1, seq=16, seed: int = 0) -> onnx.ModelProto:
    """One LLaMA SwiGLU MLP block with a residual: the FFN=2730 case (2/3 * 4 * 1024)."""
    g = GraphBuilder("llama_mlp", seed=seed)
    x = g.input("hidden_states", [batch, seq, hidden])
    h = g.rms_norm(x, hidden)
    gate = g.linear(h, hidden, ffn, bias=False, transposed=True, name="gate_proj")
    up = g.linear(h, hidden, ffn, bias=False, transposed=True, name="up_proj")
    act = g.node("Mul", [gate, g.node("Sigmoid", [gate])])
    down = g.linear(g.node("Mul", [act, up]), ffn, hidden, bias=False, transposed=True, name="down_proj")
    g.output(g.node("Add", [x, down]), "out", shape=[batch, seq, hidden])
    return g.model()


# ------------------------------------------------------------------------------------------
# Single layers (rule fixtures)
# ------------------------------------------------------------------------------------------
def single_gemm(*, m=64, n=64, k=64, transposed: bool = False, op: str = "MatMul", seed: int = 0) -> onnx.ModelProto:
    g = GraphBuilder(f"gemm_{m}x{n}x{k}", seed=seed)
    x = g.input("x", [m, k])
    if op == "Gemm":
        y = g.node("Gemm", [x, g.weight("w", (n, k)), g.weight("b", (n,))], name="gemm", transB=1)
    else:
        y = g.linear(x, k, n, bias=False, transposed=transposed, name="matmul")
    y = g.node("Relu", [y])
    g.output(y, "y", shape=[m, n])
    return g.model()


def single_conv(*, c=16, k=16, batch=1, image: int = 32, kernel: int = 3, groups: int = 1,
                pre: str | None = "Relu", seed: int = 0) -> onnx.ModelProto:
    """A conv whose input is *not* a graph input directly (``pre`` op in between, then a conv
    from 16 channels) unless ``pre`` is None: then it is a first layer."""
    g = GraphBuilder(f"conv_{c}_{k}", seed=seed)
    if pre is None:
        x = g.input("x", [batch, c, image, image])
    else:
        x = g.input("x", [batch, 16, image, image])
        x = g.node(pre, [g.conv(x, 16, c, 1, name="stem")])
    y = g.conv(x, c, k, kernel, groups=groups, name="conv")
    g.output(g.node("Relu", [y]), "y", shape=[batch, k, image, image])
    return g.model()


BUILDERS = {
    "resnet50": resnet50, "squeezenet": squeezenet, "efficientnet": efficientnet,
    "densenet": densenet, "gpt2": gpt2, "llama": llama, "llama_mlp": llama_mlp,
}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tclint.examples", description=__doc__.splitlines()[0])
    p.add_argument("name", choices=sorted(BUILDERS))
    p.add_argument("-o", "--output", required=True)
    p.add_argument("--layers", type=int, help="transformer layers")
    p.add_argument("--image", type=int, help="CNN input size")
    args = p.parse_args(argv)
    kwargs = {}
    if args.layers is not None:
        kwargs["layers"] = args.layers
    if args.image is not None:
        kwargs["image"] = args.image
    model = BUILDERS[args.name](**kwargs)
    onnx.save(model, args.output)
    print(f"wrote {args.output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
