"""SIGKILL inside every stage of `python -m pipeline.run`, then the same command again.

One chain of runs on the tiniest pipeline: the first run is killed inside
ExampleGen, the rerun (the same command) is killed inside Vocab, the next inside
PretrainingData, and so on to Evaluate; a last rerun finishes. Push, which takes
milliseconds, gets the state its kill leaves reproduced on disk (see the test). A stage is killed once
its output folder holds a file (so the kill leaves partial output) or, for stages
that write at the very end, shortly after it started. After every kill:

* the killed stage is not recorded as succeeded, and
* every stage recorded as succeeded has exactly the output of an uninterrupted run
  (byte for byte, for the deterministic stages).

At the end every stage has succeeded, the deterministic stages' outputs equal the
uninterrupted run's, and Push served exactly one version (a killed Push does not
push twice, and no half-copied version folder is left where a server looks).
"""

import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest

STAGES = ["ExampleGen", "Vocab", "PretrainingData", "Pretrain", "TaskData", "Finetune",
          "Export", "Evaluate", "Push"]
# Stages whose output files are a function of their inputs and seed (no clock, no
# absolute paths): compared byte for byte with the uninterrupted run.
DETERMINISTIC = ["ExampleGen", "Vocab", "PretrainingData", "Pretrain", "TaskData"]
TINY = ["--runner=DirectRunner", "--data_fraction=0.1", "--model=tiny", "--vocab_size=700",
        "--dupe_factor=1", "--pretrain_steps=4", "--pretrain_batch_size=8",
        "--finetune_epochs=1", "--finetune_batch_size=8", "--max_seq_length=32",
        "--max_predictions_per_seq=4", "--bless_margin=-1", "--noserve_check"]
# Files that legitimately differ between two runs: timings, time stamps and names
# made of the clock and the process id (TensorBoard event files).
VOLATILE = ("history.json", "pretrain_metrics.json", "metrics.json", "checkpoint")


# The uninterrupted run of the deterministic stages (the first five of the plan):
# `pipeline.run.run_pipeline` with the same flags, stopped after them, so the
# reference costs no fine-tuning and no export.
REFERENCE = """
import sys
from pipeline import stages
from pipeline.config import parse_flags
from pipeline.run import run_pipeline
config, beam_args = parse_flags(sys.argv[1:])
plan = stages.plan(config)
assert [s.name for s in plan[:5]] == {names!r}
run_pipeline(config, beam_args, plan=plan[:5])
""".format(names=DETERMINISTIC)


class _Run:
    """`python -m pipeline.run` in its own process group, stdout collected by a thread."""

    def __init__(self, root, reference=False):
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONUNBUFFERED="1")
        program = ["-c", REFERENCE] if reference else ["-m", "pipeline.run"]
        self.proc = subprocess.Popen(
            [sys.executable, *program, f"--pipeline_root={root}", *TINY],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
            start_new_session=True)
        self.lines = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self):
        for line in self.proc.stdout:
            self.lines.append(line)

    def output(self):
        return "".join(self.lines)

    def kill(self):
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()
        self._reader.join(timeout=10)

    def wait(self, timeout):
        self.proc.wait(timeout)
        self._reader.join(timeout=10)
        return self.proc.returncode


def _files(pipeline_root, stage):
    """{relative path: bytes} of the files of a stage's output (volatile ones left out).

    The pipeline root is written as "<root>" where a file names it (e.g. the default
    data's index of its own files), so two roots can be compared.
    """
    folder = os.path.join(pipeline_root, stage, "output")
    out = {}
    for root, _, names in os.walk(folder):
        for name in names:
            if name in VOLATILE or name.startswith("events.out.tfevents."):
                continue
            path = os.path.join(root, name)
            with open(path, "rb") as f:
                data = f.read()
            out[os.path.relpath(path, folder)] = data.replace(pipeline_root.encode(), b"<root>")
    return out


def _record(root, stage):
    path = os.path.join(root, stage, "record.json")
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def _has_files(folder):
    for _, _, names in os.walk(folder):
        if names:
            return True
    return False


