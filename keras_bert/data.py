"""tf.data input of pre-training: sharded TFRecords -> batches of (x, y) dicts.

Records are those of the original `create_pretraining_data.py` (feature names, shapes
and dtypes of `features.pretraining_feature_spec`), or, for dynamic masking, unmasked
records (`features.unmasked_feature_spec`) masked anew every epoch by
`keras_bert.masking`.

The training pipeline is the original `run_pretraining.py` input_fn, written with
current tf.data:

    files -> shuffle (file order) -> repeat -> interleave(TFRecordDataset)
          -> shuffle(records) -> [parse + mask per record] -> batch(drop_remainder)
          -> parse -> cast int64 to int32 -> split into (x, y) -> prefetch

`x` holds the model inputs (`input_ids`, `segment_ids`, `input_mask`,
`masked_lm_positions`), `y` the labels (`masked_lm_ids`, `masked_lm_weights`,
`next_sentence_labels`), as `heads.BertPretrainingModel.fit` expects.

Example:
    >>> ds = pretraining_dataset("data/pretraining-*.tfrecord", batch_size=32,
    ...                          max_seq_length=128, max_predictions_per_seq=20, seed=1)
    >>> model.fit(ds, steps_per_epoch=1000)
"""

import tensorflow as tf

from keras_bert import features as F
from keras_bert import masking
from keras_bert.tokenizer import load_vocab

INPUT_FEATURES = (F.INPUT_IDS, F.SEGMENT_IDS, F.INPUT_MASK, F.MASKED_LM_POSITIONS)
LABEL_FEATURES = (F.MASKED_LM_IDS, F.MASKED_LM_WEIGHTS, F.NEXT_SENTENCE_LABELS)


class InputFilesError(ValueError):
    """A file pattern matched nothing, or a record does not fit the feature spec."""


def list_files(file_patterns):
    """Sorted, de-duplicated files matching one or more glob patterns.

    Args:
        file_patterns: a glob, a comma-separated string of globs, or a list of globs.

    Raises:
        InputFilesError: if a pattern matches no file.
    """
    if isinstance(file_patterns, str):
        file_patterns = [p for p in file_patterns.split(",") if p.strip()]
    files = []
    for pattern in file_patterns:
        matched = tf.io.gfile.glob(pattern.strip())
        if not matched:
            raise InputFilesError(f"no input file matches {pattern!r}")
        files.extend(matched)
    return sorted(set(files))


def split_features(example):
    """A parsed feature dict -> (x, y): model inputs as int32, labels as the loss wants.

    Args:
        example: dict of (batched or not) features as parsed with
            `pretraining_feature_spec`; int64 values are cast to int32.
    """
    cast = {k: (tf.cast(v, tf.int32) if v.dtype == tf.int64 else v) for k, v in example.items()}
    x = {k: cast[k] for k in INPUT_FEATURES}
    y = {k: cast[k] for k in LABEL_FEATURES}
    return x, y


def dynamic_masking_fn(vocab_path, max_predictions_per_seq, masked_lm_prob=0.15,
                       whole_word_mask=False):
    """`masking.make_dynamic_masking_fn` configured from a vocabulary file.

    `[MASK]` gives the mask id; `[PAD]`, `[CLS]` and `[SEP]` are never masked;
    `##` pieces are continuations for whole-word masking.

    Args:
        vocab_path: `vocab.txt`.
        max_predictions_per_seq: masked positions per sequence.
        masked_lm_prob: share of tokens to mask. Defaults to 0.15.
        whole_word_mask: mask whole words. Defaults to False.
    """
    tokens = load_vocab(vocab_path)  # (checks the special tokens)
    index = {t: i for i, t in enumerate(tokens)}
    return masking.make_dynamic_masking_fn(
        vocab_size=len(tokens), max_predictions_per_seq=max_predictions_per_seq,
        mask_id=index[F.MASK_TOKEN],
        special_ids=[index[F.PAD_TOKEN], index[F.CLS_TOKEN], index[F.SEP_TOKEN]],
        masked_lm_prob=masked_lm_prob, whole_word_mask=whole_word_mask,
        continuation_ids=masking.continuation_ids_from_vocab(tokens))


