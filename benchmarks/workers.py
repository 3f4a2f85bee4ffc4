"""One benchmark side in a fresh process: its result comes back as one JSON line.

A peer benchmark runs each framework in its own process so that their thread pools
never compete for the same cores. The worker prints `RESULT <json>` (`report`);
the driver runs `python -m MODULE ARGS` and reads that line back (`run_worker`).
"""

import json
import os
import subprocess
import sys

PREFIX = "RESULT "


def report(result):
    """Prints a worker's result for `run_worker` to read."""
    print(PREFIX + json.dumps(result), flush=True)


def run_worker(module, args, what):
    """Runs `python -m module *args` and returns the result it reported.

    Raises:
        RuntimeError: the worker failed or reported nothing; the message names
            `what` and ends with the worker's stderr.
    """
    done = subprocess.run([sys.executable, "-m", module, *args], capture_output=True,
                          text=True, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    lines = [line for line in done.stdout.splitlines() if line.startswith(PREFIX)]
    if done.returncode or not lines:
        raise RuntimeError(f"{what} worker failed (exit {done.returncode}):\n"
                           f"{done.stderr[-3000:]}")
    return json.loads(lines[-1][len(PREFIX):])
