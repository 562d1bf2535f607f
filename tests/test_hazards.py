"""TC301-TC304 detection functions (tclint.hazards), one fixture per code."""

from __future__ import annotations

import numpy as np
import onnx_ir as ir
from onnx import TensorProto, helper, numpy_helper

from tclint.hazards import SMALL_TENSOR_BYTES, find_fp16_hazards

F = TensorProto.FLOAT


def _model(nodes, inputs, outputs, inits=()):
    graph = helper.make_graph(nodes, "g", inputs, outputs, list(inits))
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)
    return ir.from_proto(proto)


def _codes(model, **kw):
    return [h.code for h in find_fp16_hazards(model, **kw)]


def _x(shape=(2, 8)):
    return [helper.make_tensor_value_info("x", F, list(shape))]


def _y():
    return [helper.make_tensor_value_info("y", F, None)]


def test_tc301_constant_out_of_range():
    c = numpy_helper.from_array(np.array([-3.4e38, 1.0, 1e-9], np.float32), "mask")
    model = _model([helper.make_node("Add", ["x", "mask"], ["y"], name="add")], _x((3,)), _y(), [c])
    [h] = find_fp16_hazards(model)
    assert h.code == "TC301" and h.node_name == "add"
    assert h.dims["above_max"] == 1 and h.dims["flush_to_zero"] == 1
    ok = numpy_helper.from_array(np.array([-1e4, 1.0], np.float32), "mask")
    assert _codes(_model([helper.make_node("Add", ["x", "mask"], ["y"])], _x((2,)), _y(), [ok])) == []


def test_tc301_never_reads_large_tensors():
    n = SMALL_TENSOR_BYTES // 4 + 1
    big = np.full(n, 1e9, np.float32)
    model = _model([helper.make_node("Add", ["x", "w"], ["y"])], _x((n,)), _y(),
                   [numpy_helper.from_array(big, "w")])
    assert _codes(model) == []


def test_tc302_norm_epsilon_underflow():
    nodes = [
        helper.make_node("ReduceMean", ["x"], ["var"], axes=[-1]),
        helper.make_node("Add", ["var", "eps"], ["v"], name="add_eps"),
        helper.make_node("Sqrt", ["v"], ["y"]),
    ]
    eps = numpy_helper.from_array(np.array(1e-12, np.float32), "eps")
    hazards = find_fp16_hazards(_model(nodes, _x(), _y(), [eps]))
    assert [(h.code, h.node_name) for h in hazards if h.code == "TC302"] == [("TC302", "add_eps")]
    assert "flushes to 0" in hazards[[h.code for h in hazards].index("TC302")].message
    eps_ok = numpy_helper.from_array(np.array(1e-3, np.float32), "eps")
    assert "TC302" not in _codes(_model(nodes, _x(), _y(), [eps_ok]))
    assert "TC302" not in _codes(_model(nodes, _x(), _y(), [eps]), dtype="bf16")


def test_tc303_no_kernel_depends_on_provider():
    nodes = [helper.make_node("GridSample", ["x", "grid"], ["y"], name="gs")]
    grid = numpy_helper.from_array(np.zeros((1, 2, 2, 2), np.float32), "grid")
    model = _model(nodes, _x((1, 1, 2, 2)), _y(), [grid])
    assert _codes(model, provider="cuda") == ["TC303"]
    relu = _model([helper.make_node("Relu", ["x"], ["y"])], _x(), _y())
    assert _codes(relu, provider="cuda") == []
    assert _codes(relu, provider="cpu") == ["TC303"]  # no fp16 Relu on the CPU provider


def test_tc304_overflow_prone_ops():
    nodes = [helper.make_node("ReduceSum", ["x", "axes"], ["y"], name="sum", keepdims=0)]
    axes = numpy_helper.from_array(np.array([1], np.int64), "axes")
    assert _codes(_model(nodes, _x((1, 4096)), _y(), [axes])) == ["TC304"]
    assert _codes(_model(nodes, _x((1, 64)), _y(), [axes])) == []
    three = numpy_helper.from_array(np.array(3.0, np.float32), "p")
    pow_model = _model([helper.make_node("Pow", ["x", "p"], ["y"], name="cube")], _x(), _y(), [three])
    [h] = find_fp16_hazards(pow_model)
    assert h.code == "TC304" and h.dims["exponent"] == 3.0
    soft = _model([helper.make_node("Softmax", ["x"], ["y"], axis=-1)], _x((1, 2048)), _y())
    assert _codes(soft) == ["TC304"]


def test_tc301_ignores_a_few_tiny_weights_among_many():
    w = np.random.default_rng(0).standard_normal(4096).astype(np.float32)
    w[7] = 1e-9  # one weight of 4096 flushes to zero: nothing measurable changes
    model = _model([helper.make_node("Mul", ["x", "w"], ["y"])], _x((4096,)), _y(),
                   [numpy_helper.from_array(w, "w")])
    assert _codes(model) == []
    w[: len(w) // 2] = 1e-9  # half of them flush: reported
    model = _model([helper.make_node("Mul", ["x", "w"], ["y"])], _x((4096,)), _y(),
                   [numpy_helper.from_array(w, "w")])
    assert _codes(model) == ["TC301"]


def test_external_constants_are_never_read(tmp_path):
    """A small constant stored in external data whose file is a FIFO: reading it would block."""
    import os

    fifo = tmp_path / "w.data"
    os.mkfifo(fifo)
    t = helper.make_tensor("mask", F, [3], vals=[0.0, 0.0, 0.0])
    t.ClearField("float_data")
    t.data_location = TensorProto.EXTERNAL
    for k, v in (("location", "w.data"), ("offset", "0"), ("length", "12")):
        e = t.external_data.add()
        e.key, e.value = k, v
    graph = helper.make_graph([helper.make_node("Add", ["x", "mask"], ["y"])], "g", _x((3,)), _y(), [t])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)
    import onnx

    onnx.save(proto, str(tmp_path / "m.onnx"))
    model = ir.load(str(tmp_path / "m.onnx"))
    assert _codes(model) == []


def test_tc303_skips_calls_of_model_local_functions():
    fn = helper.make_function("local", "Lin", ["a"], ["b"], [helper.make_node("Relu", ["a"], ["b"])],
                              [helper.make_opsetid("", 17)])
    graph = helper.make_graph([helper.make_node("Lin", ["x"], ["y"], domain="local")], "g", _x(), _y())
    proto = helper.make_model(graph, functions=[fn], ir_version=9,
                              opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("local", 1)])
    assert "TC303" not in _codes(ir.from_proto(proto))
