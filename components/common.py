"""What every stage shares and no stage owns: its log lines (no Beam, no TensorFlow).

What the Beam jobs share (statistics JSON, counters, output helpers) is in
`components.runners`.

Every stage logs through `stage_logger(STAGE)`: one format, `<time> [<stage>] <message>`,
to standard output (where progress lines of Beam jobs and training runs go), whether
the stage runs under `python -m pipeline.run` or on its own.
"""

import logging
import sys

LOGGER = "keras_bert_pipeline"
LOG_FORMAT = "%(asctime)s [%(stage)s] %(message)s"


class _StdoutHandler(logging.StreamHandler):
    """Writes to the current `sys.stdout` (which pytest and notebooks replace)."""

    def __init__(self):
        super().__init__(sys.stdout)

    @property
    def stream(self):
        return sys.stdout

    @stream.setter
    def stream(self, value):
        pass


class _StageFormatter(logging.Formatter):
    def format(self, record):
        record.stage = record.name.rsplit(".", 1)[-1]
        return super().format(record)


def stage_logger(stage):
    """The logger of one stage (`keras_bert_pipeline.<stage>`), configured on first use.

    Args:
        stage: the stage's name as it appears in log lines, e.g. "example_gen".

    Returns:
        A `logging.Logger` at INFO level writing `<time> [<stage>] <message>` lines.
    """
    parent = logging.getLogger(LOGGER)
    if not parent.handlers:
        handler = _StdoutHandler()
        handler.setFormatter(_StageFormatter(LOG_FORMAT, datefmt="%H:%M:%S"))
        parent.addHandler(handler)
        parent.setLevel(logging.INFO)
        # TensorFlow and Beam configure the root logger; these lines are shown once.
        parent.propagate = False
    return logging.getLogger(f"{LOGGER}.{stage}")


def log_stage(stage, text):
    """Logs one progress line of `stage` (flushed at once)."""
    stage_logger(stage).info(text)


def log_bad_records(stage, bad):
    """One line summing up a run's bad records.

    Args:
        stage: the stage's name.
        bad: {kind: count} of bad records (zeros included or not).
    """
    details = " ".join(f"{name}={count}" for name, count in bad.items() if count)
    log_stage(stage, f"bad records: {sum(bad.values())}" + (f" ({details})" if details else ""))
