"""Loading a table's Polars transform from its dotted path."""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable

import polars as pl

from etl_assets.lib.errors import TransformError

Transform = Callable[[pl.LazyFrame], pl.LazyFrame]


def load_transform(dotted_path: str) -> Transform:
    """The function named `package.module:function` (or `package.module.function`).

    The function must take exactly one positional argument, the source rows as a
    `pl.LazyFrame`, and return a `pl.LazyFrame`.
    """
    module_name, sep, attribute = dotted_path.partition(":")
    if not sep:
        module_name, _, attribute = dotted_path.rpartition(".")
    if not module_name or not attribute:
        raise TransformError(
            f"{dotted_path!r} is not a dotted path like 'my_package.transforms:clean_orders'"
        )
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise TransformError(f"cannot import module {module_name!r}: {error}") from error
    function = getattr(module, attribute, None)
    if function is None:
        raise TransformError(f"module {module_name!r} has no attribute {attribute!r}")
    if not callable(function):
        raise TransformError(f"{dotted_path!r} is not callable")
    try:
        signature = inspect.signature(function)
        signature.bind(pl.LazyFrame())
    except (TypeError, ValueError) as error:
        raise TransformError(
            f"{dotted_path!r} must accept one argument (a polars LazyFrame): {error}"
        ) from error
    return checked_transform(function, dotted_path)


def checked_transform(function: Callable[[pl.LazyFrame], object], name: str) -> Transform:
    """Wrap `function` so that a result other than a LazyFrame fails with a clear message."""

    def apply(frame: pl.LazyFrame) -> pl.LazyFrame:
        result = function(frame)
        if not isinstance(result, pl.LazyFrame):
            raise TransformError(
                f"transform {name!r} returned {type(result).__name__}, expected a polars "
                "LazyFrame (use .lazy() and keep the plan lazy so rows stream)"
            )
        return result

    apply.__name__ = getattr(function, "__name__", name)
    apply.__doc__ = function.__doc__
    return apply
