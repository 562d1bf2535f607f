"""Every real model the onnx wheel ships, through every command that exists (tclint.sweep).

The full sweep (149 models from the onnx wheel plus 13 small builds of tclint.examples' real
architectures, the only ones with stored weights for fix to pad; check, fix and convert each
in-process via ``tclint.cli.main``) takes ~25 s on 2 cores, so it runs by default. Its outcome per model and command is committed in
``tests/data/sweep_expected.json``; a model whose outcome gets worse fails the test. After an
intended change (a command learns to handle more models), refresh it with::

    python -m tclint.sweep --update-expected tests/data/sweep_expected.json
"""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import onnx
import pytest
from onnx import numpy_helper

from tclint import sweep

EXPECTED = Path(__file__).parent / "data" / "sweep_expected.json"


@pytest.fixture(scope="module")
def result() -> sweep.SweepResult:
    res = sweep.run_sweep(jobs=2)
    print("\n" + sweep.summarize(res))
    return res


def test_sweep_covers_every_shipped_model(result):
    models, skipped = sweep.discover()
    assert len(models) >= 140
    assert result.models == len(models) + len(sweep._example_models())
    assert {m.split("/")[0] for m in (o.model for o in result.outcomes)} == {
        "light", "pytorch-converted", "pytorch-operator", "simple", "examples"}
    # "real" holds only download URLs (data.json): skipped, and the summary says so
    assert "real" in result.skipped and "data.json" in result.skipped["real"]
    assert "skipped suite 'real'" in sweep.summarize(result)
    assert set(result.commands) == set(sweep.available_commands()) >= {"check"}
    for cmd in result.commands:
        assert sum(result.counts(cmd).values()) == result.models


def test_no_failures(result):
    """No traceback, no timeout, no exit 2 from check on a valid model, no multi-line decline,
    no partial/temporary file, no changed input, no fixed model computing something else."""
    failures = [f"{o.command} {o.model}: {o.reason}" for o in result.failures()]
    assert failures == []


def test_check_reports_on_every_valid_model(result):
    for o in result.by_command("check"):
        if o.model not in result.invalid:
            assert o.exit_code in (0, 1), o


def test_declines_give_one_line_reason(result):
    for o in result.outcomes:
        if o.outcome == "declined":
            assert o.reason.startswith("tclint: error: ") and "\n" not in o.reason
            assert o.exit_code in (1, 2)


def test_no_regression_against_expected(result):
    expected = json.loads(EXPECTED.read_text())
    assert result.models >= expected["models"]
    regressions, improvements = sweep.compare_expected(result, expected)
    assert regressions == [], "\n".join(regressions)
    if improvements:
        warnings.warn(f"{len(improvements)} sweep outcomes improved; refresh {EXPECTED.name}: "
                      + "; ".join(improvements[:5]), stacklevel=1)


def test_expected_file_is_consistent():
    expected = json.loads(EXPECTED.read_text())
    for cmd, data in expected["commands"].items():
        assert cmd in sweep.COMMANDS
        counted = {k: list(data["models"].values()).count(k) for k in sweep.OUTCOMES}
        assert counted == data["counts"]
        assert len(data["models"]) == expected["models"]


# ---- the judge itself must be able to fail ---------------------------------------------------
def _a_model_with_weights() -> Path:
    root = sweep.data_root()
    return root / "pytorch-converted" / "test_Conv2d" / "model.onnx"


def test_compare_outputs_detects_a_changed_weight(tmp_path):
    src = _a_model_with_weights()
    m = onnx.load(str(src))
    assert m.graph.initializer, "the sample model should carry weights"
    w = m.graph.initializer[0]
    arr = numpy_helper.to_array(w).copy()
    arr.flat[0] += 1.0
    w.CopyFrom(numpy_helper.from_array(arr, w.name))
    bad = tmp_path / "bad.onnx"
    onnx.save(m, str(bad))
    same, why = sweep.compare_outputs(src, bad)
    assert same is False and "differs" in why
    copy = tmp_path / "copy.onnx"
    shutil.copy(src, copy)
    assert sweep.compare_outputs(src, copy)[0] is True


