"""numpy arrays <-> `TensorProto`s, the same protos as TensorFlow's, with less Python.

`tf.make_tensor_proto` and `tf.make_ndarray` take any input and check it at
length (dtype inference, numpy version checks, broadcasting rules); converting a
request's inputs and a response's outputs with them cost the server about a tenth
of a millisecond per tensor. The arrays a server sends and receives are few kinds:
numeric arrays and object arrays of bytes. For those, these functions build the
identical proto (byte for byte, the tests compare serialized protos) or the
identical array directly, and hand everything else to TensorFlow.

Example:
    >>> proto = array_to_tensor_proto(np.array([[0.1, 0.9]], np.float32))
    >>> tensor_proto_to_array(proto)
    array([[0.1, 0.9]], dtype=float32)
"""

import numpy as np
import tensorflow as tf
from tensorflow.core.framework import tensor_pb2, types_pb2

# numpy dtype -> (DataType enum, the repeated field that holds a lone value).
# `tf.make_tensor_proto` writes arrays of more than one value of these types as
# raw `tensor_content` bytes, and a single value in the typed field.
_NUMERIC = {
    np.dtype(np.float32): (types_pb2.DT_FLOAT, "float_val"),
    np.dtype(np.float64): (types_pb2.DT_DOUBLE, "double_val"),
    np.dtype(np.int32): (types_pb2.DT_INT32, "int_val"),
    np.dtype(np.int64): (types_pb2.DT_INT64, "int64_val"),
}
# DataType enum -> numpy dtype, for decoding.
_NUMPY_OF = {enum: dtype for dtype, (enum, _) in _NUMERIC.items()}


def _shape_proto(proto, shape):
    dims = proto.tensor_shape.dim
    for size in shape:
        dims.add().size = size


def array_to_tensor_proto(array):
    """Returns the `TensorProto` `tf.make_tensor_proto(array)` returns, built directly.

    Args:
        array: a numpy array (or anything `tf.make_tensor_proto` takes; only numpy
            arrays of float32, float64, int32, int64 and object arrays of bytes take
            the direct path).

    Returns:
        A `TensorProto`.
    """
    if not isinstance(array, np.ndarray):
        return tf.make_tensor_proto(array)
    dtype = array.dtype
    if dtype.kind == "O":
        # make_tensor_proto's object path: strings, one `string_val` per element.
        values = array.ravel().tolist()
        if not all(type(v) is bytes for v in values):  # noqa: E721 (exact type)
            return tf.make_tensor_proto(array)
        proto = tensor_pb2.TensorProto(dtype=types_pb2.DT_STRING)
        _shape_proto(proto, array.shape)
        proto.string_val.extend(values)
        return proto
    numeric = _NUMERIC.get(dtype)
    if numeric is None or array.size == 0:
        return tf.make_tensor_proto(array)
    enum, field = numeric
    proto = tensor_pb2.TensorProto(dtype=enum)
    _shape_proto(proto, array.shape)
    if array.size > 1:
        proto.tensor_content = array.tobytes()  # C order, as make_tensor_proto.
    else:
        getattr(proto, field).extend(array.ravel().tolist())
    return proto


def tensor_proto_to_array(proto):
    """Returns the array `tf.make_ndarray(proto)` returns, decoded directly.

    Takes the direct path for DT_STRING protos and float32, float64, int32 and int64
    protos that hold one value per element (in `tensor_content` or the typed
    field); everything else (other dtypes, a lone value repeated to fill the
    shape) goes to `tf.make_ndarray`.

    Args:
        proto: a `TensorProto`.

    Returns:
        A numpy array (strings as an object array of bytes).

    Raises:
        Whatever `tf.make_ndarray` raises for a malformed proto.
    """
    shape = [d.size for d in proto.tensor_shape.dim]
    size = 1
    for d in shape:
        size *= d
    if proto.dtype == types_pb2.DT_STRING:
        values = proto.string_val
        if len(values) == size and size > 0 and not proto.tensor_content:
            array = np.empty(size, dtype=object)
            array[:] = list(values)
            return array.reshape(shape)
    else:
        dtype = _NUMPY_OF.get(proto.dtype)
        if dtype is not None:
            content = proto.tensor_content
            if content:
                if len(content) == size * dtype.itemsize:
                    return np.frombuffer(content, dtype=dtype).copy().reshape(shape)
            else:
                values = getattr(proto, _NUMERIC[dtype][1])
                if len(values) == size and size > 0:
                    return np.array(values, dtype=dtype).reshape(shape)
    return tf.make_ndarray(proto)
