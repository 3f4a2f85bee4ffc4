"""`report.md`: what the pipeline did, from the stage records alone.

Every number in the report is read from `<root>/<Stage>/record.json` (and the
training histories those records point to); plots are PNGs beside the report.
"""

import json
import os

from pipeline.serve_check import client_command


def _load_history(path):
    if not path or not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def _plot(history, keys, title, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    skip = {"step", "epoch", "eval_seconds", "seconds", "learning_rate"}
    keys = keys or [k for k in history if k not in skip]
    series = {k: history[k] for k in keys if k in history and history[k]}
    if not series:
        return None
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for key, values in series.items():
        steps = history.get("step") or history.get("epoch") or list(range(1, len(values) + 1))
        ax.plot(steps[: len(values)], values, label=key, marker="o" if len(values) < 30 else None)
    ax.set_title(title)
    ax.set_xlabel("step" if "step" in history else "epoch")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return os.path.basename(path)


def _scores_table(title, key, scores):
    """Markdown lines of a precision/recall/F1/support table, one row per class or type."""
    lines = [f"{title}:", "", f"| {key} | precision | recall | F1 | support |",
             "| --- | --- | --- | --- | --- |"]
    lines += [f"| {name} | {v['precision']:.4f} | {v['recall']:.4f} | {v['f1']:.4f} | "
              f"{v['support']} |" for name, v in scores.items()]
    return lines + [""]


def _number(value):
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def _plot_confusion(matrix, labels, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    n = len(labels)
    size = max(3.5, 0.5 * n + 2)
    fig, ax = plt.subplots(figsize=(size, size))
    image = ax.imshow(matrix, cmap="Blues")
    ax.set_xticks(range(n), labels, rotation=45, ha="right")
    ax.set_yticks(range(n), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("gold")
    ax.set_title("Confusion matrix (test split)")
    top = max((max(row) for row in matrix), default=0)
    for i, row in enumerate(matrix):
        for j, count in enumerate(row):
            ax.text(j, i, str(count), ha="center", va="center",
                    color="white" if top and count > top / 2 else "black")
    fig.colorbar(image, ax=ax, fraction=0.046)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return os.path.basename(path)


def _plot_bars(values, title, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    names = list(values)
    fig, ax = plt.subplots(figsize=(max(4, 0.8 * len(names) + 2), 3.5))
    ax.bar(names, [values[n] for n in names], color="tab:blue")
    ax.set_ylim(0, 1)
    ax.set_ylabel("F1")
    ax.set_title(title)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return os.path.basename(path)


def _evaluation_section(root, record):
    """The test-split metrics, the blessing, per-class/per-type tables and plots."""
    metrics = record.get("metrics", {})
    if not metrics:
        return []
    evaluation = _load_history(record.get("outputs", {}).get("evaluation")) or {}
    blessing = evaluation.get("blessing", {})
    task = evaluation.get("task", "")
    title = "## Evaluation (held-out test split, scored by the exported SavedModel)"
    lines = [title if not task else title[:-1] + f", task {task})", ""]
    if blessing:
        lines += [f"Blessing: **{'blessed' if blessing['blessed'] else 'not blessed'}**: "
                  f"{blessing['metric']} {_number(blessing['value'])} vs the "
                  f"{blessing['baseline']} baseline {_number(blessing['baseline_value'])} "
                  f"({'higher' if blessing.get('higher_is_better', True) else 'lower'} is better, "
                  f"bless_margin {blessing.get('bless_margin', 0)}).", ""]
    model, baseline = evaluation.get("metrics", {}), evaluation.get("baseline", {})
    shown = [k for k, v in model.items() if isinstance(v, (int, float)) or v is None]
    if shown:
        lines += ["| metric | model | baseline |", "| --- | --- | --- |"]
        lines += [f"| {k} | {_number(model[k])} | {_number(baseline.get(k, ''))} |" for k in shown]
        lines.append("")
    else:  # no evaluation.json: the record's flat numbers
        lines += ["| metric | value |", "| --- | --- |"]
        lines += [f"| {k} | {_number(v)} |" for k, v in metrics.items() if k != "seconds"]
        lines.append("")
    per_class = model.get("per_class")
    if per_class:
        lines += _scores_table("Per class", "class", per_class)
    matrix, labels = model.get("confusion_matrix"), evaluation.get("labels")
    if matrix and labels:
        name = _plot_confusion(matrix, labels, os.path.join(root, "confusion_matrix.png"))
        lines += [f"![Confusion matrix]({name})", ""]
    per_type = model.get("per_type")
    if per_type:
        lines += _scores_table("Per entity type", "type", per_type)
        name = _plot_bars({t: v["f1"] for t, v in per_type.items()},
                          "Entity F1 per type (test split)", os.path.join(root, "entity_f1.png"))
        lines += [f"![Entity F1 per type]({name})", ""]
    return lines


def _predict_section(record):
    """The Predict stage: what it read, how many predictions, the bad lines counted."""
    outputs = record.get("outputs", {})
    if not outputs:
        return []
    lines = ["## Batch predictions (Beam RunInference on the pushed model)", ""]
    if not outputs.get("predicted"):
        return lines + ["The model was not pushed, so nothing was predicted.", ""]
    counts = _load_history(outputs.get("counts")) or {}
    lines += [f"Input `{counts.get('input')}` ({counts.get('task')} input) through the "
              f"SavedModel `{outputs.get('model')}`: {counts.get('examples')} examples read, "
              f"{counts.get('predictions')} predictions in {counts.get('batches')} batches, "
              f"{counts.get('bad_records_total')} bad lines.", ""]
    bad = {kind: n for kind, n in (counts.get("bad_records") or {}).items() if n}
    if bad:
        lines += ["| bad lines | count |", "| --- | --- |"]
        lines += [f"| {kind} | {n} |" for kind, n in bad.items()]
        lines.append("")
        lines += [f"- {location}" for location in counts.get("bad_record_locations", [])[:10]]
        lines.append("")
    lines += ["Predictions (JSON lines): " + ", ".join(f"`{p}`" for p in outputs["predictions"]), ""]
    return lines


def write_report(config, records):
    """Writes `<pipeline_root>/report.md` (+ PNGs) and returns its path."""
    root = config.pipeline_root
    lines = ["# keras-bert pipeline report", "",
             f"Pipeline root: `{os.path.abspath(root)}`", "",
             "## Stages", "", "| stage | outcome | seconds | fingerprint | key metrics |",
             "| --- | --- | --- | --- | --- |"]
    for name, rec in records.items():
        metrics = rec.get("metrics", {})
        shown = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                          for k, v in metrics.items() if k != "seconds" and isinstance(v, (int, float)))
        lines.append(f"| {name} | {rec.get('outcome')} | {metrics.get('seconds', '')} | "
                     f"`{rec.get('fingerprint')}` | {shown} |")
    lines.append("")

    plots = []
    pre = records.get("Pretrain", {}).get("outputs", {})
    fin = records.get("Finetune", {}).get("outputs", {})
    for hist_path, keys, title, png in (
            (pre.get("history"), None, "Pre-training", "pretraining.png"),
            (fin.get("history"), None, "Fine-tuning", "finetuning.png")):
        history = _load_history(hist_path)
        if history:
            name = _plot(history, keys, title, os.path.join(root, png))
            if name:
                plots.append((title, name))
    if plots:
        lines += ["## Training curves", ""]
        lines += [f"![{title}]({name})" for title, name in plots]
        lines.append("")

    lines += _evaluation_section(root, records.get("Evaluate", {}))

    push = records.get("Push", {}).get("outputs", {})
    if push:
        lines += ["## Serving", ""]
        if push.get("pushed"):
            base = os.path.abspath(os.path.join(config.serving_base_path, config.model_name))
            lines += [f"Served model: `{config.model_name}` version {push['version']} at `{push['path']}`.", "",
                      "Start a server and query it:", "", "```",
                      f"python -m serving.server --port 8500 --rest_api_port 8501 "
                      f"--model_name {config.model_name} --model_base_path {base}",
                      client_command(config, 8500, records), "```", ""]
        else:
            lines += ["The model was not blessed, so nothing was pushed.", ""]
    lines += _predict_section(records.get("Predict", {}))
    path = os.path.join(root, "report.md")
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    return path
