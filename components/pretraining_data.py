"""PretrainingData: documents -> masked-LM / next-sentence TFRecords (Beam).

Reproduces google-research/bert's `create_pretraining_data.py` as a Beam job:
tokenize -> NSP segment pairs -> mask -> sharded, shuffled TFRecords with the original
feature names, shapes and dtypes (`features.pretraining_feature_spec`), or, with
`dynamic_masking`, unmasked records (`features.unmasked_feature_spec`) that
`keras_bert.masking.apply_dynamic_masking` masks anew every epoch. The pairing and
masking rules are in `keras_bert/instances.py` and `keras_bert/masking.py`.

Steps: ListFiles -> ReadAndTokenize (raw text or ExampleGen documents, read as
ExampleGen reads them, tokenized in batches of sentences) -> GatherDocuments ->
PlanBuckets -> GroupByBucket -> CreateInstances -> GatherSpills -> PlanShards ->
GroupByShard -> WriteShards -> RemoveTemporaryFiles, plus the statistics JSON
(`<output>/pretraining_data_stats.json`).

Memory bounded by design, not by the corpus
-------------------------------------------
ReadAndTokenize writes each document's token ids to a spill file under
`<output>/.pretraining_data-tmp-<run>/` and passes on only a reference (doc_id, file,
offset, size). All references meet in one group (GatherDocuments: about 100 bytes per
document), which gives the document count and the bucket of every dupe copy;
CreateInstances reads one bucket's documents (about `docs_per_bucket`), builds its
records and spills them, cut into one section per output shard and sorted; WriteShards
merges one shard's sections, each streamed in blocks (16 MB for the whole shard), into
the TFRecord file. So a worker holds one batch of text, one bucket or a window of one
shard at a time, the runner's shuffles carry references only, and the spill
folder (about the size of the tokenized corpus plus the output) is deleted at the end.
No step uses a side input, a multi-output ParDo or a finish_bundle output, so the job
runs unchanged on runners that lack them (Beam's DaskRunner).

Random "other" documents without the corpus in memory
------------------------------------------------------
The original keeps every document in memory and draws a random-next segment from
`all_documents[randint(0, N-1)]`, retrying up to 10 times to avoid the current
document: uniform over the other N-1 documents (the current one is drawn with
probability N^-10, i.e. never). Here each dupe copy `d` of each document is hashed into
a bucket, `stable_hash(seed, d, doc_id) mod B` with `B = max(1, N // docs_per_bucket)`
(N counted by the job itself); a GroupByKey brings each bucket's documents together
and the random document is drawn uniformly among the bucket's *other* documents. A
worker holds one bucket (about `docs_per_bucket` documents) at a time.

How close that is to the original: the hash is a fixed random function of the
document id, so all documents are exchangeable; for a given instance, every other
document has the same chance to share its bucket, so averaged over the seed each of
the N-1 other documents is drawn with probability exactly 1/(N-1), as in the
original. What changes is only the joint distribution: within one dupe copy the
candidates of a document are the ~docs_per_bucket-1 documents of its bucket (not all
N-1), and bucket sizes vary (Poisson-like, relative spread 1/sqrt(docs_per_bucket),
about 3% at the default 1000). Because buckets are re-drawn for every dupe copy, over
`dupe_factor` copies a document meets `dupe_factor` independent candidate sets. With a
default of 1000 documents per bucket, a document that makes k random-next pairs in a
copy draws k negatives from 999 candidates instead of N-1: repeats within a copy have
probability ~k^2/2000 versus ~k^2/(2N). The only other difference is a bucket with a
single document (a corpus of fewer than 2 documents): B is then taken from the same
document, as the original's retry loop also ends up doing, and it is counted as
`random_document_fallback`.

Determinism: every random choice of a document copy comes from a `random.Random`
seeded with `stable_hash(seed, doc_id, dupe)` (blake2b, the same in every process);
buckets and shards are hashes; records in a shard are sorted by a hash of (seed,
document, copy, instance), which is also the shuffle. The output files are therefore
byte-identical for a given seed and input, whatever the runner or number of workers.

Output shards are written whole by one worker each: the sorted sections merged, framed
as TFRecords (length, masked CRC32C from `google-crc32c`, data, CRC) and written with
`apache_beam.io.filesystems`, so no worker needs TensorFlow for it (Beam's own
TFRecord sink shuffles records in a worker-dependent order). Records are serialized
field by field (`keras_bert.instances.RecordEncoder`), byte-identical to
`tf.train.Example.SerializeToString(deterministic=True)`. With `num_shards=0` the job
picks `ceil(instances / records_per_shard)` shards once every bucket is done; the
spills then have a single section that every shard writer scans for its records, so
give `--num_shards` for large corpora (each spill is then read once).

Example:
    python -m components.pretraining_data --input 'corpus/*.txt' --vocab vocab.txt \\
        --output out/pretraining --dupe_factor 5 \\
        --direct_num_workers=2 --direct_running_mode=multi_processing
"""

