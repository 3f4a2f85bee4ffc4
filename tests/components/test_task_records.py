"""TaskData → Finetune through TFRecords: the records and sidecars TaskData writes are
what Finetune trains and predicts from.

- With the raw task files deleted after TaskData ran, Finetune still trains, scores
  dev and test, and writes predictions mapped back to the original text (here, and in
  `test_finetune.py`'s classification, NER and SQuAD 2.0 tests, which train from
  records only).
- The sidecar gives back exactly the windows, word positions and character offsets
  that `keras_bert.tasks` computes from the raw examples, and the records hold
  exactly their features: predictions map back as they did from in-memory features.
- The streamed input shuffles as a full in-memory shuffle with the same seed when the
  buffer holds the whole split.
"""

import json
import random

import numpy as np
import keras
import pytest
import tensorflow as tf

from components import finetune, task_files, task_records
from components import task_data as td
from keras_bert import data
from keras_bert import features as F
from keras_bert import tasks
from keras_bert.tokenizer import BertTokenizer
from tests.components.test_finetune import (  # noqa: F401  (tiny_init is a fixture)
    _jsonl, _read_jsonl, conll_text, keyword_examples, ner_sentences, squad_data, tiny_init)


def _task_data(tmp_path, init, task, files, **kw):
    """Runs TaskData on `files` ({split: path}) with the init's vocabulary, then
    deletes the raw files."""
    spec = td.TaskDataSpec(task=task, vocab_path=f"{init}/vocab.txt",
                           output_dir=str(tmp_path / "task_data"),
                           **{split: str(path) for split, path in files.items()}, **kw)
    stats = td.run(spec)
    for path in files.values():
        path.unlink()
    return spec, stats


def _finetune(tmp_path, task, folder, init, **kw):
    defaults = dict(batch_size=16, epochs=3, learning_rate=2e-3, warmup_proportion=0.3,
                    verbose=0, random_seed=1)
    defaults.update(kw)
    return finetune.run(finetune.FinetuneSpec(task=task, task_data_dir=folder, init_checkpoint=init,
                                              output_dir=str(tmp_path / "out"), **defaults))


def test_finetune_takes_labels_and_length_from_the_records(tmp_path, tiny_init):
    rng = random.Random(20)
    files = {"train": _jsonl(tmp_path / "train.jsonl", keyword_examples(24, rng)),
             "dev": _jsonl(tmp_path / "dev.jsonl", keyword_examples(8, rng))}
    # A label order TaskData was told (not the sorted default): Finetune must take it
    # from the records' labels.txt, with the raw files gone.
    spec, stats = _task_data(tmp_path, tiny_init, "classification", files, max_seq_length=16,
                             labels=("pos", "neg"))
    assert not any(path.exists() for path in files.values())
    result = _finetune(tmp_path, "classification", spec.output_dir, tiny_init,
                       max_seq_length=16, epochs=1, batch_size=8)
    assert result["labels"] == ["pos", "neg"]
    assert (tmp_path / "out" / "best" / "labels.txt").read_text() == "pos\nneg\n"
    assert result["features"] == {"train": 24, "dev": 8}
    assert result["steps"]["per_epoch"] == 3  # 24 records / 8
    assert result["task_data"] == spec.output_dir
    records = _read_jsonl(tmp_path / "out" / "predictions.jsonl")
    assert [r["guid"] for r in records] == [f"{files['dev']}:{i}" for i in range(1, 9)]
    # Records of another length, or of another task, are refused, naming the fix.
    with pytest.raises(finetune.FinetuneError, match="pass --max_seq_length 16"):
        _finetune(tmp_path / "again", "classification", spec.output_dir, tiny_init,
                  max_seq_length=24)
    with pytest.raises(finetune.FinetuneError, match="records are for task 'classification'"):
        _finetune(tmp_path / "again", "pair", spec.output_dir, tiny_init, max_seq_length=16)


def _parsed(path, task, max_seq_length):
    spec = F.task_feature_spec(task, max_seq_length)
    return [{k: v.numpy().tolist() for k, v in tf.io.parse_single_example(r, spec).items()}
            for r in tf.data.TFRecordDataset(path)]


