"""`tuneforge train` with hooks for fault-injection tests: a pause after each checkpoint file is
hashed (so a kill can land mid-write) and optionally a pause per training forward pass.

Usage: python -m tests.train.fault_worker CONFIG.yaml  (env FAULT_FILE_DELAY, FAULT_STEP_DELAY seconds)
"""

import os
import sys
import time

from tuneforge.cli.main import main
from tuneforge.train import checkpoint
from tuneforge.train import trainer as trainer_module

FILE_DELAY = float(os.environ.get("FAULT_FILE_DELAY", "0"))
STEP_DELAY = float(os.environ.get("FAULT_STEP_DELAY", "0"))
_real_loss = trainer_module.answer_only_loss


def slow_loss(model, inputs, num_items):
    time.sleep(STEP_DELAY)
    return _real_loss(model, inputs, num_items)


if __name__ == "__main__":
    checkpoint._pause_between_files = lambda: time.sleep(FILE_DELAY)
    trainer_module.answer_only_loss = slow_loss
    sys.exit(main(["train", *sys.argv[1:]]))
