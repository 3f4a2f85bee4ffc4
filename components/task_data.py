"""TaskData: fine-tuning data (GLUE TSV, CSV, JSONL, CoNLL-2003, SQuAD) → TFRecords (Beam).

Reads a train split and optionally a dev split, turns every example into model
features with `keras_bert.tasks` and writes, under `--output`:

- `train.tfrecord`, `dev.tfrecord`: tf.Examples with the shared feature names
  (`features.classification_feature_spec`, `token_classification_feature_spec`,
  `span_feature_spec`), records sorted by example id (deterministic output);
- `labels.txt`: the label vocabulary, one label per line, line number = label id
  (classification and NER; taken from `--labels` or, by default, from the train
  split, sorted, with `O` first for NER);
- `task_data_stats.json`: examples and records per split, label counts, every bad
  record counted by kind, and the first `max_reported_bad_records` bad records with
  their location (`file:line`, or `file: question <id>`) and what was wrong.

Input formats (`--input_format`, `auto` picks by extension):

- `tsv` (`.tsv`): GLUE-style, tab-separated, no quoting; `csv` (`.csv`): RFC 4180 with
  quotes. Columns are given by header name (`--text_column sentence`) or 0-based index
  (`--text_column 3`); with names, the first line is the header. `--header` /
  `--noheader` force it either way (GLUE files with indices need `--header`).
- `jsonl` (`.jsonl`, `.json` for non-SQuAD tasks): one object per line with the fields
  `text`, `text_b`, `label` (names changeable with the same column flags).
- `conll` (`.conll`, `.txt`, anything else for `ner`): CoNLL-2003, one token per
  line with the tag in the last column (`--tag_column`), blank lines between
  sentences, `-DOCSTART-` lines between documents; tags in `BIO` or `IOB1`
  (`--tag_scheme`; IOB1 is converted to BIO, which spans the same entities).
- `squad` (`squad1`, `squad2` tasks): the SQuAD v1.1 / v2.0 JSON file.

Bad records never crash the job and are never dropped uncounted. Kinds
(`BAD_RECORD_KINDS`): `malformed_json` (a JSONL line or SQuAD file that is not valid
JSON or not an object), `invalid_utf8`, `missing_text`, `missing_label` (no label, no
tag, or a SQuAD 1.1 question without answers), `invalid_label` (a regression label
that is not a number), `unknown_label` (not in the label set), `invalid_tag` (a tag
that is not `O`/`B-X`/`I-X`), `malformed_record` (wrong shape: too few CoNLL columns,
a SQuAD question without id/question/context), `answer_not_at_offset` (the answer
text is not at its `answer_start` in the context), `no_valid_answer` (an answerable
question left without a usable answer), `untokenizable` (no features could be made).
Each is a Beam counter in namespace `task_data`.

Example:
    python -m components.task_data --task pair --train MRPC/train.tsv --dev MRPC/dev.tsv \\
        --text_column "#1 String" --text_b_column "#2 String" --label_column Quality \\
        --vocab vocab.txt --output out/mrpc --max_seq_length 128
"""

import argparse
import collections
import csv
import dataclasses
import io
import json
import logging
import os
import shutil
import tempfile

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics

from components import runners
from keras_bert import tasks

STAGE = "task_data"
STATS_FILE = "task_data_stats.json"
LABELS_FILE = "labels.txt"
FORMATS = ("auto", "tsv", "csv", "jsonl", "conll", "squad")
TAG_SCHEMES = ("BIO", "IOB1")
SPLITS = ("train", "dev")
BAD_RECORD_KINDS = (
    "malformed_json",
    "invalid_utf8",
    "missing_text",
    "missing_label",
    "invalid_label",
    "unknown_label",
    "invalid_tag",
    "malformed_record",
    "answer_not_at_offset",
    "no_valid_answer",
    "untokenizable",
)
_BAD_TAG = "bad"
_STATS_TAG = "stats"
# Shards of examples that an inferred label set is joined with (one worker each).
CONVERT_SHARDS = 16

