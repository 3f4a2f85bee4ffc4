"""ExampleGen: text corpora in, documents (JSONL, one document per line) out.

Input formats (`--input_format`, `auto` picks per file):

- `sentences`: the original BERT format, one sentence per line and a blank line
  between documents;
- `lines`: one document per line;
- `jsonl`: one JSON object per line, the document's text in a field (`text`);
- `documents`: this stage's own output (`{"doc_id", "source", "sentences"}` per line),
  so later stages accept either raw corpora or documents.

`auto` reads `*.jsonl`/`*.json`/`*.ndjson` as `documents` when their first record has
`doc_id` and `sentences`, else as `jsonl`; anything else as `sentences`. Files are
opened with `apache_beam.io.filesystems` (any Beam filesystem); gzip is detected from
the magic bytes whatever the name, other codecs from the extension.

Lines longer than `max_sentence_chars` (and every document of `lines`/`jsonl`) are
split into sentences by `components.common.split_sentences` (after `.`, `!` or `?`
and a space, not before a lowercase word nor after "e.g."), then, if still too long,
at the last space before the limit (or hard at the limit).

A file is read whole by one worker (documents may span many lines, so a file can't
be split at arbitrary offsets, as in the original); many files read in parallel.

Every document gets a stable id, a hash of where it comes from (the file's path
relative to the pattern's fixed directory, and the line the document starts on) and of
its content: the same corpus gives the same ids on any runner and any number of
workers, and moving the corpus directory changes nothing.

Bad records never crash the job and are never dropped uncounted: each is counted
under a Beam metrics counter (namespace `example_gen`), summed into the statistics
JSON written beside the output and logged once at the end: `binary_files` (a NUL byte
in the first 8 KiB), `unreadable_files` (e.g. truncated gzip; documents read before the
error are kept), `empty_files`, `invalid_utf8_lines`, `binary_lines` (NUL inside an
otherwise text line), `overlong_lines` (> `max_line_bytes`), `malformed_json`,
`missing_text_field`, `empty_documents` (nothing left once bad lines are removed).

Example:
    python -m components.example_gen --input 'corpus/*.txt.gz' --output out/docs
"""

import argparse
import collections
import contextlib
import dataclasses
import gzip
import hashlib
import json
import logging
import os
import re
import zlib

import apache_beam as beam
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from components import cli, common, runners

STAGE = "example_gen"
FORMATS = ("auto", "sentences", "lines", "jsonl", "documents")
JSON_EXTENSIONS = (".jsonl", ".json", ".ndjson")
COMPRESSED_EXTENSIONS = (".gz", ".gzip", ".bz2", ".deflate", ".xz", ".lzma", ".zst", ".zstd")
BAD_RECORD_COUNTERS = (
    "binary_files",
    "unreadable_files",
    "empty_files",
    "invalid_utf8_lines",
    "binary_lines",
    "overlong_lines",
    "malformed_json",
    "missing_text_field",
    "empty_documents",
)
STATS_TAG = "stats"
_BINARY_SNIFF_BYTES = 8192
_READ_CHUNK = 1 << 20

logger = logging.getLogger(__name__)


class CorpusError(ValueError):
    """The corpus can't be read at all (no file matches, unknown format)."""


@dataclasses.dataclass(frozen=True)
class ReadOptions:
    """How corpus files are read.

    Attributes:
        input_format: one of `FORMATS`. Defaults to "auto".
        text_field: JSONL field holding a document's text. Defaults to "text".
        max_line_bytes: longer lines are bad records. Defaults to 8 MiB.
        max_sentence_chars: longer lines are split into sentences. Defaults to 2000.
    """

    input_format: str = "auto"
    text_field: str = "text"
    max_line_bytes: int = 8 << 20
    max_sentence_chars: int = 2000

    def __post_init__(self):
        if self.input_format not in FORMATS:
            raise CorpusError(f"input_format must be one of {FORMATS}; got {self.input_format!r}")
        if self.max_sentence_chars < 1 or self.max_line_bytes < 1:
            raise CorpusError("max_sentence_chars and max_line_bytes must be positive")


@dataclasses.dataclass(frozen=True)
class ExampleGenSpec:
    """The ExampleGen stage.

    Attributes:
        input_pattern: glob (comma-separated globs allowed) of corpus files.
        output_dir: where `documents-*.jsonl.gz` and `example_gen_stats.json` go.
        read: a `ReadOptions`. Defaults to ReadOptions().
        num_shards: output files; 0 picks one per 64 MB of input files (at
            least one). Documents are written in corpus order (file, line), so
            the files are the same on every runner. Defaults to 0.
    """

    input_pattern: str
    output_dir: str
    read: ReadOptions = ReadOptions()
    num_shards: int = 0

    @property
    def stats_path(self):
        return FileSystems.join(self.output_dir, "example_gen_stats.json")

    @property
    def documents_pattern(self):
        return FileSystems.join(self.output_dir, "documents-*.jsonl.gz")


