"""Fixtures for the benchmarks (run explicitly: ``pytest benchmarks --benchmark-enable``).

``--shapes-json PATH`` writes the interleaved A/B results of ``test_bench_shapes.py`` (speedup
of each fixed shape over its misaligned original, with confidence intervals) to PATH, e.g.
``benchmarks/results/bench_shapes_cpu.json``.
"""

from __future__ import annotations

import json
import sys

import pytest


def pytest_addoption(parser):
    parser.addoption(
        "--shapes-json",
        default=None,
        metavar="PATH",
        help="write the misaligned-vs-aligned A/B results as JSON to PATH",
    )
    parser.addoption(
        "--shapes-runs",
        type=int,
        default=None,
        metavar="N",
        help="timed runs per model in the A/B shape benchmarks (default 100 CPU, 200 GPU)",
    )


@pytest.fixture(scope="session")
def shape_results(request):
    records: list[dict] = []
    yield records
    path = request.config.getoption("--shapes-json")
    if path and records:
        data = {"command": " ".join(["pytest", *sys.argv[1:]]), "results": records}
        with open(path, "w") as f:
            json.dump(data, f, indent=2)
            f.write("\n")
