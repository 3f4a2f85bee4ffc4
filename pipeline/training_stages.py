"""Pipeline adapters for the training stages: Pretrain, TaskData, Finetune."""

import json
import os


def _history_file(rows, path):
    """Writes per-step/epoch rows (list of dicts) as {metric: [values]} for the report."""
    if not rows:
        return None
    columns = {}
    for row in rows:
        for key, value in row.items():
            if isinstance(value, (int, float)):
                columns.setdefault(key, []).append(value)
    with open(path, "w") as f:
        json.dump(columns, f, indent=2)
    return path


def _pretrain(config, beam_args, upstream, out):
    from components import pretrain
    data = upstream["PretrainingData"]["outputs"]
    steps = config.pretrain_steps
    spec = pretrain.PretrainSpec(
        train_pattern=data["train"], eval_pattern=data.get("eval"), output_dir=out,
        model=config.model, vocab_path=upstream["Vocab"]["outputs"]["vocab"],
        batch_size=config.pretrain_batch_size, max_seq_length=config.max_seq_length,
        max_predictions_per_seq=config.max_predictions_per_seq, num_train_steps=steps,
        num_warmup_steps=max(1, steps // 10), learning_rate=config.pretrain_learning_rate,
        mixed_precision=config.mixed_precision, strategy=config.strategy,
        checkpoint_every=max(10, steps // 6), steps_per_epoch=max(10, steps // 6),
        log_every=max(10, steps // 20), random_seed=config.random_seed,
        # Two phases when PretrainingData wrote the short records (pretrain_short_length).
        short_train_pattern=data.get("train_short"),
        short_max_seq_length=data.get("short_max_seq_length") or 0,
        short_max_predictions_per_seq=data.get("short_max_predictions_per_seq"),
        short_fraction=config.pretrain_short_fraction)
    metrics = pretrain.run(spec)
    history = _history_file(metrics.get("history"), os.path.join(out, "history.json"))
    train, evaluation = metrics.get("train", {}), metrics.get("eval", {})
    flat = {f"train_{k}": v for k, v in train.items() if isinstance(v, (int, float))}
    flat.update({f"eval_{k}": v for k, v in evaluation.items() if isinstance(v, (int, float))})
    for key in ("steps", "sequences_per_second"):
        if isinstance(metrics.get(key), (int, float)):
            flat[key] = metrics[key]
    for phase in metrics.get("phases", []):
        flat[f"{phase['name']}_phase_seconds"] = phase["seconds"]
    return {"checkpoint": spec.export_dir, "metrics": spec.metrics_path, "history": history}, flat


def _task_data(config, beam_args, upstream, out):
    from components import task_data, task_files
    eg = upstream["ExampleGen"]["outputs"]
    do_lower_case = config.do_lower_case
    if config.init_checkpoint:
        # The records must be tokenised as the starting checkpoint's own tokenizer does.
        from keras_bert import checkpoints
        do_lower_case = checkpoints.read_config(config.init_checkpoint)[0].do_lower_case
    spec = task_data.TaskDataSpec(
        task=config.task, train=eg["train"], dev=eg["dev"], test=eg.get("test"),
        vocab_path=upstream["Vocab"]["outputs"]["vocab"], output_dir=out,
        do_lower_case=do_lower_case, max_seq_length=config.max_seq_length,
        labels=tuple(eg["labels"]) if eg.get("labels") else None)
    stats = task_data.run(spec, list(beam_args or []))
    labels_path = os.path.join(out, task_files.LABELS_FILE)
    labels = task_files.read_labels(labels_path) if os.path.exists(labels_path) else None
    metrics = {f"{split}_records": s["records"] for split, s in stats["splits"].items()}
    metrics["bad_records"] = stats["bad_records_total"]
    return {"task_data_dir": out,
            "records": {split: s["path"] for split, s in stats["splits"].items()},
            "sidecars": {split: spec.sidecar_path(split) for split in stats["splits"]},
            "labels": labels, "labels_path": labels_path, "stats": spec.stats_path}, metrics


def _finetune(config, beam_args, upstream, out):
    from components import finetune
    init_checkpoint = config.init_checkpoint or upstream["Pretrain"]["outputs"]["checkpoint"]
    task_data = upstream["TaskData"]["outputs"]
    # Finetune reads TaskData's records, never the raw task files again.
    folder = task_data.get("task_data_dir") or os.path.dirname(task_data["records"]["train"])
    spec = finetune.FinetuneSpec(
        task=config.task, task_data_dir=folder, init_checkpoint=init_checkpoint,
        output_dir=out,
        max_seq_length=config.max_seq_length, batch_size=config.finetune_batch_size,
        epochs=config.finetune_epochs, learning_rate=config.finetune_learning_rate,
        mixed_precision=config.mixed_precision, strategy=config.strategy,
        random_seed=config.random_seed, group_by_length=config.group_by_length, verbose=2)
    result = finetune.run(spec)
    history = _history_file(result.get("history"), os.path.join(out, "history.json"))
    metrics = {"best_epoch": result["best_epoch"], f"dev_{result['metric']}": result["best_value"]}
    baseline = result.get("baseline") or {}
    for key, value in baseline.items():
        if isinstance(value, (int, float)):
            metrics[f"baseline_{key}"] = value
    outputs = {"checkpoint": result["checkpoint"], "labels": result["labels"],
               "metrics": os.path.join(out, finetune.METRICS_FILE), "history": history}
    if "test" in result:
        # The test split (TaskData's, from --test or else the dev file), scored beside dev
        # with the best dev epoch's weights: its metrics and prediction files.
        metrics[f"test_{result['metric']}"] = result["test"].get(result["metric"])
        outputs["test_predictions"] = sorted(
            os.path.join(out, name) for name in os.listdir(out) if name.startswith("test_"))
    return outputs, metrics
