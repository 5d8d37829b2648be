"""A small generic registry: the one name table for methods, metrics, models and presets.

Entries are either objects registered directly (with the :meth:`Registry.register` decorator or
call) or *lazy* ``"package.module:Attr"`` strings that are imported on first use, so that
``attrbench --help`` and ``attrbench list`` never import heavy modules.

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
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class RegistryError(ValueError):
    """Base class of registry errors (a ``ValueError`` so callers can treat it as bad input)."""


class UnknownNameError(RegistryError, KeyError):
    """Raised for a name that is not registered; the message suggests close matches."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable.
        return str(self.args[0])


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
    """

    def __init__(self, kind: str, base: type | None = None, normalize: bool = True) -> None:
        self.kind = kind
        self.base = base
        self._normalize = normalize
        self._entries: dict[str, _Entry] = {}
        self._lookup: dict[str, str] = {}
        self._resolved: dict[str, Any] = {}
        self._prefix_factories: dict[str, Callable[[str], Any]] = {}

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
        """The canonical name for ``name`` or an alias of it."""
        if ":" in name and name.split(":", 1)[0].lower() in self._prefix_factories:
            return name
        key = self._key(name)
        if key not in self._lookup:
            raise UnknownNameError(self._unknown_message(name))
        return self._lookup[key]

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
        if canonical not in self._resolved:
            target = self._entries[canonical].target
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
        """Metadata stored at registration."""
        return dict(self._entries[self.canonical(name)].meta)

    def aliases(self, name: str) -> tuple[str, ...]:
        return self._entries[self.canonical(name)].aliases

    def names(self) -> list[str]:
        """Canonical names, in registration order."""
        return list(self._entries)

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        try:
            self.canonical(name)
        except UnknownNameError:
            return False
        return True

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def resolve_list(self, spec: str | list[str] | None) -> list[str]:
        """Parse ``"a,b"`` (or a list) into canonical names; ``None``/``"all"`` gives every name."""
        if spec is None or spec == "all" or spec == ["all"]:
            return self.names()
        items = [s.strip() for s in spec.split(",")] if isinstance(spec, str) else list(spec)
        items = [s for s in items if s]
        if not items:
            raise RegistryError(f"Empty list of {self.kind}s")
        out = [self.canonical(s) for s in items]
        return list(dict.fromkeys(out))
