"""report.html and figures (attrbench.report, attrbench.plots)."""

from __future__ import annotations

import base64
import html
import json
import math
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from optional import require_executable
from report_runs import CLASSES, METHODS, base_run, copy_run

from attrbench import plots, sidefiles
from attrbench.catalog import METRICS
from attrbench.report import write_report

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


class _Dom(HTMLParser):
    """Collects <img src>, the summary table's body rows and every src/href attribute."""

    def __init__(self) -> None:
        super().__init__()
        self.imgs: list[str] = []
        self.links: list[str] = []
        self.summary_rows: list[str] = []
        self._in_summary = False
        self._in_body = False

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        for key in ("src", "href"):
            if key in a:
                self.links.append(a[key] or "")
        if tag == "img":
            self.imgs.append(a.get("src") or "")
        if tag == "table" and "summary" in (a.get("class") or "").split():
            self._in_summary = True
        if self._in_summary and tag == "tbody":
            self._in_body = True
        if self._in_body and tag == "tr":
            self.summary_rows.append(a.get("data-method") or "")

    def handle_endtag(self, tag):
        if tag == "table" and self._in_summary:
            self._in_summary = self._in_body = False


def _parse(text: str) -> _Dom:
    d = _Dom()
    d.feed(text)
    return d


def _enrich(run: Path) -> None:
    """Add the optional inputs: F1 / deletion / insertion curves, qualitative, class specificity."""
    rng = np.random.default_rng(0)
    rows = [json.loads(line) for line in (run / "scores.jsonl").read_text().splitlines()]
    for r in rows:
        top = 1.0 if r["method"] == "ideal" else 0.4
        r["scores"]["f1_curve"] = np.clip(rng.normal(top, 0.05, 9), 0, 1).tolist()
        r["scores"]["deletion_curve"] = {
            "1": np.linspace(1, 0, 11).tolist(),
            "3": (np.linspace(1, 0, 11) ** 2).tolist(),
        }
        r["scores"]["insertion_curve"] = (np.linspace(0, 1, 11) ** 2).tolist()
    (run / "scores.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    # the curves' metrics in the summary: figures draw the curves of the metrics that declare them
    summary = json.loads((run / "summary.json").read_text())
    for k in ("deletion_auc", "insertion_auc"):
        cls = METRICS.get(k)
        summary["metrics"][k] = {**cls.describe(), **cls.regression()}
        for m in summary["methods"]:
            summary["results"][m]["metrics"][k] = {"value": 0.5, "ci_low": 0.4, "ci_high": 0.6,
                                                   "n": 3, "n_undefined": 0}
    (run / "summary.json").write_text(json.dumps(summary))
    yy, xx = np.mgrid[:32, :32]
    img = np.stack([xx * 8, yy * 8, np.full_like(xx, 128)]).astype(np.uint8)
    images = np.stack([img, img[:, ::-1], img[:, :, ::-1]])
    blob = ((xx - 16) ** 2 + (yy - 16) ** 2 < 64).astype(np.float32)
    sidefiles.save_qualitative(
        run,
        images,
        {m: np.stack([blob * (i + 1) / 3 for i in range(3)]) for m in METHODS},
        CLASSES,
        np.eye(3, 6, dtype=np.uint8),
        image_ids=["a", "b", "c"],
    )
    sidefiles.save_class_specificity(
        run, {m: {"classes": CLASSES[:3], "matrix": rng.random((3, 4))} for m in METHODS[:2]}
    )


@pytest.fixture(scope="module")
def full_report(tmp_path_factory) -> Path:
    run = copy_run(tmp_path_factory.mktemp("report"))
    _enrich(run)
    return write_report(run)


def test_report_is_self_contained_with_table_and_figures(full_report):
    text = full_report.read_text(encoding="utf-8")
    assert full_report.name == "report.html"
    for bad in ("http://", "https://", 'src="file', "src='file", "<script", "<link", "@import"):
        assert bad not in text, bad
    dom = _parse(text)
    assert dom.summary_rows == METHODS
    assert all(link.startswith(("data:", "#")) for link in dom.links), dom.links
    # summary, F1, deletion/insertion, cost, specificity, qualitative, per class, worst images
    assert len(dom.imgs) == 8
    for src in dom.imgs:
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1])[:8] == PNG_MAGIC
    figs = full_report.parent / "figures"
    for key in (
        "summary_bars",
        "f1_threshold",
        "deletion_insertion",
        "quality_vs_cost",
        "class_specificity",
        "qualitative",
    ):
        assert (figs / f"{key}.png").stat().st_size > 1000
        assert (figs / f"{key}.pdf").read_bytes()[:4] == b"%PDF"
    # config, environment and metric definitions with direction and version
    assert "<details>" in text and "Environment" in text
    assert '"torch":' in html.unescape(text) and '"classifier":' in html.unescape(text)
    assert "mean_f1" in text and "↑ higher" in text and "↓ lower" in text and "v1" in text


