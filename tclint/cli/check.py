"""``tclint check``: lint models, rank findings by GPU time, gate CI."""

from __future__ import annotations

import argparse
import os
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from tclint.cli.common import add_shape_flags, add_target_flags, shape_bindings
from tclint.config import FAIL_ON, FORMATS, find_pyproject, load_config, resolve_options
from tclint.errors import InputError, TclintError, UsageError
from tclint.io import refuse_overwriting, write_text
from tclint.lint import check_model, load_baseline, write_baseline
from tclint.report import FORMATTERS, format_statistics
from tclint.rules import validate_prefixes
from tclint.specs import load_calibration


def register(sub) -> None:
    p = sub.add_parser("check", help="lint models for Tensor Core alignment, ranked by GPU time",
                       description="Report GEMM/conv dims that are not multiples of the target "
                                   "alignment, ranked by estimated share of GPU time. Exit 0: "
                                   "gate passes; 1: gate fails; 2: usage or input error.")
    p.add_argument("models", nargs="+", help="ONNX files or directories (searched for *.onnx)")
    add_target_flags(p)
    add_shape_flags(p)
    g = p.add_argument_group("rules and gate")
    g.add_argument("--select", action="append", default=None, metavar="PREFIX",
                   help="rule codes or prefixes to enable (TC1, TC201, ALL); repeatable or comma-separated")
    g.add_argument("--ignore", action="append", default=None, metavar="PREFIX", help="rule codes or prefixes to disable")
    g.add_argument("--hot-threshold", type=float, default=None,
                   help="a finding is hot when fixing it saves at least this share of the "
                        "model's estimated GPU time (default 0.01 = 1%%)")
    g.add_argument("--quantization-threshold", type=float, default=None,
                   help="TC110 fires above this fraction of wasted work (default 0.5)")
    g.add_argument("--fail-on", choices=FAIL_ON, default=None,
                   help="hot (default): hot findings `tclint fix` fixes fail (fixing them "
                        "saves at least --hot-threshold of the time, net of inserted nodes); "
                        "advice: every hot finding, also those fix does not fix (TC205, TC103, "
                        "TC105, TC110, weights it cannot pad); any: any error/warning, hot or "
                        "not; none: never")
    g.add_argument("--exit-zero", action="store_true", help="exit 0 even when the gate fails")
    g.add_argument("--baseline", metavar="FILE", help="fail only on findings not in this baseline")
    g.add_argument("--update-baseline", action="store_true", help="write today's findings to --baseline")
    o = p.add_argument_group("output")
    o.add_argument("--format", choices=FORMATS, default="table")
    o.add_argument("-o", "--output", metavar="FILE", help="write the report here instead of stdout")
    o.add_argument("--statistics", action="store_true", help="counts per rule instead of findings")
    o.add_argument("--layers", type=int, default=0, metavar="N", help="also list the N most expensive layers")
    o.add_argument("--config", metavar="PYPROJECT", help="use this pyproject.toml instead of the nearest")
    o.add_argument("-j", "--jobs", type=int, default=1, help="lint models in parallel")
    p.set_defaults(func=run)


def _split(values: list[str] | None) -> list[str] | None:
    if values is None:
        return None
    return [v.strip() for item in values for v in item.split(",") if v.strip()]


def collect_models(paths: list[str]) -> list[Path]:
    found: list[Path] = []
    for raw in paths:
        p = Path(raw)
        if p.is_dir():
            found.extend(sorted(q for q in p.rglob("*.onnx") if q.is_file()))
        else:
            found.append(p)
    if not found:
        raise InputError(f"no .onnx files found in {', '.join(paths)}")
    return found


def _lint_one(job):
    path, cli, config, baseline = job
    try:
        options = resolve_options(path, cli, config_path=Path(config) if config else None)
        return check_model(path, options, baseline=baseline), None
    except TclintError as exc:
        return None, (str(path), " ".join(str(exc).split()), exc.exit_code)


def run(args: argparse.Namespace) -> int:
    dims, shapes = shape_bindings(args)
    select = validate_prefixes(_split(args.select)) if args.select else None
    if args.select and not select:
        raise UsageError("--select selects no rule: give at least one code or prefix (ALL for every rule)")
    ignore = validate_prefixes(_split(args.ignore)) if args.ignore else None
    if args.update_baseline and not args.baseline:
        raise UsageError("--update-baseline needs --baseline FILE")
    cli = {
        "arch": args.arch, "dtype": args.dtype, "strict": args.strict, "dims": dims,
        "input_shapes": shapes, "hot_threshold": args.hot_threshold,
        "quantization_threshold": args.quantization_threshold, "select": select,
        "ignore": ignore, "fail_on": args.fail_on, "calibration": args.calibration,
    }
    baseline = None
    if args.baseline and not args.update_baseline:
        baseline = load_baseline(args.baseline)
    models = collect_models(args.models)
    # the configuration is validated once, before any model: a bad value is one line, not one per model
    calibrations = {args.calibration} if args.calibration else set()
    pyprojects = {Path(args.config) if args.config else find_pyproject(m) for m in models} - {None}
    for pyproject in pyprojects:
        table = load_config(pyproject)
        if not args.calibration:
            calibrations |= {t["calibration"] for t in [table, *table.get("overrides", [])] if "calibration" in t}
    for table_path in sorted(calibrations):
        load_calibration(table_path)
    # what check writes (the report, the baseline) must not be anything it reads: a model, its
    # data, the configuration, a calibration table, the baseline it compares against
    writes = [args.output, args.baseline if args.update_baseline else None]
    reads = [*pyprojects, *calibrations, args.baseline if not args.update_baseline else None]
    refuse_overwriting(writes=writes, models=models, reads=reads)
    jobs = [(str(m), cli, args.config, baseline) for m in models]
    if args.jobs > 1 and len(jobs) > 1:
        with ProcessPoolExecutor(max_workers=min(args.jobs, len(jobs), os.cpu_count() or 1)) as pool:
            results = list(pool.map(_lint_one, jobs))
    else:
        results = [_lint_one(job) for job in jobs]
    reports = [r for r, err in results if r is not None]
    errors = [err for r, err in results if err is not None]
    for path, message, _code in errors:
        print(f"tclint: error: {message}", file=sys.stderr)
    if errors and len(models) == 1:
        return errors[0][2]

    if args.update_baseline:
        n = write_baseline(args.baseline, reports)
        print(f"tclint: wrote {n} findings to {args.baseline}", file=sys.stderr)
        return 2 if errors else 0

    text = format_statistics(reports) if args.statistics else (
        FORMATTERS[args.format](reports, show_layers=args.layers)
        if args.format == "table" else FORMATTERS[args.format](reports))
    if args.output:
        write_text(args.output, text)
    else:
        sys.stdout.write(text)
    if errors:
        return 2
    failed = any(r.gate_failed for r in reports)
    return 1 if failed and not args.exit_zero else 0
