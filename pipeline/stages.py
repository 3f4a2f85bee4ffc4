"""The pipeline's stages: parameters, inputs and the executor that calls each component.

Each stage declares which upstream stages it reads (`deps`), which config fields are
its parameters, and which external files are its inputs; `pipeline.run` fingerprints
them for caching and hands the stage its own output folder.
"""

import dataclasses
import json
import os
import shutil
import sys

from pipeline.store import file_fingerprint


@dataclasses.dataclass(frozen=True)
class Stage:
    name: str
    deps: tuple
    param_fields: tuple
    execute: object
    external: object = None  # config -> {name: glob} of user files
    # Resumes from what an interrupted run left in its folder (training checkpoints);
    # other stages start from an empty output folder when they run again.
    resumable: bool = False

    def params(self, config):
        return {f: getattr(config, f) for f in self.param_fields}

    def inputs(self, config, upstream):
        out = {dep: {"uri": os.path.join(config.pipeline_root, dep),
                     "fingerprint": rec["fingerprint"]} for dep, rec in upstream.items()}
        if self.external:
            for key, pattern in self.external(config).items():
                if pattern:
                    out[key] = {"uri": pattern, "fingerprint": file_fingerprint(pattern)}
        # Upgrading the project invalidates cached stages: their code may have changed.
        out["code"] = {"uri": "keras-bert-pipeline", "version": _code_version()}
        if self.name == "ExampleGen" and not config.corpus:
            out["default_corpus"] = {"uri": "python-stdlib", "python": sys.version.split()[0]}
        return out


class PipelineStageError(RuntimeError):
    """An upstream stage's record lacks what this stage needs."""


def _code_version():
    from importlib import metadata
    try:
        return metadata.version("keras-bert-pipeline")
    except metadata.PackageNotFoundError:
        return "unknown"


def _beam_args(beam_args):
    """Beam arguments for a job, short runner names (`--runner=DaskRunner`) made full."""
    from components import runners
    return runners.expand_runner(beam_args)


# -- ExampleGen ----------------------------------------------------------------------------


def _example_gen(config, beam_args, upstream, out):
    from components import default_data, example_gen
    outputs = {}
    data = None
    if not (config.corpus and config.train):
        # The embedded default supplies whatever the user did not: corpus and/or task.
        data = default_data.build(default_data.DefaultDataSpec(
            os.path.join(out, "default_data"), fraction=config.data_fraction))
    if config.corpus:
        corpus, heldout = config.corpus, None
    else:
        corpus, heldout = data["corpus_glob"], data["heldout_glob"]
    if config.train:
        outputs.update(train=config.train, dev=config.dev, test=config.test or config.dev)
        labels = None
    else:
        outputs.update(train=data["train"], dev=data["dev"], test=data["test"])
        labels = data["labels"]
    stats = example_gen.run(example_gen.ExampleGenSpec(
        input_pattern=corpus, output_dir=os.path.join(out, "documents")), _beam_args(beam_args))
    outputs["documents"] = os.path.join(out, "documents", "documents-*.jsonl.gz")
    counters = stats["counters"]
    metrics = {"documents": counters.get("documents", 0), "sentences": counters.get("sentences", 0),
               "bad_records": sum(stats["bad_records"].values())}
    if heldout:
        example_gen.run(example_gen.ExampleGenSpec(
            input_pattern=heldout, output_dir=os.path.join(out, "heldout")), _beam_args(beam_args))
        outputs["heldout_documents"] = os.path.join(out, "heldout", "documents-*.jsonl.gz")
    outputs["labels"] = labels
    return outputs, metrics


# -- Vocab ---------------------------------------------------------------------------------


def _vocab(config, beam_args, upstream, out):
    from components import vocab
    given = config.vocab
    if config.init_checkpoint:
        given = os.path.join(config.init_checkpoint, "vocab.txt")
    # A given vocabulary (or the --init_checkpoint's) is copied, not learnt from the corpus.
    documents = None if given else upstream["ExampleGen"]["outputs"]["documents"]
    spec = vocab.VocabSpec(output_dir=out, input_pattern=documents, vocab_file=given,
                           vocab_size=config.vocab_size, do_lower_case=config.do_lower_case)
    path = vocab.run(spec, _beam_args(beam_args))
    size = sum(1 for _ in open(path, encoding="utf-8"))
    return {"vocab": path}, {"vocab_size": size}


# -- PretrainingData -----------------------------------------------------------------------


