"""`tuneforge train` with hooks for fault-injection tests: a pause after each checkpoint file is
hashed (so a kill can land mid-write) and optionally a pause per training forward pass.

Usage: python -m tests.train.fault_worker CONFIG.yaml  (env FAULT_FILE_DELAY, FAULT_STEP_DELAY seconds);
`fork_server` installs the same hooks in each run it forks.
"""

import os
import sys
import time

from tuneforge.cli.main import main
from tuneforge.train import checkpoint
from tuneforge.train import trainer as trainer_module


def install(file_delay: float, step_delay: float) -> None:
    real_loss = trainer_module.answer_only_loss

    def slow_loss(model, inputs, num_items, *rest):
        time.sleep(step_delay)
        return real_loss(model, inputs, num_items, *rest)

    checkpoint._pause_between_files = lambda: time.sleep(file_delay)
    trainer_module.answer_only_loss = slow_loss


if __name__ == "__main__":
    install(float(os.environ.get("FAULT_FILE_DELAY", "0")), float(os.environ.get("FAULT_STEP_DELAY", "0")))
    sys.exit(main(["train", *sys.argv[1:]]))
