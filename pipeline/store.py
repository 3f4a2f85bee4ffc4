"""Artifact store: one folder per stage under the pipeline root, with a JSON record.

`<root>/<Stage>/record.json` holds the stage's inputs (by URI), parameters, the
fingerprint of both, start/end time, outcome, outputs and metrics. A stage whose
record has the same fingerprint and outcome "succeeded" is reused; one with the same
fingerprint that did not finish is run again **in the same folder**, so long stages
(training) resume from their own checkpoints (`pipeline.run` empties the output
folder of stages that do not resume); a changed fingerprint clears the folder.
"""

import datetime
import glob
import hashlib
import json
import os
import shutil

RECORD = "record.json"


def _now():
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def file_fingerprint(pattern):
    """A fingerprint of the files a glob (or comma-separated globs) matches."""
    h = hashlib.sha256()
    for part in str(pattern).split(","):
        for path in sorted(glob.glob(part)) or [part]:
            if os.path.isfile(path):
                st = os.stat(path)
                h.update(f"{path}:{st.st_size}:{st.st_mtime_ns}".encode())
            elif os.path.isdir(path):
                for root, _, files in sorted(os.walk(path)):
                    for name in sorted(files):
                        p = os.path.join(root, name)
                        st = os.stat(p)
                        h.update(f"{p}:{st.st_size}:{st.st_mtime_ns}".encode())
            else:
                h.update(f"missing:{path}".encode())
    return h.hexdigest()[:16]


def fingerprint(params, inputs):
    """sha256 over parameters and input fingerprints (JSON, sorted keys)."""
    blob = json.dumps({"params": params, "inputs": inputs}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


class StageRun:
    """The folder and record of one stage execution."""

    def __init__(self, root, name):
        self.name = name
        self.dir = os.path.join(root, name)
        self.output_dir = os.path.join(self.dir, "output")
        self.record_path = os.path.join(self.dir, RECORD)

    def load(self):
        if not os.path.exists(self.record_path):
            return None
        with open(self.record_path) as f:
            return json.load(f)

    def save(self, record):
        os.makedirs(self.dir, exist_ok=True)
        tmp = self.record_path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(record, f, indent=2, sort_keys=True, default=str)
        os.replace(tmp, self.record_path)

    def start(self, params, inputs, fp):
        """Prepares the folder; clears it when the fingerprint changed."""
        old = self.load()
        if old is not None and old.get("fingerprint") != fp and os.path.isdir(self.dir):
            shutil.rmtree(self.dir)
        os.makedirs(self.output_dir, exist_ok=True)
        record = {"stage": self.name, "params": params, "inputs": inputs, "fingerprint": fp,
                  "start": _now(), "end": None, "outcome": "running", "outputs": {},
                  "metrics": {}, "resumed": old is not None and old.get("fingerprint") == fp}
        self.save(record)
        return record

    def finish(self, record, outputs, metrics, outcome="succeeded", error=None):
        record.update(outputs=outputs, metrics=metrics, outcome=outcome, end=_now())
        if error:
            record["error"] = error
        self.save(record)
        return record