def test_independent_check_of_fixed_outputs_on_a_sample(result, tmp_path):
    """Re-run a sample of fixed models here and compare with the originals (beyond the judge)."""
    assert "fix" in result.commands
    fixed = [o.model for o in result.by_command("fix") if o.changed]
    assert len(fixed) >= 5, "the examples suite must exercise the padding rewrite"
    root = sweep.data_root()
    paths = {sweep.model_id(p, root): p
             for p in [*sweep.discover()[0], *sweep.materialize_examples(tmp_path / "examples")]}
    for name in fixed[:: max(1, len(fixed) // 6)]:
        src = paths[name]
        out = tmp_path / (name.replace("/", "_") + ".onnx")
        flags = sweep.SUITE_FLAGS.get(name.split("/")[0], {}).get("fix", ())
        run = sweep.run_main(["fix", str(src), "-o", str(out), *flags])
        # exit 1 after writing: findings left that fail check's gate, each named with why
        assert run.exit_code == 0 or (run.exit_code == 1 and "left that fail check's gate" in run.stdout), \
            run.stderr
        assert onnx.load(str(out)).SerializeToString() != onnx.load(str(src)).SerializeToString()
        for seed in (1, 2):  # inputs other than the sweep's
            same, why = sweep.compare_outputs(src, out, seed=seed)
            assert same is True, f"{name}: {why}"


def test_a_traceback_counts_as_failure(monkeypatch):
    import tclint.cli.check as check_cli

    def boom(_args):
        raise RuntimeError("simulated bug")

    monkeypatch.setattr(check_cli, "run", boom)
    src = _a_model_with_weights()
    job = (str(src), str(sweep.data_root()), ("check",), 30.0, True)
    # main() rebuilds its parser on every call, so register() picks up the patched run
    outcomes, _ = sweep._sweep_one(job)
    assert outcomes[0].outcome == "failed"
    assert "RuntimeError" in outcomes[0].reason and "simulated bug" in outcomes[0].reason


def test_exit2_on_valid_model_is_a_failure_but_a_decline_on_an_invalid_one():
    run = sweep._Run(exit_code=2, stdout="", stderr="tclint: error: x.onnx: bad\n",
                     native_stderr="", error="", seconds=0.0)
    assert sweep._judge_check("m", run, valid=True).outcome == "failed"
    assert sweep._judge_check("m", run, valid=False).outcome == "declined"
    two = sweep._Run(exit_code=2, stdout="", stderr="tclint: error: a\ntclint: error: b\n",
                     native_stderr="", error="", seconds=0.0)
    assert sweep._judge_check("m", two, valid=False).outcome == "failed"


def test_writer_judge_rejects_partial_and_temporary_files(tmp_path):
    src = _a_model_with_weights()
    out = tmp_path / "out.onnx"
    (tmp_path / ".out.onnx.123.tmp").write_bytes(b"partial")
    run = sweep._Run(exit_code=2, stdout="", stderr="tclint: error: no\n", native_stderr="",
                     error="", seconds=0.0)
    o = sweep._judge_writer("convert", "m", run, src, out, tmp_path)
    assert o.outcome == "failed" and "left files behind" in o.reason
    (tmp_path / ".out.onnx.123.tmp").unlink()
    out.write_bytes(b"partial")
    o = sweep._judge_writer("convert", "m", run, src, out, tmp_path)
    assert o.outcome == "failed" and "was written" in o.reason
    out.unlink()
    assert sweep._judge_writer("convert", "m", run, src, out, tmp_path).outcome == "declined"


def test_reason_groups_drop_paths_and_names():
    a = sweep.reason_group("tclint: error: /x/y/model.onnx: unsupported op 'Foo' in opset 9 (node 'n1')")
    b = sweep.reason_group("tclint: error: /z/model.onnx: unsupported op 'Foo' in opset 9 (node 'n2')")
    assert a == b and "/" not in a


def test_sweep_cli_writes_json_and_compares(tmp_path, capsys):
    exp = tmp_path / "exp.json"
    out = tmp_path / "out.json"
    status = sweep.main(["--commands", "check", "--suites", "simple", "-j", "1",
                         "--json", str(out), "--update-expected", str(exp)])
    assert status == 0
    data = json.loads(out.read_text())
    assert data["commands"]["check"]["counts"]["ok"] == data["models"] > 0
    assert "check" in capsys.readouterr().out
    # tamper: pretend a model used to be declined by check -> now ok is an improvement, not a failure
    e = json.loads(exp.read_text())
    e["commands"]["check"]["models"] = {k: "declined" for k in e["commands"]["check"]["models"]}
    exp.write_text(json.dumps(e))
    assert sweep.main(["--commands", "check", "--suites", "simple", "-j", "1", "--expected", str(exp)]) == 0
    assert "improved" in capsys.readouterr().out
    # and a model that was ok but is now missing is a regression
    e["commands"]["check"]["models"]["simple/not_a_model"] = "ok"
    exp.write_text(json.dumps(e))
    assert sweep.main(["--commands", "check", "--suites", "simple", "-j", "1", "--expected", str(exp)]) == 1
    assert "REGRESSION" in capsys.readouterr().out
