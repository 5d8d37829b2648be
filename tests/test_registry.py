import pytest

import attrbench
from attrbench.catalog import METHODS, METRICS, PRESETS
from attrbench.interfaces import AttributionMethod
from attrbench.registry import Registry, RegistryError, UnknownNameError


def test_aliases_and_normalisation():
    reg = Registry("widget")
    reg.register("grad_cam", object(), aliases=["gc"])
    assert reg.canonical("Grad-CAM") == "grad_cam"
    assert reg.canonical("gc") == "grad_cam"
    assert "GC" in reg and "nope" not in reg


def test_did_you_mean_lists_available():
    with pytest.raises(UnknownNameError) as exc:
        METHODS.canonical("gradcm")
    msg = str(exc.value)
    assert msg.startswith("Unknown method 'gradcm'. Did you mean: gradcam")
    assert "Available:" in msg and "rise" in msg


def test_duplicate_names_and_aliases_refused():
    reg = Registry("widget")
    reg.register("a", object(), aliases=["b"])
    with pytest.raises(RegistryError, match="Duplicate"):
        reg.register("b", object())
    with pytest.raises(RegistryError, match="Duplicate"):
        reg.register("c", object(), aliases=["a"])
    assert "c" not in reg  # a failed registration leaves nothing behind


def test_lazy_entry_and_base_check():
    reg = Registry("method", base=AttributionMethod)
    reg.register("center", "attrbench.methods.sanity:Center")
    assert reg.get("center").__name__ == "Center"
    reg.register("notamethod", "attrbench.registry:Registry")
    with pytest.raises(RegistryError, match="must be a AttributionMethod"):
        reg.get("notamethod")
    with pytest.raises(RegistryError, match="module:Attr"):
        reg.register("bad", "no_colon_here")


def test_lazy_import_failure_is_readable():
    reg = Registry("method")
    reg.register("ghost", "attrbench.does_not_exist:Ghost")
    with pytest.raises(RegistryError, match="failed to import"):
        reg.get("ghost")


def test_public_api_lists_and_creates():
    assert "gradcam" in attrbench.list_methods()
    assert "mean_f1" in attrbench.list_metrics()
    assert "synthetic" in attrbench.list_presets()
    import torch

    m = attrbench.create_method("center", torch.nn.Linear(1, 1), sigma=0.3)
    assert m.options == {"sigma": 0.3}


def test_every_registered_name_resolves():
    for name in METHODS.names():
        assert issubclass(METHODS.get(name), AttributionMethod)
    for name in METRICS.names():
        cls = METRICS.get(name)
        assert cls.name == name, f"{cls} declares name {cls.name!r}, registered as {name!r}"
        assert cls.definition, f"metric {name} has no definition"
    for name in PRESETS.names():
        assert PRESETS.get(name).name == name