logger = logging.getLogger(__name__)


class TaskDataError(ValueError):
    """The task data can't be read at all (no such file, bad options)."""


@dataclasses.dataclass(frozen=True)
class BadRecord:
    """A record that was skipped: its kind (`BAD_RECORD_KINDS`), where, and why."""

    kind: str
    location: str
    message: str

    def __str__(self):
        return f"{self.location}: {self.kind}: {self.message}"


@dataclasses.dataclass(frozen=True)
class ReadOptions:
    """How task files are read.

    Attributes:
        input_format: one of `FORMATS`. Defaults to "auto".
        text_column: header name or 0-based index (as a string) of the text, or the
            JSONL field. Defaults to "text".
        text_b_column: same, for the second text of a pair. Defaults to "text_b".
        label_column: same, for the label. Defaults to "label".
        header: the first line of a TSV/CSV is a header; None means "if any column is
            given by name". Defaults to None.
        tag_scheme: "BIO" or "IOB1" (CoNLL). Defaults to "BIO".
        tag_column: CoNLL column of the tag. Defaults to -1 (the last).
    """

    input_format: str = "auto"
    text_column: str = "text"
    text_b_column: str = "text_b"
    label_column: str = "label"
    header: bool = None
    tag_scheme: str = "BIO"
    tag_column: int = -1

    def __post_init__(self):
        if self.input_format not in FORMATS:
            raise TaskDataError(f"input_format must be one of {FORMATS}; got {self.input_format!r}")
        if self.tag_scheme not in TAG_SCHEMES:
            raise TaskDataError(f"tag_scheme must be one of {TAG_SCHEMES}; got {self.tag_scheme!r}")


def resolve_format(path, task, options):
    """The input format of `path` for `task` (`options.input_format` unless "auto")."""
    if options.input_format != "auto":
        return options.input_format
    if task in ("squad1", "squad2"):
        return "squad"
    if task == "ner":
        return "jsonl" if path.endswith(".jsonl") else "conll"
    lower = path.lower()
    for ext in (".gz", ".bz2"):
        if lower.endswith(ext):
            lower = lower[: -len(ext)]
    if lower.endswith(".tsv"):
        return "tsv"
    if lower.endswith(".csv"):
        return "csv"
    if lower.endswith((".jsonl", ".json", ".ndjson")):
        return "jsonl"
    raise TaskDataError(f"{path}: can't tell the format from the extension; pass --input_format")


# --------------------------------------------------------------------------------------
# Parsing (pure functions: records in, examples or BadRecords out).


def _decode_lines(data, source, sink):
    """bytes → [(line number, text)], invalid UTF-8 lines reported to `sink`."""
    out = []
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    for number, raw in enumerate(data.split(b"\n"), start=1):
        raw = raw.rstrip(b"\r")
        try:
            out.append((number, raw.decode("utf-8")))
        except UnicodeDecodeError as e:
            sink(BadRecord("invalid_utf8", f"{source}:{number}",
                           f"not valid UTF-8 ({e.reason} at byte {e.start})"))
    if out and out[-1][1] == "" and data.endswith(b"\n"):
        out.pop()
    return out


def _column(spec):
    spec = str(spec)
    return int(spec) if spec.lstrip("-").isdigit() else spec


def _needs_label(task):
    return task in ("classification", "pair", "regression")


