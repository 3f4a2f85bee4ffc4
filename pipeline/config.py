"""Pipeline configuration: one frozen dataclass, from flags and an optional YAML/JSON file.

Known flags are parsed first; everything else (e.g. `--runner=FlinkRunner ...`) must be
a Beam pipeline option and is returned untouched for Beam's `PipelineOptions` (a
misspelt or retired flag is a usage error: `components.cli.parse_with_beam_args`). A `--config FILE` (YAML or JSON with
the same keys as the flags) is applied first and flags given on the command line win.
Boolean flags take `--flag`, `--noflag` or `--flag=true|false`.
"""

import argparse
import dataclasses
import json
import os

from components.cli import add_bool_flag, parse_with_beam_args
from keras_bert import precision


# The shortest first-phase length of two-phase pre-training: a 16-token record still
# holds a sentence pair of a few words each and gets two masked positions.
MIN_PRETRAIN_SHORT_LENGTH = 16


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
        init_checkpoint: a pre-trained checkpoint folder (HF, original or ours); skips
            pre-training. Defaults to None.
        vocab: a given vocab.txt instead of learning one. Defaults to None.
        vocab_size: size of a learned vocabulary; a corpus with too few distinct
            words for it stops the Vocab stage. Defaults to 2856: the pieces seen at
            least 10 times in the embedded corpus (about 8,800 distinct words); give
            about 30,000 for a large corpus.
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
        pretrain_short_length: two-phase pre-training, the BERT paper's recipe:
            PretrainingData also writes the training records at this length, and
            Pretrain trains the first `pretrain_short_fraction` of its steps on them,
            the rest on the `max_seq_length` records (one optimizer and learning-rate
            schedule throughout). At least 16 and below `max_seq_length`; 0: one phase
            at `max_seq_length`. Defaults to `max_seq_length // 2` (64 at the
            default 128), or 0 where that is below 16.
        pretrain_short_fraction: share of `pretrain_steps` at `pretrain_short_length`,
            in [0, 1). Defaults to 0.9.
        finetune_epochs: Defaults to 5.
        finetune_batch_size: Defaults to 16.
        finetune_learning_rate: Defaults to 3e-4.
        mixed_precision: none, bfloat16, float16 (with loss scaling) or auto (bfloat16
            where the CPU has bfloat16 instructions, AVX512-BF16 or AMX-BF16, else
            none; decided once per run, printed, and saved in config.json); passed to
            Pretrain and Finetune. Defaults to "auto".
        group_by_length: Finetune sorts windows of this many training batches by
            length before cutting them into batches, so that a batch, cut to its
            longest sequence, holds little padding (0: batches of mixed lengths).
            Pre-training batches stay mixed: its records are mostly full-length.
            Defaults to 16.
        strategy: tf.distribute strategy name. Defaults to "default".
        random_seed: every random choice derives from it. Defaults to 12345.
        data_fraction: share of the default data to use (small slices for tests). Defaults to 1.0.
        model_name: served model name. Defaults to "bert_classifier".
        serving_base: the model server's base path, the root of all served models (the
            model is pushed to `<serving_base>/<model_name>/<version>`). Defaults to
            `<pipeline_root>/serving`.
        bless_margin: how much the model's test metric must beat the task's trivial
            baseline by, in that metric's units (accuracy, MSE, entity F1, SQuAD F1 in
            percent; see `components.evaluate.BLESSING`). Defaults to 0.0.
        force: rerun this stage and every later one. Defaults to None.
        serve_check: start the model server and send one gRPC request at the end. Defaults to True.
        predict: unlabelled input (file or glob, any format `components.predict` reads)
            to predict on with the pushed model, a Predict stage after Push. Defaults
            to None (no Predict stage).
        predict_batch_size: examples per SavedModel call in the Predict stage.
            Defaults to 32.
    """

    pipeline_root: str = "runs/default"
    corpus: str = None
    task: str = "classification"
    train: str = None
    dev: str = None
    test: str = None
    init_checkpoint: str = None
    vocab: str = None
    vocab_size: int = 2856
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
    pretrain_short_length: int = None
    pretrain_short_fraction: float = 0.9
    finetune_epochs: int = 5
    finetune_batch_size: int = 16
    finetune_learning_rate: float = 3e-4
    mixed_precision: str = "auto"
    group_by_length: int = 16
    strategy: str = "default"
    random_seed: int = 12345
    data_fraction: float = 1.0
    model_name: str = "bert_classifier"
    serving_base: str = None
    bless_margin: float = 0.0
    force: str = None
    serve_check: bool = True
    predict: str = None
    predict_batch_size: int = 32

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
        if self.group_by_length < 0:
            raise PipelineConfigError(f"group_by_length must be >= 0, got {self.group_by_length}")
        if self.pretrain_short_length is None:
            half = self.max_seq_length // 2
            # Frozen: the resolved default is what the stages and config.json see.
            object.__setattr__(self, "pretrain_short_length",
                               half if half >= MIN_PRETRAIN_SHORT_LENGTH else 0)
        elif self.pretrain_short_length and not (
                MIN_PRETRAIN_SHORT_LENGTH <= self.pretrain_short_length < self.max_seq_length):
            raise PipelineConfigError(
                f"pretrain_short_length must be 0 (one phase) or in "
                f"[{MIN_PRETRAIN_SHORT_LENGTH}, max_seq_length {self.max_seq_length}), got "
                f"{self.pretrain_short_length}")
        if not 0 <= self.pretrain_short_fraction < 1:
            raise PipelineConfigError(f"pretrain_short_fraction must be in [0, 1), got "
                                      f"{self.pretrain_short_fraction}")
        if not 0 < self.data_fraction <= 1:
            raise PipelineConfigError(f"data_fraction must be in (0, 1], got {self.data_fraction}")
        try:
            precision.dtype_policy(self.mixed_precision)
        except ValueError as e:
            raise PipelineConfigError(str(e)) from None

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


def build_parser():
    """The `python -m pipeline.run` flag parser: `--config FILE` and one flag per field."""
    parser = argparse.ArgumentParser(prog="python -m pipeline.run", allow_abbrev=False,
                                     description="BERT from raw corpus to a served model.")
    parser.add_argument("--config", default=None, help="YAML or JSON file of these flags")
    for name, field in _FIELDS.items():
        if isinstance(field.default, bool):
            # None: not given, so a --config file's value is not overridden.
            add_bool_flag(parser, name, None, f"(default: {field.default})")
            continue
        # The annotation, not the default's type: a default of None may stand for a number.
        kind = {int: int, float: float}.get(field.type, str)
        if name == "mixed_precision":
            parser.add_argument(f"--{name}", choices=precision.CHOICES, default=None)
        else:
            parser.add_argument(f"--{name}", type=kind, default=None)
    return parser


def parse_flags(argv=None):
    """argv → (PipelineConfig, the remaining args for Beam's `PipelineOptions`)."""
    parser = build_parser()
    args, beam_args = parse_with_beam_args(parser, argv)
    values = _load_file(args.config) if args.config else {}
    values.update({k: v for k, v in vars(args).items() if k != "config" and v is not None})
    try:
        config = PipelineConfig(**values)
    except TypeError as e:
        raise PipelineConfigError(str(e)) from None
    return config, beam_args
