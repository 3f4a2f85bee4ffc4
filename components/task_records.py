"""TaskData's output folder: what each record holds, the sidecar files, and reading them back.

TaskData (`components.task_data`) writes, per split (`train`, `dev`, `test`):

- `<split>.tfrecord`: one tf.Example per model input, with the original BERT feature
  names (`keras_bert.features.task_feature_spec`): `input_ids`, `input_mask`,
  `segment_ids` and the training target (`label_ids`: a class id, a float, or one
  tag id per position with -100 where no word starts; `start_positions`,
  `end_positions` and `is_impossible` for SQuAD). Records of one example are
  consecutive, examples in file order.
- `<split>.examples.jsonl`: the sidecar, one JSON line per example in the same order,
  with `records` (how many consecutive records it has) and what predictions need to
  map back to text: the example itself (guid, text(s) and gold label; NER words and
  tags; the SQuAD question, context, gold answers) and, for windowed examples, per
  window the word (NER) or context token (SQuAD) at each position and whether the
  window is that token's max-context window, and the SQuAD context tokens' character
  offsets. Lists are cut at the window's last real token.

Finetune reads these with `TaskRecords`: the records stream through `tf.data`
(`keras_bert.data.task_dataset`); only the dev and test sidecars are loaded, to
score predictions.

Example:
    >>> records = TaskRecords.open("out/task_data")
    >>> records.num_records("train"), records.labels
    >>> for meta in records.read_sidecar("dev"): ...
"""

import dataclasses
import json
import os

import tensorflow as tf

from components import task_files
from keras_bert import features as F
from keras_bert import tasks

STATS_FILE = "task_data_stats.json"
RECORDS_SUFFIX = ".tfrecord"
SIDECAR_SUFFIX = ".examples.jsonl"
SPLITS = ("train", "dev", "test")


class TaskRecordsError(ValueError):
    """A TaskData folder is missing, incomplete, or does not fit the records' use."""


def records_file(split):
    """File name of a split's records, e.g. "dev.tfrecord"."""
    return f"{split}{RECORDS_SUFFIX}"


def sidecar_file(split):
    """File name of a split's sidecar, e.g. "dev.examples.jsonl"."""
    return f"{split}{SIDECAR_SUFFIX}"


# --------------------------------------------------------------------------------------
# Writing: one example → its records and its sidecar entry.


def _trim(values, length):
    return [int(v) for v in values[:length]]


def convert_example(example, tokenizer, task, label_map, max_seq_length, doc_stride=128,
                    max_query_length=64):
    """One parsed example → (feature dicts of its records, its sidecar dict).

    Args:
        example: a `tasks.TextExample`, `tasks.TaggedExample` or `task_files.SquadRecord`.
        tokenizer: a `BertTokenizer`.
        task: one of `tasks.TASKS`.
        label_map: {label: id} (classification, pair, ner); ignored otherwise.
        max_seq_length: tokens per record.
        doc_stride: tokens between window starts (SQuAD; NER windows take half a
            window when 0). Defaults to 128.
        max_query_length: SQuAD question tokens kept. Defaults to 64.

    Returns:
        (list of {feature name: list}, JSON-ready dict).

    Raises:
        tasks.TaskInputError: the example can't be turned into features.
    """
    if isinstance(example, task_files.SquadRecord):
        ex = example.example
        offsets = tasks.tokenize_with_offsets(tokenizer, ex.context)
        feats = tasks.squad_features(ex, tokenizer, max_seq_length, doc_stride, max_query_length,
                                     offsets)
        records, windows = [], []
        for f in feats:
            records.append({**f.features, F.IS_IMPOSSIBLE: [int(ex.is_impossible)]})
            n = int(sum(f.features[F.INPUT_MASK]))
            windows.append({"num_tokens": n, "token_to_context": _trim(f.token_to_context, n),
                            "owned": _trim(f.owned, n)})
        meta = {"qas_id": ex.qas_id, "question": ex.question, "context": ex.context,
                "answers": [{"text": a.text, "start": a.start} for a in ex.answers],
                "is_impossible": bool(ex.is_impossible), "gold_texts": list(example.gold_texts),
                "offsets": {"tokens": list(offsets.tokens), "starts": list(offsets.starts),
                            "ends": list(offsets.ends)},
                "windows": windows}
        return records, dict(meta, records=len(records))
    if isinstance(example, tasks.TaggedExample):
        windows = tasks.tagged_features(example, tokenizer, max_seq_length, label_map, doc_stride)
        meta_windows = []
        for w in windows:
            n = int(sum(w.features[F.INPUT_MASK]))
            meta_windows.append({"word_ids": _trim(w.word_ids, n), "owned": _trim(w.owned, n)})
        meta = {"guid": example.guid, "words": list(example.words),
                "tags": list(example.tags) if example.tags is not None else None,
                "windows": meta_windows, "records": len(windows)}
        return [w.features for w in windows], meta
    features = tasks.text_features(example, tokenizer, max_seq_length,
                                   None if task == "regression" else label_map)
    meta = {"guid": example.guid, "text": example.text, "text_b": example.text_b,
            "label": example.label, "records": 1}
    return [features], meta


def sidecar_line(meta):
    """A sidecar dict → its JSONL line (keys sorted: the same bytes on every run)."""
    return json.dumps(meta, ensure_ascii=False, sort_keys=True) + "\n"


# --------------------------------------------------------------------------------------
# Reading: sidecar entries → the objects of `keras_bert.tasks`.


