"""Feature names and TFRecord specs, defined once for the whole project.

The names are those of google-research/bert's pre-training TFRecords
(`create_pretraining_data.py` / `run_pretraining.py`); the same strings are used as
tf.Example keys, Keras input names and serving tensor names.
"""

import struct

import tensorflow as tf

INPUT_IDS = "input_ids"
INPUT_MASK = "input_mask"
SEGMENT_IDS = "segment_ids"
MASKED_LM_POSITIONS = "masked_lm_positions"
MASKED_LM_IDS = "masked_lm_ids"
MASKED_LM_WEIGHTS = "masked_lm_weights"
NEXT_SENTENCE_LABELS = "next_sentence_labels"

LABEL_IDS = "label_ids"
START_POSITIONS = "start_positions"
END_POSITIONS = "end_positions"
# SQuAD 2.0: the question has no answer (the original `run_squad.py` feature name).
IS_IMPOSSIBLE = "is_impossible"

# Raw-text serving inputs.
TEXT = "text"
TEXT_B = "text_b"

ENCODER_INPUTS = (INPUT_IDS, SEGMENT_IDS, INPUT_MASK)

# Special tokens of every BERT vocabulary, in the order a new vocabulary lists them.
PAD_TOKEN = "[PAD]"
UNK_TOKEN = "[UNK]"
CLS_TOKEN = "[CLS]"
SEP_TOKEN = "[SEP]"
MASK_TOKEN = "[MASK]"
SPECIAL_TOKENS = (PAD_TOKEN, UNK_TOKEN, CLS_TOKEN, SEP_TOKEN, MASK_TOKEN)


def pretraining_feature_spec(max_seq_length, max_predictions_per_seq):
    """Returns the `name_to_features` spec of the original pre-training records.

    Identical to `run_pretraining.py`'s `input_fn_builder`: every feature is a
    fixed-length int64 list except `masked_lm_weights` (float32).

    Args:
        max_seq_length: tokens per sequence.
        max_predictions_per_seq: masked positions per sequence.

    Example:
        >>> spec = pretraining_feature_spec(128, 20)
        >>> tf.io.parse_single_example(serialized, spec)
    """
    return {
        INPUT_IDS: tf.io.FixedLenFeature([max_seq_length], tf.int64),
        INPUT_MASK: tf.io.FixedLenFeature([max_seq_length], tf.int64),
        SEGMENT_IDS: tf.io.FixedLenFeature([max_seq_length], tf.int64),
        MASKED_LM_POSITIONS: tf.io.FixedLenFeature([max_predictions_per_seq], tf.int64),
        MASKED_LM_IDS: tf.io.FixedLenFeature([max_predictions_per_seq], tf.int64),
        MASKED_LM_WEIGHTS: tf.io.FixedLenFeature([max_predictions_per_seq], tf.float32),
        NEXT_SENTENCE_LABELS: tf.io.FixedLenFeature([1], tf.int64),
    }


def unmasked_feature_spec(max_seq_length):
    """Spec of dynamic-masking records: sequences written without masks.

    Args:
        max_seq_length: tokens per sequence.
    """
    return {
        INPUT_IDS: tf.io.FixedLenFeature([max_seq_length], tf.int64),
        INPUT_MASK: tf.io.FixedLenFeature([max_seq_length], tf.int64),
        SEGMENT_IDS: tf.io.FixedLenFeature([max_seq_length], tf.int64),
        NEXT_SENTENCE_LABELS: tf.io.FixedLenFeature([1], tf.int64),
    }


def classification_feature_spec(max_seq_length, label_dtype=tf.int64):
    """Spec of sequence-classification (or regression, with float32) records.

    Args:
        max_seq_length: tokens per sequence.
        label_dtype: tf.int64 for classes, tf.float32 for regression. Defaults to int64.
    """
    return {
        INPUT_IDS: tf.io.FixedLenFeature([max_seq_length], tf.int64),
        INPUT_MASK: tf.io.FixedLenFeature([max_seq_length], tf.int64),
        SEGMENT_IDS: tf.io.FixedLenFeature([max_seq_length], tf.int64),
        LABEL_IDS: tf.io.FixedLenFeature([1], label_dtype),
    }


def token_classification_feature_spec(max_seq_length):
    """Spec of token-classification (NER) records; label -100 marks ignored tokens."""
    return {
        INPUT_IDS: tf.io.FixedLenFeature([max_seq_length], tf.int64),
        INPUT_MASK: tf.io.FixedLenFeature([max_seq_length], tf.int64),
        SEGMENT_IDS: tf.io.FixedLenFeature([max_seq_length], tf.int64),
        LABEL_IDS: tf.io.FixedLenFeature([max_seq_length], tf.int64),
    }


