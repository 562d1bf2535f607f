"""Export a full-size torchvision ResNet-50 (random weights made to look trained) for
benchmarks/compare_quantizers.py. Runs in the export venv (torch is not a tclint dependency)::

    /work/exportenv/venv/bin/python benchmarks/export_resnet50.py /tmp/resnet50.onnx

The same recipe as tests/make_exports.py (``wake``: random constant parameters, BatchNorm
statistics measured on random images) and torch.onnx's dynamo exporter with its defaults
(weights in ``<out>.data``). ``--torchvision-init`` keeps torchvision's own initialisation
instead (BatchNorm the identity), as a model straight from ``resnet50(weights=None)``. The file (~100 MB) stays out of the repository.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
import torchvision  # noqa: E402

from tests import make_exports as mx  # noqa: E402


def main(argv: list[str]) -> int:
    raw = "--torchvision-init" in argv
    argv = [a for a in argv if a != "--torchvision-init"]
    out = Path(argv[0] if argv else "/tmp/resnet50.onnx")
    fam = mx.Family(name="resnet50", build=lambda: torchvision.models.resnet50(weights=None),
                    inputs=mx.image_input(224), outputs=["logits"], config={}, odd_dims={}, expect=[],
                    exporters=("dynamo",), external_data=("dynamo",))
    if raw:  # torchvision's own initialisation (BatchNorm the identity), no ``wake``
        torch.manual_seed(mx.SEED)
        model = fam.build().eval()
    else:
        model = mx.build(fam)
    mx.export(fam, model, "dynamo", out)
    print(out, out.stat().st_size + Path(f"{out}.data").stat().st_size, "bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
