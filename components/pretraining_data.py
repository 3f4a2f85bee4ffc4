"""PretrainingData: documents -> masked-LM / next-sentence TFRecords (Beam).

Reproduces google-research/bert's `create_pretraining_data.py` as a Beam job:
tokenize -> NSP segment pairs -> mask -> sharded, shuffled TFRecords with the original
feature names, shapes and dtypes (`features.pretraining_feature_spec`), or, with
`dynamic_masking`, unmasked records (`features.unmasked_feature_spec`) that
`keras_bert.masking.apply_dynamic_masking` masks anew every epoch. The pairing and
masking rules are in `keras_bert/instances.py` and `keras_bert/masking.py`.

Steps: ReadCorpus (raw text or ExampleGen documents) -> Tokenize -> CountDocuments ->
AssignBuckets -> GroupByBucket -> CreateInstances -> CountInstances (only with
num_shards=0) -> AssignShards -> GroupByShard -> WriteShards, plus the statistics JSON
(`<output>/pretraining_data_stats.json`).

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

Output shards are written whole by one worker each (sorted in memory, then through
`tf.io.TFRecordWriter` to a local temporary file copied to the destination with
`apache_beam.io.filesystems`: Beam's own TFRecord sink needs a CRC32C package this
project does not install, and shuffles records in a worker-dependent order). With
`num_shards=0` the job picks `ceil(instances / records_per_shard)` shards.

Example:
    python -m components.pretraining_data --input 'corpus/*.txt' --vocab vocab.txt \\
        --output out/pretraining --dupe_factor 5 \\
        --direct_num_workers=2 --direct_running_mode=multi_processing
"""

import argparse
import array
import collections
import dataclasses
import logging
import math
import os
import shutil
import tempfile

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions

from components import example_gen
from components import vocab as vocab_lib
from keras_bert import instances as instances_lib

STAGE = "pretraining_data"
STATS_FILE = "pretraining_data_stats.json"
STATS_TAG = example_gen.STATS_TAG
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
        records_per_shard: target records per shard when `num_shards` is 0; a shard
            is sorted in one worker's memory. Defaults to 100000.
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


def pack_sentences(sentences):
    """Token-id sentences -> two byte strings (ids, lengths).

    Tokenized documents cross `dupe_factor` shuffles; bytes cost Beam's coders far
    less than lists of Python ints.
    """
    return (
        array.array("i", [t for sentence in sentences for t in sentence]).tobytes(),
        array.array("i", [len(sentence) for sentence in sentences]).tobytes(),
    )


def unpack_sentences(packed):
    """The inverse of `pack_sentences`."""
    ids, lengths = array.array("i"), array.array("i")
    ids.frombytes(packed[0])
    lengths.frombytes(packed[1])
    ids = ids.tolist()
    sentences, start = [], 0
    for length in lengths:
        sentences.append(ids[start : start + length])
        start += length
    return sentences


class TokenizeDocumentFn(beam.DoFn):
    """Document dict -> `(doc_id, pack_sentences(token ids of each non-empty sentence))`."""

    def __init__(self, vocab_path, do_lower_case):
        self._vocab_path = vocab_path
        self._do_lower_case = do_lower_case

    def setup(self):
        from keras_bert.tokenizer import BertTokenizer

        self._tmp = tempfile.mkdtemp(prefix="vocab")
        local = _local_copy(self._vocab_path, self._tmp)
        self._tokenizer = BertTokenizer.from_vocab(local, do_lower_case=self._do_lower_case)

    def teardown(self):
        shutil.rmtree(getattr(self, "_tmp", ""), ignore_errors=True)

    def process(self, document):
        tokenizer = self._tokenizer
        sentences = []
        stats = collections.Counter(tokenized_documents=1)
        for sentence in document["sentences"]:
            ids = tokenizer.convert_tokens_to_ids(tokenizer.tokenize(sentence))
            if ids:
                sentences.append(ids)
                stats["document_tokens"] += len(ids)
            else:
                stats["empty_sentences_after_tokenization"] += 1
        if not sentences:
            stats["untokenizable_documents"] += 1
            stats["tokenized_documents"] = 0
        example_gen.increment_counters(STAGE, stats)
        yield beam.pvalue.TaggedOutput(STATS_TAG, dict(stats))
        if sentences:
            yield document["doc_id"], pack_sentences(sentences)


def assign_buckets(document, num_documents, dupe_factor, seed, docs_per_bucket):
    """`(doc_id, packed)` -> one `((dupe, bucket), (doc_id, packed))` per dupe copy."""
    num_buckets = instances_lib.num_buckets_for(num_documents, docs_per_bucket)
    doc_id = document[0]
    for dupe in range(dupe_factor):
        yield (dupe, instances_lib.bucket_of(seed, dupe, doc_id, num_buckets)), document


