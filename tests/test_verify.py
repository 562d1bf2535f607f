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


# --------------------------------------------------------------------------------------------
# Issue 10 #1: element-wise comparison at each output's scale
# --------------------------------------------------------------------------------------------
def offset_net(big=1e4, c_out=30, hw=8):
    """Conv(16->30) -> Sigmoid -> ReduceMean(axes=[1]) -> Add(an offset with one large element)."""
    g = GraphBuilder("offset", seed=11)
    x = g.input("x", [1, 16, hw, hw])
    y = g.node("Sigmoid", [g.conv(x, 16, c_out, 3, name="conv")])
    y = g.node("ReduceMean", [y], axes=[1], keepdims=1)
    offset = np.zeros((1, 1, hw, hw), np.float32)
    offset[0, 0, 0, 0] = big
    g.output(g.node("Add", [y, g.weight("offset", offset.shape, value=offset)]), "y",
             shape=[1, 1, hw, hw])
    return g.model()


@pytest.mark.parametrize("big", [1e4, 1e8])
def test_one_large_element_does_not_hide_errors_elsewhere(tmp_path, big):
    """63 of 64 outputs off by ~1% (the conv weights scaled), one element huge: max|ref| would
    set a tolerance that accepts it; the per-element test with a typical-magnitude floor does not."""
    proto = offset_net(big)
    model = as_ir(proto)
    w = model.graph.initializers["conv_w"]
    w.const_value = ir.tensor(w.const_value.numpy() * np.float32(1.05))
    res = verify(save(tmp_path, proto), model)
    assert not res.ok and "'y' differs" in res.message
    assert res.outputs[0].max_rel > 1e-3
    assert res.outputs[0].max_abs < big * 1e-5  # the old atol + rtol * max|ref| would pass it


def test_outliers_alone_do_not_fail_an_equal_model(tmp_path):
    """The same model against itself with huge and tiny values mixed: still equal."""
    proto = offset_net(1e8)
    assert verify(save(tmp_path, proto), as_ir(proto)).ok


def test_elementwise_floor_is_the_typical_magnitude():
    from tclint.verify import compare_elementwise

    ref = np.concatenate([np.full(99, 1.0), [1e6]]).astype(np.float32)
    near = ref.copy()
    near[:99] += 5e-6  # within rtol 1e-5 of |ref| + typical magnitude (1.0)
    assert compare_elementwise(ref, near, 1e-5, 1e-6)[0]
    far = ref.copy()
    far[:99] *= 1.001  # 0.1% on every ordinary element: 1e-9 of the largest one
    assert not compare_elementwise(ref, far, 1e-5, 1e-6)[0]
    zero = np.zeros(10, np.float32)
    assert compare_elementwise(zero, zero + 1e-7, 1e-5, 1e-6)[0]  # the absolute floor
    assert not compare_elementwise(zero, zero + 1e-5, 1e-5, 1e-6)[0]
    nan = np.array([np.nan, 1.0], np.float32)
    assert compare_elementwise(nan, nan.copy(), 1e-5, 1e-6)[0]
    assert not compare_elementwise(nan, np.array([0.0, 1.0], np.float32), 1e-5, 1e-6)[0]


# --------------------------------------------------------------------------------------------
# Issue 10 #2: integer inputs that index tables are drawn over their whole valid range
# --------------------------------------------------------------------------------------------
def embedding_net(vocab=50, d=8):
    """ids -> Cast -> Unsqueeze -> Gather(table) (int32 ids, through value-preserving ops) plus a
    0/1 mask that is not an index."""
    g = GraphBuilder("emb", seed=12)
    ids = g.input("ids", ["batch", "seq"], TensorProto.INT32)
    mask = g.input("mask", ["batch", "seq"], TensorProto.INT64)
    table = g.weight("table", (vocab, d))
    x = g.node("Gather", [table, g.node("Cast", [ids], to=TensorProto.INT64)], axis=0)
    m = g.node("Unsqueeze", [g.node("Cast", [mask], to=TensorProto.FLOAT), g.ints("ax", [-1])])
    g.output(g.node("Mul", [x, m]), "y")
    return g.model()


def test_index_inputs_are_found_through_casts_and_get_their_table_size():
    from tclint.verify import index_ranges

    assert index_ranges(embedding_net(vocab=50).graph) == {"ids": 50}
    from tclint import examples

    gpt2 = examples.gpt2(layers=1, hidden=16, heads=2, vocab=300)
    assert index_ranges(gpt2.graph) == {"input_ids": 300}


def test_random_ids_cover_negatives_and_both_ends():
    from tclint.verify import random_tensor

    rng = np.random.default_rng(0)
    ids = random_tensor(rng, (4, 256), np.int64, index_range=50)
    assert ids.min() == -50 and ids.max() == 49 and (ids < 0).mean() > 0.3
    one = [int(random_tensor(np.random.default_rng(s), (1, 1), np.int64, index_range=50, sample=s)[0, 0])
           for s in range(4)]
    assert sorted(one) == [-50, -1, 0, 49]  # each sample of a one-element input takes an end
    mask = random_tensor(rng, (4, 256), np.int64)
    assert set(np.unique(mask)) == {0, 1}


def test_a_table_padded_in_place_fails_on_negative_ids(tmp_path):
    """The old tied-embedding bug: rows appended to the table the Gather reads. Ids 0..V-1 read
    the same rows, -1 does not (it reads the new last row): verification must see it."""
    proto = embedding_net(vocab=50)
    model = as_ir(proto)
    t = model.graph.initializers["table"]
    padded = np.concatenate([t.const_value.numpy(), np.zeros((14, 8), np.float32)])
    t.const_value = ir.tensor(padded)
    t.shape = ir.Shape([64, 8])
    res = verify(save(tmp_path, proto), model, dims={"batch": 2, "seq": 16})
    assert not res.ok and "'y' differs" in res.message


def test_a_model_that_rejects_negative_ids_is_verified_on_non_negative_ones(tmp_path):
    """ids also set a Tile's repeats (negative repeats are an error): verification falls back to
    ids in [0, V-1] instead of failing on the original."""
    g = GraphBuilder("nonneg", seed=13)
    ids = g.input("ids", [1, 4], TensorProto.INT64)
    x = g.node("Gather", [g.weight("table", (20, 4)), ids], axis=0)  # [1, 4, 4]
    low = g.node("Reshape", [g.node("Add", [g.node("ReduceMin", [ids], keepdims=0), g.ints("one", 1)]),
                             g.ints("shape1", [1])])
    repeats = g.node("Concat", [g.ints("ones", [1, 1]), low], axis=0)
    g.output(g.node("Tile", [x, repeats]), "y")
    proto = g.model()
    import onnxruntime as ort

    sess = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    with pytest.raises(Exception):
        sess.run(None, {"ids": np.array([[-3, 1, 2, 3]], np.int64)})
    res = verify(save(tmp_path, proto), as_ir(proto))
    assert res.ok, res.message
