"""The run pipeline's seams: the resolved configuration, the metrics' declared side outputs, the
methods' flags, the wall-time record and the run folder's JSON cleaner."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import pytest
import torch
from torch import nn

from attrbench.artifacts import format_timings
from attrbench.catalog import METHODS, METRICS
from attrbench.config import ConfigError, ResolvedRun, RunConfig, resolve
from attrbench.evaluate import Collected, Timings, score_batch
from attrbench.interfaces import AttributionMethod, EvalBatch, Metric, SideOutputs
from attrbench.metrics.localization import F1_CURVE_THRESHOLDS, MeanF1, binary_f1
from attrbench.metrics.perturbation import DeletionAUC
from attrbench.metrics.specificity import ClassSpecificityDiag, ClassSpecificityOffDiag
from attrbench.rundir import clean_json

REPO = Path(__file__).resolve().parents[1]


# ----------------------------------------------------------------------------- configuration
def test_resolve_fills_every_default_and_is_immutable():
    cfg = RunConfig(methods=["grad_cam", "RISE"], metrics=["mean_f1"], limit=3,
                    method_options={"rise": {"num_masks": 10}})
    before = dataclasses.asdict(cfg)
    run = resolve(cfg)
    assert isinstance(run, ResolvedRun)
    assert run.methods == ("gradcam", "rise") and run.metrics == ("mean_f1",)
    assert run.batch_size == run.preset.batch_size and run.split == run.preset.split
    assert run.method_options["rise"]["num_masks"] == 10
    assert run.out.parent == Path("results") / "runs" and run.out.name.startswith("synthetic-")
    assert run.reference is None  # explainer is not part of this run
    assert dataclasses.asdict(cfg) == before  # the user's configuration is not modified
    with pytest.raises(dataclasses.FrozenInstanceError):
        run.limit = 5  # type: ignore[misc]
    with pytest.raises(TypeError):
        run.method_options["rise"]["num_masks"] = 1  # type: ignore[index]


@pytest.mark.parametrize("cfg, message", [
    (RunConfig(limit=0), "--limit must be a positive integer, got 0"),
    (RunConfig(batch_size=-2), "--batch-size must be a positive integer, got -2"),
    (RunConfig(image_size=4), "--image-size must be an integer >= 8, got 4"),
    (RunConfig(devices=0), "--devices must be a positive integer, got 0"),
    (RunConfig(methods=["gradcam"], method_options={"rise": {"num_masks": 5}}),
     "rise' is not one of this run's methods"),
    (RunConfig(methods=["gradcam", "rise"], reference="center"),
     "--reference center is not one of this run's methods"),
    (RunConfig(device="cuda:7") if not torch.cuda.is_available() else RunConfig(limit=-1),
     "not available" if not torch.cuda.is_available() else "--limit"),
])
def test_resolve_refuses_bad_values_before_any_work(cfg, message):
    with pytest.raises(ConfigError, match=message.replace("+", r"\+")):
        resolve(cfg)


def test_explainer_checkpoint_flag_is_the_explainers_checkpoint_option():
    run = resolve(RunConfig(explainer_checkpoint="my.pt", methods=["explainer", "gradcam"]))
    assert run.method_options["explainer"]["checkpoint"] == "my.pt"


# ----------------------------------------------------------------------------- declarations
def test_method_flags_come_from_the_classes():
    sanity = {n for n in METHODS.names() if METHODS.get(n).sanity}
    assert sanity == {"ideal", "center", "constant_0", "constant_0.5", "constant_1", "random"}
    out = {n for n in METHODS.names() if not METHODS.get(n).class_specificity}
    assert out == {"extremal_perturbations", "igos_pp"}


class _Blank(AttributionMethod):
    name = "blank"
    class_specificity = False

    def _attribute(self, images, targets, *, gt_masks, seeds):
        return torch.zeros(images.shape[0], *images.shape[-2:])


def test_class_specificity_reads_the_methods_flag_not_its_name():
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 4))
    for cls in (ClassSpecificityDiag, ClassSpecificityOffDiag):
        metric = cls()
        assert metric.not_applicable(_Blank(model), "anything") is not None
        assert metric.not_applicable(METHODS.get("center")(model), "center") is None
        assert cls(skip_methods=["center"]).not_applicable(
            METHODS.get("center")(model), "center") is not None


def test_metrics_declare_their_side_outputs():
    curves = {n: METRICS.get(n).curve_key for n in METRICS.builtin_names()
              if METRICS.get(n).curve_key}
    assert curves == {"mean_f1": "f1_curve", "deletion_auc": "deletion_curve",
                      "insertion_auc": "insertion_curve"}
    groups = {n for n in METRICS.builtin_names() if METRICS.get(n).matrix_group}
    assert groups == {"class_specificity_diag", "class_specificity_offdiag"}
    axes = {n: METRICS.get(n).figure_axis for n in METRICS.builtin_names()
            if METRICS.get(n).figure_axis}
    assert axes == {"mean_f1": "quality", "cont_iou": "quality", "time_ms": "cost",
                    "model_calls": "cost"}
    assert Metric().side_outputs() == SideOutputs()


def _eval_batch(b: int = 3, k: int = 4, hw: int = 8) -> EvalBatch:
    g = torch.Generator().manual_seed(0)
    labels = torch.zeros(b, k)
    labels[torch.arange(b), torch.arange(b) % k] = 1
    labels[0, 3] = 1
    pi, pc = torch.nonzero(labels > 0.5, as_tuple=True)
    masks = torch.rand(len(pi), hw, hw, generator=g)
    gt = torch.zeros(b, k, hw, hw, dtype=torch.bool)
    gt[pi, pc, 2:6, 2:6] = True
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * hw * hw, k)).eval()
    model.num_classes = k  # methods read it instead of probing with a 32 px image
    return EvalBatch(images=torch.randn(b, 3, hw, hw, generator=g), labels=labels,
                     pair_image=pi, pair_class=pc, class_masks=masks,
                     merged=EvalBatch.merge(masks, pi, b), gt_masks=gt,
                     has_gt=torch.tensor([True, False, True]), model=model,
                     image_ids=[f"i{j}" for j in range(b)], seeds=torch.zeros(b, dtype=torch.long))


def test_mean_f1_hands_over_the_f1_curve_of_images_with_ground_truth():
    eb = _eval_batch()
    metric = MeanF1()
    metric.update(eb)
    curves = metric.side_outputs().curves
    assert set(curves) == {"i0", "i2"}  # i1 has no ground truth
    want = binary_f1(eb.merged, eb.gt_union, F1_CURVE_THRESHOLDS)
    assert curves["i2"] == pytest.approx(want[2].tolist())
    metric.reset()
    assert metric.side_outputs().curves == {}


def test_deletion_hands_over_one_curve_per_image_and_class():
    eb = _eval_batch()
    metric = DeletionAUC(steps=4)
    values = metric.update(eb)
    side = metric.side_outputs()
    assert set(side.curves) == {"i0", "i1", "i2"} and set(side.curves["i0"]) == {"0", "3"}
    assert all(len(c) == 5 for per in side.curves.values() for c in per.values())
    auc0 = [math.fsum(0.5 * (c[j] + c[j + 1]) / 4 for j in range(4))
            for c in side.curves["i0"].values()]
    assert values[0] == pytest.approx(sum(auc0) / 2, abs=1e-5)


class _Ones(AttributionMethod):
    name = "ones"

    def _attribute(self, images, targets, *, gt_masks, seeds):
        return torch.ones(images.shape[0], *images.shape[-2:])


def test_score_batch_stores_curves_and_one_set_of_matrix_rows_per_group():
    from attrbench.data import Batch

    eb = _eval_batch()
    batch = Batch(eb.images, eb.labels, eb.gt_masks, eb.has_gt, [[] for _ in range(3)],
                  list(eb.image_ids))
    metrics = {"mean_f1": MeanF1(), "deletion_auc": DeletionAUC(steps=4),
               "class_specificity_diag": ClassSpecificityDiag(thresholds=[0.5]),
               "class_specificity_offdiag": ClassSpecificityOffDiag(thresholds=[0.5])}
    collected, timings = Collected(), Timings()
    rows = score_batch("ones", _Ones(eb.model), batch, eb.seeds, eb.model, metrics,
                       torch.device("cpu"), collected, timings)
    assert [r["status"] for r in rows] == ["ok"] * 3
    assert "f1_curve" in rows[0]["scores"] and "f1_curve" not in rows[1]["scores"]
    assert set(rows[0]["scores"]["deletion_curve"]) == {"0", "3"}
    # both specificity metrics share one computation and one set of rows: 4 (image, target) pairs
    assert list(collected.matrices) == ["class_specificity"]
    assert len(collected.matrices["class_specificity"]["ones"]) == 4
    assert set(timings.metrics) == set(metrics) and timings.methods["ones"] > 0
    record = ClassSpecificityDiag.matrix_record(collected.matrices["class_specificity"]["ones"],
                                                ["a", "b", "c", "d"])
    assert record["classes"] == ["a", "b", "c", "d"] and len(record["matrix"]) == 4


# ----------------------------------------------------------------------------- timings, JSON
def test_timings_account_for_the_wall_time_and_merge_over_processes():
    t = Timings(data=1.0, total=10.0)
    t.add_method("rise", 4.0)
    t.add_metric("deletion_auc", "rise", 2.0)
    t.add_metric("deletion_auc", "gradcam", 0.5)
    d = t.to_dict()
    assert d["metrics_s"] == {"deletion_auc": 2.5} and d["other_s"] == pytest.approx(2.5)
    both = Timings.merged([d, {**d, "total_s": 12.0}])
    assert both["total_s"] == 12.0 and both["methods_s"] == {"rise": 8.0}
    text = format_timings(d)
    assert text.startswith("wall time 10.0 s") and "rise 4.0 s (40%)" in text
    assert all(len(line) <= 100 for line in format_timings(
        {**d, "methods_s": {f"method_{i}": 1.0 for i in range(40)}}).splitlines())


def test_clean_json_is_the_one_cleaner():
    out = clean_json({1: float("nan"), "t": torch.tensor([1.5, float("inf")]), "p": Path("a/b"),
                      "m": nn.Linear(2, 2), "x": (1, True, None)})
    assert out == {"1": None, "t": [1.5, None], "p": "a/b", "m": "Linear", "x": [1, True, None]}
    json.dumps(out)


def test_no_module_reaches_back_to_removed_name_lists():
    text = "\n".join(p.read_text() for p in (REPO / "attrbench").rglob("*.py"))
    for gone in ("COST_METRICS", "SANITY_METHODS", "QUALITY_METRICS", "COST_AXES",
                 "METRIC_TOLERANCES", "MetricFn"):
        assert gone not in text, gone


def test_every_subpackage_is_listed_for_setuptools():
    """pyproject.toml lists the packages explicitly; a folder with an ``__init__.py`` left out of
    that list is missing from a wheel and from a non-editable install."""
    import re

    text = (REPO / "pyproject.toml").read_text()
    block = re.search(r"^\[tool\.setuptools\]\n(.*?)(?=^\[)", text, re.MULTILINE | re.DOTALL)
    assert block, "pyproject.toml has no [tool.setuptools] table"
    names = re.search(r"^packages = \[(.*?)\]", block.group(1), re.MULTILINE | re.DOTALL)
    assert names, "[tool.setuptools] has no packages list"
    listed = set(re.findall(r'"([^"]+)"', names.group(1)))
    assert "attrbench" in listed and "attrbench.data" in listed  # the parse found the list
    found = {".".join(p.parent.relative_to(REPO).parts)
             for p in (REPO / "attrbench").rglob("__init__.py")}
    found |= {f"attrbench.{d}" for d in ("methods", "metrics")}  # installed from top-level folders
    assert found - listed == set(), "not in [tool.setuptools] packages"


def test_modules_and_functions_stay_small():
    """No module of attrbench/ over 500 lines, no function over 60 lines (docstring excluded)."""
    import ast

    long = []
    for p in sorted((REPO / "attrbench").rglob("*.py")):
        text = p.read_text()
        if text.count("\n") > 500:
            long.append(f"{p.relative_to(REPO)}: {text.count(chr(10))} lines")
        for n in ast.walk(ast.parse(text)):
            if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)):
                size = n.end_lineno - n.lineno + 1
                if ast.get_docstring(n):
                    size -= n.body[0].end_lineno - n.body[0].lineno + 1
                if size > 60:
                    long.append(f"{p.relative_to(REPO)}: {n.name}() {size} lines")
    assert long == []


class _AllAtOnce(AttributionMethod):
    name = "all_at_once"
    all_classes_at_once = True

    def __init__(self, model, **options):
        super().__init__(model, **options)
        self.calls = 0

    def _attribute(self, images, targets, *, gt_masks, seeds):
        return self._attribute_all(images, seeds=seeds)[torch.arange(len(targets)), targets]

    def _attribute_all(self, images, *, seeds):
        self.calls += 1
        b, _, h, w = images.shape
        ramp = torch.linspace(0, 1, h * w).view(1, 1, h, w)
        return ramp.expand(b, self.num_classes, h, w).clone()


def test_metrics_get_the_runners_maps_of_every_class_instead_of_a_second_call():
    from attrbench.data import Batch

    eb = _eval_batch()
    batch = Batch(eb.images, eb.labels, eb.gt_masks, eb.has_gt, [[] for _ in range(3)],
                  list(eb.image_ids))
    method = _AllAtOnce(eb.model)
    metrics = {"class_specificity_diag": ClassSpecificityDiag(thresholds=[0.5])}
    rows = score_batch("a", method, batch, eb.seeds, eb.model, metrics, torch.device("cpu"))
    assert [r["status"] for r in rows] == ["ok"] * 3 and method.calls == 1


def test_input_checks_have_one_wording():
    from attrbench import checks

    assert checks.check_int("steps", 3) == 3 and checks.check_nonneg("noise", 0) == 0.0
    for fn, args, err, msg in [
        (checks.check_int, ("steps", 0), ValueError, "steps must be >= 1, got 0"),
        (checks.check_int, ("steps", True), TypeError, "steps must be an int, got True"),
        (checks.check_positive, ("sigma", -1.0), ValueError, "sigma must be a positive number"),
        (checks.check_fraction, ("p", 1.0), ValueError, r"p must be in \(0, 1\), got 1.0"),
        (checks.check_choice, ("score", "x", ["a"]), ValueError, r"score must be one of \['a'\]"),
        (checks.check_bool, ("relu", 1), TypeError, "relu must be a bool, got 1"),
        (checks.check_nonneg, ("noise", float("inf")), ValueError, "finite number >= 0"),
    ]:
        with pytest.raises(err, match=msg):
            fn(*args)
    assert checks.check_fraction("p", 1.0, closed=True) == 1.0
