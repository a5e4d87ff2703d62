import polars as pl
import pytest

from etl_assets.lib.errors import TransformError
from etl_assets.lib.table.transforms import checked_transform, load_transform


def double_amount(frame: pl.LazyFrame) -> pl.LazyFrame:
    return frame.with_columns(pl.col("amount") * 2)


def returns_a_dataframe(frame: pl.LazyFrame) -> pl.DataFrame:
    return frame.collect()


def takes_two(frame: pl.LazyFrame, other: pl.LazyFrame) -> pl.LazyFrame:
    return frame.join(other, on="id")


NOT_CALLABLE = 42


@pytest.mark.parametrize("sep", [":", "."])
def test_a_dotted_path_loads_the_function(sep: str) -> None:
    transform = load_transform(f"{__name__}{sep}double_amount")
    result = transform(pl.LazyFrame({"amount": [1, 2]})).collect()
    assert result["amount"].to_list() == [2, 4]
    assert transform.__name__ == "double_amount"


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("nodots", "not a dotted path"),
        ("no_such_module_xyz:fn", "cannot import module 'no_such_module_xyz'"),
        (f"{__name__}:missing", "has no attribute 'missing'"),
        (f"{__name__}:NOT_CALLABLE", "is not callable"),
        (f"{__name__}:takes_two", "must accept one argument"),
    ],
)
def test_bad_dotted_paths_say_what_is_wrong(path: str, message: str) -> None:
    with pytest.raises(TransformError, match=message):
        load_transform(path)


def test_a_transform_must_stay_lazy() -> None:
    transform = checked_transform(returns_a_dataframe, "eager")
    with pytest.raises(TransformError, match="returned DataFrame, expected a polars LazyFrame"):
        transform(pl.LazyFrame({"a": [1]}))
