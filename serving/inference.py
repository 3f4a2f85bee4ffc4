"""The request logic behind both front ends: Predict, Classify, Regress, metadata, status.

Every public method takes and returns the tensorflow-serving-api protos; the REST
front end builds the same protos (or the same numpy inputs) from JSON. Failures
are raised as `ServingError` with the status code and message the stock
tensorflow_model_server gives (its predict_util.cc, classifier.cc, regressor.cc,
multi_inference.cc, get_model_metadata_impl.cc, server_core.cc):

* unknown model or version -> NOT_FOUND "Servable not found for request: ...";
* unknown version label -> INVALID_ARGUMENT "Unrecognized servable version label: L";
* unknown signature -> FAILED_PRECONDITION 'Serving signature key "S" not found.'
  (Predict), INVALID_ARGUMENT "No signature was found with the name: S"
  (Classify, Regress);
* missing or extra input, wrong dtype or shape, empty batch, invalid UTF-8 in a
  text input, an undecodable TensorProto, a model-side InvalidArgumentError
  -> INVALID_ARGUMENT.

The README's table lists every case with its gRPC code and REST status.

Example:
    >>> core = InferenceCore(manager)
    >>> response = core.predict(request)  # a predict_pb2.PredictRequest
"""

import logging
import time

import grpc
import numpy as np
import tensorflow as tf
from tensorflow.core.framework import types_pb2
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    inference_pb2,
    model_pb2,
    predict_pb2,
    prediction_log_pb2,
    regression_pb2,
)

from serving import tensors
from serving.batching import batch_signature
from serving.errors import ServingError, from_exception, number_of

log = logging.getLogger("serving")

DEFAULT_SIGNATURE = "serving_default"
CLASSIFY_METHOD = "tensorflow/serving/classify"
REGRESS_METHOD = "tensorflow/serving/regress"
PREDICT_METHOD = "tensorflow/serving/predict"
WARMUP_PATH = "assets.extra/tf_serving_warmup_requests"
MAX_WARMUP_RECORDS = 1000  # The stock server's limit.


def invalid(message):
    """Returns an INVALID_ARGUMENT `ServingError` (to raise)."""
    return ServingError(grpc.StatusCode.INVALID_ARGUMENT, message)


def _dtype_name(enum_value):
    """TensorFlow's `DataTypeString`: "float", "int32", "string", ..."""
    try:
        return types_pb2.DataType.Name(enum_value)[len("DT_"):].lower()
    except ValueError:
        return f"DataType({enum_value})"


def _shape_text(tensor_shape):
    if tensor_shape.unknown_rank:
        return "<unknown rank>"
    return str(tuple(None if d.size < 0 else d.size for d in tensor_shape.dim))


def tensor_proto_to_array(proto, name):
    """Decodes one request TensorProto to a numpy array (strings as bytes objects).

    Args:
        proto: a `TensorProto`.
        name: the input's name, for messages.

    Raises:
        ServingError: INVALID_ARGUMENT if the proto cannot be decoded.
    """
    try:
        tf.as_dtype(proto.dtype)  # An unknown DataType is a parsing error.
        if proto.dtype == types_pb2.DT_STRING:
            # make_ndarray would repeat a lone value to fill the shape; stock TF
            # does the same, but a value count that is neither 1 nor the size is
            # malformed.
            size = 1
            for d in proto.tensor_shape.dim:
                size *= d.size
            if len(proto.string_val) not in (size, 1) and not (size == 0 and not proto.string_val):
                raise ValueError(f"{len(proto.string_val)} string values for shape "
                                 f"{[d.size for d in proto.tensor_shape.dim]}")
        array = tensors.tensor_proto_to_array(proto)
    except Exception as exc:
        raise invalid(f"tensor parsing error: {name}") from exc
    return array


def _braced(names):
    return "{" + ",".join(sorted(names)) + "}"


def check_input_names(signature_def, names):
    """INVALID_ARGUMENT, with the stock server's messages, unless `names` are the inputs."""
    expected, given = set(signature_def.inputs), set(names)
    if len(given) != len(expected):
        raise invalid(
            f"input size does not match signature: {len(given)}!={len(expected)} "
            f"len({_braced(given)}) != len({_braced(expected)}). "
            f"Sent extra: {_braced(given - expected)}. "
            f"Missing but required: {_braced(expected - given)}.")
    if given != expected:
        raise invalid(f"input tensor alias not found in signature: {min(given - expected)}. "
                      f"Inputs expected to be in the set {_braced(expected)}.")


