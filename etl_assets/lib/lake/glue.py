"""Registering the plain layout in the AWS Glue Data Catalog, so Athena reads it with no crawler.

Each asset becomes one Glue table over its partitions' objects (`etl_assets.lib.lake.layout`):

* **Names.** The database is the asset's source and the table the rest of its key:
  `raw/shop/sales/orders` is `shop.raw_sales_orders`, `curated/shop/order_payments` is
  `shop.curated_order_payments`; a two-part key `a/b` is `a.b`. These names are lower-cased and
  every character but `a-z`, `0-9` and `_` becomes `_` (Glue and Athena names allow no others);
  column names are lower-cased only, as Glue stores them. A database prefix keeps several lakes
  apart in one account. Each table records the asset it
  registers (`etl_assets.asset`) and is never replaced by another asset's, or by the same
  asset's in another lake: two keys that collapse to one name fail loudly instead.
* **Table.** External, Parquet (`ParquetHiveSerDe`), located at the asset's key prefix; its
  columns are the published file's Arrow schema in Hive types (below), each with the column's
  Postgres type as its comment; the partition column (`day`, `hour`, ... the `<name>` of the
  `<name>=<key>` directories) is a `string`. The table follows the latest file published:
  a new column is added, a retyped one changes type; a table that already says the same is not
  touched, so a rerun makes no new table version.
* **Partitions**, one of two ways (`GlueRegistration`):
  `partitions` registers each partition at its publish (BatchCreatePartition, or UpdatePartition
  when it exists and differs: reruns are idempotent); `projection` writes Athena partition
  projection properties on the table instead (`projection.<name>.type=date` with the grain's
  format, range from the first partition to `NOW+1DAYS` and interval, and
  `storage.location.template`), so no call per publish is needed. Projection needs time
  partitions of a standard grain (`DateProjection.for_grain`); an asset without them is
  registered per partition.

Arrow types and their Hive types, exactly as the file's footer gives them to a reader:

    bool -> boolean; int8/16/32/64 -> tinyint/smallint/int/bigint; uint8/16/32 -> smallint/int/
    bigint (the next wider signed type holds every value); float32/64 -> float/double;
    decimal(p,s) with p <= 38 -> decimal(p,s); string (also JSON) -> string; binary -> binary;
    date -> date; timestamp (any unit, with or without zone) -> timestamp; list<T> -> array<T>;
    struct<f: T, ...> -> struct<f:T,...>; map<K, V> -> map<K,V>; dictionary<V> -> V's type.

Types with **no Hive type** are `time` (Hive has none), decimals wider than 38 digits (Hive's
maximum), fixed-size binary (Postgres `uuid`), uint64, float16, durations, intervals, null,
any list, struct or map holding one of them, and structs with no fields or with a field name
other than letters, digits and `_` (the Hive type string cannot spell it). Such a column is
**left out of the table**: every other column reads as usual (Parquet readers resolve columns by
name), the table's parameter `etl_assets.columns_left_out` and the registration's message name
it, and declaring it `as: text` (or casting it in a curated asset) registers it as a `string`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Protocol

import botocore.exceptions
import pyarrow as pa

from etl_assets.lib.errors import GlueRegistrationError
from etl_assets.lib.lake.layout import PART_FILE_NAME, LakeLayout, path_segment
from etl_assets.lib.table.windows import Grain

PARQUET_SERDE = "org.apache.hadoop.hive.ql.io.parquet.serde.ParquetHiveSerDe"
PARQUET_INPUT_FORMAT = "org.apache.hadoop.hive.ql.io.parquet.MapredParquetInputFormat"
PARQUET_OUTPUT_FORMAT = "org.apache.hadoop.hive.ql.io.parquet.MapredParquetOutputFormat"
ASSET_PARAMETER = "etl_assets.asset"
"""Table parameter naming the asset a table registers."""
LEFT_OUT_PARAMETER = "etl_assets.columns_left_out"
"""Table parameter naming the file's columns that have no Hive type."""
LOCATION_TEMPLATE_PARAMETER = "storage.location.template"
PROJECTION_PREFIX = "projection."
HIVE_DECIMAL_MAX_PRECISION = 38
COMMENT_MAX_CHARS = 255
POSTGRES_TYPE_METADATA = b"postgres.type"

