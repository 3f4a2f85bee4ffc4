"""TaskData: fine-tuning data (GLUE TSV, CSV, JSONL, CoNLL-2003, SQuAD) → TFRecords (Beam).

Reads a train split and optionally dev and test splits (`components.task_files` parses
them: formats, column flags and bad-record kinds are described there), turns every
example into model features with `keras_bert.tasks` and writes, under `--output`
(the layout is `components.task_records`, which Finetune reads back):

- `train.tfrecord`, `dev.tfrecord`, `test.tfrecord`: tf.Examples with the shared
  feature names (`features.task_feature_spec`: `classification_feature_spec`,
  `token_classification_feature_spec`, `span_feature_spec`), written with the one
  deterministic serializer (`features.serialize_example`), examples in file order
  and the records of one example consecutive (deterministic output);
- `train.examples.jsonl`, ...: the sidecar, one line per example in record order
  with what predictions need to map back to text (texts and gold labels, NER words
  and window positions, SQuAD contexts, token character offsets and windows);
- `labels.txt`: the label vocabulary, one label per line, line number = label id
  (classification and NER; taken from `--labels` or, by default, from the train
  split, sorted, with `O` first for NER);
- `task_data_stats.json`: examples and records per split, label counts, every bad
  record counted by kind, and the first `max_reported_bad_records` bad records with
  their location (`file:line`, or `file: question <id>`) and what was wrong.

Bad records never crash the job and are never dropped uncounted; each kind
(`BAD_RECORD_KINDS`) is a Beam counter in namespace `task_data`.

Example:
    python -m components.task_data --task pair --train MRPC/train.tsv --dev MRPC/dev.tsv \\
        --text_column "#1 String" --text_b_column "#2 String" --label_column Quality \\
        --vocab vocab.txt --output out/mrpc --max_seq_length 128
"""

import argparse
import collections
import dataclasses
import logging
import os
import shutil
import tempfile

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics

from components import cli, common, runners, task_records
# The parsers live in `components.task_files` (no Beam).
from components.task_files import (
    BAD_RECORD_KINDS, LABELS_FILE, BadRecord, ReadOptions, SquadRecord, TaskDataError,
    add_read_arguments, example_labels, infer_labels, parse_file, read_options_from_args,
    write_labels)
from keras_bert import features as F
from keras_bert import tasks

STAGE = "task_data"
STATS_FILE = task_records.STATS_FILE
SPLITS = task_records.SPLITS
_BAD_TAG = "bad"
_STATS_TAG = "stats"
# Shards of examples that an inferred label set is joined with (one worker each).
CONVERT_SHARDS = 16

logger = logging.getLogger(__name__)


def read_file_bytes(path):
    """A file's bytes through Beam's filesystems (gzip/bz2 by extension)."""
    matches = FileSystems.match([path])[0].metadata_list
    if not matches:
        raise TaskDataError(f"{path}: no such file")
    with FileSystems.open(matches[0].path) as handle:
        return handle.read()


# --------------------------------------------------------------------------------------
# Beam.


@dataclasses.dataclass(frozen=True)
class TaskDataSpec:
    """The TaskData stage; fields are the CLI flags of the same names.

    Attributes:
        task: one of `keras_bert.tasks.TASKS`.
        train: train file (glob allowed).
        vocab_path: vocab.txt.
        output_dir: where records, labels.txt and the stats JSON go.
        dev: dev file (glob allowed). Defaults to None.
        test: test file (glob allowed). Defaults to None.
        do_lower_case: the tokenizer lower-cases. Defaults to True.
        max_seq_length: tokens per record. Defaults to 128.
        max_query_length: SQuAD question tokens kept. Defaults to 64.
        doc_stride: tokens between window starts (SQuAD contexts, long NER
            sentences). Defaults to 128 (NER: half a window when 0).
        labels: the label set; None infers it from the train split. Defaults to None.
        read: `ReadOptions`. Defaults to ReadOptions().
        max_reported_bad_records: bad records listed in the stats JSON. Defaults to 1000.
    """

    task: str
    train: str
    vocab_path: str
    output_dir: str
    dev: str = None
    test: str = None
    do_lower_case: bool = True
    max_seq_length: int = 128
    max_query_length: int = 64
    doc_stride: int = 128
    labels: tuple = None
    read: ReadOptions = ReadOptions()
    max_reported_bad_records: int = 1000

    def __post_init__(self):
        if self.task not in tasks.TASKS:
            raise TaskDataError(f"task must be one of {tasks.TASKS}; got {self.task!r}")
        if self.max_seq_length < 3:
            raise TaskDataError(f"max_seq_length must be >= 3; got {self.max_seq_length}")

    @property
    def splits(self):
        return {name: path for name, path in (("train", self.train), ("dev", self.dev),
                                              ("test", self.test)) if path}

    @property
    def stats_path(self):
        return FileSystems.join(self.output_dir, STATS_FILE)

    @property
    def labels_path(self):
        return FileSystems.join(self.output_dir, LABELS_FILE)

    def records_path(self, split):
        return FileSystems.join(self.output_dir, task_records.records_file(split))

    def sidecar_path(self, split):
        return FileSystems.join(self.output_dir, task_records.sidecar_file(split))

    @property
    def has_labels(self):
        return self.task in ("classification", "pair", "ner")


