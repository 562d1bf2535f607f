"""The HTML report: structure (always) and a real headless-browser rendering (when installed)."""

from __future__ import annotations

import shutil
import struct
import subprocess
import zlib
from html.parser import HTMLParser

import numpy as np
import pytest

from tclint.html_report import SERIES, render_html

COLOURS = {key: colour for key, _, colour in SERIES}
BROWSER = next(
    (shutil.which(b) for b in ("chromium", "chromium-browser", "google-chrome") if shutil.which(b)),
    None,
)


def _results(**extra) -> dict:
    results = {
        "title": "tclint optimize: cnn.onnx",
        "model": "cnn.onnx",
        "target": "a100 (sm80), fp16",
        "layers": [
            {
                "name": "conv1",
                "op": "Conv",
                "estimated_before_s": 20e-6,
                "estimated_after_s": 10e-6,
            },
            {
                "name": "conv2",
                "op": "Conv",
                "estimated_before_s": 50e-6,
                "estimated_after_s": 45e-6,
            },
            {
                "name": "fc <head>",
                "op": "Gemm",
                "estimated_before_s": 3e-6,
                "estimated_after_s": 3e-6,
            },
        ],
        "findings": [
            {
                "code": "TC204",
                "name": "first-layer-3-channels",
                "severity": "warning",
                "node": "conv1",
                "message": "C=3 is not a multiple of 4 & <8>",
                "share": 0.27,
                "hot": True,
            },
            {
                "code": "TC202",
                "name": "unaligned-conv-output-channels",
                "severity": "warning",
                "node": "conv2",
                "message": "K=28 is not a multiple of 16",
                "share": 0.68,
                "hot": True,
            },
        ],
        "changes": [
            {
                "node": "conv1",
                "op": "Conv",
                "before": {"C": 3},
                "after": {"C": 4},
                "note": "zero channel",
            }
        ],
        "accuracy": {
            "passed": True,
            "rtol": 0.02,
            "atol": 0.001,
            "max_abs_diff": 4e-4,
            "max_rel_diff": 3e-4,
            "outputs": [{"name": "logits", "max_abs_diff": 4e-4, "max_rel_diff": 3e-4}],
        },
        "summary": {
            "estimated_speedup": 1.3,
            "measured_speedup": 1.12,
            "measured_speedup_ci": [1.05, 1.2],
        },
        "bench": {
            "provider": "cpu",
            "provider_note": "cpu: no CUDA session",
            "device": "test CPU",
            "runs": 10,
            "warmup": 2,
            "batch": 1,
            "onnxruntime": "1.x",
            "models": [
                {
                    "label": "original fp32",
                    "precision": "fp32",
                    "latency": {"median_s": 1e-3, "p90_s": 1.2e-3, "p99_s": 2e-3},
                    "throughput": 1000.0,
                    "peak_memory_bytes": None,
                    "agreement": None,
                    "speedup": None,
                },
                {
                    "label": "fixed+fp16",
                    "precision": "fp16",
                    "latency": {"median_s": 5e-4, "p90_s": 6e-4, "p99_s": 7e-4},
                    "throughput": 2000.0,
                    "peak_memory_bytes": None,
                    "agreement": {"agrees": True},
                    "speedup": {"value": 2.0, "ci_low": 1.9, "ci_high": 2.1},
                },
            ],
        },
    }
    results.update(extra)
    return results