# How long after a stage started the kill waits for its first output file. ExampleGen
# (the default data, then Beam shards), PretrainingData (spill files, then shards),
# Pretrain, TaskData and Finetune write early and for a while; Vocab writes one
# file at its end, Export and Evaluate only at their end: they are killed at once,
# mid-computation, so the test does not pay for their work twice.
WAIT_FOR_OUTPUT_S = {"ExampleGen": 20.0, "PretrainingData": 20.0, "Pretrain": 20.0,
                     "TaskData": 20.0, "Finetune": 20.0}


def _kill_inside(run, root, stage, index, timeout_s=600):
    """Waits until `stage` runs and has written something (or waited enough); kills."""
    grace_s = WAIT_FOR_OUTPUT_S.get(stage, 1.0)
    marker = f"[{index}/{len(STAGES)}] {stage}: r"  # "running" or "resuming"
    deadline = time.monotonic() + timeout_s
    started = None
    while time.monotonic() < deadline:
        if run.proc.poll() is not None:
            raise AssertionError(f"the pipeline ended before {stage} was killed:\n"
                                 + run.output()[-3000:])
        if started is None and marker in run.output():
            started = time.monotonic()
        if started is not None and (_has_files(os.path.join(root, stage, "output"))
                                    or time.monotonic() - started > grace_s):
            partial = _has_files(os.path.join(root, stage, "output"))
            run.kill()
            later = f"[{index + 1}/{len(STAGES)}]"
            assert later not in run.output(), f"{stage} ended before the kill; the test is late"
            return partial
        time.sleep(0.02)
    run.kill()
    raise AssertionError(f"{stage} did not start within {timeout_s} s:\n" + run.output()[-3000:])


def _check_records(root, reference, killed=None):
    for stage in STAGES:
        record = _record(root, stage)
        if record is None:
            continue
        if stage == killed:
            assert record["outcome"] != "succeeded", f"{stage} recorded success after SIGKILL"
        if record["outcome"] == "succeeded" and stage in DETERMINISTIC:
            got = _files(root, stage)
            want = _files(reference, stage)
            assert sorted(got) == sorted(want), (stage, sorted(set(got) ^ set(want)))
            differ = [name for name in got if got[name] != want[name]]
            assert not differ, f"{stage}: {differ} differ from the uninterrupted run"


@pytest.mark.slow
def test_sigkill_inside_every_stage_then_rerun(tmp_path):
    reference, root = str(tmp_path / "reference"), str(tmp_path / "killed")
    started = time.monotonic()
    run = _Run(reference, reference=True)
    assert run.wait(900) == 0, run.output()[-4000:]
    reference_s = time.monotonic() - started
    kills = {}
    for index, stage in enumerate(STAGES[:-1], 1):
        run = _Run(root)
        kills[stage] = _kill_inside(run, root, stage, index)
        _check_records(root, reference, killed=stage)
    run = _Run(root)
    assert run.wait(900) == 0, run.output()[-4000:]
    for stage in STAGES:
        assert _record(root, stage)["outcome"] == "succeeded", stage
    _check_records(root, reference)
    serving = os.path.join(root, "serving", "bert_classifier")
    assert sorted(os.listdir(serving)) == ["1"], os.listdir(serving)
    # Push is over in milliseconds, too fast to kill from outside: its crash window,
    # killed after the version folder was renamed into place but before the record
    # said so, is put on disk as such a kill leaves it (with a half copy of a second
    # attempt beside it). The rerun must not serve the same export twice.
    record_path = os.path.join(root, "Push", "record.json")
    with open(record_path) as f:
        record = json.load(f)
    record.update(outcome="running", end=None, outputs={}, metrics={})
    with open(record_path, "w") as f:
        json.dump(record, f)
    os.makedirs(os.path.join(serving, ".push-2", "variables"))
    kills["Push"] = True
    run = _Run(root)
    assert run.wait(900) == 0, run.output()[-4000:]
    assert "Push: resuming" in run.output() and "already pushed as version 1" in run.output()
    assert _record(root, "Push")["outcome"] == "succeeded"
    assert _record(root, "Push")["outputs"]["version"] == 1
    assert sorted(n for n in os.listdir(serving) if n.isdigit()) == ["1"], os.listdir(serving)
    print(f"\n[kill] reference run {reference_s:.0f} s, kill chain "
          f"{time.monotonic() - started - reference_s:.0f} s; killed with partial output in: "
          f"{[s for s, partial in kills.items() if partial]}, before any output in: "
          f"{[s for s, partial in kills.items() if not partial]}")
