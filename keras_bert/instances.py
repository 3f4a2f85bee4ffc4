"""Pre-training instances: NSP segment pairs, random-document buckets, record features.

Pure logic, no Beam: `components/pretraining_data.py` wraps these in DoFns.

The pairing follows google-research/bert's `create_instances_from_document` on token
ids: a target length (`max_seq_length - 3`, or with probability `short_seq_prob` a
uniform length in `[2, max_seq_length - 3]`); sentences are gathered into a chunk
until it reaches the target or the document ends; segment A is a random prefix of the
chunk's sentences; segment B is the rest of the chunk (the true continuation) or, with
probability 0.5 (always when the chunk has one sentence), sentences from a random
point of a random *other* document, the unused sentences of the chunk being "put
back" for the next pair; the pair is truncated longest-first, one token at a time
from a random end.

Every random choice comes from one `random.Random` per (seed, document, dupe copy)
(`document_rng`), never from global state or arrival order, so a distributed run
gives the same instances whatever the number of workers.
"""

import collections
import dataclasses
import hashlib
import random
import struct

from keras_bert import features as F
from keras_bert.features import (
    _feature_entry, _float_feature, _int64_feature, _length_delimited, _map_key_order,
    _packed_varints)
from keras_bert import masking


@dataclasses.dataclass(frozen=True)
class InstanceOptions:
    """How instances are built.

    Attributes:
        max_seq_length: tokens per sequence, `[CLS]` and `[SEP]`s included. Defaults to 128.
        max_predictions_per_seq: cap on masked positions. Defaults to 20.
        masked_lm_prob: share of tokens to mask. Defaults to 0.15.
        short_seq_prob: probability of a shorter target length. Defaults to 0.1.
        whole_word_mask: mask all pieces of a word together. Defaults to False.
        dynamic_masking: build unmasked sequences (masked later, per epoch, by
            `masking.apply_dynamic_masking`). Defaults to False.
        random_seed: seed of every random choice. Defaults to 12345 (the original's).
    """

    max_seq_length: int = 128
    max_predictions_per_seq: int = 20
    masked_lm_prob: float = 0.15
    short_seq_prob: float = 0.1
    whole_word_mask: bool = False
    dynamic_masking: bool = False
    random_seed: int = 12345

    def __post_init__(self):
        if self.max_seq_length < 5:
            raise ValueError(
                f"max_seq_length must be >= 5 ([CLS] A [SEP] B [SEP] with A and B of at "
                f"least one token each); got {self.max_seq_length}"
            )
        if self.max_predictions_per_seq < 1:
            raise ValueError(f"max_predictions_per_seq must be >= 1; got {self.max_predictions_per_seq}")
        if not 0.0 < self.masked_lm_prob < 1.0:
            raise ValueError(f"masked_lm_prob must be in (0, 1); got {self.masked_lm_prob}")
        if not 0.0 <= self.short_seq_prob <= 1.0:
            raise ValueError(f"short_seq_prob must be in [0, 1]; got {self.short_seq_prob}")


@dataclasses.dataclass(frozen=True)
class VocabInfo:
    """The vocabulary facts instance building needs (no tokenizer).

    Attributes:
        vocab_size: number of ids.
        pad_id, cls_id, sep_id, mask_id: ids of the special tokens.
        continuation_ids: ids of `##` pieces, for whole-word masking.
    """

    vocab_size: int
    pad_id: int
    cls_id: int
    sep_id: int
    mask_id: int
    continuation_ids: frozenset = frozenset()

    @classmethod
    def from_tokens(cls, vocab_tokens):
        """Builds it from the vocabulary tokens in id order (the lines of vocab.txt)."""
        index = {token: i for i, token in enumerate(vocab_tokens)}
        missing = [t for t in (F.PAD_TOKEN, F.CLS_TOKEN, F.SEP_TOKEN, F.MASK_TOKEN) if t not in index]
        if missing:
            raise ValueError(f"vocabulary lacks the special tokens {missing}")
        return cls(
            vocab_size=len(vocab_tokens),
            pad_id=index[F.PAD_TOKEN],
            cls_id=index[F.CLS_TOKEN],
            sep_id=index[F.SEP_TOKEN],
            mask_id=index[F.MASK_TOKEN],
            continuation_ids=masking.continuation_ids_from_vocab(vocab_tokens),
        )

    @property
    def special_ids(self):
        return frozenset((self.pad_id, self.cls_id, self.sep_id))


