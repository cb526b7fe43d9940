"""Pack what bench/gpu_session.sh needs on a GPU machine that has no internet (run it here):

    .venv/bin/python bench/gpu_prepare.py [--data runs/demo/data]

- .gpu/minilm: the embedded all-MiniLM-L6-v2, float weights rounded to fp16 (45 MB instead of
  91: the device tool carries at most 64 MiB), with its tokenizer; bench/gpu_restore.py turns
  it back into fp32 there (relative error < 5e-4 per tensor).
- .gpu/data: the prepared splits (`triage data prepare` output; DuckDB is not needed there).
- .whl: wheels (CPython 3.12, manylinux x86-64) of the packages that machine's image lacks.

Then: `echo /.gpu/ >> .git/info/exclude` once, and run `bash bench/gpu_session.sh` through the
device tool with carry [".gpu", ".whl"].

With `--mpnet` it also packs the all-MPNet teacher (`triage models install mpnet` first) for the
`mpnet` and `distill` steps: 438 MB of weights, 219 MB in fp16, more than one call carries. They
go in parts of at most 50 MiB, `.gpu-mpnet/p1` ... `.gpu-mpnet/pN` (p1 also holds the config and
tokenizer), one part per device call to the same warm machine, since ignored paths already there
stay between calls (`echo /.gpu-mpnet/ >> .git/info/exclude` once):
    run(command="true", carry=[".gpu-mpnet/p1"]) ... run(command="true", carry=[".gpu-mpnet/pN"])
    run(command='STEPS="train mpnet distill" bash bench/gpu_session.sh', carry=[".gpu", ".whl"])
back to back (the machine goes back after 30 s idle). `ls .gpu-mpnet/p*` there must list them all;
the session script joins them and checks the sha256 printed here.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
# Missing from the GPU image (KINDS.md of the device tool lists what it has); pinned to the
# versions tested here. Its transformers/torch/tokenizers are used as they are.
WHEELS = [
    "fastapi==0.165.0",
    "starlette==1.10.0",
    "uvicorn==0.54.0",
    "httptools==0.9.0",
    "SQLAlchemy==2.1.9",
    "alembic==1.20.1",
    "Mako==1.4.3",
    "greenlet==3.5.6",
    "pydantic==2.14.4",
    "pydantic_core==2.50.5",
    "pydantic-settings==2.16.3",
    "annotated-types==0.8.0",
    "typing-inspection==0.4.5",
    "typing_extensions==4.16.0",
    "python-dotenv==1.2.4",
    "python-multipart==0.0.34",
    "opentelemetry-api==1.45.2",
    "importlib_metadata==9.1.0",
    "optuna==5.0.0",
    "colorlog==6.12.0",
]
PLATFORMS = [
    "manylinux_2_28_x86_64",
    "manylinux_2_27_x86_64",
    "manylinux_2_17_x86_64",
    "manylinux2014_x86_64",
    "manylinux1_x86_64",
]


def pack_model(out: Path) -> None:
    from _weights import cast_floats

    from ticket_triage.modeling import embedded_model_path

    source = Path(embedded_model_path())
    out.mkdir(parents=True, exist_ok=True)
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        if (source / name).is_file():
            shutil.copy(source / name, out / name)
    cast_floats(source / "model.safetensors", out / "model.fp16.safetensors", "fp16")


PART_BYTES = 50 << 20


def pack_mpnet(out: Path) -> str:
    """The installed MPNet, fp16, cut into `out`/p1..pN (see the module docstring); returns the joined file's sha256."""
    import hashlib
    import tempfile

    from _weights import cast_floats

    from ticket_triage.modeling import resolve_model_source

    source = Path(resolve_model_source("mpnet"))
    shutil.rmtree(out, ignore_errors=True)
    (out / "p1").mkdir(parents=True)
    for f in source.iterdir():
        if f.is_file() and f.name != "model.safetensors" and f.suffix in (".json", ".txt"):
            shutil.copy(f, out / "p1" / f.name)
    with tempfile.TemporaryDirectory() as tmp:
        fp16 = Path(tmp) / "model.fp16.safetensors"
        cast_floats(source / "model.safetensors", fp16, "fp16")
        digest = hashlib.sha256(fp16.read_bytes()).hexdigest()
        with open(fp16, "rb") as fh:
            for k, block in enumerate(iter(lambda: fh.read(PART_BYTES), b""), start=1):
                (out / f"p{k}").mkdir(exist_ok=True)
                (out / f"p{k}" / "weights.part").write_bytes(block)
    (out / "p1" / "weights.sha256").write_text(digest + "\n")
    return digest


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, default=ROOT / "runs" / "demo" / "data", help="a prepared-data folder")
    p.add_argument(
        "--mpnet", action="store_true", help="also pack the MPNet teacher into .gpu-mpnet/p1..pN (one device call each)"
    )
    args = p.parse_args()
    if args.mpnet:
        digest = pack_mpnet(ROOT / ".gpu-mpnet")
        parts = sorted(d.name for d in (ROOT / ".gpu-mpnet").iterdir())
        print(
            f"packed MPNet (fp16, sha256 {digest[:12]}...) in {len(parts)} parts: carry each in its own call: {', '.join('.gpu-mpnet/' + d for d in parts)}"
        )
    if not (args.data / "train.parquet").is_file():
        raise SystemExit(f"{args.data} has no train.parquet: run `triage data prepare` (or `make run`) first")
    gpu = ROOT / ".gpu"
    pack_model(gpu / "minilm")
    (gpu / "data").mkdir(parents=True, exist_ok=True)
    for name in ("train.parquet", "val.parquet", "test.parquet", "manifest.json", "taxonomy.yaml"):
        if (args.data / name).is_file():
            shutil.copy(args.data / name, gpu / "data" / name)
    platforms = [arg for plat in PLATFORMS for arg in ("--platform", plat)]
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "-q",
            "--no-deps",
            "--only-binary=:all:",
            "--python-version",
            "3.12",
            "--implementation",
            "cp",
            *platforms,
            "-d",
            str(ROOT / ".whl"),
            *WHEELS,
        ],
        check=True,
    )
    size = sum(f.stat().st_size for d in (gpu, ROOT / ".whl") for f in d.rglob("*") if f.is_file())
    print(f"packed .gpu and .whl: {size / 2**20:.0f} MiB (the device tool carries at most 64 MiB with the repository)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
