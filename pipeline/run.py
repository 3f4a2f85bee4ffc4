"""`python -m pipeline.run --runner=DirectRunner`: raw corpus → served BERT model.

Stages, in order (TFX style: each reads artifacts by URI and writes its own folder):

    ExampleGen → Vocab → PretrainingData → Pretrain → TaskData → Finetune → Export
    → Evaluate → Push (→ Predict, with `--predict FILE`)

Known flags (see `pipeline.config.PipelineConfig`) are parsed first; everything else
goes to Beam's `PipelineOptions` unchanged. A second run with the same inputs and
parameters reuses finished stages; `--force STAGE` reruns that stage and the ones
after it; an interrupted run resumes where it stopped (training from its checkpoint).
At the end: `report.md` in the pipeline root, and (unless `--serve_check false`) the
pushed model is served by `serving.server`, queried once over gRPC, and stopped; the
closing lines give the commands that start a server on the pushed model and query it.
"""

import dataclasses
import json
import os
import shutil
import sys
import time

from components import common
from keras_bert import precision
from pipeline import stages
from pipeline.config import PipelineConfigError, parse_flags
from pipeline.store import StageRun, fingerprint


def _line(text):
    common.log_stage("pipeline", text)


def run_pipeline(config, beam_args, plan=None):
    """Runs every stage; returns {stage name: record}.

    Args:
        config: the `PipelineConfig`.
        beam_args: flags for Beam's `PipelineOptions`, passed to every stage.
        plan: the stages to run, in order. Defaults to `stages.plan(config)`.
    """
    os.makedirs(config.pipeline_root, exist_ok=True)
    # `--mixed_precision auto` is decided once, here: the stages (and their
    # fingerprints) see what it became on this machine.
    chosen, reason = precision.resolve(config.mixed_precision)
    if config.mixed_precision == precision.AUTO:
        _line(f"precision: auto -> {chosen} ({reason})")
        config = dataclasses.replace(config, mixed_precision=chosen)
    with open(os.path.join(config.pipeline_root, "config.json"), "w") as f:
        json.dump({"config": config.to_dict(), "beam_args": beam_args,
                   "mixed_precision_reason": reason}, f, indent=2)
    plan = stages.plan(config) if plan is None else plan
    names = [s.name for s in plan]
    if config.force and config.force not in names:
        raise PipelineConfigError(f"--force {config.force}: no such stage; stages: {', '.join(names)}")
    forced = set(names[names.index(config.force):]) if config.force else set()
    records = {}
    total = len(plan)
    for i, stage in enumerate(plan, 1):
        upstream = {dep: records[dep] for dep in stage.deps}
        params = stage.params(config)
        inputs = stage.inputs(config, upstream)
        fp = fingerprint(params, inputs)
        run = StageRun(config.pipeline_root, stage.name)
        old = run.load()
        if (stage.name not in forced and old and old.get("fingerprint") == fp
                and old.get("outcome") == "succeeded"):
            records[stage.name] = old
            _line(f"[{i}/{total}] {stage.name}: cached (fingerprint {fp}, finished {old['end']})")
            continue
        if stage.name in forced and old:
            # Same inputs, but asked to redo: start clean.
            shutil.rmtree(run.dir, ignore_errors=True)
            old = None
        resumed = old is not None and old.get("fingerprint") == fp
        if resumed and not stage.resumable:
            # What an interrupted run left (half shards, temporary files) goes: the
            # stage writes its output again from nothing.
            shutil.rmtree(run.output_dir, ignore_errors=True)
        _line(f"[{i}/{total}] {stage.name}: {'resuming' if resumed else 'running'} "
              f"(fingerprint {fp})")
        record = run.start(params, inputs, fp)
        started = time.time()
        try:
            outputs, metrics = stage.execute(config, beam_args, upstream, run.output_dir)
        except BaseException as e:
            run.finish(record, {}, {}, outcome="failed", error=f"{type(e).__name__}: {e}")
            raise
        metrics = dict(metrics, seconds=round(time.time() - started, 1))
        records[stage.name] = run.finish(record, outputs, metrics)
        shown = ", ".join(f"{k}={v}" for k, v in metrics.items() if isinstance(v, (int, float)))
        _line(f"[{i}/{total}] {stage.name}: done in {metrics['seconds']} s ({shown})")
    return records


def main(argv=None):
    try:
        config, beam_args = parse_flags(argv)
    except PipelineConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    from components import runners
    try:
        # On the DaskRunner without a cluster address, one LocalCluster for all Beam jobs.
        with runners.shared_dask_cluster(beam_args) as beam_args:
            records = run_pipeline(config, beam_args)
    except PipelineConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    from pipeline import report
    report_path = report.write_report(config, records)
    _line(f"report: {report_path}")
    from pipeline import serve_check
    if records.get("Push", {}).get("outputs", {}).get("pushed"):
        if config.serve_check:
            serve_check.query_once(config, records)
        for line in serve_check.how_to_serve(config, records):
            _line(line)
    else:
        _line("nothing pushed (the model was not blessed): no model to serve")
    return 0


if __name__ == "__main__":
    sys.exit(main())
