"""Masked-LM masking: the original's rules, statistics on large samples, tf.data version."""

import random

import numpy as np
import pytest
import tensorflow as tf

from keras_bert import features as F
from keras_bert import masking

PAD, UNK, CLS, SEP, MASK = 0, 1, 2, 3, 4
VOCAB_SIZE = 1000
CONTINUATION = frozenset(range(700, 1000))  # Ids 700.. play the "##" pieces.
SPECIAL = frozenset((PAD, CLS, SEP))


def random_sequence(rng, length):
    """`[CLS] A [SEP] B [SEP]` of `length` tokens; about 30% of pieces are `##`."""
    body = []
    for _ in range(length - 3):
        if body and rng.random() < 0.3:
            body.append(rng.randrange(700, 1000))
        else:
            body.append(rng.randrange(5, 700))
    split = rng.randint(1, len(body) - 1)
    return [CLS, *body[:split], SEP, *body[split:], SEP]


def mask(ids, rng, whole_word_mask=False, max_predictions=20, prob=0.15):
    return masking.create_masked_lm_predictions(
        ids,
        masked_lm_prob=prob,
        max_predictions_per_seq=max_predictions,
        vocab_size=VOCAB_SIZE,
        mask_id=MASK,
        special_ids=SPECIAL,
        rng=rng,
        whole_word_mask=whole_word_mask,
        continuation_ids=CONTINUATION,
    )


def words_of(ids):
    """Position -> index of its word (## pieces join the preceding non-special piece)."""
    return masking.word_candidates(ids, SPECIAL, CONTINUATION, whole_word_mask=True)


def test_num_to_predict_matches_original_formula():
    assert masking.num_to_predict(128, 0.15, 20) == 19  # round(19.2)
    assert masking.num_to_predict(512, 0.15, 80) == 77  # round(76.8)
    assert masking.num_to_predict(512, 0.15, 20) == 20  # capped
    assert masking.num_to_predict(5, 0.15, 20) == 1  # at least one
    assert masking.num_to_predict(10, 0.15, 20) == 2  # round(1.5000000000000002)


def test_word_candidates_group_pieces_but_not_across_separators():
    ids = [CLS, 10, 701, 702, 11, SEP, 703, 12, SEP]
    assert masking.word_candidates(ids, SPECIAL, CONTINUATION, whole_word_mask=False) == [
        [1], [2], [3], [4], [6], [7]
    ]
    # A "##" piece right after [SEP] (left by truncation) starts its own word.
    assert words_of(ids) == [[1, 2, 3], [4], [6], [7]]


def test_static_masking_statistics_on_a_large_sample():
    rng = random.Random(1234)
    masked = tokens = mask_token = random_token = kept = 0
    for _ in range(3000):
        length = rng.choice([128, 100, 64])
        ids = random_sequence(rng, length)
        result = mask(ids, rng)
        assert len(result.positions) == masking.num_to_predict(length, 0.15, 20)
        assert result.positions == sorted(set(result.positions))
        assert result.label_ids == [ids[p] for p in result.positions]
        for p in result.positions:
            assert ids[p] not in SPECIAL
        unchanged = [i for i in range(length) if i not in set(result.positions)]
        assert all(result.output_ids[i] == ids[i] for i in unchanged)
        assert all(0 <= t < VOCAB_SIZE for t in result.output_ids)
        masked += len(result.positions)
        tokens += length
        mask_token += result.num_mask_token
        random_token += result.num_random_token
        kept += result.num_kept
        assert result.num_mask_token + result.num_random_token + result.num_kept == len(result.positions)
        assert sum(result.output_ids[p] == MASK for p in result.positions) >= result.num_mask_token
    assert abs(masked / tokens - 0.15) < 0.005
    assert abs(mask_token / masked - 0.8) < 0.015
    assert abs(random_token / masked - 0.1) < 0.015
    assert abs(kept / masked - 0.1) < 0.015


def test_whole_word_masking_never_masks_part_of_a_word():
    rng = random.Random(7)
    masked = tokens = 0
    for _ in range(1500):
        ids = random_sequence(rng, 128)
        result = mask(ids, rng, whole_word_mask=True)
        chosen = set(result.positions)
        for word in words_of(ids):
            hit = [p in chosen for p in word]
            assert all(hit) or not any(hit), (word, hit)
        assert len(chosen) <= masking.num_to_predict(128, 0.15, 20)
        assert not chosen & {i for i, t in enumerate(ids) if t in SPECIAL}
        masked += len(chosen)
        tokens += len(ids)
    # Skipping words that overflow the budget still fills it almost always.
    assert masked / tokens > 0.145


