"""NhwcLayoutPass: structure (NhwcConv, transposes only at entrances and exits) and numerics
(onnxruntime CPU on expand_nhwc_conv(rewritten) against the original)."""

from __future__ import annotations

import functools
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import onnx_ir as ir
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from tclint import examples
from tclint.load import resolve_shapes
from tclint.passes.layout import MS_DOMAIN, LayoutChange, NhwcLayoutPass, expand_nhwc_conv
from tclint.view import build_view

LIGHT = Path(onnx.__file__).parent / "backend" / "test" / "data" / "light"


@functools.cache
def _proto(name: str) -> bytes:
    builders = {
        "resnet": lambda: examples.resnet50(image=32, blocks=(1, 1, 1, 1)),
        "resnet_bn": lambda: examples.resnet50(image=32, blocks=(1, 1, 1, 1), batchnorm=True),
        "squeezenet": lambda: examples.squeezenet(image=64),
        "efficientnet": lambda: examples.efficientnet(image=64),
        "single_conv": lambda: examples.single_conv(c=16, k=24),
    }
    return builders[name]().SerializeToString()


def _model(name: str) -> ir.Model:
    return ir.from_proto(onnx.load_from_string(_proto(name)))


def _rewrite(name: str, *, nhwc_inputs: bool = False) -> tuple[ir.Model, LayoutChange]:
    model = _model(name)
    p = NhwcLayoutPass(nhwc_inputs=nhwc_inputs)
    result = p(model)
    assert result.modified
    assert p.change is not None
    return result.model, p.change


def _ops(model: ir.Model) -> Counter:
    return Counter(n.op_type for n in model.graph)


def _run(model_bytes: bytes, feeds: dict) -> list[np.ndarray]:
    so = ort.SessionOptions()
    so.log_severity_level = 3
    return ort.InferenceSession(model_bytes, so, providers=["CPUExecutionProvider"]).run(None, feeds)


def _random_feeds(proto: onnx.ModelProto, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    inits = {i.name for i in proto.graph.initializer}
    return {i.name: rng.standard_normal([d.dim_value for d in i.type.tensor_type.shape.dim]).astype(np.float32)
            for i in proto.graph.input if i.name not in inits}


def _assert_same_outputs(original: onnx.ModelProto, rewritten: ir.Model, change: LayoutChange) -> None:
    expanded = ir.to_proto(expand_nhwc_conv(rewritten))
    assert not any(n.op_type == "NhwcConv" for n in expanded.graph.node)
    feeds = _random_feeds(original)
    ref = _run(original.SerializeToString(), feeds)
    nhwc_feeds = {k: (v.transpose(0, 2, 3, 1) if k in change.inputs_nhwc else v) for k, v in feeds.items()}
    got = _run(expanded.SerializeToString(), nhwc_feeds)
    assert len(ref) == len(got)
    for a, b in zip(ref, got):
        assert a.shape == b.shape
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-5 * float(np.abs(a).max()))


CNNS = ["resnet", "resnet_bn", "squeezenet", "efficientnet"]


@pytest.mark.parametrize("nhwc_inputs", [False, True], ids=["nchw-input", "nhwc-input"])
@pytest.mark.parametrize("name", CNNS)
def test_cnn_structure_and_numerics(name, nhwc_inputs):
    original = onnx.load_from_string(_proto(name))
    before = _ops(_model(name))
    model, change = _rewrite(name, nhwc_inputs=nhwc_inputs)
    after = _ops(model)

    assert after["NhwcConv"] == before["Conv"] == change.convs_converted
    assert after["Conv"] == 0
    assert all(n.domain == MS_DOMAIN for n in model.graph if n.op_type == "NhwcConv")
    assert model.opset_imports.get(MS_DOMAIN) == 1
    # the global pooling exits are [N,1,1,C]: a free Reshape, so the only Transpose left is
    # the entrance, reading the image input (none at all when the input itself is NHWC)
    transposes = [n for n in model.graph if n.op_type == "Transpose"]
    image = model.graph.inputs[0]
    if nhwc_inputs:
        assert transposes == []
        assert change.inputs_nhwc == (image.name,)
        orig_shape = [d.dim_value for d in original.graph.input[0].type.tensor_type.shape.dim]
        assert list(image.shape) == [orig_shape[0], orig_shape[2], orig_shape[3], orig_shape[1]]
    else:
        assert len(transposes) == 1
        assert transposes[0].inputs[0] is image
        assert change.inputs_nhwc == ()
    assert change.transposes_inserted == len(transposes)
    assert change.reshape_exits == after["Reshape"] - before["Reshape"] == 1
    assert change.convs_skipped == ()
    # graph outputs keep their names and shapes
    assert [v.name for v in model.graph.outputs] == [o.name for o in original.graph.output]
    _assert_same_outputs(original, model, change)


