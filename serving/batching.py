"""Server-side request batching: merge concurrent Predict calls into one model call.

Requests for the same model version and signature whose inputs agree on names,
dtypes and every dimension but the first (the batch) share a queue. A queue is run
when it holds `max_batch_size` rows or its oldest request has waited
`batch_timeout_micros`; its inputs are concatenated along dimension 0, the
signature runs once, and each output is split back by row counts. A batch that is
ready the moment a request joins it (full, or `batch_timeout_micros` 0) while a
batch thread is free runs on the caller's own thread: the same batch, without
two thread wake-ups per request.

Answers never change with batching: a batch whose outputs cannot be split by rows,
or whose run fails (one bad request), is re-run one request at a time, so only the
bad request gets the error.

Example:
    >>> scheduler = BatchScheduler(BatchingParameters(max_batch_size=16))
    >>> outputs = scheduler.run(key, run_fn, {"text": np.array([b"hi"], object)})
"""

import collections
import dataclasses
import logging
import re
import threading
import time

import grpc
import numpy as np

from serving.errors import ServingError

log = logging.getLogger("serving")

# Fields of the stock BatchingParameters proto this scheduler implements.
_SUPPORTED = ("max_batch_size", "batch_timeout_micros", "max_enqueued_batches", "num_batch_threads")
# Stock fields accepted for compatibility but without effect here.
_IGNORED = ("allowed_batch_sizes", "pad_variable_length_inputs", "thread_pool_name",
            "enable_large_batch_splitting", "max_execution_batch_size")


@dataclasses.dataclass(frozen=True)
class BatchingParameters:
    """How requests are merged.

    Args:
        max_batch_size: most rows in one model call. Defaults to 32.
        batch_timeout_micros: longest a request waits for others to join.
            Defaults to 1000.
        max_enqueued_batches: queue bound, in batches of `max_batch_size`; a request
            beyond it fails with UNAVAILABLE. Defaults to 100.
        num_batch_threads: threads running batches in parallel. Defaults to 2.
    """

    max_batch_size: int = 32
    batch_timeout_micros: int = 1000
    max_enqueued_batches: int = 100
    num_batch_threads: int = 2


def parse_batching_parameters(text, source="<batching parameters>", base=BatchingParameters()):
    """Parses the stock server's `--batching_parameters_file` text proto.

    Understands `max_batch_size { value: 128 }` (the stock wrapper form) and
    `max_batch_size: 128`. Stock fields this scheduler does not implement are
    logged and ignored.

    Args:
        text: the file's content.
        source: the file name, for messages. Defaults to a placeholder.
        base: values for fields the text leaves out. Defaults to the defaults.

    Returns:
        A `BatchingParameters`.

    Raises:
        ValueError: an unknown field or a non-integer value.
    """
    values = {}
    text = re.sub(r"#[^\n]*", "", text)
    pattern = re.compile(r"(\w+)\s*(?::\s*([^\s{}]+)|\{\s*value\s*:\s*([^\s{}]+)\s*\})")
    rest = pattern.sub("", text).strip()
    if rest:
        raise ValueError(f"{source}: cannot parse {rest[:60]!r}")
    for match in pattern.finditer(text):
        name, value = match.group(1), match.group(2) or match.group(3)
        if name in _IGNORED:
            log.warning("%s: batching parameter %s is not supported and is ignored", source, name)
            continue
        if name not in _SUPPORTED:
            raise ValueError(f"{source}: unknown batching parameter {name!r}; expected one of {_SUPPORTED}")
        try:
            values[name] = int(value)
        except ValueError:
            raise ValueError(f"{source}: {name} must be an integer, got {value!r}") from None
    params = dataclasses.replace(base, **values)
    if min(params.max_batch_size, params.max_enqueued_batches, params.num_batch_threads) < 1:
        raise ValueError(f"{source}: sizes and thread counts must be >= 1: {params}")
    return params


class _Task:
    __slots__ = ("inputs", "size", "done", "outputs", "error")

    def __init__(self, inputs, size):
        self.inputs = inputs
        self.size = size
        self.done = threading.Event()
        self.outputs = None
        self.error = None


class _Queue:
    __slots__ = ("run_fn", "labels", "tasks", "rows", "opened")

    def __init__(self, run_fn, labels):
        self.run_fn = run_fn
        self.labels = labels
        self.tasks = collections.deque()
        self.rows = 0
        self.opened = 0.0


def batch_signature(inputs):
    """Returns what requests must share to be merged, or None if not batchable.

    Args:
        inputs: dict name -> numpy array.

    Returns:
        `(rows, key)`: the request's batch size and a hashable key of input names,
        dtypes and non-batch dims; None when an input is a scalar or the inputs
        disagree on dimension 0.
    """
    rows = None
    key = []
    for name in sorted(inputs):
        array = inputs[name]
        if array.ndim == 0:
            return None
        if rows is None:
            rows = array.shape[0]
        elif array.shape[0] != rows:
            return None
        key.append((name, array.dtype.str, array.shape[1:]))
    if not rows:
        return None
    return rows, tuple(key)


