"""NSP segment pairs, truncation, random-document buckets and record features."""

import collections
import random

import pytest
import tensorflow as tf

from keras_bert import features as F
from keras_bert import instances as I

PAD, UNK, CLS, SEP, MASK = 0, 1, 2, 3, 4
VOCAB = I.VocabInfo(
    vocab_size=1000, pad_id=PAD, cls_id=CLS, sep_id=SEP, mask_id=MASK, continuation_ids=frozenset(range(700, 1000))
)


def make_document(rng, num_sentences, min_len=3, max_len=12, start=5):
    """Sentences of consecutive ids, so that order and contiguity can be checked."""
    sentences, next_id = [], start
    for _ in range(num_sentences):
        n = rng.randint(min_len, max_len)
        sentences.append(list(range(next_id, next_id + n)))
        next_id += n
    return sentences


def no_other_document(rng):
    raise AssertionError("random_document called")


def test_truncate_seq_pair_removes_from_the_longer_side_first():
    rng = random.Random(0)
    a, b = list(range(10)), list(range(100, 104))
    front, back = I.truncate_seq_pair(a, b, 8, rng)
    assert (len(a), len(b)) == (4, 4)
    assert front + back == 6
    # What is left is a contiguous run of the original (cut at both ends).
    assert a == list(range(a[0], a[0] + 4)) and b == [100, 101, 102, 103]
    a, b = [1, 2], [3]
    assert I.truncate_seq_pair(a, b, 3, rng) == (0, 0) and (a, b) == ([1, 2], [3])


def test_truncation_side_is_random_half_and_half():
    rng = random.Random(1)
    front = back = 0
    for _ in range(2000):
        f, b = I.truncate_seq_pair(list(range(20)), list(range(5)), 19, rng)
        front, back = front + f, back + b
    assert abs(front / (front + back) - 0.5) < 0.03


def test_pairs_cover_the_document_in_order_and_respect_the_shape():
    rng = random.Random(3)
    other = make_document(random.Random(9), 30, start=500)
    for _ in range(200):
        document = make_document(rng, rng.randint(1, 25))
        pairs = I.create_segment_pairs(
            document, max_seq_length=64, short_seq_prob=0.1, rng=rng,
            random_document=lambda r: other, cls_id=CLS, sep_id=SEP,
        )
        covered = []
        for pair in pairs:
            ids, segments = pair.token_ids, pair.segment_ids
            assert len(ids) <= 64 and len(ids) == len(segments)
            assert ids[0] == CLS and ids[-1] == SEP and ids.count(SEP) == 2 and ids.count(CLS) == 1
            sep = ids.index(SEP)
            assert sep >= 2 and len(ids) - sep - 2 >= 1  # A and B non-empty.
            assert segments == [0] * (sep + 1) + [1] * (len(ids) - sep - 1)
            tokens_a, tokens_b = ids[1:sep], ids[sep + 1 : -1]
            if pair.is_random_next:
                assert all(t >= 500 for t in tokens_b)
                covered.extend(tokens_a)
            else:
                covered.extend(tokens_a + tokens_b)
                if not (pair.truncated_front or pair.truncated_back):
                    assert tokens_b[0] == tokens_a[-1] + 1  # B is the true continuation.
        # Every sentence goes into A or a true-next B exactly once ("put back"),
        # in document order, apart from what truncation removed.
        flat = [t for s in document for t in s]
        assert covered == sorted(covered) and len(set(covered)) == len(covered)
        if not any(p.truncated_front or p.truncated_back for p in pairs):
            assert covered == flat


def test_next_sentence_balance_is_half_when_chunks_have_two_sentences():
    rng = random.Random(4)
    labels = []
    other = make_document(random.Random(9), 40, start=500)
    for _ in range(1500):
        document = make_document(rng, 60, min_len=3, max_len=6)
        for pair in I.create_segment_pairs(
            document, max_seq_length=64, short_seq_prob=0.0, rng=rng,
            random_document=lambda r: other, cls_id=CLS, sep_id=SEP,
        ):
            labels.append(pair.is_random_next)
    assert len(labels) > 9000
    assert abs(sum(labels) / len(labels) - 0.5) < 0.02


