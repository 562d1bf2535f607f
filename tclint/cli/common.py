"""Flags shared by the commands that analyse a model (check, fix, optimize, bench)."""

from __future__ import annotations

import argparse

from tclint.load import parse_dim, parse_input_shape


def add_target_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("target")
    g.add_argument("--arch", default=None, help="GPU: v100 t4 a100 a10 l4 h100, or sm70..sm90 (default a100)")
    g.add_argument("--dtype", default=None, choices=["fp16", "bf16", "tf32", "int8", "fp8"],
                   help="precision a float32 model will run in (default fp16; a reduced-precision "
                        "model is checked in its own)")
    g.add_argument("--strict", action="store_true", default=None,
                   help="NVIDIA's 128-byte tier (64 FP16) instead of the required tier")
    g.add_argument("--calibration", default=None, metavar="FILE",
                   help="measured cost table (benchmarks/calibrate.py) instead of documented constants")


def add_shape_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("shapes")
    g.add_argument("--dim", action="append", default=[], metavar="NAME=N",
                   help="bind a symbolic dim, e.g. --dim batch=8 --dim seq=512")
    g.add_argument("--input-shape", action="append", default=[], metavar="NAME:SHAPE",
                   help="an input's shape: image:1x3x224x224, image:[1,3,224,224] or image:1,3,224,224")


def shape_bindings(args: argparse.Namespace) -> tuple[dict[str, int], dict[str, tuple[int, ...]]]:
    dims = dict(parse_dim(d) for d in args.dim)
    shapes = dict(parse_input_shape(s) for s in args.input_shape)
    return dims, shapes