def test_records_and_sidecar_are_the_in_memory_features(tmp_path, tiny_init):
    """What Finetune reads back equals what `keras_bert.tasks` computes from the raw
    examples (the in-memory path), for NER windows and SQuAD windows and offsets."""
    tokenizer = BertTokenizer.from_vocab(f"{tiny_init}/vocab.txt", do_lower_case=True)
    rng = random.Random(23)
    (tmp_path / "train.conll").write_text(conll_text(ner_sentences(12, rng, long_share=0.6)))
    ner = td.TaskDataSpec(task="ner", train=str(tmp_path / "train.conll"),
                          vocab_path=f"{tiny_init}/vocab.txt", output_dir=str(tmp_path / "ner"),
                          max_seq_length=16, doc_stride=5,
                          read=task_files.ReadOptions(tag_scheme="IOB1"))
    td.run(ner)
    examples, bad = task_files.read_examples(ner.train, "ner", ner.read)
    assert not bad
    label_map = {l: i for i, l in enumerate(task_files.read_labels(ner.labels_path))}
    records = task_records.TaskRecords.open(ner.output_dir)
    parsed = _parsed(records.records_path("train"), "ner", 16)
    metas = records.read_sidecar("train")
    position = 0
    assert len(metas) == len(examples)
    for example, meta in zip(examples, metas):
        expected = tasks.tagged_features(example, tokenizer, 16, label_map, 5)
        got_example, got_windows = task_records.tagged_example(meta, 16)
        assert got_example == example
        assert [(w.word_ids, w.owned) for w in got_windows] == [
            (w.word_ids, w.owned) for w in expected]
        for window in expected:
            assert parsed[position] == window.features
            position += 1
    assert position == len(parsed) > len(examples)

    (tmp_path / "squad.json").write_text(json.dumps(squad_data(10, rng, unanswerable_share=0.4)))
    squad = td.TaskDataSpec(task="squad2", train=str(tmp_path / "squad.json"),
                            vocab_path=f"{tiny_init}/vocab.txt",
                            output_dir=str(tmp_path / "squad"), max_seq_length=32, doc_stride=8,
                            max_query_length=6)
    td.run(squad)
    questions, _ = task_files.read_examples(squad.train, "squad2")
    records = task_records.TaskRecords.open(squad.output_dir)
    parsed = _parsed(records.records_path("train"), "squad2", 32)
    position = 0
    for question, meta in zip(questions, records.read_sidecar("train")):
        offsets = tasks.tokenize_with_offsets(tokenizer, question.example.context)
        expected = tasks.squad_features(question.example, tokenizer, 32, 8, 6, offsets)
        record, feats, got_offsets = task_records.squad_example(meta, 32)
        assert record == question and got_offsets == offsets
        for want, got in zip(expected, feats):
            assert (got.token_to_context, got.owned) == (want.token_to_context, want.owned)
            assert got.features[F.INPUT_MASK] == want.features[F.INPUT_MASK]
            assert parsed[position] == {**want.features,
                                        F.IS_IMPOSSIBLE: [int(question.example.is_impossible)]}
            position += 1
        # The same logits give the same n-best answers from either side.
        logits = np.random.default_rng(position).normal(size=(2, len(feats), 32))
        a = tasks.squad_nbest(question.example, expected, logits[0], logits[1], 5, 4, True, offsets)
        b = tasks.squad_nbest(record.example, feats, logits[0], logits[1], 5, 4, True, got_offsets)
        assert a == b
    assert position == len(parsed)


