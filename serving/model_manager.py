"""Model versions on disk -> loaded SavedModels, with hot swap, status and labels.

A model is a base path holding integer version folders (`BASE/1/`, `BASE/2/`, ...),
each a SavedModel. The manager polls the base paths, loads the versions the
model's version policy asks for (default: the latest), warms each one up, and only
then makes it AVAILABLE; versions no longer wanted are unloaded after the new ones
are available, so a model never goes dark during a rollover. Requests hold a
reference to the `Servable` they resolved, so unloading never breaks one in flight.

A version that fails to load is reported (state END with the error) and skipped:
the policy falls back to the next version, so the last good one keeps serving. It
is retried when the files of its folder change.

Example:
    >>> config = single_model_config("bert", "/models/bert")
    >>> manager = ModelManager(config)
    >>> manager.poll_once()
    >>> servable = manager.resolve("bert")
"""

import dataclasses
import logging
import os
import threading

import grpc
import tensorflow as tf

try:  # Registers the tensorflow-text ops that raw-text BERT exports use, as the stock
    import tensorflow_text  # noqa: F401  server links them; models without them load anyway.
except ImportError:  # pragma: no cover - tensorflow-text is a project dependency
    tensorflow_text = None
from google.protobuf import message, text_format
from tensorflow.core.protobuf import saved_model_pb2
from tensorflow_serving.config import model_server_config_pb2

from serving.errors import ServingError, from_exception

log = logging.getLogger("serving")

# Stock state names (tensorflow_serving/apis/get_model_status.proto).
LOADING, AVAILABLE, UNLOADING, END = "LOADING", "AVAILABLE", "UNLOADING", "END"


def parse_model_config_text(text, source="<model config>"):
    """Parses a text-format `ModelServerConfig` and checks it.

    Args:
        text: the text proto, e.g. `model_config_list { config { name: "m" ... } }`.
        source: where the text came from, for error messages. Defaults to a
            placeholder.

    Returns:
        A `model_server_config_pb2.ModelServerConfig`.

    Raises:
        ServingError: INVALID_ARGUMENT if the text does not parse or the config
            is not one this server can serve.
    """
    config = model_server_config_pb2.ModelServerConfig()
    try:
        text_format.Parse(text, config)
    except text_format.ParseError as exc:
        raise ServingError(grpc.StatusCode.INVALID_ARGUMENT,
                           f"{source}: not a ModelServerConfig text proto: {exc}") from exc
    validate_config(config, source)
    return config


def read_model_config_file(path):
    """Reads and parses a `--model_config_file`; see `parse_model_config_text`."""
    with tf.io.gfile.GFile(path, "r") as f:
        return parse_model_config_text(f.read(), source=path)


def single_model_config(name, base_path):
    """Returns the config the `--model_name/--model_base_path` flags stand for.

    Args:
        name: the model name clients ask for.
        base_path: the folder holding integer version folders.

    Returns:
        A `ModelServerConfig` with one model and the default (latest) policy.
    """
    config = model_server_config_pb2.ModelServerConfig()
    model = config.model_config_list.config.add()
    model.name = name
    model.base_path = base_path
    model.model_platform = "tensorflow"
    validate_config(config, "--model_name/--model_base_path")
    return config


def validate_config(config, source="<model config>"):
    """Raises INVALID_ARGUMENT unless `config` is a list of distinct TensorFlow models."""
    if config.WhichOneof("config") == "custom_model_config":
        raise ServingError(grpc.StatusCode.INVALID_ARGUMENT,
                           f"{source}: custom_model_config is not supported; use model_config_list")
    names = set()
    for model in config.model_config_list.config:
        if not model.name:
            raise ServingError(grpc.StatusCode.INVALID_ARGUMENT, f"{source}: a model has no name")
        if model.name in names:
            raise ServingError(grpc.StatusCode.INVALID_ARGUMENT,
                               f"{source}: model name {model.name!r} appears twice")
        names.add(model.name)
        if not model.base_path:
            raise ServingError(grpc.StatusCode.INVALID_ARGUMENT,
                               f"{source}: model {model.name!r} has no base_path")
        if model.model_platform not in ("", "tensorflow"):
            raise ServingError(grpc.StatusCode.INVALID_ARGUMENT,
                               f"{source}: model {model.name!r}: model_platform "
                               f"{model.model_platform!r} is not supported (only 'tensorflow')")


