"""Read and write BERT checkpoints: Hugging Face, original google-research/bert, and ours.

All three formats are translated through one canonical naming, the Hugging Face
`BertFor*` state-dict names (`bert.encoder.layer.0.attention.self.query.weight`, ...)
with arrays in PyTorch orientation (a Linear weight is `(out, in)`).

Formats (a folder each):
- ``hf``: `config.json`, `vocab.txt`, `model.safetensors` (read: or `pytorch_model.bin`,
  read without PyTorch). Names with or without the `bert.` prefix, LayerNorm as
  `weight`/`bias` or `gamma`/`beta`.
- ``original``: `bert_config.json`, `vocab.txt`, `bert_model.ckpt.{index,data-*}` with
  TF1 variable names (`bert/encoder/layer_0/attention/self/query/kernel`); Adam slots
  and `global_step` are ignored.
- ``keras``: this project's own: `keras_bert_config.json` (BertConfig + heads),
  `vocab.txt`, `model.weights.safetensors` (canonical names, Keras orientation).

Loading reports every tensor by name: loaded, missing (initialized fresh) and unused;
missing encoder tensors are an error unless `strict=False`.

Example:
    >>> bert = load_pretrained("uncased_L-2_H-128_A-2/", heads="pretraining")
    >>> bert.model, bert.config, bert.vocab_path, bert.report
    >>> save_pretrained(bert.model, "/tmp/hf", format="hf", vocab_path=bert.vocab_path)
"""

import dataclasses
import io
import json
import logging
import os
import pickle
import re
import shutil
import zipfile

import numpy as np
import tensorflow as tf

from keras_bert.config import BertConfig
from keras_bert.encoder import BertEncoder
from keras_bert import heads as heads_lib

logger = logging.getLogger(__name__)

KERAS_CONFIG_FILE = "keras_bert_config.json"
KERAS_WEIGHTS_FILE = "model.weights.safetensors"
HF_CONFIG_FILE = "config.json"
HF_SAFETENSORS_FILE = "model.safetensors"
HF_TORCH_FILE = "pytorch_model.bin"
ORIGINAL_CONFIG_FILE = "bert_config.json"
ORIGINAL_CKPT_PREFIX = "bert_model.ckpt"
VOCAB_FILE = "vocab.txt"
FORMAT_VERSION = 1

# Model architectures (what sits on the encoder), stored in our checkpoints' config.
# They are not task names: a task of `keras_bert.tasks.TASKS` names its head there
# (classification/pair/regression: "classifier", ner: "token_classifier",
# squad1/squad2: "span_qa").
HEADS = ("encoder", "pretraining", "mlm", "classifier", "token_classifier", "span_qa",
         "multiple_choice")


class CheckpointError(ValueError):
    """A checkpoint folder or tensor is missing, malformed or does not fit the model."""


@dataclasses.dataclass
class LoadReport:
    """What a load did, tensor by tensor (canonical names)."""

    source: str
    format: str
    loaded: list = dataclasses.field(default_factory=list)
    missing: list = dataclasses.field(default_factory=list)
    unused: list = dataclasses.field(default_factory=list)
    ignored: list = dataclasses.field(default_factory=list)

    def summary(self):
        return (f"{self.source} ({self.format}): {len(self.loaded)} loaded, "
                f"{len(self.missing)} missing{_names(self.missing)}, "
                f"{len(self.unused)} unused{_names(self.unused)}, "
                f"{len(self.ignored)} ignored (optimizer state, buffers)")


def _names(names, limit=8):
    if not names:
        return ""
    shown = ", ".join(names[:limit])
    return f" [{shown}{', ...' if len(names) > limit else ''}]"


