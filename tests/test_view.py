"""The GEMM view: M/N/K/batch/groups for every GEMM-like op, wherever exporters put weights."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper

from tclint import examples
from tests.helpers import analyse_proto, init, model, onnx_test_data, vi


def _layers(m, tmp_path, **opts):
    return analyse_proto(m, tmp_path, **opts).view


def _one(m, tmp_path, **opts):
    view = _layers(m, tmp_path, **opts)
    assert len(view.layers) == 1, view.layers
    return view.layers[0]


def test_matmul_2d_weight_flattens_leading_dims(tmp_path):
    m = model([helper.make_node("MatMul", ["x", "w"], ["y"], name="fc")],
              [vi("x", [4, 128, 768])], [vi("y", None)], [init("w", (768, 3072))])
    layer = _one(m, tmp_path)
    assert (layer.m, layer.n, layer.k, layer.batch) == (512, 3072, 768, 1)
    assert layer.weight_dims == {"N", "K"}
    assert layer.flops == 2 * 512 * 3072 * 768


@pytest.mark.parametrize("chain", ["Transpose", "Cast", "Identity", "Reshape", "DequantizeLinear"])
def test_weight_behind_exporter_chains(tmp_path, chain):
    nodes, inits = [], []
    if chain == "Transpose":
        inits.append(init("w0", (50, 64)))
        nodes.append(helper.make_node("Transpose", ["w0"], ["w"], perm=[1, 0]))
    elif chain == "Cast":
        inits.append(init("w0", (64, 50), np.float16))
        nodes.append(helper.make_node("Cast", ["w0"], ["w"], to=TensorProto.FLOAT))
    elif chain == "Identity":
        inits.append(init("w0", (64, 50)))
        nodes.append(helper.make_node("Identity", ["w0"], ["w"]))
    elif chain == "Reshape":
        inits += [init("w0", (3200,)), init("s", (2,), np.int64, [64, 50])]
        nodes.append(helper.make_node("Reshape", ["w0", "s"], ["w"]))
    else:
        inits += [init("w0", (64, 50), np.int8), init("sc", (), np.float32, 0.1)]
        nodes.append(helper.make_node("DequantizeLinear", ["w0", "sc"], ["w"]))
    nodes.append(helper.make_node("MatMul", ["x", "w"], ["y"], name="fc"))
    layer = _one(model(nodes, [vi("x", [8, 64])], [vi("y", None)], inits), tmp_path)
    assert (layer.m, layer.n, layer.k) == (8, 50, 64)
    assert "N" in layer.weight_dims


def test_constant_node_and_constant_of_shape_weights(tmp_path):
    value = helper.make_tensor("v", TensorProto.FLOAT, [1], [0.02])
    nodes = [
        helper.make_node("ConstantOfShape", ["wshape"], ["w"], value=value),
        helper.make_node("MatMul", ["x", "w"], ["y"], name="fc"),
        helper.make_node("Constant", [], ["w2"], value=helper.make_tensor("c", TensorProto.FLOAT, [10, 6], [0.0] * 60)),
        helper.make_node("MatMul", ["y", "w2"], ["z"], name="fc2"),
    ]
    m = model(nodes, [vi("x", [4, 16])], [vi("z", None)], [init("wshape", (2,), np.int64, [16, 10])])
    view = _layers(m, tmp_path)
    dims = {layer.name: (layer.m, layer.n, layer.k) for layer in view.layers}
    assert dims == {"fc": (4, 10, 16), "fc2": (4, 6, 10)}
    assert all("N" in layer.weight_dims for layer in view.layers)


@pytest.mark.parametrize("trans_a,trans_b", [(0, 0), (0, 1), (1, 0), (1, 1)])
def test_gemm_transposes(tmp_path, trans_a, trans_b):
    a_shape = [24, 8] if trans_a else [8, 24]
    b_shape = (40, 24) if trans_b else (24, 40)
    m = model([helper.make_node("Gemm", ["a", "b"], ["y"], transA=trans_a, transB=trans_b)],
              [vi("a", a_shape)], [vi("y", None)], [init("b", b_shape)])
    layer = _one(m, tmp_path)
    assert (layer.m, layer.n, layer.k) == (8, 40, 24)


def test_batched_attention_matmuls(tmp_path):
    nodes = [
        helper.make_node("MatMul", ["q", "kt"], ["s"], name="qk"),
        helper.make_node("Softmax", ["s"], ["p"], axis=-1),
        helper.make_node("MatMul", ["p", "v"], ["o"], name="pv"),
    ]
    m = model(nodes, [vi("q", [2, 12, 128, 72]), vi("kt", [2, 12, 72, 128]), vi("v", [2, 12, 128, 72])],
              [vi("o", None)])
    view = _layers(m, tmp_path)
    qk, pv = view.layers
    assert (qk.m, qk.n, qk.k, qk.batch, qk.role) == (128, 128, 72, 24, "attention_qk")
    assert (pv.m, pv.n, pv.k, pv.batch, pv.role) == (128, 72, 128, 24, "attention_pv")
    assert qk.weight_dims == frozenset()


@pytest.mark.parametrize("dims,groups,expect", [
    ((1, 3, 224, 224), 1, dict(m=112 * 112, n=64, k=3 * 49, batch=1, c=3, kk=64)),
    ((2, 32, 56, 56), 32, dict(m=2 * 28 * 28, n=1, k=49, batch=32, c=32, kk=32)),  # depthwise
    ((1, 64, 56, 56), 4, dict(m=28 * 28, n=16, k=16 * 49, batch=4, c=64, kk=64)),  # grouped
])
def test_conv_implicit_gemm(tmp_path, dims, groups, expect):
    c = dims[1]
    k = expect["kk"]
    m = model([helper.make_node("Conv", ["x", "w"], ["y"], kernel_shape=[7, 7], strides=[2, 2],
                                pads=[3, 3, 3, 3], group=groups)],
              [vi("x", list(dims))], [vi("y", None)], [init("w", (k, c // groups, 7, 7))])
    layer = _one(m, tmp_path)
    assert (layer.m, layer.n, layer.k, layer.batch) == (expect["m"], expect["n"], expect["k"], expect["batch"])
    assert (layer.conv.c, layer.conv.k, layer.conv.groups) == (expect["c"], expect["kk"], groups)
    assert layer.conv.depthwise == (groups == c)
    assert layer.conv.first_layer


def test_conv_1d_3d_and_transpose(tmp_path):
    m = model([
        helper.make_node("Conv", ["x1", "w1"], ["y1"], kernel_shape=[3], pads=[1, 1]),
        helper.make_node("Conv", ["x3", "w3"], ["y3"], kernel_shape=[3, 3, 3], pads=[1] * 6),
        helper.make_node("ConvTranspose", ["x2", "wt"], ["y2"], kernel_shape=[2, 2], strides=[2, 2]),
    ], [vi("x1", [1, 20, 100]), vi("x3", [1, 8, 4, 8, 8]), vi("x2", [1, 64, 8, 8])],
        [vi("y1", None), vi("y3", None), vi("y2", None)],
        [init("w1", (30, 20, 3)), init("w3", (16, 8, 3, 3, 3)), init("wt", (64, 24, 2, 2))])
    l1, l3, lt = _layers(m, tmp_path).layers
    assert (l1.m, l1.n, l1.k) == (100, 30, 60)
    assert (l3.m, l3.n, l3.k) == (4 * 8 * 8, 16, 8 * 27)
    assert (lt.conv.c, lt.conv.k, lt.m) == (64, 24, 256)


def test_integer_and_quantized_ops(tmp_path):
    u8 = TensorProto.UINT8
    nodes = [
        helper.make_node("MatMulInteger", ["a", "b"], ["y1"], name="mmi"),
        helper.make_node("QLinearMatMul", ["a", "s", "z", "b", "s", "zi", "s", "z"], ["y2"], name="qmm"),
        helper.make_node("ConvInteger", ["x", "w"], ["y3"], name="convi", kernel_shape=[1, 1]),
        helper.make_node("QLinearConv", ["x", "s", "z", "w", "s", "zi", "s", "z"], ["y4"], name="qconv", kernel_shape=[1, 1]),
    ]
    m = model(nodes, [vi("a", [16, 40], u8), vi("x", [1, 24, 8, 8], u8)],
              [vi(n, None, t) for n, t in (("y1", TensorProto.INT32), ("y2", u8), ("y3", TensorProto.INT32), ("y4", u8))],
              [init("b", (40, 20), np.int8), init("w", (36, 24, 1, 1), np.int8), init("s", (), np.float32, 0.1),
               init("z", (), np.uint8, 0), init("zi", (), np.int8, 0)])
    view = _layers(m, tmp_path)
    got = {layer.name: (layer.m, layer.n, layer.k, layer.precision) for layer in view.layers}
    assert got == {"mmi": (16, 20, 40, "int8"), "qmm": (16, 20, 40, "int8"),
                   "convi": (64, 36, 24, "int8"), "qconv": (64, 36, 24, "int8")}


def test_einsum_contraction(tmp_path):
    m = model([helper.make_node("Einsum", ["a", "b"], ["y"], equation="bhqd,bhkd->bhqk", name="ein")],
              [vi("a", [2, 4, 32, 40]), vi("b", [2, 4, 16, 40])], [vi("y", None)])
    layer = _one(m, tmp_path)
    assert (layer.m, layer.n, layer.k, layer.batch) == (32, 16, 40, 8)


def test_lstm_and_gru_gates(tmp_path):
    m = model([
        helper.make_node("LSTM", ["x", "w", "r"], ["y"], hidden_size=100, name="lstm"),
        helper.make_node("GRU", ["x", "wg", "rg"], ["yg"], hidden_size=50, name="gru"),
    ], [vi("x", [10, 4, 30])], [vi("y", None), vi("yg", None)],
        [init("w", (1, 400, 30)), init("r", (1, 400, 100)), init("wg", (1, 150, 30)), init("rg", (1, 150, 50))])
    got = {(layer.name, layer.part): (layer.m, layer.n, layer.k, layer.batch) for layer in _layers(m, tmp_path).layers}
    assert got == {("lstm", "input"): (40, 400, 30, 1), ("lstm", "recurrent"): (4, 400, 100, 10),
                   ("gru", "input"): (40, 150, 30, 1), ("gru", "recurrent"): (4, 150, 50, 10)}


def test_com_microsoft_ops(tmp_path):
    ms = "com.microsoft"
    nodes = [
        helper.make_node("FusedMatMul", ["a", "wb"], ["y1"], domain=ms, transB=1, name="fmm"),
        helper.make_node("FusedConv", ["x", "wc"], ["y2"], domain=ms, kernel_shape=[3, 3], pads=[1] * 4, activation="Relu", name="fconv"),
        helper.make_node("NhwcConv", ["xh", "wh"], ["y3"], domain=ms, kernel_shape=[3, 3], pads=[1] * 4, name="nhwc"),
        helper.make_node("Attention", ["h", "wqkv", "bqkv"], ["y4"], domain=ms, num_heads=12, name="attn"),
        helper.make_node("MultiHeadAttention", ["q", "k", "v"], ["y5"], domain=ms, num_heads=8, name="mha"),
        helper.make_node("GroupQueryAttention", ["q", "kg", "vg", "", "", "sl", "ts"], ["y6", "pk", "pv"], domain=ms, num_heads=8, kv_num_heads=2, name="gqa"),
        helper.make_node("MatMulNBits", ["h", "qw", "qs"], ["y7"], domain=ms, K=768, N=2730, bits=4, block_size=32, name="nbits"),
    ]
    m = model(nodes,
              [vi("a", [16, 64]), vi("x", [1, 20, 16, 16]), vi("xh", [1, 16, 16, 20]), vi("h", [2, 64, 768]),
               vi("q", [2, 64, 512]), vi("k", [2, 64, 512]), vi("v", [2, 64, 512]),
               vi("kg", [2, 64, 128]), vi("vg", [2, 64, 128]), vi("sl", [2], TensorProto.INT32), vi("ts", [], TensorProto.INT32)],
              [vi(f"y{i}", None) for i in range(1, 8)],
              [init("wb", (48, 64)), init("wc", (40, 20, 3, 3)), init("wh", (40, 3, 3, 20)), init("wqkv", (768, 2304)), init("bqkv", (2304,)),
               init("qw", (2730, 24, 16), np.uint8), init("qs", (2730 * 24,))], ms=True)
    view = _layers(m, tmp_path)
    got = {(layer.name, layer.part): (layer.m, layer.n, layer.k, layer.batch) for layer in view.layers}
    assert got[("fmm", "")] == (16, 48, 64, 1)
    assert got[("fconv", "")] == (256, 40, 180, 1)
    assert got[("nhwc", "")] == (256, 40, 180, 1)
    assert got[("attn", "qkv")] == (128, 2304, 768, 1)
    assert got[("attn", "qk")] == (64, 64, 64, 24)
    assert got[("mha", "pv")] == (64, 64, 64, 16)
    assert got[("gqa", "qk")][2] == 64
    assert got[("nbits", "")] == (128, 2730, 768, 1)
    assert not view.uncovered


def test_subgraphs_and_functions_are_walked(tmp_path):
    then_g = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["t"], name="inner_fc")], "then",
                               [], [vi("t", [4, 24])])
    else_g = helper.make_graph([helper.make_node("Identity", ["x"], ["e"])], "else", [], [vi("e", [4, 16])])
    fn = helper.make_function("custom", "Proj", ["a", "b"], ["c"],
                              [helper.make_node("MatMul", ["a", "b"], ["c"], name="fn_fc")],
                              [helper.make_opsetid("", 17)])
    nodes = [
        helper.make_node("If", ["cond"], ["z"], then_branch=then_g, else_branch=else_g, name="branch"),
        helper.make_node("Proj", ["x", "w2"], ["f"], domain="custom", name="call"),
    ]
    m = model(nodes, [vi("cond", [], TensorProto.BOOL), vi("x", [4, 16])], [vi("z", None), vi("f", None)],
              [init("w", (16, 24)), init("w2", (16, 40))], functions=[fn])
    view = _layers(m, tmp_path)
    paths = {layer.path for layer in view.layers}
    assert "branch/then_branch/inner_fc" in paths
    assert "call/fn_fc" in paths
    fc = next(layer for layer in view.layers if layer.name == "inner_fc")
    assert (fc.n, fc.k) == (24, 16)


def test_uncovered_ops_are_counted_not_dropped(tmp_path):
    m = model([helper.make_node("MyGemm", ["x"], ["y"], domain="acme"),
               helper.make_node("MyGemm", ["y"], ["z"], domain="acme"),
               helper.make_node("Einsum", ["z"], ["s"], equation="ij->i")],
              [vi("x", [4, 4])], [vi("s", None)])
    m.opset_import.append(helper.make_opsetid("acme", 1))
    view = _layers(m, tmp_path)
    assert view.uncovered == {"acme.MyGemm": 2, "Einsum": 1}


def test_model_zoo_light_resnet50(tmp_path):
    from tclint.config import CheckOptions
    from tclint.lint import analyse
    from tclint.load import load_model

    path = onnx_test_data() / "light" / "light_resnet50.onnx"
    view = analyse(load_model(path), CheckOptions()).view
    convs = [layer for layer in view.layers if layer.conv is not None]
    assert len(convs) == 53 and len(view.layers) == 54
    assert convs[0].conv.c == 3 and convs[0].conv.first_layer
    assert all(layer.m is not None for layer in view.layers)


def test_gpt2_tied_lm_head_found_via_transpose(tmp_path):
    view = _layers(examples.gpt2(layers=1, hidden=64, heads=2, vocab=50257), tmp_path, dims={"batch": 1, "seq": 16})
    head = next(layer for layer in view.layers if layer.name == "lm_head")
    assert (head.m, head.n, head.k, head.role) == (16, 50257, 64, "lm_head")