def span_feature_spec(max_seq_length):
    """Spec of extractive-QA records (start/end token positions, 0 = `[CLS]`; and
    `is_impossible`, 1 for a SQuAD 2.0 question without an answer)."""
    return {
        INPUT_IDS: tf.io.FixedLenFeature([max_seq_length], tf.int64),
        INPUT_MASK: tf.io.FixedLenFeature([max_seq_length], tf.int64),
        SEGMENT_IDS: tf.io.FixedLenFeature([max_seq_length], tf.int64),
        START_POSITIONS: tf.io.FixedLenFeature([1], tf.int64),
        END_POSITIONS: tf.io.FixedLenFeature([1], tf.int64),
        IS_IMPOSSIBLE: tf.io.FixedLenFeature([1], tf.int64, default_value=[0]),
    }


def task_feature_spec(task, max_seq_length):
    """Spec of a fine-tuning task's records, by `keras_bert.tasks.TASKS` name.

    Args:
        task: "classification", "pair", "regression", "ner", "squad1" or "squad2".
        max_seq_length: tokens per sequence.

    Example:
        >>> tf.io.parse_example(serialized, task_feature_spec("ner", 128))
    """
    if task in ("classification", "pair"):
        return classification_feature_spec(max_seq_length)
    if task == "regression":
        return classification_feature_spec(max_seq_length, tf.float32)
    if task == "ner":
        return token_classification_feature_spec(max_seq_length)
    if task in ("squad1", "squad2"):
        return span_feature_spec(max_seq_length)
    raise ValueError(f"unknown task {task!r}")


# --- tf.Example serialization, without TensorFlow -----------------------------------
#
# A `tf.train.Example` is `features (1) -> Features { feature (1): map<string, Feature> }`,
# a `Feature` holds `float_list (2)` or `int64_list (3)`, each a packed `value (1)`.
# Serialized with `deterministic=True` (map entries sorted by key) these are the
# bytes below, field by field; `tests/keras_bert/test_instances.py` checks them
# against the protobuf classes.


def _varint(value):
    """Protobuf base-128 varint of an int64 (negative ones take ten bytes)."""
    value &= 0xFFFFFFFFFFFFFFFF
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


_SMALL_VARINTS = tuple(_varint(i) for i in range(1 << 15))  # Every id of a 32k vocabulary.


def _packed_varints(values, _small=_SMALL_VARINTS):
    if values and 0 <= min(values) and max(values) < 32768:
        return b"".join([_small[v] for v in values])
    return b"".join([_varint(int(v)) for v in values])


def _length_delimited(tag, payload, _small=_SMALL_VARINTS):
    """A field of wire type 2: tag byte, varint length, payload."""
    n = len(payload)
    return tag + (_small[n] if n < 32768 else _varint(n)) + payload


def _int64_feature(packed):
    return _length_delimited(b"\x1a", _length_delimited(b"\x0a", packed) if packed else b"")


def _float_feature(packed):
    return _length_delimited(b"\x12", _length_delimited(b"\x0a", packed) if packed else b"")


def _feature_entry(key, feature):
    """One `feature` map entry of `Features`: key (1), value (2)."""
    return _length_delimited(b"\x0a", _length_delimited(b"\x0a", key) + _length_delimited(b"\x12", feature))


def _map_key_order(entry):
    # upb's deterministic map order: bytes ascending, except that of two keys where
    # one is a prefix of the other the longer comes first ("ab" before "a").
    return (*entry[0], 256)


def _example(entries, ordered=False):
    """An Example from `(key bytes, feature bytes)` pairs, written in deterministic key order."""
    if not entries:
        return b""
    if not ordered:
        entries = sorted(entries, key=_map_key_order)
    return _length_delimited(b"\x0a", b"".join([_feature_entry(k, f) for k, f in entries]))


def serialize_example(features):
    """Serializes a feature dict as a `tf.train.Example`: the project's one tf.Example writer.

    The bytes are those of `tf.train.Example.SerializeToString(deterministic=True)`
    (so the same in every process), written without TensorFlow or a message object.

    Args:
        features: name -> list of ints, or list of Python floats (a list is a float
            list when its first value is a float; `masked_lm_weights` and regression
            `label_ids` are).

    Returns:
        bytes, ready for a TFRecord file.
    """
    entries = []
    for name, values in features.items():
        if values and isinstance(values[0], float):
            feature = _float_feature(struct.pack(f"<{len(values)}f", *values))
        else:
            feature = _int64_feature(_packed_varints(values))
        entries.append((name.encode("utf-8"), feature))
    return _example(entries)