def check_inputs(signature_def, arrays, dtypes=None, utf8_inputs=(), where=""):
    """Validates request inputs against a SignatureDef, the way the stock server does.

    Input names and dtypes are checked with the stock server's messages
    (`VerifyRequestInputsSize`, `GetInputValues`); shape, empty-batch and UTF-8
    checks are this server's, named with `where`.

    Args:
        signature_def: the signature's `SignatureDef`.
        arrays: dict input name -> numpy array.
        dtypes: dict input name -> the request's `DataType` enum, or None when the
            arrays were already built with the signature's dtypes (REST).
            Defaults to None.
        utf8_inputs: names of string inputs that must hold valid UTF-8 text.
            Defaults to ().
        where: `model/version/signature` text for messages. Defaults to "".

    Raises:
        ServingError: INVALID_ARGUMENT naming the input and what was expected.
    """
    check_input_names(signature_def, arrays)
    for name, info in signature_def.inputs.items():
        array = arrays[name]
        if dtypes is not None and dtypes[name] != info.dtype:
            raise invalid(f"Expected input {name} to be {_dtype_name(info.dtype)} but get "
                          f"{_dtype_name(dtypes[name])}.")
        shape = info.tensor_shape
        if not shape.unknown_rank:
            dims = [d.size for d in shape.dim]
            if array.ndim != len(dims) or any(d >= 0 and d != s for d, s in zip(dims, array.shape)):
                raise invalid(f"{where}: input {name!r} expects shape {_shape_text(shape)} "
                              f"but got {tuple(array.shape)}")
            batch_dim_unknown = bool(dims) and dims[0] < 0
        else:
            batch_dim_unknown = array.ndim > 0
        if batch_dim_unknown and array.shape[0] == 0:
            raise invalid(f"{where}: input {name!r} is an empty batch (0 rows)")
        if info.dtype == tf.string.as_datatype_enum and name in utf8_inputs:
            for index, value in enumerate(array.flat):
                try:
                    value.decode("utf-8")
                except (UnicodeDecodeError, AttributeError) as exc:
                    raise invalid(f"{where}: input {name!r} element {index} is not valid UTF-8 "
                                  f"text: {exc}") from None


def _model_spec(request):
    """Returns the request's ModelSpec.

    Raises:
        ServingError: INVALID_ARGUMENT "Missing ModelSpec" when it has none, as the
            stock services (warm-up replays, which need not name a model, skip this).
    """
    if not request.HasField("model_spec"):
        raise invalid("Missing ModelSpec")
    return request.model_spec


def call_signature(function, signature_def, arrays):
    """Runs a signature on numpy inputs; returns dict name -> numpy array."""
    tensors = {name: tf.constant(arrays[name], dtype=tf.as_dtype(info.dtype))
               for name, info in signature_def.inputs.items()}
    outputs = function(**tensors)
    return {name: value.numpy() for name, value in outputs.items()}


def _examples_to_serialized(input_proto):
    kind = input_proto.WhichOneof("kind")
    if kind == "example_list":
        examples = input_proto.example_list.examples
        serialized = [e.SerializeToString() for e in examples]
    elif kind == "example_list_with_context":
        # Concatenated serialized protos parse as a merge: the example's features
        # override the context's, as the stock server does it.
        context = input_proto.example_list_with_context.context.SerializeToString()
        examples = input_proto.example_list_with_context.examples
        serialized = [context + e.SerializeToString() for e in examples]
    else:
        raise invalid("Input is empty.")
    if not serialized:
        raise invalid("Input is empty.")
    return np.array(serialized, dtype=object)