@dataclasses.dataclass
class Pretrained:
    """A loaded checkpoint: the Keras model, its config, its vocabulary and the report."""

    model: object
    config: BertConfig
    vocab_path: str
    report: LoadReport
    heads: str

    def tokenizer(self):
        """The matching `BertTokenizer` (vocabulary and casing from the checkpoint)."""
        from keras_bert.tokenizer import BertTokenizer
        return BertTokenizer.from_vocab(self.vocab_path, do_lower_case=self.config.do_lower_case)


# --------------------------------------------------------------------------------------
# Canonical names of a Keras model's variables.


def _dense(prefix, layer):
    return [(f"{prefix}.weight", layer.kernel, True), (f"{prefix}.bias", layer.bias, False)]


def _layer_norm(prefix, layer):
    return [(f"{prefix}.weight", layer.gamma, False), (f"{prefix}.bias", layer.beta, False)]


def encoder_variables(encoder, prefix="bert."):
    """[(canonical name, keras variable, is_linear_kernel)] for a `BertEncoder`."""
    out = [
        (f"{prefix}embeddings.word_embeddings.weight", encoder.token_embedding.embeddings, False),
        (f"{prefix}embeddings.position_embeddings.weight",
         encoder.embeddings.position_embeddings, False),
        (f"{prefix}embeddings.token_type_embeddings.weight",
         encoder.embeddings.token_type_embeddings, False),
    ]
    out += _layer_norm(f"{prefix}embeddings.LayerNorm", encoder.embeddings.layer_norm)
    for i, layer in enumerate(encoder.transformer_layers):
        base = f"{prefix}encoder.layer.{i}."
        att = layer.attention
        out += _dense(base + "attention.self.query", att.query)
        out += _dense(base + "attention.self.key", att.key)
        out += _dense(base + "attention.self.value", att.value)
        out += _dense(base + "attention.output.dense", att.output_dense)
        out += _layer_norm(base + "attention.output.LayerNorm", layer.attention_layer_norm)
        out += _dense(base + "intermediate.dense", layer.intermediate)
        out += _dense(base + "output.dense", layer.output_dense)
        out += _layer_norm(base + "output.LayerNorm", layer.output_layer_norm)
    out += _dense(f"{prefix}pooler.dense", encoder.pooler.dense)
    return out


def model_variables(model):
    """[(canonical name, variable, is_linear_kernel)] for an encoder or any task model."""
    if isinstance(model, BertEncoder):
        return encoder_variables(model)
    out = encoder_variables(model.encoder)
    if isinstance(model, heads_lib.BertPretrainingModel):
        mlm = model.mlm_head
        out += _dense("cls.predictions.transform.dense", mlm.transform)
        out += _layer_norm("cls.predictions.transform.LayerNorm", mlm.layer_norm)
        out.append(("cls.predictions.bias", mlm.output_bias, False))
        if model.use_nsp:
            out += _dense("cls.seq_relationship", model.nsp_head)
    elif isinstance(model, (heads_lib.BertClassifier, heads_lib.BertTokenClassifier,
                            heads_lib.BertMultipleChoice)):
        out += _dense("classifier", model.classifier)
    elif isinstance(model, heads_lib.BertSpanQA):
        out += _dense("qa_outputs", model.qa_outputs)
    else:
        raise CheckpointError(f"don't know the checkpoint names of {type(model).__name__}")
    return out


def heads_of(model):
    """(heads name, head kwargs) describing a model, as stored in our config file."""
    if isinstance(model, BertEncoder):
        return "encoder", {}
    if isinstance(model, heads_lib.BertPretrainingModel):
        return ("pretraining" if model.use_nsp else "mlm"), {}
    if isinstance(model, heads_lib.BertClassifier):
        return "classifier", {"num_classes": model.num_classes}
    if isinstance(model, heads_lib.BertTokenClassifier):
        return "token_classifier", {"num_classes": model.num_classes}
    if isinstance(model, heads_lib.BertMultipleChoice):
        return "multiple_choice", {"num_choices": model.num_choices}
    if isinstance(model, heads_lib.BertSpanQA):
        return "span_qa", {}
    raise CheckpointError(f"unknown model type {type(model).__name__}")


