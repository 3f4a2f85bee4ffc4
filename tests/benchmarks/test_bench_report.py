"""`make bench`'s report: the table of ratios and the quiet-epoch filter."""

from benchmarks import finetune_throughput, run, workers


def test_table_has_one_row_per_result_with_its_ratio_and_variant():
    results = [
        {"case": "finetune_classifier", "precision": "bfloat16", "batch": 32, "speedup": 1.2249,
         "ours_examples_per_s": 55.8, "peer_examples_per_s": 45.6, "other_cpu_max": 0.01},
        {"case": "savedmodel_vs_hf_single_request", "config": "mini", "ratio": 0.5,
         "savedmodel_p50_ms": 4.9},
        {"case": "no_ratio", "note": "text is left out"},
    ]
    lines = run.markdown_table(results).splitlines()
    assert len(lines) == 2 + len(results)
    assert lines[2].startswith("| finetune_classifier | precision bfloat16, batch 32 | **1.22x** |")
    assert "ours_examples_per_s 55.8" in lines[2] and "peer_examples_per_s 45.6" in lines[2]
    assert "| **0.50x** |" in lines[3] and "config mini" in lines[3]
    assert "| - |" in lines[4] and "text" not in lines[4]


def test_only_quiet_epochs_count_unless_none_was_quiet():
    rows = [{"examples_per_s": 50.0, "other_cpu": 0.01},
            {"examples_per_s": 20.0, "other_cpu": 0.40},
            {"examples_per_s": 52.0, "other_cpu": 0.05}]
    assert [r["examples_per_s"] for r in workers.quiet(rows)] == [50.0, 52.0]
    busy = [{"examples_per_s": 20.0, "other_cpu": 0.4}]
    assert workers.quiet(busy) == busy


def test_synthetic_examples_are_cls_pieces_sep_then_padding():
    ids, mask, segments, labels = finetune_throughput.synthetic_examples(20, 64, seed=1)
    lengths = mask.sum(1)
    assert ids.shape == (20, 64) and lengths.min() >= 16 and lengths.max() <= 64
    for row, length in zip(ids, lengths):
        assert row[0] == 101 and row[length - 1] == 102 and not row[length:].any()
    assert not segments.any() and set(labels) <= set(range(finetune_throughput.NUM_CLASSES))


def test_timed_reports_the_rate_and_other_processes_share():
    row = workers.timed(lambda: sum(range(200_000)), work=10)
    assert row["seconds"] > 0 and abs(row["rate"] - 10 / row["seconds"]) < 1e-9
    assert 0.0 <= row["other_cpu"] <= 1.0
