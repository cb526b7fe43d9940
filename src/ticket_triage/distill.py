"""Knowledge distillation: a teacher model folder (or several, averaged) teaches a student.

    teacher folder(s) ──Classifier──▶ log-probabilities on train / val / test / unlabelled texts
                                      (cached in the run folder: teacher_targets.safetensors)
    student encoder ──train_model(soft_targets=...)──▶ an ordinary model folder

The teacher is scored through `inference.Classifier`, the one path that scores texts, so a
teacher is whatever its folder predicts: a fine-tuned MPNet, or a transformer + TF-IDF hybrid,
whose TF-IDF half the student can then learn from. Several teachers are averaged in
probability. Unlabelled narratives get teacher targets only; those that are near-duplicates of a
validation or test text are dropped first, or the student would be taught the answers it is
graded on.

The run folder is that of `triage train`, plus:
    teacher_targets.safetensors   the teacher's log-probabilities per split, with what made them
    distill_config.yaml           the DistillConfig
    distillation.json, distillation.md   teacher, student and the student trained alone, side by side
and model/triage.json names the teacher.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import yaml

from .errors import ConfigError, DataError, ModelError
from .training import TrainConfig, TrainResult, train_model
from .training.targets import SoftTargets, kl_to_teacher

TARGETS_FILE = "teacher_targets.safetensors"
CONFIG_FILE = "distill_config.yaml"
REPORT_JSON = "distillation.json"
REPORT_MD = "distillation.md"
TARGETS_FORMAT = 1
TEACHER_SPLITS = ("train", "val", "test", "unlabeled")


@dataclass
class DistillConfig:
    """What a distillation adds to the student's TrainConfig."""

    teachers: list[str] = field(default_factory=list)  # model folders; several are averaged
    temperature: float = 2.0  # softens teacher and student alike; the soft loss is scaled by T^2
    alpha: float = 0.5  # weight of cross-entropy on gold labels; 1 - alpha goes to the teacher's targets
    unlabeled: list[str] = field(default_factory=list)  # files of narratives with no label
    unlabeled_text_column: str | None = None
    near_duplicates: float = 0.7  # Jaccard at which an unlabelled text counts as a copy of a val/test text
    max_unlabeled: int | None = None  # at most this many unlabelled texts (the first, after filtering)
    teacher_backend: str = "auto"
    teacher_device: str = "auto"
    teacher_batch_size: int = 64
    train_alone: bool = False  # also train the student without a teacher, same settings, for the report
    alone_run: str | None = None  # or: a run folder that already holds that comparison run

    def __post_init__(self) -> None:
        if isinstance(self.teachers, str):
            self.teachers = [self.teachers]
        if isinstance(self.unlabeled, str):
            self.unlabeled = [self.unlabeled]
        if not self.teachers:
            raise ConfigError(
                "distillation needs at least one teacher: --teacher RUN/model (repeat it to average several)"
            )
        if not (isinstance(self.temperature, (int, float)) and self.temperature > 0):
            raise ConfigError(
                f"temperature must be positive (1 keeps the teacher's probabilities; 2 to 4 is usual), got {self.temperature!r}"
            )
        if not (isinstance(self.alpha, (int, float)) and 0 <= self.alpha <= 1):
            raise ConfigError(
                f"alpha weighs the gold labels against the teacher: give a number from 0 to 1, got {self.alpha!r}"
            )
        if not 0 < self.near_duplicates <= 1:
            raise ConfigError(f"near_duplicates is a Jaccard threshold in (0, 1], got {self.near_duplicates!r}")
        if self.max_unlabeled is not None and self.max_unlabeled < 0:
            raise ConfigError(f"max_unlabeled must be 0 or more, got {self.max_unlabeled}")
        if self.train_alone and self.alone_run:
            raise ConfigError("give --train-alone or --alone RUN, not both")

    def save(self, path: Path) -> None:
        path.write_text(yaml.safe_dump(asdict(self), sort_keys=False))


@dataclass
class DistillResult:
    student: TrainResult
    report: dict[str, Any]
    alone: TrainResult | None = None