# --- pure logic ------------------------------------------------------------------


def pattern_base(pattern):
    """The fixed directory in front of a glob: ids are relative to it."""
    wildcard = re.search(r"[*?\[{]", pattern)
    fixed = pattern[: wildcard.start()] if wildcard else pattern
    return fixed[: fixed.rfind("/") + 1] if "/" in fixed else ""


def relative_source(path, base):
    return path[len(base) :] if base and path.startswith(base) else os.path.basename(path)


def make_doc_id(source, line_number, sentences):
    """A stable document id from its origin (`source`, first line) and its content."""
    digest = hashlib.blake2b(digest_size=10)
    digest.update(f"{source}\x00{line_number}\x00".encode("utf-8"))
    for sentence in sentences:
        digest.update(sentence.encode("utf-8") + b"\n")
    return digest.hexdigest()


def iter_lines(fileobj, max_line_bytes, first_chunk=b""):
    """Yields `(line_number, line_bytes)`, 1-based, without the end of line.

    `line_bytes` is None for a line longer than `max_line_bytes`, whose bytes are
    skipped without being held in memory.
    """
    buffer = first_chunk
    line_number = 0
    skipping = False
    while True:
        chunk = fileobj.read(_READ_CHUNK)
        if chunk:
            buffer += chunk
        start = 0
        while True:
            end = buffer.find(b"\n", start)
            if end < 0:
                break
            line_number += 1
            if skipping or end - start > max_line_bytes:
                yield line_number, None
                skipping = False
            else:
                yield line_number, buffer[start:end].rstrip(b"\r")
            start = end + 1
        buffer = buffer[start:]
        if len(buffer) > max_line_bytes:
            skipping, buffer = True, b""
        if not chunk:
            if buffer or skipping:
                line_number += 1
                yield line_number, None if skipping else buffer.rstrip(b"\r")
            return


def _decode(line, stats):
    """The text of a line, or None (counted) when it isn't clean UTF-8 text."""
    if line is None:
        stats["overlong_lines"] += 1
        return None
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError:
        stats["invalid_utf8_lines"] += 1
        return None
    if "\x00" in text:
        stats["binary_lines"] += 1
        return None
    return text.lstrip("\ufeff")


def detect_format(path, input_format, first_line):
    """The format of one file: `input_format`, or a guess when it is "auto"."""
    if input_format != "auto":
        return input_format
    name = path.lower()
    for extension in COMPRESSED_EXTENSIONS:
        if name.endswith(extension):
            name = name[: -len(extension)]
    if not name.endswith(JSON_EXTENSIONS):
        return "sentences"
    try:
        record = json.loads(first_line)
    except (ValueError, TypeError):
        return "jsonl"
    if isinstance(record, dict) and "doc_id" in record and "sentences" in record:
        return "documents"
    return "jsonl"


def parse_corpus_lines(lines, source, file_format, options, stats):
    """Turns the lines of one file into documents.

    Args:
        lines: iterable of `(line_number, bytes or None)` from `iter_lines`.
        source: the file's name in ids and messages.
        file_format: "sentences", "lines", "jsonl" or "documents".
        options: a `ReadOptions`.
        stats: a `collections.Counter`, updated with counts and bad records.

    Yields:
        dicts `{"doc_id", "source", "sentences"}`.
    """
    if file_format == "sentences":
        yield from _parse_sentences(lines, source, options, stats)
        return
    for line_number, line in lines:
        stats["lines"] += 1
        text = _decode(line, stats)
        if text is None or not text.strip():
            continue
        if file_format == "lines":
            sentences = common.split_sentences(text, options.max_sentence_chars)
            doc_id = None
        else:
            try:
                record = json.loads(text)
            except ValueError:
                stats["malformed_json"] += 1
                continue
            if not isinstance(record, dict):
                stats["malformed_json"] += 1
                continue
            if file_format == "documents":
                sentences, doc_id = record.get("sentences"), record.get("doc_id")
                if not isinstance(sentences, list) or not all(isinstance(s, str) for s in sentences):
                    stats["missing_text_field"] += 1
                    continue
                sentences = [s for s in sentences if s.strip()]
            else:
                value = record.get(options.text_field)
                if not isinstance(value, str):
                    stats["missing_text_field"] += 1
                    continue
                sentences = common.split_sentences(value, options.max_sentence_chars)
                doc_id = None
        if not sentences:
            stats["empty_documents"] += 1
            continue
        stats["documents"] += 1
        stats["sentences"] += len(sentences)
        yield {
            "doc_id": str(doc_id) if doc_id else make_doc_id(source, line_number, sentences),
            "source": f"{source}:{line_number}",
            "sentences": sentences,
        }