def build_model(config, heads="encoder", dtype=None, **head_kwargs):
    """Builds an encoder or task model for `config`.

    Args:
        config: a `BertConfig`.
        heads: one of `HEADS`. Defaults to "encoder".
        dtype: Keras dtype policy, e.g. "mixed_bfloat16". Defaults to None (float32).
        **head_kwargs: `num_classes`, `num_choices`, `dropout` as the head needs.
    """
    heads = heads or "encoder"
    if heads not in HEADS:
        raise CheckpointError(f"unknown heads {heads!r}; expected one of {', '.join(HEADS)}")
    encoder = BertEncoder.from_bert_config(config, dtype=dtype)
    if heads == "encoder":
        return encoder
    if heads in ("pretraining", "mlm"):
        return heads_lib.BertPretrainingModel(encoder, use_nsp=heads == "pretraining")
    if heads == "span_qa":
        return heads_lib.BertSpanQA(encoder)
    cls = {"classifier": heads_lib.BertClassifier,
           "token_classifier": heads_lib.BertTokenClassifier,
           "multiple_choice": heads_lib.BertMultipleChoice}[heads]
    needed = "num_choices" if heads == "multiple_choice" else "num_classes"
    if needed not in head_kwargs:
        raise CheckpointError(f"heads={heads!r} needs {needed}=...")
    return cls(encoder, **head_kwargs)


# --------------------------------------------------------------------------------------
# Name normalisation.

_IGNORED_HF = re.compile(r"(^|\.)(position_ids|token_type_ids)$|^cls\.predictions\.decoder\.weight$")


def normalize_hf_name(name):
    """Maps any HF BERT state-dict name to the canonical (`bert.`-prefixed) name."""
    name = re.sub(r"\.gamma$", ".weight", name)
    name = re.sub(r"\.beta$", ".bias", name)
    if name == "cls.predictions.decoder.bias":
        name = "cls.predictions.bias"
    if name.startswith(("embeddings.", "encoder.", "pooler.")):
        name = "bert." + name
    return name


_IGNORED_TF1 = re.compile(r"(^global_step$|/adam_[mv]$|/Adam(_1)?$|^good_steps$|^bad_steps$|"
                          r"^loss_scale$|/LAMB(_1)?$)")


def tf1_to_canonical(name):
    """Original TF1 variable name → (canonical name, needs transpose) or None if unknown."""
    name = name.split(":")[0]
    special = {
        "cls/predictions/output_bias": ("cls.predictions.bias", False),
        "cls/seq_relationship/output_weights": ("cls.seq_relationship.weight", False),
        "cls/seq_relationship/output_bias": ("cls.seq_relationship.bias", False),
        "output_weights": ("classifier.weight", False),
        "output_bias": ("classifier.bias", False),
        "cls/squad/output_weights": ("qa_outputs.weight", False),
        "cls/squad/output_bias": ("qa_outputs.bias", False),
    }
    if name in special:
        return special[name]
    if not name.startswith(("bert/", "cls/")):
        return None
    parts = name.split("/")
    transpose = False
    if parts[-1] == "kernel":
        parts[-1], transpose = "weight", True
    elif parts[-1] == "gamma":
        parts[-1] = "weight"
    elif parts[-1] == "beta":
        parts[-1] = "bias"
    elif parts[-1].endswith("_embeddings"):
        parts.append("weight")
    parts = [re.sub(r"^layer_(\d+)$", r"layer.\1", p) for p in parts]
    return ".".join(parts), transpose


