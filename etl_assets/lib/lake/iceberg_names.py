"""What the lake's Iceberg tables are called in their catalog; no pyiceberg needed to know it."""

from __future__ import annotations

from collections.abc import Sequence


def table_identifier(asset_path: Sequence[str]) -> tuple[str, str]:
    """The Iceberg (namespace, table) of an asset, e.g. `raw_shop.sales__orders`.

    `raw/shop/sales/orders` is the table `sales__orders` in the namespace `raw_shop`.

    One namespace per layer and source (`raw_shop`, `curated_shop`); the rest of the key
    names the table.
    """
    path = list(asset_path)
    if len(path) >= 3:
        return "_".join(path[:2]), "__".join(path[2:])
    if len(path) == 2:
        return path[0], path[1]
    return "default", path[0]


def qualified(identifier: tuple[str, str]) -> str:
    """`namespace.table`."""
    return ".".join(identifier)
