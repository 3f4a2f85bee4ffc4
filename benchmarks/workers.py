"""One benchmark side in a fresh process: its result comes back as one JSON line.

A peer benchmark runs each framework in its own process so that their thread pools
never compete for the same cores. The worker prints `RESULT <json>` (`report`);
the driver runs `python -m MODULE ARGS` and reads that line back (`run_worker`).
"""

import json
import os
import subprocess
import sys
import time

PREFIX = "RESULT "
# Measurements during which other processes used more of the machine's CPU than
# this share are left out of a report (`quiet`).
QUIET_OTHER_CPU = 0.05


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
    result = parse_result(done.stdout)
    if done.returncode or result is None:
        raise RuntimeError(f"{what} worker failed (exit {done.returncode}):\n"
                           f"{done.stderr[-3000:]}")
    return result


def parse_result(stdout):
    """The last result a worker reported in `stdout` (`report`); None if it reported none."""
    lines = [line for line in stdout.splitlines() if line.startswith(PREFIX)]
    return json.loads(lines[-1][len(PREFIX):]) if lines else None


def machine_busy_seconds():
    """CPU-seconds every process on the machine has used (from /proc/stat)."""
    with open("/proc/stat") as f:
        fields = [float(v) for v in f.readline().split()[1:]]
    return (sum(fields) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")


def own_cpu_seconds():
    """CPU-seconds this process has used."""
    times = os.times()
    return times.user + times.system


def timed(fn, work):
    """Runs `fn()` once; returns {"rate": work / wall, "seconds", "other_cpu"}.

    `other_cpu` is the share of the machine's CPU that other processes used
    meanwhile (0.05: a twentieth of all cores), so that a report can leave out
    measurements a busy neighbour slowed down.
    """
    machine, own, start = machine_busy_seconds(), own_cpu_seconds(), time.perf_counter()
    fn()
    wall = time.perf_counter() - start
    used = (machine_busy_seconds() - machine) - (own_cpu_seconds() - own)
    # /proc/stat counts in clock ticks (10 ms), so over a short `fn` the share can
    # come out a little outside [0, 1]; it is a share, so it is clipped there.
    share = used / (wall * os.cpu_count())
    return {"rate": work / wall, "seconds": wall, "other_cpu": min(1.0, max(0.0, share))}


def quiet(rows, limit=QUIET_OTHER_CPU):
    """The measurements during which other processes used at most `limit` of the CPU.

    On a shared machine a busy neighbour halves a 2-core run's speed; counting
    only quiet measurements (or all of them, when none was quiet) keeps both
    sides comparable. Reports say how many counted.
    """
    kept = [r for r in rows if r["other_cpu"] <= limit]
    return kept or rows
