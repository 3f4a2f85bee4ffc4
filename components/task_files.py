"""Task files (GLUE TSV, CSV, JSONL, CoNLL-2003, SQuAD JSON) → examples, without Beam.

The parsers are pure functions: a file's bytes in, examples (`keras_bert.tasks`
`TextExample`, `TaggedExample`, or `SquadRecord`) and `BadRecord`s out, in file order.
`components.task_data` runs them inside its Beam job; `read_examples` runs them on one
file for callers that need no job.

Input formats (`ReadOptions.input_format`, `auto` picks by extension):

- `tsv` (`.tsv`): GLUE-style, tab-separated, no quoting; `csv` (`.csv`): RFC 4180 with
  quotes. Columns are given by header name (`--text_column sentence`) or 0-based index
  (`--text_column 3`); with names, the first line is the header. `--header` /
  `--noheader` force it either way (GLUE files with indices need `--header`).
- `jsonl` (`.jsonl`, `.json` for non-SQuAD tasks): one object per line with the fields
  `text`, `text_b`, `label` (names changeable with the same column flags); NER lines
  are `{"words": [...], "tags": [...]}`.
- `conll` (`.conll`, `.txt`, anything else for `ner`): CoNLL-2003, one token per
  line with the tag in the last column (`--tag_column`), blank lines between
  sentences, `-DOCSTART-` lines between documents; tags in `BIO` or `IOB1`
  (`--tag_scheme`; IOB1 is converted to BIO, which spans the same entities).
- `squad` (`squad1`, `squad2` tasks): the SQuAD v1.1 / v2.0 JSON file.
- `lines` (`.txt` for text tasks, unlabelled input only): one text per line.

Unlabelled input (`labelled=False`, what `components.predict` reads) goes through the
same parsers with the label checks left out: TSV/CSV/JSONL need only the text
columns, CoNLL files only the words (the first column; any tag column is ignored),
NER JSONL `{"words": [...]}` or `{"text": "..."}`, and SQuAD JSON only ids, questions
and contexts. SQuAD tasks then also read text pairs from TSV/CSV/JSONL (`text` the
question, `text_b` the context).

Bad records are reported, never raised. Kinds (`BAD_RECORD_KINDS`): `malformed_json`
(a JSONL line or SQuAD file that is not valid JSON or not an object), `invalid_utf8`,
`missing_text`, `missing_label` (no label, no tag, or a SQuAD 1.1 question without
answers), `invalid_label` (a regression label that is not a number), `unknown_label`
(not in the label set), `invalid_tag` (a tag that is not `O`/`B-X`/`I-X`),
`malformed_record` (wrong shape: too few CoNLL columns, a TSV/CSV row with more
fields than its header, a SQuAD question without
id/question/context), `answer_not_at_offset` (the answer text is not at its
`answer_start` in the context), `no_valid_answer` (an answerable question left
without a usable answer), `untokenizable` (no features could be made; found when
converting, not when parsing).

Example:
    >>> examples, bad = read_examples("dev.tsv", "classification",
    ...                               ReadOptions(text_column="sentence"))
"""

import bz2
import csv
import dataclasses
import gzip
import io
import json
import os

import tensorflow as tf

from components.cli import add_bool_flag
from keras_bert import tasks

LABELS_FILE = "labels.txt"
FORMATS = ("auto", "tsv", "csv", "jsonl", "conll", "squad", "lines")
TAG_SCHEMES = ("BIO", "IOB1")
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


class TaskDataError(ValueError):
    """Task data can't be read at all (no such file, no such column, bad options)."""


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


def resolve_format(path, task, options, labelled=True):
    """The input format of `path` for `task` (`options.input_format` unless "auto").

    Args:
        path: the file's name.
        task: a `keras_bert.tasks.TASKS` name.
        options: `ReadOptions`.
        labelled: the file carries labels (training and evaluation data); unlabelled
            files may also be `lines` (`.txt`) and, for SQuAD tasks, TSV/CSV/JSONL
            question-context pairs. Defaults to True.
    """
    if options.input_format != "auto":
        return options.input_format
    lower = path.lower()
    for ext in (".gz", ".bz2"):
        if lower.endswith(ext):
            lower = lower[: -len(ext)]
    if task in ("squad1", "squad2"):
        if not labelled and lower.endswith((".jsonl", ".ndjson", ".tsv", ".csv")):
            return "jsonl" if lower.endswith((".jsonl", ".ndjson")) else lower[-3:]
        return "squad"
    if task == "ner":
        return "jsonl" if lower.endswith(".jsonl") else "conll"
    if not labelled and lower.endswith(".txt"):
        return "lines"
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