def pretraining_dataset(file_patterns, batch_size, max_seq_length, max_predictions_per_seq,
                        *, is_training=True, seed=0, masking_fn=None, cycle_length=8,
                        shuffle_buffer=1000, drop_remainder=None, repeat=None,
                        auto_shard_policy=tf.data.experimental.AutoShardPolicy.AUTO,
                        deterministic=None, group_by_length=0):
    """Batched (x, y) pre-training input from TFRecord shards.

    Args:
        file_patterns: glob(s) of TFRecord files (see `list_files`).
        batch_size: global batch size (under a strategy Keras splits it per replica).
        max_seq_length: tokens per sequence in the records.
        max_predictions_per_seq: masked positions per record (also the output length
            with dynamic masking).
        is_training: shuffle files and records and repeat forever. Defaults to True.
        seed: seed of the file order, the record shuffle and dynamic masks; a resumed
            run passes a different one so it does not replay the same order.
            Defaults to 0.
        masking_fn: from `dynamic_masking_fn` / `masking.make_dynamic_masking_fn`:
            records are unmasked (`unmasked_feature_spec`) and masked here, anew on
            every pass. None reads statically masked records. Defaults to None.
        cycle_length: files read in parallel. Defaults to 8.
        shuffle_buffer: record shuffle buffer (training only). Defaults to 1000.
        drop_remainder: drop a last partial batch (static shapes for XLA/TPU).
            Defaults to `is_training`.
        repeat: repeat forever. Defaults to `is_training`.
        auto_shard_policy: how `tf.distribute` shards the input across workers
            (AUTO: by file when there are enough files, else by record). Defaults to
            AUTO.
        deterministic: produce records in the same order on every run with the same
            seed (the interleave then takes one record from each open file in turn).
            Training defaults to False: the interleave yields whichever file has a
            record ready, which is faster and order-dependent on thread timing.
            Defaults to `not is_training`.
        group_by_length: when training, sort windows of this many batches by
            length, cut them into batches (`length_grouped_batches`) and trim each
            batch's padding (`trim_padding`): a batch of short sequences costs less
            than a full-length one. 0 or 1: every batch keeps `max_seq_length`.
            Defaults to 0.

    Returns:
        A `tf.data.Dataset` of `(x, y)` dicts with a batch dimension.
    """
    files = list_files(file_patterns)
    drop_remainder = is_training if drop_remainder is None else drop_remainder
    repeat = is_training if repeat is None else repeat
    deterministic = (not is_training) if deterministic is None else bool(deterministic)
    if masking_fn is None:
        spec = F.pretraining_feature_spec(max_seq_length, max_predictions_per_seq)
    else:
        spec = F.unmasked_feature_spec(max_seq_length)

    ds = tf.data.Dataset.from_tensor_slices(files)
    if is_training:
        ds = ds.shuffle(len(files), seed=seed, reshuffle_each_iteration=True)
    if repeat:
        ds = ds.repeat()
    if is_training:
        ds = ds.interleave(tf.data.TFRecordDataset, cycle_length=min(cycle_length, len(files)),
                           num_parallel_calls=tf.data.AUTOTUNE, deterministic=deterministic)
        ds = ds.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    else:
        # Evaluation reads the files in order, one after the other.
        ds = ds.flat_map(tf.data.TFRecordDataset)

    grouped = is_training and group_by_length > 1
    window = batch_size * group_by_length if grouped else batch_size
    if masking_fn is None:
        # Parsing a batch at once is several times faster than record by record.
        ds = ds.batch(window, drop_remainder=drop_remainder)
        ds = ds.map(lambda s: tf.io.parse_example(s, spec), num_parallel_calls=tf.data.AUTOTUNE)
    else:
        ds = ds.map(lambda s: tf.io.parse_single_example(s, spec),
                    num_parallel_calls=tf.data.AUTOTUNE)
        ds = masking.apply_dynamic_masking(ds, masking_fn, seed=seed)
        ds = ds.batch(window, drop_remainder=drop_remainder)
    ds = ds.map(split_features, num_parallel_calls=tf.data.AUTOTUNE)
    if grouped:
        ds = length_grouped_batches(ds, batch_size, group_by_length, seed=seed,
                                    drop_remainder=drop_remainder)
        # The targets (masked_lm_ids, weights, nsp labels) keep their shapes.
        ds = ds.map(lambda x, y: (trim_padding(x), y), num_parallel_calls=tf.data.AUTOTUNE)

    options = _input_options(deterministic)
    options.experimental_distribute.auto_shard_policy = auto_shard_policy
    ds = ds.with_options(options)
    return ds.prefetch(tf.data.AUTOTUNE)


def _input_options(deterministic):
    """`tf.data.Options` of both input pipelines: the given order, and no autotuner.

    Destroying an autotuned iterator waits for the autotuner's thread, which sleeps
    between its rounds. `model.fit` makes a new iterator every epoch, and tearing
    down the autotuned one stalled about half of the fine-tuning epoch starts by ~3 s
    on a 2-core machine (an epoch of 8 steps took 10.2 s instead of 7.0 s); a
    two-phase pre-training run drops its first phase's iterator mid-process, and the
    garbage collection that reached it blocked the main thread, idle, for 12-56 s.
    Parsing is cheap enough that the fixed parallelism (one call per core) and
    prefetch buffer read as fast.
    """
    options = tf.data.Options()
    options.deterministic = deterministic
    options.autotune.enabled = False
    return options


