"""`tclint check` / `explain` / `rules` as users run them: exit codes, formats, config, baseline."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

from tclint import examples
from tclint.cli import main
from tests.helpers import save


@pytest.fixture(scope="module")
def resnet_proto():
    return examples.resnet50(image=224)


@pytest.fixture
def resnet(tmp_path, resnet_proto):
    return save(tmp_path, resnet_proto, "resnet.onnx")


@pytest.fixture
def aligned(tmp_path):
    return save(tmp_path, examples.single_gemm(m=256, n=256, k=256), "aligned.onnx")


@pytest.fixture(scope="module")
def densenet_proto():
    return examples.densenet(batch=32)


@pytest.fixture
def densenet(tmp_path, densenet_proto):
    """Fails the gate at batch 32: padding the growth convs (K 12 -> 16) saves more than 1% of
    the model's time each, net of what the wider concats cost."""
    return save(tmp_path, densenet_proto, "densenet.onnx")


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_exit_codes(capsys, resnet, densenet, aligned, tmp_path):
    assert run(capsys, "check", str(aligned))[0] == 0
    code, out, _ = run(capsys, "check", str(densenet))
    assert code == 1 and "TC202" in out and "a100 (sm80" in out and "gate FAILED" in out
    assert run(capsys, "check", str(densenet), "--exit-zero")[0] == 0
    assert run(capsys, "check", str(densenet), "--fail-on", "none")[0] == 0
    # ResNet-50 at batch 1: the stem's TC204 is reported, but padding it does not pay (the
    # inserted Pad costs more than the C=4 kernels save): it does not fail the gate
    code, out, _ = run(capsys, "check", str(resnet))
    assert code == 0 and "TC204" in out and "does not pay at batch 1" in out
    assert "gate FAILED" not in out
    code, _, err = run(capsys, "check", str(tmp_path / "nope.onnx"))
    assert code == 2 and err.count("\n") == 1 and "no such file" in err


def test_fail_on_advice_any_and_select_ignore(capsys, resnet, densenet):
    # TC205 (NCHW convs) is hot advice: it fails the gate only when asked for
    assert run(capsys, "check", str(resnet), "--fail-on", "advice")[0] == 1
    assert run(capsys, "check", str(resnet), "--fail-on", "advice", "--ignore", "TC205")[0] == 0
    assert run(capsys, "check", str(resnet), "--fail-on", "any")[0] == 1  # TC204 is an error, hot or not
    assert run(capsys, "check", str(resnet), "--ignore", "TC204,TC104", "--fail-on", "any")[0] == 1  # TC205
    assert run(capsys, "check", str(densenet), "--ignore", "TC1,TC2")[0] == 0
    code, out, _ = run(capsys, "check", str(resnet), "--select", "TC1", "--format", "json")
    assert {f["code"] for f in json.loads(out)["models"][0]["findings"]} == {"TC104"}
    code, _, err = run(capsys, "check", str(resnet), "--select", "QQ9")
    assert code == 2 and "selects no rule" in err


def test_json_report_fields(capsys, resnet, densenet):
    code, out, _ = run(capsys, "check", str(resnet), "--format", "json")
    data = json.loads(out)
    m = data["models"][0]
    assert data["gate_failed"] is False and m["arch"] == "a100" and m["dtype"] == "fp16"
    stem = next(f for f in m["findings"] if f["code"] == "TC204")
    assert stem["dims"] == {"C": 3, "K": 64} and stem["suggested"] == {"C": 4}
    assert stem["multiple"] == 4 and 0 < stem["share"] < 1 and stem["name"] == "first-layer-three-channels"
    assert stem["fix_status"] == "no-gain" and stem["saving"] <= 0
    assert stem["hot"] is False and stem["gate"] is False
    assert stem["fix_note"].startswith("does not pay at batch 1") and stem["pays_from"] > 1
    layout = next(f for f in m["findings"] if f["code"] == "TC205")
    assert layout["fix_status"] == "advice" and layout["hot"] is True and layout["gate"] is False
    s = m["summary"]
    # one meaning of hot: the summary counts exactly the findings marked hot
    assert s["hot_findings"] == sum(f["hot"] for f in m["findings"]) == 1
    assert s["gate_findings"] == 0 and s["layers"] == 54 and s["speedup_if_all_fixed"] > 1
    code, out, _ = run(capsys, "check", str(densenet), "--format", "json")
    m = json.loads(out)["models"][0]
    gate = [f for f in m["findings"] if f["gate"]]
    assert gate and m["summary"]["gate_findings"] == len(gate)
    assert all(f["hot"] and f["fix_status"] == "fix" and f["saving"] >= 0.01 for f in gate)
    assert not [f for f in m["findings"] if f["hot"] and not f["gate"] and f["fix_status"] != "advice"]


