"""Beam runners for the stages, and graph pieces that every runner executes alike.

The Beam jobs run on the DirectRunner (one machine) and on Beam's DaskRunner (a
`dask.distributed` cluster); `--runner=DaskRunner` is accepted as a short name for
`apache_beam.runners.dask.dask_runner.DaskRunner`. Without `--dask_client_address`
the DaskRunner starts a `dask.distributed.LocalCluster` for the job; with
`--dask_client_address tcp://host:8786` it runs on that cluster's workers.
`--dask_npartitions N` spreads a job's input over N partitions (tasks); without it
the DaskRunner puts up to 128 input elements (here: files) in one partition.

Workers must be processes (`dask worker`, or a LocalCluster with its default
`processes=True`): Beam 2.77's DaskRunner shares a ParDo's output buffer among the
partitions that one process runs from the same copy of the task, so workers that are
threads of the client's process (an `inproc://` address) repeat outputs. Such an
address is refused.

The DaskRunner translates only Create, ParDo, GroupByKey and Flatten, and runs the
graph of the last step applied. So the jobs are written without:

- side inputs (`AsSingleton`, `AsList`, ...): a value known when the pipeline is
  built is a constructor argument; one computed by the job reaches the steps that
  need it through a `CoGroupByKey` (see `broadcast_join`);
- several outputs per ParDo (`with_outputs`): a DoFn that yields `TaggedOutput`s is
  run through `ParDoOutputs`, which carries the tag inside the element;
- `finish_bundle` outputs, `Read` sources and sinks that use side inputs
  (`WriteToText`, `WriteToTFRecord`): files are written by ParDos after a
  `GroupByKey` (see `WriteTextShards`);
- several sinks left dangling: every job ends with `Done`, one Flatten of what its
  sinks return (small values: paths), so that the last step depends on all of them.

The results are the same on every runner, byte for byte: file contents are ordered by
keys the records carry, never by the order a runner happens to deliver them in.
"""

import collections
import contextlib
import json
import math
import os
import uuid
import zlib

import apache_beam as beam
from apache_beam.io.filesystems import CompressionTypes, FileSystems
from apache_beam.metrics import Metrics
from apache_beam.options.pipeline_options import PipelineOptions

DASK_RUNNER = "apache_beam.runners.dask.dask_runner.DaskRunner"
# Names Beam itself doesn't know (compared lower-cased, as Beam compares runner names).
SHORT_RUNNER_NAMES = {"daskrunner": DASK_RUNNER, "dask": DASK_RUNNER}
MAIN_TAG = "main"


def expand_runner(pipeline_args):
    """`pipeline_args` with a short runner name (`--runner=DaskRunner`) made a full one.

    Both spellings, `--runner=NAME` and `--runner NAME`, are rewritten; any other
    argument is kept as it is.

    Example:
        >>> expand_runner(["--runner=DaskRunner", "--dask_npartitions=4"])[0]
        '--runner=apache_beam.runners.dask.dask_runner.DaskRunner'
    """
    args = list(pipeline_args or [])
    for i, arg in enumerate(args):
        if arg.startswith("--runner="):
            name = arg.split("=", 1)[1]
            args[i] = "--runner=" + SHORT_RUNNER_NAMES.get(name.lower(), name)
        elif arg == "--runner" and i + 1 < len(args):
            args[i + 1] = SHORT_RUNNER_NAMES.get(args[i + 1].lower(), args[i + 1])
    return args


def pipeline_options(pipeline_args=None):
    """`PipelineOptions` from command-line strings, short runner names expanded.

    Raises:
        ValueError: `--dask_client_address` names an in-process (`inproc://`) cluster.
    """
    args = expand_runner(pipeline_args)
    address = _flag_value(args, "--dask_client_address") or ""
    if address.startswith("inproc://"):
        raise ValueError(
            f"--dask_client_address {address}: the DaskRunner needs worker processes; "
            "workers that are threads of this process repeat outputs (start the cluster "
            "with processes=True, or `dask scheduler` and `dask worker`)")
    return PipelineOptions(args)