def read_signature_defs(export_dir, tags):
    """Returns the `SignatureDef`s of the meta graph tagged exactly `tags`.

    `tf.saved_model.load` does not expose method names or the signature protos, so
    they are read from `saved_model.pb` (or `.pbtxt`) directly, as the stock
    server does.

    Args:
        export_dir: a SavedModel folder.
        tags: iterable of meta graph tags, e.g. `["serve"]`.

    Returns:
        dict signature name -> `SignatureDef` proto.
    """
    saved_model = saved_model_pb2.SavedModel()
    pb_path = os.path.join(export_dir, "saved_model.pb")
    pbtxt_path = os.path.join(export_dir, "saved_model.pbtxt")
    if tf.io.gfile.exists(pb_path):
        with tf.io.gfile.GFile(pb_path, "rb") as f:
            data = f.read()
        try:
            saved_model.ParseFromString(data)
        except message.DecodeError as exc:
            raise ServingError(grpc.StatusCode.DATA_LOSS,
                               f"Cannot parse {pb_path} as a SavedModel proto: {exc}") from exc
    elif tf.io.gfile.exists(pbtxt_path):
        with tf.io.gfile.GFile(pbtxt_path, "r") as f:
            try:
                text_format.Parse(f.read(), saved_model)
            except text_format.ParseError as exc:
                raise ServingError(grpc.StatusCode.DATA_LOSS,
                                   f"Cannot parse {pbtxt_path} as a SavedModel proto: {exc}") from exc
    else:
        raise ServingError(grpc.StatusCode.NOT_FOUND,
                           f"SavedModel file does not exist at: {export_dir}/{{saved_model.pbtxt|saved_model.pb}}")
    wanted = set(tags)
    for meta_graph in saved_model.meta_graphs:
        if set(meta_graph.meta_info_def.tags) == wanted:
            return dict(meta_graph.signature_def)
    found = [sorted(m.meta_info_def.tags) for m in saved_model.meta_graphs]
    raise ServingError(grpc.StatusCode.NOT_FOUND,
                       f"{export_dir}: no meta graph with tags {sorted(wanted)}; found {found}")


class Servable:
    """One loaded version of a model: the SavedModel plus its signatures.

    Args:
        name: model name.
        version: integer version.
        path: the version folder.
        module: the object `tf.saved_model.load` returned (kept alive here).
        signature_defs: dict name -> `SignatureDef` from the meta graph.
    """

    def __init__(self, name, version, path, module, signature_defs):
        self.name = name
        self.version = version
        self.path = path
        self.module = module
        self.signature_defs = signature_defs
        self.functions = dict(module.signatures)

    def has_signature(self, signature_name):
        """Whether `signature_name` is a callable signature of this version."""
        return signature_name in self.signature_defs and signature_name in self.functions

    def signature(self, signature_name):
        """Returns `(signature_def, concrete_function)` of a callable signature.

        Raises:
            ServingError: FAILED_PRECONDITION if the model has no such signature, with
                the stock server's Predict message (Classify, Regress and REST check
                `has_signature` first and word it as the stock server does there).
        """
        if not self.has_signature(signature_name):
            raise ServingError(grpc.StatusCode.FAILED_PRECONDITION,
                               f'Serving signature key "{signature_name}" not found.')
        return self.signature_defs[signature_name], self.functions[signature_name]