def _count(kind, value=1):
    Metrics.counter(STAGE, kind).inc(value)


class ReadTaskFileFn(beam.DoFn):
    """(split, path) → (split, key, example); bad records to `bad`, counts to `stats`."""

    def __init__(self, task, options):
        self._task = task
        self._options = options

    def process(self, split_path):
        split, path = split_path
        stats = collections.Counter(files=1)
        for index, item in enumerate(parse_file(read_file_bytes(path), path, self._task,
                                                self._options)):
            if isinstance(item, BadRecord):
                _count(item.kind)
                stats[f"{split}/bad/{item.kind}"] += 1
                yield beam.pvalue.TaggedOutput(_BAD_TAG, (split, str(item)))
                continue
            stats[f"{split}/examples"] += 1
            _count(f"{split}_examples")
            # Records are written in file order: (file, position in the file).
            yield split, (path, index), item
        yield beam.pvalue.TaggedOutput(_STATS_TAG, dict(stats))


class ConvertFn(beam.DoFn):
    """(split, key, example) → (split, (key, serialized records, sidecar line)); bad ones
    to `bad`."""

    def __init__(self, spec):
        self._spec = spec

    def setup(self):
        from keras_bert.tokenizer import BertTokenizer

        self._tmp = tempfile.mkdtemp(prefix="vocab")
        local = os.path.join(self._tmp, "vocab.txt")
        with FileSystems.open(self._spec.vocab_path) as source, open(local, "wb") as target:
            shutil.copyfileobj(source, target)
        self._tokenizer = BertTokenizer.from_vocab(local, do_lower_case=self._spec.do_lower_case)

    def teardown(self):
        shutil.rmtree(getattr(self, "_tmp", ""), ignore_errors=True)

    def process(self, element, labels):
        split, key, example = element
        spec = self._spec
        label_map = {label: i for i, label in enumerate(labels)}
        stats = collections.Counter()
        location = (f"{key[0]}: question {example.example.qas_id}"
                    if isinstance(example, SquadRecord) else example.guid)
        unknown = [l for l in example_labels(example) if spec.has_labels and l not in label_map]
        if unknown:
            bad = BadRecord("unknown_label", location,
                            f"label {unknown[0]!r} is not in the label set {labels}")
        else:
            try:
                records, meta = task_records.convert_example(
                    example, self._tokenizer, spec.task, label_map, spec.max_seq_length,
                    spec.doc_stride, spec.max_query_length)
                bad = None
            except tasks.TaskInputError as e:
                bad = BadRecord("untokenizable", location, str(e))
        if bad is not None:
            _count(bad.kind)
            stats[f"{split}/bad/{bad.kind}"] += 1
            yield beam.pvalue.TaggedOutput(_BAD_TAG, (split, str(bad)))
        else:
            stats[f"{split}/records"] += len(records)
            stats[f"{split}/converted_examples"] += 1
            for label in example_labels(example):
                stats[f"{split}/label/{label}"] += 1
            _count(f"{split}_records", len(records))
            yield split, (key, [F.serialize_example(r) for r in records],
                          task_records.sidecar_line(meta))
        yield beam.pvalue.TaggedOutput(_STATS_TAG, dict(stats))


class ConvertShardFn(ConvertFn):
    """`ConvertFn` over one shard of a labels join: `(shard, {"value": [labels], "elements": [...]})`."""

    def process(self, joined):
        _, group = joined
        labels = group["value"][0]
        for element in group["elements"]:
            yield from super().process(element, labels)


