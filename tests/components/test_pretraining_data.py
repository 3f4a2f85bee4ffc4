"""PretrainingData: statistics with the real tokenizer, end-to-end Beam runs, determinism."""

import collections
import dataclasses
import filecmp
import glob
import json
import os
import random

import pydoc_data.topics
import pytest
import tensorflow as tf

from components import example_gen as eg
from components import pretraining_data as pd
from keras_bert import features as F
from keras_bert import instances as I
from keras_bert import masking
from keras_bert.tokenizer import BertTokenizer

VOCAB = os.path.join(os.path.dirname(__file__), "..", "fixtures", "pretraining", "vocab.txt")
TOPICS = sorted(pydoc_data.topics.topics)


def topic_sentences(name):
    return [line.strip() for line in pydoc_data.topics.topics[name].splitlines() if line.strip()]


def write_corpus(directory, names, num_files=3):
    """The original format: a sentence per line, a blank line between documents."""
    os.makedirs(directory, exist_ok=True)
    for f in range(num_files):
        docs = ["\n".join(topic_sentences(n)) for n in names[f::num_files]]
        with open(os.path.join(directory, f"part-{f}.txt"), "w") as out:
            out.write("\n\n".join(docs) + "\n")


def write_corrupt_files(directory):
    rng = random.Random(0)
    with open(os.path.join(directory, "garbage.bin"), "wb") as out:
        out.write(bytes(rng.randrange(256) for _ in range(30000)))
    with open(os.path.join(directory, "empty.txt"), "wb"):
        pass
    with open(os.path.join(directory, "bad-utf8.txt"), "wb") as out:
        out.write(b"A fine sentence here.\n\xff\xfe\xfa broken\nAnother fine one.\n")


def read_records(pattern, spec):
    files = sorted(glob.glob(pattern))
    return [
        {k: v.numpy().tolist() for k, v in tf.io.parse_single_example(r, spec).items()}
        for r in tf.data.TFRecordDataset(files)
    ]


@pytest.fixture(scope="module")
def tokenizer():
    return BertTokenizer.from_vocab(VOCAB)


@pytest.fixture(scope="module")
def tokenized_corpus(tokenizer):
    docs = []
    for name in TOPICS:
        sentences = [tokenizer.convert_tokens_to_ids(tokenizer.tokenize(s)) for s in topic_sentences(name)]
        docs.append((name, [s for s in sentences if s]))
    return docs


# --- statistics with the real tokenizer (no Beam) ------------------------------------


def test_statistics_of_a_large_sample(tokenized_corpus):
    vocab = I.VocabInfo.from_tokens(open(VOCAB).read().split("\n")[:-1])
    options = I.InstanceOptions(max_seq_length=128, max_predictions_per_seq=20, random_seed=7)
    total = collections.Counter()
    for dupe in range(5):
        for _, features, stats in I.create_bucket_instances(tokenized_corpus, dupe, options, vocab):
            total.update(stats)
            assert stats["tokens"] <= 128
            n = stats["tokens"]
            ids = features[F.INPUT_IDS]
            k = stats["masked"]
            assert k == masking.num_to_predict(n, 0.15, 20)
            assert all(0 < p < n for p in features[F.MASKED_LM_POSITIONS][:k])
            assert not {vocab.cls_id, vocab.sep_id} & set(features[F.MASKED_LM_IDS][:k])
            assert ids[0] == vocab.cls_id
    assert total["instances"] > 5000
    masked = total["masked"]
    assert abs(masked / total["tokens"] - 0.15) < 0.005
    assert abs(total["masked_as_mask_token"] / masked - 0.8) < 0.015
    assert abs(total["masked_as_random_token"] / masked - 0.1) < 0.015
    assert abs(total["masked_kept"] / masked - 0.1) < 0.015
    # Single-sentence chunks are always random-next, so real text sits a little over half.
    assert abs(total["random_next"] / total["instances"] - 0.5) < 0.02 + 0.03