def test_short_targets_and_single_sentence_documents():
    rng = random.Random(5)
    lengths = collections.Counter()
    for _ in range(400):
        pairs = I.create_segment_pairs(
            make_document(rng, 40), max_seq_length=128, short_seq_prob=1.0, rng=rng,
            random_document=lambda r: [[900, 901, 902]], cls_id=CLS, sep_id=SEP,
        )
        lengths.update(len(p.token_ids) < 100 for p in pairs)
    assert lengths[True] > lengths[False]  # Random targets in [2, 125] make short pairs.
    # One sentence: B must come from another document; with none, from itself (counted).
    pairs = I.create_segment_pairs(
        [[10, 11, 12]], max_seq_length=16, short_seq_prob=0.0, rng=rng,
        random_document=lambda r: None, cls_id=CLS, sep_id=SEP,
    )
    assert len(pairs) == 1 and pairs[0].is_random_next and pairs[0].random_document_fallback


def test_buckets_pick_each_other_document_uniformly_on_average():
    """Over seeds, the random document of doc 0 is uniform over the other N-1."""
    doc_ids = [f"doc{i}" for i in range(40)]
    num_buckets = I.num_buckets_for(len(doc_ids), docs_per_bucket=8)
    assert num_buckets == 5
    picks = collections.Counter()
    alone = 0
    seeds = 6000
    for seed in range(seeds):
        buckets = collections.defaultdict(list)
        for doc_id in doc_ids:
            buckets[I.bucket_of(seed, 0, doc_id, num_buckets)].append(doc_id)
        mates = sorted(buckets[I.bucket_of(seed, 0, "doc0", num_buckets)])
        if len(mates) == 1:
            alone += 1
            continue
        choice = random.Random(seed).randrange(len(mates) - 1)
        choice += choice >= mates.index("doc0")
        picks[mates[choice]] += 1
    assert "doc0" not in picks and len(picks) == 39
    # Chi-square against uniform over the 39 others: df = 38, the 99.9% point is 70.7.
    expected = sum(picks.values()) / 39
    chi2 = sum((count - expected) ** 2 / expected for count in picks.values())
    assert chi2 < 70.7
    assert alone / seeds < 0.01  # Alone in a bucket: rare even with 8 per bucket.


def test_bucket_instances_are_deterministic_and_parse_with_the_original_spec():
    rng = random.Random(6)
    documents = [(f"d{i}", make_document(rng, rng.randint(1, 30), start=5 + i)) for i in range(12)]
    options = I.InstanceOptions(max_seq_length=48, max_predictions_per_seq=7, random_seed=42)
    first = list(I.create_bucket_instances(documents, 0, options, VOCAB))
    again = list(I.create_bucket_instances(list(reversed(documents)), 0, options, VOCAB))
    assert [(k, f) for k, f, _ in first] == [(k, f) for k, f, _ in again]
    other_copy = list(I.create_bucket_instances(documents, 1, options, VOCAB))
    assert [f for _, f, _ in other_copy] != [f for _, f, _ in first]

    spec = F.pretraining_feature_spec(48, 7)
    for _, features, stats in first:
        parsed = tf.io.parse_single_example(F.serialize_example(features), spec)
        for name, feature in spec.items():
            assert parsed[name].dtype == feature.dtype and parsed[name].shape == feature.shape
            assert parsed[name].numpy().tolist() == pytest.approx(features[name])
        n = sum(features[F.INPUT_MASK])
        assert stats["tokens"] == n <= 48
        assert features[F.INPUT_MASK] == [1] * n + [0] * (48 - n)
        k = int(sum(features[F.MASKED_LM_WEIGHTS]))
        assert stats["masked"] == k == min(7, max(1, round(n * 0.15)))
        assert features[F.MASKED_LM_POSITIONS][k:] == [0] * (7 - k)
        assert features[F.NEXT_SENTENCE_LABELS] == [stats["random_next"]]


def test_dynamic_instances_use_the_unmasked_spec():
    documents = [(f"d{i}", make_document(random.Random(i), 10)) for i in range(3)]
    options = I.InstanceOptions(max_seq_length=32, dynamic_masking=True)
    out = list(I.create_bucket_instances(documents, 0, options, VOCAB))
    assert out
    spec = F.unmasked_feature_spec(32)
    for _, features, stats in out:
        assert set(features) == set(spec) and "masked" not in stats
        parsed = tf.io.parse_single_example(F.serialize_example(features), spec)
        assert parsed[F.INPUT_IDS].numpy().tolist() == features[F.INPUT_IDS]
        assert MASK not in features[F.INPUT_IDS]


def test_options_validate():
    with pytest.raises(ValueError, match="max_seq_length"):
        I.InstanceOptions(max_seq_length=4)
    with pytest.raises(ValueError, match="masked_lm_prob"):
        I.InstanceOptions(masked_lm_prob=0.0)
    with pytest.raises(ValueError, match="special tokens"):
        I.VocabInfo.from_tokens(["[PAD]", "[UNK]", "a"])


