"""The stock server's HTTP/REST API, on the standard library's `http.server`.

Routes (as tensorflow_model_server):

* `GET  /v1/models/NAME[/versions/N | /labels/L]`            model status
* `GET  /v1/models/NAME[/versions/N | /labels/L]/metadata`   signature metadata
* `POST /v1/models/NAME[/versions/N | /labels/L]:predict`    `{"instances": [...]}` (row)
  or `{"inputs": ...}` (columnar), optional `"signature_name"`
* `POST ...:classify`, `...:regress`                          `{"examples": [{...}], "context": {...}}`
* `GET  /monitoring/prometheus/metrics` (path configurable)   Prometheus text, when enabled

Binary strings travel as `{"b64": "..."}`, both ways (outputs whose name ends in
`_bytes`, or that are not valid UTF-8, are sent so). Errors are `{"error": "..."}`
with the HTTP status the stock server maps each gRPC code to.

Example:
    $ curl -d '{"instances": ["a text"]}' localhost:8501/v1/models/bert:predict
    {"predictions": [{"label": "positive", ...}]}
"""

import base64
import http.server
import json
import logging
import re
import threading
import time

import grpc
import numpy as np
import tensorflow as tf
from google.protobuf import json_format
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    input_pb2,
    regression_pb2,
)

from serving.errors import ServingError, from_exception, http_status
from serving.inference import DEFAULT_SIGNATURE, invalid

log = logging.getLogger("serving")

_MODEL_PATH = re.compile(
    r"^/v1/models/(?P<name>[^/:]+)"
    r"(?:/versions/(?P<version>-?\d+)|/labels/(?P<label>[^/:]+))?"
    r"(?:(?P<metadata>/metadata)|:(?P<verb>predict|classify|regress))?/?$")


# ---- JSON <-> tensors --------------------------------------------------------


def _is_b64(value):
    return isinstance(value, dict) and len(value) == 1 and "b64" in value


def _decode_b64(value, where):
    text = value["b64"]
    if not isinstance(text, str):
        raise invalid(f"{where}: 'b64' value must be a string")
    try:
        return base64.b64decode(text, validate=True)
    except (ValueError, TypeError) as exc:
        raise invalid(f"{where}: 'b64' value is not valid base64: {exc}") from None


def _flatten(value, where):
    """Returns (leaves, shape) of nested JSON lists; raises on ragged nesting."""
    if isinstance(value, list):
        if not value:
            return [], (0,)
        parts = [_flatten(v, where) for v in value]
        shape = parts[0][1]
        if any(p[1] != shape for p in parts):
            raise invalid(f"{where}: nested lists are ragged; every row must have the same shape")
        return [leaf for p in parts for leaf in p[0]], (len(value),) + shape
    return [value], ()


def json_to_array(value, dtype, where):
    """Converts a JSON value (nested lists) to a numpy array of a TF dtype.

    Args:
        value: the decoded JSON value.
        dtype: the signature input's `tf.DType`.
        where: input name, for messages.

    Raises:
        ServingError: INVALID_ARGUMENT for a value of the wrong kind or shape.
    """
    leaves, shape = _flatten(value, where)
    if dtype == tf.string:
        out = []
        for leaf in leaves:
            if isinstance(leaf, str):
                out.append(leaf.encode("utf-8"))
            elif _is_b64(leaf):
                out.append(_decode_b64(leaf, where))
            else:
                raise invalid(f"{where}: expects strings (or {{\"b64\": ...}}), got {json.dumps(leaf)[:50]}")
        array = np.empty(len(out), dtype=object)
        array[:] = out
        return array.reshape(shape)
    if dtype == tf.bool:
        if not all(isinstance(leaf, bool) for leaf in leaves):
            raise invalid(f"{where}: expects true/false values")
    elif dtype.is_integer:
        if not all(isinstance(leaf, int) and not isinstance(leaf, bool) for leaf in leaves):
            bad = next(leaf for leaf in leaves if not isinstance(leaf, int) or isinstance(leaf, bool))
            raise invalid(f"{where}: expects {dtype.name} values, got {json.dumps(bad)[:50]}")
    elif dtype.is_floating:
        ok = all((isinstance(leaf, (int, float)) and not isinstance(leaf, bool)) for leaf in leaves)
        if not ok:
            raise invalid(f"{where}: expects {dtype.name} numbers")
    else:
        raise invalid(f"{where}: dtype {dtype.name} is not supported by the REST API")
    try:
        return np.array(leaves, dtype=dtype.as_numpy_dtype).reshape(shape)
    except (OverflowError, ValueError) as exc:
        raise invalid(f"{where}: value does not fit {dtype.name}: {exc}") from None


