"""`report.md`: what the pipeline did, from the stage records alone.

Every number in the report is read from `<root>/<Stage>/record.json` (and the
training histories and evaluation files those records point to). Figures are PNGs
beside the report: training curves with one panel per unit (`panel_of`), and the
evaluation's pictures beside its tables. Each PNG has a `<name>.axes.json` sidecar
listing its panels.

The report is a list of sections (`_stages_section`, `_training_section`,
`_evaluation_section`, `_serving_section`), each a function of the records that
returns markdown lines; a stage with something to show adds one.
"""

import json
import os

from pipeline.serve_check import client_command, server_command


def _load_history(path):
    if not path or not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


# --------------------------------------------------------------------------------------
# Figures. Every PNG gets a sidecar `<name>.axes.json` listing its panels (axes title,
# axis labels, the series drawn), read back from the figure itself, so a test (or a
# reader) can check what a picture shows without looking at pixels.

SIDECAR_SUFFIX = ".axes.json"


def _pyplot():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _save(fig, path):
    """Saves `fig` as the PNG `path` and its panels as `<name>.axes.json`; returns the PNG's name."""
    panels = []
    for ax in fig.axes:
        if ax.get_label() == "<colorbar>" or not ax.get_visible():
            continue
        panels.append({"title": ax.get_title(), "xlabel": ax.get_xlabel(),
                       "ylabel": ax.get_ylabel(),
                       "series": [label for label in ax.get_legend_handles_labels()[1]],
                       "ylim": [float(v) for v in ax.get_ylim()]})
    title = fig.get_suptitle()
    fig.savefig(path, dpi=100)
    _pyplot().close(fig)
    sidecar = os.path.splitext(path)[0] + SIDECAR_SUFFIX
    with open(sidecar, "w") as f:
        json.dump({"png": os.path.basename(path), "title": title, "panels": panels}, f, indent=2)
    return os.path.basename(path)


# Panels of a training figure, one per unit, in the order drawn. A logged number is
# drawn only when its name says which unit it has; counts (examples, totals) and
# timings are never curves.
# Pre-training's next-sentence loss (about 0.7) gets a panel of its own beside the
# masked-LM loss (about 7 at the start), or its curve is a flat line at the bottom.
LOSS, NSP_LOSS, SCORE, PERCENT, THROUGHPUT, LEARNING_RATE = (
    "Loss", "Next-sentence loss", "Accuracy / F1 / correlation", "Exact match / F1 (%)",
    "Throughput (sequences/s)", "Learning rate")
_PANEL_ORDER = (LOSS, NSP_LOSS, SCORE, PERCENT, THROUGHPUT, LEARNING_RATE)
_SCORES = {"accuracy", "f1", "f1_macro", "macro_f1", "mcc", "precision", "recall", "pearson",
           "spearman", "corr", "token_accuracy", "mlm_accuracy", "nsp_accuracy"}
_PERCENTS = {"exact", "exact_match", "best_exact", "best_f1"}
_SPLIT_PREFIXES = (("dev_", "dev"), ("eval_", "held-out"), ("val_", "validation"))


def _split_name(key):
    """`dev_f1` → ("dev", "f1"); `loss` → ("train", "loss")."""
    for prefix, split in _SPLIT_PREFIXES:
        if key.startswith(prefix):
            return split, key[len(prefix):]
    return "train", key


def panel_of(key, keys=()):
    """The panel (unit) a logged number is drawn in, or None when it is no curve.

    Args:
        key: the logged name, e.g. "mlm_loss", "dev_accuracy", "dev_num_examples".
        keys: every name logged beside it (SQuAD's "f1" is a percentage when "exact"
            is logged too). Defaults to ().
    """
    _, name = _split_name(key)
    squad = any(_split_name(k)[1] in ("exact", "exact_match") for k in keys)
    if name == "nsp_loss":
        return NSP_LOSS
    if name.endswith("loss") or name == "mse":
        return LOSS
    if name in _PERCENTS or (squad and name == "f1") or (
            name.startswith(("HasAns_", "NoAns_")) and name.endswith(("_exact", "_f1"))):
        return PERCENT
    if name in _SCORES:
        return SCORE
    if name == "sequences_per_second":
        return THROUGHPUT
    if name == "learning_rate":
        return LEARNING_RATE
    return None


