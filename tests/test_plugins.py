"""Plugins: methods and metrics named by import path or installed through entry points."""

from __future__ import annotations

import json
import re
import sys
import uuid
from pathlib import Path

import pytest
import torch

from attrbench.catalog import METHODS, METRICS
from attrbench.cli import _kv_options, main
from attrbench.interfaces import AttributionMethod
from attrbench.plugins import FunctionMethod, function_method
from attrbench.registry import PluginError, UnknownNameError

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"

PLUGIN_SOURCE = '''
import torch
from attrbench.interfaces import AttributionMethod, Metric

CALLS = []


class Blob(AttributionMethod):
    """A centred square of side ``side`` pixels; no name of its own."""

    needs_gradients = False

    def __init__(self, model, side=8):
        super().__init__(model, side=side)
        self.side = side

    def _attribute(self, images, targets, *, gt_masks, seeds):
        b, _, h, w = images.shape
        out = images.new_zeros(b, h, w)
        r = self.side // 2
        out[:, h // 2 - r:h // 2 + r, w // 2 - r:w // 2 + r] = 1
        return out


def ramp(model, images, targets, gain=1.0):
    CALLS.append({"gain": gain, "grad": torch.is_grad_enabled()})
    b, _, h, w = images.shape
    return gain * torch.arange(h * w, dtype=images.dtype).view(1, 1, h, w).expand(b, 1, h, w)


def wrong_shape(model, images, targets):
    return images


def not_a_tensor(model, images, targets):
    return [0.0] * images.shape[0]


class MeanMask(Metric):
    name = "mean_mask"
    definition = "mean of the merged mask"

    def score(self, batch):
        return batch.merged.flatten(1).mean(1).tolist()


class NotAMetric:
    pass


NUMBER = 3
'''


def _write_module(tmp_path: Path, monkeypatch, source: str = PLUGIN_SOURCE) -> str:
    """A fresh importable module (unique name) holding ``source``; returns its name."""
    name = f"plug_{uuid.uuid4().hex[:10]}"
    folder = tmp_path / "site"
    folder.mkdir(exist_ok=True)
    (folder / f"{name}.py").write_text(source)
    monkeypatch.syspath_prepend(str(folder))
    return name


def _write_dist(tmp_path: Path, monkeypatch, module: str, methods: dict[str, str],
                metrics: dict[str, str] | None = None) -> None:
    """A temporary installed distribution (a ``.dist-info`` folder on ``sys.path``) with
    entry points in the ``attrbench.methods`` and ``attrbench.metrics`` groups."""
    folder = tmp_path / "site"
    info = folder / "acme_plugin-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: acme-plugin\nVersion: 1.0\n")
    lines = ["[attrbench.methods]"] + [f"{k} = {v}" for k, v in methods.items()]
    lines += ["", "[attrbench.metrics]"] + [f"{k} = {v}" for k, v in (metrics or {}).items()]
    (info / "entry_points.txt").write_text("\n".join(lines) + "\n")
    monkeypatch.syspath_prepend(str(folder))


@pytest.fixture(autouse=True)
def _fresh_plugins():
    """Every test discovers entry points and imports import paths anew."""
    METHODS.forget_plugins()
    METRICS.forget_plugins()
    yield
    METHODS.forget_plugins()
    METRICS.forget_plugins()


def _model() -> torch.nn.Module:
    """A two-class classifier with gradients to the input."""
    return torch.nn.Sequential(torch.nn.Conv2d(3, 2, 1), torch.nn.AdaptiveAvgPool2d(1),
                               torch.nn.Flatten())


def _rows(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "scores.jsonl").read_text().splitlines()]


def _run(tmp_path: Path, *args: str) -> Path:
    out = tmp_path / "run"
    rc = main(["run", "--limit", "4", "--out", str(out), "--no-report", "--no-progress", *args])
    assert rc == 0
    return out


# ------------------------------------------------------------------------------ import paths
def test_import_path_class_is_its_own_name(tmp_path, monkeypatch):
    mod = _write_module(tmp_path, monkeypatch)
    spec = f"{mod}:Blob"
    assert METHODS.canonical(spec) == spec
    assert METHODS.resolve_list(f"gradcam,{spec}") == ["gradcam", spec]
    assert spec in METHODS and METHODS.is_plugin(spec) and not METHODS.is_plugin("gradcam")
    cls = METHODS.get(spec)
    assert issubclass(cls, sys.modules[mod].Blob)
    assert cls.name == spec  # the class declared no name: it gets the one it was asked by
    assert spec not in METHODS.names()  # import paths are not listed
    m = cls(_model(), side=4)
    maps = m.attribute(torch.zeros(2, 3, 16, 16), torch.tensor([0, 1]))
    assert maps.shape == (2, 16, 16) and maps.sum().item() == 2 * 16