def canonical_to_tf1(name):
    """Canonical name → (original TF1 name, needs transpose)."""
    special = {
        "cls.predictions.bias": "cls/predictions/output_bias",
        "cls.seq_relationship.weight": "cls/seq_relationship/output_weights",
        "cls.seq_relationship.bias": "cls/seq_relationship/output_bias",
        "classifier.weight": "output_weights",
        "classifier.bias": "output_bias",
        "qa_outputs.weight": "cls/squad/output_weights",
        "qa_outputs.bias": "cls/squad/output_bias",
    }
    if name in special:
        return special[name], False
    parts = name.split(".")
    joined = []
    i = 0
    while i < len(parts):
        if parts[i] == "layer" and i + 1 < len(parts) and parts[i + 1].isdigit():
            joined.append(f"layer_{parts[i + 1]}")
            i += 2
        else:
            joined.append(parts[i])
            i += 1
    last = joined[-1]
    if joined[-2].endswith("_embeddings") and last == "weight":
        return "/".join(joined[:-1]), False
    if joined[-2] == "LayerNorm":
        joined[-1] = "gamma" if last == "weight" else "beta"
        return "/".join(joined), False
    if last == "weight":
        joined[-1] = "kernel"
        return "/".join(joined), True
    return "/".join(joined), False


# --------------------------------------------------------------------------------------
# Readers: each returns {canonical name: np.ndarray in torch orientation}, ignored names.


def _read_safetensors(path):
    from safetensors.numpy import load_file
    try:
        return load_file(path)
    except Exception as e:  # safetensors raises its own error types
        raise CheckpointError(f"{path}: not a readable safetensors file ({e})") from None


class _TorchUnpickler(pickle.Unpickler):
    """Reads a PyTorch zip checkpoint into numpy without importing torch."""

    _DTYPES = {"FloatStorage": np.float32, "DoubleStorage": np.float64,
               "HalfStorage": np.float16, "BFloat16Storage": "bfloat16",
               "LongStorage": np.int64, "IntStorage": np.int32, "ShortStorage": np.int16,
               "CharStorage": np.int8, "ByteStorage": np.uint8, "BoolStorage": np.bool_}

    def __init__(self, file, archive, prefix):
        super().__init__(file)
        self._archive = archive
        self._prefix = prefix

    def find_class(self, module, name):
        if module == "torch._utils" and name in ("_rebuild_tensor_v2", "_rebuild_tensor"):
            return _rebuild_tensor
        if module == "torch._utils" and name == "_rebuild_parameter":
            return lambda data, requires_grad, hooks, *rest: data
        if module == "torch" and name in self._DTYPES:
            return name
        if module == "collections" and name == "OrderedDict":
            import collections
            return collections.OrderedDict
        if module == "torch" and name == "device":
            return str
        raise pickle.UnpicklingError(f"unsupported object {module}.{name} in a torch checkpoint")

    def persistent_load(self, pid):
        # ('storage', storage_type, key, location, numel)
        _, storage_type, key, _, _ = pid
        dtype = self._DTYPES[storage_type]
        if dtype == "bfloat16":
            import ml_dtypes
            dtype = ml_dtypes.bfloat16
        raw = self._archive.read(f"{self._prefix}/data/{key}")
        return np.frombuffer(raw, dtype=dtype)


def _rebuild_tensor(storage, offset, size, stride, *unused):
    if not size:
        return storage[offset:offset + 1].reshape(()).copy()
    itemsize = storage.dtype.itemsize
    view = np.lib.stride_tricks.as_strided(storage[offset:], shape=tuple(size),
                                           strides=tuple(s * itemsize for s in stride))
    return np.ascontiguousarray(view)


def _read_torch_bin(path):
    if not zipfile.is_zipfile(path):
        raise CheckpointError(
            f"{path}: legacy (pre-1.6) PyTorch serialization is not supported; "
            "re-save it with torch.save or convert it to safetensors")
    with zipfile.ZipFile(path) as archive:
        pkl = [n for n in archive.namelist() if n.endswith("/data.pkl") or n == "data.pkl"]
        if not pkl:
            raise CheckpointError(f"{path}: no data.pkl inside the PyTorch archive")
        prefix = pkl[0][: -len("/data.pkl")] if "/" in pkl[0] else ""
        state = _TorchUnpickler(io.BytesIO(archive.read(pkl[0])), archive, prefix).load()
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: expected a state dict, found {type(state).__name__}")
    return dict(state)