def _string_to_json(value, force_b64):
    if not force_b64:
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            pass
    return {"b64": base64.b64encode(value).decode("ascii")}


def array_to_json(name, array):
    """Converts an output array to JSON-ready lists (`{"b64"}` for binary strings)."""
    if array.dtype == object or array.dtype.kind == "S":
        force = name.endswith("_bytes")
        flat = [_string_to_json(v, force) for v in array.reshape(-1)]
        return np.array(flat + [None], dtype=object)[:-1].reshape(array.shape).tolist()
    return array.tolist()


def _examples_input(body):
    examples = body.get("examples")
    if not isinstance(examples, list) or not examples:
        raise invalid("Request body must have a non-empty 'examples' list")
    input_proto = input_pb2.Input()
    context = body.get("context")
    if context is not None:
        target = input_proto.example_list_with_context
        _fill_example(target.context, context, "context")
    else:
        target = input_proto.example_list
    for index, example in enumerate(examples):
        _fill_example(target.examples.add(), example, f"examples[{index}]")
    return input_proto


def _fill_example(example, features, where):
    if not isinstance(features, dict):
        raise invalid(f"{where}: an example must be a JSON object of features")
    for key, value in features.items():
        values = value if isinstance(value, list) else [value]
        feature = example.features.feature[key]
        if not values:
            raise invalid(f"{where}.{key}: empty list; the feature type cannot be inferred")
        if all(isinstance(v, str) or _is_b64(v) for v in values):
            feature.bytes_list.value.extend(
                v.encode("utf-8") if isinstance(v, str) else _decode_b64(v, f"{where}.{key}")
                for v in values)
        elif all(isinstance(v, int) and not isinstance(v, bool) for v in values):
            feature.int64_list.value.extend(values)
        elif all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
            feature.float_list.value.extend(float(v) for v in values)
        else:
            raise invalid(f"{where}.{key}: values must be all strings, all integers or all numbers")


# ---- the HTTP server ---------------------------------------------------------


