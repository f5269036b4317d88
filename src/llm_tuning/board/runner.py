"""Runs one board job: the real `llm-tuning` CLI as a child process, its output in the job's log file.

    python -m llm_tuning.board.runner WORKDIR/.board/jobs/JOB_ID

The board starts this in its own session, so a job outlives the page and the board itself (a restarted
board reattaches by reading the job folder). SIGINT / SIGTERM are passed on to the CLI (which stops with
its last checkpoint on disk); when the CLI exits, its exit code goes to `exit.json`, written atomically.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from llm_tuning.files import write_json


def main(job_dir: str) -> int:
    folder = Path(job_dir)
    job = json.loads((folder / "job.json").read_text(encoding="utf-8"))
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "TOKENIZERS_PARALLELISM": "false"}
    with open(folder / "log.txt", "ab") as log:
        child = subprocess.Popen([sys.executable, "-m", "llm_tuning.cli", *job["argv"]], cwd=job["workdir"],
                                 stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env)  # fmt: skip

        def forward(signum: int, frame: object) -> None:
            if child.poll() is None:
                child.send_signal(signum)

        signal.signal(signal.SIGINT, forward)
        signal.signal(signal.SIGTERM, forward)
        write_json(folder / "child.json", {"pid": child.pid})
        rc = child.wait()
    write_json(folder / "exit.json", {"rc": rc, "ended": time.time()})
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