# Appended to a *copy* of the report (the report itself has no script): after the page has
# loaded, writes what Chromium laid out and decoded into attributes that --dump-dom returns.
_PROBE = """<script>
window.addEventListener("load", () => {
  const box = (el) => { const r = el.getBoundingClientRect();
    return [r.left + scrollX, r.top + scrollY, r.width, r.height].map(Math.round).join(","); };
  for (const img of document.images) {
    img.setAttribute("data-probe-natural", img.naturalWidth + "x" + img.naturalHeight);
    img.setAttribute("data-probe-complete", img.complete && img.naturalWidth > 0);
    img.setAttribute("data-probe-box", box(img));
  }
  const table = document.querySelector("table.summary");
  if (table) {
    table.setAttribute("data-probe-box", box(table));
    table.setAttribute("data-probe-text", table.innerText.split("\\n").length);
  }
  document.body.setAttribute("data-probe-height", document.documentElement.scrollHeight);
  document.body.setAttribute("data-probe", "done");
});
</script>"""


class _Probed(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.imgs: list[dict[str, str]] = []
        self.table: dict[str, str] = {}
        self.body: dict[str, str] = {}

    def handle_starttag(self, tag, attrs):
        a = {k: v or "" for k, v in attrs}
        if tag == "img":
            self.imgs.append(a)
        elif tag == "table" and "summary" in a.get("class", "").split():
            self.table = a
        elif tag == "body":
            self.body = a


def _box(text: str) -> tuple[int, int, int, int]:
    x, y, w, h = (int(v) for v in text.split(","))
    return x, y, w, h


def test_report_chromium_render(full_report, tmp_path):
    """Headless Chromium renders the report: the summary table is laid out with one row per
    method, and every figure is decoded (its natural size is the PNG's) and painted (the
    screenshot is not blank where the figure lies)."""
    import struct

    from PIL import Image

    chromium = require_executable(
        "chromium", "chromium-browser", install="apt-get install -y chromium (Debian)")
    page = tmp_path / "probed.html"
    text = full_report.read_text(encoding="utf-8")
    page.write_text(text.replace("</body>", _PROBE + "</body>"), encoding="utf-8")
    common = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
              "--no-first-run", "--disable-background-networking", "--disable-component-update",
              "--disable-sync", "--hide-scrollbars", "--force-device-scale-factor=1",
              f"--user-data-dir={tmp_path / 'profile'}"]
    url = page.resolve().as_uri()
    dom_out = subprocess.run(
        [*common, "--virtual-time-budget=10000", "--window-size=1400,2000", "--dump-dom", url],
        capture_output=True, text=True, timeout=120, check=False)
    probed = _Probed()
    probed.feed(dom_out.stdout)
    assert probed.body.get("data-probe") == "done", dom_out.stderr[-2000:]
    # the summary table: laid out, with the header and one text line per method
    tx, ty, tw, th = _box(probed.table["data-probe-box"])
    assert tw > 200 and th > 20 * (len(METHODS) + 1), probed.table
    assert int(probed.table["data-probe-text"]) >= len(METHODS) + 1
    assert _parse(dom_out.stdout).summary_rows == METHODS
    # every figure decoded at the PNG's own size and laid out with a non-zero size
    assert len(probed.imgs) == 8, [i.get("alt") for i in probed.imgs]
    for img in probed.imgs:
        png = base64.b64decode(img["src"].split(",", 1)[1])
        width, height = struct.unpack(">II", png[16:24])
        assert img["data-probe-complete"] == "true", img["alt"]
        assert img["data-probe-natural"] == f"{width}x{height}", img["alt"]
        _, _, w, h = _box(img["data-probe-box"])
        assert w > 100 and h > 50, (img["alt"], img["data-probe-box"])
    # a screenshot of the whole page: the table and every figure are painted (not blank)
    height = min(int(probed.body["data-probe-height"]), 16000)
    shot = tmp_path / "shot.png"
    p = subprocess.run(
        [*common, "--virtual-time-budget=10000", f"--window-size=1400,{height}",
         f"--screenshot={shot}", url],
        capture_output=True, text=True, timeout=120, check=False)
    assert shot.exists(), p.stderr[-2000:]
    px = np.asarray(Image.open(shot).convert("L"), dtype=np.float64)
    assert px.shape == (height, 1400)

    def painted(x: int, y: int, w: int, h: int) -> float:
        region = px[y:y + h, x:min(x + w, 1400)]
        assert region.size, (x, y, w, h)
        return float(region.std())

    assert painted(tx, ty, tw, th) > 10, "the summary table is blank in the screenshot"
    for img in probed.imgs:
        x, y, w, h = _box(img["data-probe-box"])
        if y + h <= height:
            assert painted(x, y, w, h) > 5, f"figure '{img['alt']}' is blank in the screenshot"