@contextlib.contextmanager
def pipeline(pipeline_args=None):
    """`with pipeline(args) as p:` builds a Beam pipeline, runs it and waits for it.

    As `with beam.Pipeline(options=...)`, and on the DaskRunner it also closes the
    job's Dask client afterwards (and with it the LocalCluster the client started
    when no `--dask_client_address` was given).

    Args:
        pipeline_args: Beam options as command-line strings. Defaults to none
            (DirectRunner).
    """
    beam_pipeline = beam.Pipeline(options=pipeline_options(pipeline_args))
    try:
        with beam_pipeline:
            yield beam_pipeline
    finally:
        client = getattr(getattr(beam_pipeline, "result", None), "client", None)
        if client is not None:
            client.close()


def _flag_value(args, flag):
    """The value of `--flag=value` or `--flag value` in `args`, or None."""
    for i, arg in enumerate(args):
        if arg.startswith(flag + "="):
            return arg.split("=", 1)[1]
        if arg == flag and i + 1 < len(args):
            return args[i + 1]
    return None


@contextlib.contextmanager
def shared_dask_cluster(pipeline_args=None):
    """Yields `pipeline_args` for several jobs, sharing one LocalCluster on the DaskRunner.

    On the DaskRunner without `--dask_client_address` (or `--dask_scheduler_file`)
    every job would start, and stop, a LocalCluster of its own, whose worker
    processes import the job's libraries (TensorFlow) again. Here one LocalCluster
    (worker processes, as many as the machine's cores allow) serves every job run
    inside the `with`, and is closed at its end; unless told otherwise, each job's
    input is cut into one partition per worker thread (`--dask_npartitions`).
    Other arguments pass unchanged.

    Args:
        pipeline_args: Beam options as command-line strings. Defaults to none.
    """
    args = expand_runner(pipeline_args)
    if (_flag_value(args, "--runner") != DASK_RUNNER or _flag_value(args, "--dask_client_address")
            or _flag_value(args, "--dask_scheduler_file")):
        yield args
        return
    import distributed

    with distributed.LocalCluster(dashboard_address=None) as cluster:
        threads = sum(w["nthreads"] for w in cluster.scheduler_info["workers"].values())
        extra = ["--dask_client_address", cluster.scheduler_address]
        if not (_flag_value(args, "--dask_npartitions") or _flag_value(args, "--dask_partition_size")):
            extra.append(f"--dask_npartitions={threads}")
        print(f"[dask] LocalCluster {cluster.scheduler_address}: {len(cluster.workers)} worker "
              f"process(es), {threads} thread(s), for every Beam job of this run", flush=True)
        yield args + extra


def stable_shard(key, num_shards):
    """A shard in [0, num_shards) from `key`'s text, the same in every process.

    (Python's `hash` of a string changes from process to process.)
    """
    return zlib.crc32(str(key).encode("utf-8")) % num_shards


class _TagOutputsFn(beam.DoFn):
    """Runs a DoFn; yields `(tag, value)` for each of its outputs (`MAIN_TAG` untagged)."""

    def __init__(self, fn):
        self._fn = fn

    def setup(self):
        self._fn.setup()

    def start_bundle(self):
        self._fn.start_bundle()

    def process(self, element, *args, **kwargs):
        for output in self._fn.process(element, *args, **kwargs) or ():
            if isinstance(output, beam.pvalue.TaggedOutput):
                yield output.tag, output.value
            else:
                yield MAIN_TAG, output

    def teardown(self):
        self._fn.teardown()


