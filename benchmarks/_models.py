"""Model generators for the FP16 conversion benchmarks (and small sizes for tests).

Every generator returns an ``onnx.ModelProto`` with float32 random weights (numpy, seeded) and
is parametric, so the same architecture can be built at real width (benchmarks) or tiny (tests).
Shapes follow the public architectures: ResNet-50 (bottlenecks [3, 4, 6, 3], widths 64-2048),
ViT-B/16 (768 wide, 12 heads, MLP 3072, 16x16 patches), GPT-2 small (768 wide, 12 heads,
vocab 50257, decomposed LayerNorm with eps 1e-5, causal mask filled with float32 min).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17
IR_VERSION = 9  # onnxruntime 1.2x-1.3x accept up to IR 10/13


class GraphBuilder:
    """Tiny helper over onnx.helper: named nodes, numpy initializers, unique names."""

    def __init__(self, seed: int = 0) -> None:
        self.rng = np.random.default_rng(seed)
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.n = 0

    def name(self, base: str) -> str:
        self.n += 1
        return f"{base}_{self.n}"

    def const(self, base: str, array) -> str:
        name = self.name(base)
        self.inits.append(numpy_helper.from_array(np.asarray(array), name))
        return name

    def weight(self, base: str, shape, fan_in: int | None = None, gain: float = 1.0) -> str:
        fan_in = fan_in or int(np.prod(shape[1:])) or 1
        std = gain * math.sqrt(1.0 / fan_in)
        return self.const(base, (self.rng.standard_normal(shape) * std).astype(np.float32))

    def op(self, op_type: str, inputs, n_out: int = 1, name: str | None = None, **attrs):
        node_name = name or self.name(op_type)
        outs = [f"{node_name}_out{i}" if n_out > 1 else f"{node_name}_out" for i in range(n_out)]
        self.nodes.append(helper.make_node(op_type, list(inputs), outs, name=node_name, **attrs))
        return outs if n_out > 1 else outs[0]

    def model(self, inputs, outputs, *, opset: int = OPSET, functions=()) -> onnx.ModelProto:
        graph = helper.make_graph(
            self.nodes,
            "g",
            [helper.make_tensor_value_info(n, t, s) for n, t, s in inputs],
            [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in outputs],
            self.inits,
        )
        model = helper.make_model(
            graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=IR_VERSION,
            functions=list(functions),
        )
        return model


F = TensorProto.FLOAT


# --------------------------------------------------------------------------------------------
# CNNs
# --------------------------------------------------------------------------------------------
def resnet(
    *, blocks=(3, 4, 6, 3), width: int = 64, image: int = 224, batch: int = 1, classes: int = 1000,
    seed: int = 0, hot_stage: int | None = None, hot_gain: float = 3000.0,
) -> onnx.ModelProto:
    """ResNet-50-shaped CNN (BatchNorm folded into Conv, as exported for inference).

    ``hot_stage``: after that stage, a residual branch whose activations exceed the FP16 range
    (``hot/*`` nodes: scale up, conv, square, scale down), as in :func:`hot_cnn`.
    """
    b = GraphBuilder(seed)

    def conv(x, cin, cout, k, stride=1, relu=True, gain=1.0):
        w = b.weight("conv_w", (cout, cin, k, k), gain=gain * math.sqrt(2.0))
        bias = b.const("conv_b", (b.rng.standard_normal(cout) * 0.01).astype(np.float32))
        y = b.op("Conv", [x, w, bias], kernel_shape=[k, k], strides=[stride, stride],
                 pads=[k // 2] * 4)
        return b.op("Relu", [y]) if relu else y

    x = conv("input", 3, width, 7, 2)
    x = b.op("MaxPool", [x], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])
    cin = width
    for stage, n in enumerate(blocks):
        mid = width * 2**stage
        cout = mid * 4
        for i in range(n):
            stride = 2 if (i == 0 and stage > 0) else 1
            y = conv(x, cin, mid, 1)
            y = conv(y, mid, mid, 3, stride)
            y = conv(y, mid, cout, 1, relu=False, gain=0.2)
            short = conv(x, cin, cout, 1, stride, relu=False) if i == 0 else x
            x = b.op("Relu", [b.op("Add", [y, short])])
            cin = cout
        if stage == hot_stage:
            h = b.op("Mul", [x, b.const("gain", np.array(hot_gain, np.float32))], name="hot/scale_up")
            w = b.weight("hot_w", (cout, cout, 1, 1), gain=1.0)
            h = b.op("Conv", [h, w], name="hot/conv", kernel_shape=[1, 1])
            h = b.op("Mul", [h, h], name="hot/square")
            inv = b.const("inv", np.array(1.0 / hot_gain**2, np.float32))
            h = b.op("Mul", [h, inv], name="hot/scale_down")
            x = b.op("Add", [x, h], name="hot/merge")
    x = b.op("GlobalAveragePool", [x])
    x = b.op("Flatten", [x], axis=1)
    w = b.weight("fc_w", (classes, cin), fan_in=cin)
    bias = b.const("fc_b", np.zeros(classes, np.float32))
    logits = b.op("Gemm", [x, w, bias], name="logits", transB=1)
    return b.model([("input", F, [batch, 3, image, image])], [(logits, [batch, classes])])


def hot_cnn(*, channels: int = 16, image: int = 32, hot_gain: float = 3000.0, seed: int = 0):
    """A small CNN with one block whose activations exceed the FP16 range (then scaled back).

    ``hot/*`` nodes are the ones that must stay float32: in FP16 their outputs overflow to inf.
    """
    b = GraphBuilder(seed)

    def conv(x, cin, cout, name):
        w = b.weight("w", (cout, cin, 3, 3), gain=math.sqrt(2.0))
        bias = b.const("b", np.zeros(cout, np.float32))
        return b.op("Conv", [x, w, bias], name=name, kernel_shape=[3, 3], pads=[1, 1, 1, 1])

    x = b.op("Relu", [conv("input", 3, channels, "conv1")], name="relu1")
    x = b.op("Relu", [conv(x, channels, channels, "conv2")], name="relu2")
    g = b.const("gain", np.array(hot_gain, np.float32))
    h = b.op("Mul", [x, g], name="hot/scale_up")
    h = conv(h, channels, channels, "hot/conv")
    h = b.op("Mul", [h, h], name="hot/square")
    inv = b.const("inv", np.array(1.0 / hot_gain**2, np.float32))
    h = b.op("Mul", [h, inv], name="hot/scale_down")
    x = b.op("Add", [x, h], name="merge")
    x = b.op("Relu", [conv(x, channels, channels, "conv3")], name="relu3")
    x = b.op("GlobalAveragePool", [x], name="gap")
    x = b.op("Flatten", [x], name="flatten", axis=1)
    w = b.weight("fc_w", (10, channels), fan_in=channels)
    out = b.op("Gemm", [x, w, b.const("fc_b", np.zeros(10, np.float32))], name="fc", transB=1)
    return b.model([("input", F, [1, 3, image, image])], [(out, [1, 10])])


# --------------------------------------------------------------------------------------------
# Transformers
# --------------------------------------------------------------------------------------------
def _attention(b: GraphBuilder, x, width, heads, seq, *, causal_mask=None):
    hd = width // heads
    qkv = b.op("MatMul", [x, b.weight("qkv_w", (width, 3 * width), fan_in=width)])
    qkv = b.op("Add", [qkv, b.const("qkv_b", np.zeros(3 * width, np.float32))])
    qkv = b.op("Reshape", [qkv, b.const("shape", np.array([0, seq, 3, heads, hd], np.int64))])
    qkv = b.op("Transpose", [qkv], perm=[2, 0, 3, 1, 4])
    q, k, v = b.op("Split", [qkv], n_out=3, axis=0)
    sq = b.const("axes", np.array([0], np.int64))
    q, k, v = (b.op("Squeeze", [t, sq]) for t in (q, k, v))
    kt = b.op("Transpose", [k], perm=[0, 1, 3, 2])
    scores = b.op("MatMul", [q, kt])
    scores = b.op("Mul", [scores, b.const("scale", np.array(1 / math.sqrt(hd), np.float32))])
    if causal_mask is not None:
        scores = b.op("Where", [causal_mask, scores,
                                b.const("neg", np.array(np.finfo(np.float32).min, np.float32))])
    probs = b.op("Softmax", [scores], axis=-1)
    ctx = b.op("MatMul", [probs, v])
    ctx = b.op("Transpose", [ctx], perm=[0, 2, 1, 3])
    ctx = b.op("Reshape", [ctx, b.const("shape", np.array([0, seq, width], np.int64))])
    out = b.op("MatMul", [ctx, b.weight("proj_w", (width, width), fan_in=width)])
    return b.op("Add", [out, b.const("proj_b", np.zeros(width, np.float32))])


def _layernorm(b: GraphBuilder, x, width, *, decomposed: bool, eps: float):
    scale = b.const("ln_g", np.ones(width, np.float32))
    bias = b.const("ln_b", np.zeros(width, np.float32))
    if not decomposed:
        return b.op("LayerNormalization", [x, scale, bias], axis=-1, epsilon=eps)
    mean = b.op("ReduceMean", [x], axes=[-1])
    d = b.op("Sub", [x, mean])
    var = b.op("ReduceMean", [b.op("Pow", [d, b.const("two", np.array(2.0, np.float32))])], axes=[-1])
    std = b.op("Sqrt", [b.op("Add", [var, b.const("eps", np.array(eps, np.float32))])])
    y = b.op("Div", [d, std])
    return b.op("Add", [b.op("Mul", [y, scale]), bias])


def _mlp(b: GraphBuilder, x, width, hidden, *, gelu: str):
    h = b.op("MatMul", [x, b.weight("fc1_w", (width, hidden), fan_in=width)])
    h = b.op("Add", [h, b.const("fc1_b", np.zeros(hidden, np.float32))])
    if gelu == "erf":
        e = b.op("Erf", [b.op("Div", [h, b.const("sqrt2", np.array(math.sqrt(2), np.float32))])])
        h = b.op("Mul", [b.op("Mul", [h, b.op("Add", [e, b.const("one", np.array(1, np.float32))])]),
                         b.const("half", np.array(0.5, np.float32))])
    else:  # GPT-2 gelu_new (tanh approximation, with Pow(x, 3))
        cube = b.op("Pow", [h, b.const("three", np.array(3.0, np.float32))])
        inner = b.op("Add", [h, b.op("Mul", [cube, b.const("c", np.array(0.044715, np.float32))])])
        t = b.op("Tanh", [b.op("Mul", [inner, b.const("k", np.array(math.sqrt(2 / math.pi), np.float32))])])
        h = b.op("Mul", [b.op("Mul", [h, b.const("half", np.array(0.5, np.float32))]),
                         b.op("Add", [t, b.const("one", np.array(1, np.float32))])])
    h = b.op("MatMul", [h, b.weight("fc2_w", (hidden, width), fan_in=hidden)])
    return b.op("Add", [h, b.const("fc2_b", np.zeros(width, np.float32))])


def vit(
    *, layers: int = 12, width: int = 768, heads: int = 12, mlp: int = 3072, image: int = 224,
    patch: int = 16, classes: int = 1000, batch: int = 1, seed: int = 0,
) -> onnx.ModelProto:
    """ViT-B/16-shaped encoder (LayerNormalization op, erf GELU, class token)."""
    b = GraphBuilder(seed)
    n = (image // patch) ** 2
    seq = n + 1
    x = b.op("Conv", ["input", b.weight("patch_w", (width, 3, patch, patch)),
                      b.const("patch_b", np.zeros(width, np.float32))],
             kernel_shape=[patch, patch], strides=[patch, patch])
    x = b.op("Reshape", [x, b.const("shape", np.array([batch, width, n], np.int64))])
    x = b.op("Transpose", [x], perm=[0, 2, 1])
    cls = b.const("cls", (b.rng.standard_normal((batch, 1, width)) * 0.02).astype(np.float32))
    x = b.op("Concat", [cls, x], axis=1)
    x = b.op("Add", [x, b.const("pos", (b.rng.standard_normal((1, seq, width)) * 0.02).astype(np.float32))])
    for _ in range(layers):
        h = _layernorm(b, x, width, decomposed=False, eps=1e-6)
        x = b.op("Add", [x, _attention(b, h, width, heads, seq)])
        h = _layernorm(b, x, width, decomposed=False, eps=1e-6)
        x = b.op("Add", [x, _mlp(b, h, width, mlp, gelu="erf")])
    x = _layernorm(b, x, width, decomposed=False, eps=1e-6)
    x = b.op("Gather", [x, b.const("idx", np.array(0, np.int64))], axis=1)
    logits = b.op("Gemm", [x, b.weight("head_w", (classes, width), fan_in=width),
                           b.const("head_b", np.zeros(classes, np.float32))], name="logits", transB=1)
    return b.model([("input", F, [batch, 3, image, image])], [(logits, [batch, classes])])


def gpt2(
    *, layers: int = 12, width: int = 768, heads: int = 12, vocab: int = 50257, seq: int = 128,
    batch: int = 1, seed: int = 0,
) -> onnx.ModelProto:
    """GPT-2-shaped decoder: decomposed LayerNorm (eps 1e-5), causal mask, gelu_new, tied head."""
    b = GraphBuilder(seed)
    wte = (b.rng.standard_normal((vocab, width)) * 0.02).astype(np.float32)
    wte_name = b.const("wte", wte)
    x = b.op("Gather", [wte_name, "input_ids"], axis=0)
    x = b.op("Add", [x, b.const("wpe", (b.rng.standard_normal((1, seq, width)) * 0.01).astype(np.float32))])
    mask = b.const("causal", np.tril(np.ones((seq, seq), bool))[None, None])
    for _ in range(layers):
        h = _layernorm(b, x, width, decomposed=True, eps=1e-5)
        x = b.op("Add", [x, _attention(b, h, width, heads, seq, causal_mask=mask)])
        h = _layernorm(b, x, width, decomposed=True, eps=1e-5)
        x = b.op("Add", [x, _mlp(b, h, width, 4 * width, gelu="tanh")])
    x = _layernorm(b, x, width, decomposed=True, eps=1e-5)
    head = b.const("lm_head", np.ascontiguousarray(wte.T))
    logits = b.op("MatMul", [x, head], name="logits")
    return b.model([("input_ids", TensorProto.INT64, [batch, seq])], [(logits, [batch, seq, vocab])])


# --------------------------------------------------------------------------------------------
# Graphs with the peers' known failure modes
# --------------------------------------------------------------------------------------------
def resize_net(*, channels: int = 32, image: int = 56, seed: int = 0) -> onnx.ModelProto:
    """Conv -> Resize(scales) -> Conv (a U-Net/FPN decoder step)."""
    b = GraphBuilder(seed)
    x = b.op("Relu", [b.op("Conv", ["input", b.weight("w", (channels, 3, 3, 3)), b.const("b", np.zeros(channels, np.float32))],
                           kernel_shape=[3, 3], pads=[1, 1, 1, 1])])
    scales = b.const("scales", np.array([1, 1, 2, 2], np.float32))
    up = b.op("Resize", [x, "", scales], name="upsample", mode="linear")
    y = b.op("Conv", [up, b.weight("w", (channels, channels, 3, 3)), b.const("b", np.zeros(channels, np.float32))],
             name="out", kernel_shape=[3, 3], pads=[1, 1, 1, 1])
    return b.model([("input", F, [1, 3, image, image])], [(y, [1, channels, 2 * image, 2 * image])])


def control_flow_net(*, width: int = 64, steps: int = 3, seed: int = 0) -> onnx.ModelProto:
    """If (branches read an outer-scope weight) followed by a Loop carrying a float state."""
    b = GraphBuilder(seed)
    w = b.weight("w_outer", (width, width), fan_in=width)
    h = b.op("MatMul", ["input", w], name="pre")
    s = b.op("ReduceSum", [h], name="total", keepdims=0)
    cond = b.op("Greater", [s, b.const("zero", np.array(0, np.float32))], name="cond")

    def branch(name, op):
        out = f"{name}_y"
        nodes = [helper.make_node("MatMul", [h, w], [f"{name}_m"], name=f"{name}/matmul"),
                 helper.make_node(op, [f"{name}_m"], [out], name=f"{name}/act")]
        return helper.make_graph(nodes, name, [], [helper.make_tensor_value_info(out, F, None)])

    y = b.op("If", [cond], name="branch", then_branch=branch("then", "Relu"),
             else_branch=branch("else", "Tanh"))
    body_nodes = [
        helper.make_node("MatMul", ["state_in", w], ["m"], name="loop/matmul"),
        helper.make_node("Tanh", ["m"], ["state_out"], name="loop/tanh"),
        helper.make_node("Identity", ["cond_in"], ["loop_cond_out"], name="loop/cond"),
    ]
    body = helper.make_graph(
        body_nodes, "body",
        [helper.make_tensor_value_info("iter", TensorProto.INT64, []),
         helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
         helper.make_tensor_value_info("state_in", F, None)],
        [helper.make_tensor_value_info("loop_cond_out", TensorProto.BOOL, []),
         helper.make_tensor_value_info("state_out", F, None)],
    )
    trip = b.const("trip", np.array(steps, np.int64))
    true = b.const("true", np.array(True))
    out = b.op("Loop", [trip, true, y], name="loop", body=body)
    return b.model([("input", F, [4, width])], [(out, [4, width])])


def layernorm_net(*, width: int = 64, seq: int = 16, seed: int = 0) -> onnx.ModelProto:
    """LayerNormalization op, then a BERT-style decomposed LayerNorm with eps 1e-12."""
    b = GraphBuilder(seed)
    x = b.op("MatMul", ["input", b.weight("w", (width, width), fan_in=width)], name="proj")
    x = _layernorm(b, x, width, decomposed=False, eps=1e-5)
    x = b.op("MatMul", [x, b.weight("w", (width, width), fan_in=width)], name="proj2")
    x = _layernorm(b, x, width, decomposed=True, eps=1e-12)
    return b.model([("input", F, [1, seq, width])], [(x, [1, seq, width])])


def save_with_external_data(model: onnx.ModelProto, path: str | Path) -> Path:
    """Save ``model`` with every initializer in ``<name>.data`` beside it."""
    path = Path(path)
    onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                    location=path.name + ".data", size_threshold=0)
    return path


def big_mlp(*, total_bytes: int = 2_200_000_000, width: int = 8192, seed: int = 0) -> onnx.ModelProto:
    """An MLP with more than 2 GB of float32 weights (must be saved with external data)."""
    b = GraphBuilder(seed)
    layer_bytes = width * width * 4
    n = max(1, -(-total_bytes // layer_bytes))
    x = "input"
    for _ in range(n):
        w = (b.rng.standard_normal((width, width), dtype=np.float32) * (1 / math.sqrt(width)))
        x = b.op("MatMul", [x, b.const("w", w)])
    return b.model([("input", F, [1, width])], [(x, [1, width])])


MODELS = {
    "resnet50": lambda: resnet(),
    "vit_b16": lambda: vit(),
    "gpt2": lambda: gpt2(layers=4),
    "resize": lambda: resize_net(),
    "if_loop": lambda: control_flow_net(),
    "layernorm": lambda: layernorm_net(),
}
