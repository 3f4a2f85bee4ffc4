"""tf.data input: records of the original format -> (x, y) batches; shuffling; dynamic masks."""

import json

import numpy as np
import pytest
import tensorflow as tf

from keras_bert import data, features

FIXTURE = "pretraining_original"


@pytest.fixture(scope="module")
def original(fixtures_dir):
    folder = fixtures_dir / FIXTURE
    info = json.loads((folder / "fixture.json").read_text())
    return str(folder / "train-*.tfrecord"), info


def _raw_records(pattern):
    """Every record parsed with plain protobuf (no tf.data), in file order."""
    out = []
    for path in data.list_files(pattern):
        for raw in tf.data.TFRecordDataset(path):
            example = tf.train.Example.FromString(raw.numpy())
            out.append({k: (list(v.int64_list.value) or list(v.float_list.value))
                        for k, v in example.features.feature.items()})
    return out


def test_original_records_parse_to_int32_x_and_y(original):
    pattern, info = original
    seq, preds = info["max_seq_length"], info["max_predictions_per_seq"]
    ds = data.pretraining_dataset(pattern, 8, seq, preds, is_training=False)
    x, y = next(iter(ds))
    assert set(x) == set(data.INPUT_FEATURES) and set(y) == set(data.LABEL_FEATURES)
    for name in data.INPUT_FEATURES:
        assert x[name].dtype == tf.int32
    assert x[features.INPUT_IDS].shape == (8, seq)
    assert x[features.MASKED_LM_POSITIONS].shape == (8, preds)
    assert y[features.MASKED_LM_IDS].dtype == tf.int32
    assert y[features.MASKED_LM_WEIGHTS].dtype == tf.float32
    assert y[features.NEXT_SENTENCE_LABELS].shape == (8, 1)
    # Evaluation reads in file order: the batch is the first 8 records, value for value.
    raw = _raw_records(pattern)[:8]
    for name in features.pretraining_feature_spec(seq, preds):
        got = (x if name in x else y)[name].numpy()
        np.testing.assert_array_equal(got, np.array([r[name] for r in raw]).reshape(got.shape))


def test_eval_pass_covers_every_record_once_with_a_partial_last_batch(original):
    pattern, info = original
    ds = data.pretraining_dataset(pattern, 8, info["max_seq_length"],
                                  info["max_predictions_per_seq"], is_training=False)
    sizes = [int(x[features.INPUT_IDS].shape[0]) for x, _ in ds]
    assert sum(sizes) == info["records"] == data.count_records(pattern)
    assert sizes[-1] == info["records"] % 8 or sizes[-1] == 8


def _ids(ds, n_batches):
    out = []
    for x, _ in ds.take(n_batches):
        out += [tuple(row) for row in x[features.INPUT_IDS].numpy()]
    return out