class _Collector(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags: list[tuple[str, dict]] = []
        self.tables: dict[str, list[list[str]]] = {}
        self._table = None
        self._row = None
        self._cell = None
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.tags.append((tag, attrs))
        if tag == "table":
            self._table = self.tables.setdefault(attrs.get("class", ""), [])
        elif tag == "tr" and self._table is not None:
            self._row = []
        elif tag in ("td", "th") and self._row is not None:
            self._cell = []

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self._row.append("".join(self._cell).strip())
            self._cell = None
        elif tag == "tr" and self._row is not None:
            self._table.append(self._row)
            self._row = None
        elif tag == "table":
            self._table = None

    def handle_data(self, data):
        self.text.append(data)
        if self._cell is not None:
            self._cell.append(data)


def _parse(text: str) -> _Collector:
    c = _Collector()
    c.feed(text)
    c.close()
    return c


def test_self_contained():
    page = render_html(_results())
    assert page.startswith("<!DOCTYPE html>")
    parsed = _parse(page)
    tags = {t for t, _ in parsed.tags}
    assert "script" not in tags and "link" not in tags and "img" not in tags  # nothing external
    assert (
        "http://" not in page.replace('xmlns="http://www.w3.org/2000/svg"', "")
        and "https://" not in page
    )
    assert "style" in tags and "svg" in tags


def test_layer_bars_match_the_numbers():
    results = _results()
    parsed = _parse(render_html(results))
    bars = [
        a
        for t, a in parsed.tags
        if t == "rect" and a.get("class") == "bar" and a.get("data-series") in COLOURS
    ]
    assert len(bars) == 2 * len(results["layers"])  # before and after for each layer
    widest = max(float(b["width"]) for b in bars)
    for layer in results["layers"]:
        for key in ("estimated_before_s", "estimated_after_s"):
            (bar,) = [
                b for b in bars if b["data-layer"] == layer["name"] and b["data-series"] == key
            ]
            assert float(bar["data-value"]) == layer[key]
            assert bar["fill"] == COLOURS[key]
            # lengths are proportional to time, the slowest layer filling the chart
            assert float(bar["width"]) / widest == pytest.approx(layer[key] / 50e-6, abs=0.01)
    # the slowest layer is drawn first
    assert bars[0]["data-layer"] == "conv2"
    # measured latency chart: one bar per benched model
    bench_bars = [a for t, a in parsed.tags if t == "rect" and a.get("data-series") == "median_s"]
    assert [b["data-layer"] for b in bench_bars] == ["original fp32", "fixed+fp16"]
    assert float(bench_bars[1]["width"]) / float(bench_bars[0]["width"]) == pytest.approx(
        0.5, abs=0.01
    )


def test_tables_and_escaping():
    page = render_html(_results())
    parsed = _parse(page)
    findings = parsed.tables["findings"]
    assert findings[0][:2] == ["code", "rule"]
    assert [r[0] for r in findings[1:]] == ["TC204", "TC202"]
    assert (
        findings[1][4] == "C=3 is not a multiple of 4 & <8>"
    )  # escaped in the source, intact in the DOM
    assert "&lt;8&gt;" in page and "<8>" not in page
    assert findings[2][5] == "68.0%" and findings[2][7] == "yes"  # "fixing saves" sits between
    assert parsed.tables["changes"][1][:4] == ["conv1", "Conv", "C=3", "C=4"]
    assert parsed.tables["accuracy"][1] == ["logits", "0.0004", "0.0003"]
    bench = parsed.tables["bench"]
    assert bench[2][0] == "fixed+fp16" and bench[2][7] == "2.00x [1.90, 2.10]"
    text = " ".join(parsed.text)
    assert "1.30x" in text and "1.12x" in text and "within tolerance" in text


def test_measured_series_and_missing_sections():
    layers = [
        {
            "name": "a",
            "estimated_before_s": 2e-6,
            "estimated_after_s": 1e-6,
            "measured_before_s": 3e-6,
            "measured_after_s": 1.5e-6,
        }
    ]
    parsed = _parse(render_html({"layers": layers}))
    series = [a["data-series"] for t, a in parsed.tags if t == "rect" and a.get("class") == "bar"]
    assert series == [k for k, _, _ in SERIES]
    text = " ".join(parsed.text)
    assert "and measured" in text and "Not measured." in text and "Not verified." in text
    empty = _parse(render_html({}))
    assert "No per-layer times available." in " ".join(empty.text)


def test_many_layers_are_capped():
    layers = [{"name": f"l{i}", "estimated_before_s": float(i + 1)} for i in range(100)]
    parsed = _parse(render_html({"layers": layers}))
    names = [a["data-layer"] for t, a in parsed.tags if t == "rect" and a.get("class") == "bar"]
    assert len(names) == 30 and names[0] == "l99" and "l0" not in names


# --------------------------------------------------------------------------------------------
# A real browser
# --------------------------------------------------------------------------------------------
def _decode_png(data: bytes) -> np.ndarray:
    """Minimal PNG reader (8-bit RGB/RGBA, non-interlaced): what headless Chromium writes."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, header = 8, b"", None
    while pos < len(data):
        (n,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + n]
        pos += 12 + n
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat += body
    width, height, depth, colour, _, _, interlace = header
    assert depth == 8 and colour in (2, 6) and interlace == 0
    bpp = 3 if colour == 2 else 4
    raw = np.frombuffer(zlib.decompress(idat), dtype=np.uint8).reshape(height, width * bpp + 1)
    out = np.zeros((height, width * bpp), dtype=np.uint8)
    prev = np.zeros(width * bpp, dtype=np.uint8)
    for y in range(height):
        kind, row = raw[y, 0], raw[y, 1:]
        if kind == 0:
            cur = row.copy()
        elif kind == 1:
            cur = np.cumsum(row.reshape(width, bpp), axis=0, dtype=np.uint8).reshape(-1)
        elif kind == 2:
            cur = row + prev
        else:
            cur, p, r = [0] * len(row), prev.tolist(), row.tolist()
            for i in range(len(r)):
                a = cur[i - bpp] if i >= bpp else 0
                b = p[i]
                if kind == 3:
                    cur[i] = (r[i] + ((a + b) >> 1)) & 0xFF
                else:
                    c = p[i - bpp] if i >= bpp else 0
                    pa, pb, pc = abs(b - c), abs(a - c), abs(a + b - 2 * c)
                    pred = a if pa <= pb and pa <= pc else (b if pb <= pc else c)
                    cur[i] = (r[i] + pred) & 0xFF
            cur = np.array(cur, dtype=np.uint8)
        out[y] = cur
        prev = cur
    return out.reshape(height, width, bpp)[:, :, :3]


def _longest_run(mask: np.ndarray) -> int:
    best = 0
    for row in mask:
        if row.any():
            padded = np.concatenate([[0], row.astype(np.int8), [0]])
            edges = np.flatnonzero(np.diff(padded))
            best = max(best, int((edges[1::2] - edges[::2]).max()))
    return best


@pytest.mark.skipif(BROWSER is None, reason="no headless browser (chromium) installed")
def test_renders_in_a_headless_browser(tmp_path):
    page = tmp_path / "report.html"
    page.write_text(render_html(_results()), encoding="utf-8")
    shot = tmp_path / "shot.png"
    proc = subprocess.run(
        [
            BROWSER,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            "--force-device-scale-factor=1",
            f"--screenshot={shot}",
            "--window-size=1200,700",
            page.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert shot.exists(), proc.stderr[-2000:]
    pixels = _decode_png(shot.read_bytes())
    assert pixels.shape[:2] == (700, 1200)

    def mask(hex_colour):
        rgb = np.array([int(hex_colour[i : i + 2], 16) for i in (1, 3, 5)])
        return np.abs(pixels.astype(int) - rgb).sum(axis=2) <= 6

    # The longest "before" bar (conv2, 50 us) spans the chart's full 640 px; the longest "after"
    # bar is conv2's 45 us one: 576 px. Their ratio is the ratio of the times.
    before = _longest_run(mask(COLOURS["estimated_before_s"]))
    after = _longest_run(mask(COLOURS["estimated_after_s"]))
    assert before == pytest.approx(640, abs=3)
    assert after == pytest.approx(640 * 45 / 50, abs=3)
    assert (pixels < 100).all(axis=2).sum() > 2000  # text was drawn


def test_skipped_layers_are_listed_once():
    skipped = [
        {"node": "conv1", "op": "Conv", "dims": {"C": 3, "K": 28}, "reason": "does not pay"},
        {"node": "conv1", "op": "Conv", "dims": {"C": 3, "K": 28}, "reason": "does not pay"},
        {"node": "fc", "op": "Gemm", "dims": {"N": 10}, "reason": "memory-bound"},
    ]
    parsed = _parse(render_html(_results(skipped=skipped)))
    rows = parsed.tables["skipped"]
    assert rows[1:] == [
        ["conv1", "Conv", "C=3, K=28", "does not pay"],
        ["fc", "Gemm", "N=10", "memory-bound"],
    ]
    assert "skipped" not in _parse(render_html(_results())).tables


def test_outlier_p90_does_not_flatten_the_latency_bars():
    results = _results()
    results["bench"]["models"][0]["latency"]["p90_s"] = 1.0  # one very slow tail, 1000x the median
    parsed = _parse(render_html(results))
    bars = [a for t, a in parsed.tags if t == "rect" and a.get("data-series") == "median_s"]
    whiskers = [a for t, a in parsed.tags if t == "line" and a.get("class") == "whisker"]
    assert float(bars[0]["width"]) == pytest.approx(
        600 * 0.8
    )  # the slowest median keeps 80% of the chart
    assert max(float(w["x1"]) for w in whiskers) <= float(bars[0]["x"]) + 600 + 8