def _pretraining_data(config, beam_args, upstream, out):
    from components import pretraining_data as pd
    docs = upstream["ExampleGen"]["outputs"]
    vocab_path = upstream["Vocab"]["outputs"]["vocab"]
    common = dict(vocab_path=vocab_path, max_seq_length=config.max_seq_length,
                  max_predictions_per_seq=config.max_predictions_per_seq,
                  masked_lm_prob=config.masked_lm_prob, short_seq_prob=config.short_seq_prob,
                  do_lower_case=config.do_lower_case, random_seed=config.random_seed)
    train = pd.PretrainingDataSpec(input_pattern=docs["documents"], output_dir=os.path.join(out, "train"),
                                   dupe_factor=config.dupe_factor, num_shards=4, **common)
    stats = pd.run(train, _beam_args(beam_args))
    outputs = {"train": train.records_pattern, "eval": None}
    metrics = {"train_instances": stats["instances"]}
    if config.pretrain_short_length:
        # Two-phase pre-training: the same documents as shorter records for the first
        # phase. Their masked positions are what a full record of that length gets
        # (`num_to_predict`: round(masked_lm_prob * length), 10 for 64 tokens at 0.15,
        # at most max_predictions_per_seq), so no record loses a mask to the width
        # and none carries more padding than the full-length records do.
        from keras_bert.masking import num_to_predict
        length = config.pretrain_short_length
        predictions = num_to_predict(length, config.masked_lm_prob,
                                     config.max_predictions_per_seq)
        short = pd.PretrainingDataSpec(
            input_pattern=docs["documents"], output_dir=os.path.join(out, "train_short"),
            dupe_factor=config.dupe_factor, num_shards=4,
            **dict(common, max_seq_length=length, max_predictions_per_seq=predictions))
        short_stats = pd.run(short, _beam_args(beam_args))
        outputs.update(train_short=short.records_pattern, short_max_seq_length=length,
                       short_max_predictions_per_seq=predictions)
        metrics["train_short_instances"] = short_stats["instances"]
    if docs.get("heldout_documents"):
        held = pd.PretrainingDataSpec(input_pattern=docs["heldout_documents"],
                                      output_dir=os.path.join(out, "eval"), dupe_factor=1,
                                      num_shards=1,
                                      **dict(common, random_seed=config.random_seed + 1))
        held_stats = pd.run(held, _beam_args(beam_args))
        outputs["eval"] = held.records_pattern
        metrics["eval_instances"] = held_stats["instances"]
    return outputs, metrics


# -- Export / Evaluate / Push ---------------------------------------------------------------

def _has_second_segment(records_path, limit=100):
    """Whether any of the first `limit` TaskData records has segment id 1 (text pairs)."""
    import tensorflow as tf

    from keras_bert import features
    if not records_path:
        return False
    for raw in tf.data.TFRecordDataset(records_path).take(limit):
        example = tf.train.Example.FromString(raw.numpy())
        if any(example.features.feature[features.SEGMENT_IDS].int64_list.value):
            return True
    return False


def _finetune_results(ft):
    path = ft.get("metrics")
    if not path or not os.path.exists(path):
        return {}
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def _export(config, beam_args, upstream, out):
    """The fine-tuned checkpoint → a SavedModel with the task's raw-text signature."""
    from keras_bert.checkpoints import load_pretrained
    from keras_bert.export import export_saved_model
    from keras_bert.tasks import TASKS
    ft = upstream["Finetune"]["outputs"]
    task = config.task
    labels = list(ft["labels"]) if task in ("classification", "pair", "ner") else None
    # The task registry says which signature each task's export serves.
    kwargs = {"task": task, "labels": labels}
    if task == "regression":
        # One text or a pair (STS-B): as the training records were built.
        records = upstream["TaskData"]["outputs"].get("records") or {}
        kwargs["pair"] = _has_second_segment(records.get("train"))
    elif task == "squad2":
        # Finetune tuned the null threshold on dev: answer "" when
        # null score - best span score > threshold, i.e. the export answers when
        # best span score > null score - threshold.
        threshold = _finetune_results(ft).get("null_score_diff_threshold")
        if threshold is None:
            raise PipelineStageError("squad2: Finetune recorded no null_score_diff_threshold")
        kwargs["null_score_threshold"] = -float(threshold)
    bert = load_pretrained(ft["checkpoint"])
    # A run that stopped half-way left its version folder behind; versions are immutable.
    shutil.rmtree(os.path.join(out, config.model_name), ignore_errors=True)
    result = export_saved_model(bert.model, out, config.model_name, bert.vocab_path,
                                max_seq_length=config.max_seq_length, version=1, **kwargs)
    return ({"export_dir": result.path, "task": result.task, "signatures": list(result.signatures),
             "labels": labels, "pair": bool(kwargs.get("pair") or TASKS[task].pair),
             "null_score_threshold": kwargs.get("null_score_threshold")},
            {"signatures": len(result.signatures)})


def _train_label_counts(task_data_outputs):
    """{label: count} of the train split, from TaskData's statistics."""
    path = task_data_outputs.get("stats")
    if not path or not os.path.exists(path):
        raise PipelineStageError("TaskData recorded no statistics file (outputs.stats)")
    with open(path, encoding="utf-8") as f:
        stats = json.load(f)
    return dict(stats["splits"]["train"]["label_counts"])


