"""A TF-Serving-compatible model server: gRPC (PredictionService, ModelService) + REST.

Drop-in for `tensorflow_model_server` for this project's models: the same flags,
the same gRPC services and REST routes, the same model folder layout
(`BASE/<version>/` SavedModels), warm-up files and version policies. It needs
TensorFlow, tensorflow-serving-api and grpcio only; the served SavedModels need
no project code.

Usage:
    python -m serving.server --port 8500 --rest_api_port 8501 \\
        --model_name bert --model_base_path /models/bert
    python -m serving.server --port 8500 --model_config_file models.config \\
        --enable_batching --batching_parameters_file batching.config --monitoring

It logs `Running gRPC ModelServer at 0.0.0.0:PORT ...` and
`Exporting HTTP/REST API at:localhost:PORT ...` once it accepts requests (like
the stock server), and on SIGTERM stops accepting, finishes the requests in
flight and exits 0.

Module layout: `model_manager` (versions on disk -> loaded servables),
`inference` (request logic), `batching` (request merging), `rest` (HTTP front
end), `metrics` (Prometheus), `errors` (status codes), this file (flags, gRPC
front end, process lifecycle).
"""

import argparse
import concurrent.futures
import dataclasses
import logging
import os
import re
import signal
import sys
import threading
import time
import typing

import grpc
import tensorflow as tf
from tensorflow_serving.apis import (
    model_service_pb2_grpc,
    model_management_pb2,
    prediction_service_pb2_grpc,
)

from serving import batching, model_manager
from serving.errors import ServingError, from_exception, number_of
from serving.inference import InferenceCore
from serving.metrics import Metrics
from serving.rest import RestServer

log = logging.getLogger("serving")

DEFAULT_MAX_MESSAGE_BYTES = 64 << 20
DEFAULT_MONITORING_PATH = "/monitoring/prometheus/metrics"


def _bool_flag(text):
    if isinstance(text, bool):
        return text
    lowered = text.lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def _option(default, help_text):
    return dataclasses.field(default=default, metadata={"help": help_text})


@dataclasses.dataclass(frozen=True)
class ServerOptions:
    """Everything the server is configured with; one field per flag (stock names).

    Built from flags only in `main`; `build_arg_parser` is generated from these
    fields, so a flag's name, default and help live here once.
    """

    port: int = _option(8500, "gRPC port (0 picks a free one; the log line tells which).")
    grpc_channel_arguments: str = _option(
        "", "Comma-separated gRPC server options, e.g. grpc.max_receive_message_length=1048576.")
    grpc_max_threads: int = _option(16, "Threads serving gRPC requests (the most in flight).")
    rest_api_port: int = _option(0, "HTTP/REST port; 0 disables the REST API (as the stock server).")
    rest_api_num_threads: int = _option(0, "Accepted for compatibility; REST uses a thread per connection.")
    rest_api_timeout_in_ms: int = _option(30000, "Socket timeout while reading a REST request.")
    rest_api_max_body_bytes: int = _option(DEFAULT_MAX_MESSAGE_BYTES,
                                           "Largest REST request body; larger ones get 413.")
    model_name: str = _option("default", "Name of the model (with --model_base_path).")
    model_base_path: str = _option("", "Folder holding the model's integer version folders.")
    model_config_file: str = _option(
        "", "A text ModelServerConfig (model_config_list); overrides --model_name/--model_base_path.")
    model_config_file_poll_wait_seconds: float = _option(0.0, "Re-read --model_config_file this often (0: never).")
    file_system_poll_wait_seconds: float = _option(
        1.0, "Scan the base paths for new versions this often (0: only at start).")
    saved_model_tags: str = _option("serve", "Comma-separated meta graph tags to load.")
    enable_batching: bool = _option(False, "Merge concurrent Predict requests.")
    batching_parameters_file: str = _option("", "Text BatchingParameters (max_batch_size { value: 32 } ...).")
    max_batch_size: typing.Optional[int] = _option(None, "Overrides the batching file.")
    batch_timeout_micros: typing.Optional[int] = _option(None, "Overrides the batching file.")
    num_batch_threads: typing.Optional[int] = _option(None, "Overrides the batching file.")
    max_enqueued_batches: typing.Optional[int] = _option(None, "Overrides the batching file.")
    enable_model_warmup: bool = _option(True, "Replay assets.extra/tf_serving_warmup_requests on load.")
    num_request_iterations_for_warmup: int = _option(1, "Times each warm-up record is replayed.")
    monitoring: bool = _option(False, f"Serve Prometheus metrics at {DEFAULT_MONITORING_PATH} (REST port).")
    monitoring_config_file: str = _option(
        "", 'Text MonitoringConfig: prometheus_config { enable: true path: "..." }.')
    tensorflow_intra_op_parallelism: int = _option(0, "TF intra-op threads (0: TF default).")
    tensorflow_inter_op_parallelism: int = _option(0, "TF inter-op threads (0: TF default).")
    utf8_inputs: str = _option("text,text_b",
                               "String inputs that must be valid UTF-8 text (INVALID_ARGUMENT otherwise).")
    shutdown_grace_seconds: float = _option(30.0, "How long SIGTERM waits for in-flight requests.")
    exit_with_parent: bool = _option(
        False, "Shut down, as on SIGTERM, when the process that started the server exits "
               "(for a server started by a test, benchmark or pipeline step).")


