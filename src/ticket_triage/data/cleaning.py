"""Optional text cleaning, written as DuckDB SQL expressions so it runs inside the engine.

Steps (each off by default, applied in CLEAN_STEPS order):
  redactions   remove the CFPB's redaction marks: XXXX, XX/XX/XXXX, XX/XX/2019
  amounts      {$480.00} -> <amount>
  strip-punct  punctuation -> space (the <amount> token survives)
  lowercase    lower-case everything
  stopwords    remove scikit-learn's ENGLISH_STOP_WORDS (whole words, any case)
Whenever a step runs, whitespace is collapsed at the end; with no step the model input is the
narrative verbatim. The de-duplication key is always the lower-cased, whitespace-collapsed
model input.
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
        expr = f"trim({collapse_sql(expr)})"  # after collapsing, only single spaces can be at the ends
    return expr


# Matches only whitespace that is not already a single space: far faster than '\s+' (which
# rewrites every space) and gives the same result.
_NONCANONICAL_WS = r"\s{2,}|[\t\n\r\f\v]"


def collapse_sql(expr: str) -> str:
    return f"regexp_replace({expr}, {_lit(_NONCANONICAL_WS)}, ' ', 'g')"


def norm_sql(column: str) -> str:
    """Normalised text for de-duplication: lower-case, whitespace collapsed.

    Padding with a space on each side before collapsing makes the ends canonical too (exactly
    one space each), which is cheaper than trimming.
    """
    padded = "(' ' || " + column + " || ' ')"
    return f"lower({collapse_sql(padded)})"


def min_words_sql(column: str, min_words: int) -> str:
    """True when the text has at least max(1, min_words) words; stops reading after them."""
    n = max(1, int(min_words))
    pattern = r"^\s*(?:\S+\s+){%d}\S" % (n - 1)
    return f"regexp_matches({column}, {_lit(pattern)})"


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