def _parse_sentences(lines, source, options, stats):
    sentences, first_line, had_lines = [], None, False

    def finish():
        if sentences:
            stats["documents"] += 1
            stats["sentences"] += len(sentences)
            return {
                "doc_id": make_doc_id(source, first_line, sentences),
                "source": f"{source}:{first_line}",
                "sentences": list(sentences),
            }
        if had_lines:  # Lines were there, but every one was bad.
            stats["empty_documents"] += 1
        return None

    for line_number, line in lines:
        stats["lines"] += 1
        if line is not None and not line.strip():
            document = finish()
            if document:
                yield document
            sentences, first_line, had_lines = [], None, False
            continue
        had_lines = True
        first_line = first_line or line_number
        text = _decode(line, stats)
        if text is None:
            continue
        text = text.strip()
        if len(text) > options.max_sentence_chars:
            stats["split_long_lines"] += 1
            sentences.extend(common.split_sentences(text, options.max_sentence_chars))
        elif text:
            sentences.append(text)
    document = finish()
    if document:
        yield document


@contextlib.contextmanager
def open_corpus_file(path):
    """Opens a file for reading bytes, un-gzipping it when it starts with gzip's magic.

    Gzip goes through Python's `gzip` (which, unlike Beam's codec wrapper, raises
    `EOFError` on a truncated stream instead of ending quietly); other codecs are
    chosen by Beam from the extension.
    """
    with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as raw:
        magic = raw.read(2)
    if magic == b"\x1f\x8b":
        with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as raw:
            with gzip.GzipFile(fileobj=raw, mode="rb") as handle:
                yield handle
        return
    compression = CompressionTypes.detect_compression_type(path)
    if compression == CompressionTypes.GZIP:  # Named .gz but not gzip: read as is.
        compression = CompressionTypes.UNCOMPRESSED
    with FileSystems.open(path, compression_type=compression) as handle:
        yield handle


def read_corpus_file(path, source, options, stats):
    """Reads one file into documents; bad records and bad files are counted in `stats`.

    Yields:
        document dicts, as `parse_corpus_lines`.
    """
    stats["files"] += 1
    try:
        with open_corpus_file(path) as handle:
            head = handle.read(_BINARY_SNIFF_BYTES)
            if not head:
                stats["empty_files"] += 1
                return
            if b"\x00" in head:
                stats["binary_files"] += 1
                return
            newline = head.find(b"\n")
            first_line = (head if newline < 0 else head[:newline]).decode("utf-8", "replace")
            file_format = detect_format(path, options.input_format, first_line)
            lines = iter_lines(handle, options.max_line_bytes, first_chunk=head)
            yield from parse_corpus_lines(lines, source, file_format, options, stats)
    except (OSError, EOFError, zlib.error) as error:
        # A truncated or corrupt compressed file: keep what was read, count the file.
        logger.warning("%s: unreadable after %d lines: %s", path, stats["lines"], error)
        stats["unreadable_files"] += 1


def match_files(input_pattern):
    """Sorted paths matching a comma-separated list of globs.

    Raises:
        CorpusError: a glob matches no file.
    """
    paths = []
    for pattern in [p.strip() for p in input_pattern.split(",") if p.strip()]:
        matched = [m.path for result in FileSystems.match([pattern]) for m in result.metadata_list]
        if not matched:
            raise CorpusError(f"no corpus file matches {pattern!r}")
        base = pattern_base(pattern)
        paths.extend((path, relative_source(path, base)) for path in matched)
    if not paths:
        raise CorpusError(f"input pattern {input_pattern!r} names no file")
    return sorted(set(paths))


# --- Beam ------------------------------------------------------------------------


class ReadCorpusFileFn(beam.DoFn):
    """Reads one corpus file into documents; its statistics go to the `stats` output."""

    def __init__(self, options):
        self._options = options

    def process(self, path_and_source):
        path, source = path_and_source
        stats = collections.Counter()
        yield from read_corpus_file(path, source, self._options, stats)
        runners.increment_counters(STAGE, stats)
        yield beam.pvalue.TaggedOutput(STATS_TAG, dict(stats))


class ReadCorpus(beam.PTransform):
    """Corpus glob -> documents (main output) and per-file statistics (`stats`).

    The glob is matched when the pipeline is built, so a pattern that matches nothing
    fails at once with a `CorpusError` naming it.
    """

    def __init__(self, input_pattern, options=ReadOptions()):
        super().__init__()
        self._paths = match_files(input_pattern)
        self._options = options

    @property
    def num_files(self):
        return len(self._paths)

    @property
    def total_bytes(self):
        """The files' size on disk (compressed size for compressed files)."""
        sizes = FileSystems.match([path for path, _ in self._paths])
        return sum(m.size_in_bytes for result in sizes for m in result.metadata_list)

    def expand(self, pbegin):
        return (
            pbegin
            | "ListFiles" >> beam.Create(self._paths)
            | "SpreadFiles" >> beam.Reshuffle()
            | "ReadFiles"
            >> runners.ParDoOutputs(ReadCorpusFileFn(self._options), tags=(STATS_TAG,), main="documents")
        )