def _read_hf(folder):
    st, pt = os.path.join(folder, HF_SAFETENSORS_FILE), os.path.join(folder, HF_TORCH_FILE)
    if os.path.exists(st):
        raw = _read_safetensors(st)
    elif os.path.exists(pt):
        raw = _read_torch_bin(pt)
    else:
        raise CheckpointError(f"{folder}: neither {HF_SAFETENSORS_FILE} nor {HF_TORCH_FILE}")
    tensors, ignored = {}, []
    for name, value in raw.items():
        if _IGNORED_HF.search(name):
            ignored.append(name)
            continue
        tensors[normalize_hf_name(name)] = np.asarray(value)
    return tensors, ignored


def _find_tf1_prefix(folder):
    if os.path.exists(os.path.join(folder, ORIGINAL_CKPT_PREFIX + ".index")):
        return os.path.join(folder, ORIGINAL_CKPT_PREFIX)
    latest = tf.train.latest_checkpoint(folder)
    if latest:
        return latest
    indexes = sorted(f for f in os.listdir(folder) if f.endswith(".index"))
    if indexes:
        return os.path.join(folder, indexes[-1][: -len(".index")])
    raise CheckpointError(f"{folder}: no TF1 checkpoint ({ORIGINAL_CKPT_PREFIX}.index) found")


def _read_original(folder):
    prefix = _find_tf1_prefix(folder)
    try:
        reader = tf.train.load_checkpoint(prefix)
    except Exception as e:
        raise CheckpointError(f"{prefix}: unreadable TF checkpoint ({e})") from None
    tensors, ignored = {}, []
    for name in sorted(reader.get_variable_to_shape_map()):
        if _IGNORED_TF1.search(name):
            ignored.append(name)
            continue
        mapped = tf1_to_canonical(name)
        if mapped is None:
            tensors[name] = reader.get_tensor(name)  # reported as unused by name
            continue
        canonical, transpose = mapped
        value = reader.get_tensor(name)
        tensors[canonical] = value.T if transpose else value
    return tensors, ignored


def _read_keras(folder):
    path = os.path.join(folder, KERAS_WEIGHTS_FILE)
    if not os.path.exists(path):
        raise CheckpointError(f"{folder}: missing {KERAS_WEIGHTS_FILE}")
    raw = _read_safetensors(path)
    kernels = set(_read_json(os.path.join(folder, KERAS_CONFIG_FILE)).get("linear_kernels", []))
    # Stored in Keras orientation; convert the kernels to the canonical (torch) one.
    return {k: (v.T if k in kernels else v) for k, v in raw.items()}, []


def _read_json(path):
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        raise CheckpointError(f"{path}: file not found") from None
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{path}: not valid JSON ({e})") from None


def detect_format(folder):
    """'keras', 'hf' or 'original', from the files present; CheckpointError otherwise."""
    if not os.path.isdir(folder):
        raise CheckpointError(f"{folder}: not a directory")
    files = set(os.listdir(folder))
    if KERAS_CONFIG_FILE in files:
        return "keras"
    if HF_CONFIG_FILE in files and (HF_SAFETENSORS_FILE in files or HF_TORCH_FILE in files):
        return "hf"
    if ORIGINAL_CONFIG_FILE in files and any(f.endswith(".index") for f in files):
        return "original"
    raise CheckpointError(
        f"{folder}: not a checkpoint folder; expected {KERAS_CONFIG_FILE}, or {HF_CONFIG_FILE} + "
        f"{HF_SAFETENSORS_FILE}/{HF_TORCH_FILE}, or {ORIGINAL_CONFIG_FILE} + a TF1 checkpoint; "
        f"found: {', '.join(sorted(files)) or 'nothing'}")


