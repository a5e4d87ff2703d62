"""Every error the project raises on purpose, in one hierarchy.

    EtlAssetsError
    ├── DeclarationError (ValueError)         a table's declaration is wrong: fix defs.yaml
    │   └── TransformError                    the `transform` path cannot be imported or used
    ├── SourceError                           reading the Postgres source
    │   ├── ExtractError (RuntimeError)       connecting or reading failed
    │   │   ├── UnrepresentableValueError     a row holds a value no Parquet type holds exactly
    │   │   └── WalNotReadyError              the source's slot cannot say which windows changed
    │   └── ContractError (ValueError)        the live table does not have what is declared
    │       ├── SchemaDriftError              declared columns missing, retyped, renullabled
    │       └── UnsupportedColumnError        a declared type has no exact Parquet mapping
    ├── LakeError (RuntimeError)              writing to the lake
    │   ├── LakeConfigurationError            no such bucket, or access denied: fix settings
    │   ├── LakeUnavailableError              S3 did not answer (5xx, throttling, no connection)
    │   ├── PartitionWriteError               a partition could not be written as declared
    │   ├── VerificationError                 a written file is not what was streamed into it
    │   ├── NotPublishedError                 publishing failed; the key does not hold the file
    │   ├── PublishOutcomeUnknownError        publishing failed; S3 could not say what it holds
    │   ├── UploadLeftBehindError             a failed upload could not be aborted either
    │   ├── TableSchemaError                  a lake table cannot take the declared columns
    │   └── GlueRegistrationError             a published partition is not registered in Glue
    └── BlockingCheckError                    a blocking check refused a partition

Every message names what failed (table, column, row key, partition, bucket) and the way out.
Whether an error is worth retrying is decided from the error chain by
`etl_assets.lib.transient`, not by its class: a lost connection can surface as any of these.
"""

from __future__ import annotations


class EtlAssetsError(Exception):
    """The base of every error raised on purpose by etl_assets."""


class DeclarationError(EtlAssetsError, ValueError):
    """A table's declaration is wrong; the message names the field."""


class TransformError(DeclarationError):
    """A table's `transform` cannot be imported, or is not a LazyFrame -> LazyFrame function."""


class SourceError(EtlAssetsError):
    """Reading the Postgres source failed."""


class ExtractError(SourceError, RuntimeError):
    """Connecting to or reading from the source failed; the message says which table and window."""


class UnrepresentableValueError(ExtractError):
    """A row holds a value that no Parquet type holds exactly; its window is not published."""


class WalNotReadyError(ExtractError):
    """The source's WAL cannot be read for changes; the message names each missing piece."""


class ContractError(SourceError, ValueError):
    """The live table does not have what the declaration expects."""


class SchemaDriftError(ContractError):
    """The live table's columns differ from the declared contract (or the table is gone)."""


class UnsupportedColumnError(ContractError):
    """A declared column whose type has no exact Parquet mapping."""


class LakeError(EtlAssetsError, RuntimeError):
    """Writing to the lake failed."""


class LakeConfigurationError(LakeError):
    """The lake's bucket does not exist or these credentials may not use it."""


class LakeUnavailableError(LakeError):
    """S3 did not answer the bucket check (5xx, throttling, no connection): worth retrying."""


class PartitionWriteError(LakeError):
    """A partition could not be written as declared (e.g. a column named like its directories)."""


class VerificationError(LakeError):
    """A written file does not hold what was streamed into it; it must not be published."""


class NotPublishedError(LakeError):
    """Publishing failed and the key does not hold this upload's object (it was never visible)."""


class PublishOutcomeUnknownError(LakeError):
    """Publishing failed, and S3 could not be reached to learn whether the object is at its key."""


class UploadLeftBehindError(LakeError):
    """Writing failed, and so did aborting the invisible upload: it stays until cleaned up."""


class TableSchemaError(LakeError):
    """A lake table's schema cannot take the declared columns without rewriting its data."""


class GlueRegistrationError(LakeError):
    """Glue refused or could not be reached: the published partition is not registered."""


class BlockingCheckError(EtlAssetsError):
    """A blocking check failed: the partition was not published."""
