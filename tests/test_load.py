"""Loading without weights, the user's dim bindings, and one-line errors on bad input."""

from __future__ import annotations

import os

import numpy as np
import onnx
import onnx_ir as ir
import pytest
from onnx import helper

from tclint import examples
from tclint.errors import InputError, UsageError
from tclint.load import bind_inputs, load_model, parse_dim, parse_input_shape, resolve_shapes
from tests.helpers import init, model, save, vi


@pytest.mark.parametrize("text", ["image:1x3x224x224", "image:[1,3,224,224]", "image:1,3,224,224",
                                  "image: [1, 3, 224, 224]"])
def test_three_shape_spellings(text):
    assert parse_input_shape(text) == ("image", (1, 3, 224, 224))


def test_shape_name_with_colon_and_dims():
    assert parse_input_shape("input:0:2x8") == ("input:0", (2, 8))
    assert parse_dim("batch=8") == ("batch", 8)


@pytest.mark.parametrize("bad", ["batch", "=3", "batch=x", "batch=0"])
def test_bad_dim(bad):
    with pytest.raises(UsageError):
        parse_dim(bad)


@pytest.mark.parametrize("bad", ["1x3x224", "image:1xAx3", "image:-1x3"])
def test_bad_input_shape(bad):
    with pytest.raises(UsageError):
        parse_input_shape(bad)


def _matmul_model(shape=("batch", "seq", 64)):
    return model(
        [helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")],
        [vi("x", list(shape))], [vi("y", None)], [init("w", (64, 48))],
    )


def test_symbolic_dims_bound_and_propagated(tmp_path):
    m = load_model(save(tmp_path, _matmul_model()))
    res = resolve_shapes(m, dims={"batch": 8, "seq": 512, "nope": 3})
    y = m.graph.outputs[0]
    assert list(y.shape) == [8, 512, 48]
    assert res.bound == {"batch": 8, "seq": 512}
    assert res.unused_bindings == ["nope"]


def test_input_shape_binding_checks_names_and_ranks(tmp_path):
    path = save(tmp_path, _matmul_model())
    with pytest.raises(InputError, match="not a model input"):
        bind_inputs(load_model(path), input_shapes={"image": (1, 2, 3)})
    with pytest.raises(InputError, match="rank"):
        bind_inputs(load_model(path), input_shapes={"x": (1, 2)})
    fixed = save(tmp_path, _matmul_model((2, 3, 64)), "fixed.onnx")
    with pytest.raises(InputError, match="conflicts"):
        bind_inputs(load_model(fixed), input_shapes={"x": (2, 3, 32)})


def test_missing_file_dir_empty_garbage_truncated(tmp_path):
    with pytest.raises(InputError, match="no such file"):
        load_model(tmp_path / "missing.onnx")
    with pytest.raises(InputError, match="directory"):
        load_model(tmp_path)
    empty = tmp_path / "empty.onnx"
    empty.write_bytes(b"")
    with pytest.raises(InputError, match="empty"):
        load_model(empty)
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"this is not a protobuf at all \xff\xfe" * 10)
    with pytest.raises(InputError):
        load_model(garbage)
    good = save(tmp_path, examples.single_conv(c=16, k=16))
    data = good.read_bytes()
    truncated = tmp_path / "truncated.onnx"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match="not a valid ONNX model|truncated"):
        load_model(truncated)


def test_newer_opset_and_unknown_op_are_input_errors(tmp_path):
    future = _matmul_model()
    future.opset_import[0].version = onnx.defs.onnx_opset_version() + 5
    with pytest.raises(InputError, match="newer"):
        load_model(save(tmp_path, future, "future.onnx"))
    unknown = model([helper.make_node("NotAnOnnxOp", ["x"], ["y"])], [vi("x", [2])], [vi("y", [2])])
    with pytest.raises(InputError, match="unsupported op 'NotAnOnnxOp'"):
        load_model(save(tmp_path, unknown, "unknown.onnx"))


def test_external_weights_are_not_read(tmp_path):
    """A 27 GB-shaped model with a sparse data file: only shapes are looked at."""
    data = tmp_path / "big.onnx.data"
    proto = examples.llama(layers=2, hidden=4096, heads=32, kv_heads=32, ffn=11008,
                           weights="external", data_path=data)
    path = save(tmp_path, proto, "big.onnx")
    m = load_model(path)
    tensors = [v.const_value for v in m.graph.initializers.values()]
    externals = [t for t in tensors if isinstance(t, ir.ExternalTensor)]
    assert len(externals) > 10
    assert sum(t.nbytes for t in externals) > 1.5e9
    # the data file is sparse: the allocated blocks are far smaller than its size
    st = os.stat(data)
    assert st.st_blocks * 512 < st.st_size / 100


def test_missing_external_data_still_loads_for_check(tmp_path):
    data = tmp_path / "w.onnx.data"
    proto = examples.llama(layers=1, hidden=256, heads=4, kv_heads=4, ffn=688, vocab=1000,
                           weights="external", data_path=data)
    path = save(tmp_path, proto, "w.onnx")
    data.unlink()
    m = load_model(path)
    resolve_shapes(m, dims={"batch": 1, "seq": 16})
    assert m.graph.outputs[0].shape is not None


def test_old_opset_initializers_listed_as_inputs(tmp_path):
    """IR v3 style: every initializer also appears as a graph input."""
    w = init("w", (8, 12), value=np.ones((8, 12)))
    m = model([helper.make_node("MatMul", ["x", "w"], ["y"])], [vi("x", [4, 8]), vi("w", [8, 12])],
              [vi("y", [4, 12])], [w], opset=9, ir_version=3)
    loaded = load_model(save(tmp_path, m))
    value = next(v for v in loaded.graph.inputs if v.name == "w")
    assert value.const_value is not None


def test_symbolic_inference_takes_over_where_onnx_stops(tmp_path):
    """ONNX shape inference does not know com.microsoft ops; onnxruntime's symbolic inference
    gives the MatMul after a com.microsoft.Attention its M, so the layer is fully resolved."""
    nodes = [
        helper.make_node("Attention", ["x", "w1", "b1"], ["h"], domain="com.microsoft", num_heads=2),
        helper.make_node("MatMul", ["h", "w2"], ["y"], name="after"),
    ]
    m = model(nodes, [vi("x", ["batch", 32, 128])], [vi("y", None)],
              [init("w1", (128, 384)), init("b1", (384,)), init("w2", (128, 40))], ms=True)
    loaded = load_model(save(tmp_path, m))
    res = resolve_shapes(loaded, dims={"batch": 4})
    assert res.symbolic_inference
    h = next(v for n in loaded.graph for v in n.outputs if v.name == "h")
    assert list(h.shape) == [4, 32, 128]
    no_ort = load_model(save(tmp_path, m, "again.onnx"))
    resolve_shapes(no_ort, dims={"batch": 4}, symbolic=False)
    h2 = next(v for n in no_ort.graph for v in n.outputs if v.name == "h")
    assert h2.shape is None or not all(isinstance(d, int) for d in h2.shape)