def test_plain_function_is_wrapped(tmp_path, monkeypatch):
    mod = _write_module(tmp_path, monkeypatch)
    cls = METHODS.get(f"{mod}:ramp")
    assert issubclass(cls, FunctionMethod) and issubclass(cls, AttributionMethod)
    assert cls.needs_gradients and not cls.black_box and cls.merge == "rescale_then_max"
    m = cls(_model(), gain=-5.0)
    maps = m.attribute(torch.zeros(2, 3, 4, 4), torch.tensor([0, 1]))
    calls = sys.modules[mod].CALLS
    assert calls[-1] == {"gain": -5.0, "grad": True}  # options reach it; gradients enabled
    assert maps.shape == (2, 4, 4)  # (B, 1, H, W) accepted and squeezed
    # min-max rescaled per map: -5 * ramp becomes 1 at the first pixel, 0 at the last
    assert maps[0, 0, 0].item() == 1.0 and maps[0, -1, -1].item() == 0.0
    assert torch.allclose(maps[0], maps[1])
    d = m.describe()
    assert d["function"] == f"{mod}:ramp" and d["options"] == {"gain": -5.0}
    assert d["name"] == f"{mod}:ramp"


def test_function_method_flags_and_no_rescale():
    grad = []

    def half(model, images, targets):
        grad.append(torch.is_grad_enabled())
        return images.new_full((images.shape[0], *images.shape[2:]), 0.5)

    cls = function_method(half, needs_gradients=False, rescale=False)
    assert cls.name == "half"
    m = cls(_model())
    maps = m.attribute(torch.zeros(1, 3, 5, 5), torch.tensor([1]))
    assert torch.equal(maps, torch.full((1, 5, 5), 0.5))  # kept as returned
    rescaled = function_method(half)(_model())
    assert rescaled.attribute(torch.zeros(1, 3, 5, 5), torch.tensor([1])).max().item() == 0.0
    assert grad == [False, True]
    with pytest.raises(PluginError, match="expects a function"):
        function_method(AttributionMethod)


def test_metric_by_import_path(tmp_path, monkeypatch):
    mod = _write_module(tmp_path, monkeypatch)
    assert METRICS.get(f"{mod}:MeanMask").name == "mean_mask"
    with pytest.raises(PluginError) as exc:
        METRICS.get(f"{mod}:NotAMetric")
    assert str(exc.value) == (f"metric '{mod}:NotAMetric' must be an attrbench Metric "
                              f"subclass, got class {mod}.NotAMetric")
    with pytest.raises(PluginError, match="must be an attrbench Metric subclass, got function"):
        METRICS.get(f"{mod}:ramp")


@pytest.mark.parametrize("attr, message", [
    ("NotAMetric", ("method '{spec}' must be an attrbench AttributionMethod subclass or a "
                   "function f(model, images, targets) -> maps, got class {mod}.NotAMetric")),
    ("NUMBER", ("method '{spec}' must be an attrbench AttributionMethod subclass or a "
               "function f(model, images, targets) -> maps, got int 3")),
    ("Missing", "method '{spec}': module '{mod}' has no attribute 'Missing'"),
])
def test_import_path_errors(tmp_path, monkeypatch, attr, message):
    mod = _write_module(tmp_path, monkeypatch)
    spec = f"{mod}:{attr}"
    with pytest.raises(PluginError) as exc:
        METHODS.resolve_list(f"gradcam,{spec}")
    assert str(exc.value) == message.format(spec=spec, mod=mod)
    assert spec not in METHODS


def test_module_not_found_and_broken_module(tmp_path, monkeypatch):
    with pytest.raises(PluginError) as exc:
        METHODS.canonical("no_such_pkg_zz.sal:F")
    assert str(exc.value) == ("method 'no_such_pkg_zz.sal:F': module 'no_such_pkg_zz.sal' not "
                              "found (is it installed, or its folder on PYTHONPATH?)")
    mod = _write_module(tmp_path, monkeypatch, "import no_such_dependency_zz\n")
    with pytest.raises(PluginError, match=rf"method '{mod}:F': importing module '{mod}' failed: "
                                          r"ModuleNotFoundError: No module named "
                                          r"'no_such_dependency_zz'"):
        METHODS.get(f"{mod}:F")
    # not an import path: the usual did-you-mean error
    with pytest.raises(UnknownNameError, match="Unknown method 'grad cam:x'"):
        METHODS.canonical("grad cam:x")


