"""The pipeline's stages: parameters, inputs and the executor that calls each component.

Each stage declares which upstream stages it reads (`deps`), which config fields are
its parameters, and which external files are its inputs; `pipeline.run` fingerprints
them for caching and hands the stage its own output folder.
"""

import dataclasses
import os
import sys

from pipeline.store import file_fingerprint


@dataclasses.dataclass(frozen=True)
class Stage:
    name: str
    deps: tuple
    param_fields: tuple
    execute: object
    external: object = None  # config -> {name: glob} of user files

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
               "bad_records": sum(v for k, v in counters.items() if k.startswith("bad_"))}
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
    if config.init:
        given = os.path.join(config.init, "vocab.txt")
    spec = vocab.VocabSpec(output_dir=out, input_pattern=upstream["ExampleGen"]["outputs"]["documents"],
                           vocab_file=given, vocab_size=config.vocab_size,
                           do_lower_case=config.do_lower_case)
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
                  do_lower_case=config.do_lower_case, random_seed=config.seed)
    train = pd.PretrainingDataSpec(input_pattern=docs["documents"], output_dir=os.path.join(out, "train"),
                                   dupe_factor=config.dupe_factor, num_shards=4, **common)
    stats = pd.run(train, _beam_args(beam_args))
    outputs = {"train": train.records_pattern, "eval": None}
    metrics = {"train_instances": stats["instances"]}
    if docs.get("heldout_documents"):
        held = pd.PretrainingDataSpec(input_pattern=docs["heldout_documents"],
                                      output_dir=os.path.join(out, "eval"), dupe_factor=1,
                                      num_shards=1, **dict(common, random_seed=config.seed + 1))
        held_stats = pd.run(held, _beam_args(beam_args))
        outputs["eval"] = held.records_pattern
        metrics["eval_instances"] = held_stats["instances"]
    return outputs, metrics


# -- Evaluate / Export / Push ---------------------------------------------------------------


def read_examples(path, task):
    """Labelled examples of a task file (any format TaskData reads) as dicts."""
    from components import task_data
    examples, bad = task_data.read_examples(path, task)
    if bad:
        print(f"[Evaluate] {len(bad)} bad record(s) in {path} skipped, first: {bad[0]}", flush=True)
    return [{"text": e.text, "text_b": e.text_b, "label": str(e.label)} for e in examples]


def _evaluate(config, beam_args, upstream, out):
    from components import evaluate
    ft = upstream["Finetune"]["outputs"]
    eg = upstream["ExampleGen"]["outputs"]
    spec = evaluate.EvaluateSpec(
        model_dir=ft["model_dir"], examples=tuple(read_examples(eg["test"], config.task)),
        train_labels=tuple(r["label"] for r in read_examples(eg["train"], config.task)),
        labels=tuple(ft["labels"]), output_dir=out, max_seq_length=config.max_seq_length,
        margin=config.bless_margin)
    result = evaluate.run(spec)
    return {"evaluation": os.path.join(out, "evaluation.json"), "blessed": result["blessed"]}, {
        k: v for k, v in result.items() if isinstance(v, (int, float, bool))}


def _export(config, beam_args, upstream, out):
    from keras_bert.checkpoints import load_pretrained
    from keras_bert.export import export_saved_model
    ft = upstream["Finetune"]["outputs"]
    bert = load_pretrained(ft["model_dir"])
    result = export_saved_model(bert.model, out, config.model_name, bert.vocab_path,
                                max_seq_length=config.max_seq_length, labels=ft["labels"],
                                pair=config.task == "pair", version=1)
    return {"export_dir": result.path, "signatures": list(result.signatures)}, {}


def _push(config, beam_args, upstream, out):
    from components import push
    result = push.run(push.PushSpec(
        export_dir=upstream["Export"]["outputs"]["export_dir"],
        evaluation_dir=os.path.join(config.pipeline_root, "Evaluate", "output"),
        serving_base=os.path.join(config.serving_base_path, config.model_name)))
    return result, {"pushed": result["pushed"], "version": result["version"] or 0}


# -- Pretrain / TaskData / Finetune -------------------------------------------------------------

from pipeline.training_stages import _finetune, _pretrain, _task_data  # noqa: E402


_DATA = ("corpus", "data_fraction", "seed")
_PD = ("max_seq_length", "max_predictions_per_seq", "masked_lm_prob", "dupe_factor",
       "short_seq_prob", "do_lower_case", "seed")
_PT = ("model", "pretrain_steps", "pretrain_batch_size", "pretrain_learning_rate",
       "mixed_precision", "strategy", "seed", "max_seq_length", "max_predictions_per_seq")
_FT = ("task", "finetune_epochs", "finetune_batch_size", "finetune_learning_rate",
       "mixed_precision", "strategy", "seed", "max_seq_length", "init")


def plan(config):
    """The stages to run for this config, in order."""
    stages = [
        Stage("ExampleGen", (), _DATA + ("train", "dev", "test"), _example_gen,
              lambda c: {"corpus": c.corpus, "train": c.train, "dev": c.dev, "test": c.test}),
        Stage("Vocab", ("ExampleGen",), ("vocab", "vocab_size", "do_lower_case", "init"), _vocab,
              lambda c: {"vocab": c.vocab, "init": c.init}),
    ]
    if not config.init:
        stages += [
            Stage("PretrainingData", ("ExampleGen", "Vocab"), _PD, _pretraining_data),
            Stage("Pretrain", ("PretrainingData", "Vocab"), _PT, _pretrain),
        ]
    encoder_stage = "Pretrain" if not config.init else "Vocab"
    stages += [
        Stage("TaskData", ("ExampleGen", "Vocab"), ("task", "max_seq_length", "do_lower_case"),
              _task_data),
        Stage("Finetune", tuple(dict.fromkeys(("ExampleGen", "TaskData", encoder_stage, "Vocab"))),
              _FT, _finetune,
              lambda c: {"init": c.init}),
        Stage("Evaluate", ("Finetune", "ExampleGen"), ("bless_margin", "max_seq_length"), _evaluate),
        Stage("Export", ("Finetune",), ("model_name", "max_seq_length", "task"), _export),
        Stage("Push", ("Export", "Evaluate"), ("model_name", "serving_base"), _push),
    ]
    return stages