class CreateInstancesFn(beam.DoFn):
    """`((dupe, bucket), documents)` -> `(sort_key, serialized tf.Example)` per instance."""

    def __init__(self, vocab_path, options):
        self._vocab_path = vocab_path
        self._options = options

    def setup(self):
        tokens = vocab_lib.read_vocab_tokens(self._vocab_path)
        self._vocab = instances_lib.VocabInfo.from_tokens(tokens)

    def process(self, bucket):
        (dupe, _), documents = bucket
        documents = [(doc_id, unpack_sentences(packed)) for doc_id, packed in documents]
        total = collections.Counter(buckets=1, bucket_documents=len(documents))
        for sort_key, features, stats in instances_lib.create_bucket_instances(
            documents, dupe, self._options, self._vocab
        ):
            total.update(stats)
            yield sort_key, instances_lib.serialize_example(features)
        example_gen.increment_counters(STAGE, total)
        yield beam.pvalue.TaggedOutput(STATS_TAG, dict(total, largest_bucket=len(documents)))


class SumStats(example_gen.SumCounts):
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


class WriteShardFn(beam.DoFn):
    """`(shard, records)` -> the shard's TFRecord file, records sorted by their key."""

    def __init__(self, spec):
        self._spec = spec

    def process(self, shard_records, num_shards):
        import tensorflow as tf

        shard, records = shard_records
        records = sorted(r for r in records if r is not None)
        path = shard_path(self._spec, shard, num_shards)
        with tempfile.TemporaryDirectory(prefix="shard") as tmp:
            local = os.path.join(tmp, "shard.tfrecord")
            with tf.io.TFRecordWriter(local) as writer:
                for _, record in records:
                    writer.write(record)
            with open(local, "rb") as source, FileSystems.create(path) as target:
                shutil.copyfileobj(source, target, length=1 << 20)
        stats = {"shards_written": 1, "records_written": len(records)}
        example_gen.increment_counters(STAGE, stats)
        yield beam.pvalue.TaggedOutput(STATS_TAG, stats)
        yield path


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


def build(pipeline, spec):
    """Adds the PretrainingData steps to `pipeline`."""
    vocab_tokens = vocab_lib.read_vocab_tokens(spec.vocab_path)
    vocab_lib.validate_vocab(vocab_tokens, spec.vocab_path)
    vocab_info = instances_lib.VocabInfo.from_tokens(vocab_tokens)
    options = spec.instance_options

    read = example_gen.ReadCorpus(spec.input_pattern, spec.read)
    example_gen.print_stage(STAGE, f"ReadCorpus: {read.num_files} file(s) from {spec.input_pattern}")
    corpus = pipeline | "ReadCorpus" >> read

    example_gen.print_stage(
        STAGE, f"Tokenize: {spec.vocab_path} ({vocab_info.vocab_size} tokens, lower_case={spec.do_lower_case})"
    )
    tokenized = corpus.documents | "Tokenize" >> beam.ParDo(
        TokenizeDocumentFn(spec.vocab_path, spec.do_lower_case)
    ).with_outputs(STATS_TAG, main="documents")
    documents = tokenized.documents

    example_gen.print_stage(
        STAGE, f"AssignBuckets: dupe_factor={spec.dupe_factor}, ~{spec.docs_per_bucket} documents per bucket"
    )
    num_documents = documents | "CountDocuments" >> beam.combiners.Count.Globally()
    buckets = (
        documents
        | "AssignBuckets"
        >> beam.FlatMap(
            assign_buckets,
            num_documents=beam.pvalue.AsSingleton(num_documents),
            dupe_factor=spec.dupe_factor,
            seed=spec.random_seed,
            docs_per_bucket=spec.docs_per_bucket,
        )
        | "GroupByBucket" >> beam.GroupByKey()
    )

    mode = "dynamic masking (unmasked records)" if spec.dynamic_masking else (
        f"masked_lm_prob={spec.masked_lm_prob}, whole_word_mask={spec.whole_word_mask}"
    )
    example_gen.print_stage(
        STAGE, f"CreateInstances: max_seq_length={spec.max_seq_length}, "
        f"max_predictions_per_seq={spec.max_predictions_per_seq}, {mode}, seed={spec.random_seed}"
    )
    created = buckets | "CreateInstances" >> beam.ParDo(
        CreateInstancesFn(spec.vocab_path, options)
    ).with_outputs(STATS_TAG, main="records")
    records = created.records

    example_gen.print_stage(
        STAGE, f"WriteShards: {spec.records_pattern} "
        f"({spec.num_shards or f'~{spec.records_per_shard} records each'})"
    )
    if spec.num_shards:
        # A constant side input lets AssignShards fuse with CreateInstances.
        num_shards = pipeline | "NumShards" >> beam.Create([spec.num_shards])
    else:
        num_shards = (
            records
            | "CountInstances" >> beam.combiners.Count.Globally()
            | "NumShards" >> beam.Map(resolve_num_shards, spec.num_shards, spec.records_per_shard)
        )
    num_shards_side = beam.pvalue.AsSingleton(num_shards)
    keyed = records | "AssignShards" >> beam.Map(lambda record, n: (record[0] % n, record), n=num_shards_side)
    # Every shard gets a (possibly empty) file, so the `-of-N` set is complete.
    markers = num_shards | "ShardMarkers" >> beam.FlatMap(lambda n: [(i, None) for i in range(n)])
    written = (
        (keyed, markers)
        | "MergeMarkers" >> beam.Flatten()
        | "GroupByShard" >> beam.GroupByKey()
        | "WriteShards" >> beam.ParDo(WriteShardFn(spec), num_shards_side).with_outputs(STATS_TAG, main="paths")
    )

    (
        (corpus[STATS_TAG], tokenized[STATS_TAG], created[STATS_TAG], written[STATS_TAG])
        | "MergeStats" >> beam.Flatten()
        | "SumStats" >> beam.CombineGlobally(SumStats())
        | "Summarize" >> beam.Map(summarize, spec, vocab_info)
        | "WriteStats" >> beam.Map(example_gen.write_json, spec.stats_path)
    )
    return written.paths


