"""Binding optional settings to environment variables without reading their values."""

from __future__ import annotations

import os

import dagster as dg


def optional_env(name: str) -> dg.EnvVar | None:
    """`dg.EnvVar(name)` when the variable is set, else None (the field keeps its default).

    Only the variable's presence is looked at here; its value is resolved by Dagster when the
    resource is built, so it never appears in the definitions or the UI.
    """
    return dg.EnvVar(name) if name in os.environ else None
