from pathlib import Path

import dagster as dg


@dg.definitions
def defs() -> dg.Definitions:
    """Everything under `etl_assets/defs`: tables declared in YAML, resources, curated assets."""
    return dg.load_from_defs_folder(path_within_project=Path(__file__).parent)