def test_training_shuffles_files_and_records_and_drops_remainder(original):
    pattern, info = original
    seq, preds, n = info["max_seq_length"], info["max_predictions_per_seq"], info["records"]
    in_order = _ids(data.pretraining_dataset(pattern, 1, seq, preds, is_training=False), n)
    one_pass = data.pretraining_dataset(pattern, 1, seq, preds, is_training=True, seed=3,
                                        repeat=False, shuffle_buffer=64)
    shuffled = _ids(one_pass, n + 1)
    assert sorted(shuffled) == sorted(in_order)  # every record exactly once
    assert shuffled != in_order
    # Training batches are full (drop_remainder) and the input repeats.
    ds = data.pretraining_dataset(pattern, 8, seq, preds, is_training=True, seed=3)
    assert ds.element_spec[0][features.INPUT_IDS].shape == (8, seq)
    assert len(_ids(ds, 3 * n // 8)) == 3 * n // 8 * 8


def test_file_level_interleave_mixes_shards(original):
    pattern, info = original
    seq, preds = info["max_seq_length"], info["max_predictions_per_seq"]
    files = data.list_files(pattern)
    assert len(files) == 2
    first_file = {tuple(r[features.INPUT_IDS]) for r in _raw_records(files[0])}
    # No record shuffle, so the order is the interleave's; deterministic, so it takes
    # one record from each open file in turn (the default training interleave yields
    # whichever file is ready first, which depends on thread timing).
    ds = data.pretraining_dataset(pattern, 8, seq, preds, is_training=True, seed=0,
                                  shuffle_buffer=1, deterministic=True)
    batch = _ids(ds, 1)
    from_first = sum(row in first_file for row in batch)
    assert from_first == 4


def test_missing_files_raise_with_the_pattern(tmp_path):
    with pytest.raises(data.InputFilesError, match="nothing-here"):
        data.pretraining_dataset(str(tmp_path / "nothing-here*.tfrecord"), 8, 32, 5)


def _write_unmasked(path, rows, seq):
    with tf.io.TFRecordWriter(str(path)) as writer:
        for ids in rows:
            padded = ids + [0] * (seq - len(ids))
            feats = {
                features.INPUT_IDS: padded,
                features.INPUT_MASK: [1] * len(ids) + [0] * (seq - len(ids)),
                features.SEGMENT_IDS: [0] * seq,
                features.NEXT_SENTENCE_LABELS: [0],
            }
            example = tf.train.Example(features=tf.train.Features(feature={
                k: tf.train.Feature(int64_list=tf.train.Int64List(value=v)) for k, v in feats.items()}))
            writer.write(example.SerializeToString())


def test_dynamic_masking_masks_anew_every_pass(tmp_path):
    vocab = features.SPECIAL_TOKENS + tuple(f"w{i}" for i in range(45))
    (tmp_path / "vocab.txt").write_text("\n".join(vocab) + "\n")
    seq, preds = 24, 4
    rng = np.random.default_rng(0)
    cls, sep, mask = vocab.index("[CLS]"), vocab.index("[SEP]"), vocab.index("[MASK]")
    rows = [[cls] + list(rng.integers(5, len(vocab), 20)) + [sep] for _ in range(16)]
    _write_unmasked(tmp_path / "unmasked-0.tfrecord", rows, seq)
    fn = data.dynamic_masking_fn(str(tmp_path / "vocab.txt"), preds)
    ds = data.pretraining_dataset(str(tmp_path / "unmasked-*.tfrecord"), 16, seq, preds,
                                  is_training=False, masking_fn=fn, repeat=True)
    it = iter(ds)
    (x1, y1), (x2, y2) = next(it), next(it)
    originals = np.array([r + [0] * (seq - len(r)) for r in rows])
    for x, y in ((x1, y1), (x2, y2)):
        positions = x[features.MASKED_LM_POSITIONS].numpy()
        weights = y[features.MASKED_LM_WEIGHTS].numpy()
        labels = y[features.MASKED_LM_IDS].numpy()
        # round(22 tokens * 0.15) = 3 predictions per sequence, never on [CLS]/[SEP]/pad.
        np.testing.assert_array_equal(weights.sum(axis=1), 3)
        real = positions[:, :3]
        assert np.all((real >= 1) & (real <= 20))
        np.testing.assert_array_equal(labels[:, :3], np.take_along_axis(originals, real, 1))
        masked = np.take_along_axis(x[features.INPUT_IDS].numpy(), real, 1)
        assert 0.5 < np.mean(masked == mask) <= 1.0
    # The second pass over the same records draws other positions.
    assert not np.array_equal(x1[features.MASKED_LM_POSITIONS].numpy(),
                              x2[features.MASKED_LM_POSITIONS].numpy())


def test_length_grouped_pretraining_batches_are_trimmed_and_lose_no_record(tmp_path):
    """`group_by_length`: windows of 4 batches are sorted by length and cut, each batch
    is trimmed to its longest sequence (rounded up to 8), and one pass of windows
    yields every record exactly once; `masked_lm_positions` keeps its width even
    when it equals the sequence length."""
    vocab = features.SPECIAL_TOKENS + tuple(f"w{i}" for i in range(45))
    (tmp_path / "vocab.txt").write_text("\n".join(vocab) + "\n")
    seq = preds = 32
    rng = np.random.default_rng(1)
    lengths = [int(n) for n in rng.choice([6, 10, 14, 30], size=64)]
    rows = [[2] + [5 + (i * 3 + j) % 40 for j in range(n - 2)] + [3]
            for i, n in enumerate(lengths)]
    _write_unmasked(tmp_path / "unmasked-0.tfrecord", rows, seq)
    fn = data.dynamic_masking_fn(str(tmp_path / "vocab.txt"), preds)
    ds = data.pretraining_dataset(str(tmp_path / "unmasked-*.tfrecord"), 4, seq, preds,
                                  is_training=True, masking_fn=fn, repeat=False,
                                  group_by_length=4, seed=3)
    seen, widths = [], []
    for x, y in ds:
        mask = x[features.INPUT_MASK].numpy()
        longest = int(mask.sum(axis=1).max())
        assert mask.shape == x[features.INPUT_IDS].shape == x[features.SEGMENT_IDS].shape
        assert mask.shape[1] == min(seq, -(-longest // 8) * 8)
        assert x[features.MASKED_LM_POSITIONS].shape == (4, preds)
        assert int(x[features.MASKED_LM_POSITIONS].numpy().max()) < longest
        seen += mask.sum(axis=1).tolist()
        widths.append(mask.shape[1])
    assert sorted(seen) == sorted(lengths)  # every record once, none cut short
    # Sorted windows leave far less padding than batches of mixed lengths would.
    assert np.mean(widths) < 0.75 * seq
    # Without grouping every batch keeps the records' width.
    ds = data.pretraining_dataset(str(tmp_path / "unmasked-*.tfrecord"), 4, seq, preds,
                                  is_training=True, masking_fn=fn, repeat=False, seed=3)
    assert {int(x[features.INPUT_IDS].shape[1]) for x, _ in ds} == {seq}


def test_length_grouped_batches_sort_windows_and_shuffle_batches():
    """Each window is sorted by length (stably) and cut into batches; the batches of
    a window come out in a seeded, shuffled order; a last short window is cut too."""
    lengths = [5, 1, 4, 2, 8, 7, 3, 6, 9, 10]
    x = {features.INPUT_MASK: [[1] * n + [0] * (10 - n) for n in lengths],
         features.INPUT_IDS: [[i] * 10 for i in range(10)]}
    windows = tf.data.Dataset.from_tensor_slices(x).batch(8)  # 8 + a last window of 2
    batches = list(data.length_grouped_batches(windows, 2, 4, seed=0))
    ids = [sorted(b[features.INPUT_IDS].numpy()[:, 0].tolist()) for b in batches]
    window_one = [[1, 3], [2, 6], [0, 7], [4, 5]]  # lengths (1, 2), (3, 4), (5, 6), (7, 8)
    assert sorted(ids) == sorted(window_one + [[8, 9]])
    orders = {tuple(map(tuple, [sorted(b[features.INPUT_IDS].numpy()[:, 0].tolist())
                                for b in data.length_grouped_batches(windows, 2, 4, seed=s)]))
              for s in range(6)}
    assert len(orders) > 1  # the batch order depends on the seed


def test_pretraining_dataset_runs_without_the_tf_data_autotuner(original):
    """Destroying an autotuned iterator waits on the autotuner's sleeping thread: a
    two-phase pre-training run, which drops its first phase's iterator mid-process,
    stalled 12-56 s at the next garbage collection. Neither dataset may turn it on."""
    pattern, info = original
    seq, preds = info["max_seq_length"], info["max_predictions_per_seq"]
    for is_training in (True, False):
        ds = data.pretraining_dataset(pattern, 4, seq, preds, is_training=is_training)
        assert ds.options().autotune.enabled is False
