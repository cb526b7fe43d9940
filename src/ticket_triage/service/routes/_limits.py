"""Shared request checks."""

from fastapi import HTTPException


def check_text_size(text: str, limit: int, what: str) -> None:
    size = len(text.encode("utf-8"))
    if size > limit:
        raise HTTPException(
            413,
            f"{what} is {size} bytes; the limit is {limit} bytes ({limit // 1024} KiB): shorten it or attach the rest elsewhere",
        )


def unknown_category(category: str, labels: list[str], field: str = "category") -> HTTPException:
    return HTTPException(
        422,
        [{"loc": ["body", field], "msg": f"unknown category {category!r}; use one of {labels}", "type": "value_error", "input": category}],
    )