_GLUE_NAME_OUTSIDE = re.compile(r"[^a-z0-9_]")
_HIVE_FIELD_NAME = re.compile(r"^[A-Za-z0-9_]+$")


class GlueRegistration(StrEnum):
    """Whether and how the lake's assets are registered in Glue."""

    OFF = "off"
    PARTITIONS = "partitions"
    """A table per asset, and each partition registered when it is published."""
    PROJECTION = "projection"
    """A table per asset with Athena partition projection: no call per partition."""

    @classmethod
    def parse(cls, value: str) -> GlueRegistration:
        """The mode called `value`; raises ValueError listing the choices."""
        try:
            return cls(value.strip().lower())
        except ValueError:
            choices = ", ".join(m.value for m in cls)
            raise ValueError(f"glue_registration must be one of {choices}, got {value!r}") from None


def hive_type(data_type: pa.DataType) -> str | None:
    """The Hive (Glue, Athena) type of an Arrow type, or None when Hive has none (see above)."""
    while isinstance(data_type, pa.BaseExtensionType | pa.DictionaryType):
        data_type = (
            data_type.storage_type
            if isinstance(data_type, pa.BaseExtensionType)
            else data_type.value_type
        )
    for test, name in _PRIMITIVES:
        if test(data_type):
            return name
    if isinstance(
        data_type, pa.Decimal32Type | pa.Decimal64Type | pa.Decimal128Type | pa.Decimal256Type
    ):
        return _decimal(data_type.precision, data_type.scale)
    return _nested(data_type)


def _nested(data_type: pa.DataType) -> str | None:
    if isinstance(data_type, pa.MapType):
        key, item = hive_type(data_type.key_type), hive_type(data_type.item_type)
        return f"map<{key},{item}>" if key is not None and item is not None else None
    if isinstance(
        data_type,
        pa.ListType
        | pa.LargeListType
        | pa.FixedSizeListType
        | pa.ListViewType
        | pa.LargeListViewType,
    ):
        element = hive_type(data_type.value_type)
        return f"array<{element}>" if element is not None else None
    if isinstance(data_type, pa.StructType):
        return _struct(data_type)
    return None


_PRIMITIVES = (
    (pa.types.is_boolean, "boolean"),
    (pa.types.is_int8, "tinyint"),
    (pa.types.is_int16, "smallint"),
    (pa.types.is_int32, "int"),
    (pa.types.is_int64, "bigint"),
    (pa.types.is_uint8, "smallint"),
    (pa.types.is_uint16, "int"),
    (pa.types.is_uint32, "bigint"),
    (pa.types.is_float32, "float"),
    (pa.types.is_float64, "double"),
    (lambda t: pa.types.is_string(t) or pa.types.is_large_string(t), "string"),
    (pa.types.is_string_view, "string"),
    (lambda t: pa.types.is_binary(t) or pa.types.is_large_binary(t), "binary"),
    (pa.types.is_binary_view, "binary"),
    (pa.types.is_date, "date"),
    (pa.types.is_timestamp, "timestamp"),
)


def _decimal(precision: int, scale: int) -> str | None:
    if precision > HIVE_DECIMAL_MAX_PRECISION or not 0 <= scale <= precision:
        return None
    return f"decimal({precision},{scale})"


def _struct(data_type: pa.StructType) -> str | None:
    fields: list[str] = []
    for index in range(data_type.num_fields):
        field = data_type.field(index)
        field_type = hive_type(field.type)
        if field_type is None or not _HIVE_FIELD_NAME.match(field.name):
            return None
        fields.append(f"{field.name}:{field_type}")
    return f"struct<{','.join(fields)}>" if fields else None


