"""Optional text cleaning, written as DuckDB SQL expressions so it runs inside the engine.

Steps (each off by default, applied in CLEAN_STEPS order):
  redactions   remove the CFPB's redaction marks: XXXX, XX/XX/XXXX, XX/XX/2019
  amounts      {$480.00} -> <amount>
  strip-punct  punctuation -> space (the <amount> token survives)
  lowercase    lower-case everything
  stopwords    remove scikit-learn's ENGLISH_STOP_WORDS (whole words, any case)
Whenever a step runs, whitespace is collapsed at the end. The de-duplication key is always
the lower-cased, whitespace-collapsed model input.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Iterable, Sequence

from .config import CLEAN_STEPS

AMOUNT_TOKEN = "<amount>"
_REDACTION_RE = r"\bX{2,}(/X{2,})*(/[0-9]{2,4})?\b"
_AMOUNT_RE = r"\{\$[0-9][0-9,]*(\.[0-9]+)?\}"
_PUNCT_RE = r"(<amount>)|[^\w\s]+"


@lru_cache(maxsize=1)
def _stopword_re() -> str:
    from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

    words = sorted(ENGLISH_STOP_WORDS, key=lambda w: (-len(w), w))
    return r"(<amount>)|\b(?:" + "|".join(words) + r")\b"


def _lit(s: str) -> str:
    return "'" + s.replace("'", "''") + "'"


def clean_sql(column: str, steps: Sequence[str]) -> str:
    """A SQL expression giving the model input for the text in `column`."""
    unknown = [s for s in steps if s not in CLEAN_STEPS]
    if unknown:
        raise ValueError(f"unknown cleaning steps {unknown}")
    expr = column
    if "redactions" in steps:
        expr = f"regexp_replace({expr}, {_lit(_REDACTION_RE)}, ' ', 'g')"
    if "amounts" in steps:
        expr = f"regexp_replace({expr}, {_lit(_AMOUNT_RE)}, {_lit(' ' + AMOUNT_TOKEN + ' ')}, 'g')"
    if "strip-punct" in steps:
        expr = f"regexp_replace({expr}, {_lit(_PUNCT_RE)}, ' \\1 ', 'g')"
    if "lowercase" in steps:
        expr = f"lower({expr})"
    if "stopwords" in steps:
        expr = f"regexp_replace({expr}, {_lit(_stopword_re())}, ' \\1 ', 'gi')"
    if steps:
        expr = f"regexp_replace({expr}, '\\s+', ' ', 'g')"
    return f"trim({expr})"


def norm_sql(column: str) -> str:
    """Normalised text for de-duplication and word counts: lower-case, collapsed whitespace."""
    return f"lower(trim(regexp_replace({column}, '\\s+', ' ', 'g')))"


def word_count_sql(norm_column: str) -> str:
    return f"CASE WHEN {norm_column} = '' THEN 0 ELSE length({norm_column}) - length(replace({norm_column}, ' ', '')) + 1 END"


def clean_texts(texts: Iterable[str | None], steps: Sequence[str]) -> list[str | None]:
    """Apply the cleaning steps to Python strings (same SQL as `prepare_dataset`)."""
    import duckdb
    import pyarrow as pa

    tbl = pa.table({"t": pa.array(list(texts), pa.string())})
    con = duckdb.connect()
    try:
        con.register("tbl", tbl)
        return [r[0] for r in con.execute(f"SELECT {clean_sql('t', tuple(steps))} FROM tbl").fetchall()]
    finally:
        con.close()
