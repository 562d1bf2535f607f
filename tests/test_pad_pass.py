"""PadChannelsPass on small graphs: structure (op types, shapes, weights) and ORT CPU numerics."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir
import onnxruntime as ort
import pytest
from onnx import TensorProto

from tclint.config import CheckOptions
from tclint.examples import GraphBuilder
from tclint.lint import analyse
from tclint.passes.pad import ChannelMap, PadChannelsPass, padded_length


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------
def pad_model(proto: onnx.ModelProto, *, force: bool = True, **options):
    """Analyse like `check`, run the pass; return (original proto, rewritten ir.Model, result)."""
    model = ir.serde.deserialize_model(proto)
    analysis = analyse(model, CheckOptions(**options))
    p = PadChannelsPass(analysis.cost.layers, analysis.target, force=force)
    p(model)
    return model, p.result


def run(model, feeds):
    proto = model if isinstance(model, onnx.ModelProto) else ir.serde.serialize_model(model)
    so = ort.SessionOptions()
    so.log_severity_level = 3
    sess = ort.InferenceSession(proto.SerializeToString(), so, providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)


def assert_same_outputs(proto, model, feeds, rtol=1e-5):
    ref, got = run(proto, feeds), run(model, feeds)
    assert len(ref) == len(got)
    for r, g in zip(ref, got):
        assert r.shape == g.shape
        assert np.all(np.isfinite(g))
        np.testing.assert_allclose(g, r, rtol=rtol, atol=rtol * float(np.abs(r).max() or 1))


def ops(model: ir.Model) -> list[str]:
    return [n.op_type for n in model.graph]


def node(model: ir.Model, name: str) -> ir.Node:
    return next(n for n in model.graph if n.name == name)


def weight(model: ir.Model, n: ir.Node, i: int = 1) -> np.ndarray:
    return n.inputs[i].const_value.numpy()


def image(c=3, hw=8, seed=0):
    return np.random.default_rng(seed).standard_normal((1, c, hw, hw)).astype(np.float32)


# --------------------------------------------------------------------------------------------
# pure helpers
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dim,align,expected", [
    (10, 8, 16), (16, 8, 0), (1, 8, 0), (None, 8, 0), (50257, 64, 50304), (2730, 16, 2736),
    (3, 1, 0),
])
def test_padded_length(dim, align, expected):
    assert padded_length(dim, align) == expected


def test_channel_map_layout_equality():
    a = ChannelMap(-3, 10, 16, np.arange(10))
    assert a.is_prefix and a.same_layout(ChannelMap(-3, 10, 16, np.arange(10)))
    assert not a.same_layout(ChannelMap(-1, 10, 16, np.arange(10)))
    assert not ChannelMap(-3, 2, 4, np.array([0, 2])).is_prefix


# --------------------------------------------------------------------------------------------
# convs
# --------------------------------------------------------------------------------------------
def conv_chain(k=10, *, bn=True, pool=True, image_hw=8):
    """conv(16->k) -> BN -> Relu -> MaxPool -> conv(k->16) -> output."""
    g = GraphBuilder("chain", seed=1)
    x = g.input("x", [1, 16, image_hw, image_hw])
    y = g.conv(x, 16, k, 3, name="conv_a")
    if bn:
        y = g.bn(y, k)
    y = g.node("Relu", [y])
    if pool:
        y = g.node("MaxPool", [y], kernel_shape=[2, 2], strides=[2, 2])
    y = g.conv(y, k, 16, 3, name="conv_b")
    g.output(y, "y")
    return g.model()


def test_conv_k_carried_through_bn_relu_pool_into_next_conv():
    proto = conv_chain(10)
    model, result = pad_model(proto)
    a, b = node(model, "conv_a"), node(model, "conv_b")
    wa, wb = weight(model, a), weight(model, b)
    assert wa.shape == (16, 16, 3, 3) and wb.shape == (16, 16, 3, 3)
    assert np.all(wa[10:] == 0) and np.all(a.inputs[2].const_value.numpy()[10:] == 0)
    assert np.all(wb[:, 10:] == 0)
    bn = next(n for n in model.graph if n.op_type == "BatchNormalization")
    scale, bias, mean, var = (bn.inputs[i].const_value.numpy() for i in range(1, 5))
    assert scale.shape == (16,) and np.all(scale[10:] == 0) and np.all(bias[10:] == 0)
    assert np.all(mean[10:] == 0) and np.all(var[10:] == 1)
    # no Slice: the padding lives in the weights only
    assert ops(model) == ["Conv", "BatchNormalization", "Relu", "MaxPool", "Conv", "Identity"]
    assert not result.inserted
    assert {c.node for c in result.changes} == {"conv_a", "conv_b"}
    change_b = next(c for c in result.changes if c.node == "conv_b")
    assert change_b.dims_before["C"] == 10 and change_b.dims_after["C"] == 16
    assert "carried from conv_a" in change_b.reason
    assert_same_outputs(proto, model, {"x": image(16)})


def test_padded_tensor_at_graph_output_is_sliced_back_under_its_name():
    g = GraphBuilder("out", seed=2)
    x = g.input("x", [1, 16, 8, 8])
    y = g.node("Sigmoid", [g.conv(x, 16, 10, 1, name="conv")])
    g.outputs.append(onnx.helper.make_tensor_value_info(y, TensorProto.FLOAT, [1, 10, 8, 8]))
    proto = g.model()
    model, result = pad_model(proto)
    out = model.graph.outputs[0]
    assert out.name == y and out.producer().op_type == "Slice"
    assert list(out.shape) == [1, 10, 8, 8]
    assert [n.op for n in result.inserted] == ["Slice"]
    assert_same_outputs(proto, model, {"x": image(16)})


def test_residual_add_of_equally_padded_tensors_needs_no_slice():
    g = GraphBuilder("res", seed=3)
    x = g.input("x", [1, 16, 8, 8])
    a = g.node("Relu", [g.conv(x, 16, 12, 3, name="c1")])
    b = g.conv(a, 12, 12, 3, name="c2")
    s = g.node("Relu", [g.node("Add", [a, b])])
    g.output(g.conv(s, 12, 16, 1, name="c3"), "y")
    proto = g.model()
    model, result = pad_model(proto)
    assert "Slice" not in ops(model) and "Gather" not in ops(model)
    assert weight(model, node(model, "c3")).shape == (16, 16, 1, 1)
    assert_same_outputs(proto, model, {"x": image(16)})


def test_add_with_an_unpadded_tensor_restores_channels_first():
    g = GraphBuilder("mix", seed=4)
    x = g.input("x", [1, 12, 8, 8])
    a = g.conv(x, 12, 12, 1, name="c1")
    g.output(g.node("Add", [a, x]), "y")
    proto = g.model()
    model, result = pad_model(proto)
    add = next(n for n in model.graph if n.op_type == "Add")
    assert add.inputs[0].producer().op_type == "Slice"
    assert "Add" in result.inserted[0].reason
    assert_same_outputs(proto, model, {"x": image(12)})


def test_concat_carries_a_channel_map_into_the_next_conv():
    """DenseNet-style: Concat of two padded pieces; the consumer reads them through a map."""
    g = GraphBuilder("dense", seed=5)
    x = g.input("x", [1, 16, 8, 8])
    a = g.conv(x, 16, 12, 3, name="ca")
    b = g.conv(x, 16, 20, 3, name="cb")
    cat = g.node("Concat", [g.node("Relu", [a]), b, x], axis=1)  # 12 + 20 + 16 = 48
    g.output(g.conv(cat, 48, 16, 1, name="cc"), "y")
    proto = g.model()
    model, result = pad_model(proto)
    wc = weight(model, node(model, "cc"))
    assert wc.shape == (16, 16 + 32 + 16, 1, 1)
    orig = onnx.numpy_helper.to_array(next(i for i in proto.graph.initializer
                                             if i.name == next(n for n in proto.graph.node if n.name == "cc").input[1]))
    pos = np.r_[0:12, 16:36, 48:64]
    np.testing.assert_array_equal(wc[:, pos], orig)
    zero = np.setdiff1d(np.arange(64), pos)
    assert np.all(wc[:, zero] == 0)
    assert "Slice" not in ops(model) and "Gather" not in ops(model)
    assert_same_outputs(proto, model, {"x": image(16)})


def test_concat_then_graph_output_uses_a_gather_with_the_map():
    g = GraphBuilder("cat_out", seed=6)
    x = g.input("x", [1, 16, 4, 4])
    cat = g.node("Concat", [g.conv(x, 16, 12, 1, name="ca"), g.conv(x, 16, 12, 1, name="cb")], axis=1)
    g.output(cat, "y")
    proto = g.model()
    model, result = pad_model(proto)
    out = model.graph.outputs[0]
    assert out.name == "y" and out.producer().op_type == "Gather"
    assert_same_outputs(proto, model, {"x": image(16, 4)})


def test_flatten_gemm_drops_rows_of_padded_channels():
    g = GraphBuilder("head", seed=7)
    x = g.input("x", [1, 16, 4, 4])
    y = g.node("GlobalAveragePool", [g.node("Relu", [g.conv(x, 16, 20, 3, name="conv")])])
    y = g.node("Flatten", [y], axis=1)
    y = g.node("Gemm", [y, g.weight("w", (32, 20)), g.weight("b", (32,))], name="fc", transB=1)
    g.output(y, "logits")
    proto = g.model()
    model, result = pad_model(proto)
    w = weight(model, node(model, "fc"))
    assert w.shape == (32, 32)  # [N, K]: K 20 -> 32 (the conv's padded channels)
    assert np.all(w[:, 20:] == 0)
    assert "Slice" not in ops(model)
    assert_same_outputs(proto, model, {"x": image(16, 4)})


def test_depthwise_conv_between_padded_convs_gets_more_groups():
    g = GraphBuilder("dw", seed=8)
    x = g.input("x", [1, 16, 8, 8])
    y = g.node("Relu", [g.conv(x, 16, 20, 1, name="expand")])
    y = g.conv(y, 20, 20, 3, groups=20, name="dw")
    g.output(g.conv(g.node("Relu", [y]), 20, 16, 1, name="project"), "y")
    proto = g.model()
    model, result = pad_model(proto)
    dw = node(model, "dw")
    assert dw.attributes["group"].value == 32
    assert weight(model, dw).shape == (32, 1, 3, 3)
    assert weight(model, node(model, "project")).shape == (16, 32, 1, 1)
    assert "Slice" not in ops(model)
    assert_same_outputs(proto, model, {"x": image(16)})


def test_grouped_conv_is_padded_per_group_and_the_consumer_follows_the_map():
    g = GraphBuilder("grouped", seed=9)
    x = g.input("x", [1, 32, 8, 8])
    y = g.node("Relu", [g.conv(x, 32, 24, 3, groups=2, name="gconv")])  # K/g = 12
    g.output(g.conv(y, 24, 16, 1, name="after"), "y")
    proto = g.model()
    model, result = pad_model(proto)
    gw = weight(model, node(model, "gconv"))
    assert node(model, "gconv").attributes["group"].value == 2
    assert gw.shape == (32, 16, 3, 3)
    assert np.all(gw[12:16] == 0) and np.all(gw[28:32] == 0)
    aw = weight(model, node(model, "after"))
    assert aw.shape == (16, 32, 1, 1) and np.all(aw[:, 12:16] == 0) and np.all(aw[:, 28:] == 0)
    assert_same_outputs(proto, model, {"x": image(32)})


def test_first_layer_gets_a_zero_channel_inside_the_graph():
    g = GraphBuilder("stem", seed=10)
    x = g.input("image", ["batch", 3, 16, 16])
    g.output(g.node("Relu", [g.conv(x, 3, 16, 3, stride=2, name="stem")]), "y")
    proto = g.model()
    model, result = pad_model(proto)
    assert [v.name for v in model.graph.inputs] == ["image"]
    assert list(model.graph.inputs[0].shape)[1:] == [3, 16, 16]
    pad = model.graph.node(0)
    assert pad.op_type == "Pad" and pad.inputs[0].name == "image"
    np.testing.assert_array_equal(pad.inputs[1].const_value.numpy(), [0, 0, 0, 0, 0, 1, 0, 0])
    w = weight(model, node(model, "stem"))
    assert w.shape == (16, 4, 3, 3) and np.all(w[:, 3] == 0)
    assert [n.op for n in result.inserted] == ["Pad"]
    batch2 = np.concatenate([image(3, 16, 0), image(3, 16, 1)])
    assert_same_outputs(proto, model, {"image": batch2})


def test_per_channel_constants_are_padded_with_finite_values():
    """Div by a per-channel constant pads the divisor with 1 (0 would give inf*0 = NaN)."""
    g = GraphBuilder("consts", seed=11)
    x = g.input("x", [1, 16, 4, 4])
    y = g.conv(x, 16, 10, 1, name="c1")
    y = g.node("Div", [y, g.weight("d", (10, 1, 1), value=np.full((10, 1, 1), 2.0, np.float32))])
    y = g.node("Sub", [y, g.weight("s", (1, 10, 1, 1), value=np.ones((1, 10, 1, 1), np.float32))])
    y = g.node("Mul", [y, g.const("k", np.float32(3.0))])
    y = g.node("Clip", [y, g.const("lo", np.float32(-1)), g.const("hi", np.float32(1))])
    g.output(g.conv(y, 10, 16, 1, name="c2"), "y")
    proto = g.model()
    model, result = pad_model(proto)
    div = next(n for n in model.graph if n.op_type == "Div")
    d = div.inputs[1].const_value.numpy()
    assert d.shape == (16, 1, 1) and np.all(d[10:] == 1)
    sub = next(n for n in model.graph if n.op_type == "Sub")
    assert sub.inputs[1].const_value.numpy().shape == (1, 16, 1, 1)
    assert "Slice" not in ops(model)
    assert_same_outputs(proto, model, {"x": image(16, 4)})


@pytest.mark.parametrize("op", ["Softmax", "Reshape", "LRN"])
def test_ops_that_mix_channels_read_the_original_channels(op):
    g = GraphBuilder("mixers", seed=12)
    x = g.input("x", [1, 16, 4, 4])
    y = g.conv(x, 16, 10, 1, name="c1")
    if op == "Softmax":
        y = g.node("Softmax", [y], axis=1)
    elif op == "Reshape":
        y = g.node("Reshape", [y, g.ints("shape", [1, 10, 16])])
    else:
        y = g.node("LRN", [y], size=3)
    g.output(y, "y")
    proto = g.model()
    model, result = pad_model(proto)
    consumer = next(n for n in model.graph if n.op_type == op)
    assert consumer.inputs[0].producer().op_type == "Slice"
    assert_same_outputs(proto, model, {"x": image(16, 4)})


def test_softmax_over_another_axis_keeps_the_padding():
    g = GraphBuilder("sm", seed=13)
    x = g.input("x", [1, 16, 4, 4])
    y = g.node("Softmax", [g.conv(x, 16, 10, 1, name="c1")], axis=-1)
    g.output(g.conv(y, 10, 16, 1, name="c2"), "y")
    proto = g.model()
    model, _ = pad_model(proto)
    assert "Slice" not in ops(model)
    assert_same_outputs(proto, model, {"x": image(16, 4)})


# --------------------------------------------------------------------------------------------
# GEMMs
# --------------------------------------------------------------------------------------------
def mlp(ffn=2730, hidden=64, transposed=True):
    g = GraphBuilder("mlp", seed=14)
    x = g.input("x", ["batch", 4, hidden])
    h = g.linear(x, hidden, ffn, bias=True, transposed=transposed, name="up")
    h = g.node("Mul", [h, g.node("Sigmoid", [h])])
    g.output(g.linear(h, ffn, hidden, bias=False, transposed=transposed, name="down"), "y")
    return g.model()


@pytest.mark.parametrize("transposed", [True, False])
def test_gemm_n_carried_into_next_gemm_k(transposed):
    proto = mlp(transposed=transposed)
    model, result = pad_model(proto)
    up, down = node(model, "up"), node(model, "down")
    wu = (up.inputs[1].producer().inputs[0] if transposed else up.inputs[1]).const_value.numpy()
    wd = (down.inputs[1].producer().inputs[0] if transposed else down.inputs[1]).const_value.numpy()
    assert wu.shape == ((2736, 64) if transposed else (64, 2736))
    assert wd.shape == ((64, 2736) if transposed else (2736, 64))
    bias_add = next(n for n in model.graph if n.op_type == "Add")
    assert bias_add.inputs[1].const_value.numpy().shape == (2736,)
    assert "Slice" not in ops(model)
    feeds = {"x": np.random.default_rng(0).standard_normal((2, 4, 64)).astype(np.float32)}
    assert_same_outputs(proto, model, feeds)


def test_tied_lm_head_pads_a_copy_and_the_gather_keeps_its_table():
    """Issue 10 #2: padding the shared table in place would make id -1 read a zero row (Gather
    accepts [-V, V-1]) and accept ids in [V, V_pad). The head reads a padded copy instead."""
    g = GraphBuilder("lm", seed=15)
    ids = g.input("ids", ["batch", "seq"], TensorProto.INT64)
    wte = g.weight("wte", (1000, 32), scale=0.02)
    x = g.node("Gather", [wte, ids])
    x = g.layer_norm(x, 32)
    logits = g.node("MatMul", [x, g.node("Transpose", [wte], perm=[1, 0])], name="lm_head")
    g.output(logits, "logits")
    proto = g.model()
    model, result = pad_model(proto)
    assert [c.dims_after for c in result.changes] == [{"K": 32, "N": 1024}]
    gather = next(n for n in model.graph if n.op_type == "Gather")
    assert gather.inputs[0].name == "wte" and tuple(gather.inputs[0].const_value.shape) == (1000, 32)
    transpose = next(n for n in model.graph if n.op_type == "Transpose")
    assert tuple(transpose.inputs[0].const_value.shape) == (1024, 32)
    assert list(transpose.outputs[0].shape) == [32, 1024]  # its annotation follows the weight
    assert result.changes[0].extra_params == 1024 * 32  # the copy is counted
    out = model.graph.outputs[0]
    assert out.name == "logits" and out.producer().op_type == "Slice"
    feeds = {"ids": np.array([[1, 5, 999], [-1, -2, -1000]], np.int64)}
    assert_same_outputs(proto, model, feeds)
    with pytest.raises(Exception, match="out of bounds|out of range|indices"):
        run(model, {"ids": np.array([[1000]], np.int64)})  # still out of range, as before


def test_gemm_with_trans_b_and_bias():
    g = GraphBuilder("gemm", seed=16)
    x = g.input("x", [8, 24])
    y = g.node("Gemm", [x, g.weight("w", (20, 24)), g.weight("b", (20,))], name="g1", transB=1)
    y = g.node("Relu", [y])
    y = g.node("Gemm", [y, g.weight("w2", (20, 16))], name="g2")
    g.output(y, "y")
    proto = g.model()
    model, result = pad_model(proto)
    assert weight(model, node(model, "g1")).shape == (32, 24)
    assert weight(model, node(model, "g1"), 2).shape == (32,)
    assert weight(model, node(model, "g2")).shape == (32, 16)
    assert_same_outputs(proto, model, {"x": np.random.default_rng(1).standard_normal((8, 24)).astype(np.float32)})


# --------------------------------------------------------------------------------------------
# CAN pad / SHOULD pad
# --------------------------------------------------------------------------------------------
def test_shared_and_computed_weights_are_skipped_with_a_reason():
    g = GraphBuilder("cannot", seed=17)
    x = g.input("x", [1, 16, 4, 4])
    w = g.weight("w", (10, 16, 1, 1))
    a = g.node("Conv", [x, w], name="shared_a", kernel_shape=[1, 1])
    b = g.node("Conv", [x, w], name="shared_b", kernel_shape=[1, 1])
    shape = g.ints("wshape", [12, 16, 1, 1])
    cw = g.node("ConstantOfShape", [shape], value=onnx.helper.make_tensor("v", TensorProto.FLOAT, [1], [0.5]))
    c = g.node("Conv", [x, cw], name="computed", kernel_shape=[1, 1])
    g.output(g.node("Concat", [a, b, c], axis=1), "y")
    proto = g.model()
    model, result = pad_model(proto)
    reasons = {s.node: s.reason for s in result.skipped}
    assert "shared by several nodes" in reasons["shared_a"]
    assert "ConstantOfShape" in reasons["computed"]
    assert not result.changes
    assert ops(model) == [n.op_type for n in proto.graph.node]


def test_profit_gate_skips_layers_whose_slice_costs_more_than_the_gain():
    """A tiny conv whose padded output must be sliced back: the Slice's launch costs more."""
    g = GraphBuilder("tiny", seed=18)
    x = g.input("x", [1, 16, 4, 4])
    g.output(g.conv(x, 16, 10, 1, name="conv"), "y")
    proto = g.model()
    model, result = pad_model(proto, force=False)
    assert not result.changes
    [skip] = result.skipped
    assert skip.node == "conv" and skip.reason.startswith("does not pay")
    model, result = pad_model(proto, force=True)
    assert [c.node for c in result.changes] == ["conv"]