import argparse
import array
import collections
import dataclasses
import glob
import heapq
import itertools
import logging
import math
import os
import shutil
import struct
import tempfile
import uuid

import apache_beam as beam
import google_crc32c
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from components import cli, common, example_gen, runners
from components import vocab as vocab_lib
from keras_bert import instances as instances_lib

STAGE = "pretraining_data"
STATS_FILE = "pretraining_data_stats.json"
STATS_TAG = example_gen.STATS_TAG
MAIN_TAG = "main"
BAD_RECORD_COUNTERS = example_gen.BAD_RECORD_COUNTERS + ("untokenizable_documents",)

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class PretrainingDataSpec:
    """The PretrainingData stage; fields are the CLI flags of the same names.

    Attributes:
        input_pattern: corpus or ExampleGen documents glob.
        vocab_path: vocab.txt.
        output_dir: where the TFRecords and the statistics JSON go.
        max_seq_length: tokens per sequence. Defaults to 128.
        max_predictions_per_seq: masked positions per sequence. Defaults to 20.
        masked_lm_prob: share of tokens masked. Defaults to 0.15.
        dupe_factor: copies of the corpus, each with different pairs and masks.
            Defaults to 10.
        short_seq_prob: probability of a shorter target length. Defaults to 0.1.
        whole_word_mask: mask whole words. Defaults to False.
        dynamic_masking: write unmasked sequences. Defaults to False.
        do_lower_case: the tokenizer lower-cases. Defaults to True.
        random_seed: seed of every random choice. Defaults to 12345.
        num_shards: output files; 0 picks `ceil(instances / records_per_shard)`.
            Defaults to 0.
        records_per_shard: target records per shard when `num_shards` is 0; a
            shard's spilled records are held by one worker while it is written.
            Defaults to 100000.
        docs_per_bucket: documents per random-document bucket. Defaults to 1000.
        file_prefix: output files are `<prefix>-SSSSS-of-NNNNN.tfrecord`. Defaults to
            "pretraining".
        read: `example_gen.ReadOptions` for the input. Defaults to ReadOptions().
    """

    input_pattern: str
    vocab_path: str
    output_dir: str
    max_seq_length: int = 128
    max_predictions_per_seq: int = 20
    masked_lm_prob: float = 0.15
    dupe_factor: int = 10
    short_seq_prob: float = 0.1
    whole_word_mask: bool = False
    dynamic_masking: bool = False
    do_lower_case: bool = True
    random_seed: int = 12345
    num_shards: int = 0
    records_per_shard: int = 100_000
    docs_per_bucket: int = 1000
    file_prefix: str = "pretraining"
    read: example_gen.ReadOptions = example_gen.ReadOptions()

    def __post_init__(self):
        self.instance_options  # Validates the instance fields.
        if self.dupe_factor < 1:
            raise ValueError(f"dupe_factor must be >= 1; got {self.dupe_factor}")
        if self.num_shards < 0 or self.records_per_shard < 1 or self.docs_per_bucket < 2:
            raise ValueError("num_shards must be >= 0, records_per_shard >= 1, docs_per_bucket >= 2")

    @property
    def instance_options(self):
        return instances_lib.InstanceOptions(
            max_seq_length=self.max_seq_length,
            max_predictions_per_seq=self.max_predictions_per_seq,
            masked_lm_prob=self.masked_lm_prob,
            short_seq_prob=self.short_seq_prob,
            whole_word_mask=self.whole_word_mask,
            dynamic_masking=self.dynamic_masking,
            random_seed=self.random_seed,
        )

    @property
    def stats_path(self):
        return FileSystems.join(self.output_dir, STATS_FILE)

    @property
    def records_pattern(self):
        return FileSystems.join(self.output_dir, f"{self.file_prefix}-*-of-*.tfrecord")


