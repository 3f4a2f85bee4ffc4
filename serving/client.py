"""Clients of the model server (or the stock tensorflow_model_server): gRPC and REST.

Library functions wrap the tensorflow-serving-api stubs; the CLI prints JSON.

Example:
    >>> predict_text("localhost:8500", "bert", ["a fine film"])
    {'probabilities': array([[0.1, 0.9]], dtype=float32), 'label': array([b'positive'], ...)}
    >>> rest_predict("http://localhost:8501", "bert", ["a fine film"])
    [{'probabilities': [0.1, 0.9], 'label': 'positive'}]

CLI:
    python -m serving.client --server localhost:8500 --model bert "a fine film" "dull"
    python -m serving.client --server localhost:8501 --rest --model bert "a fine film"
    python -m serving.client --server localhost:8500 --model bert --status
"""

import argparse
import base64
import contextlib
import json
import sys
import urllib.error
import urllib.request

import grpc
import numpy as np
import tensorflow as tf
from google.protobuf import json_format
from tensorflow.core.framework import tensor_pb2, types_pb2
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
    regression_pb2,
)

from serving import tensors

DEFAULT_TIMEOUT_S = 30.0


@contextlib.contextmanager
def _channel(server):
    """Yields a channel: `server` itself if it is one, else a new one closed after."""
    if isinstance(server, grpc.Channel):
        yield server
        return
    channel = grpc.insecure_channel(server)
    try:
        yield channel
    finally:
        channel.close()


def _spec(spec, model, signature=None, version=None, label=None):
    spec.name = model
    if signature:
        spec.signature_name = signature
    if version is not None:
        spec.version.value = int(version)
    elif label:
        spec.version_label = label


def text_tensor_proto(texts, name="text"):
    """Returns the DT_STRING `TensorProto` of a list of texts, as `tf.make_tensor_proto` does.

    Built directly: a Predict call's texts skip the tf.constant -> numpy -> proto
    round trip, whose Python work would otherwise be part of every request's latency.

    Args:
        texts: list of str (encoded as UTF-8) or bytes.
        name: the input's name, for the error message. Defaults to "text".

    Raises:
        TypeError: an element is neither str nor bytes.
    """
    proto = tensor_pb2.TensorProto(dtype=types_pb2.DT_STRING)
    proto.tensor_shape.dim.add().size = len(texts)
    encoded = []
    for index, text in enumerate(texts):
        if isinstance(text, str):
            text = text.encode("utf-8")
        elif not isinstance(text, bytes):
            raise TypeError(f"input {name!r} element {index}: expected str or bytes, "
                            f"got {type(text).__name__}")
        encoded.append(text)
    proto.string_val.extend(encoded)
    return proto


def predict(server, model, inputs, signature="serving_default", version=None, label=None,
            output_filter=(), timeout=DEFAULT_TIMEOUT_S):
    """Calls Predict with arbitrary inputs.

    Args:
        server: `host:port` or a `grpc.Channel`.
        model: model name.
        inputs: dict input name -> array-like (lists of str become tf.string) or a
            ready `TensorProto`.
        signature: signature name. Defaults to "serving_default".
        version: integer version, or None for the latest. Defaults to None.
        label: version label (when `version` is None). Defaults to None.
        output_filter: output names to return (all if empty). Defaults to ().
        timeout: seconds. Defaults to 30.

    Returns:
        `(outputs, version)`: dict output name -> numpy array (strings as bytes), and
        the version that answered.

    Raises:
        grpc.RpcError: the server's status (e.g. NOT_FOUND, INVALID_ARGUMENT).
    """
    request = predict_pb2.PredictRequest(output_filter=list(output_filter))
    _spec(request.model_spec, model, signature, version, label)
    for name, value in inputs.items():
        request.inputs[name].CopyFrom(
            value if isinstance(value, tensor_pb2.TensorProto) else tf.make_tensor_proto(value))
    with _channel(server) as channel:
        response = prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(
            request, timeout=timeout)
    outputs = {name: tensors.tensor_proto_to_array(proto) for name, proto in response.outputs.items()}
    return outputs, response.model_spec.version.value


def predict_text(server, model, texts, texts_b=None, signature="serving_default", version=None,
                 timeout=DEFAULT_TIMEOUT_S):
    """Predicts on raw texts (inputs `text` and, for pairs, `text_b`).

    Args:
        server: `host:port` or a `grpc.Channel`.
        model: model name.
        texts: list of str.
        texts_b: list of str (second segments), or None. Defaults to None.
        signature: signature name. Defaults to "serving_default".
        version: integer version, or None for the latest. Defaults to None.
        timeout: seconds. Defaults to 30.

    Returns:
        dict output name -> numpy array.

    Example:
        >>> predict_text("localhost:8500", "bert", ["great"])["probabilities"]
    """
    inputs = {"text": text_tensor_proto(list(texts))}
    if texts_b is not None:
        inputs["text_b"] = text_tensor_proto(list(texts_b), "text_b")
    outputs, _ = predict(server, model, inputs, signature, version, timeout=timeout)
    return outputs