def test_sarif_is_code_scanning_shaped(capsys, resnet, densenet):
    code, out, _ = run(capsys, "check", str(densenet), "--format", "sarif")
    sarif = json.loads(out)
    assert sarif["version"] == "2.1.0"
    run0 = sarif["runs"][0]
    rule_ids = [r["id"] for r in run0["tool"]["driver"]["rules"]]
    assert "TC202" in rule_ids
    res = next(r for r in run0["results"] if r["ruleId"] == "TC202" and r["properties"]["gate"])
    assert res["level"] == "error" and rule_ids[res["ruleIndex"]] == "TC202"
    # one mapping: error = fails the gate, warning = hot (not failing), note = the rest
    for r in run0["results"]:
        p = r["properties"]
        assert r["level"] == ("error" if p["gate"] else "warning" if p["hot"] else "note"), r
    loc = res["locations"][0]
    assert loc["physicalLocation"]["artifactLocation"]["uri"].endswith("densenet.onnx")
    assert loc["physicalLocation"]["region"]["startLine"] == 1
    assert loc["logicalLocations"][0]["fullyQualifiedName"]
    # fingerprints are stable across runs
    _, out2, _ = run(capsys, "check", str(densenet), "--format", "sarif")
    assert [r["partialFingerprints"] for r in json.loads(out2)["runs"][0]["results"]] == \
        [r["partialFingerprints"] for r in run0["results"]]
    _, out, _ = run(capsys, "check", str(resnet), "--format", "sarif")
    levels = {r["ruleId"]: r["level"] for r in json.loads(out)["runs"][0]["results"]}
    assert levels["TC205"] == "warning" and levels["TC204"] == "note"


def test_github_annotations(capsys, resnet, densenet):
    code, out, _ = run(capsys, "check", str(densenet), "--format", "github")
    lines = out.strip().splitlines()
    assert any(line.startswith("::error file=") and "TC202" in line for line in lines)
    assert all(line.startswith(("::error", "::warning", "::notice")) for line in lines)
    code, out, _ = run(capsys, "check", str(resnet), "--format", "github")
    lines = out.strip().splitlines()
    assert not any(line.startswith("::error") for line in lines)  # the gate passes
    assert any(line.startswith("::warning") and "TC205" in line and "(hot)" in line for line in lines)
    assert any(line.startswith("::notice") and "TC204" in line and "does not pay" in line for line in lines)


def test_statistics_and_output_file(capsys, resnet, tmp_path):
    out_file = tmp_path / "report.json"
    code, out, _ = run(capsys, "check", str(resnet), "--format", "json", "-o", str(out_file))
    assert out == "" and json.loads(out_file.read_text())["models"][0]["findings"]
    code, out, _ = run(capsys, "check", str(resnet), "--statistics")
    assert "TC204" in out and "first-layer-three-channels" in out


def test_baseline_fails_only_on_new_findings(capsys, densenet, tmp_path):
    baseline = tmp_path / "baseline.json"
    assert run(capsys, "check", str(densenet), "--baseline", str(baseline), "--update-baseline")[0] == 0
    entries = json.loads(baseline.read_text())["findings"]
    assert entries and all(isinstance(e, list) and len(e) == 4 for e in entries)
    assert run(capsys, "check", str(densenet), "--baseline", str(baseline))[0] == 0
    # a new unaligned hot layer appears: the gate fails on it alone
    mlp = save(tmp_path, examples.llama_mlp(hidden=256, ffn=2730, seq=64), "densenet.onnx")
    code, out, _ = run(capsys, "check", str(mlp), "--baseline", str(baseline), "--format", "json")
    assert code == 1
    gate = {f["code"] for f in json.loads(out)["models"][0]["findings"] if f["gate"]}
    assert gate == {"TC101", "TC102"}


