"""`make bench`: every benchmark case, side by side with its peer, as ratios.

    python -m benchmarks.run [--only NAME ...] [--out bench_out/results.json]

Every case runs in a process of its own (`--case NAME`), so that one case's models,
servers and thread pools are gone before the next starts: in one process the
encoder case's BERT-base models (both frameworks, three precisions) were still held
when the serving case built its own, and together they outgrew a 24 GiB machine.
"""

import argparse
import importlib
import json
import os
import subprocess
import sys
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# name -> module with run() returning a list of result dicts.
CASES = {
    "finetune_throughput": "benchmarks.finetune_throughput",
    "encoder_latency": "benchmarks.encoder_latency",
    "serving_bert": "benchmarks.serving_bert",
    "pretrain_throughput": "benchmarks.pretrain_throughput",
}

# Cases that print their own report (command line as `python -m MODULE ARGS`).
SCRIPTS = {
    "pretraining_data": ("benchmarks.pretraining_data", []),
    "tokenizer": ("benchmarks.tokenizer", []),
    "serving_load": ("benchmarks.serving_load", ["--bert", "tiny", "--clients", "8",
                                                 "--requests", "250", "--reload"]),
}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--only", nargs="*", default=None, choices=sorted(CASES) + sorted(SCRIPTS))
    parser.add_argument("--out", default="bench_out/results.json")
    parser.add_argument("--case", default=None, choices=sorted(CASES) + sorted(SCRIPTS),
                        help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.case:  # one case, in this process; its results to --out
        _run_case(args.case, args.out)
        return
    results, failed = [], []
    for name in list(CASES) + list(SCRIPTS):
        if args.only and name not in args.only:
            continue
        print(f"== {name}", flush=True)
        with tempfile.TemporaryDirectory() as tmp:
            part = os.path.join(tmp, "results.json")
            code = subprocess.call([sys.executable, "-m", "benchmarks.run", "--case", name,
                                    "--out", part])
            if code != 0:
                failed.append(name)
                print(f"== {name} failed (exit code {code})", flush=True)
            elif os.path.exists(part):
                with open(part) as f:
                    results += json.load(f)
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(results, f, indent=2)
    table = os.path.splitext(args.out)[0] + ".md"
    with open(table, "w") as f:
        f.write(markdown_table(results))
    print(f"wrote {args.out} and {table}")
    if failed:
        raise SystemExit(f"benchmark case(s) failed: {', '.join(failed)}")


def _run_case(name, out):
    """Runs one case in this process; a result-returning case writes them to `out`."""
    if name in CASES:
        results = importlib.import_module(CASES[name]).run()
        with open(out, "w") as f:
            json.dump(results, f)
    else:
        module, argv = SCRIPTS[name]
        importlib.import_module(module).main(argv)


# Keys that name a case's variant, in the order the table shows them.
_VARIANT_KEYS = ("config", "model", "precision", "dtype", "jit_compile", "batch", "seq_len")
# Ratio keys (> 1: ours is better), the first one present is the case's ratio.
_RATIO_KEYS = ("speedup", "ratio", "throughput_ratio_server_over_keras")


def markdown_table(results):
    """One row per result: the case, its variant, the ratio and the raw figures."""
    lines = ["| case | variant | ratio (> 1: ours better) | figures |",
             "| --- | --- | --- | --- |"]
    for row in results:
        variant = ", ".join(f"{k} {row[k]}" for k in _VARIANT_KEYS if k in row)
        ratio = next((row[k] for k in _RATIO_KEYS if k in row), None)
        figures = ", ".join(
            f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
            for k, v in row.items()
            if k not in _VARIANT_KEYS and k not in _RATIO_KEYS and k != "case"
            and isinstance(v, (int, float)) and not isinstance(v, bool))
        shown = f"**{ratio:.2f}x**" if isinstance(ratio, (int, float)) else "-"
        lines.append(f"| {row.get('case', '?')} | {variant} | {shown} | {figures} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