def shard_path(spec, shard, num_shards):
    return FileSystems.join(spec.output_dir, f"{spec.file_prefix}-{shard:05d}-of-{num_shards:05d}.tfrecord")


def _local_copy(path, directory):
    """A local path with the contents of `path` (which may be on any Beam filesystem)."""
    if os.path.exists(path):
        return path
    local = os.path.join(directory, os.path.basename(path) or "vocab.txt")
    with FileSystems.open(path) as source, open(local, "wb") as target:
        shutil.copyfileobj(source, target)
    return local


# --- spill files ---------------------------------------------------------------------
#
# Tokenized documents and finished records go to files under a temporary folder of
# the output directory (a filesystem every worker sees, as Beam's own file sinks
# assume); only small references to them cross the shuffles. A document is
# `<u32 sentences><u32 tokens><lengths int32...><ids int32...>`; a record is
# `<u64 sort key><u32 size><tf.Example bytes>`.

_DOC_HEADER = struct.Struct("<II")
_RECORD_HEADER = struct.Struct("<QI")


def temp_dir(spec, run_id):
    return FileSystems.join(spec.output_dir, f".{STAGE}-tmp-{run_id}")


class _SpillWriter:
    """Appends to one new file of `directory`, tracking offsets (no `tell()` needed)."""

    def __init__(self, directory, prefix):
        self.path = FileSystems.join(directory, f"{prefix}-{uuid.uuid4().hex}.bin")
        self._file = FileSystems.create(self.path, compression_type=CompressionTypes.UNCOMPRESSED)
        self.offset = 0

    def write(self, data):
        self._file.write(data)
        self.offset += len(data)

    def close(self):
        self._file.close()


def _read_ranges(path, ranges):
    """The bytes of each `(offset, size)` of one file, in the given order."""
    with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as f:
        out = []
        for offset, size in ranges:
            f.seek(offset)
            data = f.read(size)
            if len(data) != size:
                raise IOError(f"{path}: expected {size} bytes at offset {offset}, read {len(data)}")
            out.append(data)
        return out


def encode_document(sentences):
    lengths = array.array("i", [len(s) for s in sentences])
    ids = array.array("i", [t for s in sentences for t in s])
    return _DOC_HEADER.pack(len(lengths), len(ids)) + lengths.tobytes() + ids.tobytes()


def decode_document(data):
    """The inverse of `encode_document`, as a `keras_bert.instances.FlatDocument`.

    The ids are an int32 view of `data` (no copy: 4 bytes a token), which slices
    without copying and turns a whole segment into a list in one call.
    """
    num_sentences, num_tokens = _DOC_HEADER.unpack_from(data)
    start = _DOC_HEADER.size + 4 * num_sentences
    view = memoryview(data)
    lengths = view[_DOC_HEADER.size : start].cast("i")
    ids = view[start : start + 4 * num_tokens].cast("i")
    return instances_lib.FlatDocument(ids, [0, *itertools.accumulate(lengths)])