def test_whole_word_masking_with_the_real_tokenizer(tokenizer, tokenized_corpus):
    vocab = I.VocabInfo.from_tokens(open(VOCAB).read().split("\n")[:-1])
    options = I.InstanceOptions(max_seq_length=64, max_predictions_per_seq=10, whole_word_mask=True, random_seed=3)
    checked = 0
    for _, features, stats in I.create_bucket_instances(tokenized_corpus[:30], 0, options, vocab):
        n, k = stats["tokens"], stats["masked"]
        positions = set(features[F.MASKED_LM_POSITIONS][:k])
        original = list(features[F.INPUT_IDS][:n])
        for p, label in zip(features[F.MASKED_LM_POSITIONS][:k], features[F.MASKED_LM_IDS][:k]):
            original[p] = label
        tokens = tokenizer.convert_ids_to_tokens(original)
        # A word: a piece and the "##" pieces after it, within one segment.
        for i, token in enumerate(tokens):
            if token.startswith("##") and tokens[i - 1] not in ("[CLS]", "[SEP]"):
                assert (i in positions) == (i - 1 in positions), tokens[max(0, i - 3) : i + 2]
                checked += 1
        assert not positions & {i for i, t in enumerate(tokens) if t in ("[CLS]", "[SEP]", "[PAD]")}
    assert checked > 1000


# --- Beam ---------------------------------------------------------------------------


def small_spec(tmp_path_factory, name, **overrides):
    root = tmp_path_factory.getbasetemp() / "pretraining_corpus"
    if not root.exists():
        write_corpus(str(root), TOPICS[:40])
        write_corrupt_files(str(root))
    fields = dict(
        input_pattern=str(root / "*"),
        vocab_path=VOCAB,
        output_dir=str(tmp_path_factory.mktemp(name)),
        max_seq_length=64,
        max_predictions_per_seq=10,
        dupe_factor=2,
        docs_per_bucket=8,
        num_shards=3,
        random_seed=11,
    )
    fields.update(overrides)
    return pd.PretrainingDataSpec(**fields)


@pytest.fixture(scope="module")
def static_run(tmp_path_factory):
    spec = small_spec(tmp_path_factory, "static")
    return spec, pd.run(spec)


def test_records_parse_with_the_original_spec(static_run):
    spec, stats = static_run
    files = sorted(glob.glob(spec.records_pattern))
    assert [os.path.basename(f) for f in files] == [f"pretraining-0000{i}-of-00003.tfrecord" for i in range(3)]
    records = read_records(spec.records_pattern, F.pretraining_feature_spec(64, 10))
    assert len(records) == stats["instances"] == stats["shards"]["records"] > 500
    for r in records:
        n = sum(r[F.INPUT_MASK])
        assert r[F.INPUT_MASK] == [1] * n + [0] * (64 - n)
        assert r[F.INPUT_IDS][0] == 2 and r[F.INPUT_IDS][n:] == [0] * (64 - n)
        k = int(sum(r[F.MASKED_LM_WEIGHTS]))
        assert k == masking.num_to_predict(n, 0.15, 10)
        assert r[F.MASKED_LM_POSITIONS][k:] == [0] * (10 - k)
        assert all(0 < p < n for p in r[F.MASKED_LM_POSITIONS][:k])
        assert not set(r[F.MASKED_LM_IDS][:k]) & {0, 2, 3}
        assert r[F.NEXT_SENTENCE_LABELS][0] in (0, 1)
        assert r[F.SEGMENT_IDS][n - 1] == 1
    assert stats["next_sentence"]["random_next"] == sum(r[F.NEXT_SENTENCE_LABELS][0] for r in records)


def test_no_temporary_files_are_left(static_run):
    spec, _ = static_run
    assert sorted(os.listdir(spec.output_dir)) == sorted(
        [pd.STATS_FILE] + [f"pretraining-0000{i}-of-00003.tfrecord" for i in range(3)]
    )