def _pad(values, length, value):
    return list(values) + [value] * (length - len(values))


def text_example(meta):
    """Sidecar entry → `tasks.TextExample`."""
    return tasks.TextExample(guid=meta["guid"], text=meta["text"], text_b=meta.get("text_b"),
                             label=meta.get("label"))


def tagged_example(meta, max_seq_length):
    """Sidecar entry → (`tasks.TaggedExample`, its `tasks.TokenWindow`s without features)."""
    tags = meta.get("tags")
    example = tasks.TaggedExample(guid=meta["guid"], words=tuple(meta["words"]),
                                  tags=tuple(tags) if tags is not None else None)
    windows = [tasks.TokenWindow(features=None,
                                 word_ids=_pad(w["word_ids"], max_seq_length, -1),
                                 owned=_pad([bool(o) for o in w["owned"]], max_seq_length, False))
               for w in meta["windows"]]
    return example, windows


def squad_example(meta, max_seq_length):
    """Sidecar entry → (`task_files.SquadRecord`, its `tasks.SquadFeature`s, context
    `tasks.TokenOffsets`), as `tasks.squad_nbest` takes them."""
    example = tasks.SquadExample(
        qas_id=meta["qas_id"], question=meta["question"], context=meta["context"],
        answers=tuple(tasks.SquadAnswer(text=a["text"], start=a["start"]) for a in meta["answers"]),
        is_impossible=meta["is_impossible"])
    record = task_files.SquadRecord(example, tuple(meta["gold_texts"]))
    feats = []
    for i, w in enumerate(meta["windows"]):
        n = w["num_tokens"]
        feats.append(tasks.SquadFeature(
            qas_id=example.qas_id, window=i,
            features={F.INPUT_MASK: _pad([1] * n, max_seq_length, 0)},
            token_to_context=_pad(w["token_to_context"], max_seq_length, -1),
            owned=_pad([bool(o) for o in w["owned"]], max_seq_length, False)))
    offsets = meta["offsets"]
    return record, feats, tasks.TokenOffsets(offsets["tokens"], offsets["starts"], offsets["ends"])


@dataclasses.dataclass(frozen=True)
class TaskRecords:
    """A TaskData output folder, opened for reading.

    Attributes:
        folder: the folder.
        stats: its `task_data_stats.json` (counts, bad records, the TaskData spec).
        labels: the label list of `labels.txt`, or None (regression, SQuAD).
    """

    folder: str
    stats: dict
    labels: list = None

    @classmethod
    def open(cls, folder):
        """Reads the statistics and labels of `folder`.

        Raises:
            TaskRecordsError: no `task_data_stats.json` there (TaskData did not finish).
        """
        path = os.path.join(folder, STATS_FILE)
        if not tf.io.gfile.exists(path):
            raise TaskRecordsError(f"{folder}: no {STATS_FILE}; not a finished TaskData output "
                                   "folder")
        with tf.io.gfile.GFile(path, "rb") as handle:
            stats = json.loads(handle.read().decode("utf-8"))
        labels_path = os.path.join(folder, task_files.LABELS_FILE)
        labels = task_files.read_labels(labels_path) if tf.io.gfile.exists(labels_path) else None
        return cls(folder=folder, stats=stats, labels=labels)

    @property
    def task(self):
        return self.stats["task"]

    @property
    def spec(self):
        """The TaskData spec the records were made with (a dict)."""
        return self.stats["spec"]

    @property
    def max_seq_length(self):
        return int(self.spec["max_seq_length"])

    @property
    def splits(self):
        return tuple(self.stats["splits"])

    def has_split(self, split):
        return split in self.stats["splits"]

    def split_stats(self, split):
        if split not in self.stats["splits"]:
            raise TaskRecordsError(f"{self.folder}: TaskData wrote no {split} split "
                                   f"(splits: {', '.join(self.splits) or 'none'})")
        return self.stats["splits"][split]

    def records_path(self, split):
        self.split_stats(split)
        return os.path.join(self.folder, records_file(split))

    def sidecar_path(self, split):
        self.split_stats(split)
        return os.path.join(self.folder, sidecar_file(split))

    def num_records(self, split):
        return int(self.split_stats(split)["records"])

    def num_examples(self, split):
        return int(self.split_stats(split)["examples_converted"])

    def bad_records(self):
        """[`task_files.BadRecord`-like strings] "[split] location: kind: message"."""
        return list(self.stats.get("bad_record_locations", []))

    def read_sidecar(self, split):
        """The split's sidecar entries, in record order; checked against the counts.

        Raises:
            TaskRecordsError: the sidecar is missing or does not match the records.
        """
        path = self.sidecar_path(split)
        if not tf.io.gfile.exists(path):
            raise TaskRecordsError(f"{path}: missing; TaskData writes it beside "
                                   f"{records_file(split)}")
        out = []
        with tf.io.gfile.GFile(path, "rb") as handle:
            for number, line in enumerate(handle, start=1):
                try:
                    out.append(json.loads(line.decode("utf-8")))
                except (UnicodeDecodeError, json.JSONDecodeError) as e:
                    raise TaskRecordsError(f"{path}:{number}: not a JSON line ({e})") from None
        records = sum(int(m["records"]) for m in out)
        if records != self.num_records(split) or len(out) != self.num_examples(split):
            raise TaskRecordsError(
                f"{path}: {len(out)} examples with {records} records, but {STATS_FILE} counts "
                f"{self.num_examples(split)} examples and {self.num_records(split)} records")
        return out