def test_figures_are_skipped_gracefully_without_optional_inputs(tmp_path):
    run = copy_run(tmp_path)
    # strip what the runner writes for the optional figures
    rows = [json.loads(x) for x in (run / "scores.jsonl").read_text().splitlines()]
    for r in rows:
        for k in [k for k in r["scores"] if k.endswith("_curve")]:
            del r["scores"][k]
    (run / "scores.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    # the curves' metrics in the summary: figures draw the curves of the metrics that declare them
    summary = json.loads((run / "summary.json").read_text())
    for k in ("deletion_auc", "insertion_auc"):
        cls = METRICS.get(k)
        summary["metrics"][k] = {**cls.describe(), **cls.regression()}
        for m in summary["methods"]:
            summary["results"][m]["metrics"][k] = {"value": 0.5, "ci_low": 0.4, "ci_high": 0.6,
                                                   "n": 3, "n_undefined": 0}
    (run / "summary.json").write_text(json.dumps(summary))
    for f in (sidefiles.QUALITATIVE_FILE, sidefiles.CLASS_SPECIFICITY_FILE):
        (run / f).unlink(missing_ok=True)
    figs = plots.make_figures(run)
    keys = [f.key for f in figs]
    assert keys[0] == "summary_bars"
    optional = {"f1_threshold", "deletion_insertion", "class_specificity", "qualitative"}
    assert not optional & set(keys)
    assert (run / "figures" / "summary_bars.pdf").exists()
    # a malformed optional file: skipped with a message in the report, not a crash
    (run / sidefiles.CLASS_SPECIFICITY_FILE).write_text(json.dumps({"m": {"classes": ["a"]}}))
    text = write_report(run).read_text()
    assert "Figure skipped" in text and sidefiles.CLASS_SPECIFICITY_FILE in text
    with pytest.raises(ValueError, match="class_specificity.json"):
        plots.make_figures(run)


def test_f1_curve_from_rows_matches_slow_mean():
    rng = np.random.default_rng(1)
    rows = []
    for m in ("a", "b"):
        for i in range(5):
            c = rng.random(9).tolist()
            if i == 2:
                c[4] = None
            rows.append(
                {"image_id": str(i), "method": m, "status": "ok", "scores": {"f1_curve": c}}
            )
    rows.append({"image_id": "x", "method": "a", "status": "failed", "scores": {}})
    rows.append({"image_id": "y", "method": "c", "status": "ok", "scores": {"mean_f1": 0.3}})
    out = plots.f1_curve_from_rows(rows)
    assert set(out) == {"a", "b"}
    for m in ("a", "b"):
        assert out[m]["thresholds"] == pytest.approx([0.1 * t for t in range(1, 10)])
        for t in range(9):
            vals = [
                r["scores"]["f1_curve"][t]
                for r in rows
                if r["method"] == m
                and "f1_curve" in r["scores"]
                and r["scores"]["f1_curve"][t] is not None
            ]
            mean = sum(vals) / len(vals)
            sd = math.sqrt(sum((v - mean) ** 2 for v in vals) / (len(vals) - 1))
            assert out[m]["mean"][t] == pytest.approx(mean)
            assert out[m]["n"][t] == len(vals)
            assert out[m]["high"][t] == pytest.approx(mean + 1.96 * sd / math.sqrt(len(vals)))
    with pytest.raises(ValueError, match="expected 9"):
        plots.f1_curve_from_rows([{"image_id": "0", "method": "a", "scores": {"f1_curve": [0.1]}}])


def test_curves_from_rows_averages_classes():
    rows = [
        {
            "image_id": "0",
            "method": "m",
            "status": "ok",
            "scores": {"deletion_curve": {"1": [1.0, 0.5, 0.0], "2": [1.0, 0.0, 0.0]}},
        },
        {
            "image_id": "1",
            "method": "m",
            "status": "ok",
            "scores": {"deletion_curve": [0.5, 0.5, 0.5]},
        },
    ]
    out = plots.curves_from_rows(rows, "deletion_curve")
    assert out["m"]["x"] == pytest.approx([0.0, 0.5, 1.0])
    assert out["m"]["mean"] == pytest.approx([0.75, 0.375, 0.25])
    rows.append({"image_id": "2", "method": "m", "scores": {"deletion_curve": [1.0, 0.0]}})
    with pytest.raises(ValueError, match="lengths"):
        plots.curves_from_rows(rows, "deletion_curve")


def test_save_qualitative_round_trip_and_validation(tmp_path):
    imgs = np.zeros((2, 3, 8, 8), dtype=np.uint8)
    masks = {"gradcam": np.full((2, 8, 8), 1.5), "rise": np.full((2, 8, 8), np.nan)}
    path = sidefiles.save_qualitative(tmp_path, imgs, masks, ["a", "b"], np.array([[1, 0], [1, 1]]))
    d = sidefiles.load_qualitative(path)
    assert d["masks"].dtype == np.float16 and d["masks"].shape == (2, 2, 8, 8)
    assert list(d["methods"]) == ["gradcam", "rise"]
    assert float(d["masks"][0].max()) == 1.0 and float(d["masks"][1].max()) == 0.0
    assert d["labels"].tolist() == [[1, 0], [1, 1]]
    with pytest.raises(ValueError, match=r"uint8 array of shape \(N, 3, H, W\)"):
        sidefiles.save_qualitative(tmp_path, imgs.astype(np.float32), masks, ["a", "b"], np.eye(2))
    with pytest.raises(ValueError, match="masks of method 'x' must have shape"):
        sidefiles.save_qualitative(tmp_path, imgs, {"x": np.zeros((2, 4, 4))}, ["a", "b"], np.eye(2))
    with pytest.raises(ValueError, match="labels must be multi-hot"):
        sidefiles.save_qualitative(tmp_path, imgs, masks, ["a", "b", "c"], np.eye(2))
    u8 = sidefiles.images_to_uint8(np.zeros((1, 3, 2, 2)), [0.5, 0.5, 0.5], [0.2, 0.2, 0.2])
    assert u8.dtype == np.uint8 and int(u8.max()) == 128


def test_cli_report(tmp_path, capsys):
    from attrbench.cli import main

    run = copy_run(tmp_path)
    assert main(["report", str(run)]) == 0
    assert "report written to" in capsys.readouterr().out
    assert (run / "report.html").exists()
    assert main(["report", str(tmp_path / "nope")]) == 2
    assert base_run() != run
