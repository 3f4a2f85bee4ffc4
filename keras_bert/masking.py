"""Masked-LM masking: the original static algorithm, and a dynamic tf.data version.

Static masking (`create_masked_lm_predictions`) follows google-research/bert's
`create_pretraining_data.py` on token ids instead of token strings:

- candidates are all tokens except `[CLS]`, `[SEP]` (and `[PAD]`, which the original
  never sees because it pads later);
- `num_to_predict = min(max_predictions_per_seq, max(1, round(len(tokens) * prob)))`,
  where `len(tokens)` counts `[CLS]` and the `[SEP]`s, as the original does;
- candidates are visited in a uniformly random order (drawn lazily, so only the
  visited ones cost random numbers); each chosen position becomes `[MASK]`
  80% of the time, a uniformly random vocabulary id 10% (any id, special tokens
  included, as the original draws from the whole vocabulary) and stays unchanged 10%;
- whole-word masking groups a `##` piece with the word before it, and skips a word
  that would overflow `num_to_predict` (trying later, smaller words), as the original.
  One deliberate difference: a `##` piece right after `[CLS]`/`[SEP]` (left there by
  truncation) starts its own word instead of joining the last word of segment A.

Dynamic masking (`make_dynamic_masking_fn`, `apply_dynamic_masking`) applies the same
rules inside a `tf.data` pipeline to records written without masks (see
`features.unmasked_feature_spec`), with stateless random ops seeded per element and
per epoch, and returns the same feature dict as static records.
"""

import dataclasses

import numpy as np

from keras_bert import features as F

MASK_PROB = 0.8  # Share of chosen positions replaced by [MASK].
RANDOM_PROB = 0.1  # Share replaced by a random id; the rest keep the original id.


@dataclasses.dataclass(frozen=True)
class MaskedLmPredictions:
    """The result of masking one sequence.

    Attributes:
        output_ids: the sequence with masks applied.
        positions: masked positions, ascending.
        label_ids: the original ids at `positions`.
        num_mask_token: positions replaced by `[MASK]`.
        num_random_token: positions replaced by a random id.
        num_kept: positions left unchanged.
    """

    output_ids: list
    positions: list
    label_ids: list
    num_mask_token: int
    num_random_token: int
    num_kept: int


def num_to_predict(num_tokens, masked_lm_prob, max_predictions_per_seq):
    """How many positions the original algorithm masks in a sequence of `num_tokens`.

    Example:
        >>> num_to_predict(128, 0.15, 20)
        19
    """
    return min(max_predictions_per_seq, max(1, int(round(num_tokens * masked_lm_prob))))


def word_candidates(token_ids, special_ids, continuation_ids=frozenset(), whole_word_mask=False):
    """Groups maskable positions into words.

    Args:
        token_ids: the sequence, `[CLS]` and `[SEP]`s included.
        special_ids: ids never masked (`[CLS]`, `[SEP]`, `[PAD]`).
        continuation_ids: ids of `##` pieces. Defaults to none.
        whole_word_mask: group a `##` piece with the preceding piece. Defaults to False.

    Returns:
        A list of lists of positions, one per word (one per token without
        whole-word masking), in sequence order.

    Example:
        >>> word_candidates([2, 7, 9, 3], {2, 3}, {9}, whole_word_mask=True)
        [[1, 2]]
    """
    words = []
    previous_maskable = False
    for index, token_id in enumerate(token_ids):
        if token_id in special_ids:
            previous_maskable = False
            continue
        if whole_word_mask and previous_maskable and token_id in continuation_ids:
            words[-1].append(index)
        else:
            words.append([index])
        previous_maskable = True
    return words


def create_masked_lm_predictions(
    token_ids,
    *,
    masked_lm_prob,
    max_predictions_per_seq,
    vocab_size,
    mask_id,
    special_ids,
    rng,
    whole_word_mask=False,
    continuation_ids=frozenset(),
):
    """Masks one sequence the way the original `create_masked_lm_predictions` does.

    Args:
        token_ids: the sequence, `[CLS] A [SEP] B [SEP]`, unpadded.
        masked_lm_prob: share of tokens to mask.
        max_predictions_per_seq: cap on masked positions.
        vocab_size: random replacements are drawn from `[0, vocab_size)`.
        mask_id: id of `[MASK]`.
        special_ids: ids never masked.
        rng: a `random.Random`; the only source of randomness.
        whole_word_mask: mask all pieces of a word together. Defaults to False.
        continuation_ids: ids of `##` pieces (for whole-word masking). Defaults to none.

    Returns:
        A `MaskedLmPredictions`.
    """
    if whole_word_mask:
        candidates = word_candidates(token_ids, special_ids, continuation_ids, whole_word_mask=True)
    else:
        candidates = [i for i, t in enumerate(token_ids) if t not in special_ids]
    budget = num_to_predict(len(token_ids), masked_lm_prob, max_predictions_per_seq)
    output_ids, chosen, counts = mask_candidates(
        token_ids, candidates, budget, vocab_size=vocab_size, mask_id=mask_id, rng=rng,
        whole_word_mask=whole_word_mask,
    )
    return MaskedLmPredictions(
        output_ids=output_ids,
        positions=chosen,
        label_ids=[token_ids[i] for i in chosen],
        num_mask_token=counts[0],
        num_random_token=counts[1],
        num_kept=counts[2],
    )


