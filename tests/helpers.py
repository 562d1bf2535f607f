"""Tiny graph builders shared by the tests (real ONNX graphs, built with onnx.helper)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

F = TensorProto.FLOAT


def vi(name, shape, elem=F):
    return helper.make_tensor_value_info(name, elem, shape)


def init(name, shape, dtype=np.float32, value=None):
    arr = np.asarray(value, dtype=dtype) if value is not None else np.zeros(shape, dtype=dtype)
    return numpy_helper.from_array(arr, name)


def model(nodes, inputs, outputs, inits=(), *, opset=17, ms=False, functions=(), ir_version=8):
    graph = helper.make_graph(list(nodes), "g", list(inputs), list(outputs), list(inits))
    imports = [helper.make_opsetid("", opset)]
    if ms:
        imports.append(helper.make_opsetid("com.microsoft", 1))
    for f in functions:
        if f.domain not in [i.domain for i in imports]:
            imports.append(helper.make_opsetid(f.domain, 1))
    m = helper.make_model(graph, opset_imports=imports, functions=list(functions))
    m.ir_version = ir_version
    return m


def save(tmp_path: Path, m: onnx.ModelProto, name: str = "model.onnx") -> Path:
    p = Path(tmp_path) / name
    onnx.save(m, str(p))
    return p


def analyse_proto(m: onnx.ModelProto, tmp_path: Path, **options):
    """Save, then run the real check pipeline on it (returns tclint.lint.Analysis)."""
    from tclint.config import CheckOptions
    from tclint.lint import analyse
    from tclint.load import load_model

    path = save(tmp_path, m)
    return analyse(load_model(path), CheckOptions(**options), model_name=path.name)


def onnx_test_data() -> Path:
    return Path(onnx.__file__).parent / "backend" / "test" / "data"
