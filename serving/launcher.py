"""Start `python -m serving.server` as a subprocess and wait until it listens.

For tests, the load test and pipeline stages that need a live server: the process
is real (own interpreter, own ports), its log goes to a file, and readiness is the
server's own `Running gRPC ModelServer at ...` / `Exporting HTTP/REST API at:...`
lines.

Example:
    >>> with ServerProcess(["--model_name", "m", "--model_base_path", "/models/m"]) as server:
    ...     predict_text(server.grpc_target, "m", ["hi"])
"""

import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time

_GRPC_LINE = re.compile(r"Running gRPC ModelServer at 0\.0\.0\.0:(\d+)")
_REST_LINE = re.compile(r"Exporting HTTP/REST API at:localhost:(\d+)")


def free_port():
    """Returns a TCP port that was free a moment ago (for `--rest_api_port`)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ServerProcess:
    """A model server subprocess on free localhost ports.

    Args:
        args: server flags besides `--port`/`--rest_api_port` (picked here).
        rest: also export the REST API on a free port. Defaults to True.
        log_path: where the server's stdout/stderr go; a temp file if None.
            Defaults to None.
        env: extra environment variables. Defaults to None (TF's C++ logging
            quieted to warnings).
        python: interpreter to run. Defaults to this one.
        cwd: working directory (must see the `serving` package). Defaults to the
            repository root this file is in.
        exit_with_parent: the server shuts itself down when this process exits,
            even when killed (`--exit_with_parent`), so that a killed test or
            benchmark leaves no server holding a model in memory. Defaults to True.
    """

    def __init__(self, args, rest=True, log_path=None, env=None, python=sys.executable, cwd=None,
                 exit_with_parent=True):
        self.args = list(args) + (["--exit_with_parent"] if exit_with_parent else [])
        self.rest = rest
        self.log_path = log_path or tempfile.mkstemp(prefix="model_server_", suffix=".log")[1]
        self.env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", **(env or {}))
        self.python = python
        self.cwd = cwd or os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        self.process = None
        self.grpc_port = None
        self.rest_port = None

    @property
    def grpc_target(self):
        """`localhost:PORT` of the gRPC API."""
        return f"localhost:{self.grpc_port}"

    @property
    def rest_url(self):
        """`http://localhost:PORT` of the REST API."""
        return f"http://localhost:{self.rest_port}"

    def log_text(self):
        """Returns what the server has logged so far."""
        with open(self.log_path, encoding="utf-8", errors="replace") as f:
            return f.read()

    def start(self, timeout_s=120.0, attempts=3):
        """Starts the server and waits for its listening lines.

        Retries on a fresh REST port if the one picked was taken meanwhile.

        Args:
            timeout_s: seconds to wait for readiness. Defaults to 120.
            attempts: start attempts. Defaults to 3.

        Returns:
            self.

        Raises:
            RuntimeError: the server exited or did not become ready; the message
                holds the end of its log.
        """
        for attempt in range(attempts):
            rest_port = free_port() if self.rest else 0
            command = [self.python, "-m", "serving.server", "--port", "0",
                       "--rest_api_port", str(rest_port)] + self.args
            with open(self.log_path, "w") as log_file:
                self.process = subprocess.Popen(command, stdout=log_file, stderr=subprocess.STDOUT,
                                                env=self.env, cwd=self.cwd)
            deadline = time.monotonic() + timeout_s
            while time.monotonic() < deadline:
                text = self.log_text()
                grpc_match, rest_match = _GRPC_LINE.search(text), _REST_LINE.search(text)
                if grpc_match and (rest_match or not self.rest):
                    self.grpc_port = int(grpc_match.group(1))
                    self.rest_port = int(rest_match.group(1)) if rest_match else None
                    return self
                if self.process.poll() is not None:
                    break
                time.sleep(0.1)
            else:
                self.process.kill()
                self.process.wait()
                raise RuntimeError(f"model server not ready after {timeout_s} s:\n{self.log_text()[-3000:]}")
            if "Address already in use" not in self.log_text() or attempt == attempts - 1:
                raise RuntimeError(f"model server exited with {self.process.returncode}:\n"
                                   f"{self.log_text()[-3000:]}")
        raise AssertionError("unreachable")

    def stop(self, timeout_s=60.0):
        """Sends SIGTERM and waits; returns the exit code (kills it after `timeout_s`)."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc_info):
        self.stop()