def mask_candidates(token_ids, candidates, budget, *, vocab_size, mask_id, rng, whole_word_mask=False):
    """The masking loop of `create_masked_lm_predictions`, on given candidates.

    Args:
        token_ids: the sequence.
        candidates: maskable positions in sequence order (lists of positions, one
            per word, with `whole_word_mask`); shuffled in place.
        budget: `num_to_predict(...)` of the sequence.
        vocab_size: random replacements are drawn from `[0, vocab_size)`.
        mask_id: id of `[MASK]`.
        rng: a `random.Random`.
        whole_word_mask: `candidates` are words. Defaults to False.

    Returns:
        `(output_ids, positions, counts)`: the masked sequence (a new list), the
        masked positions ascending, and `[mask_token, random_token, kept]` counts.
    """
    output_ids = list(token_ids)
    chosen = []
    counts = [0, 0, 0]  # [MASK], random, kept
    num_candidates = len(candidates)
    visited = 0
    random = rng.random
    # The original shuffles every candidate, then takes them in order. A Fisher-Yates
    # shuffle run lazily from the front gives the same uniformly random order, but
    # only draws as many positions as are visited (about `budget`, not all tokens).
    # `int(random() * n)` is how `random.shuffle` drew before Python 3.11; its bias,
    # below n / 2**53, is immaterial here and it is several times faster than randrange.
    while visited < num_candidates and len(chosen) < budget:
        pick = visited + int(random() * (num_candidates - visited))
        candidates[visited], candidates[pick] = candidates[pick], candidates[visited]
        word = candidates[visited]
        visited += 1
        if not whole_word_mask:
            word = (word,)
        # A whole word that does not fit is skipped; a later, shorter one may fit.
        if len(chosen) + len(word) > budget:
            continue
        for index in word:
            if random() < MASK_PROB:
                output_ids[index] = mask_id
                counts[0] += 1
            elif random() < 0.5:
                counts[2] += 1
            else:
                output_ids[index] = rng.randint(0, vocab_size - 1)
                counts[1] += 1
            chosen.append(index)
    chosen.sort()
    return output_ids, chosen, counts


def continuation_ids_from_vocab(vocab_tokens):
    """Ids of the `##` pieces of a vocabulary given as a list of tokens in id order."""
    return frozenset(i for i, token in enumerate(vocab_tokens) if token.startswith("##"))


