"""Run `triage predict ...` under torchrun, killing one rank part-way (test_predict_distributed.py).

TRIAGE_TEST_KILL_RANK names the rank that dies (os._exit: no clean-up) after writing its first
chunk, once the part named by TRIAGE_TEST_KILL_AFTER (a receipt file) exists, so the other
rank's finished part is there to be kept by the rerun.
"""

import os
import sys
import time

if __name__ == "__main__":
    import ticket_triage.inference.distributed_predict as dp

    real = dp.iter_share

    def dying(plan, share, chunk_rows=8192):
        chunks = real(plan, share, chunk_rows)
        yield next(chunks)
        if os.environ.get("RANK") == os.environ["TRIAGE_TEST_KILL_RANK"]:
            deadline = time.time() + 300
            while not os.path.exists(os.environ["TRIAGE_TEST_KILL_AFTER"]) and time.time() < deadline:
                time.sleep(0.1)
            os._exit(17)
        yield from chunks

    dp.iter_share = dying
    from ticket_triage.cli import main

    main(sys.argv[1:])
