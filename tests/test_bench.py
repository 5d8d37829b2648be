"""Tests of ``attrbench bench`` (the attrbench/bench/ package).

No timing assertions (hardware-dependent): the helpers are checked on trivial inputs, the
measuring functions on what they return and count, and one ``--quick`` run end to end.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from optional import require_module
from torch import nn

from attrbench import bench
from attrbench.bench import (
    MethodPeakMemory,
    Row,
    bench_main,
    format_metric_costs,
    format_table,
    interleaved_ms,
    linear_extrapolation,
    median_ms,
    metric_costs,
    metric_totals,
    ratio_stats,
    relative_growth,
    safe_ratio,
)
from attrbench.catalog import METRICS
from attrbench.interfaces import AttributionMethod, Metric


# ------------------------------------------------------------------------------ helpers
def test_safe_ratio_trivial_and_degenerate():
    assert safe_ratio(3.0, 2.0) == 1.5
    assert safe_ratio(0.0, 5.0) == 0.0
    for a, b in [(1.0, 0.0), (1.0, -2.0), (math.nan, 1.0), (1.0, math.inf), (math.inf, 1.0)]:
        assert math.isnan(safe_ratio(a, b)), (a, b)
    with pytest.raises(TypeError, match="two numbers"):
        safe_ratio("a", 1.0)


def test_relative_growth():
    assert relative_growth(100.0, 110.0) == pytest.approx(0.10)
    assert relative_growth(200.0, 200.0) == 0.0
    assert relative_growth(100.0, 90.0) == pytest.approx(-0.10)
    assert math.isnan(relative_growth(0.0, 5.0))


def test_linear_extrapolation():
    assert linear_extrapolation(2.5, 100, 800) == 20.0
    assert linear_extrapolation(7.0, 8000, 8000) == 7.0
    with pytest.raises(ValueError, match="measured_units"):
        linear_extrapolation(1.0, 0, 10)
    with pytest.raises(ValueError, match="target_units"):
        linear_extrapolation(1.0, 1, -3)


@pytest.mark.parametrize("value, aim, expected", [
    (1.10, "<= 1.15", True), (1.15, "<= 1.15", True), (1.2, "<= 1.15", False),
    (150.0, ">= 100", True), (99.9, ">= 100", False),
    (0.05, "<= 10%", True), (0.11, "<= 10%", False),
    (3.0, "", None), (math.nan, "<= 1.0", None),
])
def test_row_holds(value, aim, expected):
    assert Row("k", "label", value, aim).holds is expected


def test_format_table_columns():
    rows = [Row("a", "ratio a", 1.05, "<= 1.15", "ctx a"), Row("b", "speed-up b", 1234.0, ">= 100"),
            Row("c", "growth c", 0.031, "<= 10%"), Row("d", "context d", 7.0, "")]
    text = format_table(rows)
    lines = text.splitlines()
    assert lines[0].split()[:4] == ["measurement", "value", "aim", "holds?"]
    assert "1.050" in lines[2] and "yes" in lines[2] and "ctx a" in lines[2]
    assert "1234" in lines[3] and "yes" in lines[3]
    assert "3.1 %" in lines[4]
    assert lines[5].split()[-1] == "-"  # no aim: no verdict


def test_median_ms_counts_calls_and_interleaves():
    order = []
    fns = [lambda: order.append("a"), lambda: order.append("b")]
    medians, minima = median_ms(fns, "cpu", repeats=3, warmup=2)
    assert order == ["a", "a", "b", "b"] + ["a", "b"] * 3
    assert len(medians) == len(minima) == 2
    assert all(0 <= m <= med for m, med in zip(minima, medians))
    with pytest.raises(ValueError, match="repeats"):
        median_ms(fns, "cpu", repeats=0)


def test_interleaved_ms_returns_every_repeat():
    order = []
    fns = [lambda: order.append("a"), lambda: order.append("b")]
    times = interleaved_ms(fns, "cpu", repeats=4, warmup=0)
    assert order == ["a", "b"] * 4
    assert [len(t) for t in times] == [4, 4] and all(x >= 0 for t in times for x in t)
    with pytest.raises(ValueError, match="warmup"):
        interleaved_ms(fns, "cpu", repeats=1, warmup=-1)


def test_ratio_stats_is_the_median_of_per_repeat_ratios():
    # per-repeat ratios 2, 1.5, 2.5: median 2, while the ratio of the medians is 3 / 2 = 1.5
    # and that of the minima (best runs) 2 / 1 = 2 only by chance
    r = ratio_stats([2.0, 3.0, 10.0], [1.0, 2.0, 4.0])
    assert r["ratio"] == 2.0 and r["ratio_min"] == 1.5 and r["ratio_max"] == 2.5
    assert r["ratios"] == [2.0, 1.5, 2.5]
    # one slow repeat on both sides (machine load) does not move the median
    r = ratio_stats([1.1, 1.1, 55.0], [1.0, 1.0, 50.0])
    assert r["ratio"] == pytest.approx(1.1)
    # even count: the mean of the middle two; non-finite repeats are left out
    r = ratio_stats([1.0, 3.0, 5.0], [1.0, 1.0, 0.0])
    assert r["ratio"] == 2.0 and r["ratios"] == [1.0, 3.0]
    r = ratio_stats([1.0], [0.0])
    assert math.isnan(r["ratio"]) and r["ratios"] == []
    with pytest.raises(ValueError, match="as many"):
        ratio_stats([1.0, 2.0], [1.0])


_PEAK_PROBE = """
import json, torch
from attrbench.bench import MethodPeakMemory
with MethodPeakMemory("cpu") as big:
    x = torch.ones(32 * 2**20)  # 128 MB, touched
    del x