def test_spilled_sections_stream_in_small_blocks(tmp_path):
    """Shard writers read sections block by block; a record may span several blocks."""
    rng = random.Random(4)
    records = [(rng.getrandbits(64), bytes(rng.getrandbits(8) for _ in range(rng.randint(0, 300))))
               for _ in range(50)]
    data = b"".join(pd._RECORD_HEADER.pack(k, len(r)) + r for k, r in records)
    path = str(tmp_path / "spill.bin")
    with open(path, "wb") as f:
        f.write(b"junk" + data + b"more")
    for block_size in (1, 7, 100, 4096, len(data)):
        assert list(pd._iter_spilled_section(path, 4, len(data), block_size)) == records
    with pytest.raises(IOError, match="cut"):
        list(pd._iter_spilled_section(path, 4, len(data) - 3, 64))


def test_tfrecord_framing_is_tensorflows():
    records = [b"", b"x", bytes(range(256)) * 40]
    framed = b"".join(pd.tfrecord_frame(r) for r in records)
    # TensorFlow's reader checks both CRCs of every record.
    path = os.path.join(os.environ.get("TMPDIR", "/tmp"), f"framing-{os.getpid()}.tfrecord")
    try:
        with open(path, "wb") as f:
            f.write(framed)
        assert [r.numpy() for r in tf.data.TFRecordDataset(path)] == records
        with tf.io.TFRecordWriter(path) as writer:
            for r in records:
                writer.write(r)
        with open(path, "rb") as f:
            assert f.read() == framed
    finally:
        os.remove(path)


def test_statistics_json_counts_everything(static_run):
    spec, stats = static_run
    with open(spec.stats_path) as f:
        assert json.load(f) == stats
    bad = stats["bad_records"]
    assert bad["binary_files"] == 1 and bad["empty_files"] == 1 and bad["invalid_utf8_lines"] == 1
    assert stats["counters"]["files"] == 6
    assert stats["documents"] == 41  # 40 topics and the valid lines of bad-utf8.txt
    assert abs(stats["masked_lm"]["masked_fraction"] - 0.15) < 0.01
    assert stats["masked_lm"]["mask_token_fraction"] + stats["masked_lm"]["random_token_fraction"] + stats[
        "masked_lm"
    ]["kept_fraction"] == pytest.approx(1.0)
    assert stats["truncation"]["truncated_instances"] > 0
    assert stats["buckets"]["groups"] == 2 * 5  # dupe_factor x (41 // 8) buckets
    assert stats["spec"]["max_seq_length"] == 64


def test_example_gen_documents_give_the_same_records(static_run, tmp_path_factory):
    """ExampleGen keeps ids and sentences, so its output yields byte-identical records."""
    spec, stats = static_run
    documents = tmp_path_factory.mktemp("documents")
    eg.run(eg.ExampleGenSpec(input_pattern=spec.input_pattern, output_dir=str(documents), num_shards=2))
    from_documents = dataclasses.replace(
        spec, input_pattern=str(documents / "documents-*"), output_dir=str(tmp_path_factory.mktemp("from_docs"))
    )
    again = pd.run(from_documents)
    assert again["instances"] == stats["instances"] and again["bad_records"]["binary_files"] == 0
    names = sorted(os.path.basename(f) for f in glob.glob(spec.records_pattern))
    match, mismatch, errors = filecmp.cmpfiles(spec.output_dir, from_documents.output_dir, names, shallow=False)
    assert mismatch == [] and errors == [] and len(match) == 3


@pytest.mark.slow
def test_same_files_with_one_or_two_worker_processes(static_run, tmp_path_factory):
    spec, _ = static_run
    multi = small_spec(tmp_path_factory, "multi")
    pd.run(multi, ["--direct_num_workers=2", "--direct_running_mode=multi_processing"])
    names = sorted(os.path.basename(f) for f in glob.glob(spec.records_pattern))
    assert names == sorted(os.path.basename(f) for f in glob.glob(multi.records_pattern))
    match, mismatch, errors = filecmp.cmpfiles(spec.output_dir, multi.output_dir, names, shallow=False)
    assert mismatch == [] and errors == [] and len(match) == 3