def count_records(file_patterns):
    """Number of records in the files (reads them once)."""
    files = list_files(file_patterns)
    return int(tf.data.TFRecordDataset(files).reduce(tf.constant(0, tf.int64),
                                                       lambda n, _: n + 1).numpy())


def split_task_features(task):
    """A function: parsed task records → (x, y) as `components.finetune`'s heads take them.

    `x` holds `input_ids`, `segment_ids`, `input_mask` (int32); `y` the target under the
    head's output name: `logits` (class ids (batch,), regression values (batch, 1)
    float32, or tag ids (batch, seq_len)), or `start_logits` / `end_logits` ((batch,)
    token positions) for SQuAD.

    Args:
        task: one of `keras_bert.tasks.TASKS`.
    """

    def split(example):
        x = {name: tf.cast(example[name], tf.int32) for name in (F.INPUT_IDS, F.SEGMENT_IDS,
                                                                 F.INPUT_MASK)}
        if task in ("squad1", "squad2"):
            y = {"start_logits": tf.cast(example[F.START_POSITIONS][:, 0], tf.int32),
                 "end_logits": tf.cast(example[F.END_POSITIONS][:, 0], tf.int32)}
        elif task == "regression":
            y = {"logits": example[F.LABEL_IDS]}  # (batch, 1) float32
        elif task == "ner":
            y = {"logits": tf.cast(example[F.LABEL_IDS], tf.int32)}  # (batch, seq_len)
        else:
            y = {"logits": tf.cast(example[F.LABEL_IDS][:, 0], tf.int32)}  # (batch,)
        return x, y

    return split


# Trimmed batches keep a multiple of this many positions, so that a run sees at most
# max_seq_length / 8 distinct shapes (each one costs oneDNN a new kernel plan).
TRIM_MULTIPLE = 8
# Inputs with one value per position: those of x that `trim_padding` cuts.
_SEQUENCE_FEATURES = frozenset({F.INPUT_IDS, F.SEGMENT_IDS, F.INPUT_MASK})
# Tasks whose model outputs have no sequence axis: their predictions can be trimmed
# batch by batch and still concatenate (token and span outputs could not).
_PER_SEQUENCE_TASKS = ("classification", "pair", "regression")