class InferenceCore:
    """Answers requests against the servables of a `ModelManager`.

    Args:
        manager: a `serving.model_manager.ModelManager`.
        batcher: a `serving.batching.BatchScheduler` for Predict, or None.
            Defaults to None.
        utf8_inputs: names of string inputs that must be valid UTF-8 text.
            Defaults to ("text", "text_b"), the project's raw-text inputs.
        warmup_iterations: times each warm-up record is replayed. Defaults to 1.
    """

    def __init__(self, manager, batcher=None, utf8_inputs=("text", "text_b"), warmup_iterations=1):
        self.manager = manager
        self.batcher = batcher
        self.utf8_inputs = tuple(utf8_inputs)
        self.warmup_iterations = warmup_iterations

    # ---- resolution ------------------------------------------------------------

    def resolve(self, model_spec):
        """Returns the `Servable` a `ModelSpec` names (NOT_FOUND if none)."""
        if not model_spec.name:
            raise invalid("ModelSpec has no name specified.")
        choice = model_spec.WhichOneof("version_choice")
        if choice == "version":
            return self.manager.resolve(model_spec.name, version=model_spec.version.value)
        if choice == "version_label":
            return self.manager.resolve(model_spec.name, label=model_spec.version_label)
        return self.manager.resolve(model_spec.name)

    @staticmethod
    def _fill_spec(spec, servable, signature_name=None):
        spec.name = servable.name
        spec.version.value = servable.version
        if signature_name is not None:
            spec.signature_name = signature_name

    # ---- predict ---------------------------------------------------------------

    def predict_arrays(self, servable, signature_name, arrays, dtypes=None, output_filter=()):
        """Validates and runs one Predict on numpy inputs (batched when enabled).

        Args:
            servable: the resolved `Servable`.
            signature_name: the signature to run.
            arrays: dict input name -> numpy array.
            dtypes: the request's dtype enums per input, or None (see
                `check_inputs`). Defaults to None.
            output_filter: output names to return; empty for all. Defaults to ().

        Returns:
            dict output name -> numpy array.
        """
        signature_def, function = servable.signature(signature_name)
        where = f"model {servable.name!r} version {servable.version} signature {signature_name!r}"
        check_inputs(signature_def, arrays, dtypes, self.utf8_inputs, where)
        seen = set()
        for alias in output_filter:
            if alias not in signature_def.outputs:
                raise invalid(f"output tensor alias not found in signature: {alias} Outputs "
                              f"expected to be in the set {_braced(signature_def.outputs)}.")
            if alias in seen:
                raise invalid(f"duplicate output tensor alias: {alias}")
            seen.add(alias)

        def run_fn(inputs):
            try:
                return call_signature(function, signature_def, inputs)
            except Exception as exc:
                raise from_exception(exc) from exc

        if self.batcher is not None and batch_signature(arrays) is not None:
            outputs = self.batcher.run(
                (servable.name, servable.version, id(servable), signature_name), run_fn, arrays,
                metric_labels={"model_name": servable.name, "signature_name": signature_name})
        else:
            outputs = run_fn(arrays)
        if output_filter:
            outputs = {n: outputs[n] for n in dict.fromkeys(output_filter)}
        return outputs

    def predict(self, request, servable=None):
        """Answers a `PredictRequest` (see the module docstring for errors)."""
        servable = servable or self.resolve(_model_spec(request))
        signature_name = request.model_spec.signature_name or DEFAULT_SIGNATURE
        # As the stock server: the signature and the input names before any decoding.
        check_input_names(servable.signature(signature_name)[0], request.inputs)
        arrays, dtypes = {}, {}
        for name, proto in request.inputs.items():
            arrays[name] = tensor_proto_to_array(proto, name)
            dtypes[name] = proto.dtype
        outputs = self.predict_arrays(servable, signature_name, arrays, dtypes,
                                      list(request.output_filter))
        response = predict_pb2.PredictResponse()
        self._fill_spec(response.model_spec, servable, signature_name)
        for name, value in outputs.items():
            response.outputs[name].CopyFrom(tensors.array_to_tensor_proto(value))
        return response

    # ---- classify / regress ----------------------------------------------------

    def _run_examples(self, servable, signature_name, method, input_proto):
        if not servable.has_signature(signature_name):
            raise invalid(f"No signature was found with the name: {signature_name}")
        signature_def, function = servable.signature(signature_name)
        kind = "classification" if method == CLASSIFY_METHOD else "regression"
        if signature_def.method_name != method:
            raise invalid(f"Expected {kind} signature method_name to be {method}. "
                          f"Was: {signature_def.method_name}")
        if len(signature_def.inputs) != 1:
            raise invalid("Expected one input Tensor.")
        serialized = _examples_to_serialized(input_proto)
        (input_name,) = signature_def.inputs
        try:
            outputs = call_signature(function, signature_def, {input_name: serialized})
        except Exception as exc:
            raise from_exception(exc) from exc
        return outputs, len(serialized)

    def classification_result(self, servable, signature_name, input_proto):
        """Runs a classify signature on an `Input`; returns a `ClassificationResult`."""
        outputs, n = self._run_examples(servable, signature_name, CLASSIFY_METHOD, input_proto)
        classes, scores = outputs.get("classes"), outputs.get("scores")
        if classes is None and scores is None:
            raise invalid(f"Classification signature {signature_name!r} has neither "
                          f"'classes' nor 'scores' output")
        num_classes = None
        for name, value in (("classes", classes), ("scores", scores)):
            if value is None:
                continue
            if value.ndim != 2 or value.shape[0] != n:
                raise invalid(f"Expected Tensor shape: [{n} num_classes] for output {name!r} "
                              f"but got {list(value.shape)}")
            if num_classes is not None and value.shape[1] != num_classes:
                raise invalid("Tensors class and score should match in shape")
            num_classes = value.shape[1]
        result = classification_pb2.ClassificationResult()
        for i in range(n):
            row = result.classifications.add()
            for j in range(num_classes):
                entry = row.classes.add()
                if classes is not None:
                    label = classes[i, j]
                    entry.label = label.decode("utf-8", "replace") if isinstance(label, bytes) else str(label)
                if scores is not None:
                    entry.score = float(scores[i, j])
        return result

    def regression_result(self, servable, signature_name, input_proto):
        """Runs a regress signature on an `Input`; returns a `RegressionResult`."""
        outputs, n = self._run_examples(servable, signature_name, REGRESS_METHOD, input_proto)
        values = outputs.get("outputs")
        if values is None:
            raise invalid(f"Regression signature {signature_name!r} has no 'outputs' output")
        if values.ndim == 2 and values.shape[1] == 1:
            values = values[:, 0]
        if values.ndim != 1 or values.shape[0] != n:
            raise invalid(f"Expected output Tensor shape to be [{n}] or [{n}, 1] "
                          f"but got {list(values.shape)}")
        result = regression_pb2.RegressionResult()
        for value in values:
            result.regressions.add().value = float(value)
        return result

    def classify(self, request, servable=None):
        """Answers a `ClassificationRequest`."""
        servable = servable or self.resolve(_model_spec(request))
        signature_name = request.model_spec.signature_name or DEFAULT_SIGNATURE
        response = classification_pb2.ClassificationResponse()
        response.result.CopyFrom(self.classification_result(servable, signature_name, request.input))
        self._fill_spec(response.model_spec, servable, signature_name)
        return response

    def regress(self, request, servable=None):
        """Answers a `RegressionRequest`."""
        servable = servable or self.resolve(_model_spec(request))
        signature_name = request.model_spec.signature_name or DEFAULT_SIGNATURE
        response = regression_pb2.RegressionResponse()
        response.result.CopyFrom(self.regression_result(servable, signature_name, request.input))
        self._fill_spec(response.model_spec, servable, signature_name)
        return response

    def multi_inference(self, request, servable=None):
        """Answers a `MultiInferenceRequest`: several classify/regress tasks, one input.

        Every task is checked before any runs, in the stock server's order.
        """
        model_spec = request.tasks[0].model_spec if request.tasks else model_pb2.ModelSpec()
        servable = servable or self.resolve(model_spec)
        seen = set()
        for task in request.tasks:
            if not task.model_spec.name:
                raise invalid("Found ModelSpec with an empty model name.")
            if task.model_spec.name != model_spec.name:
                raise invalid("All ModelSpecs in a MultiInferenceRequest must access the same "
                              "model name.")
            signature_name = task.model_spec.signature_name or DEFAULT_SIGNATURE
            if signature_name in seen:
                raise invalid(f"Duplicate evaluation of signature: {signature_name}")
            seen.add(signature_name)
            if not servable.has_signature(signature_name):
                raise invalid(f"Requested signature not found in model graph: {signature_name}")
            if task.method_name not in (CLASSIFY_METHOD, REGRESS_METHOD):
                raise ServingError(grpc.StatusCode.UNIMPLEMENTED,
                                   f"Unsupported signature method_name: {task.method_name}")
        specs = {(t.model_spec.WhichOneof("version_choice"), t.model_spec.version.value,
                  t.model_spec.version_label) for t in request.tasks}
        if len(specs) != 1:
            raise invalid("All ModelSpecs in a MultiInferenceRequest must access the same model version")
        response = inference_pb2.MultiInferenceResponse()
        for task in request.tasks:
            signature_name = task.model_spec.signature_name or DEFAULT_SIGNATURE
            result = response.results.add()
            if task.method_name == CLASSIFY_METHOD:
                result.classification_result.CopyFrom(
                    self.classification_result(servable, signature_name, request.input))
            else:
                result.regression_result.CopyFrom(
                    self.regression_result(servable, signature_name, request.input))
            self._fill_spec(result.model_spec, servable, signature_name)
        return response

    # ---- metadata / status -----------------------------------------------------

    def get_model_metadata(self, request):
        """Answers `GetModelMetadataRequest`: the `SignatureDefMap` in an Any."""
        _model_spec(request)
        if not request.metadata_field:
            raise invalid("GetModelMetadataRequest must specify at least one metadata_field")
        for field in request.metadata_field:
            if field != "signature_def":
                raise invalid(f"Metadata field {field} is not supported")
        servable = self.resolve(request.model_spec)
        response = get_model_metadata_pb2.GetModelMetadataResponse()
        self._fill_spec(response.model_spec, servable)
        signature_map = get_model_metadata_pb2.SignatureDefMap()
        for name, signature_def in servable.signature_defs.items():
            signature_map.signature_def[name].CopyFrom(signature_def)
        response.metadata["signature_def"].Pack(signature_map)
        return response

    def get_model_status(self, request):
        """Answers `GetModelStatusRequest` from the manager's version states."""
        _model_spec(request)
        spec = request.model_spec
        choice = spec.WhichOneof("version_choice")
        statuses = self.manager.status(
            spec.name,
            version=spec.version.value if choice == "version" else None,
            label=spec.version_label if choice == "version_label" else None)
        response = get_model_status_pb2.GetModelStatusResponse()
        for status in statuses:
            entry = response.model_version_status.add()
            entry.version = status.version
            entry.state = get_model_status_pb2.ModelVersionStatus.State.Value(status.state)
            entry.status.error_code = number_of(status.error_code)
            entry.status.error_message = status.error_message
        return response

    # ---- warm-up ---------------------------------------------------------------

    def warmup(self, servable):
        """Replays `assets.extra/tf_serving_warmup_requests` against a new servable.

        The file is a TFRecord of `PredictionLog`s, as the stock server reads it; a
        failing record fails the load. Requests go straight to the model (no
        batching) and ignore the model name and version they carry.

        Args:
            servable: the just-loaded `Servable`.

        Returns:
            the number of records replayed (0 when there is no file).
        """
        path = f"{servable.path.rstrip('/')}/{WARMUP_PATH}"
        if not tf.io.gfile.exists(path):
            return 0
        start = time.perf_counter()
        count = 0
        try:
            for record in tf.data.TFRecordDataset(path):
                count += 1
                if count > MAX_WARMUP_RECORDS:
                    raise invalid(f"Number of warmup records exceeds the maximum "
                                  f"({MAX_WARMUP_RECORDS}) at {path}")
                log_proto = prediction_log_pb2.PredictionLog()
                log_proto.ParseFromString(record.numpy())
                for _ in range(self.warmup_iterations):
                    self._replay(servable, log_proto, path, count)
        except ServingError as exc:
            raise ServingError(exc.code, f"Failed to run warm-up record {count} of {path}: "
                                         f"{exc.message}") from exc
        log.info("Finished reading warmup data for model at %s. Number of warmup records read: %d. "
                 "Elapsed time (microseconds): %d.", path, count, (time.perf_counter() - start) * 1e6)
        return count

    def _replay(self, servable, log_proto, path, index):
        kind = log_proto.WhichOneof("log_type")
        if kind == "predict_log":
            self._warm_predict(servable, log_proto.predict_log.request)
        elif kind == "classify_log":
            self.classify(log_proto.classify_log.request, servable=servable)
        elif kind == "regress_log":
            self.regress(log_proto.regress_log.request, servable=servable)
        elif kind == "multi_inference_log":
            self.multi_inference(log_proto.multi_inference_log.request, servable=servable)
        else:
            raise invalid(f"Unsupported log_type for warmup: {kind} (record {index} of {path})")

    def _warm_predict(self, servable, request):
        signature_name = request.model_spec.signature_name or DEFAULT_SIGNATURE
        signature_def, function = servable.signature(signature_name)
        arrays, dtypes = {}, {}
        for name, proto in request.inputs.items():
            arrays[name] = tensor_proto_to_array(proto, name)
            dtypes[name] = proto.dtype
        check_inputs(signature_def, arrays, dtypes, self.utf8_inputs, f"warm-up {signature_name!r}")
        try:
            call_signature(function, signature_def, arrays)
        except Exception as exc:
            raise from_exception(exc) from exc
