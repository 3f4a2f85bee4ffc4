"""Thread-safe counters, gauges and histograms rendered in the Prometheus text format.

Metric names follow the stock server's (`:tensorflow:serving:request_count`, ...):
colons are legal in Prometheus names.
"""

import bisect
import threading

# Latency buckets in microseconds, like the stock server's request_latency.
LATENCY_BUCKETS_US = (
    100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000,
    500_000, 1_000_000, 2_500_000, 5_000_000, 10_000_000)
BATCH_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


def _escape(value):
    return str(value).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels_text(names, values, extra=()):
    pairs = [f'{n}="{_escape(v)}"' for n, v in zip(names, values)] + list(extra)
    return "{" + ",".join(pairs) + "}" if pairs else ""


class _Metric:
    kind = "untyped"

    def __init__(self, name, help_text, label_names):
        self.name = name
        self.help_text = help_text
        self.label_names = tuple(label_names)
        self._lock = threading.Lock()
        self._values = {}

    def _key(self, labels):
        if set(labels) != set(self.label_names):
            raise ValueError(f"metric {self.name} takes labels {self.label_names}, got {sorted(labels)}")
        return tuple(str(labels[n]) for n in self.label_names)

    def render(self):
        lines = [f"# HELP {self.name} {self.help_text}", f"# TYPE {self.name} {self.kind}"]
        with self._lock:
            items = sorted(self._values.items())
        for key, value in items:
            lines.extend(self._render_one(key, value))
        return lines

    def _render_one(self, key, value):
        return [f"{self.name}{_labels_text(self.label_names, key)} {value}"]


class Counter(_Metric):
    """A monotonically increasing count per label set."""

    kind = "counter"

    def inc(self, amount=1, **labels):
        """Adds `amount` to the count of `labels`."""
        key = self._key(labels)
        with self._lock:
            self._values[key] = self._values.get(key, 0) + amount

    def get(self, **labels):
        """Returns the current count of `labels` (0 if never incremented)."""
        with self._lock:
            return self._values.get(self._key(labels), 0)


class Gauge(_Metric):
    """A value that goes up and down, per label set."""

    kind = "gauge"

    def set(self, value, **labels):
        """Sets the value of `labels`."""
        key = self._key(labels)
        with self._lock:
            self._values[key] = value


class Histogram(_Metric):
    """Cumulative buckets plus sum and count, per label set."""

    kind = "histogram"

    def __init__(self, name, help_text, label_names, buckets):
        super().__init__(name, help_text, label_names)
        self.buckets = tuple(buckets)

    def observe(self, value, **labels):
        """Records one observation of `value` for `labels`."""
        key = self._key(labels)
        with self._lock:
            counts, total = self._values.get(key, ([0] * (len(self.buckets) + 1), 0.0))
            counts[bisect.bisect_left(self.buckets, value)] += 1
            self._values[key] = (counts, total + value)

    def _render_one(self, key, value):
        counts, total = value
        lines, cumulative = [], 0
        for bound, count in zip(list(self.buckets) + ["+Inf"], counts):
            cumulative += count
            labels = _labels_text(self.label_names, key, [f'le="{bound}"'])
            lines.append(f"{self.name}_bucket{labels} {cumulative}")
        labels = _labels_text(self.label_names, key)
        lines.append(f"{self.name}_sum{labels} {total}")
        lines.append(f"{self.name}_count{labels} {cumulative}")
        return lines


class Metrics:
    """The server's metrics; one instance per server, passed to whoever records."""

    def __init__(self):
        self.request_count = Counter(
            ":tensorflow:serving:request_count",
            "The total number of requests.", ["model_name", "status"])
        self.request_latency = Histogram(
            ":tensorflow:serving:request_latency",
            "Distribution of wall time (in microseconds) for requests.",
            ["model_name", "API", "entrypoint"], LATENCY_BUCKETS_US)
        self.model_load_count = Counter(
            ":tensorflow:serving:model_load_count",
            "Number of model version load attempts, by outcome.",
            ["model_name", "status"])
        self.available_versions = Gauge(
            ":tensorflow:serving:available_versions",
            "Number of AVAILABLE versions of a model.", ["model_name"])
        self.warmup_records = Counter(
            ":tensorflow:serving:warmup_records_count",
            "Warm-up records replayed at load.", ["model_name"])
        self.batch_size = Histogram(
            ":tensorflow:serving:batching_session:processed_batch_size",
            "Number of rows in each batch run by the batch scheduler.",
            ["model_name", "signature_name"], BATCH_SIZE_BUCKETS)
        self.batched_requests = Counter(
            ":tensorflow:serving:batching_session:requests",
            "Requests run through the batch scheduler.",
            ["model_name", "signature_name"])

    def observe_request(self, model_name, api, entrypoint, code, seconds):
        """Records one finished request.

        Args:
            model_name: the model asked for.
            api: e.g. `predict`, `classify`, `metadata`.
            entrypoint: `GRPC` or `REST`.
            code: the `grpc.StatusCode` it ended with.
            seconds: its wall time.
        """
        self.request_count.inc(model_name=model_name, status=code.name)
        self.request_latency.observe(seconds * 1e6, model_name=model_name, API=api,
                                     entrypoint=entrypoint)

    def render(self):
        """Returns all metrics as Prometheus exposition text."""
        lines = []
        for metric in (self.request_count, self.request_latency, self.model_load_count,
                       self.available_versions, self.warmup_records, self.batch_size,
                       self.batched_requests):
            lines.extend(metric.render())
        return "\n".join(lines) + "\n"
