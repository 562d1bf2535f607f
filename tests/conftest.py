from __future__ import annotations

import pytest


def pytest_collection_modifyitems(config, items):
    """GPU tests skip cleanly unless a CUDA session can really be created."""
    if not any("gpu" in item.keywords for item in items):
        return
    from tclint.bench import cuda_available  # noqa: PLC0415

    if cuda_available():
        return
    skip = pytest.mark.skip(reason="needs a working CUDA provider in onnxruntime")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
