"""The one error type of the server: a gRPC status code plus a message.

Both front ends turn it into their wire form: gRPC aborts with the code, REST
answers `{"error": message}` with `http_status(code)`.
"""

import grpc

# tensorflow.error.Code numbers are the gRPC status numbers.
_CODE_BY_NUMBER = {code.value[0]: code for code in grpc.StatusCode}

# The stock server's mapping (tensorflow_serving/model_servers/http_server.cc,
# `ToHTTPStatusCode`): FAILED_PRECONDITION and OUT_OF_RANGE are 400 there too.
_HTTP_STATUS = {
    grpc.StatusCode.OK: 200,
    grpc.StatusCode.CANCELLED: 499,
    grpc.StatusCode.UNKNOWN: 500,
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.INTERNAL: 500,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DATA_LOSS: 500,
    grpc.StatusCode.UNAUTHENTICATED: 401,
}


class ServingError(Exception):
    """A request (or load) failure with the gRPC status it should be reported as.

    Args:
        code: a `grpc.StatusCode`.
        message: what was wrong, naming the model/input/field involved.

    Example:
        >>> raise ServingError(grpc.StatusCode.NOT_FOUND, "Servable not found ...")
    """

    def __init__(self, code, message):
        super().__init__(message)
        self.code = code
        self.message = message

    def __str__(self):
        return f"{self.code.name}: {self.message}"


def code_from_number(number):
    """Returns the `grpc.StatusCode` of a tensorflow.error.Code number (UNKNOWN if none)."""
    return _CODE_BY_NUMBER.get(int(number), grpc.StatusCode.UNKNOWN)


def number_of(code):
    """Returns the tensorflow.error.Code number of a `grpc.StatusCode`."""
    return code.value[0]


def http_status(code):
    """Returns the HTTP status the stock REST API uses for a `grpc.StatusCode`."""
    return _HTTP_STATUS.get(code, 500)


def from_exception(exc):
    """Converts any exception raised while serving into a `ServingError`.

    TensorFlow errors keep their code (e.g. a model's InvalidArgumentError on bad
    input becomes INVALID_ARGUMENT); anything else becomes INTERNAL.

    Args:
        exc: the exception.

    Returns:
        A `ServingError`.
    """
    if isinstance(exc, ServingError):
        return exc
    import tensorflow as tf  # Deferred: errors.py is also used by light callers.

    if isinstance(exc, tf.errors.OpError):
        message = exc.message.strip()
        # Graph errors start with "Graph execution error: Detected at node ...
        # <stack traces unavailable>"; the op's own message follows.
        marker = "<stack traces unavailable>"
        if marker in message:
            message = message.split(marker, 1)[1].strip()
        return ServingError(code_from_number(exc.error_code), message)
    return ServingError(grpc.StatusCode.INTERNAL, f"{type(exc).__name__}: {exc}")