def make_examples(examples):
    """Converts dicts of feature values to `tf.train.Example`s.

    str/bytes -> bytes_list, int -> int64_list, float -> float_list; a list gives
    several values.
    """
    protos = []
    for features in examples:
        example = tf.train.Example()
        for key, value in features.items():
            values = value if isinstance(value, (list, tuple)) else [value]
            feature = example.features.feature[key]
            if all(isinstance(v, (str, bytes)) for v in values):
                feature.bytes_list.value.extend(v.encode() if isinstance(v, str) else v for v in values)
            elif all(isinstance(v, (int, np.integer)) for v in values):
                feature.int64_list.value.extend(int(v) for v in values)
            else:
                feature.float_list.value.extend(float(v) for v in values)
        protos.append(example)
    return protos


def classify(server, model, examples, signature="serving_default", version=None,
             timeout=DEFAULT_TIMEOUT_S):
    """Calls Classify.

    Args:
        server: `host:port` or a `grpc.Channel`.
        model: model name.
        examples: list of dicts feature name -> value(s) (see `make_examples`).
        signature: a classify signature. Defaults to "serving_default".
        version: integer version, or None for the latest. Defaults to None.
        timeout: seconds. Defaults to 30.

    Returns:
        list (per example) of lists of `(label, score)`.
    """
    request = classification_pb2.ClassificationRequest()
    _spec(request.model_spec, model, signature, version)
    request.input.example_list.examples.extend(make_examples(examples))
    with _channel(server) as channel:
        response = prediction_service_pb2_grpc.PredictionServiceStub(channel).Classify(
            request, timeout=timeout)
    return [[(c.label, c.score) for c in row.classes] for row in response.result.classifications]


def regress(server, model, examples, signature="serving_default", version=None,
            timeout=DEFAULT_TIMEOUT_S):
    """Calls Regress; returns one float per example (see `classify` for the args)."""
    request = regression_pb2.RegressionRequest()
    _spec(request.model_spec, model, signature, version)
    request.input.example_list.examples.extend(make_examples(examples))
    with _channel(server) as channel:
        response = prediction_service_pb2_grpc.PredictionServiceStub(channel).Regress(
            request, timeout=timeout)
    return [r.value for r in response.result.regressions]


def model_status(server, model, version=None, label=None, timeout=DEFAULT_TIMEOUT_S):
    """Calls ModelService.GetModelStatus.

    Returns:
        list of dicts `{"version", "state", "error_code", "error_message"}`,
        e.g. `[{"version": 2, "state": "AVAILABLE", "error_code": "OK", ...}]`.
    """
    request = get_model_status_pb2.GetModelStatusRequest()
    _spec(request.model_spec, model, version=version, label=label)
    with _channel(server) as channel:
        response = model_service_pb2_grpc.ModelServiceStub(channel).GetModelStatus(
            request, timeout=timeout)
    states = get_model_status_pb2.ModelVersionStatus.State
    return [{"version": s.version, "state": states.Name(s.state),
             "error_code": _code_name(s.status.error_code),
             "error_message": s.status.error_message}
            for s in response.model_version_status]


def _code_name(number):
    """Returns the name of a tensorflow.error.Code number (they are the gRPC numbers)."""
    return next((c.name for c in grpc.StatusCode if c.value[0] == number), "UNKNOWN")


def metadata(server, model, version=None, timeout=DEFAULT_TIMEOUT_S):
    """Calls GetModelMetadata.

    Returns:
        `(version, signatures)`: the version that answered and a dict signature
        name -> `SignatureDef` proto.
    """
    request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
    _spec(request.model_spec, model, version=version)
    with _channel(server) as channel:
        response = prediction_service_pb2_grpc.PredictionServiceStub(channel).GetModelMetadata(
            request, timeout=timeout)
    signature_map = get_model_metadata_pb2.SignatureDefMap()
    response.metadata["signature_def"].Unpack(signature_map)
    return response.model_spec.version.value, dict(signature_map.signature_def)


# ---- REST ----------------------------------------------------------------------


class RestError(Exception):
    """A REST call's HTTP error: `status` and the server's `message`."""

    def __init__(self, status, message):
        super().__init__(f"HTTP {status}: {message}")
        self.status = status
        self.message = message


def _rest_url(url, model, version=None, label=None):
    base = url if "://" in url else "http://" + url
    path = f"{base.rstrip('/')}/v1/models/{model}"
    if version is not None:
        path += f"/versions/{int(version)}"
    elif label:
        path += f"/labels/{label}"
    return path


def rest_call(url, body=None, timeout=DEFAULT_TIMEOUT_S):
    """GETs (body None) or POSTs JSON; returns the decoded reply.

    Raises:
        RestError: on an HTTP error status, with the server's `error` text.
    """
    data = None if body is None else json.dumps(body).encode("utf-8")
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as reply:
            return json.loads(reply.read())
    except urllib.error.HTTPError as exc:
        text = exc.read().decode("utf-8", "replace")
        try:
            message = json.loads(text).get("error", text)
        except (ValueError, AttributeError):
            message = text
        raise RestError(exc.code, message) from None