def test_cli_errors_are_one_line(tmp_path, monkeypatch, capsys):
    mod = _write_module(tmp_path, monkeypatch)
    cases = [
        (["--methods", f"{mod}:NUMBER"], f"method '{mod}:NUMBER' must be an attrbench"),
        (["--methods", "gradcam", "--metrics", f"{mod}:ramp"],
         f"metric '{mod}:ramp' must be an attrbench Metric subclass"),
        (["--methods", "nope_zz_mod:f"], "module 'nope_zz_mod' not found"),
        (["--methods", f"{mod}:ramp", "--method-option", f"{mod}:ramp.bogus=1"],
         (f"method '{mod}:ramp': function {mod}:ramp takes no option 'bogus' (its options: "
         f"gain)")),
    ]
    for args, needle in cases:
        rc = main(["run", "--limit", "2", "--out", str(tmp_path / "r"), "--no-progress", *args])
        err = capsys.readouterr().err
        assert rc == 2, err
        # (the first run of a session may also draw the synthetic split's progress bar)
        lines = [ln for ln in err.splitlines() if "attrbench: error:" in ln]
        assert len(lines) == 1 and needle in lines[0] and "Traceback" not in err, err
    assert not (tmp_path / "r").exists()


# ------------------------------------------------------------------------------ options
@pytest.mark.parametrize("item, expected", [
    ("rise.num_masks=500", {"rise": {"num_masks": 500}}),
    ("constant_0.5.value=0.2", {"constant_0.5": {"value": 0.2}}),
    ("mypkg.saliency:MyMethod.sigma=2.5", {"mypkg.saliency:MyMethod": {"sigma": 2.5}}),
    ("mypkg.saliency:My.Nested.k=a.b=c", {"mypkg.saliency:My.Nested": {"k": "a.b=c"}}),
    ("acme.sal.layer=\"x\"", {"acme.sal": {"layer": "x"}}),
])
def test_kv_options_split_at_last_dot(item, expected):
    assert _kv_options([item], "method") == expected


@pytest.mark.parametrize("item", ["rise=5", "rise.=5", ".k=1", "rise.num-masks=5", "rise.k"])
def test_kv_options_refuses_malformed(item):
    with pytest.raises(ValueError, match=rf"--method-option expects NAME.KEY=VALUE .*'{item}'"):
        _kv_options([item], "method")


# ------------------------------------------------------------------------------ entry points
def test_entry_points_listed_lazily_and_used_by_name(tmp_path, monkeypatch, capsys):
    mod = _write_module(tmp_path, monkeypatch)
    _write_dist(tmp_path, monkeypatch, mod,
                methods={"acme_ramp": f"{mod}:ramp", "gradcam": f"{mod}:Blob",
                         "acme_broken": f"{mod}:NUMBER"},
                metrics={"acme_mean": f"{mod}:MeanMask"})
    with pytest.warns(RuntimeWarning, match="method plugin 'gradcam' .* ignored: the name is "
                                            "taken by 'gradcam'"):
        assert main(["list", "methods"]) == 0
    out = capsys.readouterr().out
    assert f"acme_ramp                plugin {mod}:ramp (from acme-plugin)" in out
    assert mod not in sys.modules  # listed without importing the plugin
    assert METHODS.get("gradcam").__module__ == "attrbench.methods.cam"  # built-in wins
    assert "acme_ramp" not in METHODS.resolve_list(None)  # never in the default selection
    assert METHODS.canonical("ACME-ramp") == "acme_ramp" and METHODS.is_plugin("acme_ramp")
    assert issubclass(METHODS.get("acme_ramp"), FunctionMethod)
    assert METHODS.get("acme_ramp").name == "acme_ramp"
    with pytest.raises(PluginError, match=r"method 'acme_broken' must be .* got int 3"):
        METHODS.get("acme_broken")
    assert main(["list", "metrics"]) == 0
    out = capsys.readouterr().out
    assert "acme_mean                    ↑  mean of the merged mask  [off by default]" in out