def read_config(folder, format=None):
    """The `BertConfig` of a checkpoint folder, without reading its tensors.

    `do_lower_case` is the stored one, else read from the files that carry casing
    (`tokenizer_config.json`, else the vocabulary), as `read_checkpoint` does.

    Returns:
        (config: BertConfig, meta: dict with `heads`/`head_kwargs` for our format,
         format name).
    """
    fmt = format or detect_format(folder)
    vocab_lower = None
    meta = {}
    if fmt == "keras":
        stored = _read_json(os.path.join(folder, KERAS_CONFIG_FILE))
        config = BertConfig.from_dict(stored.get("bert_config"),
                                      source=os.path.join(folder, KERAS_CONFIG_FILE))
        meta = {"heads": stored.get("heads", "encoder"), "head_kwargs": stored.get("head_kwargs", {})}
    elif fmt == "hf":
        path = os.path.join(folder, HF_CONFIG_FILE)
        values = _read_json(path)
        if values.get("model_type", "bert") != "bert":
            raise CheckpointError(f"{path}: model_type is {values['model_type']!r}, not 'bert'")
        config = BertConfig.from_dict(values, source=path)
        vocab_lower = _tokenizer_lowercase(folder)
    elif fmt == "original":
        config = BertConfig.from_json_file(os.path.join(folder, ORIGINAL_CONFIG_FILE))
    else:
        raise CheckpointError(f"unknown checkpoint format {fmt!r}; use keras, hf or original")
    if fmt != "keras" and "do_lower_case" not in _raw_config(folder, fmt):
        # Casing is a property of the vocabulary; read it from the files that carry it,
        # never from the folder name.
        if vocab_lower is not None:
            config = config.replace(do_lower_case=vocab_lower)
        else:
            config = config.replace(do_lower_case=_vocab_looks_uncased(folder))
    return config, meta, fmt


def read_checkpoint(folder, format=None):
    """Reads a checkpoint folder.

    Returns:
        (config: BertConfig, tensors: {canonical name: array}, ignored: [names],
         meta: dict with `heads`/`head_kwargs` for our format, format name).
    """
    config, meta, fmt = read_config(folder, format)
    if fmt == "keras":
        tensors, ignored = _read_keras(folder)
    elif fmt == "hf":
        tensors, ignored = _read_hf(folder)
    else:
        tensors, ignored = _read_original(folder)
    return config, tensors, ignored, meta, fmt


def _raw_config(folder, fmt):
    name = HF_CONFIG_FILE if fmt == "hf" else ORIGINAL_CONFIG_FILE
    return _read_json(os.path.join(folder, name))


def _tokenizer_lowercase(folder):
    path = os.path.join(folder, "tokenizer_config.json")
    if os.path.exists(path):
        value = _read_json(path).get("do_lower_case")
        if isinstance(value, bool):
            return value
    return None


def _vocab_looks_uncased(folder):
    """True unless the vocabulary has upper-case word pieces (a cased vocabulary)."""
    path = os.path.join(folder, VOCAB_FILE)
    if not os.path.exists(path):
        return True
    with open(path, encoding="utf-8") as f:
        for line in f:
            token = line.strip()
            if token.startswith("[") and token.endswith("]"):
                continue
            if token != token.lower():
                return False
    return True


# --------------------------------------------------------------------------------------
# Assignment.


def _uses_pooler(model):
    """Whether `model`'s outputs depend on the pooled [CLS] vector."""
    if isinstance(model, (heads_lib.BertTokenClassifier, heads_lib.BertSpanQA)):
        return False
    if isinstance(model, heads_lib.BertPretrainingModel):
        return bool(model.use_nsp)
    return True