@dataclass(frozen=True)
class GlueColumns:
    """A file's columns as a Glue table holds them, and those left out."""

    columns: tuple[Mapping[str, str], ...]
    """Glue `Column`s: Name (lower case), Type and, where the file says it, Comment."""
    left_out: tuple[tuple[str, str], ...]
    """(column, why) for every column that is not registered."""

    def describe_left_out(self) -> str:
        """`name (why); ...`, or '' when every column is registered."""
        return "; ".join(f"{name} ({why})" for name, why in self.left_out)


def glue_columns(schema: pa.Schema, partition_column: str | None = None) -> GlueColumns:
    """The Glue columns of a file's schema (the partition column is registered apart)."""
    columns: list[Mapping[str, str]] = []
    left_out: list[tuple[str, str]] = []
    taken = {partition_column} if partition_column is not None else set[str]()
    for field in schema:
        name = field.name.lower()
        column_type = hive_type(field.type)
        if column_type is None:
            left_out.append((field.name, f"{field.type}: no Hive type"))
            continue
        if name in taken:
            left_out.append((field.name, f"its lower-case name {name!r} is taken"))
            continue
        taken.add(name)
        column = {"Name": name, "Type": column_type}
        postgres_type = (field.metadata or {}).get(POSTGRES_TYPE_METADATA)
        if postgres_type:
            column["Comment"] = postgres_type.decode()[:COMMENT_MAX_CHARS]
        columns.append(column)
    return GlueColumns(tuple(columns), tuple(left_out))


def glue_name(text: str) -> str:
    """`text` as a Glue database, table or column name: lower case, `[a-z0-9_]` only."""
    return _GLUE_NAME_OUTSIDE.sub("_", text.lower())


def glue_table_name(asset_path: Sequence[str], database_prefix: str = "") -> tuple[str, str]:
    """(database, table) of an asset: its source, and the rest of its key (see above)."""
    if len(asset_path) < 2:
        raise ValueError(
            f"asset {'/'.join(asset_path)!r}: a Glue table needs an asset key of two or more "
            "parts (<layer>/<source>/<name...> or <database>/<table>); rename the asset or turn "
            "Glue registration off"
        )
    if len(asset_path) == 2:
        database, table = asset_path
    else:
        database, table = asset_path[1], "_".join([asset_path[0], *asset_path[2:]])
    return glue_name(database_prefix + database), glue_name(table)


_STRFTIME_TO_JAVA = {"%Y": "yyyy", "%m": "MM", "%d": "dd", "%H": "HH", "%M": "mm", "%S": "ss"}
_STRFTIME_PARTS = re.compile(r"%.|[A-Za-z]+|[^%A-Za-z]+")


def java_date_format(key_format: str) -> str | None:
    """The Java `DateTimeFormatter` pattern of a `strftime` format, or None if it has none.

    Letters outside a directive are quoted (`%Y-%m-%dT%H` is `yyyy-MM-dd'T'HH`).
    """
    parts: list[str] = []
    for part in _STRFTIME_PARTS.findall(key_format):
        if part.startswith("%"):
            java = _STRFTIME_TO_JAVA.get(part)
            if java is None:
                return None
            parts.append(java)
        elif part.isalpha():
            parts.append(f"'{part}'")
        elif "'" in part:
            return None
        else:
            parts.append(part)
    return "".join(parts)


_PROJECTION_UNITS = {
    Grain.HOURLY: "HOURS",
    Grain.DAILY: "DAYS",
    Grain.WEEKLY: "WEEKS",
    Grain.MONTHLY: "MONTHS",
}
PROJECTION_RANGE_END = "NOW+1DAYS"
"""Athena evaluates NOW in UTC; a day more covers the keys of every timezone ahead of it."""