def test_stable_hash_is_process_independent():
    # A fixed value: blake2b of the repr, never Python's salted hash().
    assert I.stable_hash("x", 1) == I.stable_hash("x", 1)
    assert I.stable_hash("bucket", 12345, 0, "doc") == 0xA6D86529659FD072


def _protobuf_example(features):
    """What `serialize_example` must equal: the protobuf message, deterministically serialized."""
    example = tf.train.Example()
    for name, values in features.items():
        if values and isinstance(values[0], float):
            example.features.feature[name].float_list.value.extend(values)
        else:
            example.features.feature[name].int64_list.value.extend(values)
    return example.SerializeToString(deterministic=True)


def test_serialize_example_matches_the_protobuf_message_byte_for_byte():
    rng = random.Random(11)
    cases = [
        {"a": [0], "b": [1.0, 0.0], "c": []},
        {"z": [-1, -(2**63), 2**63 - 1, 2**40, 127, 128, 16383, 16384, 32767, 32768]},
        {"input_ids": [101, 2023, 102] + [0] * 5, "masked_lm_weights": [1.0, 0.5, -2.25, 1e-3]},
        {F.NEXT_SENTENCE_LABELS: [1], "ümlaut": [3], "Upper": [4], "lower": [5]},
        # Keys that are prefixes of others: the longer one comes first in the map.
        {"a": [1], "ab": [2], "abc": [3], "a\x00": [4], "b": [5], "": [6], "f1": [7], "f10": [8]},
        {},
    ]
    for _ in range(200):
        cases.append({
            f"f{j}": (
                [rng.uniform(-1e6, 1e6) for _ in range(rng.randint(1, 40))]
                if rng.random() < 0.3
                else [rng.randint(-(2**40), 2**40) if rng.random() < 0.2 else rng.randint(0, 70000)
                      for _ in range(rng.randint(0, 300))]
            )
            for j in rng.sample(range(20), rng.randint(1, 8))
        })
    for features in cases:
        assert F.serialize_example(features) == _protobuf_example(features)


@pytest.mark.parametrize(
    "options",
    [
        I.InstanceOptions(max_seq_length=48, max_predictions_per_seq=7, random_seed=42),
        I.InstanceOptions(max_seq_length=32, max_predictions_per_seq=5, whole_word_mask=True, random_seed=1),
        I.InstanceOptions(max_seq_length=40, dynamic_masking=True, random_seed=2),
    ],
    ids=["static", "whole_word", "dynamic"],
)
def test_bucket_records_are_the_serialized_bucket_instances(options):
    rng = random.Random(8)
    documents = [(f"d{i}", make_document(rng, rng.randint(1, 30), start=5 + i)) for i in range(15)]
    # A segment that holds a special id takes the general candidate rule.
    documents[3][1][0][1] = SEP
    documents.append(("alone-special", [[PAD, 9, 10], [CLS, 12]]))
    expected_stats = collections.Counter()
    expected = []
    for key, features, stats in I.create_bucket_instances(documents, 3, options, VOCAB):
        expected.append((key, _protobuf_example(features)))
        expected_stats.update(stats)
    stats = collections.Counter()
    assert list(I.bucket_records(documents, 3, options, VOCAB, stats)) == expected
    assert +stats == +expected_stats


def test_inlined_randbelow_draws_what_randrange_and_randint_draw():
    for n in (1, 2, 3, 7, 64, 65, 1000, 1436, 30522, 2**31 + 5):
        for seed in range(20):
            a, b, c = random.Random(seed), random.Random(seed), random.Random(seed)
            for _ in range(20):
                value = I._randbelow(a.getrandbits, n)
                assert value == b.randrange(n) == c.randint(0, n - 1)
            assert a.random() == b.random() == c.random()  # the streams stay in step
    with pytest.raises(ValueError):
        I._randbelow(random.Random(0).getrandbits, 0)


def test_flat_documents_give_the_same_records_as_sentence_lists(options=I.InstanceOptions(max_seq_length=40)):
    rng = random.Random(3)
    documents = [(f"d{i}", make_document(rng, rng.randint(1, 20), start=5 + i)) for i in range(6)]
    flat = [(doc_id, I.flat_document(sentences)) for doc_id, sentences in documents]
    assert flat[0][1].num_sentences == len(documents[0][1])
    assert list(I.bucket_records(flat, 0, options, VOCAB, collections.Counter())) == list(
        I.bucket_records(documents, 0, options, VOCAB, collections.Counter())
    )