@dataclasses.dataclass
class SegmentPair:
    """One `[CLS] A [SEP] B [SEP]` sequence before masking.

    Attributes:
        token_ids: the sequence.
        segment_ids: 0 for `[CLS] A [SEP]`, 1 for `B [SEP]`.
        is_random_next: B comes from another document (next_sentence_label 1).
        truncated_front: tokens removed from the front of A or B.
        truncated_back: tokens removed from the back of A or B.
        random_document_fallback: B was wanted from another document but none was
            available, so it came from this one.
    """

    token_ids: list
    segment_ids: list
    is_random_next: bool
    truncated_front: int = 0
    truncated_back: int = 0
    random_document_fallback: bool = False


def stable_hash(*parts):
    """A 64-bit hash of `parts` that is the same in every process and on every machine.

    Python's `hash()` of a str is salted per process, so it can't seed workers.
    """
    digest = hashlib.blake2b(repr(parts).encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def document_rng(seed, doc_id, dupe_index):
    """The random stream of one dupe copy of one document."""
    return random.Random(stable_hash("instances", seed, doc_id, dupe_index))


def bucket_of(seed, dupe_index, doc_id, num_buckets):
    """The random-document bucket of a document in one dupe copy.

    Buckets are drawn again for every dupe copy, so across copies a document meets
    different candidate "other" documents.
    """
    return stable_hash("bucket", seed, dupe_index, doc_id) % num_buckets


def num_buckets_for(num_documents, docs_per_bucket):
    """Buckets so that each holds about `docs_per_bucket` documents (at least one bucket)."""
    return max(1, int(num_documents) // max(1, int(docs_per_bucket)))


def truncate_seq_pair(tokens_a, tokens_b, max_num_tokens, rng):
    """Truncates the longer of A and B, one token at a time, from a random end.

    Modifies the lists in place, as the original.

    Returns:
        `(removed_from_front, removed_from_back)`.
    """
    front = back = 0
    while len(tokens_a) + len(tokens_b) > max_num_tokens:
        trunc_tokens = tokens_a if len(tokens_a) > len(tokens_b) else tokens_b
        # Truncate sometimes from the front and sometimes from the back, to add
        # randomness and avoid biases (the original's reasoning).
        if rng.random() < 0.5:
            del trunc_tokens[0]
            front += 1
        else:
            trunc_tokens.pop()
            back += 1
    return front, back


def create_segment_pairs(document, *, max_seq_length, short_seq_prob, rng, random_document, cls_id, sep_id):
    """Splits one document into NSP segment pairs, as the original.

    Args:
        document: list of sentences, each a non-empty list of token ids.
        max_seq_length: tokens per sequence, specials included.
        short_seq_prob: probability of a shorter target length.
        rng: a `random.Random`.
        random_document: `random_document(rng)` returns another document (a list of
            sentences) for a random-next B, or None when there is no other document
            (B then comes from this document, as the original's fallback does).
        cls_id, sep_id: ids of `[CLS]` and `[SEP]`.

    Returns:
        A list of `SegmentPair`.
    """
    max_num_tokens = max_seq_length - 3
    # Mostly fill the whole sequence; sometimes (short_seq_prob) use a shorter target
    # to lessen the mismatch between pre-training and fine-tuning lengths.
    target_seq_length = max_num_tokens
    if rng.random() < short_seq_prob:
        target_seq_length = rng.randint(2, max_num_tokens)

    pairs = []
    current_chunk = []
    current_length = 0
    i = 0
    while i < len(document):
        segment = document[i]
        current_chunk.append(segment)
        current_length += len(segment)
        if i == len(document) - 1 or current_length >= target_seq_length:
            if current_chunk:
                # `a_end` sentences of the chunk go into A.
                a_end = 1
                if len(current_chunk) >= 2:
                    a_end = rng.randint(1, len(current_chunk) - 1)
                tokens_a = [t for sentence in current_chunk[:a_end] for t in sentence]

                tokens_b = []
                fallback = False
                if len(current_chunk) == 1 or rng.random() < 0.5:
                    is_random_next = True
                    target_b_length = target_seq_length - len(tokens_a)
                    other = random_document(rng)
                    if other is None:
                        other, fallback = document, True
                    random_start = rng.randint(0, len(other) - 1)
                    for j in range(random_start, len(other)):
                        tokens_b.extend(other[j])
                        if len(tokens_b) >= target_b_length:
                            break
                    # The chunk's B sentences were not used: put them back.
                    i -= len(current_chunk) - a_end
                else:
                    is_random_next = False
                    tokens_b = [t for sentence in current_chunk[a_end:] for t in sentence]
                front, back = truncate_seq_pair(tokens_a, tokens_b, max_num_tokens, rng)
                assert tokens_a and tokens_b, "segments A and B must be non-empty"

                pairs.append(
                    SegmentPair(
                        token_ids=[cls_id, *tokens_a, sep_id, *tokens_b, sep_id],
                        segment_ids=[0] * (len(tokens_a) + 2) + [1] * (len(tokens_b) + 1),
                        is_random_next=is_random_next,
                        truncated_front=front,
                        truncated_back=back,
                        random_document_fallback=fallback,
                    )
                )
            current_chunk = []
            current_length = 0
        i += 1
    return pairs


def _pad(values, length, value=0):
    return list(values) + [value] * (length - len(values))


def instance_features(pair, predictions, max_seq_length, max_predictions_per_seq):
    """The feature dict of a static-masking record (names of `features.pretraining_feature_spec`).

    Args:
        pair: a `SegmentPair`.
        predictions: its `masking.MaskedLmPredictions`.
        max_seq_length: padded sequence length.
        max_predictions_per_seq: padded prediction length.
    """
    if len(pair.token_ids) > max_seq_length:
        raise ValueError(f"sequence of {len(pair.token_ids)} tokens exceeds max_seq_length={max_seq_length}")
    n = len(predictions.positions)
    return {
        F.INPUT_IDS: _pad(predictions.output_ids, max_seq_length),
        F.INPUT_MASK: _pad([1] * len(pair.token_ids), max_seq_length),
        F.SEGMENT_IDS: _pad(pair.segment_ids, max_seq_length),
        F.MASKED_LM_POSITIONS: _pad(predictions.positions, max_predictions_per_seq),
        F.MASKED_LM_IDS: _pad(predictions.label_ids, max_predictions_per_seq),
        F.MASKED_LM_WEIGHTS: _pad([1.0] * n, max_predictions_per_seq, 0.0),
        F.NEXT_SENTENCE_LABELS: [1 if pair.is_random_next else 0],
    }


def unmasked_features(pair, max_seq_length):
    """The feature dict of a dynamic-masking record (`features.unmasked_feature_spec`)."""
    if len(pair.token_ids) > max_seq_length:
        raise ValueError(f"sequence of {len(pair.token_ids)} tokens exceeds max_seq_length={max_seq_length}")
    return {
        F.INPUT_IDS: _pad(pair.token_ids, max_seq_length),
        F.INPUT_MASK: _pad([1] * len(pair.token_ids), max_seq_length),
        F.SEGMENT_IDS: _pad(pair.segment_ids, max_seq_length),
        F.NEXT_SENTENCE_LABELS: [1 if pair.is_random_next else 0],
    }


# tf.Example bytes are written field by field by `features.serialize_example` and
# its helpers; `RecordEncoder` reuses those pieces for the fixed layout of an instance.


class RecordEncoder:
    """Serializes instances straight to `tf.train.Example` bytes (`serialize_example`'s).

    Padding ids are zeros (one varint byte each), masks and segments zeros and ones,
    weights 1.0 or 0.0: each is a byte string repeated, not a list of Python values.

    Args:
        max_seq_length: padded sequence length.
        max_predictions_per_seq: padded prediction length.
    """

    def __init__(self, max_seq_length, max_predictions_per_seq):
        self.max_seq_length = max_seq_length
        self.max_predictions_per_seq = max_predictions_per_seq
        self._keys = {
            name: name.encode("utf-8")
            for name in (
                F.INPUT_IDS, F.INPUT_MASK, F.SEGMENT_IDS, F.MASKED_LM_POSITIONS, F.MASKED_LM_IDS,
                F.MASKED_LM_WEIGHTS, F.NEXT_SENTENCE_LABELS,
            )
        }
        # Position of each feature in deterministic order; the sequence features come first.
        self._masked_order = self._order(
            (F.INPUT_IDS, F.INPUT_MASK, F.SEGMENT_IDS, F.NEXT_SENTENCE_LABELS,
             F.MASKED_LM_POSITIONS, F.MASKED_LM_IDS, F.MASKED_LM_WEIGHTS)
        )
        self._unmasked_order = self._order((F.INPUT_IDS, F.INPUT_MASK, F.SEGMENT_IDS, F.NEXT_SENTENCE_LABELS))
        self._one = struct.pack("<f", 1.0)
        self._zero = struct.pack("<f", 0.0)

        # Entries that depend on lengths only, built once per length.
        self._length_entries = {}
        self._weight_entries = {}
        self._label_entries = {
            flag: _feature_entry(self._keys[F.NEXT_SENTENCE_LABELS], _int64_feature(b"\x01" if flag else b"\x00"))
            for flag in (False, True)
        }

    def _order(self, names):
        keys = [(self._keys[name], i) for i, name in enumerate(names)]
        return [i for _, i in sorted(keys, key=_map_key_order)]

    def _int64_entry(self, name, packed):
        return _feature_entry(self._keys[name], _int64_feature(packed))

    def _sequence_entries(self, pair, token_ids):
        n = len(token_ids)
        pad = self.max_seq_length - n
        if pad < 0:
            raise ValueError(f"sequence of {n} tokens exceeds max_seq_length={self.max_seq_length}")
        segment_ids = pair.segment_ids
        len_a = segment_ids.index(1) if 1 in segment_ids else n
        lengths = self._length_entries.get((n, len_a))
        if lengths is None:
            lengths = self._length_entries[(n, len_a)] = (
                self._int64_entry(F.INPUT_MASK, b"\x01" * n + b"\x00" * pad),
                self._int64_entry(F.SEGMENT_IDS, b"\x00" * len_a + b"\x01" * (n - len_a) + b"\x00" * pad),
            )
        return [
            self._int64_entry(F.INPUT_IDS, _packed_varints(token_ids) + b"\x00" * pad),
            lengths[0],
            lengths[1],
            self._label_entries[bool(pair.is_random_next)],
        ]

    def masked(self, pair, output_ids, positions, label_ids):
        """`serialize_example(instance_features(...))` of a masked pair."""
        entries = self._sequence_entries(pair, output_ids)
        k = len(positions)
        pad = self.max_predictions_per_seq - k
        weights = self._weight_entries.get(k)
        if weights is None:
            weights = self._weight_entries[k] = _feature_entry(
                self._keys[F.MASKED_LM_WEIGHTS], _float_feature(self._one * k + self._zero * pad)
            )
        entries += [
            self._int64_entry(F.MASKED_LM_POSITIONS, _packed_varints(positions) + b"\x00" * pad),
            self._int64_entry(F.MASKED_LM_IDS, _packed_varints(label_ids) + b"\x00" * pad),
            weights,
        ]
        return _length_delimited(b"\x0a", b"".join([entries[i] for i in self._masked_order]))

    def unmasked(self, pair):
        """`serialize_example(unmasked_features(...))` of a pair."""
        entries = self._sequence_entries(pair, pair.token_ids)
        return _length_delimited(b"\x0a", b"".join([entries[i] for i in self._unmasked_order]))


def _bucket_pairs(bucket_documents, dupe_index, options, vocab):
    """`(doc_id, instance_index, pair, rng)` of every pair of one bucket, in output order.

    Each document's pairs are made first, then masked in order from the same rng.
    """
    documents = sorted(bucket_documents, key=lambda d: d[0])
    seed = options.random_seed
    for position, (doc_id, sentences) in enumerate(documents):
        rng = document_rng(seed, doc_id, dupe_index)

        def random_document(rng, position=position):
            # Uniform over the bucket's other documents (the original: uniform over
            # all other documents of the corpus, see the module note in
            # components/pretraining_data.py).
            if len(documents) < 2:
                return None
            other = rng.randrange(len(documents) - 1)
            if other >= position:
                other += 1
            return documents[other][1]

        pairs = create_segment_pairs(
            sentences,
            max_seq_length=options.max_seq_length,
            short_seq_prob=options.short_seq_prob,
            rng=rng,
            random_document=random_document,
            cls_id=vocab.cls_id,
            sep_id=vocab.sep_id,
        )
        for instance_index, pair in enumerate(pairs):
            yield doc_id, instance_index, pair, rng


def create_bucket_instances(bucket_documents, dupe_index, options, vocab):
    """Builds the instances of one dupe copy of one random-document bucket.

    Args:
        bucket_documents: list of `(doc_id, sentences)`, sentences being lists of
            token ids; the bucket's documents, in any order (sorted here by doc_id).
        dupe_index: which dupe copy this is.
        options: an `InstanceOptions`.
        vocab: a `VocabInfo`.

    Yields:
        `(sort_key, features, stats)`: `sort_key` a 64-bit int that orders the
        output (a stable hash of seed, document, copy and instance), `features` the
        record's feature dict, `stats` a `collections.Counter` for this instance.
        `bucket_records` gives the same records already serialized, faster.
    """
    seed = options.random_seed
    for doc_id, instance_index, pair, rng in _bucket_pairs(bucket_documents, dupe_index, options, vocab):
        stats = collections.Counter(
            instances=1,
            tokens=len(pair.token_ids),
            padded_tokens=options.max_seq_length,
            random_next=int(pair.is_random_next),
            truncated_instances=int(pair.truncated_front + pair.truncated_back > 0),
            truncated_front_tokens=pair.truncated_front,
            truncated_back_tokens=pair.truncated_back,
            random_document_fallback=int(pair.random_document_fallback),
        )
        if options.dynamic_masking:
            features = unmasked_features(pair, options.max_seq_length)
        else:
            predictions = masking.create_masked_lm_predictions(
                pair.token_ids,
                masked_lm_prob=options.masked_lm_prob,
                max_predictions_per_seq=options.max_predictions_per_seq,
                vocab_size=vocab.vocab_size,
                mask_id=vocab.mask_id,
                special_ids=vocab.special_ids,
                rng=rng,
                whole_word_mask=options.whole_word_mask,
                continuation_ids=vocab.continuation_ids,
            )
            features = instance_features(pair, predictions, options.max_seq_length, options.max_predictions_per_seq)
            stats.update(
                masked=len(predictions.positions),
                masked_as_mask_token=predictions.num_mask_token,
                masked_as_random_token=predictions.num_random_token,
                masked_kept=predictions.num_kept,
            )
        sort_key = stable_hash("order", seed, doc_id, dupe_index, instance_index)
        yield sort_key, features, stats


def bucket_records(bucket_documents, dupe_index, options, vocab, stats):
    """`create_bucket_instances`, serialized: the same records, several times faster.

    No feature dict, `SegmentPair` copy or per-instance counter: masks are drawn on
    the sequence's known candidate positions and each record is encoded by
    `RecordEncoder`. The random draws, and so the records, are exactly those of
    `create_bucket_instances` followed by `serialize_example`.

    Args:
        bucket_documents: as for `create_bucket_instances`.
        dupe_index: which dupe copy this is.
        options: an `InstanceOptions`.
        vocab: a `VocabInfo`.
        stats: a `collections.Counter`; this bucket's statistics (the sum of
            `create_bucket_instances`'s per-instance counters) are added to it.

    Yields:
        `(sort_key, record bytes)`.
    """
    seed = options.random_seed
    encoder = RecordEncoder(options.max_seq_length, options.max_predictions_per_seq)
    special_ids = vocab.special_ids
    whole_word_mask = options.whole_word_mask
    dynamic = options.dynamic_masking
    masked_lm_prob, max_predictions = options.masked_lm_prob, options.max_predictions_per_seq
    instances = tokens = random_next = truncated = front = back = fallback = 0
    masked = [0, 0, 0]  # [MASK], random, kept
    for doc_id, instance_index, pair, rng in _bucket_pairs(bucket_documents, dupe_index, options, vocab):
        token_ids = pair.token_ids
        n = len(token_ids)
        instances += 1
        tokens += n
        random_next += pair.is_random_next
        truncated += pair.truncated_front + pair.truncated_back > 0
        front += pair.truncated_front
        back += pair.truncated_back
        fallback += pair.random_document_fallback
        if dynamic:
            record = encoder.unmasked(pair)
        else:
            if whole_word_mask:
                candidates = masking.word_candidates(token_ids, special_ids, vocab.continuation_ids, True)
            else:
                # [CLS] A [SEP] B [SEP]: all but 0, len(A) + 1 and n - 1, unless the
                # segments themselves hold a special id (then the general rule).
                len_a = pair.segment_ids.index(1) - 2
                body = token_ids[1:-1]
                if special_ids.isdisjoint(body[:len_a]) and special_ids.isdisjoint(body[len_a + 1 :]):
                    candidates = list(range(1, len_a + 1))
                    candidates += range(len_a + 2, n - 1)
                else:
                    candidates = [i for i, t in enumerate(token_ids) if t not in special_ids]
            budget = masking.num_to_predict(n, masked_lm_prob, max_predictions)
            output_ids, positions, counts = masking.mask_candidates(
                token_ids, candidates, budget, vocab_size=vocab.vocab_size, mask_id=vocab.mask_id, rng=rng,
                whole_word_mask=whole_word_mask,
            )
            masked[0] += counts[0]
            masked[1] += counts[1]
            masked[2] += counts[2]
            record = encoder.masked(pair, output_ids, positions, [token_ids[i] for i in positions])
        yield stable_hash("order", seed, doc_id, dupe_index, instance_index), record
    total = {
        "instances": instances,
        "tokens": tokens,
        "padded_tokens": instances * options.max_seq_length,
        "random_next": random_next,
        "truncated_instances": truncated,
        "truncated_front_tokens": front,
        "truncated_back_tokens": back,
        "random_document_fallback": fallback,
    }
    if not dynamic:
        total.update(
            masked=sum(masked),
            masked_as_mask_token=masked[0],
            masked_as_random_token=masked[1],
            masked_kept=masked[2],
        )
    stats.update(total)