def load_servable(name, version, path, tags=("serve",)):
    """Loads one version folder with `tf.saved_model.load`.

    Args:
        name: model name.
        version: integer version.
        path: the version folder.
        tags: meta graph tags. Defaults to ("serve",).

    Returns:
        A `Servable`.
    """
    signature_defs = read_signature_defs(path, tags)
    module = tf.saved_model.load(path, tags=list(tags))
    return Servable(name, version, path, module, signature_defs)


def list_versions(base_path):
    """Returns {version: folder} for the integer-named folders under `base_path`."""
    versions = {}
    for entry in tf.io.gfile.listdir(base_path):
        entry = entry.rstrip("/")
        if entry.isdigit() and tf.io.gfile.isdir(os.path.join(base_path, entry)):
            versions[int(entry)] = os.path.join(base_path, entry)
    return versions


def folder_fingerprint(path):
    """Returns a cheap summary (names, sizes, mtimes) that changes when a folder's files do."""
    items = []
    try:
        for root, _, files in tf.io.gfile.walk(path):
            for name in files:
                stat = tf.io.gfile.stat(os.path.join(root, name))
                items.append((os.path.relpath(os.path.join(root, name), path), stat.length, stat.mtime_nsec))
    except tf.errors.OpError:
        return None
    return tuple(sorted(items))


def desired_versions(model_config, on_disk):
    """Returns the versions the model's version policy wants, given those available.

    Args:
        model_config: a `ModelConfig` (its `model_version_policy`).
        on_disk: iterable of loadable version numbers.

    Returns:
        set of version numbers.
    """
    policy = model_config.model_version_policy
    choice = policy.WhichOneof("policy_choice")
    ordered = sorted(on_disk, reverse=True)
    if choice == "all":
        return set(ordered)
    if choice == "specific":
        return set(policy.specific.versions) & set(ordered)
    num = policy.latest.num_versions if choice == "latest" and policy.latest.num_versions else 1
    return set(ordered[:num])


@dataclasses.dataclass
class VersionStatus:
    """What GetModelStatus reports for one version."""

    version: int
    state: str
    error_code: grpc.StatusCode = grpc.StatusCode.OK
    error_message: str = ""


class _Model:
    """Mutable state of one configured model (guarded by the manager's lock)."""

    def __init__(self, config):
        self.config = config
        self.servables = {}  # version -> Servable, AVAILABLE ones only
        self.status = {}  # version -> VersionStatus, every version ever attempted
        self.failed = {}  # version -> folder fingerprint at the failed attempt
        self.last_warning = None