def make_dynamic_masking_fn(
    *,
    vocab_size,
    max_predictions_per_seq,
    mask_id,
    special_ids,
    masked_lm_prob=0.15,
    whole_word_mask=False,
    continuation_ids=(),
):
    """Builds a `tf.data`-mappable function that masks one unbatched example.

    The returned function takes `(features, seed)`: `features` as parsed with
    `features.unmasked_feature_spec` (`input_ids`, `input_mask`, `segment_ids`,
    `next_sentence_labels`) and `seed` an int tensor of shape `[2]` for the
    stateless random ops. It returns the static-record dict of
    `features.pretraining_feature_spec`: masked `input_ids`, `masked_lm_positions`,
    `masked_lm_ids`, `masked_lm_weights` (float32), the rest passed through. Use
    `apply_dynamic_masking` to draw a new seed per element and per epoch.

    Args:
        vocab_size: random replacements are drawn from `[0, vocab_size)`.
        max_predictions_per_seq: length of the `masked_lm_*` features.
        mask_id: id of `[MASK]`.
        special_ids: ids never masked (`[CLS]`, `[SEP]`, `[PAD]`).
        masked_lm_prob: share of tokens to mask. Defaults to 0.15.
        whole_word_mask: mask all pieces of a word together. Defaults to False.
        continuation_ids: ids of `##` pieces, for whole-word masking. Defaults to none.

    Example:
        >>> fn = make_dynamic_masking_fn(vocab_size=30522, max_predictions_per_seq=20,
        ...                              mask_id=103, special_ids=(0, 101, 102))
        >>> ds = apply_dynamic_masking(unmasked_ds, fn, seed=1)
    """
    import tensorflow as tf  # Static masking (data preparation) needs no TensorFlow.

    num_predictions = int(max_predictions_per_seq)
    special = tf.constant(sorted(set(int(i) for i in special_ids)), tf.int64)
    is_continuation = np.zeros([vocab_size], np.bool_)
    if whole_word_mask:
        is_continuation[np.asarray(sorted(continuation_ids), np.int64)] = True
    is_continuation = tf.constant(is_continuation)

    def mask(features, seed):
        input_ids = tf.cast(features[F.INPUT_IDS], tf.int64)  # (seq_len,)
        input_mask = tf.cast(features[F.INPUT_MASK], tf.int64)
        seq_len = tf.shape(input_ids)[0]
        seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), 4)

        num_tokens = tf.reduce_sum(input_mask)
        budget = tf.cast(tf.round(tf.cast(num_tokens, tf.float64) * masked_lm_prob), tf.int64)
        budget = tf.minimum(tf.cast(num_predictions, tf.int64), tf.maximum(budget, 1))

        is_special = tf.reduce_any(tf.equal(input_ids[:, None], special[None, :]), axis=1)
        maskable = tf.logical_and(tf.equal(input_mask, 1), tf.logical_not(is_special))
        if whole_word_mask:
            safe_ids = tf.clip_by_value(input_ids, 0, vocab_size - 1)
            previous = tf.concat([[False], maskable[:-1]], axis=0)
            continues = tf.logical_and(tf.gather(is_continuation, safe_ids), previous)
            starts = tf.logical_and(maskable, tf.logical_not(continues))
        else:
            starts = maskable
        # Word index of every token; only meaningful where `maskable`.
        word_index = tf.cumsum(tf.cast(starts, tf.int32)) - 1  # (seq_len,)
        word_index = tf.where(maskable, word_index, seq_len)
        num_words = tf.reduce_sum(tf.cast(starts, tf.int32))
        word_length = tf.math.unsorted_segment_sum(
            tf.cast(maskable, tf.int64), word_index, seq_len + 1
        )[:seq_len]  # (seq_len,), zero past num_words

        # A random order of the words: sort uniform scores, invalid words last.
        scores = tf.random.stateless_uniform([seq_len], seed=seeds[0])
        scores = tf.where(tf.range(seq_len) < num_words, scores, -1.0)
        order = tf.argsort(scores, direction="DESCENDING")  # (seq_len,)
        ordered_length = tf.gather(word_length, order)
        if whole_word_mask:
            # Greedy fill as the original: skip a word that overflows the budget.
            def take_step(state, length):
                count, _ = state
                take = tf.logical_and(length > 0, count + length <= budget)
                return count + tf.where(take, length, 0), take

            _, taken = tf.scan(
                take_step, ordered_length, initializer=(tf.constant(0, tf.int64), False)
            )
        else:
            taken = tf.logical_and(tf.range(seq_len, dtype=tf.int64) < budget, ordered_length > 0)
        word_taken = tf.scatter_nd(order[:, None], taken, [seq_len])
        word_taken = tf.concat([word_taken, [False]], axis=0)
        chosen = tf.gather(word_taken, word_index)  # (seq_len,)

        draw = tf.random.stateless_uniform([seq_len], seed=seeds[1])
        random_ids = tf.random.stateless_uniform(
            [seq_len], seed=seeds[2], minval=0, maxval=vocab_size, dtype=tf.int64
        )
        masked_ids = tf.where(draw < MASK_PROB, tf.constant(mask_id, tf.int64), input_ids)
        masked_ids = tf.where(
            tf.logical_and(draw >= MASK_PROB, draw < MASK_PROB + RANDOM_PROB), random_ids, masked_ids
        )
        output_ids = tf.where(chosen, masked_ids, input_ids)

        positions = tf.cast(tf.where(chosen)[:, 0], tf.int64)  # (num_chosen,) ascending
        num_chosen = tf.shape(positions)[0]
        padding = [[0, num_predictions - num_chosen]]
        out = dict(features)
        out[F.INPUT_IDS] = output_ids
        out[F.MASKED_LM_POSITIONS] = tf.ensure_shape(tf.pad(positions, padding), [num_predictions])
        out[F.MASKED_LM_IDS] = tf.ensure_shape(
            tf.pad(tf.gather(input_ids, positions), padding), [num_predictions]
        )
        out[F.MASKED_LM_WEIGHTS] = tf.ensure_shape(
            tf.pad(tf.ones([num_chosen], tf.float32), padding), [num_predictions]
        )
        return out

    return mask


def apply_dynamic_masking(dataset, masking_fn, seed, num_parallel_calls=None):
    """Maps `masking_fn` over an unbatched dataset with fresh masks every epoch.

    Each element gets its own stateless seed from `tf.data.Dataset.random`, which
    draws a new sequence on every iteration of the dataset, so re-iterating (a new
    epoch) re-masks every sequence, while a fixed `seed` makes the whole run
    reproducible.

    Args:
        dataset: unbatched dataset of unmasked feature dicts.
        masking_fn: from `make_dynamic_masking_fn`.
        seed: int seed of the per-element seed stream.
        num_parallel_calls: passed to `Dataset.map`. Defaults to None (AUTOTUNE).
    """
    import tensorflow as tf

    if num_parallel_calls is None:
        num_parallel_calls = tf.data.AUTOTUNE
    seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(
        2, drop_remainder=True
    )
    return tf.data.Dataset.zip((dataset, seeds)).map(
        masking_fn, num_parallel_calls=num_parallel_calls, deterministic=True
    )
