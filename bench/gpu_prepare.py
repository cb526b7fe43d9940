"""Pack what bench/gpu_session.sh needs on a GPU machine that has no internet (run it here):

    .venv/bin/python bench/gpu_prepare.py [--data runs/demo/data]

- .gpu/minilm: the embedded all-MiniLM-L6-v2, float weights rounded to fp16 (45 MB instead of
  91: the device tool carries at most 64 MiB), with its tokenizer; bench/gpu_restore.py turns
  it back into fp32 there (relative error < 5e-4 per tensor).
- .gpu/data: the prepared splits (`triage data prepare` output; DuckDB is not needed there).
- .whl: wheels (CPython 3.12, manylinux x86-64) of the packages that machine's image lacks.

Then: `echo /.gpu/ >> .git/info/exclude` once, and run `bash bench/gpu_session.sh` through the
device tool with carry [".gpu", ".whl"].
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
    "fastapi==0.165.0", "starlette==1.10.0", "uvicorn==0.54.0", "httptools==0.9.0", "SQLAlchemy==2.1.9", "alembic==1.20.1",
    "Mako==1.4.3", "greenlet==3.5.6", "pydantic==2.14.4", "pydantic_core==2.50.5", "pydantic-settings==2.16.3",
    "annotated-types==0.8.0", "typing-inspection==0.4.5", "typing_extensions==4.16.0", "python-dotenv==1.2.4",
    "python-multipart==0.0.34", "opentelemetry-api==1.45.2", "importlib_metadata==9.1.0", "optuna==5.0.0", "colorlog==6.12.0",
]
PLATFORMS = ["manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64", "manylinux1_x86_64"]


def pack_model(out: Path) -> None:
    from ticket_triage.modeling import embedded_model_path

    from _weights import cast_floats

    source = Path(embedded_model_path())
    out.mkdir(parents=True, exist_ok=True)
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        if (source / name).is_file():
            shutil.copy(source / name, out / name)
    cast_floats(source / "model.safetensors", out / "model.fp16.safetensors", "fp16")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, default=ROOT / "runs" / "demo" / "data", help="a prepared-data folder")
    args = p.parse_args()
    if not (args.data / "train.parquet").is_file():
        raise SystemExit(f"{args.data} has no train.parquet: run `triage data prepare` (or `make run`) first")
    gpu = ROOT / ".gpu"
    pack_model(gpu / "minilm")
    (gpu / "data").mkdir(parents=True, exist_ok=True)
    for name in ("train.parquet", "val.parquet", "test.parquet", "manifest.json", "taxonomy.yaml"):
        if (args.data / name).is_file():
            shutil.copy(args.data / name, gpu / "data" / name)
    platforms = [arg for plat in PLATFORMS for arg in ("--platform", plat)]
    subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:", "--python-version", "3.12",
                    "--implementation", "cp", *platforms, "-d", str(ROOT / ".whl"), *WHEELS], check=True)
    size = sum(f.stat().st_size for d in (gpu, ROOT / ".whl") for f in d.rglob("*") if f.is_file())
    print(f"packed .gpu and .whl: {size / 2**20:.0f} MiB (the device tool carries at most 64 MiB with the repository)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