class ModelManager:
    """Loads, swaps and resolves the served models.

    Args:
        config: a `ModelServerConfig` (`model_config_list`).
        tags: SavedModel meta graph tags to load. Defaults to ("serve",).
        warmup: callable(servable) run after loading and before the version becomes
            AVAILABLE (raises to fail the load). Defaults to None (no warm-up).
        metrics: a `serving.metrics.Metrics`, or None. Defaults to None.
    """

    def __init__(self, config, tags=("serve",), warmup=None, metrics=None):
        validate_config(config)
        self._tags = tuple(tags)
        self._warmup = warmup
        self._metrics = metrics
        self._lock = threading.Lock()  # guards self._models and each _Model
        self._poll_lock = threading.Lock()  # one poll / reload at a time
        self._models = {m.name: _Model(m) for m in config.model_config_list.config}
        self._stop = threading.Event()
        self._thread = None

    # ---- lifecycle -------------------------------------------------------------

    def poll_once(self):
        """Scans every base path once and loads/unloads to match the policies."""
        with self._poll_lock:
            with self._lock:
                models = list(self._models.values())
            for model in models:
                try:
                    self._sync_model(model)
                except Exception:  # A poll must never kill the poller.
                    log.exception("Polling model %s failed", model.config.name)

    def start_polling(self, interval_s, config_file=None, config_interval_s=0):
        """Polls every `interval_s` seconds in a daemon thread (no thread if <= 0).

        Args:
            interval_s: seconds between base-path scans.
            config_file: a model config file to re-read, or None. Defaults to None.
            config_interval_s: seconds between re-reads of `config_file` (<= 0:
                never). Defaults to 0.
        """
        if interval_s <= 0 and not (config_file and config_interval_s > 0):
            return
        tick = min(t for t in (interval_s, config_interval_s) if t > 0)

        def loop():
            since_poll = since_config = 0.0
            while not self._stop.wait(tick):
                since_poll += tick
                since_config += tick
                if config_file and config_interval_s > 0 and since_config >= config_interval_s:
                    since_config = 0.0
                    self._reread_config(config_file)
                if interval_s > 0 and since_poll >= interval_s:
                    since_poll = 0.0
                    self.poll_once()

        self._thread = threading.Thread(target=loop, name="model-poller", daemon=True)
        self._thread.start()

    def stop(self):
        """Stops the poller thread (loaded models stay loaded)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)

    def reload_config(self, config):
        """Replaces the served model list, as ModelService.HandleReloadConfigRequest.

        Models that left the list are unloaded; new ones are loaded before this
        returns; kept ones pick up their new policy and labels.

        Args:
            config: the new `ModelServerConfig`.

        Raises:
            ServingError: INVALID_ARGUMENT for a config this server cannot serve.
        """
        validate_config(config, "ReloadConfigRequest")
        with self._poll_lock:
            removed = []
            with self._lock:
                new_models = {}
                for model_config in config.model_config_list.config:
                    old = self._models.get(model_config.name)
                    if old is not None and old.config.base_path == model_config.base_path:
                        old.config = model_config
                        new_models[model_config.name] = old
                    else:
                        if old is not None:
                            removed.append(old)
                        new_models[model_config.name] = _Model(model_config)
                removed.extend(m for n, m in self._models.items() if n not in new_models)
                self._models = new_models
            for model in removed:
                self._unload(model, list(model.servables))
        self.poll_once()

    def _reread_config(self, path):
        try:
            config = read_model_config_file(path)
        except Exception as exc:  # Keep serving the old config.
            log.error("Re-reading model config %s failed: %s", path, exc)
            return
        with self._lock:
            current = [m.config for m in self._models.values()]
        if list(config.model_config_list.config) != current:
            log.info("Model config file %s changed; reloading", path)
            self.reload_config(config)

    # ---- loading ---------------------------------------------------------------

    def _sync_model(self, model):
        name, base_path = model.config.name, model.config.base_path
        try:
            on_disk = list_versions(base_path)
        except tf.errors.OpError as exc:
            self._warn_once(model, f"Cannot list base path {base_path} of model {name}: {exc}")
            return
        if not on_disk:
            self._warn_once(model, f"No versions of servable {name} found under base path {base_path}")
        else:
            model.last_warning = None
        while True:
            loadable = []
            for version in on_disk:
                if version in model.failed:
                    if folder_fingerprint(on_disk[version]) == model.failed[version]:
                        continue
                    del model.failed[version]  # Its files changed: try again.
                loadable.append(version)
            wanted = desired_versions(model.config, loadable)
            to_load = sorted((v for v in wanted if v not in model.servables), reverse=True)
            if all(self._load(model, v, on_disk[v]) for v in to_load):
                break
            # A load failed: recompute, so the policy falls back to another version.
        self._unload(model, [v for v in model.servables if v not in wanted])

    @staticmethod
    def _warn_once(model, message):
        # Polls repeat every second or so: say it when it starts, not each time.
        if model.last_warning != message:
            log.warning("%s", message)
            model.last_warning = message

    def _set_status(self, model, version, state, error=None):
        with self._lock:
            model.status[version] = VersionStatus(
                version, state,
                error.code if error else grpc.StatusCode.OK,
                error.message if error else "")

    def _load(self, model, version, path):
        name = model.config.name
        log.info("Loading servable: {name: %s version: %d} from %s", name, version, path)
        self._set_status(model, version, LOADING)
        try:
            servable = load_servable(name, version, path, self._tags)
            if self._warmup is not None:
                self._warmup(servable)
        except Exception as exc:
            error = from_exception(exc)
            if path not in error.message:
                # Some load errors ("Read less bytes than requested") name no file.
                error = ServingError(error.code, f"{error.message} (loading {path})")
            log.error("Loading servable: {name: %s version: %d} failed: %s", name, version, error)
            model.failed[version] = folder_fingerprint(path)
            self._set_status(model, version, END, error)
            if self._metrics:
                self._metrics.model_load_count.inc(model_name=name, status=error.code.name)
            return False
        with self._lock:
            model.servables[version] = servable
            model.status[version] = VersionStatus(version, AVAILABLE)
        log.info("Successfully loaded servable version {name: %s version: %d}", name, version)
        if self._metrics:
            self._metrics.model_load_count.inc(model_name=name, status="OK")
            self._metrics.available_versions.set(len(model.servables), model_name=name)
        return True

    def _unload(self, model, versions):
        for version in versions:
            self._set_status(model, version, UNLOADING)
            with self._lock:
                # In-flight requests keep their own reference; TF frees the
                # version when the last one finishes.
                model.servables.pop(version, None)
                model.status[version] = VersionStatus(version, END)
            log.info("Unloaded servable version {name: %s version: %d}", model.config.name, version)
        if versions and self._metrics:
            self._metrics.available_versions.set(len(model.servables), model_name=model.config.name)

    # ---- queries ---------------------------------------------------------------

    def model_names(self):
        """Returns the configured model names."""
        with self._lock:
            return sorted(self._models)

    @staticmethod
    def _label_version(model, label):
        labels = dict(model.config.version_labels) if model is not None else {}
        if label not in labels:
            # The stock ServerCore::GetModelVersionForLabel, for unknown models too.
            raise ServingError(grpc.StatusCode.INVALID_ARGUMENT,
                               f"Unrecognized servable version label: {label}")
        return labels[label]

    def resolve(self, name, version=None, label=None):
        """Returns the `Servable` a request for (name, version or label) is served by.

        Args:
            name: model name.
            version: an integer version, or None for the latest AVAILABLE one.
                Defaults to None.
            label: a version label from the config, or None. Defaults to None.

        Raises:
            ServingError: NOT_FOUND for an unknown model or version ("Servable not
                found for request: Latest(name)" / "Specific(name, version)"),
                INVALID_ARGUMENT for an unknown label, as the stock server.
        """
        with self._lock:
            model = self._models.get(name)
            if label:
                version = self._label_version(model, label)
            if model is None or not model.servables:
                if version is None:
                    raise ServingError(grpc.StatusCode.NOT_FOUND,
                                       f"Servable not found for request: Latest({name})")
                raise ServingError(grpc.StatusCode.NOT_FOUND,
                                   f"Servable not found for request: Specific({name}, {version})")
            if version is None:
                return model.servables[max(model.servables)]
            servable = model.servables.get(version)
            if servable is None:
                raise ServingError(grpc.StatusCode.NOT_FOUND,
                                   f"Servable not found for request: Specific({name}, {version})")
            return servable

    def status(self, name, version=None, label=None):
        """Returns the `VersionStatus` list GetModelStatus reports, newest first.

        Args:
            name: model name.
            version: only this version, or None for all. Defaults to None.
            label: only the version this label points to. Defaults to None.

        Raises:
            ServingError: NOT_FOUND for an unknown model or version.
        """
        with self._lock:
            model = self._models.get(name)
            if model is None or not model.status:
                raise ServingError(grpc.StatusCode.NOT_FOUND,
                                   f"Could not find any versions of model {name}")
            if label:
                version = self._label_version(model, label)
            if version is None:
                return [dataclasses.replace(model.status[v]) for v in sorted(model.status, reverse=True)]
            if version not in model.status:
                raise ServingError(grpc.StatusCode.NOT_FOUND,
                                   f"Could not find version {version} of model {name}")
            return [dataclasses.replace(model.status[version])]
