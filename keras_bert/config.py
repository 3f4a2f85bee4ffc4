"""`BertConfig`: the model's hyper-parameters, with the names of `bert_config.json`."""

import dataclasses
import json
import os

import tensorflow as tf

_UNCASED_VOCAB_SIZE = 30522


class ConfigError(ValueError):
    """A config file or field is missing, malformed or inconsistent."""


@dataclasses.dataclass(frozen=True)
class BertConfig:
    """Hyper-parameters of a BERT encoder.

    Field names are those of the original `bert_config.json` (shared by Hugging
    Face's `config.json`), plus `do_lower_case`, which is stored with the model so a
    tokenizer is never configured by guessing from a path.

    Args:
        vocab_size: WordPiece vocabulary size. Defaults to 30522.
        hidden_size: width of every layer. Defaults to 768.
        num_hidden_layers: Transformer layers. Defaults to 12.
        num_attention_heads: heads per attention layer. Defaults to 12.
        intermediate_size: feed-forward width. Defaults to 3072.
        hidden_act: `gelu` (erf), `gelu_new` / `gelu_tanh` (tanh approximation),
            `relu`, `silu`/`swish`, `tanh`. Defaults to "gelu".
        hidden_dropout_prob: dropout on embeddings and sub-layer outputs. Defaults to 0.1.
        attention_probs_dropout_prob: dropout on attention weights. Defaults to 0.1.
        max_position_embeddings: longest sequence. Defaults to 512.
        type_vocab_size: number of segment ids. Defaults to 2.
        initializer_range: stddev of the truncated-normal initializer. Defaults to 0.02.
        layer_norm_eps: LayerNorm epsilon. Defaults to 1e-12.
        do_lower_case: whether the vocabulary is uncased. Defaults to True.

    Example:
        >>> config = BertConfig.preset("tiny")
        >>> config.to_json_file("/tmp/bert_config.json")
    """

    vocab_size: int = _UNCASED_VOCAB_SIZE
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    initializer_range: float = 0.02
    layer_norm_eps: float = 1e-12
    do_lower_case: bool = True

    def __post_init__(self):
        positive = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                    "intermediate_size", "max_position_embeddings", "type_vocab_size")
        for name in positive:
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ConfigError(f"BertConfig.{name} must be a positive integer, got {value!r}")
        if self.hidden_size % self.num_attention_heads:
            raise ConfigError(
                f"BertConfig.hidden_size ({self.hidden_size}) must be divisible by "
                f"num_attention_heads ({self.num_attention_heads})")
        for name in ("hidden_dropout_prob", "attention_probs_dropout_prob"):
            value = getattr(self, name)
            if not 0.0 <= value < 1.0:
                raise ConfigError(f"BertConfig.{name} must be in [0, 1), got {value!r}")

    @property
    def head_size(self):
        return self.hidden_size // self.num_attention_heads

    def replace(self, **changes):
        """Returns a copy with some fields changed."""
        return dataclasses.replace(self, **changes)

    def to_dict(self):
        return dataclasses.asdict(self)

    def to_json_string(self):
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

    def to_json_file(self, path):
        """Writes the config as `bert_config.json`-style JSON (any tf.io.gfile path)."""
        with tf.io.gfile.GFile(path, "w") as f:
            f.write(self.to_json_string())

    @classmethod
    def from_dict(cls, values, source="<dict>", **overrides):
        """Builds a config from a `bert_config.json` / HF `config.json` dict.

        Keys that are not config fields (HF's `architectures`, `model_type`, ...)
        are ignored; HF's `layer_norm_epsilon` spelling is accepted.

        Args:
            values: the parsed JSON object.
            source: where it came from, for error messages. Defaults to "<dict>".
            **overrides: fields to set regardless of `values`.
        """
        if not isinstance(values, dict):
            raise ConfigError(f"{source}: expected a JSON object, got {type(values).__name__}")
        values = dict(values)
        if "layer_norm_eps" not in values and "layer_norm_epsilon" in values:
            values["layer_norm_eps"] = values["layer_norm_epsilon"]
        fields = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: v for k, v in values.items() if k in fields}
        kwargs.update(overrides)
        required = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                    "intermediate_size")
        missing = [k for k in required if k not in kwargs]
        if missing:
            raise ConfigError(f"{source}: missing required field(s) {', '.join(missing)}")
        try:
            return cls(**kwargs)
        except ConfigError as e:
            raise ConfigError(f"{source}: {e}") from None
        except TypeError as e:
            raise ConfigError(f"{source}: {e}") from None

    @classmethod
    def from_json_file(cls, path, **overrides):
        """Reads `bert_config.json` (original) or `config.json` (Hugging Face)."""
        if not tf.io.gfile.exists(path):
            raise ConfigError(f"{path}: config file not found")
        with tf.io.gfile.GFile(path, "r") as f:
            text = f.read()
        try:
            values = json.loads(text)
        except json.JSONDecodeError as e:
            raise ConfigError(f"{path}: not valid JSON ({e})") from None
        return cls.from_dict(values, source=path, **overrides)

    @classmethod
    def preset(cls, name, **overrides):
        """Returns a named preset (see `PRESETS`), e.g. "tiny", "base", "L4_H256"."""
        key = name.lower()
        if key not in PRESETS:
            raise ConfigError(f"unknown BertConfig preset {name!r}; known: {', '.join(sorted(PRESETS))}")
        return cls(**{**PRESETS[key], **overrides})


def _shape(layers, hidden):
    return {"num_hidden_layers": layers, "hidden_size": hidden,
            "num_attention_heads": hidden // 64, "intermediate_size": 4 * hidden}


# The 24 compact models of the original release ("Well-Read Students Learn Better"),
# named L{layers}_H{hidden}, plus the paper's base and large and the usual aliases.
PRESETS = {f"l{l}_h{h}": _shape(l, h) for l in (2, 4, 6, 8, 10, 12) for h in (128, 256, 512, 768)}
PRESETS.update({
    "tiny": PRESETS["l2_h128"],
    "mini": PRESETS["l4_h256"],
    "small": PRESETS["l4_h512"],
    "medium": PRESETS["l8_h512"],
    "base": PRESETS["l12_h768"],
    "large": {"num_hidden_layers": 24, "hidden_size": 1024, "num_attention_heads": 16,
              "intermediate_size": 4096},
})


def resolve_config(name_or_path, **overrides):
    """A preset name or a JSON file path → `BertConfig`."""
    if name_or_path.lower() in PRESETS:
        return BertConfig.preset(name_or_path, **overrides)
    if os.path.isdir(name_or_path):
        for candidate in ("config.json", "bert_config.json"):
            path = os.path.join(name_or_path, candidate)
            if tf.io.gfile.exists(path):
                return BertConfig.from_json_file(path, **overrides)
    return BertConfig.from_json_file(name_or_path, **overrides)