def test_pyproject_config_and_overrides(capsys, tmp_path):
    folder = tmp_path / "proj"
    (folder / "llm").mkdir(parents=True)
    gpt = save(folder / "llm", examples.gpt2(layers=1, hidden=64, heads=2), "gpt.onnx")
    (folder / "pyproject.toml").write_text(
        '[tool.tclint]\narch = "t4"\nignore = ["TC9"]\n'
        '[[tool.tclint.overrides]]\nmodels = ["llm/*.onnx"]\ndims = { batch = 1, seq = 64 }\n')
    code, out, _ = run(capsys, "check", str(gpt), "--format", "json")
    m = json.loads(out)["models"][0]
    assert m["arch"] == "t4" and m["multiple"] == 8
    assert not any(f["code"].startswith("TC9") for f in m["findings"])  # seq bound by the override
    # the command line wins
    code, out, _ = run(capsys, "check", str(gpt), "--format", "json", "--arch", "h100")
    assert json.loads(out)["models"][0]["arch"] == "h100"
    (folder / "pyproject.toml").write_text('[tool.tclint]\nunknown-key = 1\n')
    code, _, err = run(capsys, "check", str(gpt))
    assert code == 2 and "unknown-key" in err


def test_directory_and_parallel_jobs(capsys, tmp_path, densenet, aligned):
    code, out, _ = run(capsys, "check", str(tmp_path), "-j", "2", "--format", "json")
    models = {m["model"].split("/")[-1] for m in json.loads(out)["models"]}
    assert models == {"densenet.onnx", "aligned.onnx"} and code == 1


def test_one_bad_model_among_many(capsys, tmp_path, aligned):
    (tmp_path / "bad.onnx").write_bytes(b"\x00garbage")
    code, out, err = run(capsys, "check", str(tmp_path), "--format", "json")
    assert code == 2 and "bad.onnx" in err
    assert json.loads(out)["models"][0]["model"].endswith("aligned.onnx")


def test_arch_aliases_and_bad_arch(capsys, resnet):
    code, out, _ = run(capsys, "check", str(resnet), "--arch", "sm90", "--format", "json")
    assert json.loads(out)["models"][0]["arch"] == "h100"
    code, _, err = run(capsys, "check", str(resnet), "--arch", "rtx9000")
    assert code == 2 and "unknown --arch" in err


def test_explain_and_rules(capsys):
    code, out, _ = run(capsys, "explain", "TC204")
    assert code == 0 and out.startswith("# TC204 first-layer-three-channels") and "## Use instead" in out
    code, out, _ = run(capsys, "explain", "tc101")
    assert code == 0 and "unaligned-gemm-k" in out
    assert run(capsys, "explain", "TC999")[0] == 2
    code, out, _ = run(capsys, "rules", "--format", "json")
    codes = [r["code"] for r in json.loads(out)]
    assert {"TC101", "TC110", "TC204", "TC205", "TC901", "TC902"} <= set(codes)


def test_usage_errors_are_one_line(capsys, resnet):
    code, _, err = run(capsys, "check", str(resnet), "--dim", "batch")
    assert code == 2 and err.strip().count("\n") == 0
    with pytest.raises(SystemExit) as exc:
        main(["check", "--no-such-flag", str(resnet)])
    assert exc.value.code == 2


def test_installed_command_runs(resnet, densenet):
    exe = shutil.which("tclint") or str(__import__("pathlib").Path(sys.executable).parent / "tclint")
    proc = subprocess.run([exe, "check", str(densenet), "--format", "json"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1, proc.stderr
    assert json.loads(proc.stdout)["models"][0]["findings"]
    proc = subprocess.run([exe, "check", str(resnet) + ".missing"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and proc.stderr.count("\n") == 1
