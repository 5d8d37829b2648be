"""A small generic registry: the one name table for methods, metrics, models and presets.

Entries are either objects registered directly (with the :meth:`Registry.register` decorator or
call) or *lazy* ``"package.module:Attr"`` strings that are imported on first use, so that
``attrbench --help`` and ``attrbench list`` never import heavy modules.

A registry built with an ``adapt`` function also takes *plugins* (:mod:`attrbench.plugins`):
any ``"package.module:Attr"`` import path is a valid name, imported and checked when it is
looked up, and entries from an ``entry_points`` source (installed packages) are registered the
first time a name is looked up or the names are listed. Plugins never join the default
selection (:meth:`Registry.resolve_list` of ``None``/``"all"``): they run when named.

Example:
    >>> reg = Registry("widget")
    >>> @reg.register("spanner", aliases=["wrench"])
    ... class Spanner:
    ...     pass
    >>> reg.get("wrench") is Spanner
    True
    >>> reg.get("spaner")
    Traceback (most recent call last):
    ...
    attrbench.registry.UnknownNameError: Unknown widget 'spaner'. Did you mean: spanner? Available: spanner
"""

from __future__ import annotations

import difflib
import importlib
import re
import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class RegistryError(ValueError):
    """Base class of registry errors (a ``ValueError`` so callers can treat it as bad input)."""