def test_profit_gate_pads_a_compute_bound_chain():
    g = GraphBuilder("big", seed=19)
    x = g.input("x", [8, 128, 56, 56])
    y = g.node("Relu", [g.conv(x, 128, 120, 3, name="c1")])
    g.output(g.conv(y, 120, 128, 3, name="c2"), "y")
    model, result = pad_model(g.model(), force=False)
    assert [c.node for c in result.changes] == ["c1", "c2"]
    assert not result.skipped


def test_only_padded_weights_are_materialised():
    proto = conv_chain(10, bn=False, pool=False)
    model = ir.serde.deserialize_model(proto)
    untouched = {name: v.const_value for name, v in model.graph.initializers.items()}
    analysis = analyse(model, CheckOptions())
    p = PadChannelsPass(analysis.cost.layers, analysis.target, force=True)
    p(model)
    padded = [v for v in model.graph.initializers.values() if isinstance(v.const_value, ir.LazyTensor)]
    assert {v.name for v in padded} == {"conv_w_padded", "conv_w_1_padded"}
    # the biases: conv_b is padded (a small eager tensor), conv_b_1 is the same object as before
    assert model.graph.initializers["conv_b_1"].const_value is untouched["conv_b_1"]


def test_input_dims_left_misaligned_say_where_they_come_from():
    """C=20 of the second conv comes from a Concat of an image input: nothing to pad it with."""
    g = GraphBuilder("unfixable", seed=20)
    x = g.input("x", [1, 10, 4, 4])
    cat = g.node("Concat", [x, x], axis=1)
    g.output(g.conv(g.node("Relu", [cat]), 20, 16, 1, name="conv"), "y")
    model, result = pad_model(g.model())
    [skip] = result.skipped
    assert skip.node == "conv" and skip.reason.startswith("C=20 comes from Concat")
    assert not result.changes