# ---------------------------------------------------------------------------------------------
# The run
# ---------------------------------------------------------------------------------------------
def distill_model(
    config: DistillConfig,
    train_config: TrainConfig,
    data_dir: str | Path,
    out_dir: str | Path,
    *,
    resume: bool = False,
    log: Callable[[str], None] = print,
    progress: bool = True,
) -> DistillResult:
    """Score the teacher(s) once (cached), train the student on their targets, and compare."""
    from .data.io import load_splits

    data_dir, out_dir = Path(data_dir), Path(out_dir)
    teachers = [_check_teacher(Path(t).expanduser()) for t in config.teachers]
    splits, labels = load_splits(data_dir)
    _check_labels(teachers, labels)
    out_dir.mkdir(parents=True, exist_ok=True)
    config.save(out_dir / CONFIG_FILE)

    unlabeled = read_unlabeled(config, splits, data_dir, log)
    texts = {
        "train": splits["train"].texts,
        "val": splits["val"].texts,
        "test": splits["test"].texts,
        "unlabeled": unlabeled,
    }
    targets = teacher_targets(config, teachers, labels, texts, out_dir, log, progress)

    soft = SoftTargets(
        train=targets["train"],
        temperature=config.temperature,
        alpha=config.alpha,
        extra_texts=unlabeled,
        extra=targets["unlabeled"],
    )
    student = train_model(train_config, data_dir, out_dir, resume=resume, log=log, progress=progress, soft_targets=soft)
    _name_teacher(student.model_dir, config, teachers, len(unlabeled))

    alone = None
    if config.train_alone:
        log("training the student alone (same settings, no teacher) for the comparison")
        alone = train_model(
            train_config,
            data_dir,
            out_dir / "alone",
            resume=resume and (out_dir / "alone").exists(),
            log=log,
            progress=progress,
        )
    report = compare(config, teachers, labels, splits, targets, student, alone, len(unlabeled), train_config)
    write_report(out_dir, report)
    log(_summary(report))
    return DistillResult(student=student, report=report, alone=alone)


def _check_teacher(folder: Path) -> Path:
    from .modeling import META_FILE

    if not (folder / META_FILE).is_file():
        raise ModelError(
            f"teacher {folder} is not a model folder (no {META_FILE}): give the `model/` folder of a `triage train` run"
        )
    return folder


def _check_labels(teachers: list[Path], labels: list[str]) -> None:
    from .modeling import ModelMeta

    for folder in teachers:
        theirs = ModelMeta.load(folder).labels
        if sorted(theirs) != sorted(labels):
            raise ModelError(
                f"teacher {folder} predicts {theirs}, but the data's categories are {labels}: distil only between models of the same taxonomy"
            )


# ---------------------------------------------------------------------------------------------
# Unlabelled narratives
# ---------------------------------------------------------------------------------------------
def read_unlabeled(config: DistillConfig, splits, data_dir: Path, log) -> list[str]:
    """The unlabelled texts, cleaned as the prepared data was, without copies of any prepared row
    and without near-duplicates of a validation or test row."""
    if not config.unlabeled:
        return []
    from .data.cleaning import clean_texts
    from .data.neardup import near_duplicates_of
    from .inference.files import iter_chunks, pick_text_column

    raw: list[str] = []
    for path in config.unlabeled:
        for chunk in iter_chunks(path):
            column = pick_text_column(list(chunk.columns), config.unlabeled_text_column, path)
            raw.extend(t for t in chunk[column].tolist() if isinstance(t, str))
    steps, min_words = _prepared_cleaning(data_dir)
    cleaned = [t.strip() for t in clean_texts(raw, steps) if t] if steps else [t.strip() for t in raw]
    kept = [t for t in cleaned if len(t.split()) >= max(min_words, 1)]
    short = len(cleaned) - len(kept)
    # Exact copies (normalised whitespace and case) of each other or of any prepared row.
    seen = {_norm(t) for name in ("train", "val", "test") for t in splits[name].texts}
    unique = []
    for t in kept:
        key = _norm(t)
        if key not in seen:
            seen.add(key)
            unique.append(t)
    exact = len(kept) - len(unique)
    graded = splits["val"].texts + splits["test"].texts
    near = near_duplicates_of(unique, graded, config.near_duplicates) if unique else np.zeros(0, dtype=bool)
    out = [t for t, dup in zip(unique, near) if not dup]
    if config.max_unlabeled is not None:
        out = out[: config.max_unlabeled]
    log(
        f"unlabelled: {len(raw)} texts read, {short} too short or empty, {exact} exact copies, "
        f"{int(near.sum())} near-duplicates of validation/test texts (Jaccard >= {config.near_duplicates}) dropped; {len(out)} used"
    )
    if not out:
        raise DataError(
            f"no unlabelled text is left from {', '.join(config.unlabeled)} after cleaning and de-duplication: check the file's text column"
        )
    return out


