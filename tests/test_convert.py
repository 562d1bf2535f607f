"""tclint convert: each FP16-converter failure mode of the peers (docs/peers.md) on a small graph.

Every test checks the structure of the converted graph and, where the graph runs, that
onnxruntime (CPU) loads it and its outputs stay within FP16 tolerance of float32.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnx_ir as ir
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks import _models as M  # noqa: E402

from tclint.cli import main  # noqa: E402
from tclint.convert import convert_model  # noqa: E402
from tclint.passes.fp16 import ConvertFloat16Pass  # noqa: E402
from tests.helpers import data_file_of  # noqa: E402

F, F16 = TensorProto.FLOAT, TensorProto.FLOAT16


# --------------------------------------------------------------------------------------------
def _convert(proto: onnx.ModelProto, **options) -> tuple[onnx.ModelProto, ConvertFloat16Pass]:
    model = ir.from_proto(proto)
    conv = ConvertFloat16Pass(**options)
    conv(model)
    out = ir.to_proto(model)
    onnx.checker.check_model(out, full_check=True)
    return out, conv


def _run(proto: onnx.ModelProto, feeds) -> list[np.ndarray]:
    sess = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)


def _assert_close(ref, got, rtol=2e-2):
    for r, g in zip(ref, got):
        g = np.asarray(g, np.float32)
        assert np.all(np.isfinite(g))
        scale = float(np.max(np.abs(r))) or 1.0
        assert float(np.max(np.abs(r - g))) <= rtol * scale


def _nodes(proto: onnx.ModelProto, op: str) -> list[onnx.NodeProto]:
    return [n for n in proto.graph.node if n.op_type == op]


def _types(proto: onnx.ModelProto) -> dict[str, int]:
    inferred = onnx.shape_inference.infer_shapes(proto)
    types = {v.name: v.type.tensor_type.elem_type for v in inferred.graph.value_info}
    types.update({v.name: v.type.tensor_type.elem_type for v in inferred.graph.input})
    types.update({v.name: v.type.tensor_type.elem_type for v in inferred.graph.output})
    types.update({t.name: t.data_type for t in inferred.graph.initializer})
    return types


def _model(nodes, inputs, outputs, inits=(), opset=17):
    graph = helper.make_graph(nodes, "g", inputs, outputs, list(inits))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=9)


def _init(name, array):
    return numpy_helper.from_array(np.asarray(array), name)


# --------------------------------------------------------------------------------------------
# Peer failure modes
# --------------------------------------------------------------------------------------------
def test_resize_scales_stay_float32_and_output_matches():
    proto = M.resize_net(channels=8, image=8)
    out, _ = _convert(proto)
    resize = _nodes(out, "Resize")[0]
    types = _types(out)
    assert types[resize.input[0]] == F16
    assert types[resize.input[2]] == F
    feeds = {"input": np.random.default_rng(0).standard_normal((1, 3, 8, 8)).astype(np.float32)}
    _assert_close(_run(proto, feeds), _run(out, feeds))


@pytest.mark.parametrize(
    "op, extra_inputs, extra_inits, attrs",
    [
        ("GridSample", ["grid"], [("grid", np.zeros((1, 4, 4, 2), np.float32))], {}),
        ("RoiAlign", ["rois", "idx"], [("rois", np.array([[0, 0, 3, 3]], np.float32)),
                                        ("idx", np.array([0], np.int64))],
         {"output_height": 4, "output_width": 4}),
    ],
)
def test_ops_without_cuda_fp16_kernel_stay_float32(op, extra_inputs, extra_inits, attrs):
    nodes = [
        helper.make_node("Relu", ["x"], ["r"], name="pre"),
        helper.make_node(op, ["r", *extra_inputs], ["y"], name="target", **attrs),
        helper.make_node("Relu", ["y"], ["z"], name="post"),
    ]
    proto = _model(nodes, [helper.make_tensor_value_info("x", F, [1, 1, 4, 4])],
                   [helper.make_tensor_value_info("z", F, None)],
                   [_init(n, a) for n, a in extra_inits])
    out, conv = _convert(proto, provider="cuda")
    types = _types(out)
    target = next(n for n in out.graph.node if n.name == "target")
    assert types[target.output[0]] == F and types[target.input[0]] == F
    assert [k.name for k in conv.stats.kept] == ["target"]
    assert "no fp16 kernel" in conv.stats.kept[0].reason
    feeds = {"x": np.random.default_rng(1).random((1, 1, 4, 4), dtype=np.float32)}
    _assert_close(_run(proto, feeds), _run(out, feeds))


def test_range_stays_float32_on_cuda_and_by_its_onnx_schema():
    nodes = [
        helper.make_node("ReduceMax", ["x"], ["limit"], keepdims=0, name="limit"),
        helper.make_node("Range", ["start", "limit", "delta"], ["r"], name="range"),
        helper.make_node("Mul", ["r", "r"], ["y"], name="square"),
    ]
    proto = _model(nodes, [helper.make_tensor_value_info("x", F, [4])],
                   [helper.make_tensor_value_info("y", F, None)],
                   [_init("start", np.array(0, np.float32)), _init("delta", np.array(1, np.float32))])
    out, conv = _convert(proto, provider="cuda")
    assert _types(out)["r"] == F
    assert "range" in {k.name for k in conv.stats.kept}
    feeds = {"x": np.array([1, 5, 3, 2], np.float32)}
    _assert_close(_run(proto, feeds), _run(out, feeds))
    _, conv_trt = _convert(proto, provider="tensorrt")  # TensorRT has it, ONNX Range has no fp16
    assert "ONNX schema" in next(k.reason for k in conv_trt.stats.kept if k.name == "range")


def test_eyelike_kept_float32_pins_dtype_and_random_normal_like_gets_fp16_dtype():
    def build(with_random: bool):
        nodes = [
            helper.make_node("MatMul", ["x", "w"], ["m"], name="mm"),
            helper.make_node("EyeLike", ["m"], ["eye"], name="eye"),
            helper.make_node("Add", ["m", "eye"], ["y"], name="add_eye"),
        ]
        if with_random:
            nodes[-1].output[0] = "a"
            nodes += [helper.make_node("RandomNormalLike", ["m"], ["noise"], name="noise", scale=0.0),
                      helper.make_node("Add", ["a", "noise"], ["y"], name="add_noise")]
        return _model(nodes, [helper.make_tensor_value_info("x", F, [4, 4])],
                      [helper.make_tensor_value_info("y", F, [4, 4])],
                      [_init("w", np.eye(4, dtype=np.float32) * 2)])

    out, conv = _convert(build(True), provider="cuda")
    eye = next(n for n in out.graph.node if n.op_type == "EyeLike")
    noise = next(n for n in out.graph.node if n.op_type == "RandomNormalLike")
    assert {a.name: a.i for a in eye.attribute}["dtype"] == F  # input is fp16: pin float32
    assert {a.name: a.i for a in noise.attribute}["dtype"] == F16
    assert "eye" in {k.name for k in conv.stats.kept}
    types = _types(out)
    assert types[eye.output[0]] == F and types[noise.output[0]] == F16
    # (onnxruntime's CPU provider aborts on an fp16 RandomNormalLike: run the EyeLike part only)
    proto = build(False)
    out, _ = _convert(proto, provider="cuda")
    feeds = {"x": np.arange(16, dtype=np.float32).reshape(4, 4)}
    _assert_close(_run(proto, feeds), _run(out, feeds))
    _, conv_trt = _convert(proto, provider="tensorrt")  # TensorRT has an FP16 EyeLike
    assert "eye" not in {k.name for k in conv_trt.stats.kept}


def test_cast_to_float_is_rewritten_to_fp16():
    nodes = [
        helper.make_node("Cast", ["ids"], ["f"], to=F, name="to_float"),
        helper.make_node("Mul", ["f", "scale"], ["y"], name="scale"),
    ]
    proto = _model(nodes, [helper.make_tensor_value_info("ids", TensorProto.INT64, [8])],
                   [helper.make_tensor_value_info("y", F, [8])], [_init("scale", np.full(8, 0.5, np.float32))])
    out, _ = _convert(proto)
    cast = next(n for n in out.graph.node if n.name == "to_float")
    assert cast.attribute[0].i == F16
    # int -> fp16 feeds the Mul directly; one Cast back to float32 for the graph output
    assert len(_nodes(out, "Cast")) == 2
    feeds = {"ids": np.arange(8, dtype=np.int64)}
    _assert_close(_run(proto, feeds), _run(out, feeds))


def test_unnamed_unsorted_nodes_get_unique_names_and_topological_order():
    nodes = [
        helper.make_node("Tanh", ["b"], ["c"]),             # consumer first (unsorted)
        helper.make_node("Relu", ["x"], ["a"], name="dup"),
        helper.make_node("Sigmoid", ["a"], ["b"], name="dup"),
        helper.make_node("Add", ["c", "a"], ["y"]),
    ]
    proto = _model(nodes, [helper.make_tensor_value_info("x", F, [2, 3])],
                   [helper.make_tensor_value_info("y", F, [2, 3])])
    out, _ = _convert(proto)  # _convert runs the full checker: topological order, SSA
    names = [n.name for n in out.graph.node]
    assert all(names) and len(set(names)) == len(names)
    feeds = {"x": np.random.default_rng(2).standard_normal((2, 3)).astype(np.float32)}
    r = np.maximum(feeds["x"], 0)
    expected = np.tanh(1 / (1 + np.exp(-r))) + r
    _assert_close([expected], _run(out, feeds))


def test_no_redundant_cast_pairs_at_any_fan_out_including_input_casts():
    nodes = [
        helper.make_node("Relu", ["x"], ["r"], name="relu"),
        # casts that were in the input model: a lossless fp16 -> fp32 pair after conversion
        helper.make_node("Cast", ["r"], ["r16"], to=F16, name="in_cast16"),
        helper.make_node("Cast", ["r16"], ["r32"], to=F, name="in_cast32"),
        *[helper.make_node(op, ["r32"], [f"o{i}"], name=f"fan{i}")
          for i, op in enumerate(["Sigmoid", "Tanh", "Relu", "Abs"])],
        # fan-out of a float32-only op (GridSample on CUDA) to four fp16 consumers
        helper.make_node("GridSample", ["o0", "grid"], ["g"], name="grid"),
        *[helper.make_node("Mul", ["g", f"o{i}"], [f"p{i}"], name=f"mul{i}") for i in range(1, 4)],
        helper.make_node("Sum", ["p1", "p2", "p3"], ["y"], name="sum"),
    ]
    proto = _model(nodes, [helper.make_tensor_value_info("x", F, [1, 1, 4, 4])],
                   [helper.make_tensor_value_info("y", F, [1, 1, 4, 4])],
                   [_init("grid", np.zeros((1, 4, 4, 2), np.float32))])
    out, conv = _convert(proto)
    casts = _nodes(out, "Cast")
    producers = {o: n for n in out.graph.node for o in n.output}
    for cast in casts:
        src = producers.get(cast.input[0])
        assert src is None or src.op_type != "Cast", f"Cast pair {src.name} -> {cast.name}"
    inputs = [c.input[0] for c in casts]
    assert len(inputs) == len(set(inputs)), "two Casts of one value"
    # x -> fp16, o0 -> fp32 (into GridSample), g -> fp16 (shared by 3 Muls), y -> fp32
    assert len(casts) == 4
    assert conv.stats.casts_in_input == 2 and conv.stats.casts_removed >= 2
    feeds = {"x": np.random.default_rng(3).standard_normal((1, 1, 4, 4)).astype(np.float32)}
    _assert_close(_run(proto, feeds), _run(out, feeds))


def test_constant_casts_are_folded():
    nodes = [
        helper.make_node("Cast", ["w16"], ["w32"], to=F, name="cast_w"),
        helper.make_node("MatMul", ["x", "w32"], ["y"], name="mm"),
    ]
    proto = _model(nodes, [helper.make_tensor_value_info("x", F, [2, 4])],
                   [helper.make_tensor_value_info("y", F, [2, 4])],
                   [_init("w16", np.eye(4, dtype=np.float16))])
    out, _ = _convert(proto)
    assert [n.input[0] for n in _nodes(out, "Cast")] == ["x", next(n for n in out.graph.node if n.op_type == "MatMul").output[0]]
    assert _types(out)[next(n for n in out.graph.node if n.op_type == "MatMul").input[1]] == F16


def test_if_and_loop_subgraphs_with_outer_scope_values():
    proto = M.control_flow_net(width=16, steps=2)
    out, _ = _convert(proto)
    feeds = {"input": np.random.default_rng(4).standard_normal((4, 16)).astype(np.float32)}
    _assert_close(_run(proto, feeds), _run(out, feeds))
    loop = _nodes(out, "Loop")[0]
    assert _types(out)[loop.input[2]] == F16  # the state stays fp16 through the Loop
    assert len(_nodes(out, "Cast")) == 2  # only at the graph input and output
    if_node = _nodes(out, "If")[0]
    for attr in if_node.attribute:
        matmul = next(n for n in attr.g.node if n.op_type == "MatMul")
        outer_weight = matmul.input[1]
        assert any(t.name == outer_weight and t.data_type == F16 for t in out.graph.initializer)


def test_subgraph_reuses_a_cast_made_in_the_enclosing_graph():
    grid = _init("grid", np.zeros((1, 4, 4, 2), np.float32))
    then = helper.make_graph(
        [helper.make_node("Relu", ["g"], ["t"], name="then/relu")], "then", [],
        [helper.make_tensor_value_info("t", F, None)])
    other = helper.make_graph(
        [helper.make_node("Neg", ["g"], ["e"], name="else/neg")], "else", [],
        [helper.make_tensor_value_info("e", F, None)])
    nodes = [
        helper.make_node("GridSample", ["x", "grid"], ["g"], name="gs"),  # float32 on CUDA
        helper.make_node("Sigmoid", ["g"], ["s"], name="outer_use"),      # needs g as fp16
        helper.make_node("ReduceSum", ["s"], ["total"], keepdims=0, name="sum"),
        helper.make_node("Greater", ["total", "zero"], ["c"], name="cond"),
        helper.make_node("If", ["c"], ["y"], name="branch", then_branch=then, else_branch=other),
    ]
    proto = _model(nodes, [helper.make_tensor_value_info("x", F, [1, 1, 4, 4])],
                   [helper.make_tensor_value_info("y", F, None)],
                   [grid, _init("zero", np.array(0, np.float32))])
    out, _ = _convert(proto)
    casts_of_g = [n for n in out.graph.node if n.op_type == "Cast" and n.input[0] == "g"]
    assert len(casts_of_g) == 1
    for attr in _nodes(out, "If")[0].attribute:
        assert not [n for n in attr.g.node if n.op_type == "Cast" and n.input[0] == "g"]
    feeds = {"x": np.random.default_rng(10).standard_normal((1, 1, 4, 4)).astype(np.float32)}
    _assert_close(_run(proto, feeds), _run(out, feeds))


def test_sequence_values_keep_their_sequence_type():
    nodes = [
        helper.make_node("Relu", ["x"], ["r"], name="relu"),
        helper.make_node("SequenceConstruct", ["r", "x"], ["seq"], name="pack"),
        helper.make_node("SequenceAt", ["seq", "one"], ["item"], name="at"),
        helper.make_node("Sigmoid", ["item"], ["y"], name="sig"),
    ]
    proto = _model(nodes, [helper.make_tensor_value_info("x", F, [3])],
                   [helper.make_tensor_value_info("y", F, [3])], [_init("one", np.array(1, np.int64))])
    out, conv = _convert(proto)
    assert {k.name for k in conv.stats.kept} == {"pack", "at"}
    feeds = {"x": np.array([-1.0, 0.5, 2.0], np.float32)}
    _assert_close(_run(proto, feeds), _run(out, feeds))


def test_overflowing_constants_are_clamped_and_reported():
    big = np.array([1e6, -7e4, 1.0, 1e-10, 0.0], np.float32)
    nodes = [helper.make_node("Add", ["x", "c"], ["y"], name="add")]
    proto = _model(nodes, [helper.make_tensor_value_info("x", F, [5])],
                   [helper.make_tensor_value_info("y", F, [5])], [_init("c", big)])
    out, conv = _convert(proto)
    [clamp] = conv.stats.clamps
    assert (clamp.tensor, clamp.clamped, clamp.raised) == ("c", 2, 1)
    init = next(t for t in out.graph.initializer if t.name == "c")
    values = numpy_helper.to_array(init)
    assert values.dtype == np.float16 and np.all(np.isfinite(values))
    assert values[0] == 65504 and values[1] == -65504 and values[3] > 0


def test_norm_epsilon_that_flushes_to_zero_is_raised_or_kept_float32():
    proto = M.layernorm_net(width=16, seq=4)
    feeds = {"input": np.ones((1, 4, 16), np.float32)}  # zero variance: fp16 sqrt(0 + 0) = 0
    ref = _run(proto, feeds)
    out, conv = _convert(proto)
    [eps] = conv.stats.norm_epsilons
    assert eps.value == pytest.approx(1e-12) and eps.action.startswith("raised")
    assert not conv.stats.kept
    got = _run(out, feeds)
    assert np.all(np.isfinite(got[0]))
    _assert_close(ref, got)
    out, conv = _convert(proto, keep_norm_epsilon=True)
    assert {k.op_type for k in conv.stats.kept if "epsilon" in k.reason} == {"Add", "Sqrt"}
    assert conv.stats.norm_epsilons[0].action == "kept float32"
    _assert_close(ref, _run(out, feeds))


@pytest.mark.parametrize("build, feeds", [
    (lambda: M.gpt2(layers=2, width=32, heads=4, vocab=64, seq=8),
     {"input_ids": np.arange(8, dtype=np.int64)[None] % 64}),
    (lambda: M.vit(layers=1, width=32, heads=4, mlp=64, image=16, patch=8, classes=10),
     {"input": np.random.default_rng(5).standard_normal((1, 3, 16, 16)).astype(np.float32)}),
    (lambda: M.resnet(blocks=(1, 1), width=8, image=32, classes=10),
     {"input": np.random.default_rng(6).standard_normal((1, 3, 32, 32)).astype(np.float32)}),
])
def test_transformers_and_cnn_run_within_fp16_tolerance(build, feeds):
    proto = build()
    out, conv = _convert(proto)
    _assert_close(_run(proto, feeds), _run(out, feeds))
    # keep_io_types: one Cast per float graph input/output, Casts only where the type changes
    assert conv.stats.casts_in_output <= 2 + 2 * len(conv.stats.kept)


def test_keep_io_types_off_makes_io_fp16():
    proto = M.resnet(blocks=(1,), width=8, image=16, classes=4)
    out, _ = _convert(proto, keep_io_types=False)
    assert out.graph.input[0].type.tensor_type.elem_type == F16
    assert out.graph.output[0].type.tensor_type.elem_type == F16
    x = np.random.default_rng(7).standard_normal((1, 3, 16, 16)).astype(np.float32)
    _assert_close(_run(proto, {"input": x}), _run(out, {"input": x.astype(np.float16)}))


def test_cpu_provider_keeps_ops_without_cpu_fp16_kernels():
    proto = M.resnet(blocks=(1,), width=8, image=16, classes=4)
    out, conv = _convert(proto, provider="cpu")
    kept_ops = {k.op_type for k in conv.stats.kept}
    assert {"Conv", "Relu", "Gemm"} <= kept_ops  # onnxruntime CPU has float-only kernels for them
    assert all("on cpu" in k.reason for k in conv.stats.kept)
    x = np.random.default_rng(11).standard_normal((1, 3, 16, 16)).astype(np.float32)
    _assert_close(_run(proto, {"input": x}), _run(out, {"input": x}))


def test_bf16_conversion_passes_checker():
    out, conv = _convert(M.resnet(blocks=(1,), width=8, image=16, classes=4), dtype="bf16")
    assert any(t.data_type == TensorProto.BFLOAT16 for t in out.graph.initializer)
    assert conv.stats.nodes_low_precision > 0


def test_block_op_and_block_node():
    proto = M.resnet(blocks=(1,), width=8, image=16, classes=4)
    out, conv = _convert(proto, block_ops=["Gemm"], block_nodes=["logits"])
    assert {k.reason for k in conv.stats.kept} <= {"blocked by --block-op", "blocked by --block-node"}
    gemm = _nodes(out, "Gemm")[0]
    assert _types(out)[gemm.output[0]] == F


def test_model_local_function_converted():
    fn = helper.make_function(
        "local", "Scale2", ["a"], ["b"],
        [helper.make_node("Constant", [], ["two"], value=numpy_helper.from_array(np.array(2, np.float32))),
         helper.make_node("Mul", ["a", "two"], ["b"])],
        opset_imports=[helper.make_opsetid("", 17)],
    )
    nodes = [helper.make_node("Relu", ["x"], ["r"], name="relu"),
             helper.make_node("Scale2", ["r"], ["y"], domain="local", name="call")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", F, [3])],
                              [helper.make_tensor_value_info("y", F, [3])])
    proto = helper.make_model(graph, functions=[fn], ir_version=9,
                              opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("local", 1)])
    out, conv = _convert(proto)
    assert conv.stats.functions_low_precision == ("local::Scale2",)
    const = out.functions[0].node[0].attribute[0].t
    assert const.data_type == F16
    feeds = {"x": np.array([-1, 0.5, 3], np.float32)}
    _assert_close(_run(proto, feeds), _run(out, feeds))


# --------------------------------------------------------------------------------------------
# External data, the library API, the CLI
# --------------------------------------------------------------------------------------------
def test_external_data_model_converted_lazily(tmp_path):
    src = M.save_with_external_data(M.resize_net(channels=8, image=8), tmp_path / "m.onnx")
    before = src.read_bytes(), (tmp_path / "m.onnx.data").read_bytes()
    report = convert_model(src, tmp_path / "out.onnx", external_data=True)
    assert report.loads_in_ort and report.max_rel_error < 2e-2
    data_file_of(tmp_path / "out.onnx")
    assert (src.read_bytes(), (tmp_path / "m.onnx.data").read_bytes()) == before
    out = onnx.load(str(tmp_path / "out.onnx"))
    assert all(t.data_type in (F16, F, TensorProto.INT64) for t in out.graph.initializer)
    assert any(t.data_type == F16 for t in out.graph.initializer)


def test_missing_external_data_is_input_error(tmp_path, capsys):
    src = M.save_with_external_data(M.resize_net(channels=8, image=8), tmp_path / "m.onnx")
    (tmp_path / "m.onnx.data").unlink()
    assert main(["convert", str(src), "-o", str(tmp_path / "o.onnx")]) == 2
    err = capsys.readouterr().err
    assert "missing" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "o.onnx").exists()


def test_cli_convert_json_and_table(tmp_path, capsys):
    src = tmp_path / "m.onnx"
    onnx.save(M.layernorm_net(width=16, seq=4), str(src))
    assert main(["convert", str(src), "-o", str(tmp_path / "o.onnx"), "--format", "json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["dtype"] == "fp16" and data["loads_in_ort"] is True
    assert [e["value"] for e in data["norm_epsilons"]] == [pytest.approx(1e-12)]
    assert data["kept"] == []
    assert main(["convert", str(src), "-o", str(tmp_path / "o2.onnx"), "--block-op", "MatMul,Div"]) == 0
    text = capsys.readouterr().out
    assert "blocked by --block-op" in text and "Kept in float32" in text
    assert main(["convert", str(src), "-o", str(tmp_path / "o3.onnx"), "--keep-norm-epsilon"]) == 0
    assert "flushes to zero" in capsys.readouterr().out


def test_cli_reads_tool_tclint_convert_config(tmp_path, capsys):
    (tmp_path / "pyproject.toml").write_text(
        '[tool.tclint.convert]\nblock-ops = ["Gemm"]\nprovider = "tensorrt"\n')
    src = tmp_path / "m.onnx"
    onnx.save(M.resnet(blocks=(1,), width=8, image=16, classes=4), str(src))
    assert main(["convert", str(src), "-o", str(tmp_path / "o.onnx"), "--format", "json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["provider"] == "tensorrt"
    assert [k["reason"] for k in data["kept"]] == ["blocked by --block-op"]
    (tmp_path / "pyproject.toml").write_text('[tool.tclint.convert]\nblock_op = ["Gemm"]\n')
    assert main(["convert", str(src), "-o", str(tmp_path / "o.onnx")]) == 2
    assert "unknown [tool.tclint.convert] key" in capsys.readouterr().err


def test_cli_bad_input_exits_2(tmp_path, capsys):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model")
    assert main(["convert", str(bad), "-o", str(tmp_path / "o.onnx")]) == 2
    assert main(["convert", str(tmp_path / "nope.onnx"), "-o", str(tmp_path / "o.onnx")]) == 2
    src = tmp_path / "m.onnx"
    onnx.save(M.hot_cnn(channels=4, image=8), str(src))
    npz = tmp_path / "in.npz"
    np.savez(npz, wrong=np.zeros(3))
    assert main(["convert", str(src), "-o", str(tmp_path / "o.onnx"), "--inputs", str(npz)]) == 2
    assert "Traceback" not in capsys.readouterr().err


def test_auto_keeps_the_large_activation_block_and_meets_tolerance(tmp_path):
    src = tmp_path / "hot.onnx"
    onnx.save(M.hot_cnn(channels=8, image=16), str(src))
    rng = np.random.default_rng(8)
    npz = tmp_path / "in.npz"
    np.savez(npz, input=rng.random((3, 1, 3, 16, 16), dtype=np.float32))
    plain = convert_model(src, None, inputs=npz, rtol=1e-2, atol=1e-3)
    report = convert_model(src, tmp_path / "o.onnx", auto=True, inputs=npz, rtol=1e-2, atol=1e-3)
    kept = {k["node"] for k in report.auto["keep"]}
    assert kept and all(k.startswith("hot/") for k in kept)
    assert "hot/square" in kept  # the node whose float32 values exceed 65504
    assert report.auto["within_tolerance"] and report.auto["validations"] <= 4
    assert report.max_rel_error < plain.max_rel_error or plain.max_rel_error == float("inf")
    assert {k.name for k in report.kept} == kept


@pytest.mark.skipif(shutil.which("tclint") is None and not Path(sys.prefix, "bin", "tclint").exists(),
                    reason="tclint command not installed")
def test_installed_command_subprocess(tmp_path):
    src = tmp_path / "m.onnx"
    onnx.save(M.resnet(blocks=(1,), width=8, image=16, classes=4), str(src))
    exe = shutil.which("tclint") or str(Path(sys.prefix, "bin", "tclint"))
    proc = subprocess.run([exe, "convert", str(src), "-o", str(tmp_path / "o.onnx")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "fp16 for cuda" in proc.stdout
    assert onnx.load(str(tmp_path / "o.onnx")).graph.initializer[0].data_type == F16


def _cuda_session_or_skip(proto):
    try:
        sess = ort.InferenceSession(proto.SerializeToString(),
                                    providers=["CUDAExecutionProvider", "CPUExecutionProvider"])
    except Exception as exc:  # noqa: BLE001
        pytest.skip(f"no CUDA session: {exc}")
    if "CUDAExecutionProvider" not in sess.get_providers():
        pytest.skip("CUDAExecutionProvider could not be created")
    return sess


@pytest.mark.gpu
def test_converted_models_run_on_cuda_within_tolerance():
    for proto, feeds in [
        (M.resize_net(channels=8, image=8),
         {"input": np.random.default_rng(9).standard_normal((1, 3, 8, 8)).astype(np.float32)}),
        (M.control_flow_net(width=16), {"input": np.ones((4, 16), np.float32)}),
    ]:
        out, _ = _convert(proto, provider="cuda")
        sess = _cuda_session_or_skip(out)
        _assert_close(_run(proto, feeds), sess.run(None, feeds))
