"""Cast a safetensors file's float tensors (integer ones, e.g. position_ids, stay as they are).
The GPU session's weights travel as fp16 to fit the device tool's 64 MiB carry limit:

    python bench/_weights.py fp16|fp32 SRC.safetensors DST.safetensors
"""

from __future__ import annotations

import sys
from pathlib import Path


def cast_floats(src: Path, dst: Path, dtype: str) -> int:
    """Write `src` to `dst` with every float tensor in `dtype` ("fp16" or "fp32"); returns the tensor count."""
    import torch
    from safetensors.torch import load_file, save_file

    to = {"fp16": torch.float16, "fp32": torch.float32}[dtype]
    weights = load_file(str(src))
    save_file(
        {k: v.to(to) if v.is_floating_point() else v for k, v in weights.items()}, str(dst), metadata={"format": "pt"}
    )
    return len(weights)


if __name__ == "__main__":
    cast_floats(Path(sys.argv[2]), Path(sys.argv[3]), sys.argv[1])