def _text_example(task, guid, text, text_b, label, location):
    """Checks one text record; returns a TextExample or a BadRecord."""
    if text is None or (isinstance(text, str) and not text.strip()):
        return BadRecord("missing_text", location, "the text is missing or empty")
    if task == "pair" and (text_b is None or (isinstance(text_b, str) and not text_b.strip())):
        return BadRecord("missing_text", location, "text_b (second text of the pair) is missing or empty")
    if not isinstance(text, str) or (text_b is not None and not isinstance(text_b, str)):
        return BadRecord("malformed_record", location, "text and text_b must be strings")
    if label is None or (isinstance(label, str) and not label.strip()):
        return BadRecord("missing_label", location, "the label is missing or empty")
    if task == "regression":
        try:
            label = float(label)
        except (TypeError, ValueError):
            return BadRecord("invalid_label", location, f"regression label {label!r} is not a number")
        if label != label:
            return BadRecord("invalid_label", location, "regression label is NaN")
    else:
        if isinstance(label, (dict, list)):
            return BadRecord("invalid_label", location, f"label {label!r} is not a scalar")
        label = str(label).strip()
    return tasks.TextExample(guid=guid, text=text, text_b=text_b if task == "pair" else None,
                             label=label)


def parse_delimited(data, source, task, options, delimiter):
    """TSV/CSV bytes → TextExamples and BadRecords (in file order).

    Args:
        data: the file's bytes.
        source: its name, for locations.
        task: "classification", "pair" or "regression".
        options: `ReadOptions`.
        delimiter: "\\t" (GLUE TSV, no quoting) or "," (CSV with quotes).
    """
    bad = []
    lines = _decode_lines(data, source, bad.append)
    yield from bad
    columns = {"text": _column(options.text_column), "label": _column(options.label_column)}
    if task == "pair":
        columns["text_b"] = _column(options.text_b_column)
    header = options.header
    if header is None:
        header = any(isinstance(c, str) for c in columns.values())
    numbers = [n for n, _ in lines]
    text = "\n".join(line for _, line in lines)
    quoting = csv.QUOTE_NONE if delimiter == "\t" else csv.QUOTE_MINIMAL
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, quoting=quoting,
                        **({"quotechar": None} if delimiter == "\t" else {}))
    index = dict(columns)
    row_start = 1
    try:
        for row_number, row in enumerate(reader):
            line = numbers[row_start - 1] if row_start - 1 < len(numbers) else row_start
            row_start = reader.line_num + 1
            location = f"{source}:{line}"
            if row_number == 0 and header:
                names = {name.strip(): i for i, name in enumerate(row)}
                for key, col in columns.items():
                    if isinstance(col, str):
                        if col not in names:
                            raise TaskDataError(f"{source}: header has no column {col!r} "
                                                f"(columns: {', '.join(names)})")
                        index[key] = names[col]
                continue
            if row_number == 0 and any(isinstance(c, str) for c in columns.values()):
                raise TaskDataError(f"{source}: columns given by name need a header line")
            if not row or (len(row) == 1 and not row[0].strip()):
                continue

            def get(key):
                i = index.get(key)
                if i is None or not -len(row) <= i < len(row):
                    return None
                return row[i]

            yield _text_example(task, location, get("text"), get("text_b"), get("label"), location)
    except csv.Error as e:
        yield BadRecord("malformed_record", f"{source}:{reader.line_num}",
                        f"CSV parse error ({e}); the rest of the file is skipped")


def parse_jsonl(data, source, task, options):
    """JSONL bytes → TextExamples (classification) or TaggedExamples (NER) and BadRecords.

    NER records are {"words": [...], "tags": [...]}.
    """
    bad = []
    lines = _decode_lines(data, source, bad.append)
    yield from bad
    for number, line in lines:
        if not line.strip():
            continue
        location = f"{source}:{number}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            yield BadRecord("malformed_json", location, f"not valid JSON ({e.msg} at column {e.colno})")
            continue
        if not isinstance(record, dict):
            yield BadRecord("malformed_json", location,
                            f"expected a JSON object, got {type(record).__name__}")
            continue
        if task == "ner":
            yield _tagged_example(location, record.get("words"), record.get("tags"), options,
                                  location)
            continue
        yield _text_example(task, location, record.get(options.text_column),
                            record.get(options.text_b_column), record.get(options.label_column),
                            location)


