"""Human reports: classification report (Markdown), confusion matrix and loss-curve plots."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .slices import SMALL_SLICE


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only; never a window
    import matplotlib.pyplot as plt

    return plt


def confusion_matrix_figure(matrix: Sequence[Sequence[int]], labels: Sequence[str], title: str = "Confusion matrix"):
    """Two panels: raw counts, and rows normalised to recall, with category names on the axes."""
    plt = _pyplot()
    counts = np.asarray(matrix, dtype=float)
    normalised = counts / np.clip(counts.sum(axis=1, keepdims=True), 1, None)
    size = max(6.0, 0.9 * len(labels) + 3)
    fig, axes = plt.subplots(1, 2, figsize=(2 * size, size), constrained_layout=True)
    for ax, data, fmt, panel in (
        (axes[0], counts, "{:.0f}", "counts"),
        (axes[1], normalised, "{:.2f}", "row-normalised (recall)"),
    ):
        image = ax.imshow(data, cmap="Blues", vmin=0)
        ax.set_xticks(range(len(labels)), labels, rotation=40, ha="right")
        ax.set_yticks(range(len(labels)), labels)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.set_title(f"{title}: {panel}")
        peak = data.max() if data.size else 1
        for i in range(data.shape[0]):
            for j in range(data.shape[1]):
                ax.text(
                    j,
                    i,
                    fmt.format(data[i, j]),
                    ha="center",
                    va="center",
                    color="white" if data[i, j] > peak / 2 else "black",
                    fontsize=9,
                )
        fig.colorbar(image, ax=ax, shrink=0.7)
    return fig


def loss_curves_figure(history: Sequence[dict[str, Any]]):
    """Training and validation loss per epoch, with validation macro-F1 on a second axis."""
    plt = _pyplot()
    epochs = [h["epoch"] for h in history]
    fig, ax = plt.subplots(figsize=(7, 4.5), constrained_layout=True)
    ax.plot(epochs, [h["train_loss"] for h in history], marker="o", label="train loss")
    ax.plot(epochs, [h["val_loss"] for h in history], marker="o", label="validation loss")
    ax.set_xlabel("epoch")
    ax.set_ylabel("cross-entropy loss")
    ax.set_xticks(epochs)
    ax.grid(alpha=0.3)
    f1_axis = ax.twinx()
    f1_axis.plot(
        epochs,
        [h["val_macro_f1"] for h in history],
        color="tab:green",
        linestyle="--",
        marker="s",
        label="validation macro-F1",
    )
    f1_axis.set_ylabel("macro-F1")
    lines = ax.get_legend_handles_labels()
    more = f1_axis.get_legend_handles_labels()
    ax.legend(lines[0] + more[0], lines[1] + more[1], loc="center right")
    ax.set_title("Loss curves")
    return fig


def classification_report_markdown(
    metrics: dict[str, Any],
    title: str,
    baseline_macro_f1: float | None = None,
    notes: Sequence[str] = (),
    ensemble: dict[str, Any] | None = None,
) -> str:
    lines = [f"# {title}", ""]
    lines.append(f"- examples: {metrics['n']}")
    lines.append(f"- accuracy: {metrics['accuracy']:.4f}")
    lines.append(f"- macro-F1: {metrics['macro_f1']:.4f}")
    lines.append(f"- weighted-F1: {metrics['weighted_f1']:.4f}")
    if baseline_macro_f1 is not None:
        delta = 100 * (metrics["macro_f1"] - baseline_macro_f1)
        lines.append(
            f"- TF-IDF + linear SVM baseline macro-F1: {baseline_macro_f1:.4f} (transformer {delta:+.1f} points)"
        )
    lines += [f"- {note}" for note in notes]
    lines += ["", "| category | precision | recall | F1 | support |", "|---|---:|---:|---:|---:|"]
    for name, row in metrics["per_class"].items():
        lines.append(f"| {name} | {row['precision']:.3f} | {row['recall']:.3f} | {row['f1']:.3f} | {row['support']} |")
    labels = metrics["labels"]
    lines += [
        "",
        "Confusion matrix (rows: true, columns: predicted):",
        "",
        "| true \\ predicted | " + " | ".join(labels) + " |",
        "|---|" + "---:|" * len(labels),
    ]
    for name, row in zip(labels, metrics["confusion_matrix"]):
        lines.append(f"| {name} | " + " | ".join(str(v) for v in row) + " |")
    if ensemble:
        lines += ensemble_markdown(ensemble, labels)
    for key, heading in (("by_source", "By input file (source)"), ("by_year", "By year received")):
        if metrics.get(key):
            lines += slice_markdown(metrics[key], labels, heading)
    return "\n".join(lines) + "\n"


def _cell(value: float | None) -> str:
    return "–" if value is None else f"{value:.3f}"


def ensemble_markdown(ensemble: dict[str, Any], labels: Sequence[str]) -> list[str]:
    """Transformer, TF-IDF and hybrid side by side, one table per scored split or file."""
    state = "on" if ensemble["enabled"] else "off (it did not beat both models alone on validation)"
    lines = ["", f"## Ensemble: transformer + TF-IDF, weight {ensemble['weight']:.2f} on TF-IDF, {state}"]
    for split, models in ensemble.get("scores", {}).items():
        lines += [
            "",
            f"{split}:",
            "",
            "| model | macro-F1 | accuracy | " + " | ".join(f"recall {c}" for c in labels) + " |",
            "|---|---:|---:|" + "---:|" * len(labels),
        ]
        for name, row in models.items():
            lines.append(
                f"| {name} | {row['macro_f1']:.4f} | {row['accuracy']:.4f} | "
                + " | ".join(_cell(row["recall"].get(c)) for c in labels)
                + " |"
            )
    return lines


def slice_markdown(table: dict[str, dict[str, Any]], labels: Sequence[str], heading: str) -> list[str]:
    """One row per slice: n, macro-F1, accuracy and recall per category ('–': no rows of it)."""
    lines = [
        "",
        f"## {heading}",
        "",
        "| slice | n | macro-F1 | accuracy | " + " | ".join(f"recall {c}" for c in labels) + " |",
        "|---|---:|---:|---:|" + "---:|" * len(labels),
    ]
    small = False
    for name, row in table.items():
        flag = "*" if row["n"] < SMALL_SLICE else ""
        small = small or bool(flag)
        lines.append(
            f"| {name} | {row['n']}{flag} | {row['macro_f1']:.3f} | {row['accuracy']:.3f} | "
            + " | ".join(_cell(row["recall"][c]) for c in labels)
            + " |"
        )
    if small:
        lines += [
            "",
            f"\\* fewer than {SMALL_SLICE} rows: too few to judge. macro-F1 is over the categories present in each slice.",
        ]
    return lines


def write_report(
    out_dir: str | Path,
    metrics: dict[str, Any],
    *,
    title: str,
    baseline_macro_f1: float | None = None,
    notes: Sequence[str] = (),
    ensemble: dict[str, Any] | None = None,
) -> dict[str, Path]:
    """classification_report.md and confusion_matrix.png in `out_dir`; returns their paths."""
    plt = _pyplot()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    report = out_dir / "classification_report.md"
    report.write_text(classification_report_markdown(metrics, title, baseline_macro_f1, notes, ensemble))
    figure = confusion_matrix_figure(
        metrics["confusion_matrix"], metrics["labels"], title="Test" if "test" in title.lower() else "Evaluation"
    )
    matrix_png = out_dir / "confusion_matrix.png"
    figure.savefig(matrix_png, dpi=110)
    plt.close(figure)
    return {"report": report, "confusion_matrix": matrix_png}


def save_loss_curves(out_dir: str | Path, history: Sequence[dict[str, Any]]) -> Path:
    plt = _pyplot()
    path = Path(out_dir) / "loss_curves.png"
    figure = loss_curves_figure(history)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def write_json(path: str | Path, data: Any) -> Path:
    path = Path(path)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2))
    tmp.replace(path)
    return path
