"""`make bench`: every benchmark case, side by side with its peer, as ratios.

    python -m benchmarks.run [--only NAME ...] [--out bench_out/results.json]
"""

import argparse
import importlib
import json
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# name -> module with run() returning a list of result dicts.
CASES = {
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
    args = parser.parse_args(argv)
    results = []
    for name, module in CASES.items():
        if args.only and name not in args.only:
            continue
        print(f"== {name}", flush=True)
        results += importlib.import_module(module).run()
    for name, (module, argv) in SCRIPTS.items():
        if args.only and name not in args.only:
            continue
        print(f"== {name}", flush=True)
        importlib.import_module(module).main(argv)
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(results, f, indent=2)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