class WriteSplitFn(beam.DoFn):
    """(split, [(key, records, sidecar line)]) → `<split>.tfrecord` and its sidecar
    `<split>.examples.jsonl`, both sorted by key."""

    def __init__(self, spec):
        self._spec = spec

    def process(self, split_items):
        import tensorflow as tf

        split, items = split_items
        items = sorted((kv for kv in items if kv is not None), key=lambda kv: kv[0])
        path = self._spec.records_path(split)
        count = 0
        with tempfile.TemporaryDirectory(prefix="task_data") as tmp:
            local = os.path.join(tmp, "records.tfrecord")
            local_sidecar = os.path.join(tmp, "examples.jsonl")
            with tf.io.TFRecordWriter(local) as writer, \
                    open(local_sidecar, "w", encoding="utf-8") as sidecar:
                for _, records, line in items:
                    sidecar.write(line)
                    for record in records:
                        writer.write(record)
                        count += 1
            for source_path, target_path in ((local, path),
                                             (local_sidecar, self._spec.sidecar_path(split))):
                with open(source_path, "rb") as source, \
                        runners.create_atomically(target_path) as target:
                    shutil.copyfileobj(source, target, length=1 << 20)
        yield path, count


def _sum_counts(counts):
    total = collections.Counter()
    for c in counts:
        total.update(c)
    return dict(total)


def summarize(counters, bad_list, labels, spec):
    """The statistics JSON from the summed counters and the reported bad records."""
    splits = {}
    totals = collections.Counter()
    for split in spec.splits:
        bad = {kind: int(counters.get(f"{split}/bad/{kind}", 0)) for kind in BAD_RECORD_KINDS}
        totals.update(bad)
        splits[split] = {
            "examples_read": int(counters.get(f"{split}/examples", 0)),
            "examples_converted": int(counters.get(f"{split}/converted_examples", 0)),
            "records": int(counters.get(f"{split}/records", 0)),
            "bad_records": bad,
            "label_counts": {k.split("/label/", 1)[1]: v for k, v in sorted(counters.items())
                             if k.startswith(f"{split}/label/")},
            "path": spec.records_path(split),
        }
    bad_list = sorted(bad_list)
    return {
        "task": spec.task,
        "splits": splits,
        "labels": list(labels),
        "bad_records": {k: int(v) for k, v in sorted(totals.items())},
        "bad_records_total": int(sum(totals.values())),
        "bad_record_locations": [f"[{split}] {text}" for split, text in
                                 bad_list[: spec.max_reported_bad_records]],
        "spec": {**dataclasses.asdict(spec), "read": dataclasses.asdict(spec.read)},
    }


def build(pipeline, spec):
    """Adds the TaskData steps to `pipeline`."""
    inputs = []
    for split, pattern in spec.splits.items():
        matched = [m.path for m in FileSystems.match([pattern])[0].metadata_list]
        if not matched:
            raise TaskDataError(f"--{split} {pattern}: no file matches")
        inputs += [(split, path) for path in sorted(matched)]
    read = (pipeline
            | "ListFiles" >> beam.Create(inputs)
            | "ReadExamples" >> runners.ParDoOutputs(ReadTaskFileFn(spec.task, spec.read),
                                                     tags=(_BAD_TAG, _STATS_TAG), main="examples"))
    # No side inputs (the DaskRunner mishandles them): a label set known now is an argument of
    # Convert; one inferred from the training split reaches Convert through a join.
    if spec.labels is not None or not spec.has_labels:
        known = list(spec.labels) if spec.labels is not None else []
        labels = pipeline | "GivenLabels" >> beam.Create([known])
        converted = read.examples | "Convert" >> runners.ParDoOutputs(
            ConvertFn(spec), known, tags=(_BAD_TAG, _STATS_TAG), main="records")
    else:
        # The seed gives an empty training split an (empty) label list too.
        seed = pipeline | "LabelsSeed" >> beam.Create([(None, None)])
        labels = (((read.examples
                    | "TrainOnly" >> beam.Filter(lambda e: e[0] == "train")
                    | "ExampleLabels" >> beam.FlatMap(lambda e: example_labels(e[2]))
                    | "DistinctLabels" >> beam.Distinct()
                    | "KeyLabels" >> beam.Map(lambda label: (None, label))), seed)
                  | "MergeSeed" >> beam.Flatten()
                  | "GatherLabels" >> beam.GroupByKey()
                  | "SortLabels" >> beam.MapTuple(
                      lambda _, ls: infer_labels(spec.task, [l for l in ls if l is not None])))
        joined = runners.broadcast_join(read.examples, labels, key_fn=lambda e: e[1],
                                        num_shards=CONVERT_SHARDS, label="Labels")
        converted = joined | "Convert" >> runners.ParDoOutputs(
            ConvertShardFn(spec), tags=(_BAD_TAG, _STATS_TAG), main="records")
    # One marker per split, so that a split whose records are all bad still gets a file.
    markers = pipeline | "SplitMarkers" >> beam.Create([(split, None) for split in spec.splits])
    written = ((converted.records, markers)
               | "MergeMarkers" >> beam.Flatten()
               | "GroupBySplit" >> beam.GroupByKey()
               | "WriteSplits" >> beam.ParDo(WriteSplitFn(spec)))
    sinks = [written]
    if spec.has_labels:
        sinks.append(labels | "WriteLabels" >> beam.Map(write_labels, spec.labels_path))
    # Every file and every example gives a statistics dict, so the sum never lacks one.
    counters = ((read[_STATS_TAG], converted[_STATS_TAG])
                | "MergeStats" >> beam.Flatten()
                | "SumStats" >> beam.CombineGlobally(_sum_counts).without_defaults())
    bad = ((read[_BAD_TAG], converted[_BAD_TAG])
           | "MergeBad" >> beam.Flatten())
    summary_inputs = {
        "counters": counters | "KeyCounters" >> beam.Map(lambda c: (None, c)),
        "bad": bad | "KeyBad" >> beam.Map(lambda b: (None, b)),
        "labels": labels | "KeyLabelList" >> beam.Map(lambda ls: (None, ls)),
    }
    sinks.append(summary_inputs
                 | "JoinSummary" >> beam.CoGroupByKey()
                 | "Summarize" >> beam.MapTuple(
                     lambda _, g: summarize(g["counters"][0], list(g["bad"]), g["labels"][0], spec))
                 | "WriteStats" >> beam.Map(runners.write_json, spec.stats_path))
    runners.done(pipeline, sinks)
    return written