class UnknownNameError(RegistryError, KeyError):
    """Raised for a name that is not registered; the message suggests close matches."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable.
        return str(self.args[0])


class PluginError(RegistryError):
    """A plugin (import path or entry point) that cannot be imported or has the wrong type."""


_IDENT = r"[A-Za-z_][A-Za-z0-9_]*"
_IMPORT_PATH = re.compile(rf"^{_IDENT}(\.{_IDENT})*:{_IDENT}(\.{_IDENT})*$")


def is_import_path(name: str) -> bool:
    """Whether ``name`` looks like ``package.module:Attr`` (``Attr`` may be dotted)."""
    return bool(_IMPORT_PATH.match(name))


def import_object(spec: str, what: str) -> Any:
    """Import ``package.module:Attr``; one-line :class:`PluginError` naming what is missing.

    ``what`` starts the message (e.g. ``"method 'mypkg.sal:f'"``).
    """
    if ":" not in spec:
        raise PluginError(f"{what}: expected 'package.module:Attr', got '{spec}'")
    module_name, attr = spec.split(":", 1)
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        missing = exc.name or ""
        if missing and (module_name == missing or module_name.startswith(missing + ".")):
            raise PluginError(
                f"{what}: module '{module_name}' not found (is it installed, or its folder on "
                f"PYTHONPATH?)") from None
        raise PluginError(f"{what}: importing module '{module_name}' failed: "
                          f"{type(exc).__name__}: {exc}") from None
    except Exception as exc:  # noqa: BLE001 - any error of a third-party module's import
        raise PluginError(f"{what}: importing module '{module_name}' failed: "
                          f"{type(exc).__name__}: {exc}") from None
    obj: Any = module
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise PluginError(f"{what}: module '{module_name}' has no attribute "
                              f"'{attr}'") from None
    return obj


@dataclass
class _Entry:
    name: str
    target: Any  # an object, or a "module:attr" string for lazy entries
    aliases: tuple[str, ...] = ()
    meta: dict[str, Any] = field(default_factory=dict)


class Registry(Generic[T]):
    """Maps names (and aliases) to objects, optionally lazily imported.

    Args:
        kind: the singular noun used in messages (``"method"``, ``"metric"``, ...).
        base: if given, every resolved entry must be a subclass (or instance) of it.
        normalize: names are compared after lower-casing and mapping ``-`` to ``_`` when True,
            so ``grad-cam`` and ``grad_cam`` are the same name; the canonical spelling is kept.
        adapt: ``adapt(name, obj) -> obj`` turns an imported plugin object into a valid entry
            (or raises :class:`PluginError`). When given, ``package.module:Attr`` import paths
            are accepted as names; an import path is its own canonical name.
        entry_points: a callable returning ``(name, "module:Attr", meta)`` triples (installed
            plugins); called once, the first time a name misses or the names are listed.
    """

    def __init__(self, kind: str, base: type | None = None, normalize: bool = True, *,
                 adapt: Callable[[str, Any], Any] | None = None,
                 entry_points: Callable[[], Iterable[tuple[str, str, dict[str, Any]]]] | None
                 = None) -> None:
        self.kind = kind
        self.base = base
        self._normalize = normalize
        self._entries: dict[str, _Entry] = {}
        self._lookup: dict[str, str] = {}
        self._resolved: dict[str, Any] = {}
        self._prefix_factories: dict[str, Callable[[str], Any]] = {}
        self._adapt = adapt
        self._entry_point_source = entry_points
        self._entry_points_loaded = False
        self._imported: dict[str, Any] = {}  # import-path names already imported and checked

    # ------------------------------------------------------------------ registration
    def _key(self, name: str) -> str:
        return name.lower().replace("-", "_") if self._normalize else name

    def _add_key(self, key_name: str, canonical: str) -> None:
        key = self._key(key_name)
        if key in self._lookup:
            raise RegistryError(
                f"Duplicate {self.kind} name '{key_name}': already registered as "
                f"'{self._lookup[key]}'"
            )
        self._lookup[key] = canonical

    def register(
        self,
        name: str,
        target: Any = None,
        *,
        aliases: tuple[str, ...] | list[str] = (),
        **meta: Any,
    ) -> Any:
        """Register ``target`` under ``name``; usable as a decorator when ``target`` is None.

        ``target`` may be a ``"module:attr"`` string, resolved on first :meth:`get`.
        Extra keyword arguments are stored as metadata (e.g. a short description).
        """
        if target is None:

            def deco(obj: Any) -> Any:
                self.register(name, obj, aliases=aliases, **meta)
                return obj

            return deco
        if isinstance(target, str) and ":" not in target:
            raise RegistryError(
                f"Lazy {self.kind} entry '{name}' must look like 'package.module:Attr', "
                f"got '{target}'"
            )
        self._add_key(name, name)
        for alias in aliases:
            try:
                self._add_key(alias, name)
            except RegistryError:
                del self._lookup[self._key(name)]
                raise
        self._entries[name] = _Entry(name, target, tuple(aliases), dict(meta))
        if not isinstance(target, str):
            self._check_base(name, target)
            self._resolved[name] = target
        return target

    def unregister(self, name: str) -> Any:
        """Remove ``name`` (or the entry an alias names) with all its aliases; return its target.

        Meant for tests and plugins that register an entry temporarily.
        """
        canonical = self.canonical(name)
        if canonical not in self._entries:  # a prefix family name such as "captum:X"
            raise UnknownNameError(self._unknown_message(name))
        entry = self._entries.pop(canonical)
        for key in [k for k, v in self._lookup.items() if v == canonical]:
            del self._lookup[key]
        self._resolved.pop(canonical, None)
        return entry.target

    def register_prefix(self, prefix: str, factory: Callable[[str], Any]) -> None:
        """Register a family of names ``prefix:<suffix>`` resolved by ``factory(suffix)``.

        Used for adapters such as ``captum:IntegratedGradients``.
        """
        self._prefix_factories[prefix.lower()] = factory

    # ------------------------------------------------------------------ lookup
    def canonical(self, name: str) -> str:
        """The canonical name for ``name`` or an alias of it.

        An import path (registries with ``adapt``) is its own canonical name; it is imported and
        checked here, so that a bad one fails before any work with a :class:`PluginError`.
        """
        if ":" in name and name.split(":", 1)[0].lower() in self._prefix_factories:
            return name
        key = self._key(name)
        if key not in self._lookup:
            self._load_entry_points()  # an installed plugin's name, read on the first miss
        if key in self._lookup:
            return self._lookup[key]
        if self._adapt is not None and is_import_path(name.strip()):
            self._import_plugin(name.strip())
            return name.strip()
        raise UnknownNameError(self._unknown_message(name))

    def _import_plugin(self, spec: str) -> Any:
        if spec not in self._imported:
            what = f"{self.kind} '{spec}'"
            obj = import_object(spec, what)
            assert self._adapt is not None
            self._imported[spec] = self._adapt(spec, obj)
        return self._imported[spec]

    # ------------------------------------------------------------------ entry points
    def _load_entry_points(self) -> bool:
        """Register the entry-point plugins (once); True when this call registered any."""
        if self._entry_points_loaded or self._entry_point_source is None:
            return False
        self._entry_points_loaded = True
        added = False
        for name, target, meta in self._entry_point_source():
            if self._key(name) in self._lookup:
                taken = self._lookup[self._key(name)]
                warnings.warn(f"{self.kind} plugin '{name}' ({target}) ignored: the name is "
                              f"taken by '{taken}'", RuntimeWarning, stacklevel=3)
                continue
            try:
                self.register(name, target, **{"plugin": True, **meta})
            except RegistryError as exc:
                warnings.warn(f"{self.kind} plugin '{name}' ignored: {exc}", RuntimeWarning,
                              stacklevel=3)
                continue
            added = True
        return added

    def forget_plugins(self) -> None:
        """Drop the entry-point plugins and imported import paths, so that the next lookup
        discovers them again (for tests, and after installing a package in a session)."""
        for name in [n for n, e in self._entries.items() if e.meta.get("plugin")]:
            self.unregister(name)
        self._imported.clear()
        self._entry_points_loaded = False

    def is_plugin(self, name: str) -> bool:
        """Whether ``name`` is an import path or an entry-point plugin (not a built-in)."""
        canonical = self.canonical(name)
        entry = self._entries.get(canonical)
        if entry is None:
            return canonical in self._imported
        return bool(entry.meta.get("plugin"))

    def _unknown_message(self, name: str) -> str:
        candidates = sorted(self._lookup)
        close = difflib.get_close_matches(self._key(name), candidates, n=3, cutoff=0.6)
        close_names = list(dict.fromkeys(self._lookup[c] for c in close))
        msg = f"Unknown {self.kind} '{name}'."
        if close_names:
            msg += f" Did you mean: {', '.join(close_names)}?"
        avail = ", ".join(self.names())
        if self._prefix_factories:
            avail += ", " + ", ".join(f"{p}:<Name>" for p in sorted(self._prefix_factories))
        return msg + f" Available: {avail}"

    def get(self, name: str) -> T:
        """Resolve ``name`` (or an alias) to the registered object, importing lazily."""
        if ":" in name:
            prefix, suffix = name.split(":", 1)
            if prefix.lower() in self._prefix_factories:
                return self._prefix_factories[prefix.lower()](suffix)
        canonical = self.canonical(name)
        if canonical in self._imported:
            return self._imported[canonical]
        if canonical not in self._resolved:
            entry = self._entries[canonical]
            target = entry.target
            if entry.meta.get("plugin") and self._adapt is not None:
                what = f"{self.kind} '{canonical}' (entry point {target})"
                self._resolved[canonical] = self._adapt(canonical, import_object(target, what))
                return self._resolved[canonical]
            module_name, attr = target.split(":", 1)
            try:
                module = importlib.import_module(module_name)
            except ImportError as exc:
                raise RegistryError(
                    f"{self.kind} '{canonical}' needs module '{module_name}', which failed to "
                    f"import: {exc}"
                ) from exc
            obj = module
            for part in attr.split("."):
                obj = getattr(obj, part)
            self._check_base(canonical, obj)
            self._resolved[canonical] = obj
        return self._resolved[canonical]

    def _check_base(self, name: str, obj: Any) -> None:
        if self.base is None:
            return
        ok = (isinstance(obj, type) and issubclass(obj, self.base)) or isinstance(obj, self.base)
        if not ok:
            raise RegistryError(
                f"{self.kind} '{name}' must be a {self.base.__name__}, got {obj!r}"
            )

    def meta(self, name: str) -> dict[str, Any]:
        """Metadata stored at registration (an import path has ``{"plugin": True}``)."""
        canonical = self.canonical(name)
        if canonical not in self._entries:
            return {"plugin": True} if canonical in self._imported else {}
        return dict(self._entries[canonical].meta)

    def aliases(self, name: str) -> tuple[str, ...]:
        entry = self._entries.get(self.canonical(name))
        return entry.aliases if entry is not None else ()

    def names(self) -> list[str]:
        """Canonical names, in registration order (entry-point plugins last)."""
        self._load_entry_points()
        return list(self._entries)

    def builtin_names(self) -> list[str]:
        """Canonical names without the entry-point plugins."""
        return [n for n, e in self._entries.items() if not e.meta.get("plugin")]

    def __contains__(self, name: object) -> bool:
        """Whether ``name`` resolves; an import path that fails to import is not contained."""
        if not isinstance(name, str):
            return False
        try:
            self.canonical(name)
        except RegistryError:
            return False
        return True

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self.names())

    def resolve_list(self, spec: str | list[str] | None) -> list[str]:
        """Parse ``"a,b"`` (or a list) into canonical names; ``None``/``"all"`` gives every
        built-in name (plugins run when named, so a default run does not depend on what
        happens to be installed)."""
        if spec is None or spec == "all" or spec == ["all"]:
            return self.builtin_names()
        items = [s.strip() for s in spec.split(",")] if isinstance(spec, str) else list(spec)
        items = [s for s in items if s]
        if not items:
            raise RegistryError(f"Empty list of {self.kind}s")
        out = [self.canonical(s) for s in items]
        return list(dict.fromkeys(out))
