"""Board jobs: `llm-tuning` commands run as subprocesses, their state kept under WORKDIR/.board/jobs/.

    manager = JobManager(workdir); job_id = manager.start("train", ["--data", "d.jsonl"], output_dir="weights/a")
    manager.status(job_id); manager.stop(job_id); manager.resume(job_id)

Everything about a job is in its folder (job.json, log.txt, pid.json, exit.json), so a reloaded page, or a
new board on the same folder, finds running and finished jobs where it left them. Stop sends SIGTERM
(`train` saves a checkpoint at the current step and its adapter) and a second Stop kills the process group.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from llm_tuning.board.forms import shell_line
from llm_tuning.board.paths import HIDDEN
from llm_tuning.board.progress import parse_progress, parse_records, tail
from llm_tuning.files import write_json

logger = logging.getLogger(__name__)

LOG_LIMIT = 4 << 20  # bytes of a log read for the chart; the tail comes from the end


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _running(pid: int, folder: Path) -> bool:
    """Whether `pid` is alive and is this job's runner (not another process that got its number)."""
    try:
        os.kill(pid, 0)
        stat = Path(f"/proc/{pid}/stat").read_text()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, ProcessLookupError):
        return False
    if stat.rsplit(")", 1)[-1].split()[0] == "Z":  # exited, not yet reaped by the board that started it
        return False
    # a process that has just been started can show an empty command line for a moment (measured)
    return not cmdline or str(folder).encode() in cmdline


class JobManager:
    """Starts, lists, stops and reads jobs; any number of managers may share one working folder."""

    def __init__(self, workdir: str | Path) -> None:
        self.workdir = Path(workdir).resolve()
        self.root = self.workdir / HIDDEN / "jobs"
        self.children: dict[
            str, subprocess.Popen
        ] = {}  # started here: polled so they do not linger as zombies

    def start(self, command: str, args: list[str], label: str = "", output_dir: str | None = None,
              extra: dict[str, Any] | None = None) -> str:  # fmt: skip
        job_id = time.strftime("%Y%m%d-%H%M%S-") + secrets.token_hex(2)
        folder = self.root / job_id
        folder.mkdir(parents=True)
        argv = [*command.split(" "), *args]
        write_json(folder / "job.json", {"id": job_id, "command": command, "argv": argv, "label": label or command,
                                         "workdir": str(self.workdir), "output_dir": output_dir,
                                         "started": time.time(), "shell": shell_line(command, args),
                                         **(extra or {})})  # fmt: skip
        child = subprocess.Popen([sys.executable, "-m", "llm_tuning.board.runner", str(folder)], cwd=self.workdir,
                                 stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                 stderr=open(folder / "runner.err", "wb"), start_new_session=True)  # fmt: skip
        self.children[job_id] = child
        write_json(folder / "pid.json", {"pid": child.pid})
        logger.info("job %s: %s", job_id, " ".join(argv))
        return job_id

    def folder(self, job_id: str) -> Path:
        folder = self.root / job_id
        if not job_id or "/" in job_id or job_id.startswith(".") or not (folder / "job.json").is_file():
            raise KeyError(job_id)
        return folder

    def state(self, job_id: str) -> tuple[str, int | None]:
        """(queued | running | done | failed | stopped | lost, exit code)."""
        folder = self.folder(job_id)
        child = self.children.get(job_id)
        pid = (_read_json(folder / "pid.json") or {}).get("pid")
        # liveness first, exit.json second: the runner writes exit.json before it exits, so a runner seen
        # gone here has already written it (the other order could call a job that just ended "lost")
        if child is not None:
            alive = child.poll() is None
        else:
            alive = pid is not None and _running(pid, folder)
        ended = _read_json(folder / "exit.json")
        if ended is not None:
            rc = ended["rc"]
            if (folder / "stop.json").exists():
                return "stopped", rc  # rc 0: it saved a checkpoint where it stopped (train/stop.py)
            return ("done" if rc == 0 else "failed"), rc
        if pid is None:
            return "queued", None
        if alive:
            return "running", None
        return "lost", None  # the runner died without writing exit.json (killed with the machine, kill -9)

    def ids(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted((p.name for p in self.root.iterdir() if (p / "job.json").is_file()), reverse=True)

    def summary(self, job_id: str) -> dict[str, Any]:
        folder = self.folder(job_id)
        job = _read_json(folder / "job.json") or {}
        status, rc = self.state(job_id)
        out = {k: job.get(k) for k in ("id", "command", "label", "output_dir", "started", "shell", "resumes")}
        out.update(status=status, rc=rc, ended=(_read_json(folder / "exit.json") or {}).get("ended"))
        final = self.final_log(job)
        out["final_loss"] = (final or {}).get("summary", {}).get("train_loss") if rc == 0 else None
        return out

    def final_log(self, job: dict[str, Any]) -> dict[str, Any] | None:
        if not job.get("output_dir"):
            return None
        return _read_json(self.workdir / job["output_dir"] / "training_log.json")

    def status(self, job_id: str, lines: int = 40) -> dict[str, Any]:
        """The summary, the progress bar's state, the logged numbers and the log's last lines."""
        folder = self.folder(job_id)
        job = _read_json(folder / "job.json") or {}
        out = self.summary(job_id)
        text = self.log(job_id)
        out["progress"] = parse_progress(text)
        out["records"] = parse_records(text, int(job.get("logging_steps") or 10))
        final = self.final_log(job) if out["rc"] == 0 else None
        if final and final.get("log"):
            out["records"] = [r for r in final["log"] if "loss" in r or "eval_loss" in r]
        out["log_tail"] = tail(text, lines)
        out["adapter"] = (
            bool(job.get("output_dir"))
            and (self.workdir / job["output_dir"] / "adapter_config.json").is_file()
        )
        return out

    def log(self, job_id: str) -> str:
        path = self.folder(job_id) / "log.txt"
        if not path.is_file():
            return ""
        with open(path, "rb") as f:
            size = f.seek(0, os.SEEK_END)
            f.seek(max(0, size - LOG_LIMIT))
            return f.read().decode("utf-8", errors="replace")

    def stop(self, job_id: str) -> str:
        """SIGTERM to the runner, passed on to the CLI (train saves a checkpoint where it is and ends as at the
        end of a run: train/stop.py); a second call kills the whole process group."""
        folder = self.folder(job_id)
        if self.state(job_id)[0] != "running":
            return "not running"
        pid = (_read_json(folder / "pid.json") or {})["pid"]
        again = (folder / "stop.json").exists()
        write_json(folder / "stop.json", {"at": time.time()})
        if again:
            os.killpg(pid, signal.SIGKILL)
            return "killed"
        os.kill(pid, signal.SIGTERM)
        return "stopping"

    def resume(self, job_id: str) -> str:
        """The same command again with --resume_from_checkpoint latest (the run's own newest checkpoint)."""
        job = _read_json(self.folder(job_id) / "job.json") or {}
        if self.state(job_id)[0] == "running":
            raise ValueError(f"job {job_id} is still running")
        argv = list(job["argv"])
        command = job["command"]
        args = argv[len(command.split(" ")) :]
        if "--resume_from_checkpoint" in args:
            i = args.index("--resume_from_checkpoint")
            del args[i : i + 2]
        extra = {k: job[k] for k in ("logging_steps",) if k in job}
        return self.start(command, [*args, "--resume_from_checkpoint", "latest"], f"{job.get('label')} (resumed)",
                          job.get("output_dir"), {**extra, "resumes": job_id})  # fmt: skip