def run(spec, pipeline_args=None):
    """Runs the job; returns the statistics dict (also at `spec.stats_path`).

    Args:
        spec: a `TaskDataSpec`.
        pipeline_args: Beam options as command-line strings. Defaults to none
            (DirectRunner).
    """
    with runners.pipeline(pipeline_args) as pipeline:
        build(pipeline, spec)
    stats = runners.read_json(spec.stats_path)
    for split, s in stats["splits"].items():
        common.log_stage(STAGE, f"{split}: {s['examples_read']} examples read, "
                                f"{s['examples_converted']} converted, {s['records']} records -> {s['path']}")
    common.log_bad_records(STAGE, stats["bad_records"])
    for location in stats["bad_record_locations"][:20]:
        logger.warning("%s", location)
    return stats


def parse_args(argv=None):
    """Known flags → (`TaskDataSpec`, remaining Beam arguments)."""
    d = TaskDataSpec
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    parser.add_argument("--task", required=True, choices=tasks.TASKS)
    parser.add_argument("--train", required=True)
    parser.add_argument("--dev", default=None)
    parser.add_argument("--test", default=None)
    parser.add_argument("--vocab", required=True, help="vocab.txt")
    parser.add_argument("--output", required=True)
    cli.add_bool_flag(parser, "do_lower_case", True, "Uncased tokenization.")
    parser.add_argument("--max_seq_length", type=int, default=d.max_seq_length)
    parser.add_argument("--max_query_length", type=int, default=d.max_query_length)
    parser.add_argument("--doc_stride", type=int, default=d.doc_stride)
    parser.add_argument("--labels", default=None, help="Comma-separated label set (default: from train).")
    parser.add_argument("--max_reported_bad_records", type=int, default=d.max_reported_bad_records)
    add_read_arguments(parser)
    args, pipeline_args = cli.parse_with_beam_args(parser, argv)
    spec = TaskDataSpec(
        task=args.task, train=args.train, dev=args.dev, test=args.test, vocab_path=args.vocab,
        output_dir=args.output, do_lower_case=args.do_lower_case,
        max_seq_length=args.max_seq_length, max_query_length=args.max_query_length,
        doc_stride=args.doc_stride,
        labels=tuple(args.labels.split(",")) if args.labels else None,
        read=read_options_from_args(args), max_reported_bad_records=args.max_reported_bad_records)
    return spec, pipeline_args


def main(argv=None):
    spec, pipeline_args = parse_args(argv)
    run(spec, pipeline_args)


if __name__ == "__main__":
    logging.getLogger().setLevel(logging.INFO)
    main()