def _text_example(task, guid, text, text_b, label, location, labelled=True):
    """Checks one text record; returns a TextExample or a BadRecord.

    Unlabelled (`labelled=False`), the label is not looked at and SQuAD tasks are
    pairs (question, context).
    """
    pair = task == "pair" or (not labelled and task in ("squad1", "squad2"))
    if text is None or (isinstance(text, str) and not text.strip()):
        return BadRecord("missing_text", location, "the text is missing or empty")
    if pair and (text_b is None or (isinstance(text_b, str) and not text_b.strip())):
        return BadRecord("missing_text", location, "text_b (second text of the pair) is missing or empty")
    if not isinstance(text, str) or (text_b is not None and not isinstance(text_b, str)):
        return BadRecord("malformed_record", location, "text and text_b must be strings")
    if not labelled:
        return tasks.TextExample(guid=guid, text=text, text_b=text_b if pair else None)
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


def parse_delimited(data, source, task, options, delimiter, labelled=True):
    """TSV/CSV bytes → TextExamples and BadRecords (in file order).

    Args:
        data: the file's bytes.
        source: its name, for locations.
        task: "classification", "pair" or "regression" (or, unlabelled, a SQuAD
            task: question and context).
        options: `ReadOptions`.
        delimiter: "\\t" (GLUE TSV, no quoting) or "," (CSV with quotes).
        labelled: rows carry a label column. Defaults to True.
    """
    bad = []
    lines = _decode_lines(data, source, bad.append)
    yield from bad
    columns = {"text": _column(options.text_column)}
    if labelled:
        columns["label"] = _column(options.label_column)
    if task == "pair" or (not labelled and task in ("squad1", "squad2")):
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
    width = None  # the header's number of fields
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
                width = len(row)
                continue
            if row_number == 0 and any(isinstance(c, str) for c in columns.values()):
                raise TaskDataError(f"{source}: columns given by name need a header line")
            if not row or (len(row) == 1 and not row[0].strip()):
                continue
            if width is not None and len(row) > width:
                # An unquoted delimiter inside a field: every later column would shift.
                yield BadRecord("malformed_record", location,
                                f"{len(row)} fields where the header has {width} (a field "
                                f"holding {delimiter!r} must be quoted)")
                continue

            def get(key):
                i = index.get(key)
                if i is None or not -len(row) <= i < len(row):
                    return None
                return row[i]

            yield _text_example(task, location, get("text"), get("text_b"), get("label"), location,
                                labelled)
    except csv.Error as e:
        yield BadRecord("malformed_record", f"{source}:{reader.line_num}",
                        f"CSV parse error ({e}); the rest of the file is skipped")


def parse_jsonl(data, source, task, options, labelled=True):
    """JSONL bytes → TextExamples (classification) or TaggedExamples (NER) and BadRecords.

    NER records are {"words": [...], "tags": [...]}; unlabelled (`labelled=False`)
    {"words": [...]} or {"text": "..."} (a `TextExample`: the NER export splits the
    text into words itself).
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
            if not labelled and "words" not in record:
                # Raw text, sent as it is: the NER export splits it into words itself.
                yield _text_example(task, location, record.get(options.text_column), None, None,
                                    location, labelled)
                continue
            yield _tagged_example(location, record.get("words"), record.get("tags"), options,
                                  location, labelled)
            continue
        yield _text_example(task, location, record.get(options.text_column),
                            record.get(options.text_b_column), record.get(options.label_column),
                            location, labelled)


def parse_lines(data, source, task):
    """Plain text bytes → one unlabelled TextExample per non-blank line, and BadRecords."""
    bad = []
    lines = _decode_lines(data, source, bad.append)
    yield from bad
    for number, line in lines:
        if line.strip():
            yield _text_example(task, f"{source}:{number}", line, None, None,
                                f"{source}:{number}", labelled=False)


def _tagged_example(guid, words, tags, options, location, labelled=True):
    if not words or not isinstance(words, (list, tuple)):
        return BadRecord("missing_text", location, "no words")
    if not labelled:
        if not all(isinstance(w, str) and w.strip() and len(w.split()) == 1 for w in words):
            return BadRecord("malformed_record", location,
                             "words must be non-empty strings without whitespace")
        return tasks.TaggedExample(guid=guid, words=tuple(words), tags=None)
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


def parse_conll(data, source, options, labelled=True):
    """CoNLL-2003 bytes → TaggedExamples (one per sentence) and BadRecords.

    A sentence with a bad line (too few columns, an invalid tag) is skipped whole
    and reported at that line. Unlabelled (`labelled=False`), a line needs only its
    word (the first column) and the sentences have no tags.
    """
    bad = []
    lines = _decode_lines(data, source, bad.append)
    yield from bad
    words, tags, start, problem = [], [], None, None

    def flush():
        if problem is not None:
            return problem
        if words:
            return _tagged_example(f"{source}:{start}", words, tags, options, f"{source}:{start}",
                                   labelled)
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
        if not labelled:
            words.append(columns[0])
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


def parse_squad(data, source, version, labelled=True):
    """SQuAD JSON bytes → SquadExamples and BadRecords.

    Every answer must be found at its `answer_start` (else `answer_not_at_offset`,
    and the answer is dropped); an answerable question left without answers is
    dropped as `no_valid_answer`. Version 2 reads `is_impossible`.

    Args:
        data: the file's bytes.
        source: its name, for locations.
        version: 1 or 2.
        labelled: read and check the answers; unlabelled, questions need none and
            any given are ignored. Defaults to True.
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
                                           source, version, labelled)