def test_depthwise_with_channel_multiplier_and_conv1d():
    g = GraphBuilder("dw2", seed=21)
    x = g.input("x", [1, 16, 12])
    w1 = g.weight("w1", (10, 16, 3))
    y = g.node("Conv", [x, w1], name="c1", kernel_shape=[3], pads=[1, 1])
    w2 = g.weight("w2", (20, 1, 3))  # depthwise, multiplier 2
    y = g.node("Conv", [g.node("Relu", [y]), w2], name="dw", kernel_shape=[3], pads=[1, 1], group=10)
    w3 = g.weight("w3", (16, 20, 1))
    g.output(g.node("Conv", [y, w3], name="c3", kernel_shape=[1]), "y", shape=[1, 16, 12])
    proto = g.model()
    model, result = pad_model(proto)
    dw = node(model, "dw")
    assert dw.attributes["group"].value == 16 and weight(model, dw).shape == (32, 1, 3)
    assert weight(model, node(model, "c3")).shape == (16, 32, 1)
    assert "Slice" not in ops(model)
    feeds = {"x": np.random.default_rng(2).standard_normal((1, 16, 12)).astype(np.float32)}
    assert_same_outputs(proto, model, feeds)


def test_layout_ops_carry_the_padded_axis_to_where_it_ends_up():
    """Transpose / Unsqueeze / Slice / Split move or keep the channel axis: the map follows it
    (NCHW -> NHWC here), and the graph outputs get the original channels on the new axis."""
    g = GraphBuilder("moves", seed=22)
    x = g.input("x", [1, 16, 4, 6])
    y = g.node("Relu", [g.conv(x, 16, 10, 1, name="c1")])
    t = g.node("Transpose", [y], perm=[0, 2, 3, 1])  # [1, 4, 6, 10]: channels last
    u = g.node("Unsqueeze", [t, g.ints("ax", [1])])  # [1, 1, 4, 6, 10]
    sl = g.node("Slice", [u, g.ints("st", [1]), g.ints("en", [5]), g.ints("axs", [3])])  # W 6 -> 4
    a, b = g.node("Split", [sl, g.ints("sp", [2, 2])], axis=2, n_out=2)
    g.output(a, "a", shape=[1, 1, 2, 4, 10])
    g.output(b, "b", shape=[1, 1, 2, 4, 10])
    proto = g.model()
    model, result = pad_model(proto)
    assert weight(model, node(model, "c1")).shape == (16, 16, 1, 1)
    restores = [n for n in model.graph if n.op_type == "Slice" and n.name.endswith("_restore")]
    assert len(restores) == 2
    for n in restores:
        assert n.inputs[3].const_value.numpy().tolist() == [-1]  # channels are last now
    assert [v.name for v in model.graph.outputs] == ["a", "b"]
    feeds = {"x": np.random.default_rng(5).standard_normal((1, 16, 4, 6)).astype(np.float32)}
    assert_same_outputs(proto, model, feeds)


def test_split_along_the_padded_axis_restores_first():
    g = GraphBuilder("split_c", seed=23)
    x = g.input("x", [1, 16, 4, 4])
    a, b = g.node("Split", [g.conv(x, 16, 10, 1, name="c1"), g.ints("sp", [5, 5])], axis=1, n_out=2)
    g.output(g.node("Add", [a, b]), "y", shape=[1, 5, 4, 4])
    proto = g.model()
    model, _ = pad_model(proto)
    split = next(n for n in model.graph if n.op_type == "Split")
    assert split.inputs[0].producer().op_type == "Slice"
    assert_same_outputs(proto, model, {"x": image(16, 4)})
