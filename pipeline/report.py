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

    evaluation = records.get("Evaluate", {}).get("metrics", {})
    if evaluation:
        lines += ["## Evaluation (held-out test set)", "", "| metric | value |", "| --- | --- |"]
        for key in ("examples", "accuracy", "macro_f1", "matthews_corrcoef",
                    "majority_baseline_accuracy", "blessed"):
            if key in evaluation:
                value = evaluation[key]
                lines.append(f"| {key} | {value:.4f} |" if isinstance(value, float) and not
                             isinstance(value, bool) else f"| {key} | {value} |")
        lines.append("")

    push = records.get("Push", {}).get("outputs", {})
    if push:
        lines += ["## Serving", ""]
        if push.get("pushed"):
            base = os.path.abspath(os.path.join(config.serving_base_path, config.model_name))
            lines += [f"Served model: `{config.model_name}` version {push['version']} at `{push['path']}`.", "",
                      "Start a server and query it:", "", "```",
                      f"python -m serving.server --port 8500 --rest_api_port 8501 "
                      f"--model_name {config.model_name} --model_base_path {base}",
                      client_command(config, 8500), "```", ""]
        else:
            lines += ["The model was not blessed, so nothing was pushed.", ""]
    path = os.path.join(root, "report.md")
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    return path