def test_batchnorm_folded_into_nhwc_conv():
    before = _ops(_model("resnet_bn"))
    model, change = _rewrite("resnet_bn")
    assert before["BatchNormalization"] == 17
    assert change.batchnorms_folded == 17
    assert _ops(model)["BatchNormalization"] == 0
    # folded: no Mul/Add left for the BNs, only the 4 residual Adds
    assert _ops(model)["Mul"] == 0 and _ops(model)["Add"] == before["Add"] == 4


def test_efficientnet_pooling_and_squeeze_excitation_channels_last():
    before = _ops(_model("efficientnet"))
    model, _ = _rewrite("efficientnet")
    after = _ops(model)
    assert after["GlobalAveragePool"] == 0
    assert after["ReduceMean"] == before["GlobalAveragePool"] == 7
    for node in model.graph:
        if node.op_type == "ReduceMean":
            axes = node.inputs[1].const_value.numpy().tolist() if len(node.inputs) > 1 else list(node.attributes["axes"].value)
            assert axes == [1, 2] and node.attributes["keepdims"].value == 1
    # depthwise convs keep their groups; the SE gate Mul multiplies two NHWC tensors
    groups = sorted(n.attributes["group"].value for n in model.graph if n.op_type == "NhwcConv" and n.attributes["group"].value > 1)
    assert groups and all(g in (32, 96, 144, 240) for g in groups)
    # BN after a conv that feeds only it is folded; every swish Mul stays element-wise
    assert after["BatchNormalization"] == 0


def test_maxpool_runs_as_3d_pool_over_nhwc():
    model, _ = _rewrite("resnet")
    pools = [n for n in model.graph if n.op_type == "MaxPool"]
    assert len(pools) == 1
    pool = pools[0]
    assert list(pool.attributes["kernel_shape"].value) == [3, 3, 1]
    assert list(pool.attributes["strides"].value) == [2, 2, 1]
    assert list(pool.attributes["pads"].value) == [1, 1, 0, 1, 1, 0]
    assert pool.inputs[0].producer().op_type == "Unsqueeze"
    assert [u.op_type for u, _ in pool.outputs[0].uses()] == ["Squeeze"]


def test_squeezenet_concat_along_channels_last():
    model, _ = _rewrite("squeezenet")
    concats = [n for n in model.graph if n.op_type == "Concat"]
    assert len(concats) == 4
    assert all(n.attributes["axis"].value == 3 for n in concats)
    assert all(i.producer().op_type == "Relu" for n in concats for i in n.inputs)


def test_spatial_output_gets_one_exit_transpose_and_keeps_its_name():
    original = onnx.load_from_string(_proto("single_conv"))
    model, change = _rewrite("single_conv")
    transposes = [n for n in model.graph if n.op_type == "Transpose"]
    assert len(transposes) == 2 == change.transposes_inserted
    entrance, exit_ = sorted(transposes, key=lambda n: list(n.attributes["perm"].value) != [0, 2, 3, 1])
    assert list(entrance.attributes["perm"].value) == [0, 2, 3, 1]
    assert entrance.inputs[0] is model.graph.inputs[0]
    assert list(exit_.attributes["perm"].value) == [0, 3, 1, 2]
    out = model.graph.outputs[0]
    assert out.name == "y" and list(out.shape) == [1, 24, 32, 32]
    # the chain in between is channels-last: conv -> relu -> conv -> relu
    assert _ops(model)["NhwcConv"] == 2 and _ops(model)["Relu"] == 2
    _assert_same_outputs(original, model, change)


def test_nhwc_weights_are_ohwi():
    model = _model("single_conv")
    w_before = {n.name: n.inputs[1].const_value.numpy() for n in model.graph if n.op_type == "Conv"}
    NhwcLayoutPass()(model)
    for node in model.graph:
        if node.op_type == "NhwcConv":
            w = node.inputs[1].const_value.numpy()
            orig = w_before[node.name.removesuffix("_nhwc")]
            np.testing.assert_array_equal(w, orig.transpose(0, 2, 3, 1))
            assert list(node.attributes["kernel_shape"].value) == list(orig.shape[2:])