class ParDoOutputs(beam.PTransform):
    """A ParDo whose DoFn yields `TaggedOutput`s, with one PCollection per tag.

    As `beam.ParDo(fn, *args).with_outputs(*tags, main=main)`, for runners that keep
    one output per ParDo: the tag travels inside the element and one Filter per tag
    takes it back out. `fn` must not emit from `finish_bundle`.

    Returns:
        an `Outputs` dict {tag: PCollection}, the main output under `main` (also
        readable as attributes, `outputs.documents`).

    Example:
        >>> outputs = files | "Read" >> ParDoOutputs(ReadFn(), tags=("stats",), main="documents")
        >>> outputs["documents"], outputs["stats"]
    """

    def __init__(self, fn, *args, tags=(), main=MAIN_TAG):
        super().__init__()
        self._fn = fn
        self._args = args
        self._tags = tuple(tags)
        self._main = main

    def expand(self, pcoll):
        tagged = pcoll | "Tag" >> beam.ParDo(_TagOutputsFn(self._fn), *self._args)
        outputs = Outputs()
        for tag in (MAIN_TAG,) + self._tags:
            name = self._main if tag == MAIN_TAG else tag
            outputs[name] = tagged | f"Only_{name}" >> beam.FlatMap(_values_of, tag)
        return outputs


class Outputs(dict):
    """{tag: PCollection}, also readable as attributes (`outputs.documents`), as Beam's."""

    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


def _values_of(tagged, tag):
    return [tagged[1]] if tagged[0] == tag else []


def broadcast_join(pcoll, value, key_fn, num_shards, label):
    """Pairs every element of `pcoll` with the single element of `value`.

    What `beam.pvalue.AsSingleton(value)` gives a ParDo, built from a `CoGroupByKey`:
    the elements are keyed into `num_shards` shards by `stable_shard(key_fn(element))`,
    `value` is copied once per shard, and the join yields, per non-empty shard,
    `(shard, {"value": [value] or [], "elements": [...]})`. A shard is held by one
    worker at a time, so `num_shards` bounds both parallelism and memory.

    Args:
        pcoll: the elements.
        value: a PCollection of at most one element.
        key_fn: element -> a key whose text places it in a shard.
        num_shards: how many groups the elements are spread over.
        label: a prefix for the steps' labels.
    """
    keyed = pcoll | f"{label}KeyByShard" >> beam.Map(
        lambda element: (stable_shard(key_fn(element), num_shards), element))
    copies = value | f"{label}CopyPerShard" >> beam.FlatMap(
        lambda v: [(shard, v) for shard in range(num_shards)])
    return ({"value": copies, "elements": keyed}
            | f"{label}Join" >> beam.CoGroupByKey()
            | f"{label}DropEmptyShards" >> beam.Filter(lambda kv: bool(kv[1]["elements"])))


def gather(pcoll, label):
    """The elements of `pcoll` as one list (no element when `pcoll` is empty).

    `beam.combiners.ToList()` without its default value, which a side input carries.
    """
    return pcoll | label >> beam.combiners.ToList(has_defaults=False)


def done(pipeline, outputs, label="Done"):
    """The job's last step: a Flatten of its sinks' (small) outputs.

    Runners that compute only what the last step needs (the DaskRunner) then run
    every sink.
    """
    return tuple(outputs) | label >> beam.Flatten(pipeline=pipeline)


def shard_name(prefix, shard, num_shards, suffix):
    """`<prefix>-SSSSS-of-NNNNN<suffix>`, as Beam's text sinks name shards."""
    return f"{prefix}-{shard:05d}-of-{num_shards:05d}{suffix}"


def shards_for_bytes(total_bytes, bytes_per_shard=64 << 20):
    """A shard count from an input size: one per `bytes_per_shard`, at least one."""
    return max(1, math.ceil(total_bytes / bytes_per_shard))


@contextlib.contextmanager
def create_atomically(path, **create_kwargs):
    """`FileSystems.create(path)` that shows the file under `path` only once complete.

    The bytes go to a hidden file in the same folder, renamed to `path` when the
    block ends without error: a reader globbing the outputs, or a rerun after a
    crash or a full disk, never finds a half-written file under the final name. On
    an error the hidden file is deleted and an `OSError` naming `path` is raised.
    The hidden name keeps the file's suffix, so `.gz` still means gzip.

    Args:
        path: the final file.
        **create_kwargs: passed to `FileSystems.create` (mime_type, compression_type).
    """
    folder, name = os.path.split(path)
    temporary = os.path.join(folder, f".tmp-{uuid.uuid4().hex}-{name}")
    try:
        with FileSystems.create(temporary, **create_kwargs) as handle:
            yield handle
        if FileSystems.exists(path):
            FileSystems.delete([path])
        FileSystems.rename([temporary], [path])
    except BaseException as exc:
        try:
            if FileSystems.exists(temporary):
                FileSystems.delete([temporary])
        except Exception:  # The original error matters more.
            pass
        if isinstance(exc, OSError):
            raise OSError(exc.errno, f"cannot write {path}: {exc.strerror or exc}") from exc
        raise