with MethodPeakMemory("cpu") as small:
    y = torch.ones(1000)
    del y
print(json.dumps({"big": big.mb, "small": small.mb, "source": big.source}))
"""


def test_method_peak_memory_sees_a_large_allocation():
    # a fresh process, so that the fallback source (the growth of the process's peak RSS) is
    # tested too: in a long test session an earlier, larger peak would hide the block
    out = subprocess.run([sys.executable, "-c", _PEAK_PROBE], capture_output=True, text=True,
                         check=True, timeout=120)
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["big"] >= 96, got
    if got["source"].startswith("linux"):
        # a later, small block gets its own (small) number when the peak can be reset
        assert got["small"] < 32, got


def test_rss_peak_probe_agrees_with_a_measured_block():
    # when the probe says the high-water mark can be reset, a 64 MB block of fresh pages (mapped
    # directly: the allocator may reuse resident memory) must be seen in this long-lived process
    if bench.memory._can_reset_rss_peak():
        import mmap

        with MethodPeakMemory("cpu") as mem:
            block = mmap.mmap(-1, 64 * 2**20)
            block.write(b"x" * (64 * 2**20))
            block.close()
        assert mem.mb >= 48, mem.mb
    else:
        assert MethodPeakMemory("cpu").source == "attrbench.metrics.cost.PeakMemory"


def test_wait_rusage_is_per_child(tmp_path: Path):
    big = [sys.executable, "-c", "b = bytearray(120 * 2**20); b[::4096] = b'x' * len(b[::4096])"]
    small = [sys.executable, "-c", "pass"]
    rc1, peak_big, _ = bench.memory._wait_rusage(big, tmp_path / "big.log")
    rc2, peak_small, _ = bench.memory._wait_rusage(small, tmp_path / "small.log")
    assert rc1 == rc2 == 0
    if not math.isfinite(peak_big):
        pytest.skip("no per-child rusage on this platform")
    assert peak_big >= 120
    assert peak_small < peak_big - 60  # not the running maximum over all children


def test_memory_growth_rejects_bad_sizes():
    with pytest.raises(ValueError, match="two positive"):
        bench.memory_growth([1000])
    with pytest.raises(ValueError, match="two positive"):
        bench.memory_growth([0, 10])


# ------------------------------------------------------------------------------ measurements
class Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.head = nn.Linear(4, 3)
        self.num_classes = 3  # so that no method probes the model with an extra forward
        self.calls = 0
        self.rows = 0

    def forward(self, x):
        self.calls += 1
        self.rows += x.shape[0]
        return self.head(self.conv(x).amax((2, 3)))


def test_rise_overhead_runs_the_same_forwards():
    torch.manual_seed(0)
    model = Tiny().eval()
    images = torch.randn(2, 3, 16, 16)
    r = bench.rise_overhead(model, images, num_masks=10, mask_batch=4, repeats=2)
    # the ratio is the median of the per-repeat ratios (of 2: their mean), not a best run
    assert len(r["ratios"]) == r["repeats"] == 2
    assert r["ratio"] == pytest.approx(sum(r["ratios"]) / 2)
    assert r["ratio_min"] <= r["ratio"] <= r["ratio_max"]
    # (1 warm-up + 2 repeats) x (RISE + bare), each ceil(10 / 4) = 3 forwards of 2 x <=4 images
    assert model.calls == 6 * 3
    assert model.rows == 6 * 2 * 10


def test_deletion_overhead_runs_the_same_forwards():
    torch.manual_seed(0)
    model = Tiny().eval()
    images = torch.randn(3, 3, 8, 8)
    masks = torch.rand(3, 8, 8)
    targets = torch.tensor([0, 1, 2])
    d = bench.deletion_overhead(model, images, masks, targets, steps=4, batch_size=5, repeats=1)
    assert d["forwards"] == 3 * 5
    assert d["ratios"] == [pytest.approx(d["ours_ms"] / d["bare_ms"])]  # one repeat
    assert model.rows == 2 * 2 * 15  # (warm-up + 1 repeat) x (ours + bare) x 15 images


def test_deletion_vs_quantus_skips_without_quantus(monkeypatch):
    monkeypatch.setitem(sys.modules, "quantus", None)  # import raises ImportError
    model = Tiny().eval()
    out = bench.deletion_vs_quantus(model, torch.randn(2, 3, 8, 8), torch.rand(2, 8, 8),
                                    torch.tensor([0, 1]), 4, 8, 1)
    assert set(out) == {"skipped"} and "Quantus is not importable" in out["skipped"]


def test_deletion_vs_quantus_with_quantus():
    """The comparison with Quantus runs (tiny inputs; the speed itself is not asserted)."""
    quantus = require_module("quantus")
    torch.manual_seed(0)
    model = Tiny().eval()
    out = bench.deletion_vs_quantus(model, torch.randn(2, 3, 8, 8), torch.rand(2, 8, 8),
                                    torch.tensor([0, 1]), 4, 8, 1)
    assert "skipped" not in out, out.get("skipped")
    assert out["quantus_version"] == quantus.__version__
    # features_in_step = 8 * 8 / 4 channel entries per step over 3 * 8 * 8 entries
    assert out["features_in_step"] == 16 and out["quantus_steps"] == 3 * 4
    for k in ("quantus_ms", "ours_ms", "ours_same_work_ms", "speedup", "speedup_equal_work"):
        assert math.isfinite(out[k]) and out[k] > 0, k
    assert out["speedup"] == pytest.approx(out["quantus_ms"] / out["ours_ms"])


class _Counting(Metric):
    """Counts its updates and resets; scores 0."""

    name = "counting"

    def __init__(self) -> None:
        super().__init__()
        self.updates = self.resets = 0

    def score(self, batch):
        self.updates += 1
        return [0.0] * batch.batch_size

    def reset(self) -> None:
        super().reset()
        self.resets += 1


class _NotForCenter(_Counting):
    name = "not_for_center"

    def not_applicable(self, method, name=""):
        return "no center" if name == "center" else None


class _Raising(Metric):
    name = "raising"

    def score(self, batch):
        raise RuntimeError("boom")


def _synthetic_batch(images, labels, cls):
    from attrbench.data.sample import Batch

    b = images.shape[0]
    masks = torch.stack([(cls == k + 1) for k in range(labels.shape[1])], 1)
    return Batch(images, labels, masks, torch.ones(b, dtype=torch.bool),
                 [[] for _ in range(b)], [f"i{i}" for i in range(b)])


def test_metric_costs_times_every_metric_on_every_method(synthetic_classifier, synthetic_batch):
    from attrbench.catalog import METHODS

    batch = _synthetic_batch(*synthetic_batch)
    methods = {n: METHODS.get(n)(synthetic_classifier) for n in ("center", "gradcam")}
    counting, partial = _Counting(), _NotForCenter()
    metrics = {"counting": counting, "not_for_center": partial, "raising": _Raising(),
               "mean_f1": METRICS.get("mean_f1")()}
    out = metric_costs(methods, metrics, batch, synthetic_classifier, repeats=2, device="cpu")
    assert out["images"] == {"center": 4, "gradcam": 4} and not out["skipped"]
    assert set(out["ms_per_image"]["center"]) == {"counting", "mean_f1"}
    assert set(out["ms_per_image"]["gradcam"]) == {"counting", "not_for_center", "mean_f1"}
    assert out["not_applicable"] == {"center": {"not_for_center": "no center"}}
    assert set(out["failed"]) == {"center", "gradcam"}
    assert "boom" in out["failed"]["gradcam"]["raising"]
    # one warm-up on the metric's first use, then 2 timed updates per method; each reset
    assert counting.updates == 1 + 2 * 2 and counting.resets == counting.updates
    assert partial.updates == 1 + 2  # not run on center
    assert all(v >= 0 for row in out["ms_per_image"].values() for v in row.values())


def test_metric_costs_skips_a_method_that_fails_every_image(synthetic_classifier,
                                                            synthetic_batch):
    class Broken(AttributionMethod):
        name = "broken"

        def _attribute(self, images, targets, **kw):
            raise RuntimeError("no maps")

    batch = _synthetic_batch(*synthetic_batch)
    out = metric_costs({"broken": Broken(synthetic_classifier)}, {"counting": _Counting()},
                       batch, synthetic_classifier, repeats=1, device="cpu")
    assert "no maps" in out["skipped"]["broken"] and not out["ms_per_image"]


def test_metric_totals_and_table():
    costs = {"ms_per_image": {"a": {"m1": 1.0, "m2": 2.0}, "b": {"m1": 0.5}},
             "not_applicable": {"b": {"m2": "why"}}, "failed": {}}
    tot = metric_totals(costs, {"a": 10.0, "b": 20.0})
    assert tot["metrics_per_method"] == {"a": 3.0, "b": 0.5}
    assert tot["method_and_metrics"] == {"a": 13.0, "b": 20.5}
    assert tot["per_metric"] == {"m1": 1.5, "m2": 2.0}
    assert tot["metrics_all"] == 3.5 and tot["methods_all"] == 30.0 and tot["all"] == 33.5
    lines = format_metric_costs(costs, {"a": 10.0, "b": 20.0}, tot).splitlines()
    assert lines[0].split() == ["method", "method", "m1", "m2", "metrics", "total"]
    assert lines[2].split() == ["a", "10.00", "1.00", "2.00", "3.00", "13.00"]
    assert lines[3].split() == ["b", "20.00", "0.50", "n/a", "0.50", "20.50"]
    assert lines[5].split() == ["total", "30.00", "1.50", "2.00", "3.50", "33.50"]


def test_bad_arguments_exit_2(capsys):
    with pytest.raises(SystemExit) as e:
        bench_main(["--images", "0"])
    assert e.value.code == 2
    with pytest.raises(SystemExit):
        bench_main(["--memory-sizes", "1000,abc"])
    assert "--memory-sizes" in capsys.readouterr().err
    # a bad device is the run's ConfigError: one line, exit 2, before any work
    assert bench_main(["--device", "tpu9", "--out", "unused"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: invalid --device 'tpu9'; expected cpu, cuda, cuda:N or auto"]


# ------------------------------------------------------------------------------ end to end
def _numbers(obj, path=""):
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _numbers(v, f"{path}.{k}")
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _numbers(v, f"{path}[{i}]")
    elif isinstance(obj, (int, float)) and not isinstance(obj, bool):
        yield path, obj


def test_bench_main_quick(tmp_path: Path, capsys, monkeypatch):
    # the Quantus row takes as long as the rest of --quick: it is covered by
    # test_deletion_vs_quantus_with_quantus, and its absence here is asserted below
    monkeypatch.setitem(sys.modules, "quantus", None)
    require_module("pytorch_grad_cam")  # the pytorch-grad-cam row is required below
    assert bench_main(["--quick", "--skip-memory", "--out", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    data = json.loads((tmp_path / "bench.json").read_text())

    expected = ["rise_over_bare_forwards", "deletion_over_bare_forwards",
                "insertion_over_bare_forwards", "gradcam_over_captum",
                "gradcam_over_pytorch_grad_cam", "deletion_speedup_vs_quantus",
                "deletion_speedup_vs_quantus_equal_work", "explainer_speedup_vs_rise8000",
                "explainer_speedup_vs_ep800"]
    optional = {"deletion_speedup_vs_quantus": "deletion_vs_quantus",
                "deletion_speedup_vs_quantus_equal_work": "deletion_vs_quantus",
                "explainer_speedup_vs_rise8000": "explainer_vs_paper",
                "explainer_speedup_vs_ep800": "explainer_vs_paper"}
    for key in expected:
        if key in data["ratios"]:
            row = data["ratios"][key]
            assert isinstance(row["value"], float) and math.isfinite(row["value"]), key
            assert row["label"] in printed, key  # every ratio row is printed
            assert row["holds"] in (True, False, None)
        else:  # only rows whose inputs can be missing may be absent, with a message
            assert key in optional, f"{key} missing from bench.json"
            assert data["skipped"][optional[key]], key
    assert "memory_growth" in data["skipped"]
    assert "Quantus is not importable" in data["skipped"]["deletion_vs_quantus"]

    # every number in the file is finite (NaN would have been written as null)
    nums = list(_numbers(data))
    assert nums and all(math.isfinite(v) for _, v in nums)
    # a null is allowed only as the verdict of a row that has no aim (e.g. the EP speed-up)
    nulls = [p for p, v in _walk_nulls(data)
             if not (p.endswith(".holds") and data["ratios"][p.split(".")[2]].get("aim") in
                     (None, "-", ""))]
    assert not nulls, nulls

    # the per-method table: every built method has its three numbers
    assert {"gradcam", "rise", "center"} <= set(data["methods"])
    for name, m in data["methods"].items():
        for k in ("ms_per_image", "calls_per_image", "peak_mem_mb"):
            assert isinstance(m[k], (int, float)) and m[k] >= 0, (name, k)
    assert data["methods"]["center"]["calls_per_image"] == 0
    assert data["methods"]["gradcam"]["calls_per_image"] > 0
    p = data["paper_settings"]
    assert p["rise_extrapolated"] and p["ep_extrapolated"]

    # the method x metric section: every measured method has a row of the default metrics
    mc = data["metric_costs"]
    assert set(mc["ms_per_image"]) == set(data["methods"])
    assert {"mean_f1", "deletion_auc", "pointing_game"} <= set(mc["metrics"])
    for name, row in mc["ms_per_image"].items():
        done = set(row) | set(mc["not_applicable"].get(name, {})) | set(
            mc["failed"].get(name, {}))
        assert done == set(mc["metrics"]), name  # every metric timed, n/a or failed
        assert all(v >= 0 for v in row.values()), name
    assert not mc["failed"], mc["failed"]
    tot = mc["totals"]
    assert tot["all"] == pytest.approx(tot["metrics_all"] + tot["methods_all"])
    assert "ms per image: each method, then each default metric" in printed
    # --quick uses the shared quick settings, recorded with the method
    from attrbench.presets import QUICK_METHOD_OPTIONS

    assert data["methods"]["rise"]["options"]["num_masks"] == (
        QUICK_METHOD_OPTIONS["rise"]["num_masks"])
    for key in ("deletion_over_bare_forwards", "rise_over_bare_forwards"):
        assert "repeat ratios, range" in data["ratios"][key]["context"]
    d = data["deletion_overhead"]
    assert d["ratio_min"] <= d["ratio"] <= d["ratio_max"]
    assert len(d["ratios"]) == data["config"]["ratio_repeats"]
    assert "extrapolated" in printed or "explainer_vs_paper" in data["skipped"]


def _walk_nulls(obj, path=""):
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _walk_nulls(v, f"{path}.{k}")
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _walk_nulls(v, f"{path}[{i}]")
    elif obj is None and not path.startswith((".config", ".metric_costs.metric_options")):
        yield path, obj


# ------------------------------------------------------------------ paper-scale estimates
def _estimates_module():
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "paper_scale_estimates.py"
    spec = importlib.util.spec_from_file_location("paper_scale_estimates", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_paper_scale_estimates_scale_linearly_and_docs_are_current(capsys):
    est = _estimates_module()
    # the busiest of N processes gets ceil(images / N) images
    assert est.sharded_seconds(1000.0, 210, 1) == 210.0
    assert est.sharded_seconds(1000.0, 210, 4) == 53.0
    assert est.sharded_seconds(2.0, 2000, 8) == 0.5
    assert est.duration(math.nan) == "not measured"
    assert est.duration(90) == "90 s" and est.duration(900) == "15.0 min"
    text = est.markdown()
    assert "VGG-16 at 224 px**: not measured" in text
    # EP is extrapolated from the quick GPU check's 100 iterations to 800
    ep = json.loads((est.GPU / "gpu_check_h200_quick.json").read_text())["ms_per_image"]
    voc_1gpu = est.duration(ep["extremal_perturbations"] * 8 * 210 / 1000)
    assert any(line.startswith("| extremal_perturbations") and f"| {voc_1gpu} |" in line
               for line in text.splitlines())
    # docs/performance.md holds the block the committed figures give
    assert est.main(["--check", str(est.ROOT / "docs" / "performance.md")]) == 0, (
        capsys.readouterr().err)
