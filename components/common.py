"""What the stages share and no stage owns: stage logging, statistics JSON, counters.

Every stage logs through `stage_logger(STAGE)`: one format, `<time> [<stage>] <message>`,
to standard output (where progress lines of Beam jobs and training runs go), whether
the stage runs under `python -m pipeline.run` or on its own.
"""

import collections
import json
import logging
import sys

import apache_beam as beam
from apache_beam.io.filesystems import CompressionTypes, FileSystems
from apache_beam.metrics import Metrics

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


def write_json(value, path):
    """Writes `value` as JSON to `path` through Beam's filesystems; returns `path`."""
    with FileSystems.create(path, mime_type="application/json") as handle:
        handle.write(json.dumps(value, indent=2, sort_keys=True).encode("utf-8"))
    return path


def read_json(path):
    """Reads a JSON file through Beam's filesystems."""
    with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as handle:
        return json.loads(handle.read().decode("utf-8"))


class SumCounts(beam.CombineFn):
    """Sums dicts of counts (per-file or per-bundle statistics) into one dict."""

    def create_accumulator(self):
        return collections.Counter()

    def add_input(self, accumulator, element):
        accumulator.update(element)
        return accumulator

    def merge_accumulators(self, accumulators):
        total = collections.Counter()
        for accumulator in accumulators:
            total.update(accumulator)
        return total

    def extract_output(self, accumulator):
        return dict(sorted(accumulator.items()))


def increment_counters(namespace, stats):
    """Adds `stats` to the Beam counters of `namespace`."""
    for name, value in stats.items():
        if value:
            Metrics.counter(namespace, name).inc(value)