def rest_predict(url, model, instances, signature=None, version=None, label=None,
                 timeout=DEFAULT_TIMEOUT_S):
    """POSTs `{"instances": instances}` to `:predict`; returns the `predictions` list.

    Args:
        url: `http://host:port` (or `host:port`).
        model: model name.
        instances: row-format instances (values, or objects naming inputs;
            `{"b64": ...}` for binary strings).
        signature: signature name, or None for the default. Defaults to None.
        version: integer version, or None. Defaults to None.
        label: version label, or None. Defaults to None.
        timeout: seconds. Defaults to 30.
    """
    body = {"instances": instances}
    if signature:
        body["signature_name"] = signature
    return rest_call(_rest_url(url, model, version, label) + ":predict", body, timeout)["predictions"]


def rest_classify(url, model, examples, signature=None, version=None, timeout=DEFAULT_TIMEOUT_S):
    """POSTs `{"examples": examples}` to `:classify`; returns `result` ([[label, score]...])."""
    body = {"examples": examples}
    if signature:
        body["signature_name"] = signature
    return rest_call(_rest_url(url, model, version) + ":classify", body, timeout)["result"]


def rest_model_status(url, model, version=None, label=None, timeout=DEFAULT_TIMEOUT_S):
    """GETs the model status JSON (`{"model_version_status": [...]}`)."""
    return rest_call(_rest_url(url, model, version, label), timeout=timeout)


def rest_metadata(url, model, version=None, timeout=DEFAULT_TIMEOUT_S):
    """GETs the model metadata JSON (`{"model_spec": ..., "metadata": ...}`)."""
    return rest_call(_rest_url(url, model, version) + "/metadata", timeout=timeout)


# ---- CLI -----------------------------------------------------------------------


def to_json(value):
    """Converts numpy outputs (bytes as UTF-8 text or `{"b64"}`) to JSON-ready values."""
    if isinstance(value, dict):
        return {k: to_json(v) for k, v in value.items()}
    if isinstance(value, np.ndarray):
        return to_json(value.tolist())
    if isinstance(value, list):
        return [to_json(v) for v in value]
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            return {"b64": base64.b64encode(value).decode("ascii")}
    if isinstance(value, np.generic):
        return value.item()
    return value


def main(argv=None):
    """The CLI; see the module docstring."""
    p = argparse.ArgumentParser(prog="python -m serving.client", description=__doc__.split("\n\n")[0])
    p.add_argument("--server", default="localhost:8500", help="host:port (the REST port with --rest).")
    p.add_argument("--model", required=True, help="Model name.")
    p.add_argument("texts", nargs="*", help="Texts to predict on.")
    p.add_argument("--text_b", nargs="+", default=None, help="Second segments, one per text.")
    p.add_argument("--signature", default="serving_default", help="Signature name.")
    p.add_argument("--version", type=int, default=None, help="Model version (default: latest).")
    p.add_argument("--rest", action="store_true", help="Use the REST API instead of gRPC.")
    p.add_argument("--status", action="store_true", help="Print the model status instead.")
    p.add_argument("--metadata", action="store_true", help="Print the signatures instead.")
    p.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S, help="Seconds.")
    args = p.parse_args(argv)
    if args.text_b is not None and len(args.text_b) != len(args.texts):
        p.error(f"--text_b has {len(args.text_b)} texts but there are {len(args.texts)} texts")
    try:
        if args.status:
            result = (rest_model_status(args.server, args.model, args.version, timeout=args.timeout)
                      if args.rest else model_status(args.server, args.model, args.version, timeout=args.timeout))
        elif args.metadata:
            if args.rest:
                result = rest_metadata(args.server, args.model, args.version, timeout=args.timeout)
            else:
                version, signatures = metadata(args.server, args.model, args.version, timeout=args.timeout)
                result = {"version": version, "signature_def": {
                    k: json_format.MessageToDict(v, preserving_proto_field_name=True)
                    for k, v in signatures.items()}}
        else:
            if not args.texts:
                p.error("give texts to predict on (or --status / --metadata)")
            if args.rest:
                if args.text_b is None:
                    instances = list(args.texts)
                else:
                    instances = [{"text": a, "text_b": b} for a, b in zip(args.texts, args.text_b)]
                result = rest_predict(args.server, args.model, instances, args.signature,
                                      args.version, timeout=args.timeout)
            else:
                result = to_json(predict_text(args.server, args.model, args.texts, args.text_b,
                                              args.signature, args.version, args.timeout))
    except grpc.RpcError as exc:
        print(f"error: {exc.code().name}: {exc.details()}", file=sys.stderr)
        return 1
    except (RestError, urllib.error.URLError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
