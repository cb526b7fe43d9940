"""One worker process of a study: `python -m ticket_triage.tuning.worker CONFIG INDEX [DEADLINE]`.

Started by `tune` for `--workers K`; takes trials from the shared storage until none is left.
"""

from __future__ import annotations

import sys


def main(argv: list[str]) -> int:
    from .config import TuneConfig
    from .study import run_worker
    from .tune import _quiet_optuna

    config_path, index = argv[0], int(argv[1])
    deadline = float(argv[2]) if len(argv) > 2 else None
    _quiet_optuna()
    config = TuneConfig.from_yaml(config_path)

    def log(message: str) -> None:
        print(f"[worker {index}] {message}", flush=True)

    try:
        stats = run_worker(config, index, deadline, log)
    except KeyboardInterrupt:
        log("interrupted")
        return 130
    log(f"done: {stats.ran} trial(s), {stats.complete} complete, {stats.pruned} pruned, {stats.failed} failed")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
