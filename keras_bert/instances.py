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

import array
import collections
import dataclasses
import functools
import hashlib
import itertools
import random
import struct

import numpy as np

from keras_bert import features as F
from keras_bert.features import (
    _feature_entry, _float_feature, _int64_feature, _map_key_order,
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

    An instance's layout is fixed, so everything but the payloads is built once and
    kept: the bytes in front of a packed int64 payload depend only on the feature
    and the payload's length, masks and segments only on the sequence's lengths,
    the weights only on the number of predictions. A record is then one join of
    cached prefixes and the packed ids.

    Args:
        max_seq_length: padded sequence length.
        max_predictions_per_seq: padded prediction length.
        vocab_size: ids are below it; vocabularies of up to 32768 ids take a faster
            varint path. Defaults to None (any id).
    """

    def __init__(self, max_seq_length, max_predictions_per_seq, vocab_size=None):
        self.max_seq_length = max_seq_length
        self.max_predictions_per_seq = max_predictions_per_seq
        self._keys = {
            name: name.encode("utf-8")
            for name in (
                F.INPUT_IDS, F.INPUT_MASK, F.SEGMENT_IDS, F.MASKED_LM_POSITIONS, F.MASKED_LM_IDS,
                F.MASKED_LM_WEIGHTS, F.NEXT_SENTENCE_LABELS,
            )
        }
        small = len(F._SMALL_VARINTS)
        if vocab_size is not None and vocab_size <= small and max_seq_length <= small:
            self._pack = functools.partial(_pack_small, F._SMALL_VARINTS.__getitem__)
        else:
            self._pack = _packed_varints
        # Position of each feature in deterministic order; the sequence features come first.
        self._masked_order = self._order(
            (F.INPUT_IDS, F.INPUT_MASK, F.SEGMENT_IDS, F.NEXT_SENTENCE_LABELS,
             F.MASKED_LM_POSITIONS, F.MASKED_LM_IDS, F.MASKED_LM_WEIGHTS)
        )
        self._unmasked_order = self._order((F.INPUT_IDS, F.INPUT_MASK, F.SEGMENT_IDS, F.NEXT_SENTENCE_LABELS))
        self._one = struct.pack("<f", 1.0)
        self._zero = struct.pack("<f", 0.0)
        self._zeros = [b"\x00" * i for i in range(max(max_seq_length, max_predictions_per_seq) + 1)]
        self._prefixes = {name: {} for name in (F.INPUT_IDS, F.MASKED_LM_POSITIONS, F.MASKED_LM_IDS)}

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
        """The map entry of an int64 feature: a cached prefix for the length, then `packed`."""
        cache = self._prefixes[name]
        size = len(packed)
        prefix = cache.get(size)
        if prefix is None:
            if not size:
                return _feature_entry(self._keys[name], _int64_feature(packed))
            prefix = cache[size] = _feature_entry(self._keys[name], _int64_feature(b"\x00" * size))[:-size]
        return prefix + packed

    def _sequence_entries(self, token_ids, num_segment_a, is_random_next):
        n = len(token_ids)
        pad = self.max_seq_length - n
        if pad < 0:
            raise ValueError(f"sequence of {n} tokens exceeds max_seq_length={self.max_seq_length}")
        lengths = self._length_entries.get((n, num_segment_a))
        if lengths is None:
            lengths = self._length_entries[(n, num_segment_a)] = (
                _feature_entry(self._keys[F.INPUT_MASK], _int64_feature(b"\x01" * n + b"\x00" * pad)),
                _feature_entry(
                    self._keys[F.SEGMENT_IDS],
                    _int64_feature(b"\x00" * num_segment_a + b"\x01" * (n - num_segment_a) + b"\x00" * pad),
                ),
            )
        return [
            self._int64_entry(F.INPUT_IDS, self._pack(token_ids) + self._zeros[pad]),
            lengths[0],
            lengths[1],
            self._label_entries[bool(is_random_next)],
        ]

    @staticmethod
    def _example(body):
        n = len(body)
        return b"\x0a" + (F._SMALL_VARINTS[n] if n < len(F._SMALL_VARINTS) else F._varint(n)) + body

    def masked_record(self, output_ids, num_segment_a, is_random_next, positions, label_ids):
        """`serialize_example(instance_features(...))` of a masked sequence.

        Args:
            output_ids: the masked sequence, unpadded.
            num_segment_a: how many leading positions have segment id 0 (`[CLS] A [SEP]`).
            is_random_next: the next-sentence label.
            positions: masked positions, ascending.
            label_ids: the original ids at `positions`.
        """
        entries = self._sequence_entries(output_ids, num_segment_a, is_random_next)
        k = len(positions)
        pad = self.max_predictions_per_seq - k
        if pad < 0:
            raise ValueError(f"{k} predictions exceed max_predictions_per_seq={self.max_predictions_per_seq}")
        weights = self._weight_entries.get(k)
        if weights is None:
            weights = self._weight_entries[k] = _feature_entry(
                self._keys[F.MASKED_LM_WEIGHTS], _float_feature(self._one * k + self._zero * pad)
            )
        zeros = self._zeros[pad]
        entries += [
            self._int64_entry(F.MASKED_LM_POSITIONS, self._pack(positions) + zeros),
            self._int64_entry(F.MASKED_LM_IDS, self._pack(label_ids) + zeros),
            weights,
        ]
        return self._example(b"".join([entries[i] for i in self._masked_order]))

    def unmasked_record(self, token_ids, num_segment_a, is_random_next):
        """`serialize_example(unmasked_features(...))` of a sequence."""
        entries = self._sequence_entries(token_ids, num_segment_a, is_random_next)
        return self._example(b"".join([entries[i] for i in self._unmasked_order]))

    def masked(self, pair, output_ids, positions, label_ids):
        """`masked_record` of a `SegmentPair`."""
        return self.masked_record(output_ids, pair.segment_ids.count(0), pair.is_random_next, positions, label_ids)

    def unmasked(self, pair):
        """`unmasked_record` of a `SegmentPair`."""
        return self.unmasked_record(pair.token_ids, pair.segment_ids.count(0), pair.is_random_next)


def _pack_small(lookup, values):
    """Packed varints of ids that are all below 32768 (a table lookup each)."""
    return b"".join(map(lookup, values))


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


class FlatDocument(collections.namedtuple("FlatDocument", ["ids", "starts"])):
    """A document as one sequence of token ids and where each sentence starts.

    Attributes:
        ids: the token ids of all sentences, back to back: a sequence that slices
            without copying and has `tolist()` (an int32 `memoryview` or `array`).
        starts: `starts[i]` is where sentence `i` begins in `ids`; one more entry,
            `len(ids)`, closes the last sentence.
    """

    __slots__ = ()

    @property
    def num_sentences(self):
        return len(self.starts) - 1


def flat_document(sentences):
    """A `FlatDocument` of a list of sentences (lists of ids); a `FlatDocument` as is."""
    if isinstance(sentences, FlatDocument):
        return sentences
    ids = array.array("i", itertools.chain.from_iterable(sentences))
    return FlatDocument(memoryview(ids), [0, *itertools.accumulate(len(s) for s in sentences)])


def _randbelow(getrandbits, n):
    """`random.Random.randrange(n)` (and `randint(0, n - 1)`): the same draws, inlined.

    CPython draws `k = n.bit_length()` bits until the number is below `n`
    (`Random._randbelow_with_getrandbits`, unchanged since Python 3.2);
    `tests/keras_bert/test_instances.py` checks it against `randrange` and `randint`.
    """
    if n <= 0:
        raise ValueError(f"empty range for randrange({n})")
    k = n.bit_length()
    r = getrandbits(k)
    while r >= n:
        r = getrandbits(k)
    return r


def _flat_segment_pairs(documents, position, max_num_tokens, short_seq_prob, rng):
    """`create_segment_pairs` of `documents[position]` on `FlatDocument`s, with the same draws.

    Segments are slices of the flat ids (a chunk's sentences are consecutive) and
    truncation only counts tokens, so no token is touched one at a time in Python.
    The random other document is drawn as in `_bucket_pairs`.

    Returns:
        A list of `(a_lo, a_hi, b_doc, b_lo, b_hi, is_random_next, fallback, front, back)`:
        the pair is `[CLS] A [SEP] B [SEP]` with A `documents[position].ids[a_lo:a_hi]`
        and B `documents[b_doc].ids[b_lo:b_hi]`, truncated; `front` and `back` count
        the tokens truncation removed from the fronts and the backs.
    """
    random = rng.random
    getrandbits = rng.getrandbits
    ids, starts = documents[position]
    num_sentences = len(starts) - 1
    target_seq_length = max_num_tokens
    if random() < short_seq_prob:
        target_seq_length = 2 + _randbelow(getrandbits, max_num_tokens - 1)
    pairs = []
    chunk_start = 0
    i = 0
    while i < num_sentences:
        if i == num_sentences - 1 or starts[i + 1] - starts[chunk_start] >= target_seq_length:
            chunk_sentences = i + 1 - chunk_start
            a_end = 1
            if chunk_sentences >= 2:
                a_end = 1 + _randbelow(getrandbits, chunk_sentences - 1)
            a_lo, a_hi = starts[chunk_start], starts[chunk_start + a_end]
            fallback = False
            if chunk_sentences == 1 or random() < 0.5:
                is_random_next = True
                if len(documents) < 2:
                    b_doc, fallback = position, True
                else:
                    b_doc = _randbelow(getrandbits, len(documents) - 1)
                    if b_doc >= position:
                        b_doc += 1
                b_starts = documents[b_doc].starts
                j = _randbelow(getrandbits, len(b_starts) - 1)
                b_lo = b_starts[j]
                target_b_length = target_seq_length - (a_hi - a_lo)
                j += 1
                last = len(b_starts) - 1
                while j < last and b_starts[j] - b_lo < target_b_length:
                    j += 1
                b_hi = b_starts[j]
                # The chunk's B sentences were not used: put them back.
                i -= chunk_sentences - a_end
            else:
                is_random_next = False
                b_doc, b_lo, b_hi = position, a_hi, starts[i + 1]
            # truncate_seq_pair's draws, counting instead of deleting.
            len_a, len_b = a_hi - a_lo, b_hi - b_lo
            removed = len_a + len_b
            front = 0
            while len_a + len_b > max_num_tokens:
                if len_a > len_b:
                    if random() < 0.5:
                        a_lo += 1
                        front += 1
                    else:
                        a_hi -= 1
                    len_a -= 1
                else:
                    if random() < 0.5:
                        b_lo += 1
                        front += 1
                    else:
                        b_hi -= 1
                    len_b -= 1
            assert len_a and len_b, "segments A and B must be non-empty"
            removed -= len_a + len_b
            pairs.append((a_lo, a_hi, b_doc, b_lo, b_hi, is_random_next, fallback, front, removed - front))
            chunk_start = i + 1
        i += 1
    return pairs


def bucket_records(bucket_documents, dupe_index, options, vocab, stats):
    """`create_bucket_instances`, serialized: the same records, several times faster.

    Documents are flat id sequences (`FlatDocument`), segments are slices of them,
    truncation counts tokens, masks are drawn on the sequence's known candidate
    positions and each record is encoded by `RecordEncoder` from cached pieces; no
    `SegmentPair`, feature dict or per-instance counter is made. The random draws,
    and so the records, are exactly those of `create_bucket_instances` followed by
    `serialize_example`.

    Args:
        bucket_documents: as for `create_bucket_instances`; a document's sentences
            may also be given as a `FlatDocument`.
        dupe_index: which dupe copy this is.
        options: an `InstanceOptions`.
        vocab: a `VocabInfo`.
        stats: a `collections.Counter`; this bucket's statistics (the sum of
            `create_bucket_instances`'s per-instance counters) are added to it.

    Yields:
        `(sort_key, record bytes)`.
    """
    documents = sorted(bucket_documents, key=lambda d: d[0])
    flats = [flat_document(sentences) for _, sentences in documents]
    special_ids = vocab.special_ids
    # Documents holding a special id (only possible for ids not from the tokenizer)
    # take the general candidate rule.
    specials = np.array(sorted(special_ids), np.int32)
    has_special = [bool(np.isin(np.frombuffer(ids, np.int32), specials).any()) for ids, _ in flats]
    seed = options.random_seed
    max_seq_length = options.max_seq_length
    encoder = RecordEncoder(max_seq_length, options.max_predictions_per_seq, vocab.vocab_size)
    whole_word_mask = options.whole_word_mask
    dynamic = options.dynamic_masking
    budgets = [
        masking.num_to_predict(n, options.masked_lm_prob, options.max_predictions_per_seq)
        for n in range(max_seq_length + 1)
    ]
    cls_id, sep_id, mask_id, vocab_size = vocab.cls_id, vocab.sep_id, vocab.mask_id, vocab.vocab_size
    vocab_bits = vocab_size.bit_length()
    mask_prob = masking.MASK_PROB
    instances = tokens = random_next = truncated = truncated_front = truncated_back = fallbacks = 0
    num_mask = num_random = num_kept = 0
    for position, (doc_id, _) in enumerate(documents):
        rng = document_rng(seed, doc_id, dupe_index)
        random = rng.random
        getrandbits = rng.getrandbits
        pairs = _flat_segment_pairs(flats, position, max_seq_length - 3, options.short_seq_prob, rng)
        order_prefix = repr(("order", seed, doc_id, dupe_index))[:-1] + ", "
        a_ids = flats[position].ids
        for instance_index, pair in enumerate(pairs):
            a_lo, a_hi, b_doc, b_lo, b_hi, is_random_next, fallback, front, back = pair
            len_a = a_hi - a_lo
            token_ids = [cls_id, *a_ids[a_lo:a_hi].tolist(), sep_id, *flats[b_doc].ids[b_lo:b_hi].tolist(), sep_id]
            n = len(token_ids)
            instances += 1
            tokens += n
            random_next += is_random_next
            fallbacks += fallback
            if front or back:
                truncated += 1
                truncated_front += front
                truncated_back += back
            if dynamic:
                record = encoder.unmasked_record(token_ids, len_a + 2, is_random_next)
            else:
                if whole_word_mask:
                    candidates = masking.word_candidates(token_ids, special_ids, vocab.continuation_ids, True)
                    output_ids, chosen, counts = masking.mask_candidates(
                        token_ids, candidates, budgets[n], vocab_size=vocab_size, mask_id=mask_id, rng=rng,
                        whole_word_mask=True,
                    )
                    num_mask += counts[0]
                    num_random += counts[1]
                    num_kept += counts[2]
                else:
                    # [CLS] A [SEP] B [SEP]: all but 0, len(A) + 1 and n - 1, unless the
                    # segments hold a special id (then the general rule).
                    if has_special[position] or has_special[b_doc]:
                        candidates = [i for i, t in enumerate(token_ids) if t not in special_ids]
                    else:
                        candidates = list(range(1, len_a + 1))
                        candidates += range(len_a + 2, n - 1)
                    # masking.mask_candidates without whole words, inlined: every
                    # visited candidate is taken, so it visits min(budget, candidates).
                    num_candidates = len(candidates)
                    budget = budgets[n]
                    output_ids = token_ids[:]
                    chosen = []
                    for visited in range(budget if budget < num_candidates else num_candidates):
                        pick = visited + int(random() * (num_candidates - visited))
                        index = candidates[pick]
                        candidates[pick] = candidates[visited]
                        if random() < mask_prob:
                            output_ids[index] = mask_id
                            num_mask += 1
                        elif random() < 0.5:
                            num_kept += 1
                        else:
                            r = getrandbits(vocab_bits)
                            while r >= vocab_size:
                                r = getrandbits(vocab_bits)
                            output_ids[index] = r
                            num_random += 1
                        chosen.append(index)
                    chosen.sort()
                record = encoder.masked_record(
                    output_ids, len_a + 2, is_random_next, chosen, [token_ids[i] for i in chosen]
                )
            key = hashlib.blake2b(f"{order_prefix}{instance_index})".encode("utf-8"), digest_size=8).digest()
            yield int.from_bytes(key, "big"), record
    total = {
        "instances": instances,
        "tokens": tokens,
        "padded_tokens": instances * max_seq_length,
        "random_next": random_next,
        "truncated_instances": truncated,
        "truncated_front_tokens": truncated_front,
        "truncated_back_tokens": truncated_back,
        "random_document_fallback": fallbacks,
    }
    if not dynamic:
        total.update(
            masked=num_mask + num_random + num_kept,
            masked_as_mask_token=num_mask,
            masked_as_random_token=num_random,
            masked_kept=num_kept,
        )
    stats.update(total)