def _norm(text: str) -> str:
    return " ".join(text.lower().split())


def _prepared_cleaning(data_dir: Path) -> tuple[tuple[str, ...], int]:
    """The cleaning steps and minimum words the prepared data used (manifest.json), so the
    unlabelled texts read like the rows the model trains on."""
    from .data.config import DataConfig

    manifest = data_dir / "manifest.json"
    cfg = json.loads(manifest.read_text()).get("config", {}) if manifest.is_file() else {}
    return tuple(cfg.get("clean") or ()), int(cfg.get("min_words", DataConfig.min_words))


# ---------------------------------------------------------------------------------------------
# Teacher targets, computed once
# ---------------------------------------------------------------------------------------------
def teacher_targets(
    config: DistillConfig,
    teachers: list[Path],
    labels: list[str],
    texts: dict[str, list[str]],
    out_dir: Path,
    log,
    progress: bool = True,
) -> dict[str, np.ndarray]:
    """{split: (N, C) log-probabilities} in the data's label order, from the cache when it was
    made by the same teachers on the same texts, else scored now and cached."""
    key = _targets_key(teachers, labels, texts)
    cached = _read_targets(out_dir / TARGETS_FILE, key)
    if cached is not None:
        log(f"teacher targets: reusing {out_dir / TARGETS_FILE}")
        return cached
    probs = {name: np.zeros((len(texts[name]), len(labels)), dtype=np.float64) for name in TEACHER_SPLITS}
    for folder in teachers:
        one = _score_teacher(config, folder, labels, texts, progress)
        for name in TEACHER_SPLITS:
            probs[name] += one[name] / len(teachers)  # an average of teachers, in probability
    targets = {name: np.log(np.clip(p, 1e-7, 1.0)).astype(np.float32) for name, p in probs.items()}
    _write_targets(out_dir / TARGETS_FILE, targets, key)
    log(
        f"teacher targets: {sum(len(v) for v in texts.values())} texts scored by {len(teachers)} teacher(s), cached in {out_dir / TARGETS_FILE}"
    )
    return targets


def _score_teacher(
    config: DistillConfig, folder: Path, labels: list[str], texts: dict[str, list[str]], progress: bool
) -> dict[str, np.ndarray]:
    from tqdm.auto import tqdm

    from .inference import Classifier

    clf = Classifier.load(folder, backend=config.teacher_backend, device=config.teacher_device)
    columns = [clf.labels.index(name) for name in labels]  # the teacher's label order may differ
    total = sum(len(v) for v in texts.values())
    out = {}
    with tqdm(
        total=total, desc=f"teacher {folder.parent.name or folder.name}", unit="text", disable=not progress, leave=False
    ) as bar:
        for name in TEACHER_SPLITS:
            parts = []
            block = 512  # predict_proba in blocks, so the bar moves
            for start in range(0, len(texts[name]), block):
                chunk = texts[name][start : start + block]
                parts.append(clf.predict_proba(chunk, batch_size=config.teacher_batch_size)[:, columns])
                bar.update(len(chunk))
            out[name] = np.concatenate(parts) if parts else np.zeros((0, len(labels)))
    return out


