import pytest

from etl_assets.lib.lake.layout import LakeLayout, object_link, path_segment


def test_partition_keys_are_hive_style_and_deterministic() -> None:
    layout = LakeLayout(bucket="lake", prefix="/etl/")
    key = layout.partition_key(["raw", "shop", "sales", "orders"], "day", "2026-10-01")
    assert key == "etl/raw/shop/sales/orders/day=2026-10-01/part-00000.parquet"
    assert layout.uri(key) == f"s3://lake/{key}"
    assert layout.dataset_prefix(["raw", "x"]) == "etl/raw/x/"
    assert LakeLayout("lake").unpartitioned_key(["a", "b"]) == "a/b/part-00000.parquet"


def test_names_that_would_break_the_layout_are_escaped() -> None:
    assert path_segment("sales/2026") == "sales%2F2026"
    assert path_segment("a=b") == "a%3Db"
    assert path_segment("100%") == "100%25"
    assert path_segment("Mixed Case; données") == "Mixed Case; donn%C3%A9es"
    assert path_segment("2026-10-25T02+0100") == "2026-10-25T02+0100"


@pytest.mark.parametrize("bucket", ["", "lake/prefix"])
def test_bucket_must_be_a_bare_name(bucket: str) -> None:
    with pytest.raises(ValueError, match="bare bucket name"):
        LakeLayout(bucket)


def test_an_object_link_opens_the_object_on_its_endpoint_or_in_the_aws_console() -> None:
    key = "etl/raw/shop/orders/day=2026-10-01/part-00000.parquet"
    assert object_link("lake", key, endpoint_url="http://127.0.0.1:9000/", region=None) == (
        "http://127.0.0.1:9000/lake/etl/raw/shop/orders/day=2026-10-01/part-00000.parquet"
    )
    on_aws = "https://s3.eu-west-1.amazonaws.com"
    assert object_link("lake", key, endpoint_url=on_aws, region="eu-west-1") == (
        "https://console.aws.amazon.com/s3/object/lake?prefix=etl%2Fraw%2Fshop%2Forders%2F"
        "day%3D2026-10-01%2Fpart-00000.parquet&region=eu-west-1"
    )
    assert object_link("lake", key, endpoint_url=None, region=None).startswith(
        "https://console.aws.amazon.com/s3/object/lake?prefix=etl%2Fraw"
    )