def _tagged_example(guid, words, tags, options, location):
    if not words or not isinstance(words, (list, tuple)):
        return BadRecord("missing_text", location, "no words")
    if tags is None:
        return BadRecord("missing_label", location, "no tags")
    if not isinstance(tags, (list, tuple)) or len(tags) != len(words):
        return BadRecord("malformed_record", location,
                         f"{len(words)} words but {len(tags) if isinstance(tags, list) else '?'} tags")
    for i, tag in enumerate(tags):
        error = tasks.tag_error(tag) if isinstance(tag, str) else f"tag {tag!r} is not a string"
        if error:
            return BadRecord("invalid_tag", location, f"word {i} ({words[i]!r}): {error}")
    if options.tag_scheme == "IOB1":
        tags = tasks.iob1_to_bio(tags)
    return tasks.TaggedExample(guid=guid, words=tuple(words), tags=tuple(tags))


def parse_conll(data, source, options):
    """CoNLL-2003 bytes → TaggedExamples (one per sentence) and BadRecords.

    A sentence with a bad line (too few columns, an invalid tag) is skipped whole
    and reported at that line.
    """
    bad = []
    lines = _decode_lines(data, source, bad.append)
    yield from bad
    words, tags, start, problem = [], [], None, None

    def flush():
        if problem is not None:
            return problem
        if words:
            return _tagged_example(f"{source}:{start}", words, tags, options, f"{source}:{start}")
        return None

    for number, line in lines:
        stripped = line.strip()
        if not stripped or stripped.startswith("-DOCSTART-"):
            result = flush()
            if result is not None:
                yield result
            words, tags, start, problem = [], [], None, None
            continue
        if start is None:
            start = number
        columns = stripped.split()
        if problem is not None:
            continue
        if len(columns) < 2:
            problem = BadRecord("missing_label", f"{source}:{number}",
                                f"token {columns[0]!r} has no tag column")
            continue
        try:
            tag = columns[options.tag_column]
        except IndexError:
            problem = BadRecord("malformed_record", f"{source}:{number}",
                                f"no column {options.tag_column} in {len(columns)} columns")
            continue
        error = tasks.tag_error(tag)
        if error:
            problem = BadRecord("invalid_tag", f"{source}:{number}", error)
            continue
        words.append(columns[0])
        tags.append(tag)
    result = flush()
    if result is not None:
        yield result


def parse_squad(data, source, version):
    """SQuAD JSON bytes → SquadExamples and BadRecords.

    Every answer must be found at its `answer_start` (else `answer_not_at_offset`,
    and the answer is dropped); an answerable question left without answers is
    dropped as `no_valid_answer`. Version 2 reads `is_impossible`.

    Args:
        data: the file's bytes.
        source: its name, for locations.
        version: 1 or 2.
    """
    try:
        dataset = json.loads(data.decode("utf-8-sig"))
    except UnicodeDecodeError as e:
        yield BadRecord("invalid_utf8", source, f"not valid UTF-8 ({e.reason} at byte {e.start})")
        return
    except json.JSONDecodeError as e:
        yield BadRecord("malformed_json", f"{source}:{e.lineno}", f"not valid JSON ({e.msg})")
        return
    if not isinstance(dataset, dict) or not isinstance(dataset.get("data"), list):
        yield BadRecord("malformed_json", source, 'expected an object with a "data" list')
        return
    for a, article in enumerate(dataset["data"]):
        paragraphs = article.get("paragraphs") if isinstance(article, dict) else None
        if not isinstance(paragraphs, list):
            yield BadRecord("malformed_record", f"{source}: data[{a}]", 'no "paragraphs" list')
            continue
        for p, paragraph in enumerate(paragraphs):
            context = paragraph.get("context") if isinstance(paragraph, dict) else None
            qas = paragraph.get("qas") if isinstance(paragraph, dict) else None
            if not isinstance(context, str) or not isinstance(qas, list):
                yield BadRecord("malformed_record", f"{source}: data[{a}].paragraphs[{p}]",
                                'a paragraph needs a "context" string and a "qas" list')
                continue
            for q, qa in enumerate(qas):
                yield from _squad_question(qa, context, f"{source}: data[{a}].paragraphs[{p}].qas[{q}]",
                                           source, version)