@dataclass(frozen=True)
class DateProjection:
    """Athena's `date` partition projection over an asset's time-partition keys."""

    java_format: str
    unit: str
    first_key: str

    @classmethod
    def for_grain(cls, grain: Grain, key_format: str, first_key: str) -> DateProjection | None:
        """The projection of keys `key_format` one `grain` apart from `first_key`, if any."""
        java_format = java_date_format(key_format)
        if java_format is None:
            return None
        return cls(java_format, _PROJECTION_UNITS[grain], first_key)

    def parameters(self, column: str, location_template: str) -> dict[str, str]:
        """The table properties that make Athena project `column`'s partitions."""
        return {
            "projection.enabled": "true",
            f"projection.{column}.type": "date",
            f"projection.{column}.format": self.java_format,
            f"projection.{column}.range": f"{self.first_key},{PROJECTION_RANGE_END}",
            f"projection.{column}.interval": "1",
            f"projection.{column}.interval.unit": self.unit,
            LOCATION_TEMPLATE_PARAMETER: location_template,
        }


class GlueClient(Protocol):
    """The subset of a boto3 Glue client used here."""

    def get_database(self, **kwargs: Any) -> Mapping[str, Any]:
        """GetDatabase."""
        ...

    def create_database(self, **kwargs: Any) -> Mapping[str, Any]:
        """CreateDatabase."""
        ...

    def get_table(self, **kwargs: Any) -> Mapping[str, Any]:
        """GetTable."""
        ...

    def create_table(self, **kwargs: Any) -> Mapping[str, Any]:
        """CreateTable."""
        ...

    def update_table(self, **kwargs: Any) -> Mapping[str, Any]:
        """UpdateTable."""
        ...

    def get_partition(self, **kwargs: Any) -> Mapping[str, Any]:
        """GetPartition."""
        ...

    def batch_create_partition(self, **kwargs: Any) -> Mapping[str, Any]:
        """BatchCreatePartition."""
        ...

    def update_partition(self, **kwargs: Any) -> Mapping[str, Any]:
        """UpdatePartition."""
        ...