def build_arg_parser():
    """Returns the argparse parser of the server's flags (one per `ServerOptions` field)."""
    p = argparse.ArgumentParser(prog="python -m serving.server", description=__doc__.split("\n\n")[0])
    for field in dataclasses.fields(ServerOptions):
        flag, help_text = f"--{field.name}", field.metadata["help"]
        if field.type is bool:
            # --enable_batching, --enable_batching=true and --enable_batching=false all work.
            p.add_argument(flag, type=_bool_flag, nargs="?", const=True, default=field.default,
                           help=help_text)
        else:
            kind = int if field.default is None else type(field.default)
            p.add_argument(flag, type=kind, default=field.default, help=help_text)
    return p


def parse_options(argv=None):
    """Parses command-line flags into `ServerOptions`."""
    return ServerOptions(**vars(build_arg_parser().parse_args(argv)))


def parse_channel_arguments(text):
    """Parses `--grpc_channel_arguments` (`k=v,k2=v2`) into gRPC option tuples."""
    options = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        if "=" not in item:
            raise ValueError(f"--grpc_channel_arguments: {item!r} is not key=value")
        key, value = item.split("=", 1)
        options.append((key.strip(), int(value) if re.fullmatch(r"-?\d+", value.strip()) else value.strip()))
    return options


def grpc_options(channel_arguments):
    """Returns the gRPC server options: 64 MiB messages unless overridden, no port sharing."""
    options = {
        "grpc.max_receive_message_length": DEFAULT_MAX_MESSAGE_BYTES,
        "grpc.max_send_message_length": DEFAULT_MAX_MESSAGE_BYTES,
        # Without this, a second server on a taken port starts silently.
        "grpc.so_reuseport": 0,
    }
    options.update(parse_channel_arguments(channel_arguments))
    return list(options.items())


def monitoring_path(options):
    """Returns the Prometheus endpoint path the flags ask for, or None."""
    path = DEFAULT_MONITORING_PATH if options.monitoring else None
    if options.monitoring_config_file:
        with tf.io.gfile.GFile(options.monitoring_config_file, "r") as f:
            text = f.read()
        enable = re.search(r"enable\s*:\s*(\w+)", text)
        custom = re.search(r'path\s*:\s*"([^"]*)"', text)
        if enable and enable.group(1).lower() == "true":
            path = custom.group(1) if custom else DEFAULT_MONITORING_PATH
    return path


def batching_parameters(options):
    """Returns the `BatchingParameters` of the flags (file, then single-value overrides)."""
    params = batching.BatchingParameters()
    if options.batching_parameters_file:
        with tf.io.gfile.GFile(options.batching_parameters_file, "r") as f:
            params = batching.parse_batching_parameters(f.read(), options.batching_parameters_file)
    overrides = {name: getattr(options, name) for name in
                 ("max_batch_size", "batch_timeout_micros", "num_batch_threads", "max_enqueued_batches")
                 if getattr(options, name) is not None}
    return dataclasses.replace(params, **overrides)


# ---- gRPC front end ------------------------------------------------------------


def _serve(api, request, context, handler, metrics, model_name):
    """Runs one gRPC handler: maps every failure to a status, records metrics."""
    start = time.perf_counter()
    code, response, error = grpc.StatusCode.OK, None, None
    try:
        response = handler(request)
    except Exception as exc:  # The server never dies of a request.
        error = from_exception(exc)
        code = error.code
        if code == grpc.StatusCode.INTERNAL:
            log.exception("%s failed", api)
    metrics.observe_request(model_name, api, "GRPC", code, time.perf_counter() - start)
    if error is not None:
        context.abort(error.code, grpc_message(error.message))
    return response


