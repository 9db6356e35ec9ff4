"""Start `tuneforge train` runs for fault tests without paying the imports each time.

The server process imports torch, transformers and tuneforge once (running no torch op, so no
thread pool exists yet), then forks one child per request; each child is a fresh `tuneforge train`
with the fault hooks of `fault_worker`. A test that kills and reruns training ten times pays one
import instead of eleven. The server reaps children and reports `exit PID STATUS` lines.

Protocol (one JSON object per line on stdin): {"config": PATH, "stderr": PATH, "file": s, "step": s};
the server answers `pid PID`, and later `exit PID CODE` (negative: killed by that signal).
"""

import json
import os
import signal
import sys

from tests.train import fault_worker
from tuneforge.cli.main import main
from tuneforge.train.stages import sft  # noqa: F401 - import the stage (and the Trainer) before forking


def _reap(*_: object) -> None:
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        code = -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
        print(f"exit {pid} {code}", flush=True)


def _child(job: dict) -> None:
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    err = os.open(job["stderr"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    os.dup2(err, 2)
    os.dup2(os.open(os.devnull, os.O_WRONLY), 1)
    sys.stderr = os.fdopen(2, "w", buffering=1)
    fault_worker.install(file_delay=job.get("file", 0.0), step_delay=job.get("step", 0.0))
    code = 1
    try:
        code = main(["train", job["config"]])
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else 1
    except BaseException:
        import traceback

        traceback.print_exc()
    finally:
        sys.stderr.flush()
        os._exit(code or 0)


if __name__ == "__main__":
    signal.signal(signal.SIGCHLD, _reap)
    for line in sys.stdin:
        job = json.loads(line)
        pid = os.fork()
        if pid == 0:
            _child(job)
        print(f"pid {pid}", flush=True)
