"""`triage data ...`: prepare splits from a CFPB export, download the CFPB file."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from ._app import app

data_app = typer.Typer(
    help="Prepare training data from the CFPB complaint database or other ticket exports.", no_args_is_help=True
)
app.add_typer(data_app, name="data")


@data_app.command("prepare")
def prepare(
    input: Annotated[
        list[str],
        typer.Option(
            "--input",
            "-i",
            help="CFPB export: complaints.csv, .csv.zip, .csv.gz, JSON (array or lines) or Parquet. Repeat for several files, or give a quoted glob pattern ('exports/*.csv'); formats may be mixed.",
        ),
    ],
    out: Annotated[
        Path,
        typer.Option(
            "--out",
            "-o",
            help="Folder for train/val/test.parquet, manifest.json, taxonomy.yaml, class_distribution.png.",
        ),
    ],
    taxonomy: Annotated[str, typer.Option(help="Shipped taxonomy name or a YAML file.")] = "cfpb-6",
    sample_frac: Annotated[
        float, typer.Option(help="Stratified sample of the de-duplicated rows, before splitting (0-1].")
    ] = 1.0,
    seed: Annotated[int, typer.Option(help="Seed for sampling and the split assignment.")] = 42,
    min_words: Annotated[int, typer.Option(help="Drop narratives with fewer words (after cleaning).")] = 5,
    clean: Annotated[
        Optional[list[str]],
        typer.Option(
            "--clean", help="Cleaning step, repeatable: lowercase, strip-punct, stopwords, redactions, amounts."
        ),
    ] = None,
    text_column: Annotated[
        Optional[str],
        typer.Option(help="Column holding the text (default: the CFPB's 'Consumer complaint narrative')."),
    ] = None,
    label_column: Annotated[
        Optional[str], typer.Option(help="Column holding the label/product (default: the CFPB's 'Product').")
    ] = None,
    strict: Annotated[bool, typer.Option("--strict", help="Fail when a product is not in the taxonomy.")] = False,
    near_duplicates: Annotated[
        str,
        typer.Option(
            "--near-duplicates",
            help="Jaccard threshold (word 3-shingles, MinHash LSH) for near-duplicate removal, or 'off'.",
        ),
    ] = "0.7",
    memory_limit: Annotated[
        str,
        typer.Option(
            help="DuckDB memory limit ('auto': a quarter of available memory, 256MB-768MB); beyond it the work spills to disk."
        ),
    ] = "auto",
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar and no report table.")] = False,
) -> None:
    """Read, map, clean, de-duplicate and split a complaint export into train/val/test parquet."""
    from rich.console import Console

    from ..data import DataConfig, prepare_dataset
    from ..data.report import render_report

    config = DataConfig(
        input=input,
        out_dir=out,
        taxonomy=taxonomy,
        sample_frac=sample_frac,
        seed=seed,
        min_words=min_words,
        clean=tuple(clean or ()),
        text_column=text_column,
        label_column=label_column,
        strict=strict,
        memory_limit=memory_limit,
        near_duplicates=near_duplicates,
    )
    result = prepare_dataset(config, progress=not quiet)
    console = Console()
    if not quiet:
        render_report(result.manifest, console)
    console.print(
        f"wrote {result.out_dir}/{{train,val,test}}.parquet, manifest.json, taxonomy.yaml, class_distribution.png",
        highlight=False,
    )


@data_app.command("fetch")
def fetch(
    url: Annotated[
        str, typer.Option(help="Where to download from.")
    ] = "https://files.consumerfinance.gov/ccdb/complaints.csv.zip",
    out: Annotated[
        Path, typer.Option("--out", "-o", help="Destination file (a folder gets the URL's file name).")
    ] = Path("data/complaints.csv.zip"),
    sha256: Annotated[Optional[str], typer.Option(help="Expected sha256 of the file.")] = None,
    force: Annotated[bool, typer.Option("--force", help="Download again even if OUT exists.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
) -> None:
    """Download the CFPB complaint database (complaints.csv.zip), resuming a partial download."""
    from rich.console import Console

    from ..data.fetch import fetch_cfpb

    path = fetch_cfpb(url, out, sha256=sha256, force=force, progress=not quiet)
    Console().print(f"saved {path} ({path.stat().st_size:,} bytes)", highlight=False)
