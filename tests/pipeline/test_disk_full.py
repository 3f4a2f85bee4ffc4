"""A full disk under every writer: a clear error naming the path, nothing half-written
visible, and the same call succeeding once there is space.

The disk is made full with `RLIMIT_FSIZE` in a subprocess (no privileges needed; see
`disk_full_writers.py`). Where this machine lets the test mount a small tmpfs, a
push into a really full filesystem is tried as well.
"""

import json
import os
import subprocess
import sys

import pytest

LIMIT = 32 * 1024


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    work = tmp_path_factory.mktemp("disk_full")
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    proc = subprocess.run([sys.executable, "-m", "tests.pipeline.disk_full_writers", str(work),
                           str(LIMIT)], capture_output=True, text=True, env=env, timeout=600)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULTS ")]
    assert proc.returncode == 0 and lines, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = json.loads(lines[-1][len("RESULTS "):])
    print("\n[disk full] " + "\n[disk full] ".join(f"{k}: {v['error']}" for k, v in out.items()))
    return work, out


# writer -> (the path the error must name, what a reader finds after the rerun)
EXPECTED = {
    "shards": (os.path.join("documents", "documents-00000-of-00001.jsonl.gz"),
               ["documents-00000-of-00001.jsonl.gz"]),
    "checkpoint": (os.path.join("checkpoints", "ckpt-1"), ["ckpt-1"]),
    "export": (os.path.join("exports", "m", "1"), ["1"]),
    "push": (os.path.join("serving", "m"), ["1"]),
}


@pytest.mark.slow
@pytest.mark.parametrize("writer", sorted(EXPECTED))
def test_full_disk_fails_clearly_leaves_nothing_and_rerun_succeeds(results, writer):
    work, out = results
    result = out[writer]
    path, after_rerun = EXPECTED[writer]
    assert result["error"], f"{writer}: writing past the limit did not fail"
    assert "File too large" in result["error"], result["error"]
    assert os.path.join(str(work), writer, path) in result["error"], result["error"]
    # Nothing a reader (a glob, tf.train.latest_checkpoint, a model server) would pick up.
    assert result["visible_after_failure"] == [], result
    assert "rerun_error" not in result, result.get("rerun_error")
    assert result["visible_after_rerun"] == after_rerun, result


def _can_mount_tmpfs(folder):
    if os.geteuid() != 0:
        return False
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(folder)],
                          capture_output=True)
    return proc.returncode == 0


def test_push_into_a_full_tmpfs(tmp_path):
    import tensorflow as tf

    from components import push
    export_dir = tmp_path / "export" / "1"
    module = tf.Module()
    module.w = tf.Variable(tf.ones([256, 1024]))  # 1 MiB: more than the tmpfs holds.
    module.serve = tf.function(lambda text: {"n": tf.strings.length(text)},
                               input_signature=[tf.TensorSpec([None], tf.string)])
    tf.saved_model.save(module, str(export_dir), signatures={"serving_default": module.serve})
    blessing = tmp_path / "blessing.json"
    blessing.write_text(json.dumps({"blessed": True, "model": str(export_dir)}))
    serving = tmp_path / "serving"
    serving.mkdir()
    if not _can_mount_tmpfs(serving):
        pytest.skip("cannot mount a tmpfs here (the RLIMIT_FSIZE tests cover full disks)")
    try:
        spec = push.PushSpec(export_dir=str(export_dir), blessing=str(blessing),
                             serving_base=str(serving), model_name="m")
        with pytest.raises(push.PushError) as excinfo:
            push.run(spec)
        message = str(excinfo.value)
        assert "No space left on device" in message and str(serving / "m") in message, message
        assert [n for n in os.listdir(serving / "m") if n.isdigit()] == []
        subprocess.run(["mount", "-o", "remount,size=8m", str(serving)], check=True)
        assert push.run(spec)["version"] == 1
        assert sorted(os.listdir(serving / "m")) == ["1"]
    finally:
        subprocess.run(["umount", str(serving)], check=False)
