"""`triage explain`: which words drove a text's category (integrated gradients, explain.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

from ._app import app

_out = Console()
# Words whose |attribution| is at least this share of the largest one are coloured; the rest
# are noise at the resolution a reader can see.
SHOWN_SHARE = 0.1


@app.command("explain")
def explain_command(
    model: Annotated[Path, typer.Option("--model", help="Model folder written by `triage train`.")],
    text: Annotated[str, typer.Option("--text", help="The ticket's body (or any text) to explain.")],
    subject: Annotated[
        Optional[str], typer.Option("--subject", help="The ticket's subject: read as SUBJECT, a blank line, TEXT.")
    ] = None,
    target: Annotated[
        Optional[str], typer.Option("--target", help="Explain this category instead of the model's top one.")
    ] = None,
    steps: Annotated[
        int, typer.Option("--steps", min=1, max=1000, help="Integration steps: more is closer, and slower.")
    ] = 50,
    top: Annotated[int, typer.Option("--top", min=1, help="How many words the table lists.")] = 10,
    as_json: Annotated[bool, typer.Option("--json", help="Print the explanation as JSON.")] = False,
) -> None:
    """Highlight the words that pushed a text towards (green) or away from (red) its category."""
    from ..explain import explain, ticket_text

    full = ticket_text(subject, text)
    result = explain(model, full, target=target, n_steps=steps)
    if as_json:
        typer.echo(json.dumps(result.to_dict(), indent=2))
        return
    _print(result, full, top)


def _print(result, text: str, top: int) -> None:
    from rich.table import Table
    from rich.text import Text

    from ..explain import top_words

    prob = result.probabilities.get(result.target, 0.0)
    _out.print(
        f"[bold]{result.target}[/] (transformer probability {prob:.2f}), {result.n_steps} steps", highlight=False
    )
    _out.print(_highlighted(text, result.tokens))
    table = Table(title="words by attribution")
    for column in ("word", "chars", "attribution"):
        table.add_column(column, justify="right" if column != "word" else "left")
    for word in top_words(result, top):
        table.add_row(word.text, f"{word.start}-{word.end}", f"{word.attribution:+.4f}")
    _out.print(table)
    _out.print(
        Text(
            f"sum {sum(w.attribution for w in result.tokens):+.4f} = logit {result.logit:+.4f} - baseline "
            f"{result.baseline_logit:+.4f} (convergence delta {result.delta:+.2e})",
            style="dim",
        )
    )
    if result.truncated:
        _out.print("[yellow]the text is longer than the model reads: only the words shown were read[/]")
    if result.note:
        _out.print(f"[yellow]{result.note}[/]", highlight=False)


def _highlighted(text: str, words) -> "Text":  # noqa: F821 (rich.text.Text, imported lazily)
    from rich.text import Text

    out = Text(text)
    peak = max((abs(w.attribution) for w in words), default=0.0)
    if peak <= 0:
        return out
    for w in words:
        share = abs(w.attribution) / peak
        if share >= SHOWN_SHARE:
            colour = "green" if w.attribution > 0 else "red"
            out.stylize(f"bold {colour}" if share >= 0.5 else colour, w.start, w.end)
    return out