@dataclass(frozen=True)
class GlueTable:
    """One asset's Glue table; `register` is called after each publish of a partition.

    `partition_name` is the `<name>` of the asset's `<name>=<key>` directories (None for an
    unpartitioned asset); `projection`, when given, replaces per-partition registration.
    """

    client: GlueClient
    layout: LakeLayout
    asset_path: tuple[str, ...]
    partition_name: str | None
    projection: DateProjection | None = None
    database_prefix: str = ""

    def __post_init__(self) -> None:
        glue_table_name(self.asset_path, self.database_prefix)  # refused before any publish

    @property
    def asset(self) -> str:
        """The asset's key, as Dagster prints it."""
        return "/".join(self.asset_path)

    @property
    def qualified_name(self) -> str:
        """`database.table`."""
        return ".".join(glue_table_name(self.asset_path, self.database_prefix))

    @property
    def partition_column(self) -> str | None:
        """The table's partition column."""
        return glue_name(self.partition_name) if self.partition_name is not None else None

    def location(self) -> str:
        """The table's location: the asset's key prefix (ends with '/')."""
        return self.layout.uri(self.layout.dataset_prefix(self.asset_path))

    def partition_location(self, partition: str) -> str:
        """The directory of one partition's object (ends with '/')."""
        assert self.partition_name is not None
        key = self.layout.partition_key(self.asset_path, self.partition_name, partition)
        return self.layout.uri(key.removesuffix(PART_FILE_NAME))

    def register(self, partition: str | None, schema: pa.Schema) -> str:
        """Register the table with `schema` (the published file's) and, per the mode, the partition.

        Returns what was done. Raises `GlueRegistrationError` naming the table and the partition
        (which stays published) when Glue refused or could not be reached.
        """
        columns = glue_columns(schema, self.partition_column)
        try:
            self._ensure_database()
            table = self._put_table(columns)
            said = f"Glue table {self.qualified_name} {table}"
            if partition is not None and self.partition_name is not None:
                if self.projection is None:
                    said += f"; partition {self._put_partition(partition, columns)}"
                else:
                    said += f"; partition {partition} found by partition projection"
        except botocore.exceptions.BotoCoreError as error:
            raise self._failed(partition, f"Glue could not be reached: {error}") from error
        except botocore.exceptions.ClientError as error:
            raise self._failed(partition, f"Glue refused it: {error}") from error
        if columns.left_out:
            said += (
                "; columns with no Hive type left out (declare them `as: text`, or cast them in "
                f"the asset, to register them): {columns.describe_left_out()}"
            )
        return said

    def _failed(self, partition: str | None, why: str) -> GlueRegistrationError:
        where = f"{self.asset} [{partition}]" if partition is not None else self.asset
        return GlueRegistrationError(
            f"{where}: published, but not registered in the Glue table {self.qualified_name}: "
            f"{why}. Rerun the partition once Glue answers (registering is idempotent); the "
            "role needs glue:GetDatabase, CreateDatabase, GetTable, CreateTable, UpdateTable, "
            "GetPartition, BatchCreatePartition and UpdatePartition in the Glue region"
        )

    def _ensure_database(self) -> None:
        database, _ = glue_table_name(self.asset_path, self.database_prefix)
        try:
            self.client.get_database(Name=database)
        except botocore.exceptions.ClientError as error:
            if _code(error) != "EntityNotFoundException":
                raise
            try:
                self.client.create_database(
                    DatabaseInput={
                        "Name": database,
                        "Description": "Tables of the etl_assets lake, registered as published.",
                    }
                )
            except botocore.exceptions.ClientError as race:
                if _code(race) != "AlreadyExistsException":
                    raise

    def _table_input(self, columns: GlueColumns) -> dict[str, Any]:
        _, name = glue_table_name(self.asset_path, self.database_prefix)
        parameters = {
            "classification": "parquet",
            "EXTERNAL": "TRUE",
            ASSET_PARAMETER: self.asset,
        }
        if columns.left_out:
            parameters[LEFT_OUT_PARAMETER] = columns.describe_left_out()
        column = self.partition_column
        if self.projection is not None and self.partition_name is not None and column:
            directory = path_segment(self.partition_name)
            template = f"{self.location()}{directory}=${{{column}}}/"
            parameters |= self.projection.parameters(column, template)
        return {
            "Name": name,
            "Description": f"The partitions of the asset {self.asset}, one Parquet object each.",
            "TableType": "EXTERNAL_TABLE",
            "Parameters": parameters,
            "PartitionKeys": [{"Name": column, "Type": "string"}] if column else [],
            "StorageDescriptor": _storage(columns, self.location()),
        }

    def _put_table(self, columns: GlueColumns) -> str:
        """Create the table, or update it if it says something else; returns what was done."""
        database, name = glue_table_name(self.asset_path, self.database_prefix)
        wanted = self._table_input(columns)
        try:
            existing = self.client.get_table(DatabaseName=database, Name=name)["Table"]
        except botocore.exceptions.ClientError as error:
            if _code(error) != "EntityNotFoundException":
                raise
            try:
                self.client.create_table(DatabaseName=database, TableInput=wanted)
            except botocore.exceptions.ClientError as race:
                if _code(race) != "AlreadyExistsException":
                    raise
                return self._put_table(columns)
            return "created"
        self._refuse_foreign(existing)
        wanted["Parameters"] = _managed_parameters(existing.get("Parameters", {}), wanted)
        if _table_view(existing) == _table_view(wanted):
            return "unchanged"
        self.client.update_table(DatabaseName=database, TableInput=wanted)
        return "updated"

    def _refuse_foreign(self, existing: Mapping[str, Any]) -> None:
        """Raise unless the table registers this asset at this location."""
        holder = existing.get("Parameters", {}).get(ASSET_PARAMETER)
        location = existing.get("StorageDescriptor", {}).get("Location")
        if holder == self.asset and location == self.location():
            return
        what = (
            f"registers the asset {holder} at {location}"
            if holder
            else f"was not created by etl_assets (location {location})"
        )
        raise GlueRegistrationError(
            f"{self.asset}: the Glue table {self.qualified_name} already exists and {what}; it "
            f"is left as it is. Drop that table, or set a database prefix "
            "(ETL_LAKE_GLUE_DATABASE_PREFIX) that keeps this lake's tables apart"
        )

    def _put_partition(self, partition: str, columns: GlueColumns) -> str:
        database, name = glue_table_name(self.asset_path, self.database_prefix)
        storage = _storage(columns, self.partition_location(partition))
        wanted = {"Values": [partition], "StorageDescriptor": storage}
        label = f"{self.partition_name}={partition}"
        answer = self.client.batch_create_partition(
            DatabaseName=database, TableName=name, PartitionInputList=[wanted]
        )
        errors = answer.get("Errors", [])
        if not errors:
            return f"{label} registered"
        detail = errors[0].get("ErrorDetail", {})
        if detail.get("ErrorCode") != "AlreadyExistsException":
            raise GlueRegistrationError(
                f"{self.asset} [{partition}]: published, but Glue refused to register the "
                f"partition in {self.qualified_name}: {detail.get('ErrorCode')}: "
                f"{detail.get('ErrorMessage')}. Rerun the partition once that is fixed"
            )
        existing = self.client.get_partition(
            DatabaseName=database, TableName=name, PartitionValues=[partition]
        )["Partition"]
        if _storage_view(existing.get("StorageDescriptor", {})) == _storage_view(storage):
            return f"{label} unchanged"
        self.client.update_partition(
            DatabaseName=database,
            TableName=name,
            PartitionValueList=[partition],
            PartitionInput=wanted,
        )
        return f"{label} updated"