def _plot_training(history, title, path, held_out=None):
    """One panel per unit of a training history; None when nothing is drawable.

    Args:
        history: {name: [values]} with a "step" or "epoch" column.
        title: the figure's title.
        path: the PNG to write.
        held_out: {name: value} measured once after training (pre-training's
            held-out loss and accuracies), drawn as a point at the last step.
            Defaults to None.
    """
    plt = _pyplot()
    from matplotlib.ticker import MaxNLocator
    xkey = "step" if history.get("step") else "epoch"
    keys = list(history) + list(held_out or {})
    panels = {}
    for key, values in history.items():
        panel = panel_of(key, keys)
        if panel and values and key != xkey:
            panels.setdefault(panel, []).append((key, values))
    if not panels:
        return None
    order = [p for p in _PANEL_ORDER if p in panels]
    columns = 3 if len(order) > 4 else min(2, len(order))
    rows = (len(order) + columns - 1) // columns
    fig, axes = plt.subplots(rows, columns, figsize=(6 * columns, 3.4 * rows), squeeze=False)
    colors = {}
    for ax, panel in zip(axes.flat, order):
        last_x = None
        for key, values in panels[panel]:
            xs = (history.get(xkey) or list(range(1, len(values) + 1)))[: len(values)]
            last_x = xs[-1] if xs else last_x
            split, name = _split_name(key)
            color = colors.setdefault(name, f"C{len(colors) % 10}")
            label = name if panel in (THROUGHPUT, LEARNING_RATE) else f"{split} {name}"
            ax.plot(xs, values, label=label, color=color,
                    marker="o" if len(values) < 30 else None, markersize=4)
        for key, value in (held_out or {}).items():
            if panel_of(key, keys) != panel or not isinstance(value, (int, float)):
                continue
            _, name = _split_name(key)
            color = colors.setdefault(name, f"C{len(colors) % 10}")
            ax.plot([last_x if last_x is not None else 0], [value], linestyle="none", marker="X",
                    markersize=9, color=color, label=f"held-out {name} (end)")
        ax.set_title(panel)
        ax.set_xlabel(xkey)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        if panel == LEARNING_RATE:
            ax.ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))
        # A little room above the best possible score, so a perfect curve is not hidden
        # under the frame.
        if panel == SCORE:
            low = min(0.0, *(min(v) for _, v in panels[panel]))
            ax.set_ylim(low, 1.05)
        if panel == PERCENT:
            ax.set_ylim(0, 105)
        if panel == THROUGHPUT:
            ax.set_ylim(bottom=0)
        ax.legend(fontsize=8, loc="best")
    for ax in list(axes.flat)[len(order):]:
        ax.set_visible(False)
    fig.suptitle(title)
    fig.tight_layout()
    return _save(fig, path)


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
    plt = _pyplot()
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
    return _save(fig, path)


def _plot_bars(values, title, path):
    plt = _pyplot()
    names = list(values)
    fig, ax = plt.subplots(figsize=(max(4, 0.8 * len(names) + 2), 3.5))
    bars = ax.bar(names, [values[n] for n in names], color="tab:blue")
    ax.bar_label(bars, fmt="%.2f", fontsize=8)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("F1")
    ax.set_title(title)
    ax.grid(axis="y", alpha=0.3)
    if len(names) > 6:
        ax.tick_params(axis="x", labelrotation=45)
    fig.tight_layout()
    return _save(fig, path)