def assign_weights(model, tensors, source="<tensors>", fmt="?", strict=True, ignored=()):
    """Copies canonical-named arrays into `model`'s variables and reports by name.

    Args:
        model: a `BertEncoder` or task model (built).
        tensors: {canonical name: array in torch orientation}.
        source: where the arrays came from, for messages. Defaults to "<tensors>".
        fmt: format name for the report. Defaults to "?".
        strict: raise if an encoder tensor is missing. Defaults to True.
        ignored: names skipped on purpose (optimizer slots, buffers), for the report.
    """
    report = LoadReport(source=source, format=fmt, ignored=list(ignored))
    targets = model_variables(model)
    wanted = {name for name, _, _ in targets}
    for name, variable, is_kernel in targets:
        if name not in tensors:
            report.missing.append(name)
            continue
        value = np.asarray(tensors[name])
        if is_kernel:
            value = value.T
        if tuple(value.shape) != tuple(variable.shape):
            raise CheckpointError(
                f"{source}: tensor {name} has shape {tuple(value.shape)}, the model expects "
                f"{tuple(variable.shape)}{' (after transposing)' if is_kernel else ''}")
        variable.assign(value.astype(variable.dtype))
        report.loaded.append(name)
    report.unused = sorted(n for n in tensors if n not in wanted)
    missing_encoder = [n for n in report.missing if n.startswith("bert.")]
    if not _uses_pooler(model):
        # Token-classification and QA checkpoints (Hugging Face's
        # BertForTokenClassification/BertForQuestionAnswering) have no pooler, and
        # these heads never read it: it stays freshly initialised.
        missing_encoder = [n for n in missing_encoder if ".pooler." not in n]
    if strict and missing_encoder:
        raise CheckpointError(f"{source}: encoder tensor(s) missing from the checkpoint: "
                              f"{', '.join(missing_encoder)}")
    # A new task head missing and the pre-training heads unused are what fine-tuning
    # expects (the report says which); only encoder tensors missing are a warning.
    level = logging.WARNING if missing_encoder else logging.INFO
    logger.log(level, "loaded %s", report.summary())
    return report


def load_pretrained(path, heads=None, format=None, strict=True, dtype=None, **head_kwargs):
    """Loads a BERT checkpoint folder (HF, original or ours) into a Keras model.

    Args:
        path: the checkpoint folder.
        heads: which model to build: "encoder", "pretraining" (MLM+NSP), "mlm",
            "classifier", "token_classifier", "span_qa", "multiple_choice". Defaults to
            the heads stored in our own format, else "encoder".
        format: "hf", "original" or "keras". Defaults to detecting it from the files.
        strict: raise when encoder tensors are missing. Defaults to True.
        dtype: Keras dtype policy of the built model. Defaults to float32.
        **head_kwargs: e.g. `num_classes=3` for a classifier.

    Returns:
        A `Pretrained` with `.model`, `.config`, `.vocab_path`, `.report`, `.heads`.
    """
    config, tensors, ignored, meta, fmt = read_checkpoint(path, format)
    if heads is None:
        heads = meta.get("heads", "encoder")
        if not head_kwargs:
            head_kwargs = dict(meta.get("head_kwargs", {}))
    if heads in ("classifier", "token_classifier") and "num_classes" not in head_kwargs:
        if "classifier.weight" in tensors:
            head_kwargs["num_classes"] = int(tensors["classifier.weight"].shape[0])
    model = build_model(config, heads, dtype=dtype, **head_kwargs)
    report = assign_weights(model, tensors, source=path, fmt=fmt, strict=strict, ignored=ignored)
    vocab = os.path.join(path, VOCAB_FILE)
    return Pretrained(model=model, config=config, vocab_path=vocab if os.path.exists(vocab) else None,
                      report=report, heads=heads)


# --------------------------------------------------------------------------------------
# Writers.


def model_tensors(model):
    """{canonical name: array in torch orientation} of a model."""
    out = {}
    for name, variable, is_kernel in model_variables(model):
        value = np.asarray(variable.numpy() if hasattr(variable, "numpy") else variable)
        out[name] = np.ascontiguousarray(value.T if is_kernel else value).astype(np.float32)
    return out