def _storage(columns: GlueColumns, location: str) -> dict[str, Any]:
    return {
        "Columns": [dict(c) for c in columns.columns],
        "Location": location,
        "InputFormat": PARQUET_INPUT_FORMAT,
        "OutputFormat": PARQUET_OUTPUT_FORMAT,
        "SerdeInfo": {"SerializationLibrary": PARQUET_SERDE, "Parameters": {}},
    }


def _is_managed_parameter(key: str) -> bool:
    return (
        key.startswith(PROJECTION_PREFIX)
        or key == LOCATION_TEMPLATE_PARAMETER
        or key.startswith("etl_assets.")
    )


def _managed_parameters(existing: Mapping[str, str], wanted: Mapping[str, Any]) -> dict[str, str]:
    """The parameters an update writes: the table's own (another tool's) kept, ours replaced."""
    kept = {k: v for k, v in existing.items() if not _is_managed_parameter(k)}
    return kept | dict(wanted["Parameters"])


def _storage_view(storage: Mapping[str, Any]) -> tuple[object, ...]:
    """What a storage descriptor says that registration decides (Glue adds other fields)."""
    columns = tuple(
        (c.get("Name", "").lower(), c.get("Type", "").lower(), c.get("Comment"))
        for c in storage.get("Columns", [])
    )
    serde = storage.get("SerdeInfo", {})
    return (
        columns,
        storage.get("Location"),
        storage.get("InputFormat"),
        storage.get("OutputFormat"),
        serde.get("SerializationLibrary"),
    )


def _table_view(table: Mapping[str, Any]) -> tuple[object, ...]:
    """What a table says that registration decides."""
    keys = tuple((k["Name"].lower(), k["Type"].lower()) for k in table.get("PartitionKeys", []))
    return (
        table.get("TableType"),
        table.get("Description"),
        keys,
        dict(table.get("Parameters", {})),
        _storage_view(table.get("StorageDescriptor", {})),
    )


def _code(error: botocore.exceptions.ClientError) -> str:
    return str(error.response.get("Error", {}).get("Code", ""))
