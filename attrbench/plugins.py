"""Plugins: attribution methods and metrics that live outside attrbench.

A method or metric is named in three ways (``attrbench run --methods ...``, ``--metrics ...``):

* by registry name (the built-ins, ``attrbench list methods``);
* by import path ``package.module:Attr``, where ``Attr`` is an :class:`AttributionMethod`
  subclass, a plain saliency function (wrapped by :func:`function_method`) or, for metrics, a
  :class:`Metric` subclass; the module must be importable (installed, or its folder on
  ``PYTHONPATH``);
* by the name of an installed package's entry point in the group ``attrbench.methods`` or
  ``attrbench.metrics``; entry points are read the first time a name is looked up or the names
  are listed, and imported only when used.

An import path is its own registry name: it keys the run's results, its options
(``--method-option package.module:Attr.key=value``) and the run configuration. Entry-point
plugins are listed by ``attrbench list`` but never join a run's default selection.

The saliency-function wrapper (:func:`function_method`) and its choices:

* ``f(model, images, targets, **options) -> maps`` with images (B, 3, H, W), targets (B,) class
  ids and maps (B, H, W) or (B, 1, H, W); ``--method-option`` values are passed as keyword
  arguments (checked against the function's signature when the method is built).
* ``needs_gradients=True``, ``black_box=False``: a function is a black box to attrbench, so it is
  assumed that it may back-propagate (gradients are enabled while it runs) and it is not
  claimed to use only forward passes.
* ``rescale=True``: each returned map is min-max rescaled to [0, 1] on its own (a constant map
  becomes all 0), the rule of the base class's final rescale; an image's merged map is then the
  pixel-wise maximum of its class maps (merge order ``"rescale_then_max"``). With
  ``rescale=False`` the maps are used as returned and must already lie in [0, 1].
* ``stochastic=False``: the function receives no seeds; a method that draws random numbers
  should subclass :class:`AttributionMethod` (``stochastic = True``) and use the per-image seeds.

Other flags: ``function_method(f, needs_gradients=False, rescale=False, ...)`` in the plugin's own
module returns an :class:`AttributionMethod` subclass; name that class instead of the function.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator
from typing import Any

from torch import Tensor

from .interfaces import AttributionMethod, Metric, minmax_rescale
from .registry import PluginError

METHOD_GROUP = "attrbench.methods"
METRIC_GROUP = "attrbench.metrics"

__all__ = [
    "METHOD_GROUP",
    "METRIC_GROUP",
    "FunctionMethod",
    "PluginError",
    "entry_point_source",
    "function_method",
    "method_plugin",
    "metric_plugin",
]


def _qualname(obj: Any) -> str:
    return f"{getattr(obj, '__module__', '?')}:{getattr(obj, '__qualname__', repr(obj))}"


class FunctionMethod(AttributionMethod):
    """Base of the classes :func:`function_method` makes; ``function`` is the wrapped callable."""

    name = "function"
    needs_gradients = True
    black_box = False
    stochastic = False
    merge = "rescale_then_max"
    function: Callable[..., Any]
    rescale_maps: bool = True

    def __init__(self, model, **options: Any) -> None:
        super().__init__(model, **options)
        fn = type(self).function
        try:
            sig = inspect.signature(fn)
        except (TypeError, ValueError):  # a builtin without a signature: accept any options
            return
        try:
            sig.bind(model, None, None, **options)
        except TypeError:
            params = [p.name for p in list(sig.parameters.values())[3:]
                      if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
            has_kwargs = any(p.kind is p.VAR_KEYWORD for p in sig.parameters.values())
            if not has_kwargs:
                bad = sorted(set(options) - set(params))
                if bad:
                    raise TypeError(
                        f"function {_qualname(fn)} takes no option {', '.join(map(repr, bad))} "
                        f"(its options: {', '.join(params) or 'none'})") from None
            raise TypeError(f"function {_qualname(fn)} must accept (model, images, targets) "
                            f"and the options {sorted(options)}; its signature is {sig}") from None

    def _attribute(self, images: Tensor, targets: Tensor, *, gt_masks: Tensor | None,
                   seeds: Tensor) -> Tensor:
        out = type(self).function(self.model, images, targets, **self.options)
        b, _, h, w = images.shape
        if not isinstance(out, Tensor):
            raise TypeError(f"saliency function {_qualname(type(self).function)} returned a "
                            f"{type(out).__name__}, expected a torch.Tensor of shape "
                            f"(B, H, W) = {(b, h, w)}")
        if out.ndim == 4 and out.shape[1] == 1:
            out = out[:, 0]
        if tuple(out.shape) != (b, h, w):
            raise ValueError(f"saliency function {_qualname(type(self).function)} returned shape "
                             f"{tuple(out.shape)}, expected (B, H, W) = {(b, h, w)} or "
                             f"(B, 1, H, W)")
        out = out.detach().to(device=images.device, dtype=images.dtype)
        return minmax_rescale(out) if self.rescale_maps else out

    def describe(self) -> dict[str, Any]:
        d = super().describe()
        d["function"] = _qualname(type(self).function)
        d["rescale"] = self.rescale_maps
        return d


def function_method(fn: Callable[..., Any], *, name: str | None = None,
                    needs_gradients: bool = True, black_box: bool = False,
                    rescale: bool = True) -> type[FunctionMethod]:
    """An :class:`AttributionMethod` subclass that calls ``fn(model, images, targets, **options)``.

    See the module docstring for the defaults and why they were chosen.

    Example:
        >>> import torch
        >>> def center(model, images, targets):
        ...     return images.new_ones(images.shape[0], *images.shape[2:])
        >>> Center = function_method(center, needs_gradients=False)
        >>> Center(torch.nn.Linear(1, 1)).describe()["needs_gradients"]
        False
    """
    if isinstance(fn, type) or not callable(fn):
        raise PluginError(f"function_method expects a function, got {fn!r}")
    attrs = {
        "name": name or getattr(fn, "__name__", "function"),
        "function": staticmethod(fn),
        "needs_gradients": bool(needs_gradients),
        "black_box": bool(black_box),
        "rescale_maps": bool(rescale),
        "__doc__": getattr(fn, "__doc__", None) or FunctionMethod.__doc__,
        "__module__": FunctionMethod.__module__,
    }
    return type(f"FunctionMethod[{attrs['name']}]", (FunctionMethod,), attrs)


def _named(cls: type, base: type, name: str) -> type:
    """``cls`` itself, or a subclass named ``name`` when ``cls`` keeps the base's placeholder
    name (so that messages and results do not call it ``"base"``)."""
    if cls.name != base.name:
        return cls
    return type(cls.__name__, (cls,), {"name": name, "__module__": cls.__module__,
                                       "__qualname__": cls.__qualname__,
                                       "__doc__": cls.__doc__})


def _describe_obj(obj: Any) -> str:
    if isinstance(obj, type):
        return f"class {obj.__module__}.{obj.__qualname__}"
    return f"{type(obj).__name__} {obj!r}"[:120]


def method_plugin(name: str, obj: Any) -> type[AttributionMethod]:
    """An imported plugin object as a method class (a function is wrapped)."""
    if isinstance(obj, type) and issubclass(obj, AttributionMethod):
        return _named(obj, AttributionMethod, name)
    if isinstance(obj, type) or not callable(obj):
        raise PluginError(f"method '{name}' must be an attrbench AttributionMethod subclass or a "
                          f"function f(model, images, targets) -> maps, got "
                          f"{_describe_obj(obj)}")
    return function_method(obj, name=name)


def metric_plugin(name: str, obj: Any) -> type[Metric]:
    """An imported plugin object as a metric class (it must be a :class:`Metric` subclass)."""
    if not (isinstance(obj, type) and issubclass(obj, Metric)):
        raise PluginError(f"metric '{name}' must be an attrbench Metric subclass, got "
                          f"{_describe_obj(obj)}")
    return _named(obj, Metric, name)


def entry_point_source(group: str) -> Callable[[], Iterator[tuple[str, str, dict[str, Any]]]]:
    """A registry's ``entry_points`` source: ``(name, "module:attr", meta)`` of every entry
    point of ``group`` in the installed distributions (read when called, nothing imported)."""

    def source() -> Iterator[tuple[str, str, dict[str, Any]]]:
        from importlib.metadata import entry_points

        for ep in sorted(entry_points(group=group), key=lambda e: e.name):
            dist = getattr(ep, "dist", None)
            dist_name = getattr(dist, "name", None) or "an installed package"
            target = f"{ep.module}:{ep.attr}" if ep.attr else ep.module
            yield ep.name, target, {"summary": f"plugin {target} (from {dist_name})",
                                    "default": False, "distribution": dist_name}

    return source