def trim_padding(x, y=None, multiple=TRIM_MULTIPLE):
    """Drops the padding columns that no sequence of the batch uses.

    Every `(batch, seq_len)` tensor of `x` (and of `y`: token labels) is cut to the
    batch's longest real sequence (from `input_mask`), rounded up to `multiple`.
    The model's outputs at real positions are unchanged (padding keys get no
    attention weight and position embeddings count from 0 either way), while the
    work of every layer shrinks with the batch's length.

    Args:
        x: encoder inputs (`input_ids`, `segment_ids`, `input_mask`), (batch, seq_len);
            other inputs (`masked_lm_positions`) are kept whole.
        y: targets; those shaped like `input_mask` (NER tags, whose padding carries
            the ignored label) are trimmed too. Defaults to None.
        multiple: round the kept length up to this. Defaults to `TRIM_MULTIPLE`.
    """
    mask = x[F.INPUT_MASK]
    full = tf.shape(mask)[1]
    longest = tf.reduce_max(tf.reduce_sum(tf.cast(mask, tf.int32), axis=1))
    keep = tf.minimum(full, (longest + multiple - 1) // multiple * multiple)
    keep = tf.maximum(keep, tf.minimum(full, 1))

    def cut(tensors, names=None):
        return {name: t[:, :keep] if (names is None or name in names) and t.shape.rank == 2
                and t.shape[1] == mask.shape[1] else t
                for name, t in tensors.items()}

    # Inputs by name: `masked_lm_positions` may have as many columns as the sequence.
    x = cut(x, _SEQUENCE_FEATURES)
    return (x, cut(y)) if y is not None else x


def length_grouped_batches(windows, batch_size, window_batches, seed=0, drop_remainder=False):
    """Batches of similar lengths, cut from windows of several batches.

    Each window (a batch of `batch_size * K` records, parsed) is sorted by length
    (`input_mask`'s sum; a stable sort, so equal lengths keep their shuffled order)
    and cut into batches of `batch_size`; the batches are then shuffled within a
    buffer of `K`, so a batch of long sequences can come at any step. With
    `trim_padding` after it, a batch then holds little padding: the "group by
    length" sampler of other trainers, at the cost of batches whose lengths are
    alike instead of mixed. Which records go together still changes every epoch
    with the record shuffle before the windows.

    Args:
        windows: dataset of `(x, y)` (or `x`) dicts of `(window, ...)` tensors.
        batch_size: records per output batch.
        window_batches: K, batches per window (a last shorter window is cut the
            same way); also the batch shuffle's buffer.
        seed: seed of the batch shuffle. Defaults to 0.
        drop_remainder: drop a window's last partial batch. Defaults to False.

    Returns:
        A `tf.data.Dataset` of batches, one window's worth per window.
    """
    def split(*elem):
        x = elem[0]
        lengths = tf.reduce_sum(tf.cast(x[F.INPUT_MASK], tf.int32), axis=1)
        order = tf.argsort(lengths, stable=True)
        elem = tf.nest.map_structure(lambda t: tf.gather(t, order), elem)
        batches = tf.data.Dataset.from_tensor_slices(elem if len(elem) > 1 else elem[0])
        return batches.batch(batch_size, drop_remainder=drop_remainder)

    return windows.flat_map(split).shuffle(max(1, window_batches), seed=seed,
                                           reshuffle_each_iteration=True)


def task_dataset(files, task, max_seq_length, batch_size, *, is_training=False, seed=0,
                 shuffle_buffer=100_000, num_records=None, labels=True, trim=None,
                 group_by_length=0):
    """Batched fine-tuning input streamed from TaskData's records.

        TFRecordDataset -> [shuffle] -> batch -> parse_example -> (x, y) -> [trim] -> prefetch

    Records hold `max_seq_length` positions, mostly padding for short texts; a
    trimmed batch keeps only as many as its longest sequence needs (`trim_padding`),
    so short-text tasks train faster with the same results.

    Records are read in file order and never all held in memory: training shuffles
    within a window of `shuffle_buffer` records (the whole file when it has fewer, so
    the order is then that of a full shuffle with the same seed).

    Args:
        files: TFRecord file(s) of one split (a path, a glob, or a list of them).
        task: one of `keras_bert.tasks.TASKS` (`features.task_feature_spec`).
        max_seq_length: tokens per record.
        batch_size: global batch size (under a strategy Keras splits it per replica).
        is_training: shuffle, reshuffling every epoch. Defaults to False.
        seed: shuffle seed. Defaults to 0.
        shuffle_buffer: records in the shuffle window. Defaults to 100000.
        num_records: records in the files (from TaskData's statistics); sets the
            dataset's cardinality so Keras knows the epoch length, and a file that
            holds a different number fails instead of training on something else.
            Defaults to None (unknown).
        labels: yield (x, y); False yields x only (prediction). Defaults to True.
        trim: cut each batch's padding (`trim_padding`). Defaults to None: for
            training, and for prediction when the task's outputs are one per sequence
            (classification, pair, regression; token and span outputs of different
            batches must keep one length to be concatenated).
        group_by_length: when training, sort windows of this many batches by
            length and cut them into batches (`length_grouped_batches`), so trimmed
            batches hold little padding; 0 or 1: batches of mixed lengths.
            Defaults to 0.

    Returns:
        A `tf.data.Dataset`.

    Example:
        >>> ds = task_dataset("out/train.tfrecord", "ner", 128, 32, is_training=True,
        ...                   seed=1, num_records=records.num_records("train"))
        >>> model.fit(ds, epochs=3)
    """
    files = list_files(files)
    spec = F.task_feature_spec(task, max_seq_length)
    ds = tf.data.TFRecordDataset(files)
    if num_records is not None:
        ds = ds.apply(tf.data.experimental.assert_cardinality(int(num_records)))
    if is_training:
        buffer = min(shuffle_buffer, num_records) if num_records else shuffle_buffer
        ds = ds.shuffle(max(1, buffer), seed=seed, reshuffle_each_iteration=True)
    split = split_task_features(task)
    if trim is None:
        trim = is_training or task in _PER_SEQUENCE_TASKS
    grouped = is_training and group_by_length > 1
    ds = ds.batch(batch_size * group_by_length if grouped else batch_size)

    def parse(serialized):
        x, y = split(tf.io.parse_example(serialized, spec))
        # A window is trimmed batch by batch, once it is cut.
        return trim_padding(x, y) if trim and not grouped else (x, y)

    ds = ds.map(parse, num_parallel_calls=tf.data.AUTOTUNE)
    if grouped:
        ds = length_grouped_batches(ds, batch_size, group_by_length, seed=seed)
        if trim:
            ds = ds.map(trim_padding, num_parallel_calls=tf.data.AUTOTUNE)
        if num_records is not None:  # as many batches as without windows
            ds = ds.apply(tf.data.experimental.assert_cardinality(
                -(-int(num_records) // batch_size)))
    if not labels:
        ds = ds.map(lambda x, y: x)
    ds = ds.with_options(_input_options(deterministic=True))
    return ds.prefetch(tf.data.AUTOTUNE)