def bad_records(stats):
    """The bad-record counts of a statistics dict (zeros included)."""
    return {name: int(stats.get(name, 0)) for name in BAD_RECORD_COUNTERS}


def document_order(document):
    """Where a document starts in the corpus, `(file, line)`: the order of the output.

    Example:
        >>> document_order({"source": "dir/a.txt:12", "doc_id": "ab12"})
        ('dir/a.txt', 12, 'ab12')
    """
    source, _, line = document["source"].rpartition(":")
    return source, int(line), document["doc_id"]


def build(pipeline, spec):
    """Adds the ExampleGen steps to `pipeline`; returns the documents PCollection."""
    read = ReadCorpus(spec.input_pattern, spec.read)
    common.log_stage(STAGE, f"ReadCorpus: {read.num_files} file(s) from {spec.input_pattern} ({spec.read.input_format})")
    outputs = pipeline | "ReadCorpus" >> read
    documents = outputs.documents
    num_shards = spec.num_shards or runners.shards_for_bytes(read.total_bytes)
    common.log_stage(STAGE, f"WriteDocuments: {spec.output_dir}/documents-*-of-{num_shards:05d}.jsonl.gz")
    written = (
        documents
        | "ToJson" >> beam.Map(lambda d: (document_order(d), json.dumps(d, ensure_ascii=False, sort_keys=True)))
        | "WriteDocuments"
        >> runners.WriteTextShards(
            FileSystems.join(spec.output_dir, "documents"), suffix=".jsonl.gz", num_shards=num_shards
        )
    )
    # Every file gives one statistics dict, so the sum never lacks an input.
    stats_written = (
        outputs[STATS_TAG]
        | "SumStats" >> beam.CombineGlobally(runners.SumCounts()).without_defaults()
        | "FinishStats" >> beam.Map(lambda s: {"counters": s, "bad_records": bad_records(s)})
        | "WriteStats" >> beam.Map(runners.write_json, spec.stats_path)
    )
    runners.done(pipeline, [written, stats_written])
    return documents


def run(spec, pipeline_args=None):
    """Runs ExampleGen and returns its statistics dict.

    Args:
        spec: an `ExampleGenSpec`.
        pipeline_args: Beam options as command-line strings. Defaults to none
            (DirectRunner).
    """
    with runners.pipeline(pipeline_args) as pipeline:
        build(pipeline, spec)
    stats = runners.read_json(spec.stats_path)
    counters = stats["counters"]
    num_files = len(match_files(spec.input_pattern))
    if counters.get("files", 0) != num_files:  # A runner lost or repeated work.
        raise RuntimeError(
            f"{spec.input_pattern}: {num_files} file(s) matched but the runner read "
            f"{counters.get('files', 0)}; the output in {spec.output_dir} is not to be trusted"
        )
    common.log_stage(
        STAGE,
        f"done: {counters.get('files', 0)} file(s), {counters.get('documents', 0)} documents, "
        f"{counters.get('sentences', 0)} sentences -> {spec.documents_pattern}",
    )
    common.log_bad_records(STAGE, bad_records(counters))
    return stats


def add_read_arguments(parser):
    parser.add_argument("--input_format", default="auto", choices=FORMATS)
    parser.add_argument("--text_field", default="text", help="JSONL field with the text.")
    parser.add_argument("--max_line_bytes", type=int, default=ReadOptions.max_line_bytes)
    parser.add_argument("--max_sentence_chars", type=int, default=ReadOptions.max_sentence_chars)


def read_options_from_args(args):
    return ReadOptions(
        input_format=args.input_format,
        text_field=args.text_field,
        max_line_bytes=args.max_line_bytes,
        max_sentence_chars=args.max_sentence_chars,
    )


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    parser.add_argument("--input", required=True, help="Corpus glob (comma-separated globs allowed).")
    parser.add_argument("--output", required=True, help="Output directory.")
    parser.add_argument("--num_shards", type=int, default=0)
    add_read_arguments(parser)
    args, pipeline_args = cli.parse_with_beam_args(parser, argv)
    spec = ExampleGenSpec(
        input_pattern=args.input,
        output_dir=args.output,
        read=read_options_from_args(args),
        num_shards=args.num_shards,
    )
    run(spec, pipeline_args)


if __name__ == "__main__":
    logging.getLogger().setLevel(logging.INFO)
    main()