def _squad_question(qa, context, where, source, version):
    if not isinstance(qa, dict) or not isinstance(qa.get("id"), (str, int)) \
            or not isinstance(qa.get("question"), str):
        yield BadRecord("malformed_record", where, 'a question needs an "id" and a "question"')
        return
    qid = str(qa["id"])
    location = f"{source}: question {qid}"
    impossible = bool(qa.get("is_impossible", False)) if version == 2 else False
    raw_answers = qa.get("answers", [])
    if not isinstance(raw_answers, list):
        yield BadRecord("malformed_record", location, '"answers" is not a list')
        return
    answers, gold = [], []
    for i, answer in enumerate(raw_answers):
        text = answer.get("text") if isinstance(answer, dict) else None
        start = answer.get("answer_start") if isinstance(answer, dict) else None
        if not isinstance(text, str) or not isinstance(start, int) or isinstance(start, bool):
            yield BadRecord("malformed_record", f"{location} answer {i}",
                            'an answer needs a "text" string and an integer "answer_start"')
            continue
        gold.append(text)
        if context[start:start + len(text)] != text or not text.strip():
            found = context[start:start + len(text)]
            yield BadRecord("answer_not_at_offset", f"{location} answer {i}",
                            f"answer {text!r} is not at character {start} (found {found!r})")
            continue
        answers.append(tasks.SquadAnswer(text=text, start=start))
    if impossible:
        answers = []
    elif not raw_answers:
        if version == 1:
            yield BadRecord("missing_label", location, "a SQuAD 1.1 question needs an answer")
            return
        impossible = True  # v2.0 files mark it, but no answers means unanswerable anyway
    elif not answers:
        yield BadRecord("no_valid_answer", location, "none of its answers is usable")
        return
    yield SquadRecord(tasks.SquadExample(qas_id=qid, question=qa["question"], context=context,
                                         answers=tuple(answers), is_impossible=impossible),
                      tuple(gold) if not impossible else ())


@dataclasses.dataclass(frozen=True)
class SquadRecord:
    """A parsed SQuAD question and all its gold answer texts (for evaluation)."""

    example: tasks.SquadExample
    gold_texts: tuple


def parse_file(data, source, task, options):
    """Any supported file's bytes → examples (or `SquadRecord`s) and `BadRecord`s."""
    fmt = resolve_format(source, task, options)
    if fmt == "squad":
        if task not in ("squad1", "squad2"):
            raise TaskDataError(f"{source}: SQuAD format needs task squad1 or squad2, not {task}")
        return parse_squad(data, source, 2 if task == "squad2" else 1)
    if task in ("squad1", "squad2"):
        raise TaskDataError(f"{source}: task {task} reads SQuAD JSON, not {fmt}")
    if fmt == "conll":
        if task != "ner":
            raise TaskDataError(f"{source}: CoNLL format needs task ner, not {task}")
        return parse_conll(data, source, options)
    if fmt == "jsonl":
        return parse_jsonl(data, source, task, options)
    if task == "ner":
        raise TaskDataError(f"{source}: task ner reads CoNLL or JSONL, not {fmt}")
    return parse_delimited(data, source, task, options, "\t" if fmt == "tsv" else ",")


def read_file_bytes(path):
    """A file's bytes through Beam's filesystems (gzip/bz2 by extension)."""
    matches = FileSystems.match([path])[0].metadata_list
    if not matches:
        raise TaskDataError(f"{path}: no such file")
    with FileSystems.open(matches[0].path) as handle:
        return handle.read()


