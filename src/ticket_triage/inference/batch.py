"""`predict_file`: classify every row of a CSV / JSONL / Parquet file, streaming in chunks."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from ..errors import DataError
from .classifier import Classifier, check_threshold, empty_text_indices
from .files import ChunkWriter, count_rows, file_format, iter_chunks, pick_text_column

EMPTY_TEXT_ERROR = "empty text"


@dataclass(frozen=True)
class PredictOptions:
    """How a file is scored, shared by `predict_file` and `predict_distributed` (one set of
    defaults): which column, how many texts per model call, the review threshold, and how the
    model is loaded."""

    text_column: str | None = None  # default: 'Consumer complaint narrative', else 'text'
    batch_size: int = 32
    abstain_below: float | None = None  # confidence below this: needs_review
    backend: str = "auto"
    threads: int | None = None
    device: str = "auto"
    chunk_rows: int = 8192  # rows read, scored and written at a time (bounds memory)
    ensemble: bool | None = None  # None: as the model folder's triage.json says

    @classmethod
    def of(cls, options: PredictOptions | None, **fields) -> PredictOptions:
        """`options` (or the defaults) with `fields` replaced; an unknown field is a TypeError."""
        return replace(options or cls(), **fields)

    def load(
        self, model: str | Path | Classifier, *, threads: int | None = None, device: str | None = None
    ) -> Classifier:
        """The classifier to score with: `model` itself when it is one, else loaded with these options
        (`threads`/`device` override, for a process that takes a share of the machine)."""
        if isinstance(model, Classifier):
            return model
        return Classifier.load(
            model,
            backend=self.backend,
            threads=self.threads if threads is None else threads,
            device=self.device if device is None else device,
            ensemble=self.ensemble,
        )


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
    options: PredictOptions | None = None,
    *,
    progress: bool = True,
    **fields,
) -> PredictFileReport:
    """Classify each row of `input` and write it to `output` with the added columns
    category, confidence, prob_<category>..., error (and needs_review when abstain_below is given).
    `fields` are PredictOptions' (batch_size=16, ...), replacing those of `options`.

    Rows with empty text are kept, with error="empty text" and no prediction. Memory stays
    bounded: the file is read, scored and written `chunk_rows` rows at a time."""
    opts = PredictOptions.of(options, **fields)
    abstain_below = opts.abstain_below
    input, output = Path(input), Path(output)
    file_format(input)
    file_format(output, role="output")
    if not input.is_file():
        raise DataError(f"input file {input} does not exist")
    if input.resolve() == output.resolve():
        raise DataError("--out must differ from --input")
    check_threshold(abstain_below)
    clf = opts.load(model_dir)
    total = count_rows(input)
    rows = errors = review = 0
    column = None
    started = time.perf_counter()
    writer = ChunkWriter(output)
    ok = False
    bar = _progress(progress, total)
    try:
        for chunk in iter_chunks(input, opts.chunk_rows):
            if column is None:
                column = pick_text_column(list(chunk.columns), opts.text_column, input)
            out, bad, flagged = score_chunk(clf, chunk, column, opts.batch_size, abstain_below)
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