def _squad_question(qa, context, where, source, version, labelled=True):
    if not isinstance(qa, dict) or not isinstance(qa.get("id"), (str, int)) \
            or not isinstance(qa.get("question"), str):
        yield BadRecord("malformed_record", where, 'a question needs an "id" and a "question"')
        return
    qid = str(qa["id"])
    if not labelled:
        if not qa["question"].strip() or not context.strip():
            yield BadRecord("missing_text", f"{source}: question {qid}",
                            "the question or its context is empty")
            return
        yield SquadRecord(tasks.SquadExample(qas_id=qid, question=qa["question"],
                                             context=context), ())
        return
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


def parse_file(data, source, task, options, labelled=True):
    """Any supported file's bytes → examples (or `SquadRecord`s) and `BadRecord`s.

    Args:
        data: the file's bytes.
        source: its name, for locations (and the format, by extension).
        task: a `keras_bert.tasks.TASKS` name.
        options: `ReadOptions`.
        labelled: the file carries labels; unlabelled input is what a trained
            model predicts on (see the module docstring). Defaults to True.
    """
    fmt = resolve_format(source, task, options, labelled)
    if fmt == "squad":
        if task not in ("squad1", "squad2"):
            raise TaskDataError(f"{source}: SQuAD format needs task squad1 or squad2, not {task}")
        return parse_squad(data, source, 2 if task == "squad2" else 1, labelled)
    if task in ("squad1", "squad2") and labelled:
        raise TaskDataError(f"{source}: task {task} reads SQuAD JSON, not {fmt}")
    if fmt == "lines":
        if labelled or task in ("pair", "ner", "squad1", "squad2"):
            raise TaskDataError(f"{source}: one text per line is unlabelled input of a "
                                f"single-text task, not {'labelled ' if labelled else ''}{task} data")
        return parse_lines(data, source, task)
    if fmt == "conll":
        if task != "ner":
            raise TaskDataError(f"{source}: CoNLL format needs task ner, not {task}")
        return parse_conll(data, source, options, labelled)
    if fmt == "jsonl":
        return parse_jsonl(data, source, task, options, labelled)
    if task == "ner":
        raise TaskDataError(f"{source}: task ner reads CoNLL or JSONL, not {fmt}")
    return parse_delimited(data, source, task, options, "\t" if fmt == "tsv" else ",", labelled)


def read_file_bytes(path):
    """A file's bytes (`tf.io.gfile`, so local or remote; gzip/bz2 by extension).

    Raises:
        TaskDataError: no file matches `path`.
    """
    matches = sorted(tf.io.gfile.glob(path))
    if not matches:
        raise TaskDataError(f"{path}: no such file")
    with tf.io.gfile.GFile(matches[0], "rb") as handle:
        data = handle.read()
    lower = matches[0].lower()
    if lower.endswith(".gz"):
        return gzip.decompress(data)
    if lower.endswith(".bz2"):
        return bz2.decompress(data)
    return data



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
    """Writes `labels.txt`: one label per line, line number = id."""
    folder = os.path.dirname(path)
    if folder:
        tf.io.gfile.makedirs(folder)
    with tf.io.gfile.GFile(path, "wb") as handle:
        handle.write("".join(f"{label}\n" for label in labels).encode("utf-8"))
    return path


def read_labels(path):
    """`labels.txt` → list of labels (line number = id)."""
    with tf.io.gfile.GFile(path, "rb") as handle:
        return [line for line in handle.read().decode("utf-8").split("\n") if line]


# --------------------------------------------------------------------------------------
# Command-line flags.


def add_read_arguments(parser):
    """The `ReadOptions` flags (TaskData's and Finetune's CLIs)."""
    parser.add_argument("--input_format", default="auto", choices=FORMATS)
    parser.add_argument("--text_column", default="text", help="Header name or 0-based index.")
    parser.add_argument("--text_b_column", default="text_b", help="Header name or 0-based index.")
    parser.add_argument("--label_column", default="label", help="Header name or 0-based index.")
    add_bool_flag(parser, "header", None,
                  "The TSV/CSV file has a header line (default: detected).")
    parser.add_argument("--tag_scheme", default="BIO", choices=TAG_SCHEMES)
    parser.add_argument("--tag_column", type=int, default=-1)


def read_options_from_args(args):
    """Parsed `add_read_arguments` flags → `ReadOptions`."""
    return ReadOptions(input_format=args.input_format, text_column=args.text_column,
                       text_b_column=args.text_b_column, label_column=args.label_column,
                       header=args.header, tag_scheme=args.tag_scheme, tag_column=args.tag_column)