class ReadAndTokenizeFn(beam.DoFn):
    """One corpus file -> the token ids of its documents' non-empty sentences, spilled.

    Reads the file as ExampleGen's `ReadCorpus` does (same documents, ids and bad
    record counts) and tokenizes its documents in batches of about
    `batch_sentences` sentences, each batch with one `token_ids_batch` call: the
    in-graph tokenizer costs a few milliseconds a call whatever the batch size, so
    a call per document (about a hundred sentences) spent most of the job's time on
    call overhead. A worker holds one batch of text at a time.

    Yields `(STATS_TAG, file statistics)` and one `(MAIN_TAG, (doc_id, path, offset,
    size))` reference per tokenized document, once the file's spill is closed.
    """

    def __init__(self, read_options, vocab_path, do_lower_case, spill_dir, batch_sentences=8192):
        self._read_options = read_options
        self._vocab_path = vocab_path
        self._do_lower_case = do_lower_case
        self._spill_dir = spill_dir
        self._batch_sentences = batch_sentences

    def setup(self):
        from keras_bert.tokenizer import BertTokenizer

        self._tmp = tempfile.mkdtemp(prefix="vocab")
        local = _local_copy(self._vocab_path, self._tmp)
        self._tokenizer = BertTokenizer.from_vocab(local, do_lower_case=self._do_lower_case)

    def teardown(self):
        shutil.rmtree(getattr(self, "_tmp", ""), ignore_errors=True)

    def process(self, path_and_source):
        path, source = path_and_source
        read_stats = collections.Counter()
        stats = collections.Counter()
        refs = []
        writer = None
        try:
            batch, num_sentences = [], 0
            documents = example_gen.read_corpus_file(path, source, self._read_options, read_stats)
            for document in documents:
                batch.append(document)
                num_sentences += len(document["sentences"])
                if num_sentences >= self._batch_sentences:
                    writer = self._tokenize(batch, stats, refs, writer)
                    batch, num_sentences = [], 0
            if batch:
                writer = self._tokenize(batch, stats, refs, writer)
        finally:
            if writer is not None:
                writer.close()
        runners.increment_counters(example_gen.STAGE, read_stats)
        runners.increment_counters(STAGE, stats)
        yield STATS_TAG, dict(read_stats + stats)
        for ref in refs:
            yield MAIN_TAG, ref

    def _tokenize(self, documents, stats, refs, writer):
        """Tokenizes and spills `documents`; appends their references; returns the writer."""
        texts = [sentence for document in documents for sentence in document["sentences"]]
        ids = self._tokenizer.token_ids_batch(texts)
        start = 0
        for document in documents:
            end = start + len(document["sentences"])
            sentences = [s for s in ids[start:end] if s]
            start = end
            empty = len(document["sentences"]) - len(sentences)
            if empty:
                stats["empty_sentences_after_tokenization"] += empty
            if not sentences:
                stats["untokenizable_documents"] += 1
                continue
            stats["tokenized_documents"] += 1
            stats["document_tokens"] += sum(len(s) for s in sentences)
            if writer is None:
                writer = _SpillWriter(self._spill_dir, "documents")
            data = encode_document(sentences)
            refs.append((document["doc_id"], writer.path, writer.offset, len(data)))
            writer.write(data)
        return writer


def plan_buckets(keyed_refs, dupe_factor, seed, docs_per_bucket):
    """All document references -> `((dupe, bucket), refs sorted by doc_id)` per bucket.

    The document count, which sets the number of buckets, is the length of the one
    group, so no side input is needed (some runners, Dask's among them, have none).
    """
    _, refs = keyed_refs
    refs = sorted(refs, key=lambda ref: ref[0])
    num_buckets = instances_lib.num_buckets_for(len(refs), docs_per_bucket)
    for dupe in range(dupe_factor):
        buckets = collections.defaultdict(list)
        for ref in refs:
            buckets[instances_lib.bucket_of(seed, dupe, ref[0], num_buckets)].append(ref)
        for bucket, members in sorted(buckets.items()):
            yield (dupe, bucket), members


def read_documents(refs):
    """`(doc_id, path, offset, size)` references -> `[(doc_id, sentences)]`, in the same order."""
    by_path = collections.defaultdict(list)
    for i, (_, path, offset, size) in enumerate(refs):
        by_path[path].append((offset, size, i))
    documents = [None] * len(refs)
    for path, parts in by_path.items():
        parts.sort()
        for (_, _, i), data in zip(parts, _read_ranges(path, [(o, s) for o, s, _ in parts])):
            documents[i] = (refs[i][0], decode_document(data))
    return documents


class CreateInstancesFn(beam.DoFn):
    """`((dupe, bucket), [refs])` -> the bucket's records in one spill file, by shard.

    Yields `(path, count, sections)`: `sections` lists `(offset, size)` per output
    shard when `num_shards` is known, else one section; each section is sorted by
    `(sort key, record)`.
    """

    def __init__(self, options, vocab_info, num_shards, spill_dir):
        self._options = options
        self._vocab = vocab_info
        self._num_shards = num_shards
        self._spill_dir = spill_dir

    def process(self, bucket):
        (dupe, _), groups = bucket
        refs = [ref for group in groups for ref in group]
        documents = read_documents(refs)
        total = collections.Counter(buckets=1, bucket_documents=len(documents))
        sections = [[] for _ in range(self._num_shards or 1)]
        n = len(sections)
        for key, record in instances_lib.bucket_records(documents, dupe, self._options, self._vocab, total):
            sections[key % n].append((key, record))
        writer = _SpillWriter(self._spill_dir, f"records-{dupe}")
        spans = []
        try:
            for section in sections:
                section.sort()
                start = writer.offset
                writer.write(b"".join(_RECORD_HEADER.pack(k, len(r)) + r for k, r in section))
                spans.append((start, writer.offset - start))
        finally:
            writer.close()
        runners.increment_counters(STAGE, total)
        yield STATS_TAG, dict(total, largest_bucket=len(documents))
        yield MAIN_TAG, (writer.path, total["instances"], tuple(spans))


