"""verify(): checker, signature, ORT CPU outputs; failures name the output and the difference."""

from __future__ import annotations


import numpy as np
import onnx
import onnx_ir as ir
import pytest
from onnx import TensorProto, helper

from tclint.errors import InputError
from tclint.examples import GraphBuilder
from tclint.verify import verify


def small_net(seed=0, k=10):
    g = GraphBuilder("net", seed=seed)
    x = g.input("x", ["batch", 8, 6, 6])
    y = g.node("Relu", [g.conv(x, 8, k, 3, name="conv")])
    g.output(g.node("GlobalAveragePool", [y]), "pooled", shape=["batch", k, 1, 1])
    g.output(g.node("ReduceMax", [y], keepdims=0, axes=[1]), "peak", shape=["batch", 6, 6])
    return g.model()


def as_ir(proto):
    return ir.serde.deserialize_model(proto)


def save(tmp_path, proto, name="orig.onnx"):
    p = tmp_path / name
    onnx.save(proto, p)
    return p


def test_same_model_verifies(tmp_path):
    proto = small_net()
    res = verify(save(tmp_path, proto), as_ir(proto), dims={"batch": 3})
    assert res.ok and res.checker and res.signature
    assert res.samples == 2
    assert [o.name for o in res.outputs] == ["pooled", "peak"]
    assert all(o.max_abs == 0 for o in res.outputs)
    assert res.message.startswith("ok")


def test_a_changed_weight_fails_and_names_the_output(tmp_path):
    proto = small_net()
    model = as_ir(proto)
    w = model.graph.initializers["conv_w"]
    arr = w.const_value.numpy().copy()
    arr[0, 0, 0, 0] += 0.5
    w.const_value = ir.tensor(arr)
    res = verify(save(tmp_path, proto), model)
    assert not res.ok
    assert "differs" in res.message and "max abs" in res.message and "max rel" in res.message
    bad = [o for o in res.outputs if not o.ok]
    assert bad and all(o.max_abs > 1e-3 for o in bad)
    assert bad[0].name in res.message or any(o.name in res.message for o in bad)


def test_tolerance_is_relative_to_the_output_scale(tmp_path):
    proto = small_net()
    model = as_ir(proto)
    w = model.graph.initializers["conv_w"]
    w.const_value = ir.tensor(w.const_value.numpy() * np.float32(1 + 1e-4))
    assert not verify(save(tmp_path, proto), model, rtol=1e-5).ok
    assert verify(save(tmp_path, proto), model, rtol=1e-3).ok


def test_renamed_output_fails_the_signature(tmp_path):
    proto = small_net()
    model = as_ir(proto)
    model.graph.outputs[0].name = "renamed"
    res = verify(save(tmp_path, proto), model)
    assert not res.ok and not res.signature
    assert "graph outputs changed" in res.message


def test_changed_input_shape_fails_the_signature(tmp_path):
    proto = small_net()
    model = as_ir(proto)
    model.graph.inputs[0].shape = ir.Shape([1, 8, 6, 6])
    res = verify(save(tmp_path, proto), model)
    assert not res.ok and "graph input 'x' changed" in res.message


def test_checker_failure_of_the_rewritten_model(tmp_path):
    proto = small_net()
    model = as_ir(proto)
    relu = next(n for n in model.graph if n.op_type == "Relu")
    relu.attributes["bogus"] = ir.AttrInt64("bogus", 1)
    res = verify(save(tmp_path, proto), model)
    assert not res.ok and res.message.startswith("ONNX checker")


def test_user_inputs_add_samples_and_are_checked(tmp_path):
    proto = small_net()
    rng = np.random.default_rng(3)
    npz = tmp_path / "in.npz"
    np.savez(npz, x=rng.standard_normal((4, 2, 8, 6, 6)).astype(np.float32))  # 4 samples
    res = verify(save(tmp_path, proto), as_ir(proto), inputs=npz)
    assert res.ok and res.samples == 2 + 4
    bad = tmp_path / "bad.npz"
    np.savez(bad, y=np.zeros((1, 8, 6, 6), np.float32))
    with pytest.raises(InputError, match="missing"):
        verify(save(tmp_path, proto), as_ir(proto), inputs=bad)


def test_original_as_ir_model_and_integer_inputs():
    g = GraphBuilder("emb", seed=1)
    ids = g.input("ids", [2, 3], TensorProto.INT64)
    g.output(g.node("Gather", [g.weight("table", (10, 4)), ids]), "e", shape=[2, 3, 4])
    proto = g.model()
    assert verify(as_ir(proto), as_ir(proto)).ok


def test_nan_in_the_rewritten_output_fails(tmp_path):
    g = GraphBuilder("n", seed=2)
    x = g.input("x", [2, 4])
    g.output(g.node("Relu", [x]), "y", shape=[2, 4])
    proto = g.model()
    model = as_ir(proto)
    relu = model.graph.node(0)
    # Log of a standard-normal input: NaN where x < 0, -inf at 0
    log = ir.node("Log", [relu.inputs[0]])
    model.graph.insert_before(relu, log)
    relu.replace_input_with(0, log.outputs[0])
    res = verify(save(tmp_path, proto), model)
    assert not res.ok and "inf" in res.message


def test_nhwc_conv_is_expanded_for_the_cpu(tmp_path):
    from tclint.passes.layout import NhwcLayoutPass

    g = GraphBuilder("nhwc", seed=4)
    x = g.input("x", [1, 8, 6, 6])
    y = g.node("Relu", [g.conv(x, 8, 16, 3, name="c1")])
    g.output(g.conv(y, 16, 8, 3, name="c2"), "y", shape=[1, 8, 6, 6])
    proto = g.model()
    model = as_ir(proto)
    NhwcLayoutPass()(model)
    assert any(n.op_type == "NhwcConv" for n in model.graph)
    res = verify(save(tmp_path, proto), model)
    assert res.ok, res.message
    # and a wrong NhwcConv weight is caught through the expansion
    nc = next(n for n in model.graph if n.op_type == "NhwcConv")
    w = nc.inputs[1]
    w.const_value = ir.tensor(w.const_value.numpy() * 0)
    assert not verify(save(tmp_path, proto), model).ok


def test_unsupported_input_type_is_a_one_line_input_error(tmp_path):
    x = helper.make_tensor_value_info("s", TensorProto.STRING, [1])
    y = helper.make_tensor_value_info("t", TensorProto.STRING, [1])
    proto = helper.make_model(helper.make_graph([helper.make_node("Identity", ["s"], ["t"])], "g", [x], [y]),
                              opset_imports=[helper.make_opsetid("", 17)])
    proto.ir_version = 8
    with pytest.raises(InputError, match="STRING"):
        verify(save(tmp_path, proto), as_ir(proto))
    # with compare=False nothing is run
    assert verify(save(tmp_path, proto), as_ir(proto), compare=False).ok


def test_default_tolerance_follows_the_output_type(tmp_path):
    from tclint.verify import DEFAULT_TOLERANCE

    assert DEFAULT_TOLERANCE[np.dtype(np.float32)][0] == 1e-5
    proto = small_net()
    model = as_ir(proto)
    w = model.graph.initializers["conv_w"]
    w.const_value = ir.tensor(w.const_value.numpy() * np.float32(1 + 1e-4))
    res = verify(save(tmp_path, proto), model)  # float32 outputs: 1e-5 relative
    assert not res.ok and "tolerance by output type" in res.message