def read_examples(path, task, options=ReadOptions()):
    """Reads one task file without Beam: (examples, bad records).

    Examples are `TextExample`s, `TaggedExample`s or, for SQuAD, `SquadRecord`s.

    Example:
        >>> examples, bad = read_examples("dev.tsv", "classification",
        ...                               ReadOptions(text_column="sentence"))
    """
    examples, bad = [], []
    for item in parse_file(read_file_bytes(path), path, task, options):
        (bad if isinstance(item, BadRecord) else examples).append(item)
    return examples, bad


# --------------------------------------------------------------------------------------
# Labels.


def infer_labels(task, labels):
    """The label vocabulary from the labels seen (sorted; "O" first for NER)."""
    labels = sorted(set(labels))
    if task == "ner" and "O" in labels:
        labels = ["O"] + [t for t in labels if t != "O"]
    return labels


def example_labels(example):
    """The labels an example uses (its class, or its tags)."""
    if isinstance(example, tasks.TextExample):
        return [example.label] if example.label is not None else []
    if isinstance(example, tasks.TaggedExample):
        return list(example.tags or ())
    return []


def write_labels(labels, path):
    with FileSystems.create(path, mime_type="text/plain") as handle:
        handle.write("".join(f"{label}\n" for label in labels).encode("utf-8"))
    return path


def read_labels(path):
    """`labels.txt` → list of labels (line number = id)."""
    with FileSystems.open(path) as handle:
        return [line for line in handle.read().decode("utf-8").split("\n") if line]


# --------------------------------------------------------------------------------------
# Features.


def example_records(example, tokenizer, task, label_map, spec):
    """One example → [(feature dict)] ready to serialise (raises TaskInputError)."""
    if isinstance(example, SquadRecord):
        return [f.features for f in tasks.squad_features(
            example.example, tokenizer, spec.max_seq_length, spec.doc_stride, spec.max_query_length)]
    if isinstance(example, tasks.TaggedExample):
        return [w.features for w in tasks.tagged_features(
            example, tokenizer, spec.max_seq_length, label_map, spec.doc_stride)]
    return [tasks.text_features(example, tokenizer, spec.max_seq_length,
                                None if task == "regression" else label_map)]


def serialize_features(values):
    """Feature dict of int (or float label) lists → serialized tf.Example.

    Deterministic serialization (features sorted by name): the order of a protobuf
    map otherwise depends on the process, and records must be the same bytes on
    every runner and worker.
    """
    import tensorflow as tf

    feature = {}
    for name, vals in values.items():
        if any(isinstance(v, float) for v in vals):
            feature[name] = tf.train.Feature(float_list=tf.train.FloatList(value=vals))
        else:
            feature[name] = tf.train.Feature(int64_list=tf.train.Int64List(value=[int(v) for v in vals]))
    example = tf.train.Example(features=tf.train.Features(feature=feature))
    return example.SerializeToString(deterministic=True)


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
        return {name: path for name, path in (("train", self.train), ("dev", self.dev)) if path}

    @property
    def stats_path(self):
        return FileSystems.join(self.output_dir, STATS_FILE)

    @property
    def labels_path(self):
        return FileSystems.join(self.output_dir, LABELS_FILE)

    def records_path(self, split):
        return FileSystems.join(self.output_dir, f"{split}.tfrecord")

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
    """(split, key, example) → (split, (key, serialized records)); bad ones to `bad`."""

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
                records = example_records(example, self._tokenizer, spec.task, label_map, spec)
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
            yield split, (key, [serialize_features(r) for r in records])
        yield beam.pvalue.TaggedOutput(_STATS_TAG, dict(stats))


class ConvertShardFn(ConvertFn):
    """`ConvertFn` over one shard of a labels join: `(shard, {"value": [labels], "elements": [...]})`."""

    def process(self, joined):
        _, group = joined
        labels = group["value"][0]
        for element in group["elements"]:
            yield from super().process(element, labels)