def test_streamed_shuffle_is_the_full_shuffle(tmp_path):
    """With the whole split in the buffer, the streamed order is that of
    `from_tensor_slices(...).shuffle(n)` with the same seed (the in-memory path)."""
    n, path = 50, str(tmp_path / "train.tfrecord")
    with tf.io.TFRecordWriter(path) as writer:
        for i in range(n):
            writer.write(F.serialize_example({F.INPUT_IDS: [i, 1, 2, 0], F.INPUT_MASK: [1, 1, 1, 0],
                                              F.SEGMENT_IDS: [0] * 4, F.LABEL_IDS: [i % 3]}))
    tf.random.set_seed(5)
    streamed = data.task_dataset(path, "classification", 4, 8, is_training=True, seed=3,
                                 num_records=n)
    first = [int(v) for x, _ in streamed for v in x[F.INPUT_IDS][:, 0]]
    tf.random.set_seed(5)
    memory = tf.data.Dataset.from_tensor_slices(np.arange(n)).shuffle(n, seed=3).batch(8)
    assert first == [int(v) for batch in memory for v in batch]
    assert sorted(first) == list(range(n))
    # A small window still yields every record once per epoch.
    small = data.task_dataset(path, "classification", 4, 8, is_training=True, seed=3,
                              shuffle_buffer=4, num_records=n)
    assert sorted(int(v) for x, _ in small for v in x[F.INPUT_IDS][:, 0]) == list(range(n))
    # A file holding other than the counted records fails instead of training on it.
    wrong = data.task_dataset(path, "classification", 4, 8, num_records=n + 1)
    with pytest.raises(tf.errors.FailedPreconditionError):
        list(wrong)


def test_spec_takes_records_or_raw_files(tmp_path):
    with pytest.raises(finetune.FinetuneError, match="not both"):
        finetune.FinetuneSpec(task="ner", task_data_dir="d", train="t", init_checkpoint="i",
                              output_dir="o")
    with pytest.raises(finetune.FinetuneError, match="need task_data_dir"):
        finetune.FinetuneSpec(task="ner", train="t", init_checkpoint="i", output_dir="o")
    spec = finetune.parse_args(["--task", "ner", "--task_data_dir", "d", "--init_checkpoint", "i",
                                "--output", "o", "--shuffle_buffer", "64"])
    assert (spec.task_data_dir, spec.train, spec.shuffle_buffer) == ("d", None, 64)
    with pytest.raises(task_records.TaskRecordsError, match="task_data_stats.json"):
        task_records.TaskRecords.open(str(tmp_path))


def test_parsers_and_finetune_need_no_beam():
    """Parsing task files and fine-tuning from records import no Beam (only the
    conversion of raw files runs the TaskData job)."""
    import pathlib
    import subprocess
    import sys

    root = pathlib.Path(__file__).resolve().parents[2]  # `python -c` puts the cwd first
    code = ("import sys, components.task_files, components.task_records, components.finetune; "
            "sys.exit(1 if 'apache_beam' in sys.modules else 0)")
    assert subprocess.run([sys.executable, "-c", code], cwd=root,
                          capture_output=True).returncode == 0


def _write_lengths(path, lengths, seq, ner=False):
    with tf.io.TFRecordWriter(path) as writer:
        for i, length in enumerate(lengths):
            ids = [2 + (i * 7 + j) % 50 for j in range(length)] + [0] * (seq - length)
            mask = [1] * length + [0] * (seq - length)
            if ner:
                label = [-100] + [j % 3 for j in range(length - 2)] + [-100] * (seq - length + 1)
            else:
                label = [i % 3]
            writer.write(F.serialize_example({F.INPUT_IDS: ids, F.INPUT_MASK: mask,
                                              F.SEGMENT_IDS: [0] * seq, F.LABEL_IDS: label}))