@pytest.mark.slow
def test_same_files_on_the_dask_runner(static_run, tmp_path_factory):
    """A dask.distributed LocalCluster of 2 worker processes writes the same bytes."""
    pytest.importorskip("dask.distributed")
    spec, stats = static_run
    on_dask = small_spec(tmp_path_factory, "dask")
    dask_stats = pd.run(on_dask, ["--runner=apache_beam.runners.dask.dask_runner.DaskRunner"])
    names = sorted(os.path.basename(f) for f in glob.glob(spec.records_pattern))
    match, mismatch, errors = filecmp.cmpfiles(spec.output_dir, on_dask.output_dir, names, shallow=False)
    assert mismatch == [] and errors == [] and len(match) == 3
    assert dask_stats["counters"] == stats["counters"]
    assert sorted(os.listdir(on_dask.output_dir)) == sorted(os.listdir(spec.output_dir))


def test_dynamic_masking_records_feed_the_tf_data_masker(tmp_path_factory):
    spec = small_spec(tmp_path_factory, "dynamic", dynamic_masking=True, dupe_factor=1, num_shards=0)
    stats = pd.run(spec)
    assert "masked_lm" not in stats and stats["shards"]["files"] == 1
    files = sorted(glob.glob(spec.records_pattern))
    ds = tf.data.TFRecordDataset(files).map(lambda r: tf.io.parse_single_example(r, F.unmasked_feature_spec(64)))
    unmasked = list(ds.as_numpy_iterator())
    assert len(unmasked) == stats["instances"]
    v = stats["vocab"]
    fn = masking.make_dynamic_masking_fn(
        vocab_size=v["vocab_size"], max_predictions_per_seq=10, mask_id=v["mask_id"],
        special_ids=(v["pad_id"], v["cls_id"], v["sep_id"]),
    )
    masked = list(masking.apply_dynamic_masking(ds, fn, seed=1).as_numpy_iterator())
    assert set(masked[0]) == set(F.pretraining_feature_spec(64, 10))
    fraction = sum(m[F.MASKED_LM_WEIGHTS].sum() for m in masked) / sum(u[F.INPUT_MASK].sum() for u in unmasked)
    assert abs(fraction - 0.15) < 0.01


def test_a_corpus_of_only_bad_files_finishes_with_everything_counted(tmp_path):
    write_corrupt_files(str(tmp_path))
    os.remove(tmp_path / "bad-utf8.txt")
    (tmp_path / "broken.txt").write_bytes(b"\xff\xfe\n\xc3\x28\n")
    spec = pd.PretrainingDataSpec(
        input_pattern=str(tmp_path / "*"), vocab_path=VOCAB, output_dir=str(tmp_path / "out"), num_shards=2
    )
    stats = pd.run(spec)
    assert stats["instances"] == 0 and stats["masked_lm"]["masked_fraction"] is None
    assert stats["bad_records"]["binary_files"] == 1 and stats["bad_records"]["empty_files"] == 1
    assert stats["bad_records"]["invalid_utf8_lines"] == 2 and stats["bad_records"]["empty_documents"] == 1
    # Both shards exist, empty, so readers of "-of-00002" find the whole set.
    assert read_records(spec.records_pattern, F.pretraining_feature_spec(128, 20)) == []
    assert len(glob.glob(spec.records_pattern)) == 2


def test_cli_flags_and_beam_arguments_are_separated():
    spec, beam_args = pd.parse_args(
        ["--input", "c/*", "--vocab", "v.txt", "--output", "o", "--max_seq_length", "256",
         "--whole_word_mask", "--nodo_lower_case", "--dupe_factor", "3", "--runner=DirectRunner",
         "--direct_num_workers=2"]
    )
    assert spec.max_seq_length == 256 and spec.whole_word_mask and not spec.do_lower_case
    assert spec.dupe_factor == 3 and spec.max_predictions_per_seq == 20 and spec.masked_lm_prob == 0.15
    assert beam_args == ["--runner=DirectRunner", "--direct_num_workers=2"]
    with pytest.raises(ValueError, match="max_seq_length"):
        pd.PretrainingDataSpec(input_pattern="x", vocab_path="v", output_dir="o", max_seq_length=3)
