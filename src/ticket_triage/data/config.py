"""DataConfig: every option of `triage data prepare`, validated, saved into manifest.json."""

from __future__ import annotations

import glob
import math
import os
import re
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from ..errors import ConfigError

#: Optional cleaning steps, applied in this order whatever order they are given in.
CLEAN_STEPS: tuple[str, ...] = ("redactions", "amounts", "strip-punct", "lowercase", "stopwords")

#: Default Jaccard similarity (word 3-shingles) above which two narratives are near-duplicates.
NEAR_DUPLICATE_THRESHOLD = 0.7
_GLOB_CHARS = re.compile(r"[*?\[]")

_MEMORY_RE = re.compile(r"^\s*\d+(\.\d+)?\s*(B|KB|MB|GB|TB|KiB|MiB|GiB|TiB)\s*$", re.IGNORECASE)


@dataclass
class DataConfig:
    """Options of one `prepare_dataset` run.

    input:        one input file or several (a list), each any supported format (csv, csv.gz,
                  csv.zip, JSON array, JSON lines, Parquet); a glob pattern (``data/*.csv``) is
                  expanded here, sorted. Normalised to a tuple of Paths (``cfg.inputs``; the
                  old single-file ``cfg.input_path`` still works when there is one input)
    out_dir:      folder that receives train/val/test.parquet, manifest.json, taxonomy.yaml
    taxonomy:     a shipped taxonomy name (``cfpb-6``) or a YAML file
    sample_frac:  stratified sample of the de-duplicated rows, taken before splitting
    seed:         drives sampling and the split assignment (same seed, same splits)
    min_words:    narratives with fewer words (after cleaning) are dropped and counted
    clean:        optional cleaning steps, any of CLEAN_STEPS
    text_column / label_column: column names for exports that do not use the CFPB's names
    strict:       fail when a product is not in the taxonomy instead of counting it
    split:        train/val/test fractions
    near_duplicates: Jaccard threshold on word 3-shingles for near-duplicate removal (MinHash
                  LSH, see neardup.py), or None / "off" to keep near-duplicates
    memory_limit: DuckDB's memory limit ("auto": a quarter of the machine's available memory,
                  between 256MB and 768MB); the rest spills to a temporary folder
    """

    input: Any
    out_dir: Path
    taxonomy: str = "cfpb-6"
    sample_frac: float = 1.0
    seed: int = 42
    min_words: int = 5
    clean: tuple[str, ...] = ()
    text_column: str | None = None
    label_column: str | None = None
    strict: bool = False
    split: tuple[float, float, float] = (0.8, 0.1, 0.1)
    near_duplicates: float | None = NEAR_DUPLICATE_THRESHOLD
    memory_limit: str = "auto"
    threads: int | None = None
    temp_dir: Path | None = None

    def __post_init__(self) -> None:
        self.input = _expand_inputs(self.input)
        if self.out_dir is None or str(self.out_dir) == "":
            raise ConfigError("DataConfig needs an `out_dir`: pass --out DIR (the folder for train/val/test.parquet)")
        self.out_dir = Path(self.out_dir)
        if self.temp_dir is not None:
            self.temp_dir = Path(self.temp_dir)
        self.taxonomy = str(self.taxonomy or "cfpb-6")

        try:
            self.sample_frac = float(self.sample_frac)
        except (TypeError, ValueError):
            raise ConfigError(f"sample_frac must be a number in (0, 1], got {self.sample_frac!r}") from None
        if not (0.0 < self.sample_frac <= 1.0) or math.isnan(self.sample_frac):
            raise ConfigError(f"sample_frac must be in (0, 1] (1 keeps every row), got {self.sample_frac}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise ConfigError(f"seed must be an integer, got {self.seed!r}")
        if self.seed < 0:
            raise ConfigError(f"seed must be 0 or more, got {self.seed}")
        if isinstance(self.min_words, bool) or not isinstance(self.min_words, int) or not 0 <= self.min_words <= 1000:
            raise ConfigError(
                f"min_words must be an integer >= 0 (0 keeps every non-empty narrative), at most 1000, got {self.min_words!r}"
            )

        if isinstance(self.clean, str):
            self.clean = (self.clean,)
        steps = []
        for step in self.clean or ():
            for part in str(step).split(","):
                part = part.strip().lower().replace("_", "-")
                if not part:
                    continue
                if part == "punct" or part == "strip-punctuation":
                    part = "strip-punct"
                if part not in CLEAN_STEPS:
                    raise ConfigError(
                        f"unknown cleaning step {part!r}: choose from {', '.join(CLEAN_STEPS)} (repeat --clean for several)"
                    )
                if part not in steps:
                    steps.append(part)
        self.clean = tuple(s for s in CLEAN_STEPS if s in steps)

        for name in ("text_column", "label_column"):
            value = getattr(self, name)
            if value is not None and not str(value).strip():
                raise ConfigError(
                    f"{name} must be a column name, got an empty string; leave it out to use the CFPB's names"
                )

        try:
            split = tuple(float(x) for x in self.split)
        except (TypeError, ValueError):
            raise ConfigError(f"split must be three numbers (train, val, test), got {self.split!r}") from None
        if len(split) != 3 or any(x < 0 for x in split) or split[0] <= 0 or abs(sum(split) - 1.0) > 1e-6:
            raise ConfigError(
                f"split must be three fractions >= 0 for train, val, test that add up to 1 (train > 0), got {self.split!r}"
            )
        self.split = split  # type: ignore[assignment]

        self.near_duplicates = _near_dup_threshold(self.near_duplicates)
        if str(self.memory_limit).strip().lower() == "auto":
            self.memory_limit = "auto"
        elif not _MEMORY_RE.match(str(self.memory_limit)):
            raise ConfigError(f"memory_limit must be 'auto' or look like '1GB' or '512MB', got {self.memory_limit!r}")
        if self.threads is not None and (
            isinstance(self.threads, bool) or not isinstance(self.threads, int) or self.threads < 1
        ):
            raise ConfigError(f"threads must be a positive integer or None (all cores), got {self.threads!r}")

    @property
    def inputs(self) -> tuple[Path, ...]:
        return self.input

    @property
    def input_path(self) -> Path:
        """The input file, for code written when there was only one."""
        if len(self.input) != 1:
            raise ConfigError(f"this DataConfig has {len(self.input)} inputs; use cfg.inputs")
        return self.input[0]

    # -- (de)serialisation -----------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        # one input stays a plain string, as manifests written before several inputs have it
        out["input"] = str(self.input[0]) if len(self.input) == 1 else [str(p) for p in self.input]
        for key in ("out_dir", "temp_dir"):
            if out[key] is not None:
                out[key] = str(out[key])
        out["clean"] = list(self.clean)
        out["split"] = list(self.split)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "DataConfig":
        if not isinstance(data, dict):
            raise ConfigError("a DataConfig must be built from a mapping of option names to values")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown DataConfig option(s) {unknown}; known options: {', '.join(sorted(known))}")
        data = dict(data)
        if "clean" in data and data["clean"] is not None and not isinstance(data["clean"], str):
            data["clean"] = tuple(data["clean"])
        if "split" in data and data["split"] is not None:
            data["split"] = tuple(data["split"])
        return cls(**data)


def _expand_inputs(value: Any) -> tuple[Path, ...]:
    """A tuple of input Paths from a path, a glob pattern or a list of them (in the order given)."""
    items = [value] if isinstance(value, (str, os.PathLike)) or value is None else list(value)
    out: list[Path] = []
    for item in items:
        if item is None or str(item) == "":
            raise ConfigError(
                "DataConfig needs an `input` file: pass --input PATH (a CFPB complaints.csv/.zip/.gz/.json or Parquet)"
            )
        text = str(item)
        # a literal file whose name has glob characters is taken as it is
        if _GLOB_CHARS.search(text) and not Path(text).exists():
            matches = sorted(m for m in glob.glob(os.path.expanduser(text), recursive=True) if not Path(m).is_dir())
            if not matches:
                raise ConfigError(
                    f"input pattern {text!r} matches no file; check the folder and the pattern (quote it so the shell leaves it to us)"
                )
            out.extend(Path(m) for m in matches)
        else:
            out.append(Path(text).expanduser())
    if not out:
        raise ConfigError(
            "DataConfig needs an `input` file: pass --input PATH (a CFPB complaints.csv/.zip/.gz/.json or Parquet)"
        )
    seen: set[Path] = set()
    for p in out:
        key = Path(os.path.abspath(p))
        if key in seen:
            raise ConfigError(f"input {p} is given twice; give each file once")
        seen.add(key)
    return tuple(out)


def _near_dup_threshold(value: Any) -> float | None:
    if (
        value is None
        or value is False
        or (isinstance(value, str) and value.strip().lower() in ("off", "none", "no", "false"))
    ):
        return None
    try:
        t = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"near_duplicates must be a Jaccard threshold in [0.5, 1) or 'off', got {value!r}") from None
    if not 0.5 <= t < 1.0:
        raise ConfigError(
            f"near_duplicates must be a Jaccard threshold in [0.5, 1) (default {NEAR_DUPLICATE_THRESHOLD}) or 'off', got {value!r}"
        )
    return t