def test_batches_are_trimmed_to_their_longest_sequence(tmp_path):
    """Training batches (and per-sequence predictions) drop the padding columns no
    sequence of the batch uses, rounded up to 8; token tasks' predictions keep the
    full length so that batches concatenate."""
    seq, path = 32, str(tmp_path / "ner.tfrecord")
    lengths = [3, 9, 5, 4, 17, 6, 32, 2]
    _write_lengths(path, lengths, seq, ner=True)
    batches = list(data.task_dataset(path, "ner", seq, 2, num_records=8, trim=True))
    assert [int(x[F.INPUT_IDS].shape[1]) for x, _ in batches] == [16, 8, 24, 32]
    for (x, y), pair in zip(batches, np.reshape(lengths, (4, 2))):
        assert x[F.INPUT_MASK].shape == x[F.SEGMENT_IDS].shape == y["logits"].shape
        assert int(tf.reduce_sum(x[F.INPUT_MASK])) == sum(pair)  # no real token lost
    full = list(data.task_dataset(path, "ner", seq, 2, num_records=8, labels=False))
    assert {int(x[F.INPUT_IDS].shape[1]) for x in full} == {seq}
    train = list(data.task_dataset(path, "ner", seq, 4, is_training=True, num_records=8))
    assert all(int(x[F.INPUT_IDS].shape[1]) % 8 == 0 for x, _ in train)
    path = str(tmp_path / "cls.tfrecord")
    _write_lengths(path, [3, 5, 4, 2], seq)
    (x, y), = list(data.task_dataset(path, "classification", seq, 4, num_records=4))
    assert x[F.INPUT_IDS].shape == (4, 8) and y["logits"].shape == (4,)


def test_trimmed_batches_give_the_same_outputs_and_loss(tmp_path):
    from keras_bert import checkpoints
    from keras_bert.config import BertConfig

    seq, path = 32, str(tmp_path / "ner.tfrecord")
    _write_lengths(path, [3, 9, 5, 11], seq, ner=True)
    config = BertConfig(vocab_size=60, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=seq)
    (x, y), = list(data.task_dataset(path, "ner", seq, 4, num_records=4, trim=False))
    (tx, ty), = list(data.task_dataset(path, "ner", seq, 4, num_records=4, trim=True))
    assert tx[F.INPUT_IDS].shape == (4, 16)
    for heads, kwargs in (("token_classifier", {"num_classes": 3}),
                          ("classifier", {"num_classes": 3})):
        model = checkpoints.build_model(config, heads, **kwargs)
        full, trimmed = model(x)["logits"].numpy(), model(tx)["logits"].numpy()
        if heads == "token_classifier":
            real = x[F.INPUT_MASK].numpy()[:, :16].astype(bool)
            np.testing.assert_allclose(trimmed[real], full[:, :16][real], atol=1e-5)
            loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True, ignore_class=-100)
            np.testing.assert_allclose(float(loss(ty["logits"], trimmed)),
                                       float(loss(y["logits"], full)), rtol=1e-5)
        else:
            np.testing.assert_allclose(trimmed, full, atol=1e-5)


def test_length_grouped_training_batches_keep_every_record_and_the_epoch_length(tmp_path):
    """`group_by_length`: a training epoch still holds every record once, in
    ceil(records / batch) batches (Keras' epoch length), each trimmed to its own
    longest sequence, with far less padding than batches of mixed lengths; labels
    travel with their inputs."""
    seq, path = 64, str(tmp_path / "cls.tfrecord")
    rng = np.random.default_rng(0)
    lengths = [int(n) for n in rng.integers(3, 60, size=50)]
    _write_lengths(path, lengths, seq)
    grouped = data.task_dataset(path, "classification", seq, 4, is_training=True, seed=1,
                                num_records=50, group_by_length=4)
    assert int(grouped.cardinality()) == 13
    mixed = data.task_dataset(path, "classification", seq, 4, is_training=True, seed=1,
                              num_records=50)
    for _ in range(2):
        seen, widths = [], []
        for x, y in grouped:
            mask = x[F.INPUT_MASK].numpy()
            assert mask.shape[1] == -(-int(mask.sum(axis=1).max()) // 8) * 8
            # `_write_lengths`: record i has lengths[i] tokens and label i % 3.
            seen += [(int(n), int(label)) for n, label in zip(mask.sum(axis=1), y["logits"])]
            widths.append(mask.shape[1])
        assert sorted(seen) == sorted((n, i % 3) for i, n in enumerate(lengths))
        assert len(widths) == 13
        mixed_widths = [int(x[F.INPUT_IDS].shape[1]) for x, _ in mixed]
        assert np.mean(widths) < 0.8 * np.mean(mixed_widths)