def run(spec, pipeline_args=None):
    """Runs the job and returns the statistics dict (also written to `spec.stats_path`).

    Args:
        spec: a `PretrainingDataSpec`.
        pipeline_args: Beam options as command-line strings, e.g.
            `["--direct_num_workers=2", "--direct_running_mode=multi_processing"]`.
            Defaults to none (DirectRunner).
    """
    with beam.Pipeline(options=PipelineOptions(pipeline_args or [])) as pipeline:
        build(pipeline, spec)
    stats = example_gen.read_json(spec.stats_path)
    c = stats["counters"]
    example_gen.print_stage(
        STAGE, f"read {c.get('files', 0)} file(s): {c.get('documents', 0)} documents, {c.get('sentences', 0)} sentences"
    )
    example_gen.print_stage(
        STAGE, f"tokenized {stats['documents']} documents, {c.get('document_tokens', 0)} tokens"
    )
    masked = stats.get("masked_lm")
    masked_text = (
        f", masked {masked['masked_fraction']:.4f} of tokens" if masked and masked["masked_fraction"] else ""
    )
    nsp = stats["next_sentence"]["random_next_fraction"]
    example_gen.print_stage(
        STAGE,
        f"created {stats['instances']} instances in {stats['buckets']['groups']} bucket groups"
        f"{masked_text}, random next {nsp if nsp is None else round(nsp, 4)}",
    )
    example_gen.print_stage(
        STAGE, f"wrote {stats['shards']['records']} records to {stats['shards']['files']} shard(s): {spec.records_pattern}"
    )
    example_gen.log_bad_records(STAGE, stats["bad_records"])
    return stats


def parse_args(argv=None):
    """Known flags -> (`PretrainingDataSpec`, remaining Beam arguments)."""
    d = PretrainingDataSpec
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--input", required=True, help="Corpus or documents glob (comma-separated allowed).")
    parser.add_argument("--vocab", required=True, help="vocab.txt")
    parser.add_argument("--output", required=True, help="Output directory.")
    parser.add_argument("--max_seq_length", type=int, default=d.max_seq_length)
    parser.add_argument("--max_predictions_per_seq", type=int, default=d.max_predictions_per_seq)
    parser.add_argument("--masked_lm_prob", type=float, default=d.masked_lm_prob)
    parser.add_argument("--dupe_factor", type=int, default=d.dupe_factor)
    parser.add_argument("--short_seq_prob", type=float, default=d.short_seq_prob)
    parser.add_argument("--whole_word_mask", action="store_true", default=False)
    parser.add_argument("--dynamic_masking", action="store_true", default=False)
    parser.add_argument("--do_lower_case", dest="do_lower_case", action="store_true", default=True)
    parser.add_argument("--nodo_lower_case", dest="do_lower_case", action="store_false")
    parser.add_argument("--random_seed", type=int, default=d.random_seed)
    parser.add_argument("--num_shards", type=int, default=d.num_shards, help="0: about --records_per_shard each.")
    parser.add_argument("--records_per_shard", type=int, default=d.records_per_shard)
    parser.add_argument("--docs_per_bucket", type=int, default=d.docs_per_bucket)
    example_gen.add_read_arguments(parser)
    args, pipeline_args = parser.parse_known_args(argv)
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
