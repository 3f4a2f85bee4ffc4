"""serving.tensors builds the same protos and arrays as tf.make_tensor_proto / tf.make_ndarray."""

import numpy as np
import pytest
import tensorflow as tf
from tensorflow.core.framework import tensor_pb2, types_pb2

from serving import tensors

ARRAYS = {
    "float32 batch": np.array([[0.1, 0.9], [0.25, -3.5e-7]], np.float32),
    "float32 one value": np.array([0.75], np.float32),
    "float32 scalar": np.float32(2.5) * np.ones((), np.float32),
    "float32 fortran order": np.asfortranarray(np.arange(12, dtype=np.float32).reshape(3, 4)),
    "float32 nan inf": np.array([np.nan, np.inf, -np.inf, -0.0], np.float32),
    "float64": np.array([[1e-300, 2.0, 3.0]], np.float64),
    "int32": np.array([[1, -2, 3]], np.int32),
    "int64 one value": np.array([7], np.int64),
    "int64 batch": np.array([2**40, -1], np.int64),
    "bytes": np.array([b"positive", b"", "caf\u00e9 \u00fc".encode("utf-8"), b"\xff\x00"], object),
    "bytes 2-d": np.array([[b"a", b"b"], [b"c", b"d"]], object),
    "bytes one value": np.array([b"label"], object),
    # Not on the direct path: handed to TensorFlow, the same result.
    "empty float32": np.zeros((0, 2), np.float32),
    "bool": np.array([True, False]),
    "float16": np.array([0.5, 1.5], np.float16),
    "str objects": np.array(["caf\u00e9", "x"], object),
    "uint8": np.array([1, 2, 255], np.uint8),
}


@pytest.mark.parametrize("name", list(ARRAYS))
def test_array_to_tensor_proto_is_make_tensor_proto(name):
    array = ARRAYS[name]
    ours = tensors.array_to_tensor_proto(array)
    assert ours.SerializeToString() == tf.make_tensor_proto(array).SerializeToString()


@pytest.mark.parametrize("name", list(ARRAYS))
def test_tensor_proto_to_array_is_make_ndarray(name):
    proto = tf.make_tensor_proto(ARRAYS[name])
    ours, theirs = tensors.tensor_proto_to_array(proto), tf.make_ndarray(proto)
    assert ours.dtype == theirs.dtype and ours.shape == theirs.shape
    np.testing.assert_array_equal(ours, theirs)
    assert ours.flags.writeable  # A copy, not a view of the proto's bytes.


def test_tensor_proto_to_array_hands_other_layouts_to_tensorflow():
    # A lone string repeated to fill the shape, and typed value fields.
    lone = tensor_pb2.TensorProto(dtype=types_pb2.DT_STRING, string_val=[b"x"])
    lone.tensor_shape.dim.add().size = 3
    np.testing.assert_array_equal(tensors.tensor_proto_to_array(lone), [b"x"] * 3)
    typed = tensor_pb2.TensorProto(dtype=types_pb2.DT_FLOAT, float_val=[1.0, 2.0])
    typed.tensor_shape.dim.add().size = 2
    np.testing.assert_array_equal(tensors.tensor_proto_to_array(typed), np.array([1, 2], np.float32))
    # Content of the wrong length fails as it does in TensorFlow.
    bad = tensor_pb2.TensorProto(dtype=types_pb2.DT_FLOAT, tensor_content=b"\x00" * 6)
    bad.tensor_shape.dim.add().size = 2
    with pytest.raises(ValueError):
        tf.make_ndarray(bad)
    with pytest.raises(ValueError):
        tensors.tensor_proto_to_array(bad)


def test_typed_value_fields_decode_as_make_ndarray():
    for dtype, field, values in ((types_pb2.DT_INT64, "int64_val", [2**40, -3]),
                                 (types_pb2.DT_INT32, "int_val", [5]),
                                 (types_pb2.DT_DOUBLE, "double_val", [0.1, 1e300])):
        proto = tensor_pb2.TensorProto(dtype=dtype)
        proto.tensor_shape.dim.add().size = len(values)
        getattr(proto, field).extend(values)
        ours, theirs = tensors.tensor_proto_to_array(proto), tf.make_ndarray(proto)
        assert ours.dtype == theirs.dtype and ours.shape == theirs.shape
        np.testing.assert_array_equal(ours, theirs)
