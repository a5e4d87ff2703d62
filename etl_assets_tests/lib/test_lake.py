import pytest

from etl_assets.lib.lake import LakeLayout, path_segment


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