class WriteSplitFn(beam.DoFn):
    """(split, [(key, records)]) → `<split>.tfrecord`, records sorted by key."""

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
            with tf.io.TFRecordWriter(local) as writer:
                for _, records in items:
                    for record in records:
                        writer.write(record)
                        count += 1
            with open(local, "rb") as source, FileSystems.create(path) as target:
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
                 | "WriteStats" >> beam.Map(_write_json, spec.stats_path))
    runners.done(pipeline, sinks)
    return written


def _write_json(value, path):
    with FileSystems.create(path, mime_type="application/json") as handle:
        handle.write(json.dumps(value, indent=2, sort_keys=True).encode("utf-8"))
    return path


def run(spec, pipeline_args=None):
    """Runs the job; returns the statistics dict (also at `spec.stats_path`).

    Args:
        spec: a `TaskDataSpec`.
        pipeline_args: Beam options as command-line strings. Defaults to none
            (DirectRunner).
    """
    with runners.pipeline(pipeline_args) as pipeline:
        build(pipeline, spec)
    with FileSystems.open(spec.stats_path) as handle:
        stats = json.loads(handle.read().decode("utf-8"))
    for split, s in stats["splits"].items():
        print(f"[{STAGE}] {split}: {s['examples_read']} examples read, {s['examples_converted']} "
              f"converted, {s['records']} records -> {s['path']}", flush=True)
    line = f"[{STAGE}] bad records: {stats['bad_records_total']} " + " ".join(
        f"{k}={v}" for k, v in stats["bad_records"].items() if v)
    print(line, flush=True)
    for location in stats["bad_record_locations"][:20]:
        logger.warning("%s", location)
    return stats


def add_read_arguments(parser):
    """The `ReadOptions` flags (shared with `components.finetune`)."""
    parser.add_argument("--input_format", default="auto", choices=FORMATS)
    parser.add_argument("--text_column", default="text", help="Header name or 0-based index.")
    parser.add_argument("--text_b_column", default="text_b", help="Header name or 0-based index.")
    parser.add_argument("--label_column", default="label", help="Header name or 0-based index.")
    parser.add_argument("--header", dest="header", action="store_true", default=None)
    parser.add_argument("--noheader", dest="header", action="store_false")
    parser.add_argument("--tag_scheme", default="BIO", choices=TAG_SCHEMES)
    parser.add_argument("--tag_column", type=int, default=-1)


def read_options_from_args(args):
    return ReadOptions(input_format=args.input_format, text_column=args.text_column,
                       text_b_column=args.text_b_column, label_column=args.label_column,
                       header=args.header, tag_scheme=args.tag_scheme, tag_column=args.tag_column)


def parse_args(argv=None):
    """Known flags → (`TaskDataSpec`, remaining Beam arguments)."""
    d = TaskDataSpec
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", required=True, choices=tasks.TASKS)
    parser.add_argument("--train", required=True)
    parser.add_argument("--dev", default=None)
    parser.add_argument("--vocab", required=True, help="vocab.txt")
    parser.add_argument("--output", required=True)
    parser.add_argument("--do_lower_case", dest="do_lower_case", action="store_true", default=True)
    parser.add_argument("--nodo_lower_case", dest="do_lower_case", action="store_false")
    parser.add_argument("--max_seq_length", type=int, default=d.max_seq_length)
    parser.add_argument("--max_query_length", type=int, default=d.max_query_length)
    parser.add_argument("--doc_stride", type=int, default=d.doc_stride)
    parser.add_argument("--labels", default=None, help="Comma-separated label set (default: from train).")
    parser.add_argument("--max_reported_bad_records", type=int, default=d.max_reported_bad_records)
    add_read_arguments(parser)
    args, pipeline_args = parser.parse_known_args(argv)
    spec = TaskDataSpec(
        task=args.task, train=args.train, dev=args.dev, vocab_path=args.vocab,
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
