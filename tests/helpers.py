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


def data_file_of(model_path: Path) -> Path:
    """The one external data file a tclint-written model references: ``<name>.<token>.data``
    beside it (the writer's protocol, tclint/io.py), which must exist. Fails otherwise."""
    import re

    from onnx.external_data_helper import _get_all_tensors

    model_path = Path(model_path)
    proto = onnx.load(str(model_path), load_external_data=False)
    locations = {e.value for t in _get_all_tensors(proto) for e in t.external_data if e.key == "location"}
    assert len(locations) == 1, f"{model_path.name} references {sorted(locations)}"
    (location,) = locations
    assert re.fullmatch(re.escape(model_path.name) + r"\.[0-9a-f]{16}\.data", location), location
    data = model_path.parent / location
    assert data.is_file(), f"{location} is missing beside {model_path.name}"
    return data