def _targets_key(teachers: list[Path], labels: list[str], texts: dict[str, list[str]]) -> str:
    """A digest of everything the targets depend on: each teacher's weights and settings, the
    label order and every text in order."""
    from .ensemble import TFIDF_WEIGHTS_FILE
    from .inference.backends import TORCH_WEIGHT_FILES, file_digest
    from .modeling import META_FILE

    digest = hashlib.sha256(json.dumps({"format": TARGETS_FORMAT, "labels": labels}).encode())
    for folder in teachers:
        files = [
            folder / name for name in (*TORCH_WEIGHT_FILES, TFIDF_WEIGHTS_FILE, META_FILE) if (folder / name).is_file()
        ]
        digest.update(file_digest(files, 64).encode())
    for name in TEACHER_SPLITS:
        digest.update(f"{name}:{len(texts[name])}".encode())
        for text in texts[name]:
            digest.update(text.encode("utf-8", "replace") + b"\0")
    return digest.hexdigest()


def _read_targets(path: Path, key: str) -> dict[str, np.ndarray] | None:
    if not path.is_file():
        return None
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="numpy") as fh:
            if (fh.metadata() or {}).get("key") != key:
                return None  # other teachers or other texts: score again
            return {name: fh.get_tensor(name) for name in TEACHER_SPLITS}
    except Exception:  # a torn or foreign file: score again rather than fail
        return None


def _write_targets(path: Path, targets: dict[str, np.ndarray], key: str) -> None:
    from safetensors.numpy import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".partial")
    save_file(
        {k: np.ascontiguousarray(v) for k, v in targets.items()},
        str(tmp),
        metadata={"key": key, "format": str(TARGETS_FORMAT)},
    )
    tmp.replace(path)  # atomic: a killed run leaves the old cache or none, never half a file


# ---------------------------------------------------------------------------------------------
# What the student folder says, and the side-by-side report
# ---------------------------------------------------------------------------------------------
def _name_teacher(model_dir: Path, config: DistillConfig, teachers: list[Path], n_unlabeled: int) -> None:
    from .modeling import ModelMeta

    meta = ModelMeta.load(model_dir)
    meta.teacher = {
        "folders": [str(t.resolve()) for t in teachers],
        "base_models": [ModelMeta.load(t).base_model for t in teachers],
        "temperature": config.temperature,
        "alpha": config.alpha,
        "unlabeled_texts": n_unlabeled,
    }
    meta.save(model_dir)


def compare(
    config: DistillConfig,
    teachers: list[Path],
    labels: list[str],
    splits,
    targets: dict[str, np.ndarray],
    student: TrainResult,
    alone: TrainResult | None,
    n_unlabeled: int,
    train_config: TrainConfig,
) -> dict[str, Any]:
    """Teacher, distilled student and the student alone on validation and test, as shipped."""
    from .evaluation.metrics import classification_metrics
    from .inference import Classifier

    def scores(y, pred) -> dict[str, Any]:
        m = classification_metrics(y, pred, labels)
        return {
            "macro_f1": m["macro_f1"],
            "accuracy": m["accuracy"],
            "recall": {k: v["recall"] for k, v in m["per_class"].items()},
        }

    rows: dict[str, Any] = {}
    rows["teacher"] = {s: scores(splits[s].labels, targets[s].argmax(1)) for s in ("val", "test")}
    clf = Classifier.load(student.model_dir, backend="torch", device=train_config.device)
    student_logp = {
        s: np.log(np.clip(clf.predict_proba(splits[s].texts, train_config.eval_batch_size), 1e-7, 1.0))
        for s in ("val", "test")
    }
    rows["student"] = {s: scores(splits[s].labels, student_logp[s].argmax(1)) for s in ("val", "test")}
    rows["student"]["val_kl_to_teacher"] = kl_to_teacher(student_logp["val"], targets["val"])
    rows["student"]["val_agreement_with_teacher"] = float(
        (student_logp["val"].argmax(1) == targets["val"].argmax(1)).mean()
    )
    alone_metrics = _alone_metrics(config, alone, train_config.ensemble)
    if alone_metrics:
        rows["student_alone"] = alone_metrics
    baseline = (student.metrics or {}).get("baseline")
    return {
        "teachers": [str(t) for t in teachers],
        "student_model": train_config.model,
        "temperature": config.temperature,
        "alpha": config.alpha,
        "unlabeled_texts": n_unlabeled,
        "models": rows,
        "baseline_test_macro_f1": baseline["macro_f1"] if baseline else None,
    }


