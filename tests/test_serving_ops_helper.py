"""Tests for tests/serving_ops.py, the model-server op check, on tiny SavedModels."""

import tensorflow as tf

from tests import serving_ops


class _Tiny(tf.Module):
    """Lower-cases strings, looks them up in a table, multiplies by a matrix."""

    def __init__(self):
        super().__init__()
        self.table = tf.lookup.StaticHashTable(
            tf.lookup.KeyValueTensorInitializer(
                tf.constant(["a", "b", "c"]), tf.constant([0, 1, 2], tf.int64)
            ),
            default_value=-1,
        )
        self.kernel = tf.Variable(tf.ones([3, 2]))

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
    def serve(self, text):
        ids = self.table.lookup(tf.strings.lower(text))
        onehot = tf.one_hot(ids, depth=3)
        return {"ids": ids, "out": tf.matmul(onehot, self.kernel)}


class _NewOp(tf.Module):
    """Uses SegmentMaxV2, which TensorFlow 2.21 has and 2.12 does not."""

    @tf.function(input_signature=[tf.TensorSpec([None], tf.float32)])
    def serve(self, x):
        segment_ids = tf.zeros_like(x, dtype=tf.int32)
        return tf.raw_ops.SegmentMaxV2(data=x, segment_ids=segment_ids, num_segments=1)


def _save(module, path):
    tf.saved_model.save(module, str(path), signatures={"serving_default": module.serve})
    return path


def test_allowlist_has_core_and_text_ops():
    allowlist = serving_ops.load_allowlist()
    assert len(allowlist) > 1500
    assert not any(name.startswith("#") for name in allowlist)
    for name in [
        "MatMul",
        "BatchMatMulV2",
        "StringLower",
        "StaticRegexReplace",
        "LookupTableFindV2",
        "StatefulPartitionedCall",
        "WordpieceTokenizeWithOffsets",
        "RegexSplitWithOffsets",
        "NormalizeUTF8",
        "CaseFoldUTF8",
    ]:
        assert name in allowlist, name
    # Added after 2.12: must stay out of the list.
    assert "SegmentMaxV2" not in allowlist
    assert "TFText>RoundRobinTrim" not in allowlist


def test_tiny_model_passes(tmp_path):
    export_dir = _save(_Tiny(), tmp_path / "tiny")
    ops = serving_ops.saved_model_ops(export_dir)
    assert {"StringLower", "MatMul", "LookupTableFindV2", "HashTableV2"} <= ops
    assert "StatefulPartitionedCall" in ops
    # Calls of library functions are not ops.
    assert not any(name.startswith("__inference") for name in ops), sorted(ops)
    assert serving_ops.check_ops(export_dir) == []
    # Against a reduced allowlist, the missing ops are reported, sorted.
    reduced = serving_ops.load_allowlist() - {"StringLower", "MatMul"}
    assert serving_ops.check_ops(export_dir, reduced) == ["MatMul", "StringLower"]


def test_op_newer_than_2_12_is_reported(tmp_path):
    export_dir = _save(_NewOp(), tmp_path / "new_op")
    assert "SegmentMaxV2" in serving_ops.saved_model_ops(export_dir)
    assert serving_ops.check_ops(export_dir) == ["SegmentMaxV2"]