def plan_shards(keyed_refs, num_shards, records_per_shard):
    """All bucket spill references -> `(shard, (num_shards, [(path, offset, size)]))` per shard."""
    refs = sorted(ref for ref in keyed_refs[1] if ref is not None)
    num = resolve_num_shards(sum(count for _, count, _ in refs), num_shards, records_per_shard)
    for shard in range(num):
        parts = []
        for path, _, spans in refs:
            # Spans per shard when the count was known; else one span to filter.
            offset, size = spans[shard] if len(spans) == num and num_shards else spans[0]
            if size:
                parts.append((path, offset, size))
        yield shard, (num, parts)


class SumStats(runners.SumCounts):
    """Sums statistics dicts, except `largest_bucket`, which takes the maximum."""

    def add_input(self, accumulator, element):
        element = dict(element)
        largest = element.pop("largest_bucket", 0)
        accumulator.update({k: v for k, v in element.items() if v})
        accumulator["largest_bucket"] = max(accumulator.get("largest_bucket", 0), largest)
        return accumulator

    def merge_accumulators(self, accumulators):
        total = collections.Counter()
        for accumulator in accumulators:
            total = self.add_input(total, accumulator)
        return total


def resolve_num_shards(num_instances, num_shards, records_per_shard):
    return num_shards or max(1, math.ceil(num_instances / records_per_shard))