class RestServer(http.server.ThreadingHTTPServer):
    """The REST front end; one thread per connection.

    Args:
        port: TCP port (bound on all interfaces).
        core: the `serving.inference.InferenceCore`.
        metrics: `serving.metrics.Metrics`.
        monitoring_path: path of the Prometheus endpoint, or None to disable it.
            Defaults to None.
        max_body_bytes: largest accepted request body. Defaults to 64 MiB.
        timeout_s: socket timeout while reading a request. Defaults to 30.
    """

    daemon_threads = True  # Idle keep-alive connections must not block exit.
    allow_reuse_address = True

    def __init__(self, port, core, metrics, monitoring_path=None, max_body_bytes=64 << 20,
                 timeout_s=30.0):
        self.core = core
        self.metrics = metrics
        self.monitoring_path = monitoring_path
        self.max_body_bytes = max_body_bytes
        self.request_timeout_s = timeout_s
        self._in_flight = 0
        self._idle = threading.Condition()
        super().__init__(("0.0.0.0", port), _Handler)

    def enter(self):
        with self._idle:
            self._in_flight += 1

    def leave(self):
        with self._idle:
            self._in_flight -= 1
            self._idle.notify_all()

    def drain(self, timeout_s):
        """Waits until no request is being handled (after `shutdown()`); True if drained."""
        deadline = time.monotonic() + timeout_s
        with self._idle:
            while self._in_flight:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._idle.wait(left)
        return True


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "TensorFlowServing-py"

    def setup(self):
        self.timeout = self.server.request_timeout_s
        super().setup()

    def log_message(self, format, *args):  # noqa: A002 (stdlib signature)
        log.debug("REST %s - %s", self.address_string(), format % args)

    def do_GET(self):  # noqa: N802 (stdlib name)
        self._handle("GET")

    def do_POST(self):  # noqa: N802
        self._handle("POST")

    # -- plumbing --

    def _send(self, status, body, content_type="application/json"):
        data = body.encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _send_json(self, status, obj):
        self._send(status, json.dumps(obj, indent=None) + "\n")

    def _read_body(self):
        length = self.headers.get("Content-Length")
        if length is None:
            raise invalid("Missing Content-Length header")
        try:
            length = int(length)
        except ValueError:
            raise invalid(f"Bad Content-Length header: {length!r}") from None
        if length > self.server.max_body_bytes:
            self._too_large = True
            raise ServingError(grpc.StatusCode.RESOURCE_EXHAUSTED,
                               f"Request body of {length} bytes exceeds the limit of "
                               f"{self.server.max_body_bytes} bytes")
        body = self.rfile.read(length)
        try:
            parsed = json.loads(body)
        except (UnicodeDecodeError, ValueError) as exc:
            raise invalid(f"JSON Parse error: {exc}") from None
        if not isinstance(parsed, dict):
            raise invalid("JSON Value: request body must be a JSON object")
        return parsed

    def _handle(self, method):
        server = self.server
        path = self.path.split("?", 1)[0]
        if method == "GET" and server.monitoring_path and path == server.monitoring_path:
            self._send(200, server.metrics.render(), "text/plain; version=0.0.4")
            return
        server.enter()
        self._too_large = False
        start = time.perf_counter()
        model_name, api, code = "", "other", grpc.StatusCode.OK
        try:
            match = _MODEL_PATH.match(path)
            if not path.startswith("/v1/"):
                raise ServingError(grpc.StatusCode.NOT_FOUND, f"Not found: {method} {path}")
            if match is None:
                raise invalid(f"Malformed request: {method} {path}")
            model_name = match["name"]
            version = int(match["version"]) if match["version"] is not None else None
            label = match["label"]
            verb = match["verb"]
            if (method == "POST") != (verb is not None):
                raise invalid(f"Malformed request: {method} {path}")
            if verb is None:
                api = "metadata" if match["metadata"] else "status"
                if api == "metadata":
                    result = self._metadata(model_name, version, label)
                else:
                    result = self._status(model_name, version, label)
            else:
                api = verb
                body = self._read_body()
                servable = server.core.manager.resolve(model_name, version=version, label=label)
                result = getattr(self, "_" + verb)(servable, body)
            self._send_json(200, result)
        except Exception as exc:
            error = from_exception(exc)
            code = error.code
            if code == grpc.StatusCode.INTERNAL:
                log.exception("REST %s %s failed", method, path)
            # Payload Too Large says it better than the stock mapping's 429.
            status = 413 if self._too_large else http_status(code)
            try:
                self._send_json(status, {"error": error.message})
            except OSError:
                pass  # The client went away.
            if status == 413:
                self.close_connection = True  # The unread body is still on the socket.
        finally:
            server.leave()
            if model_name:
                server.metrics.observe_request(model_name, api, "REST", code, time.perf_counter() - start)

    # -- APIs --

    def _status(self, name, version, label):
        request = get_model_status_pb2.GetModelStatusRequest()
        request.model_spec.name = name
        if version is not None:
            request.model_spec.version.value = version
        elif label:
            request.model_spec.version_label = label
        response = self.server.core.get_model_status(request)
        return json_format.MessageToDict(response, preserving_proto_field_name=True,
                                         always_print_fields_with_no_presence=True)

    def _metadata(self, name, version, label):
        request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
        request.model_spec.name = name
        if version is not None:
            request.model_spec.version.value = version
        elif label:
            request.model_spec.version_label = label
        response = self.server.core.get_model_metadata(request)
        signature_map = get_model_metadata_pb2.SignatureDefMap()
        response.metadata["signature_def"].Unpack(signature_map)
        spec = json_format.MessageToDict(response.model_spec, preserving_proto_field_name=True,
                                         always_print_fields_with_no_presence=True)
        signature_json = json_format.MessageToDict(signature_map, preserving_proto_field_name=True)
        return {"model_spec": spec, "metadata": {"signature_def": signature_json}}

    def _predict(self, servable, body):
        signature_name = body.get("signature_name", DEFAULT_SIGNATURE)
        if not isinstance(signature_name, str):
            raise invalid("'signature_name' must be a string")
        signature_def, _ = servable.signature(signature_name)
        specs = {name: tf.as_dtype(info.dtype) for name, info in signature_def.inputs.items()}
        row_format = "instances" in body
        if row_format == ("inputs" in body):
            raise invalid("Request body must have exactly one of 'instances' (row format) or "
                          "'inputs' (columnar format)")
        arrays = self._row_inputs(body["instances"], specs) if row_format else \
            self._columnar_inputs(body["inputs"], specs)
        outputs = self.server.core.predict_arrays(servable, signature_name, arrays)
        json_outputs = {name: array_to_json(name, value) for name, value in outputs.items()}
        if not row_format:
            if len(json_outputs) == 1:
                return {"outputs": next(iter(json_outputs.values()))}
            return {"outputs": json_outputs}
        sizes = {name: (value.shape[0] if value.ndim else None) for name, value in outputs.items()}
        batch = set(sizes.values())
        if len(batch) != 1 or None in batch:
            raise invalid(f"Output tensors must share their first (batch) dimension to be returned "
                          f"in row format; got {sizes}. Use the columnar 'inputs' format.")
        (n,) = batch
        if len(json_outputs) == 1:
            return {"predictions": next(iter(json_outputs.values()))}
        return {"predictions": [{name: json_outputs[name][i] for name in json_outputs}
                                for i in range(n)]}

    @staticmethod
    def _row_inputs(instances, specs):
        if not isinstance(instances, list):
            raise invalid("'instances' must be a list")
        if not instances:
            raise invalid("'instances' is empty: the batch has no rows")
        named = all(isinstance(i, dict) and not _is_b64(i) for i in instances)
        if not named:
            if any(isinstance(i, dict) and not _is_b64(i) for i in instances):
                raise invalid("'instances' mixes named (object) and unnamed rows")
            if len(specs) != 1:
                raise invalid(f"The signature has inputs {sorted(specs)}: each instance must be "
                              f"an object naming them")
            (name,) = specs
            return {name: json_to_array(instances, specs[name], name)}
        keys = set(instances[0])
        for index, instance in enumerate(instances):
            if set(instance) != keys:
                raise invalid(f"instances[{index}] has inputs {sorted(instance)} but instances[0] "
                              f"has {sorted(keys)}; all instances must name the same inputs")
        unknown = sorted(keys - set(specs))
        if unknown:
            raise invalid(f"input tensor alias not found in signature: {unknown[0]}. Inputs "
                          f"expected to be in the set {sorted(specs)}.")
        return {name: json_to_array([i[name] for i in instances], specs[name], name) for name in keys}

    @staticmethod
    def _columnar_inputs(inputs, specs):
        if isinstance(inputs, dict) and not _is_b64(inputs):
            unknown = sorted(set(inputs) - set(specs))
            if unknown:
                raise invalid(f"input tensor alias not found in signature: {unknown[0]}. Inputs "
                              f"expected to be in the set {sorted(specs)}.")
            return {name: json_to_array(value, specs[name], name) for name, value in inputs.items()}
        if len(specs) != 1:
            raise invalid(f"The signature has inputs {sorted(specs)}: 'inputs' must be an object "
                          f"naming them")
        (name,) = specs
        return {name: json_to_array(inputs, specs[name], name)}

    def _classify(self, servable, body):
        request = classification_pb2.ClassificationRequest()
        request.model_spec.signature_name = self._signature_name(body)
        request.input.CopyFrom(_examples_input(body))
        response = self.server.core.classify(request, servable=servable)
        return {"result": [[[c.label, c.score] for c in row.classes]
                           for row in response.result.classifications]}

    def _regress(self, servable, body):
        request = regression_pb2.RegressionRequest()
        request.model_spec.signature_name = self._signature_name(body)
        request.input.CopyFrom(_examples_input(body))
        response = self.server.core.regress(request, servable=servable)
        return {"result": [r.value for r in response.result.regressions]}

    @staticmethod
    def _signature_name(body):
        name = body.get("signature_name", DEFAULT_SIGNATURE)
        if not isinstance(name, str):
            raise invalid("'signature_name' must be a string")
        return name
