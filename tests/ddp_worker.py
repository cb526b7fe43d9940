"""Run `triage ...` under torchrun while recording every file this process opens for writing.

Used by test_distributed.py: TRIAGE_TEST_WRITES names a folder that receives writes-rank<R>.txt,
and TRIAGE_TEST_KILL_AT_STEP makes every process die at that optimizer step (a crash).
"""

import os
import sys

WATCHED = os.path.abspath(os.environ["TRIAGE_TEST_WATCH"])
written: set[str] = set()


def audit(event, args):
    if event == "open" and args and isinstance(args[0], (str, bytes, os.PathLike)):
        mode = args[1] if len(args) > 1 and isinstance(args[1], str) else ""
        path = os.path.abspath(os.fsdecode(args[0]))
        if path.startswith(WATCHED) and any(c in mode for c in "wax+"):
            written.add(path)
    elif event in {"os.rename", "os.replace", "os.mkdir", "shutil.rmtree", "os.remove"} and args:
        path = os.path.abspath(os.fsdecode(args[0])) if isinstance(args[0], (str, bytes, os.PathLike)) else ""
        if path.startswith(WATCHED):
            written.add(f"{event}:{path}")


def report():
    rank = os.environ.get("RANK", "0")
    with open(os.path.join(os.environ["TRIAGE_TEST_WRITES"], f"writes-rank{rank}.txt"), "w") as fh:
        fh.write("\n".join(sorted(written)))


if __name__ == "__main__":
    kill_at = int(os.environ.get("TRIAGE_TEST_KILL_AT_STEP", "0"))
    if kill_at:
        import ticket_triage.training as training

        real = training.train_model

        def killed_at_step(*args, **kwargs):
            def on_step(step):
                if step == kill_at:
                    report()
                    os._exit(17)  # a hard crash: no clean-up, no exception handling

            kwargs["on_step"] = on_step
            return real(*args, **kwargs)

        training.train_model = killed_at_step
    sys.addaudithook(audit)
    from ticket_triage.cli import main

    try:
        main(sys.argv[1:])
    finally:
        report()