def _masked_crc32c(data):
    crc = google_crc32c.value(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def tfrecord_frame(record):
    """One TFRecord: length, masked CRC32C of the length, data, masked CRC32C of the data."""
    length = struct.pack("<Q", len(record))
    return length + struct.pack("<I", _masked_crc32c(length)) + record + struct.pack("<I", _masked_crc32c(record))


def _iter_spilled_section(path, offset, size, block_size):
    """`(key, record)` of one spilled section of `path`, read `block_size` bytes at a time."""
    header = _RECORD_HEADER
    end = offset + size
    position = offset  # where the next block starts in the file
    buffer, start = b"", 0
    while True:
        available = len(buffer)
        while available - start >= header.size:
            key, length = header.unpack_from(buffer, start)
            record_start = start + header.size
            if available - record_start < length:
                break
            yield key, buffer[record_start : record_start + length]
            start = record_start + length
        if position >= end:
            if start != available:
                raise IOError(f"{path}: a spilled record is cut at byte {end} (section at {offset}, {size} bytes)")
            return
        want = min(block_size, end - position)
        [block] = _read_ranges(path, [(position, want)])
        position += want
        buffer, start = buffer[start:] + block, 0


class WriteShardFn(beam.DoFn):
    """`(shard, [(num_shards, parts)])` -> the shard's TFRecord file, records sorted by key.

    The shard's spilled sections are merged as streams, each read in blocks, so a
    worker holds about `read_buffer_bytes` of a shard whatever its size (not the
    whole shard: 70 MB a shard on the benchmark corpus with 4 shards). The TFRecord
    framing (with its CRC32C) is written here directly, without TensorFlow.
    """

    def __init__(self, spec, read_buffer_bytes=16 << 20, min_block_bytes=64 << 10):
        self._spec = spec
        self._read_buffer_bytes = read_buffer_bytes
        self._min_block_bytes = min_block_bytes

    def process(self, shard_parts):
        shard, [(num_shards, parts)] = shard_parts
        filter_shard = not self._spec.num_shards and num_shards > 1
        block_size = max(self._min_block_bytes, self._read_buffer_bytes // max(1, len(parts)))
        sections = []
        for path, offset, size in sorted(parts):
            records = _iter_spilled_section(path, offset, size, block_size)
            if filter_shard:
                records = (r for r in records if r[0] % num_shards == shard)
            sections.append(records)
        # Each section is sorted by (key, record): merging them streams the shard in order.
        path = shard_path(self._spec, shard, num_shards)
        count = 0
        with runners.create_atomically(path, compression_type=CompressionTypes.UNCOMPRESSED) as target:
            chunk = []
            for _, record in heapq.merge(*sections):
                chunk.append(tfrecord_frame(record))
                count += 1
                if len(chunk) == 4096:
                    target.write(b"".join(chunk))
                    chunk = []
            target.write(b"".join(chunk))
        stats = {"shards_written": 1, "records_written": count}
        runners.increment_counters(STAGE, stats)
        yield STATS_TAG, stats
        yield MAIN_TAG, path


def _remove_stale_temp_dirs(spec):
    """Deletes the spill folders of earlier runs into `spec.output_dir` that were killed.

    A run that finishes or fails removes its own; one killed with SIGKILL cannot.
    """
    pattern = FileSystems.join(temp_dir(spec, "*"), "*")
    stale = {os.path.dirname(m.path) for m in FileSystems.match([pattern])[0].metadata_list}
    if os.path.isdir(spec.output_dir):  # A local folder: empty spill folders too.
        stale.update(glob.glob(temp_dir(spec, "*")))
    stale = sorted(d for d in stale if FileSystems.exists(d))
    if stale:
        common.log_stage(STAGE, f"removing {len(stale)} temporary folder(s) of an interrupted run")
        FileSystems.delete(stale)


def remove_temp_dir(_, directory):
    """Deletes the spill folder; yields nothing."""
    if FileSystems.exists(directory):
        FileSystems.delete([directory])
    return []


def summarize(counters, spec, vocab_info):
    """The statistics JSON: headline numbers, the raw counters and the spec."""
    c = collections.Counter(counters)
    instances = c["instances"]
    tokens = c["tokens"]
    masked = c["masked"]

    def ratio(a, b):
        return a / b if b else None

    summary = {
        "instances": instances,
        "documents": c["tokenized_documents"],
        "tokens": tokens,
        "mean_tokens_per_instance": ratio(tokens, instances),
        "padding_fraction": ratio(c["padded_tokens"] - tokens, c["padded_tokens"]),
        "next_sentence": {
            "random_next": c["random_next"],
            "actual_next": instances - c["random_next"],
            "random_next_fraction": ratio(c["random_next"], instances),
            "random_document_fallback": c["random_document_fallback"],
        },
        "truncation": {
            "truncated_instances": c["truncated_instances"],
            "truncated_fraction": ratio(c["truncated_instances"], instances),
            "tokens_removed_front": c["truncated_front_tokens"],
            "tokens_removed_back": c["truncated_back_tokens"],
        },
        "buckets": {
            "groups": c["buckets"],
            "mean_documents": ratio(c["bucket_documents"], c["buckets"]),
            "largest": c["largest_bucket"],
        },
        "shards": {"files": c["shards_written"], "records": c["records_written"]},
        "bad_records": {name: int(c[name]) for name in BAD_RECORD_COUNTERS},
        "counters": dict(sorted(c.items())),
        "vocab": {
            "vocab_size": vocab_info.vocab_size,
            "pad_id": vocab_info.pad_id,
            "cls_id": vocab_info.cls_id,
            "sep_id": vocab_info.sep_id,
            "mask_id": vocab_info.mask_id,
        },
        "spec": _spec_dict(spec),
    }
    if not spec.dynamic_masking:
        summary["masked_lm"] = {
            "masked": masked,
            "masked_fraction": ratio(masked, tokens),
            "mask_token_fraction": ratio(c["masked_as_mask_token"], masked),
            "random_token_fraction": ratio(c["masked_as_random_token"], masked),
            "kept_fraction": ratio(c["masked_kept"], masked),
        }
    return summary


def _spec_dict(spec):
    out = dataclasses.asdict(spec)
    out["read"] = dataclasses.asdict(spec.read)
    return out


class TaggedParDo(beam.PTransform):
    """A ParDo whose DoFn yields `(tag, value)`: `{MAIN_TAG: ..., STATS_TAG: ...}`.

    As `ParDo(...).with_outputs(...)`, for runners that keep one output per ParDo
    (Dask's mixes the outputs of `with_outputs`): the tag travels in the element.
    """

    def __init__(self, fn):
        super().__init__()
        self._fn = fn

    def expand(self, pcoll):
        tagged = pcoll | "Run" >> beam.ParDo(self._fn)
        return {
            tag: tagged | f"Only_{tag}" >> beam.FlatMap(lambda e, tag=tag: [e[1]] if e[0] == tag else [])
            for tag in (MAIN_TAG, STATS_TAG)
        }


def build(pipeline, spec, run_id=None):
    """Adds the PretrainingData steps to `pipeline`.

    Args:
        pipeline: a `beam.Pipeline`.
        spec: a `PretrainingDataSpec`.
        run_id: names the temporary folder (`<output_dir>/.pretraining_data-tmp-<run_id>`).
            Defaults to a random one.
    """
    vocab_tokens = vocab_lib.read_vocab_tokens(spec.vocab_path)
    vocab_info = instances_lib.VocabInfo.from_tokens(vocab_tokens)
    options = spec.instance_options

    spill_dir = temp_dir(spec, run_id or uuid.uuid4().hex)
    paths = example_gen.match_files(spec.input_pattern)
    common.log_stage(
        STAGE, f"ReadAndTokenize: {len(paths)} file(s) from {spec.input_pattern}; {spec.vocab_path} "
        f"({vocab_info.vocab_size} tokens, lower_case={spec.do_lower_case})"
    )
    tokenized = (
        pipeline
        | "ListFiles" >> beam.Create(paths)
        | "SpreadFiles" >> beam.Reshuffle()
        | "ReadAndTokenize" >> TaggedParDo(
            ReadAndTokenizeFn(spec.read, spec.vocab_path, spec.do_lower_case, spill_dir)
        )
    )

    common.log_stage(
        STAGE, f"PlanBuckets: dupe_factor={spec.dupe_factor}, ~{spec.docs_per_bucket} documents per bucket"
    )
    buckets = (
        tokenized[MAIN_TAG]
        | "KeyDocuments" >> beam.Map(lambda ref: (0, ref))
        | "GatherDocuments" >> beam.GroupByKey()
        | "PlanBuckets" >> beam.FlatMap(
            plan_buckets, dupe_factor=spec.dupe_factor, seed=spec.random_seed, docs_per_bucket=spec.docs_per_bucket
        )
        # One bucket per element, spread over the workers.
        | "GroupByBucket" >> beam.GroupByKey()
    )

    mode = "dynamic masking (unmasked records)" if spec.dynamic_masking else (
        f"masked_lm_prob={spec.masked_lm_prob}, whole_word_mask={spec.whole_word_mask}"
    )
    common.log_stage(
        STAGE, f"CreateInstances: max_seq_length={spec.max_seq_length}, "
        f"max_predictions_per_seq={spec.max_predictions_per_seq}, {mode}, seed={spec.random_seed}"
    )
    created = buckets | "CreateInstances" >> TaggedParDo(
        CreateInstancesFn(options, vocab_info, spec.num_shards, spill_dir)
    )

    common.log_stage(
        STAGE, f"WriteShards: {spec.records_pattern} "
        f"({spec.num_shards or f'~{spec.records_per_shard} records each'})"
    )
    # A marker, so that an empty corpus still gets its (empty) shard files.
    no_spill = pipeline | "NoSpill" >> beam.Create([None])
    written = (
        (created[MAIN_TAG], no_spill)
        | "MergeSpills" >> beam.Flatten()
        | "KeySpills" >> beam.Map(lambda ref: (0, ref))
        | "GatherSpills" >> beam.GroupByKey()
        | "PlanShards" >> beam.FlatMap(plan_shards, spec.num_shards, spec.records_per_shard)
        | "GroupByShard" >> beam.GroupByKey()
        | "WriteShards" >> TaggedParDo(WriteShardFn(spec))
    )
    # Emits nothing; feeds the statistics so that it runs on runners that only
    # compute what the last step needs (Dask's).
    cleaned = (
        (written[MAIN_TAG], no_spill)
        | "MergePaths" >> beam.Flatten()
        | "KeyPaths" >> beam.Map(lambda path: (0, path))
        | "AllWritten" >> beam.GroupByKey()
        | "RemoveTemporaryFiles" >> beam.FlatMap(remove_temp_dir, spill_dir)
    )

    (
        (tokenized[STATS_TAG], created[STATS_TAG], written[STATS_TAG], cleaned)
        | "MergeStats" >> beam.Flatten()
        # Without defaults: a global default is injected through a side input.
        | "SumStats" >> beam.CombineGlobally(SumStats()).without_defaults()
        | "Summarize" >> beam.Map(summarize, spec, vocab_info)
        | "WriteStats" >> beam.Map(runners.write_json, spec.stats_path)
    )
    return written[MAIN_TAG]


def run(spec, pipeline_args=None):
    """Runs the job and returns the statistics dict (also written to `spec.stats_path`).

    Args:
        spec: a `PretrainingDataSpec`.
        pipeline_args: Beam options as command-line strings, e.g.
            `["--direct_num_workers=2", "--direct_running_mode=multi_processing"]`.
            Defaults to none (DirectRunner).
    """
    _remove_stale_temp_dirs(spec)
    run_id = uuid.uuid4().hex
    try:
        with runners.pipeline(pipeline_args) as pipeline:
            build(pipeline, spec, run_id)
    finally:
        remove_temp_dir(None, temp_dir(spec, run_id))
    stats = runners.read_json(spec.stats_path)
    c = stats["counters"]
    common.log_stage(
        STAGE, f"read {c.get('files', 0)} file(s): {c.get('documents', 0)} documents, {c.get('sentences', 0)} sentences"
    )
    common.log_stage(
        STAGE, f"tokenized {stats['documents']} documents, {c.get('document_tokens', 0)} tokens"
    )
    masked = stats.get("masked_lm")
    masked_text = (
        f", masked {masked['masked_fraction']:.4f} of tokens" if masked and masked["masked_fraction"] else ""
    )
    nsp = stats["next_sentence"]["random_next_fraction"]
    common.log_stage(
        STAGE,
        f"created {stats['instances']} instances in {stats['buckets']['groups']} bucket groups"
        f"{masked_text}, random next {nsp if nsp is None else round(nsp, 4)}",
    )
    common.log_stage(
        STAGE, f"wrote {stats['shards']['records']} records to {stats['shards']['files']} shard(s): {spec.records_pattern}"
    )
    common.log_bad_records(STAGE, stats["bad_records"])
    return stats


def parse_args(argv=None):
    """Known flags -> (`PretrainingDataSpec`, remaining Beam arguments)."""
    d = PretrainingDataSpec
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    parser.add_argument("--input", required=True, help="Corpus or documents glob (comma-separated allowed).")
    parser.add_argument("--vocab", required=True, help="vocab.txt")
    parser.add_argument("--output", required=True, help="Output directory.")
    parser.add_argument("--max_seq_length", type=int, default=d.max_seq_length)
    parser.add_argument("--max_predictions_per_seq", type=int, default=d.max_predictions_per_seq)
    parser.add_argument("--masked_lm_prob", type=float, default=d.masked_lm_prob)
    parser.add_argument("--dupe_factor", type=int, default=d.dupe_factor)
    parser.add_argument("--short_seq_prob", type=float, default=d.short_seq_prob)
    cli.add_bool_flag(parser, "whole_word_mask", False, "Mask every piece of a chosen word.")
    cli.add_bool_flag(parser, "dynamic_masking", False, "Write unmasked records (masked per epoch).")
    cli.add_bool_flag(parser, "do_lower_case", True, "Uncased tokenization.")
    parser.add_argument("--random_seed", type=int, default=d.random_seed)
    parser.add_argument("--num_shards", type=int, default=d.num_shards, help="0: about --records_per_shard each.")
    parser.add_argument("--records_per_shard", type=int, default=d.records_per_shard)
    parser.add_argument("--docs_per_bucket", type=int, default=d.docs_per_bucket)
    example_gen.add_read_arguments(parser)
    args, pipeline_args = cli.parse_with_beam_args(parser, argv)
    spec = PretrainingDataSpec(
        input_pattern=args.input,
        vocab_path=args.vocab,
        output_dir=args.output,
        max_seq_length=args.max_seq_length,
        max_predictions_per_seq=args.max_predictions_per_seq,
        masked_lm_prob=args.masked_lm_prob,
        dupe_factor=args.dupe_factor,
        short_seq_prob=args.short_seq_prob,
        whole_word_mask=args.whole_word_mask,
        dynamic_masking=args.dynamic_masking,
        do_lower_case=args.do_lower_case,
        random_seed=args.random_seed,
        num_shards=args.num_shards,
        records_per_shard=args.records_per_shard,
        docs_per_bucket=args.docs_per_bucket,
        read=example_gen.read_options_from_args(args),
    )
    return spec, pipeline_args


def main(argv=None):
    spec, pipeline_args = parse_args(argv)
    run(spec, pipeline_args)


if __name__ == "__main__":
    logging.getLogger().setLevel(logging.INFO)
    main()
