"""Predict: batch inference with an exported SavedModel, on Beam's RunInference.

TFX's BulkInferrer, the Beam way: unlabelled text in, the model server's answers out,
for as much text as a Beam runner can spread. The SavedModel that Export wrote (and
Push served) is run as it is, raw-text signature, in-graph tokenizer and all, by
`apache_beam.ml.inference.RunInference`, so every line gets what the server would
answer for it.

Input (`--input`, a file or a glob): the readers of TaskData (`components.task_files`,
same formats and column flags), without labels:

- text tasks: one text per line (`.txt`), or TSV/CSV/JSONL with a `text` column (and
  `text_b` for text pairs); labels in the file are ignored;
- NER: CoNLL-style files (one word per line in the first column, a blank line between
  sentences; tag columns are ignored) or JSONL `{"words": [...]}` / `{"text": "..."}`;
  the text sent is given words joined by one space, or the given text as it is;
- SQuAD: SQuAD JSON (answers ignored), or TSV/CSV/JSONL with `text` (the question)
  and `text_b` (the context).

What to read is taken from the SavedModel's `serving_default` signature (`--task`
can say it instead): its inputs (`text`, and `text_b` for pairs and QA) and outputs
(entities, answers, classes or scores).

Output (`--output`): `predictions-SSSSS-of-NNNNN.jsonl`, one JSON object per input
example: `id` (`file:line`, the CoNLL sentence's first line, or the SQuAD question
id), the `text` (and `text_b`) sent, then the signature's outputs under their own
names, as the server returns them (`components.evaluate.signature_rows`):
`label`, `label_id` and `probabilities`; `score`; `entity_type`, `entity_text`,
`entity_start`, `entity_end` (character offsets into `text`, end exclusive),
`entity_score` and `num_entities`; `answer_text`, `answer_start`, `answer_end`
(character offsets into the context), `score` and `null_score`. Lines are ordered by
input file and position, whatever the runner.

Bad input lines are counted, never dropped silently: every `BAD_RECORD_KINDS` kind is
a Beam counter in namespace `predict`, and `predict_counts.json` holds the counts and
the first bad lines with their location and what was wrong.

Batches are cut from the input's own order (`--batch_size` examples of one file) and
handed to RunInference ready-made, so each example is computed in the same batch, and
so to the same bits, on the DirectRunner and the DaskRunner; the output files are the
same bytes on both.

Example:
    python -m components.predict --export_dir runs/default/serving/bert_classifier/1 \\
        --input 'unlabelled/*.txt' --output predictions/ --runner=DaskRunner
"""

import argparse
import collections
import dataclasses
import json
import logging
import os

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics
from apache_beam.ml.inference.base import ModelHandler, PredictionResult, RunInference

from components import cli, common, runners
from components.task_files import (
    BAD_RECORD_KINDS, BadRecord, ReadOptions, SquadRecord, TaskDataError, add_read_arguments,
    parse_file, read_options_from_args)
from keras_bert import tasks

STAGE = "predict"
COUNTS_FILE = "predict_counts.json"
PREDICTIONS_PREFIX = "predictions"
PREDICTIONS_SUFFIX = ".jsonl"
_BAD_TAG = "bad"
_STATS_TAG = "stats"

logger = logging.getLogger(__name__)


class PredictError(ValueError):
    """The SavedModel or the input can't be predicted on (no such file, wrong task)."""


@dataclasses.dataclass(frozen=True)
class PredictSpec:
    """The Predict stage; fields are the CLI flags of the same names.

    Attributes:
        export_dir: the SavedModel version folder (holding saved_model.pb).
        input_pattern: unlabelled input file or glob.
        output_dir: where the predictions and `predict_counts.json` go.
        task: how to read the input, a `keras_bert.tasks.TASKS` name. Defaults to
            None (what the SavedModel's signature serves).
        read: `ReadOptions` (format, column names). Defaults to ReadOptions().
        batch_size: examples per signature call. Defaults to 32.
        num_shards: prediction files. Defaults to 1.
        max_reported_bad_records: bad lines listed in the counts JSON. Defaults to 1000.
    """

    export_dir: str
    input_pattern: str
    output_dir: str
    task: str = None
    read: ReadOptions = ReadOptions()
    batch_size: int = 32
    num_shards: int = 1
    max_reported_bad_records: int = 1000

    def __post_init__(self):
        if self.task is not None and self.task not in tasks.TASKS:
            raise PredictError(f"task must be one of {tuple(tasks.TASKS)}; got {self.task!r}")
        if self.batch_size < 1:
            raise PredictError(f"batch_size must be >= 1; got {self.batch_size}")
        if self.num_shards < 1:
            raise PredictError(f"num_shards must be >= 1; got {self.num_shards}")

    @property
    def counts_path(self):
        return FileSystems.join(self.output_dir, COUNTS_FILE)

    @property
    def predictions_prefix(self):
        return FileSystems.join(self.output_dir, PREDICTIONS_PREFIX)

    def prediction_files(self):
        return [runners.shard_name(self.predictions_prefix, shard, self.num_shards,
                                   PREDICTIONS_SUFFIX) for shard in range(self.num_shards)]