def _alone_metrics(config: DistillConfig, alone: TrainResult | None, student_ensemble: str) -> dict[str, Any] | None:
    """The student trained alone: this run's comparison run, or an earlier one (--alone RUN).
    Scored like the distilled student: where the student has no TF-IDF hybrid but that run
    does, its transformer alone is compared (training scored both)."""
    if alone is not None:
        metrics = alone.metrics
    elif config.alone_run:
        path = Path(config.alone_run) / "metrics.json"
        if not path.is_file():
            raise ConfigError(
                f"--alone {config.alone_run}: no metrics.json there; give the folder of a finished `triage train` run"
            )
        metrics = json.loads(path.read_text())
    else:
        return None
    ensemble = metrics.get("ensemble")
    if ensemble and student_ensemble == "none":
        scores = ensemble["scores"]
        return {
            "val": scores["validation"]["transformer"],
            "test": scores["test"]["transformer"],
            "scored": "transformer alone (its TF-IDF hybrid left out, as the student has none)",
        }
    test = metrics["test"]
    if ensemble:  # as shipped: the hybrid where validation switched it on
        val = ensemble["scores"]["validation"]["hybrid" if ensemble.get("enabled") else "transformer"]
    else:
        best = max(metrics["history"], key=lambda r: r["val_macro_f1"])
        val = {"macro_f1": best["val_macro_f1"], "accuracy": best["val_accuracy"]}
    return {
        "val": val,
        "test": {
            "macro_f1": test["macro_f1"],
            "accuracy": test["accuracy"],
            "recall": {k: v["recall"] for k, v in test["per_class"].items()},
        },
        "scored": "as shipped",
    }


def write_report(out_dir: Path, report: dict[str, Any]) -> None:
    from .evaluation.report import write_json

    write_json(out_dir / REPORT_JSON, report)
    for metrics_file in (out_dir / "metrics.json", out_dir / "model" / "metrics.json"):
        if metrics_file.is_file():
            metrics = json.loads(metrics_file.read_text())
            metrics["distillation"] = report
            write_json(metrics_file, metrics)
    (out_dir / REPORT_MD).write_text(report_markdown(report))


def report_markdown(report: dict[str, Any]) -> str:
    names = {
        "teacher": "teacher" + (f" (average of {len(report['teachers'])})" if len(report["teachers"]) > 1 else ""),
        "student": "student, distilled",
        "student_alone": "student trained alone",
    }
    lines = [
        "# Distillation",
        "",
        f"Teacher(s): {', '.join(report['teachers'])}. Student: {report['student_model']}. "
        f"Temperature {report['temperature']:g}, alpha {report['alpha']:g} (weight of the gold labels), {report['unlabeled_texts']} unlabelled texts.",
        "",
        "| model | validation macro-F1 | test macro-F1 | test accuracy | lowest test recall |",
        "|---|---:|---:|---:|---:|",
    ]
    for key, row in report["models"].items():
        recall = row["test"].get("recall") or {}
        low = min(recall.items(), key=lambda kv: kv[1]) if recall else None
        lines.append(
            f"| {names[key]} | {row['val']['macro_f1']:.4f} | {row['test']['macro_f1']:.4f} | {row['test']['accuracy']:.4f} | {f'{low[1]:.3f} ({low[0]})' if low else ''} |"
        )
    if report.get("baseline_test_macro_f1") is not None:
        lines.append(f"| TF-IDF + linear SVM | | {report['baseline_test_macro_f1']:.4f} | | |")
    alone = report["models"].get("student_alone")
    if alone and alone.get("scored"):
        lines += ["", f"Student trained alone: {alone['scored']}."]
    student = report["models"]["student"]
    lines += [
        "",
        f"Student vs teacher on validation: KL {student['val_kl_to_teacher']:.4f} nats, same category on {student['val_agreement_with_teacher']:.1%} of texts.",
        "",
    ]
    return "\n".join(lines)


def _summary(report: dict[str, Any]) -> str:
    m = report["models"]
    text = f"distillation: test macro-F1 teacher {m['teacher']['test']['macro_f1']:.4f}, student {m['student']['test']['macro_f1']:.4f}"
    if "student_alone" in m:
        text += f", student alone {m['student_alone']['test']['macro_f1']:.4f}"
    return text