def test_broken_entry_point_metric_does_not_hide_the_others(tmp_path, monkeypatch, capsys):
    mod = _write_module(tmp_path, monkeypatch)
    _write_dist(tmp_path, monkeypatch, mod, methods={},
                metrics={"acme_bad": f"{mod}:NotAMetric"})
    assert main(["list", "metrics"]) == 0
    out = capsys.readouterr().out
    assert "mean_f1" in out
    assert (f"acme_bad                     ?  failed to load: metric 'acme_bad' must be an "
            f"attrbench Metric subclass, got class {mod}.NotAMetric") in out


def test_entry_point_run_records_name_and_options(tmp_path, monkeypatch):
    mod = _write_module(tmp_path, monkeypatch)
    _write_dist(tmp_path, monkeypatch, mod, methods={"acme_ramp": f"{mod}:ramp"},
                metrics={"acme_mean": f"{mod}:MeanMask"})
    out = _run(tmp_path, "--methods", f"acme-ramp,{mod}:Blob,{mod}:wrong_shape,"
               f"{mod}:not_a_tensor", "--metrics", "mean_f1,acme_mean",
               "--method-option", "acme_ramp.gain=2", "--method-option", f"{mod}:Blob.side=6")
    assert {c["gain"] for c in sys.modules[mod].CALLS} == {2}
    cfg = json.loads((out / "config.json").read_text())["config"]
    assert list(cfg["methods"]) == ["acme_ramp", f"{mod}:Blob", f"{mod}:wrong_shape",
                                    f"{mod}:not_a_tensor"]
    ramp = cfg["methods"]["acme_ramp"]
    assert ramp["name"] == "acme_ramp" and ramp["options"] == {"gain": 2}
    assert ramp["function"] == f"{mod}:ramp" and ramp["needs_gradients"] is True
    blob = cfg["methods"][f"{mod}:Blob"]
    assert blob["name"] == f"{mod}:Blob" and blob["options"] == {"side": 6}
    assert blob["class"] == f"{mod}.Blob"
    assert cfg["metrics"]["acme_mean"]["name"] == "mean_mask"
    rows = _rows(out)
    ok = {(r["method"], r["status"]) for r in rows}
    assert ok == {("acme_ramp", "ok"), (f"{mod}:Blob", "ok"), (f"{mod}:wrong_shape", "failed"),
                  (f"{mod}:not_a_tensor", "failed")}
    blob_rows = [r for r in rows if r["method"] == f"{mod}:Blob"]
    assert len(blob_rows) == 4
    # the merged mask is the 6 x 6 square of a 64 x 64 image
    assert all(abs(r["scores"]["acme_mean"] - 36 / 64 ** 2) < 1e-6 for r in blob_rows)
    errors = {r["method"]: r["error"] for r in rows if r["status"] == "failed"}
    # one (image, class) map per ground-truth class of the image: B is the number of pairs
    assert re.fullmatch(
        rf"method raised ValueError: saliency function {mod}:wrong_shape returned shape "
        rf"\((\d), 3, 64, 64\), expected \(B, H, W\) = \(\1, 64, 64\) or \(B, 1, H, W\)",
        errors[f"{mod}:wrong_shape"]), errors
    assert re.fullmatch(
        rf"method raised TypeError: saliency function {mod}:not_a_tensor returned a list, "
        rf"expected a torch.Tensor of shape \(B, H, W\) = \(\d, 64, 64\)",
        errors[f"{mod}:not_a_tensor"]), errors


# ------------------------------------------------------------------------------ the example
def test_example_runs_end_to_end_through_the_cli(tmp_path, monkeypatch, capsys):
    monkeypatch.syspath_prepend(str(EXAMPLES))
    out = _run(tmp_path, "--preset", "synthetic", "--methods", "center,my_method:grad_x_input",
               "--metrics", "mean_f1,pointing_game",
               "--method-option", "my_method:grad_x_input.smooth=3")
    printed = capsys.readouterr().out
    assert "my_method:grad_x_input" in printed
    rows = [r for r in _rows(out) if r["method"] == "my_method:grad_x_input"]
    assert len(rows) == 4 and all(r["status"] == "ok" for r in rows), rows
    assert all(0 <= r["scores"]["mean_f1"] <= 1 for r in rows)
    cfg = json.loads((out / "config.json").read_text())["config"]
    assert cfg["methods"]["my_method:grad_x_input"]["options"] == {"smooth": 3}
    summary = json.loads((out / "summary.json").read_text())
    assert summary["results"]["my_method:grad_x_input"]["metrics"]["mean_f1"]["n"] == 4
