"""The automation sensor: curated assets follow the raw partitions they read by themselves."""

from etl_assets.components.automation import automation_sensor

lake_automation = automation_sensor()