def test_masking_is_a_function_of_the_rng_state():
    ids = random_sequence(random.Random(0), 128)
    a = mask(ids, random.Random(5))
    b = mask(ids, random.Random(5))
    c = mask(ids, random.Random(6))
    assert a == b
    assert a.positions != c.positions


# --- dynamic masking (tf.data) ---------------------------------------------------


def unmasked_dataset(sequences, max_seq_length):
    def gen():
        for ids in sequences:
            n = len(ids)
            first_sep = ids.index(SEP)
            yield {
                F.INPUT_IDS: np.array(ids + [PAD] * (max_seq_length - n), np.int64),
                F.INPUT_MASK: np.array([1] * n + [0] * (max_seq_length - n), np.int64),
                F.SEGMENT_IDS: np.array(
                    [0] * (first_sep + 1) + [1] * (n - first_sep - 1) + [0] * (max_seq_length - n), np.int64
                ),
                F.NEXT_SENTENCE_LABELS: np.array([0], np.int64),
            }

    spec = F.unmasked_feature_spec(max_seq_length)
    signature = {k: tf.TensorSpec(v.shape, v.dtype) for k, v in spec.items()}
    return tf.data.Dataset.from_generator(gen, output_signature=signature)


@pytest.fixture(scope="module")
def sequences():
    rng = random.Random(99)
    return [random_sequence(rng, rng.choice([128, 90, 40])) for _ in range(1200)]


def dynamic_fn(whole_word_mask=False):
    return masking.make_dynamic_masking_fn(
        vocab_size=VOCAB_SIZE,
        max_predictions_per_seq=20,
        mask_id=MASK,
        special_ids=SPECIAL,
        whole_word_mask=whole_word_mask,
        continuation_ids=CONTINUATION,
    )


@pytest.mark.parametrize("whole_word_mask", [False, True])
def test_dynamic_masking_matches_the_static_rules_and_statistics(sequences, whole_word_mask):
    ds = masking.apply_dynamic_masking(unmasked_dataset(sequences, 128), dynamic_fn(whole_word_mask), seed=3)
    spec = F.pretraining_feature_spec(128, 20)
    assert set(ds.element_spec) == set(spec)
    for name, feature in spec.items():
        assert ds.element_spec[name].shape == feature.shape, name
        assert ds.element_spec[name].dtype == feature.dtype, name

    masked = tokens = as_mask = as_original = 0
    for ids, out in zip(sequences, ds.as_numpy_iterator()):
        n = len(ids)
        budget = masking.num_to_predict(n, 0.15, 20)
        weights = out[F.MASKED_LM_WEIGHTS]
        k = int(weights.sum())
        positions = out[F.MASKED_LM_POSITIONS][:k].tolist()
        if whole_word_mask:
            assert k <= budget
            chosen = set(positions)
            for word in words_of(ids):
                hit = [p in chosen for p in word]
                assert all(hit) or not any(hit)
        else:
            assert k == budget
        assert weights.tolist() == [1.0] * k + [0.0] * (20 - k)
        assert positions == sorted(set(positions))
        assert out[F.MASKED_LM_POSITIONS][k:].tolist() == [0] * (20 - k)
        assert out[F.MASKED_LM_IDS][:k].tolist() == [ids[p] for p in positions]
        assert all(ids[p] not in SPECIAL and p < n for p in positions)
        output = out[F.INPUT_IDS].tolist()
        assert all(output[i] == ids[i] for i in range(n) if i not in set(positions))
        assert output[n:] == [PAD] * (128 - n)
        masked += k
        tokens += n
        as_mask += sum(output[p] == MASK for p in positions)
        as_original += sum(output[p] == ids[p] for p in positions)
    assert abs(masked / tokens - 0.15) < (0.005 if not whole_word_mask else 0.01)
    assert abs(as_mask / masked - 0.8) < 0.015
    # Kept (10%) plus random draws that happen to hit the original id (0.1 / 1000).
    assert abs(as_original / masked - 0.1) < 0.015


def test_dynamic_masking_differs_per_epoch_and_repeats_per_seed(sequences):
    def masks(seed):
        ds = masking.apply_dynamic_masking(unmasked_dataset(sequences[:50], 128), dynamic_fn(), seed=seed)
        return [[e[F.MASKED_LM_POSITIONS].tolist() for e in ds.as_numpy_iterator()] for _ in range(2)]

    first_run, second_run = masks(11), masks(11)
    assert first_run == second_run  # Same seed: same masks, epoch by epoch.
    epoch1, epoch2 = first_run
    assert sum(a != b for a, b in zip(epoch1, epoch2)) > 45  # A new epoch re-masks.
    assert masks(12)[0] != epoch1
