"""Human report of a prepared data folder: a rich table and a class-distribution chart."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .io import SPLITS


def plot_class_distribution(manifest: dict[str, Any], path: str | Path) -> Path:
    """Grouped bar chart of rows per category per split, saved as PNG (Agg backend)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    import numpy as np

    labels = list(manifest["labels"])
    per_split = manifest["counts"]["per_split"]
    x = np.arange(len(labels))
    width = 0.27
    fig, ax = plt.subplots(figsize=(max(6.0, 1.3 * len(labels)), 4.2))
    for i, split in enumerate(SPLITS):
        values = [per_split[split].get(c, 0) for c in labels]
        bars = ax.bar(x + (i - 1) * width, values, width, label=f"{split} ({sum(values):,})")
        ax.bar_label(bars, fontsize=7, padding=1)
    ax.set_xticks(x, labels, rotation=20, ha="right")
    ax.set_ylabel("rows")
    ax.set_title(f"Class distribution per split ({manifest['input']['name']})")
    ax.legend()
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def render_report(manifest: dict[str, Any], console=None) -> None:
    """Print the per-category split table and the dropped-row counts."""
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    counts = manifest["counts"]
    table = Table(title=f"Prepared {manifest['input']['name']} -> {counts['kept']:,} rows", title_justify="left")
    table.add_column("category")
    for split in SPLITS:
        table.add_column(split, justify="right")
    table.add_column("total", justify="right")
    table.add_column("share", justify="right")
    kept = max(1, counts["kept"])
    for cat in manifest["labels"]:
        row = [counts["per_split"][s].get(cat, 0) for s in SPLITS]
        table.add_row(cat, *(f"{v:,}" for v in row), f"{sum(row):,}", f"{sum(row) / kept:.1%}")
    table.add_row("[bold]all", *(f"[bold]{counts['splits'][s]:,}" for s in SPLITS), f"[bold]{counts['kept']:,}", "")
    console.print(table)

    inputs = manifest.get("inputs") or []
    several = len(inputs) > 1
    drops = Table(title=f"Rows read: {counts['rows_read']:,}; dropped", title_justify="left")
    drops.add_column("reason")
    drops.add_column("rows", justify="right")
    if several:  # one column per input, so each file's share of every reason shows
        for inp in inputs:
            drops.add_column(inp["name"], justify="right")
        drops.add_row("read", f"{counts['rows_read']:,}", *(f"{i['rows_read']:,}" for i in inputs))
        drops.add_row("kept", f"{counts['kept']:,}", *(f"{i['kept']:,}" for i in inputs))
    for reason, n in manifest["dropped"].items():
        drops.add_row(
            reason.replace("_", " "), f"{n:,}", *(f"{i['dropped'].get(reason, 0):,}" for i in inputs if several)
        )
    drops.add_row(
        "broken rows (skipped)",
        f"{manifest['broken_rows']['count']:,}",
        *(f"{i['broken_rows']:,}" for i in inputs if several),
    )
    drops.add_row(
        "undecodable characters (replaced)",
        f"{manifest['undecodable_chars_replaced']:,}",
        *(f"{i['undecodable_chars_replaced']:,}" for i in inputs if several),
    )
    console.print(drops)
    near = manifest.get("near_duplicates") or {}
    if near.get("threshold") is None:
        console.print("near-duplicates: off (exact duplicates only)")
    elif "groups" in near:
        console.print(
            f"near-duplicates (Jaccard >= {near['threshold']} on {near['shingles'].split(',')[0]}, {near['bands']}x{near['rows_per_band']} LSH bands): "
            f"{near['groups']:,} groups of {near['rows_in_groups']:,} texts ({near['conflicting_groups']:,} with conflicting labels, "
            f"largest {near['largest_group']:,}) among {near['texts_compared']:,}, {near['seconds']:.1f} s",
            highlight=False,
        )
    plan = manifest.get("plan")
    if plan:
        console.print(
            f"plan: DuckDB memory limit {plan['memory_limit']} ({plan['memory_limit_from']}), "
            f"{plan['threads']} threads, spilling to {plan['spill_dir']} (removed afterwards)",
            highlight=False,
        )
    if manifest["unknown_products"]:
        console.print(
            "[yellow]products not in the taxonomy (skipped):[/] "
            + "; ".join(f"{p!r}: {n:,}" for p, n in manifest["unknown_products"].items())
        )
    if manifest["broken_rows"]["count"]:
        where = ", ".join(str(e["record"]) for e in manifest["broken_rows"]["examples"] if e.get("record") is not None)
        console.print(
            f"[yellow]{manifest['broken_rows']['count']} broken CSV row(s) skipped[/]"
            + (f" at record(s) {where}" if where else "")
        )
