"""Per-class and per-image views: per_class.csv against a slow scan of the rows, each method's
worst images, and their place in the report."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from attrbench import sidefiles, views
from attrbench.cli import main

METHODS = "gradcam,center,constant_0.5"
METRICS = "mean_f1,pointing_game,gini,time_ms"


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("views") / "r"
    assert main(["run", "--methods", METHODS, "--metrics", METRICS, "--limit", "10",
                 "--batch-size", "4", "--out", str(out), "--no-progress"]) == 0
    return out


def _rows(run: Path) -> list[dict]:
    return [json.loads(x) for x in (run / "scores.jsonl").read_text().splitlines() if x.strip()]


def test_per_class_matches_a_slow_scan_of_the_rows(run):
    frame = views.per_class_frame(run)
    assert set(frame.metric) == {"mean_f1", "pointing_game", "gini"}  # no cost metric
    names = json.loads((run / "config.json").read_text())["config"]["classes"]
    rows = _rows(run)
    for r in frame.itertuples():
        vals = []
        for row in rows:
            if row["method"] != r.method or row["status"] != "ok":
                continue
            v = row["scores"][r.metric]
            if isinstance(v, dict):  # per-class metric: its own entry for the class
                x = v.get(str(r.class_id))
                if x is not None and math.isfinite(x):
                    vals.append(x)
            elif r.class_id in row["classes"] and v is not None:  # image-level: images with it
                vals.append(v)
        assert r.n == len(vals) and r.value == pytest.approx(sum(vals) / len(vals))
        assert r[4] == names[r.class_id]
    csv = (run / "per_class.csv").read_text().splitlines()
    assert csv[0] == "method,metric,class_id,class,value,n" and len(csv) == len(frame) + 1


def test_class_values_of_one_stored_value():
    assert views._class_values({"1": 0.5, "2": None, "x": 1.0}, [1, 2]) == [(1, 0.5)]
    assert views._class_values(0.25, [0, 3]) == [(0, 0.25), (3, 0.25)]
    assert views._class_values(float("nan"), [0]) == [] and views._class_values(0.3, None) == []


def test_worst_images_are_the_lowest_values_of_each_method(run):
    d = sidefiles.load_worst(run / sidefiles.WORST_FILE)
    assert d["metric"] == "mean_f1" and d["higher_is_better"]
    assert d["methods"] == METHODS.split(",") and d["images"].shape[:2] == (3, 4)
    assert d["images"].dtype == np.uint8 and d["masks"].shape[:2] == (3, 4)
    rows = _rows(run)
    for i, m in enumerate(d["methods"]):
        scored = sorted((r["scores"]["mean_f1"], r["image_id"]) for r in rows
                        if r["method"] == m and r["status"] == "ok")
        assert list(d["image_ids"][i]) == [iid for _, iid in scored[:4]]
        assert d["values"][i].tolist() == pytest.approx([v for v, _ in scored[:4]])


def test_save_worst_refuses_uneven_methods(tmp_path):
    one = {"images": np.zeros((1, 3, 4, 4), np.uint8), "masks": np.zeros((1, 4, 4)),
           "labels": np.zeros((1, 2)), "image_ids": ["a"], "values": [0.1]}
    two = {k: np.concatenate([v, v]) if isinstance(v, np.ndarray) else v * 2
           for k, v in one.items()}
    with pytest.raises(ValueError, match="same number"):
        sidefiles.save_worst(tmp_path, "mean_f1", True, {"a": one, "b": two}, ["x", "y"])


def test_report_shows_per_class_worst_images_and_timings(run):
    text = (run / "report.html").read_text()
    for anchor in ('id="per-class"', 'id="fig-per_class"', 'id="fig-worst"', 'id="timings"'):
        assert anchor in text, anchor
    assert (run / "figures" / "worst.png").exists() and (run / "figures" / "per_class.png").exists()
    assert "Figure skipped" not in text
