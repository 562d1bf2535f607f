"""tclint: a Tensor Core performance linter and auto-padder for ONNX models.

Data flow (one module each): ``load`` -> ``view`` (GEMM-like layers) -> ``cost`` -> ``rules``
-> ``report``; and for rewriting: ``passes`` -> ``verify`` -> ``bench``.
"""

from __future__ import annotations

__version__ = "0.1.0"