def _tf_style_model() -> onnx.ModelProto:
    """A TensorFlow-style export: NHWC input, Transpose to NCHW, convs, Transpose back."""
    rng = np.random.default_rng(1)
    w1 = onnx.numpy_helper.from_array(rng.standard_normal((16, 8, 3, 3)).astype(np.float32), "w1")
    w2 = onnx.numpy_helper.from_array(rng.standard_normal((8, 16, 1, 1)).astype(np.float32), "w2")
    scale = onnx.numpy_helper.from_array(rng.standard_normal((8, 1, 1)).astype(np.float32), "scale")
    nodes = [
        helper.make_node("Transpose", ["x"], ["x_nchw"], perm=[0, 3, 1, 2], name="to_nchw"),
        helper.make_node("Conv", ["x_nchw", "w1"], ["c1"], pads=[1, 1, 1, 1], name="conv1"),
        helper.make_node("Clip", ["c1", "lo", "hi"], ["r1"], name="relu6"),
        helper.make_node("Conv", ["r1", "w2"], ["c2"], name="conv2"),
        helper.make_node("Mul", ["c2", "scale"], ["m"], name="per_channel_scale"),
        helper.make_node("Add", ["m", "x_nchw"], ["res"], name="residual"),
        helper.make_node("Transpose", ["res"], ["y"], perm=[0, 2, 3, 1], name="to_nhwc"),
    ]
    lo = onnx.numpy_helper.from_array(np.array(0.0, np.float32), "lo")
    hi = onnx.numpy_helper.from_array(np.array(6.0, np.float32), "hi")
    graph = helper.make_graph(
        nodes, "tf_style", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 16, 16, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 16, 16, 8])], [w1, w2, scale, lo, hi])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def test_transposes_that_cancel_are_removed():
    original = _tf_style_model()
    model = ir.from_proto(original)
    p = NhwcLayoutPass()
    p(model)
    change = p.change
    assert _ops(model)["Transpose"] == 0
    assert change.transposes_removed == 2 and change.transposes_inserted == 0
    assert change.convs_converted == 2
    # the per-channel [C,1,1] constant became [C] for broadcasting against [N,H,W,C]
    mul = next(n for n in model.graph if n.op_type == "Mul")
    assert list(mul.inputs[1].const_value.shape) == [8]
    assert model.graph.outputs[0].name == "y"
    _assert_same_outputs(original, model, change)


def test_conv_with_runtime_weight_stays_nchw():
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 8, 8])
    w = helper.make_tensor_value_info("w", TensorProto.FLOAT, [8, 4, 3, 3])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 6, 6])
    graph = helper.make_graph([helper.make_node("Conv", ["x", "w"], ["y"], name="dynamic_conv")],
                              "g", [x, w], [y])
    model = ir.from_proto(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))
    p = NhwcLayoutPass()
    result = p(model)
    assert not result.modified
    assert p.change.convs_converted == 0
    assert p.change.convs_skipped == (("dynamic_conv", "weight is computed at run time"),)
    assert _ops(model) == Counter({"Conv": 1})


def test_expand_does_not_modify_its_input():
    model, _ = _rewrite("single_conv")
    before = ir.to_proto(model).SerializeToString()
    expanded = expand_nhwc_conv(model)
    assert ir.to_proto(model).SerializeToString() == before
    assert _ops(expanded)["NhwcConv"] == 0 and _ops(expanded)["Conv"] == 2
    assert _ops(model)["NhwcConv"] == 2


@pytest.mark.parametrize("name", ["efficientnet", "resnet_bn"])
def test_view_reads_nhwc_convs_like_the_originals(name):
    original = _model(name)
    resolve_shapes(original)
    rewritten, _ = _rewrite(name, nhwc_inputs=True)
    resolve_shapes(rewritten)
    before = [layer for layer in build_view(original).layers if layer.conv is not None]
    after = [layer for layer in build_view(rewritten).layers if layer.conv is not None]
    assert len(before) == len(after) > 0
    for a, b in zip(before, after):
        assert a.op == "Conv" and b.op == "com.microsoft.NhwcConv"
        assert b.conv.layout == "NHWC"
        assert (b.conv.c, b.conv.k, b.conv.groups, b.conv.kernel) == (a.conv.c, a.conv.k, a.conv.groups, a.conv.kernel)
        assert (b.m, b.n, b.k, b.batch) == (a.m, a.n, a.k, a.batch)
        assert b.conv.first_layer == a.conv.first_layer


def test_saved_model_passes_the_checker(tmp_path):
    model, _ = _rewrite("resnet_bn", nhwc_inputs=True)
    path = tmp_path / "nhwc.onnx"
    ir.save(model, path)
    onnx.checker.check_model(str(path), full_check=False)
    loaded = onnx.load(str(path))
    assert {o.domain: o.version for o in loaded.opset_import}.get(MS_DOMAIN) == 1
    assert sum(n.op_type == "NhwcConv" for n in loaded.graph.node) == 17


@pytest.mark.skipif(not (LIGHT / "light_densenet121.onnx").exists(), reason="onnx wheel without model-zoo data")
def test_model_zoo_densenet_one_entrance_transpose():
    """Old (opset 9, IR 3) export: initializers listed as inputs, weights from ConstantOfShape,
    BN scales behind Unsqueeze."""
    original = onnx.load(str(LIGHT / "light_densenet121.onnx"))
    model = ir.from_proto(original)
    p = NhwcLayoutPass()
    p(model)
    change = p.change
    assert change.convs_converted == 121 and _ops(model)["Conv"] == 0
    assert change.transposes_inserted == 1
    assert _ops(model)["BatchNormalization"] == 0
    _assert_same_outputs(original, model, change)