# --------------------------------------------------------------------------------------
# What the SavedModel serves, and how its input is read.


def signature_io(export_dir):
    """({input names}, {output names}) of the SavedModel's `serving_default` signature.

    Read from `saved_model.pb` alone (no variables are loaded).
    """
    from tensorflow.core.protobuf import saved_model_pb2

    path = os.path.join(export_dir, "saved_model.pb")
    if not os.path.exists(path):
        raise PredictError(f"{export_dir}: no saved_model.pb (give the SavedModel's version "
                           f"folder, e.g. <serving_base>/<model_name>/1)")
    saved = saved_model_pb2.SavedModel()
    with open(path, "rb") as f:
        saved.ParseFromString(f.read())
    for meta in saved.meta_graphs:
        signature = meta.signature_def.get("serving_default")
        if signature is not None:
            return set(signature.inputs), set(signature.outputs)
    raise PredictError(f"{export_dir}: the SavedModel has no serving_default signature")


def reading_task(inputs, outputs, task=None):
    """The `task_files` task to read input for a signature with these inputs/outputs.

    Args:
        inputs: the signature's input names.
        outputs: its output names.
        task: the task the user named, checked against the signature. Defaults to None.

    Raises:
        PredictError: no raw-text signature, or `task` does not fit it.
    """
    if "text" not in inputs or not inputs <= {"text", "text_b"}:
        raise PredictError(f"serving_default takes {sorted(inputs)}, not raw text "
                           f"(text, text_b): export the model with keras_bert.export")
    if "entity_type" in outputs:
        served = "ner"
    elif "answer_text" in outputs:
        served = "squad1"  # squad1 and squad2 read alike
    elif "text_b" in inputs:
        served = "pair"
    else:
        served = "classification"
    if task is None:
        return served
    fits = {"ner": ("ner",), "squad1": ("squad1", "squad2"), "pair": ("pair", "regression"),
            "classification": ("classification", "regression")}[served]
    if task not in fits:
        raise PredictError(f"--task {task} does not fit the SavedModel: its serving_default "
                           f"takes {sorted(inputs)} and returns {sorted(outputs)}")
    return "pair" if "text_b" in inputs and task == "regression" else task


def request_of(example):
    """An example → the request fields sent for it: {"id", "text"(, "text_b")}."""
    if isinstance(example, SquadRecord):
        e = example.example
        return {"id": e.qas_id, "text": e.question, "text_b": e.context}
    if isinstance(example, tasks.TaggedExample):
        return {"id": example.guid, "text": " ".join(example.words)}
    request = {"id": example.guid, "text": example.text}
    if example.text_b is not None:
        request["text_b"] = example.text_b
    return request


def prediction_line(request, row):
    """One output line: the request's id and texts, then the served outputs."""
    return json.dumps({**request, **row}, ensure_ascii=False)


# --------------------------------------------------------------------------------------
# Beam.


def _count(kind, value=1):
    Metrics.counter(STAGE, kind).inc(value)


def read_file_bytes(path):
    """A file's bytes through Beam's filesystems (gzip/bz2 by extension)."""
    with FileSystems.open(path) as handle:
        return handle.read()


class ReadInputFn(beam.DoFn):
    """path → (batch key, ((path, index), request)); bad lines to `bad`, counts to `stats`.

    The batch key groups `batch_size` consecutive examples of one file, so batches
    follow the input's order on every runner.
    """

    def __init__(self, task, options, batch_size):
        self._task = task
        self._options = options
        self._batch_size = batch_size

    def process(self, path):
        stats = collections.Counter(files=1)
        index = 0
        for item in parse_file(read_file_bytes(path), path, self._task, self._options,
                               labelled=False):
            if isinstance(item, BadRecord):
                _count(item.kind)
                stats[f"bad/{item.kind}"] += 1
                yield beam.pvalue.TaggedOutput(_BAD_TAG, str(item))
                continue
            stats["examples"] += 1
            _count("examples")
            yield (f"{index // self._batch_size:012d}:{path}", ((path, index), request_of(item)))
            index += 1
        yield beam.pvalue.TaggedOutput(_STATS_TAG, dict(stats))