class BatchScheduler:
    """Merges concurrent calls that share a key, runs them on worker threads.

    Args:
        params: `BatchingParameters`.
        metrics: a `serving.metrics.Metrics`, or None. Defaults to None.
    """

    def __init__(self, params, metrics=None):
        self.params = params
        self._metrics = metrics
        self._cond = threading.Condition()
        self._queues = collections.OrderedDict()  # key -> _Queue
        self._stopping = False
        self._busy = 0  # Batches running now, on worker or caller threads.
        self._threads = [
            threading.Thread(target=self._work, name=f"batch-{i}", daemon=True)
            for i in range(params.num_batch_threads)]
        for thread in self._threads:
            thread.start()

    def run(self, key, run_fn, inputs, metric_labels=None):
        """Runs `run_fn(inputs)` as part of a batch; returns this request's outputs.

        Args:
            key: hashable identity of the model version and signature; only calls
                with equal keys (and equal `batch_signature`) are merged.
            run_fn: callable(dict name -> array) -> dict name -> array; the model.
            inputs: this request's inputs, dict name -> numpy array.
            metric_labels: dict with `model_name`, `signature_name` for metrics, or
                None. Defaults to None.

        Returns:
            dict name -> numpy array, this request's rows of every output.

        Raises:
            ServingError: UNAVAILABLE if the queue is full or the scheduler stopped;
                whatever `run_fn` raised for this request.
        """
        shape_key = batch_signature(inputs)
        if shape_key is None or shape_key[0] > self.params.max_batch_size:
            return run_fn(inputs)  # Not mergeable: run alone, never refuse it.
        rows, input_key = shape_key
        task = _Task(inputs, rows)
        full_key = (key, input_key)
        limit = self.params.max_batch_size * self.params.max_enqueued_batches
        with self._cond:
            if self._stopping:
                raise ServingError(grpc.StatusCode.UNAVAILABLE, "The batch scheduler is shutting down")
            queue = self._queues.get(full_key)
            if queue is None:
                queue = self._queues[full_key] = _Queue(run_fn, metric_labels)
            if queue.rows + rows > limit:
                raise ServingError(grpc.StatusCode.UNAVAILABLE,
                                   "The batch scheduling queue to which this task was submitted is full")
            if not queue.tasks:
                queue.opened = time.monotonic()
            queue.tasks.append(task)
            queue.rows += rows
            mine = None
            if self._busy < self.params.num_batch_threads and (
                    queue.rows >= self.params.max_batch_size or self.params.batch_timeout_micros <= 0):
                # Ready now and a batch slot is free: run it here, no hand-off.
                mine = self._pop(full_key, queue, time.monotonic())
                self._busy += 1
            else:
                self._cond.notify()
        if metric_labels and self._metrics:
            self._metrics.batched_requests.inc(**metric_labels)
        if mine is not None:
            self._run_taken(queue, mine)
        task.done.wait()
        if task.error is not None:
            raise task.error
        return task.outputs

    def stop(self):
        """Runs what is queued, then stops the worker threads."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        for thread in self._threads:
            thread.join(timeout=30)

    # ---- workers -------------------------------------------------------------

    def _take_ready(self):
        """Pops a ready batch (caller holds the lock); returns (queue, tasks) or the wait time."""
        timeout_s = self.params.batch_timeout_micros / 1e6
        now = time.monotonic()
        wait = None
        for key, queue in self._queues.items():
            if not queue.tasks:
                continue
            due = queue.opened + timeout_s
            if queue.rows >= self.params.max_batch_size or now >= due or self._stopping:
                return queue, self._pop(key, queue, now)
            wait = due - now if wait is None else min(wait, due - now)
        return wait

    def _pop(self, key, queue, now):
        """Takes one batch's tasks off `queue` (caller holds the lock)."""
        tasks, rows = [], 0
        while queue.tasks and rows + queue.tasks[0].size <= self.params.max_batch_size:
            task = queue.tasks.popleft()
            tasks.append(task)
            rows += task.size
        queue.rows -= rows
        if queue.tasks:
            queue.opened = now
        else:
            del self._queues[key]  # Forget keys of unloaded versions.
        return tasks

    def _run_taken(self, queue, tasks):
        """Runs a batch taken with `_busy` counted; frees the slot after."""
        try:
            if self._metrics and queue.labels:
                self._metrics.batch_size.observe(sum(t.size for t in tasks), **queue.labels)
            self._run_batch(queue.run_fn, tasks)
        finally:
            with self._cond:
                self._busy -= 1
                self._cond.notify()

    def _work(self):
        while True:
            with self._cond:
                while True:
                    if self._stopping and not self._queues:
                        return
                    if self._busy >= self.params.num_batch_threads:
                        self._cond.wait()  # Callers run batches too; at most this many at once.
                        continue
                    ready = self._take_ready()
                    if isinstance(ready, tuple):
                        break
                    self._cond.wait(ready)
                self._busy += 1
            self._run_taken(*ready)

    def _run_batch(self, run_fn, tasks):
        if len(tasks) == 1:
            self._run_alone(run_fn, tasks[0])
            return
        total = sum(t.size for t in tasks)
        try:
            merged = {name: np.concatenate([t.inputs[name] for t in tasks], axis=0)
                      for name in tasks[0].inputs}
            outputs = run_fn(merged)
            if any(np.ndim(v) == 0 or np.shape(v)[0] != total for v in outputs.values()):
                raise ValueError("an output is not batched along dimension 0")
        except Exception as exc:  # Re-run alone: only the bad request fails.
            log.debug("Batch of %d requests failed (%s); running them one by one", len(tasks), exc)
            for task in tasks:
                self._run_alone(run_fn, task)
            return
        start = 0
        for task in tasks:
            task.outputs = {name: value[start:start + task.size] for name, value in outputs.items()}
            start += task.size
            task.done.set()

    @staticmethod
    def _run_alone(run_fn, task):
        try:
            task.outputs = run_fn(task.inputs)
        except Exception as exc:
            task.error = exc
        task.done.set()