def _plot_squad2(model, baseline, path):
    """Grouped bars: EM and F1 on answerable, unanswerable and all questions."""
    plt = _pyplot()
    groups = [("HasAns_", "answerable"), ("NoAns_", "unanswerable"), ("", "all")]
    groups = [(prefix, name) for prefix, name in groups
              if isinstance(model.get(f"{prefix}f1"), (int, float))]
    series = [("exact", "model EM", "tab:blue", None), ("f1", "model F1", "tab:orange", None),
              ("f1", f"baseline F1 ({baseline.get('name', 'baseline')})", "lightgray", "//")]
    fig, ax = plt.subplots(figsize=(6.5, 3.6))
    width = 0.8 / len(series)
    for i, (metric, label, color, hatch) in enumerate(series):
        source = model if label.startswith("model") else baseline
        values = [source.get(f"{prefix}{metric}") for prefix, _ in groups]
        values = [v if isinstance(v, (int, float)) else 0.0 for v in values]
        xs = [g + (i - (len(series) - 1) / 2) * width for g in range(len(groups))]
        bars = ax.bar(xs, values, width, label=label, color=color, hatch=hatch, edgecolor="gray")
        ax.bar_label(bars, fmt="%.1f", fontsize=7)
    ax.set_xticks(range(len(groups)),
                  [f"{name} (n={model.get(f'{prefix}total', '?')})" for prefix, name in groups])
    ax.set_ylim(0, 128)  # room for the legend above the 100% bars
    ax.set_yticks(range(0, 101, 20))
    ax.set_ylabel("percent")
    ax.set_title("SQuAD 2.0 exact match and F1 by question type (test split)")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, loc="upper center", ncol=3)
    fig.tight_layout()
    return _save(fig, path)


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
    if task == "squad2" and isinstance(model.get("HasAns_f1"), (int, float)):
        name = _plot_squad2(model, baseline, os.path.join(root, "squad2_by_question_type.png"))
        lines += [f"![Exact match and F1 by question type]({name})", ""]
    per_class = model.get("per_class")
    if per_class:
        lines += _scores_table("Per class", "class", per_class)
        name = _plot_bars({c: v["f1"] for c, v in per_class.items()},
                          "F1 per class (test split)", os.path.join(root, "class_f1.png"))
        lines += [f"![F1 per class]({name})", ""]
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


def _stages_section(records):
    lines = ["## Stages", "", "| stage | outcome | seconds | fingerprint | key metrics |",
             "| --- | --- | --- | --- | --- |"]
    for name, rec in records.items():
        metrics = rec.get("metrics", {})
        shown = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                          for k, v in metrics.items() if k != "seconds" and isinstance(v, (int, float)))
        lines.append(f"| {name} | {rec.get('outcome')} | {metrics.get('seconds', '')} | "
                     f"`{rec.get('fingerprint')}` | {shown} |")
    return lines + [""]


def _training_section(root, records):
    """Pre-training and fine-tuning curves, one panel per unit."""
    pretrain = records.get("Pretrain", {})
    held_out = {k: v for k, v in pretrain.get("metrics", {}).items()
                if k.startswith("eval_") and panel_of(k) is not None}
    plots = []
    for record, title, png, extra in (
            (pretrain, "Pre-training", "pretraining.png", held_out),
            (records.get("Finetune", {}), "Fine-tuning", "finetuning.png", None)):
        history = _load_history(record.get("outputs", {}).get("history"))
        if history:
            name = _plot_training(history, title, os.path.join(root, png), extra)
            if name:
                plots.append((title, name))
    if not plots:
        return []
    lines = ["## Training curves", ""]
    for title, name in plots:
        lines += [f"![{title}]({name})", ""]
    return lines


def _serving_section(config, records):
    push = records.get("Push", {}).get("outputs", {})
    if not push:
        return []
    lines = ["## Serving", ""]
    if push.get("pushed"):
        lines += [f"Served model: `{config.model_name}` version {push['version']} at `{push['path']}`.", "",
                  "Start a server and query it:", "", "```", server_command(config),
                  client_command(config, 8500, records), "```", ""]
    else:
        lines += ["The model was not blessed, so nothing was pushed.", ""]
    return lines


def write_report(config, records):
    """Writes `<pipeline_root>/report.md` (+ PNGs, each with its `.axes.json`) and returns its path."""
    root = config.pipeline_root
    lines = ["# keras-bert pipeline report", "",
             f"Pipeline root: `{os.path.abspath(root)}`", ""]
    lines += _stages_section(records)
    lines += _training_section(root, records)
    lines += _evaluation_section(root, records.get("Evaluate", {}))
    lines += _serving_section(config, records)
    lines += _predict_section(records.get("Predict", {}))
    path = os.path.join(root, "report.md")
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    return path
