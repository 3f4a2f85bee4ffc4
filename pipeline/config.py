"""Pipeline configuration: one frozen dataclass, from flags and an optional YAML/JSON file.

Known flags are parsed first; everything else (e.g. `--runner=FlinkRunner ...`) is
returned untouched for Beam's `PipelineOptions`. A `--config FILE` (YAML or JSON with
the same keys as the flags) is applied first and flags given on the command line win.
"""

import argparse
import dataclasses
import json
import os


class PipelineConfigError(ValueError):
    """A config file or flag value is invalid."""


@dataclasses.dataclass(frozen=True)
class PipelineConfig:
    """Everything the pipeline runs with (saved as `<pipeline_root>/config.json`).

    Args:
        pipeline_root: folder of all artifacts. Defaults to "runs/default".
        corpus: glob of corpus files; None builds the embedded default. Defaults to None.
        task: fine-tuning task, one of `keras_bert.tasks.TASKS`: classification, pair,
            regression, ner, squad1, squad2. Defaults to "classification".
        train, dev, test: task files in any format TaskData reads (TSV/CSV/JSONL text
            tasks, CoNLL-2003 or JSONL for ner, SQuAD JSON for squad1/squad2); train
            and dev go together, test defaults to dev. None uses the embedded default
            (a classification task), which only `task=classification` can.
        init: a pre-trained checkpoint folder (HF, original or ours); skips pre-training.
        vocab: a given vocab.txt instead of learning one. Defaults to None.
        vocab_size: size of a learned vocabulary. Defaults to 8000.
        do_lower_case: uncased tokenization. Defaults to True.
        model: BertConfig preset or JSON file for pre-training. Defaults to "mini" (L4/H256).
        max_seq_length: tokens per sequence. Defaults to 128.
        max_predictions_per_seq: MLM predictions per sequence. Defaults to 20.
        masked_lm_prob: share of tokens masked. Defaults to 0.15.
        dupe_factor: masked copies of the corpus. Defaults to 3.
        short_seq_prob: share of shorter sequences. Defaults to 0.1.
        pretrain_steps: pre-training steps. Defaults to 600.
        pretrain_batch_size: Defaults to 32.
        pretrain_learning_rate: peak learning rate. Defaults to 2e-4 (1e-3 collapsed
            small models to the unigram solution in our runs).
        finetune_epochs: Defaults to 5.
        finetune_batch_size: Defaults to 16.
        finetune_learning_rate: Defaults to 3e-4.
        mixed_precision: none, bfloat16 or float16. Defaults to "none".
        strategy: tf.distribute strategy name. Defaults to "default".
        seed: every random choice derives from it. Defaults to 12345.
        data_fraction: share of the default data to use (small slices for tests). Defaults to 1.0.
        model_name: served model name. Defaults to "bert_classifier".
        serving_base: serving model base path. Defaults to `<pipeline_root>/serving`.
        bless_margin: how much the model's test metric must beat the task's trivial
            baseline by, in that metric's units (accuracy, MSE, entity F1, SQuAD F1 in
            percent; see `components.evaluate.BLESSING`). Defaults to 0.0.
        force: rerun this stage and every later one. Defaults to None.
        serve_check: start the model server and send one gRPC request at the end. Defaults to True.
    """

    pipeline_root: str = "runs/default"
    corpus: str = None
    task: str = "classification"
    train: str = None
    dev: str = None
    test: str = None
    init: str = None
    vocab: str = None
    vocab_size: int = 8000
    do_lower_case: bool = True
    model: str = "mini"
    max_seq_length: int = 128
    max_predictions_per_seq: int = 20
    masked_lm_prob: float = 0.15
    dupe_factor: int = 3
    short_seq_prob: float = 0.1
    pretrain_steps: int = 600
    pretrain_batch_size: int = 32
    pretrain_learning_rate: float = 2e-4
    finetune_epochs: int = 5
    finetune_batch_size: int = 16
    finetune_learning_rate: float = 3e-4
    mixed_precision: str = "none"
    strategy: str = "default"
    seed: int = 12345
    data_fraction: float = 1.0
    model_name: str = "bert_classifier"
    serving_base: str = None
    bless_margin: float = 0.0
    force: str = None
    serve_check: bool = True

    def __post_init__(self):
        if bool(self.train) != bool(self.dev):
            raise PipelineConfigError("--train and --dev go together")
        if self.test and not self.train:
            raise PipelineConfigError("--test needs --train and --dev (the embedded default "
                                      "task has its own test split)")
        if self.task != "classification" and not self.train:
            raise PipelineConfigError(f"--task {self.task} needs --train and --dev (and "
                                      "--test): the embedded default is a classification task")
        from keras_bert.tasks import TASKS  # (imports TensorFlow: after the cheap checks)
        if self.task not in TASKS:
            raise PipelineConfigError(f"--task {self.task}: expected one of {', '.join(TASKS)}")
        if not 0 < self.data_fraction <= 1:
            raise PipelineConfigError(f"data_fraction must be in (0, 1], got {self.data_fraction}")
        if self.mixed_precision not in ("none", "bfloat16", "float16"):
            raise PipelineConfigError(f"mixed_precision must be none, bfloat16 or float16")

    @property
    def serving_base_path(self):
        return self.serving_base or os.path.join(self.pipeline_root, "serving")

    def to_dict(self):
        return dataclasses.asdict(self)


_FIELDS = {f.name: f for f in dataclasses.fields(PipelineConfig)}


def _load_file(path):
    with open(path, encoding="utf-8") as f:
        text = f.read()
    if path.endswith((".yaml", ".yml")):
        import yaml
        values = yaml.safe_load(text)
    else:
        try:
            values = json.loads(text)
        except json.JSONDecodeError as e:
            raise PipelineConfigError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(values, dict):
        raise PipelineConfigError(f"{path}: expected a mapping of config keys")
    unknown = sorted(set(values) - set(_FIELDS))
    if unknown:
        raise PipelineConfigError(f"{path}: unknown key(s) {', '.join(unknown)}")
    return values


def _bool(text):
    if text.lower() in ("1", "true", "yes", "on"):
        return True
    if text.lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true/false, got {text!r}")


def parse_flags(argv=None):
    """argv → (PipelineConfig, Beam pipeline args, training strategy flag)."""
    parser = argparse.ArgumentParser(prog="python -m pipeline.run",
                                     description="BERT from raw corpus to a served model.")
    parser.add_argument("--config", default=None, help="YAML or JSON file of these flags")
    for name, field in _FIELDS.items():
        kind = {int: int, float: float, bool: _bool}.get(
            type(field.default) if field.default is not None else str, str)
        parser.add_argument(f"--{name}", type=kind, default=None)
    args, beam_args = parser.parse_known_args(argv)
    values = _load_file(args.config) if args.config else {}
    values.update({k: v for k, v in vars(args).items() if k != "config" and v is not None})
    try:
        config = PipelineConfig(**values)
    except TypeError as e:
        raise PipelineConfigError(str(e)) from None
    return config, beam_args