def grpc_message(message, limit=1024):
    """The status message as the stock server sends it: cut after `limit` characters."""
    return message if len(message) <= limit else message[:limit] + "...TRUNCATED"


class PredictionServicer(prediction_service_pb2_grpc.PredictionServiceServicer):
    """tensorflow.serving.PredictionService over an `InferenceCore`."""

    def __init__(self, core, metrics):
        self._core = core
        self._metrics = metrics

    def Predict(self, request, context):  # noqa: N802 (gRPC names)
        return _serve("predict", request, context, self._core.predict, self._metrics,
                      request.model_spec.name)

    def Classify(self, request, context):  # noqa: N802
        return _serve("classify", request, context, self._core.classify, self._metrics,
                      request.model_spec.name)

    def Regress(self, request, context):  # noqa: N802
        return _serve("regress", request, context, self._core.regress, self._metrics,
                      request.model_spec.name)

    def MultiInference(self, request, context):  # noqa: N802
        name = request.tasks[0].model_spec.name if request.tasks else ""
        return _serve("multi_inference", request, context, self._core.multi_inference,
                      self._metrics, name)

    def GetModelMetadata(self, request, context):  # noqa: N802
        return _serve("metadata", request, context, self._core.get_model_metadata, self._metrics,
                      request.model_spec.name)


class ModelServicer(model_service_pb2_grpc.ModelServiceServicer):
    """tensorflow.serving.ModelService: status and config reload."""

    def __init__(self, core, metrics):
        self._core = core
        self._metrics = metrics

    def GetModelStatus(self, request, context):  # noqa: N802
        return _serve("status", request, context, self._core.get_model_status, self._metrics,
                      request.model_spec.name)

    def HandleReloadConfigRequest(self, request, context):  # noqa: N802
        response = model_management_pb2.ReloadConfigResponse()
        try:
            self._core.manager.reload_config(request.config)
        except Exception as exc:
            error = from_exception(exc)
            log.error("Reload of the model config failed: %s", error)
            response.status.error_code = number_of(error.code)
            response.status.error_message = error.message
            context.abort(error.code, error.message)
        log.info("Reloaded the model config: %s", [m.name for m in request.config.model_config_list.config])
        return response


# ---- the server ----------------------------------------------------------------


class ModelServer:
    """The whole server: model manager, optional batcher, gRPC and REST front ends.

    Args:
        options: `ServerOptions`.
    """

    def __init__(self, options):
        self.options = options
        self.metrics = Metrics()
        if options.model_config_file:
            config = model_manager.read_model_config_file(options.model_config_file)
        elif options.model_base_path:
            config = model_manager.single_model_config(options.model_name, options.model_base_path)
        else:
            raise ValueError("Give --model_base_path (with --model_name) or --model_config_file")
        self.batcher = None
        if options.enable_batching:
            params = batching_parameters(options)
            log.info("Batching enabled: %s", params)
            self.batcher = batching.BatchScheduler(params, self.metrics)
        warmup = self._warmup if options.enable_model_warmup else None
        self.manager = model_manager.ModelManager(
            config, tags=[t for t in options.saved_model_tags.split(",") if t], warmup=warmup,
            metrics=self.metrics)
        self.core = InferenceCore(
            self.manager, self.batcher,
            utf8_inputs=[n for n in options.utf8_inputs.split(",") if n],
            warmup_iterations=options.num_request_iterations_for_warmup)
        self.grpc_server = None
        self.rest_server = None
        self.grpc_port = None
        self.rest_port = None
        self._rest_thread = None

    def _warmup(self, servable):
        count = self.core.warmup(servable)
        if count:
            self.metrics.warmup_records.inc(count, model_name=servable.name)

    def start(self):
        """Loads the models, then starts listening (as the stock server, models first)."""
        options = self.options
        self.manager.poll_once()
        self.manager.start_polling(options.file_system_poll_wait_seconds, options.model_config_file or None,
                                   options.model_config_file_poll_wait_seconds)
        # The synchronous server on purpose: a grpc.aio server was measured no faster
        # for a lone request (its poller hands each call to the event loop much as this
        # one hands it to a worker thread), and running the model on the event loop
        # serializes concurrent requests, so they no longer batch (a third less
        # throughput with 8 clients).
        self.grpc_server = grpc.server(
            concurrent.futures.ThreadPoolExecutor(max_workers=options.grpc_max_threads,
                                                  thread_name_prefix="grpc"),
            options=grpc_options(options.grpc_channel_arguments),
            # As the stock server's gRPC thread quota: a call beyond the threads is
            # refused with RESOURCE_EXHAUSTED at once instead of waiting in an
            # unbounded backlog.
            maximum_concurrent_rpcs=options.grpc_max_threads)
        prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
            PredictionServicer(self.core, self.metrics), self.grpc_server)
        model_service_pb2_grpc.add_ModelServiceServicer_to_server(
            ModelServicer(self.core, self.metrics), self.grpc_server)
        self.grpc_port = self.grpc_server.add_insecure_port(f"0.0.0.0:{options.port}")
        if not self.grpc_port:
            raise OSError(f"Cannot bind the gRPC port {options.port}")
        self.grpc_server.start()
        log.info("Running gRPC ModelServer at 0.0.0.0:%d ...", self.grpc_port)
        if options.rest_api_port:
            self.rest_server = RestServer(
                options.rest_api_port, self.core, self.metrics, monitoring_path(options),
                max_body_bytes=options.rest_api_max_body_bytes,
                timeout_s=options.rest_api_timeout_in_ms / 1000)
            self.rest_port = self.rest_server.server_address[1]
            self._rest_thread = threading.Thread(target=self.rest_server.serve_forever,
                                                 name="rest", daemon=True)
            self._rest_thread.start()
            log.info("Exporting HTTP/REST API at:localhost:%d ...", self.rest_port)

    def stop(self, grace_s=30.0):
        """Stops accepting requests, finishes those in flight, then stops the rest."""
        self.manager.stop()
        grpc_done = self.grpc_server.stop(grace_s) if self.grpc_server else None
        if self.rest_server is not None:
            self.rest_server.shutdown()  # No new connections.
            if not self.rest_server.drain(grace_s):
                log.warning("REST requests still running after %.0f s; exiting anyway", grace_s)
            self.rest_server.server_close()
        if grpc_done is not None:
            grpc_done.wait(grace_s + 5)
        if self.batcher is not None:
            self.batcher.stop()