class ServingSignatureModelHandler(ModelHandler):
    """RunInference's model handler for a raw-text SavedModel's `serving_default`.

    Beam's own TensorFlow handlers (`tensorflow_inference.TFModelHandlerTensor`,
    `...Numpy`) load models with `tf.keras.models.load_model`, which reads Keras
    models but not a plain `tf.Module` SavedModel, and stack numeric tensors into
    one positional argument, where this signature takes string tensors by name
    (`text`, `text_b`). This handler loads the SavedModel with `tf.saved_model.load`,
    as the model server does, and calls the signature on a batch of requests; each
    `PredictionResult` carries the request and its row of `signature_rows`.

    Args:
        export_dir: the SavedModel version folder.
        batch_size: the most requests per signature call. Defaults to 32.
    """

    def __init__(self, export_dir, batch_size=32):
        super().__init__()
        self._export_dir = export_dir
        self._batch_size = batch_size

    def load_model(self):
        from components.evaluate import ServedModel
        return ServedModel(self._export_dir, self._batch_size)

    def run_inference(self, batch, model, inference_args=None):
        """Requests `((path, index), {"text"(, "text_b")})` → `PredictionResult`s."""
        from components.evaluate import signature_rows
        requests = [request for _, request in batch]
        texts_b = [r["text_b"] for r in requests] if "text_b" in model.inputs else None
        rows = signature_rows(model([r["text"] for r in requests], texts_b))
        return [PredictionResult(example, row, self._export_dir)
                for example, row in zip(batch, rows)]

    def get_num_bytes(self, batch):
        return sum(len(r["text"]) + len(r.get("text_b") or "") for _, r in batch)

    def get_metrics_namespace(self):
        return STAGE


def _sorted_batch(key_items):
    _, items = key_items
    return sorted(items, key=lambda item: item[0])


def _to_line(result):
    key, request = result.example
    return key, prediction_line(request, result.inference)


def _sum_counts(counts):
    total = collections.Counter()
    for c in counts:
        total.update(c)
    return dict(total)


def summarize(counters, bad_list, spec, task, files):
    """The counts JSON from the summed counters and the reported bad lines."""
    bad = {kind: int(counters.get(f"bad/{kind}", 0)) for kind in BAD_RECORD_KINDS}
    return {
        "export_dir": spec.export_dir,
        "input": spec.input_pattern,
        "task": task,
        "files": files,
        "examples": int(counters.get("examples", 0)),
        "predictions": int(counters.get("predictions", 0)),
        "batches": int(counters.get("batches", 0)),
        "bad_records": bad,
        "bad_records_total": sum(bad.values()),
        "bad_record_locations": sorted(bad_list)[: spec.max_reported_bad_records],
        "outputs": spec.prediction_files(),
    }


def build(pipeline, spec, task, files):
    """Adds the Predict steps to `pipeline`; returns the written paths' PCollection.

    Args:
        pipeline: a Beam pipeline.
        spec: a `PredictSpec`.
        task: the `task_files` task the input is read as (`reading_task`).
        files: the input files, sorted.
    """
    read = (pipeline
            | "ListFiles" >> beam.Create(files)
            | "ReadInput" >> runners.ParDoOutputs(ReadInputFn(task, spec.read, spec.batch_size),
                                                  tags=(_BAD_TAG, _STATS_TAG), main="requests"))
    handler = ServingSignatureModelHandler(spec.export_dir, spec.batch_size)
    batches = (read.requests
               | "Batch" >> beam.GroupByKey()
               | "SortBatch" >> beam.Map(_sorted_batch))
    # Ready-made batches: RunInference's own BatchElements would batch by bundle, and a
    # different batch can change the last bits of a float.
    results = batches | "RunInference" >> RunInference(handler.with_no_batching())
    written = (results
               | "ToJsonLines" >> beam.Map(_to_line)
               | "WritePredictions" >> runners.WriteTextShards(
                   spec.predictions_prefix, PREDICTIONS_SUFFIX, spec.num_shards))
    predicted = results | "CountPredictions" >> beam.Map(lambda _: {"predictions": 1})
    batched = batches | "CountBatches" >> beam.Map(lambda _: {"batches": 1})
    counters = ((read[_STATS_TAG], predicted, batched)
                | "MergeStats" >> beam.Flatten()
                | "SumStats" >> beam.CombineGlobally(_sum_counts).without_defaults())
    summary_inputs = {
        "counters": counters | "KeyCounters" >> beam.Map(lambda c: (None, c)),
        "bad": read[_BAD_TAG] | "KeyBad" >> beam.Map(lambda b: (None, b)),
    }
    summary = (summary_inputs
               | "JoinSummary" >> beam.CoGroupByKey()
               | "Summarize" >> beam.MapTuple(
                   lambda _, g: summarize(g["counters"][0], list(g["bad"]), spec, task, files))
               | "WriteCounts" >> beam.Map(runners.write_json, spec.counts_path))
    runners.done(pipeline, [written, summary])
    return written