class _WriteShardFn(beam.DoFn):
    def __init__(self, prefix, suffix, num_shards):
        self._prefix = prefix
        self._suffix = suffix
        self._num_shards = num_shards

    def process(self, shard_lines):
        shard, keyed_lines = shard_lines
        lines = sorted(kl for kl in keyed_lines if kl is not None)
        path = shard_name(self._prefix, shard, self._num_shards, self._suffix)
        # The filesystem compresses by extension (.gz: gzip, with no time stamp).
        with create_atomically(path, mime_type="text/plain") as handle:
            for _, line in lines:
                handle.write(line.encode("utf-8") + b"\n")
        yield path


class WriteTextShards(beam.PTransform):
    """`(sort_key, line)` pairs -> `<prefix>-SSSSS-of-NNNNN<suffix>` text files.

    Lines go to a shard by `stable_shard(sort_key)` and are written in `sort_key`
    order, so the files are the same whatever the runner, its workers and the order
    they deliver lines in; every shard gets a file, empty ones included. A `.gz`
    suffix writes gzip. Output: the paths written.

    Args:
        prefix: path prefix of the files.
        suffix: file name suffix. Defaults to "".
        num_shards: how many files. Defaults to 1.
    """

    def __init__(self, prefix, suffix="", num_shards=1):
        super().__init__()
        if num_shards < 1:
            raise ValueError(f"num_shards must be positive; got {num_shards}")
        self._prefix = prefix
        self._suffix = suffix
        self._num_shards = num_shards

    def expand(self, pcoll):
        n = self._num_shards
        keyed = pcoll | "KeyByShard" >> beam.Map(lambda kl: (stable_shard(kl[0], n), kl))
        markers = pcoll.pipeline | "ShardMarkers" >> beam.Create([(shard, None) for shard in range(n)])
        return ((keyed, markers)
                | "MergeMarkers" >> beam.Flatten()
                | "GroupByShard" >> beam.GroupByKey()
                | "WriteShard" >> beam.ParDo(_WriteShardFn(self._prefix, self._suffix, n)))


# --- statistics shared by the jobs ------------------------------------------------


def write_json(value, path):
    """Writes `value` as JSON to `path` through Beam's filesystems; returns `path`.

    The file is written under a temporary name next to `path` and then renamed, so a
    reader (or a rerun after a crash) sees either the whole old file or the whole new
    one, never a truncated one.
    """
    text = json.dumps(value, indent=2, sort_keys=True).encode("utf-8")
    temporary = f"{path}.tmp-{uuid.uuid4().hex}"
    with FileSystems.create(temporary, mime_type="application/json") as handle:
        handle.write(text)
    try:
        FileSystems.rename([temporary], [path])
    except Exception:
        if FileSystems.exists(temporary):
            FileSystems.delete([temporary])
        raise
    return path


def read_json(path):
    """Reads a JSON file through Beam's filesystems."""
    with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as handle:
        return json.loads(handle.read().decode("utf-8"))


class SumCounts(beam.CombineFn):
    """Sums dicts of counts (per-file or per-bundle statistics) into one dict."""

    def create_accumulator(self):
        return collections.Counter()

    def add_input(self, accumulator, element):
        accumulator.update(element)
        return accumulator

    def merge_accumulators(self, accumulators):
        total = collections.Counter()
        for accumulator in accumulators:
            total.update(accumulator)
        return total

    def extract_output(self, accumulator):
        return dict(sorted(accumulator.items()))


def increment_counters(namespace, stats):
    """Adds `stats` to the Beam counters of `namespace`."""
    for name, value in stats.items():
        if value:
            Metrics.counter(namespace, name).inc(value)