def apply_thread_options(options):
    """Sizes TensorFlow's thread pools from the flags (before TensorFlow starts) and logs them.

    0 leaves TensorFlow's own choice (a thread per CPU). Measured on 2 CPUs,
    `--tensorflow_intra_op_parallelism=1` made a lone request to a BERT mini
    classifier about 1.5x faster but one to BERT-base 1.05-1.4x slower, so the
    default stays TensorFlow's; see the README.

    Args:
        options: `ServerOptions`.

    Returns:
        `(intra_op, inter_op)` as TensorFlow reports them back (0: its default).
    """
    if options.tensorflow_intra_op_parallelism:
        tf.config.threading.set_intra_op_parallelism_threads(options.tensorflow_intra_op_parallelism)
    if options.tensorflow_inter_op_parallelism:
        tf.config.threading.set_inter_op_parallelism_threads(options.tensorflow_inter_op_parallelism)
    intra = tf.config.threading.get_intra_op_parallelism_threads()
    inter = tf.config.threading.get_inter_op_parallelism_threads()
    log.info("TensorFlow threads: intra-op %d, inter-op %d (0: TensorFlow's default, one per CPU; "
             "%d CPUs)", intra, inter, os.cpu_count() or 0)
    return intra, inter


def main(argv=None):
    """Runs the server until SIGTERM/SIGINT; returns the process exit code."""
    options = parse_options(argv)
    parent = os.getppid()
    logging.basicConfig(
        level=logging.INFO, stream=sys.stderr,
        format="%(asctime)s.%(msecs)03d: %(levelname).1s %(module)s.py:%(lineno)d] %(message)s",
        datefmt="%Y-%m-%d %H:%M:%S")
    stop_requested = threading.Event()

    def on_signal(signum, _frame):
        log.info("Received %s; shutting down", signal.Signals(signum).name)
        stop_requested.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    apply_thread_options(options)
    server = None
    try:
        server = ModelServer(options)
        server.start()
    except (ServingError, ValueError, OSError, RuntimeError) as exc:
        log.error("Cannot start the model server: %s", exc)
        if server is not None:
            server.stop(0)
        return 1
    while not stop_requested.wait(0.5):
        if options.exit_with_parent and os.getppid() != parent:
            log.info("The process that started the server (pid %d) exited; shutting down", parent)
            break
    server.stop(options.shutdown_grace_seconds)
    log.info("Model server stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
