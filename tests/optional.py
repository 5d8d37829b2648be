"""Optional test dependencies: skip outside CI, fail under ``CI=true``.

Every package a test imports is in the ``test`` extra (``pip install -e '.[test]'``), so on a
complete install nothing here skips. Where a library or program is missing anyway, a developer's
run skips the test with the install command, and CI (``CI=true``, see ``.ci/run``) fails it, so
a missing dependency can never hide a test. ``conftest.py`` turns any other skip under CI into a
failure too.
"""

from __future__ import annotations

import importlib
import os
import shutil
from types import ModuleType

import pytest


def in_ci() -> bool:
    """True under ``CI=true`` (also ``1``/``yes``), as set by ``.ci/run`` and CI services."""
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def missing(message: str):
    """Skip the calling test with ``message``, or fail it under CI."""
    if in_ci():
        pytest.fail(f"CI=true: {message}", pytrace=False)
    pytest.skip(message)


def require_module(name: str, install: str = "pip install -e '.[test]'") -> ModuleType:
    """Import ``name`` or skip/fail the test (see :func:`missing`)."""
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        reason = f"{name} is not importable ({exc}); install it: {install}"
    missing(reason)
    raise AssertionError("not reached")


def require_executable(*names: str, install: str) -> str:
    """The path of the first of ``names`` found on PATH, or skip/fail the test."""
    for n in names:
        path = shutil.which(n)
        if path:
            return path
    missing(f"none of {', '.join(names)} is on PATH; install it: {install}")
    raise AssertionError("not reached")