def input_files(pattern):
    """The files `pattern` matches, sorted (PredictError when none)."""
    matched = sorted(m.path for m in FileSystems.match([pattern])[0].metadata_list)
    if not matched:
        raise PredictError(f"--input {pattern}: no file matches")
    return matched


def run(spec, pipeline_args=None):
    """Runs the job; returns the counts dict (also at `spec.counts_path`).

    Args:
        spec: a `PredictSpec`.
        pipeline_args: Beam options as command-line strings. Defaults to none
            (DirectRunner).

    Raises:
        PredictError: no SavedModel or input, a task that does not fit the
            SavedModel, or fewer predictions than examples read.

    Example:
        >>> counts = run(PredictSpec(export_dir="serving/bert/1", input_pattern="texts.txt",
        ...                          output_dir="predictions"))
        >>> counts["predictions"], counts["bad_records_total"]
    """
    inputs, outputs = signature_io(spec.export_dir)
    task = reading_task(inputs, outputs, spec.task)
    files = input_files(spec.input_pattern)
    if not FileSystems.exists(spec.output_dir):
        FileSystems.mkdirs(spec.output_dir)
    common.log_stage(STAGE, f"{len(files)} input file(s) read as {task} input, batches of "
                            f"{spec.batch_size}, SavedModel {spec.export_dir}")
    with runners.pipeline(pipeline_args) as pipeline:
        build(pipeline, spec, task, files)
    counts = runners.read_json(spec.counts_path)
    common.log_stage(STAGE, f"{counts['examples']} examples read, {counts['predictions']} "
                            f"predicted in {counts['batches']} batches -> "
                            f"{', '.join(counts['outputs'])}")
    common.log_bad_records(STAGE, counts["bad_records"])
    for location in counts["bad_record_locations"][:20]:
        logger.warning("%s", location)
    if counts["predictions"] != counts["examples"]:
        raise PredictError(f"{counts['examples']} examples read but {counts['predictions']} "
                           f"predicted; see {spec.counts_path}")
    return counts


def read_predictions(output_dir):
    """All prediction lines under `output_dir` (shards in order) as dicts."""
    paths = sorted(FileSystems.match([FileSystems.join(
        output_dir, f"{PREDICTIONS_PREFIX}-*{PREDICTIONS_SUFFIX}")])[0].metadata_list,
        key=lambda m: m.path)
    out = []
    for meta in paths:
        with FileSystems.open(meta.path) as handle:
            out += [json.loads(line) for line in handle.read().decode("utf-8").splitlines()]
    return out


def parse_args(argv=None):
    """Known flags → (`PredictSpec`, remaining Beam arguments)."""
    d = PredictSpec
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    parser.add_argument("--export_dir", required=True,
                        help="The SavedModel version folder, e.g. <serving_base>/<model_name>/1.")
    parser.add_argument("--input", required=True, help="Unlabelled input file or glob.")
    parser.add_argument("--output", required=True, help="Output directory.")
    parser.add_argument("--task", default=None, choices=tuple(tasks.TASKS),
                        help="How to read the input (default: what the SavedModel serves).")
    parser.add_argument("--batch_size", type=int, default=d.batch_size)
    parser.add_argument("--num_shards", type=int, default=d.num_shards)
    parser.add_argument("--max_reported_bad_records", type=int, default=d.max_reported_bad_records)
    add_read_arguments(parser)
    args, pipeline_args = cli.parse_with_beam_args(parser, argv)
    spec = PredictSpec(export_dir=args.export_dir, input_pattern=args.input,
                       output_dir=args.output, task=args.task,
                       read=read_options_from_args(args), batch_size=args.batch_size,
                       num_shards=args.num_shards,
                       max_reported_bad_records=args.max_reported_bad_records)
    return spec, pipeline_args


def main(argv=None):
    spec, pipeline_args = parse_args(argv)
    try:
        run(spec, pipeline_args)
    except (PredictError, TaskDataError) as e:
        raise SystemExit(f"error: {e}") from None


if __name__ == "__main__":
    logging.getLogger().setLevel(logging.INFO)
    main()
