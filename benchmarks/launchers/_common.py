"""Helpers shared by the launcher scripts (run as scripts, so imported by name)."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any


def load_app(target: str) -> Callable[..., Any]:
    """``"module:attr"`` -> the WSGI callable (``attr`` defaults to ``app``)."""
    module_name, _, attr = target.partition(":")
    app: Callable[..., Any] = getattr(importlib.import_module(module_name), attr or "app")
    return app
