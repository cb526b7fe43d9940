"""`predict_file`: classify every row of a CSV / JSONL / Parquet file, streaming in chunks."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ..errors import DataError
from .classifier import Classifier, check_threshold, empty_text_indices
from .files import ChunkWriter, count_rows, file_format, iter_chunks, pick_text_column

EMPTY_TEXT_ERROR = "empty text"


@dataclass
class PredictFileReport:
    input: str
    output: str
    rows: int
    predicted: int
    errors: int
    needs_review: int | None
    seconds: float
    rows_per_s: float
    text_column: str
    backend: str
    model_version: str
    auto_reason: str = ""  # why backend="auto" chose `backend` ("" when it was named)

    def to_dict(self) -> dict:
        return asdict(self)


def prob_column(label: str) -> str:
    return f"prob_{label}"


def predict_file(
    model_dir: str | Path | Classifier,
    input: str | Path,
    output: str | Path,
    text_column: str | None = None,
    batch_size: int = 32,
    abstain_below: float | None = None,
    backend: str = "auto",
    *,
    chunk_rows: int = 8192,
    threads: int | None = None,
    device: str = "auto",
    ensemble: bool | None = None,
    progress: bool = True,
) -> PredictFileReport:
    """Classify each row of `input` and write it to `output` with the added columns
    category, confidence, prob_<category>..., error (and needs_review when abstain_below is given).

    Rows with empty text are kept, with error="empty text" and no prediction. Memory stays
    bounded: the file is read, scored and written `chunk_rows` rows at a time."""
    input, output = Path(input), Path(output)
    file_format(input)
    file_format(output, role="output")
    if not input.is_file():
        raise DataError(f"input file {input} does not exist")
    if input.resolve() == output.resolve():
        raise DataError("--out must differ from --input")
    check_threshold(abstain_below)
    clf = (
        model_dir
        if isinstance(model_dir, Classifier)
        else Classifier.load(model_dir, backend=backend, threads=threads, device=device, ensemble=ensemble)
    )
    total = count_rows(input)
    rows = errors = review = 0
    column = None
    started = time.perf_counter()
    writer = ChunkWriter(output)
    ok = False
    bar = _progress(progress, total)
    try:
        for chunk in iter_chunks(input, chunk_rows):
            if column is None:
                column = pick_text_column(list(chunk.columns), text_column, input)
            out, bad, flagged = score_chunk(clf, chunk, column, batch_size, abstain_below)
            review += flagged
            writer.write(out)
            rows += len(out)
            errors += bad
            bar.advance(len(out))
        if column is None:
            raise DataError(f"{input} holds no rows")
        ok = True
    finally:
        bar.close()
        writer.close(ok)
    seconds = time.perf_counter() - started
    return PredictFileReport(
        input=str(input),
        output=str(output),
        rows=rows,
        predicted=rows - errors,
        errors=errors,
        needs_review=review if abstain_below is not None else None,
        seconds=round(seconds, 3),
        rows_per_s=round(rows / seconds, 1) if seconds > 0 else 0.0,
        text_column=column,
        backend=f"{clf.backend}-{clf.precision}",
        model_version=clf.model_version,
        auto_reason=getattr(clf.backend_impl, "auto_reason", ""),
    )


def score_chunk(clf: Classifier, chunk, column: str, batch_size: int = 32, abstain_below: float | None = None):
    """(chunk with the prediction columns added, rows with empty text, rows needing review):
    one step of `predict_file`, shared with the sharded scorer so both write the same columns."""
    import pandas as pd

    labels = clf.labels
    added = ["category", "confidence", *map(prob_column, labels), "error"] + (
        ["needs_review"] if abstain_below is not None else []
    )
    texts = [_as_text(t) for t in chunk[column].tolist()]
    bad = set(empty_text_indices(texts))
    good = [i for i in range(len(texts)) if i not in bad]
    probs = np.full((len(texts), len(labels)), np.nan)
    if good:
        probs[good] = clf.predict_proba([texts[i] for i in good], batch_size)
    out = chunk.drop(columns=[c for c in added if c in chunk.columns])
    best = np.where(np.isnan(probs[:, 0]), 0, np.nan_to_num(probs).argmax(axis=1))
    confidence = probs.max(axis=1) if len(texts) else np.zeros(0)
    category = np.array(labels, dtype=object)[best]
    category[list(bad)] = None
    out["category"] = pd.array(category, dtype="string")
    out["confidence"] = confidence
    for j, label in enumerate(labels):
        out[prob_column(label)] = probs[:, j]
    error = np.full(len(texts), None, dtype=object)
    error[list(bad)] = EMPTY_TEXT_ERROR
    out["error"] = pd.array(error, dtype="string")
    flagged = 0
    if abstain_below is not None:
        flags = np.zeros(len(texts), dtype=bool)
        flags[good] = confidence[good] < abstain_below
        out["needs_review"] = flags
        flagged = int(flags.sum())
    return out, len(bad), flagged


def _as_text(value):
    """Cell -> text: strings as they are, missing values (None/NaN) as None, anything else str()."""
    if isinstance(value, str) or value is None:
        return value
    if isinstance(value, float) and value != value:
        return None
    return str(value)


class _NoBar:
    def advance(self, n: int) -> None:
        pass

    def close(self) -> None:
        pass


class _RichBar:
    def __init__(self, total: int | None):
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

        columns = [SpinnerColumn(), TextColumn("predicting"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()]
        self.progress = Progress(*columns, transient=True)
        self.task = self.progress.add_task("predict", total=total)
        self.progress.start()

    def advance(self, n: int) -> None:
        self.progress.advance(self.task, n)

    def close(self) -> None:
        self.progress.stop()


def _progress(enabled: bool, total: int | None):
    return _RichBar(total) if enabled else _NoBar()