_HF_ARCHITECTURES = {"encoder": "BertModel", "pretraining": "BertForPreTraining",
                     "mlm": "BertForMaskedLM", "classifier": "BertForSequenceClassification",
                     "token_classifier": "BertForTokenClassification",
                     "span_qa": "BertForQuestionAnswering",
                     "multiple_choice": "BertForMultipleChoice"}


def save_pretrained(model, path, format="keras", vocab_path=None):
    """Writes `model` as a checkpoint folder.

    Args:
        model: a `BertEncoder` or task model.
        path: output folder (created).
        format: "keras" (ours), "hf" (config.json + model.safetensors) or "original"
            (bert_config.json + TF1 checkpoint). Defaults to "keras".
        vocab_path: vocabulary to copy beside the weights. Defaults to None.
    """
    from safetensors.numpy import save_file
    os.makedirs(path, exist_ok=True)
    config = model.bert_config
    heads, head_kwargs = heads_of(model)
    tensors = model_tensors(model)
    if format == "keras":
        kernels = sorted(n for n, _, k in model_variables(model) if k)
        stored = {k: (np.ascontiguousarray(v.T) if k in kernels else v) for k, v in tensors.items()}
        save_file(stored, os.path.join(path, KERAS_WEIGHTS_FILE))
        meta = {"format": "keras_bert", "format_version": FORMAT_VERSION,
                "bert_config": config.to_dict(), "heads": heads, "head_kwargs": head_kwargs,
                "linear_kernels": kernels}
        with open(os.path.join(path, KERAS_CONFIG_FILE), "w") as f:
            json.dump(meta, f, indent=2, sort_keys=True)
    elif format == "hf":
        if heads == "encoder":  # HF BertModel checkpoints have no `bert.` prefix
            tensors = {k[len("bert."):]: v for k, v in tensors.items()}
        save_file(tensors, os.path.join(path, HF_SAFETENSORS_FILE), metadata={"format": "pt"})
        values = config.to_dict()
        values.update(model_type="bert", architectures=[_HF_ARCHITECTURES[heads]],
                      pad_token_id=0)
        if heads in ("classifier", "token_classifier"):
            values.update(id2label={str(i): f"LABEL_{i}" for i in range(head_kwargs["num_classes"])},
                          label2id={f"LABEL_{i}": i for i in range(head_kwargs["num_classes"])})
        with open(os.path.join(path, HF_CONFIG_FILE), "w") as f:
            json.dump(values, f, indent=2, sort_keys=True)
        with open(os.path.join(path, "tokenizer_config.json"), "w") as f:
            json.dump({"do_lower_case": config.do_lower_case, "tokenizer_class": "BertTokenizer"},
                      f, indent=2)
    elif format == "original":
        names, values = [], []
        for name, value in sorted(tensors.items()):
            tf1_name, transpose = canonical_to_tf1(name)
            names.append(tf1_name)
            values.append(tf.constant(value.T if transpose else value))
        prefix = os.path.join(path, ORIGINAL_CKPT_PREFIX)
        tf.raw_ops.SaveV2(prefix=prefix, tensor_names=names,
                          shape_and_slices=[""] * len(names), tensors=values)
        config.to_json_file(os.path.join(path, ORIGINAL_CONFIG_FILE))
        with open(os.path.join(path, "checkpoint"), "w") as f:
            f.write(f'model_checkpoint_path: "{ORIGINAL_CKPT_PREFIX}"\n'
                    f'all_model_checkpoint_paths: "{ORIGINAL_CKPT_PREFIX}"\n')
    else:
        raise CheckpointError(f"unknown checkpoint format {format!r}; use keras, hf or original")
    if vocab_path:
        shutil.copyfile(vocab_path, os.path.join(path, VOCAB_FILE))
    return path