def _evaluate(config, beam_args, upstream, out):
    """Scores the exported SavedModel on the test split; writes the blessing."""
    from components import evaluate
    export = upstream["Export"]["outputs"]
    counts = (_train_label_counts(upstream["TaskData"]["outputs"])
              if config.task in ("classification", "pair", "regression") else None)
    spec = evaluate.EvaluateSpec(
        export_dir=export["export_dir"], task=config.task,
        test=upstream["ExampleGen"]["outputs"]["test"], output_dir=out,
        labels=tuple(export["labels"]) if export.get("labels") else None,
        train_label_counts=counts, bless_margin=config.bless_margin)
    result = evaluate.run(spec)
    return ({"evaluation": os.path.join(out, evaluate.EVALUATION_FILE),
             "blessing": os.path.join(out, evaluate.BLESSING_FILE),
             "predictions": os.path.join(out, evaluate.PREDICTIONS_FILE),
             "model": export["export_dir"], "blessed": result["blessing"]["blessed"]},
            evaluate.flat_metrics(result))


def _push(config, beam_args, upstream, out):
    """Copies the export into the serving base path if Evaluate blessed it."""
    from components import push
    result = push.run(push.PushSpec(
        export_dir=upstream["Export"]["outputs"]["export_dir"],
        blessing=upstream["Evaluate"]["outputs"]["blessing"],
        serving_base=config.serving_base_path, model_name=config.model_name, journal_dir=out))
    return result, {"pushed": result["pushed"], "version": result["version"] or 0}


def _predict(config, beam_args, upstream, out):
    """Batch predictions (Beam RunInference) of the pushed model on `--predict`."""
    from components import predict
    push = upstream["Push"]["outputs"]
    if not push.get("pushed"):
        from components import common
        common.log_stage(predict.STAGE, "the model was not blessed, so not pushed: nothing to "
                                        "predict with")
        return {"predicted": False, "model": None}, {"predictions": 0}
    spec = predict.PredictSpec(export_dir=push["path"], input_pattern=config.predict,
                               output_dir=out, task=config.task,
                               batch_size=config.predict_batch_size)
    counts = predict.run(spec, _beam_args(beam_args))
    return ({"predicted": True, "model": push["path"], "predictions": counts["outputs"],
             "counts": spec.counts_path},
            {"examples": counts["examples"], "predictions": counts["predictions"],
             "bad_records": counts["bad_records_total"]})


# -- Pretrain / TaskData / Finetune -------------------------------------------------------------

from pipeline.training_stages import _finetune, _pretrain, _task_data  # noqa: E402


_DATA = ("corpus", "data_fraction", "random_seed")
_PD = ("max_seq_length", "max_predictions_per_seq", "masked_lm_prob", "dupe_factor",
       "short_seq_prob", "do_lower_case", "random_seed", "pretrain_short_length")
_PT = ("model", "pretrain_steps", "pretrain_batch_size", "pretrain_learning_rate",
       "mixed_precision", "strategy", "random_seed", "max_seq_length", "max_predictions_per_seq",
       "pretrain_short_length", "pretrain_short_fraction")
_FT = ("task", "finetune_epochs", "finetune_batch_size", "finetune_learning_rate",
       "mixed_precision", "strategy", "random_seed", "max_seq_length", "init_checkpoint",
       "group_by_length")


def plan(config):
    """The stages to run for this config, in order."""
    stages = [
        Stage("ExampleGen", (), _DATA + ("train", "dev", "test"), _example_gen,
              lambda c: {"corpus": c.corpus, "train": c.train, "dev": c.dev, "test": c.test}),
        Stage("Vocab", ("ExampleGen",), ("vocab", "vocab_size", "do_lower_case", "init_checkpoint"),
              _vocab, lambda c: {"vocab": c.vocab, "init_checkpoint": c.init_checkpoint}),
    ]
    if not config.init_checkpoint:
        stages += [
            Stage("PretrainingData", ("ExampleGen", "Vocab"), _PD, _pretraining_data),
            Stage("Pretrain", ("PretrainingData", "Vocab"), _PT, _pretrain, resumable=True),
        ]
    encoder_stage = "Pretrain" if not config.init_checkpoint else "Vocab"
    stages += [
        Stage("TaskData", ("ExampleGen", "Vocab"), ("task", "max_seq_length", "do_lower_case"),
              _task_data),
        # Finetune reads TaskData's records and the encoder, never ExampleGen's raw files.
        Stage("Finetune", tuple(dict.fromkeys(("TaskData", encoder_stage))),
              _FT, _finetune,
              lambda c: {"init_checkpoint": c.init_checkpoint}, resumable=True),
        Stage("Export", ("Finetune", "TaskData"), ("model_name", "max_seq_length", "task"), _export),
        Stage("Evaluate", ("Export", "TaskData", "ExampleGen"), ("task", "bless_margin"), _evaluate),
        # Push keeps the note of the version it was publishing (components.push).
        Stage("Push", ("Export", "Evaluate"), ("model_name", "serving_base"), _push,
              resumable=True),
    ]
    if config.predict:
        stages.append(Stage("Predict", ("Push",), ("task", "predict_batch_size"), _predict,
                            lambda c: {"predict": c.predict}))
    return stages
