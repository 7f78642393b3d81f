"""The benchmark suite's plumbing: smoke-sized runs of two benchmarks on tiny
inputs, the results schema, merging single-benchmark runs, peak memory of a
child process, and the row arithmetic.  (The figures themselves come from
`make bench` on a quiet machine; nothing here checks a speed.)"""

from __future__ import annotations

import argparse
import json
import shutil

import pytest

from chopinbot_tools import bench, bench_common, bench_memory, bench_speed
from conftest import CORPUS

ROW_KEYS = set(bench_common.ROW_FIELDS)
MACHINE_KEYS = {"cpu_model", "cores", "cores_usable", "torch", "torch_threads", "python", "numpy", "symusic",
                "loadavg_start", "loadavg_end"}


@pytest.fixture(scope="module")
def tiny_corpus(tmp_path_factory):
    folder = tmp_path_factory.mktemp("bench_corpus")
    for name in ("chpn-p1.mid", "chpn-p7.mid", "chpn-p9.mid", "chpn-p20.mid"):
        shutil.copy(CORPUS / name, folder)
    return folder


def _check_schema(res: dict) -> None:
    assert res["schema"] == bench_common.SCHEMA_VERSION
    assert MACHINE_KEYS <= set(res["machine"])
    assert isinstance(res["machine"]["cores"], int) and res["machine"]["cores"] >= 1
    assert isinstance(res["machine"]["cpu_model"], str) and res["machine"]["cpu_model"]
    assert res["rows"]
    for r in res["rows"]:
        assert set(r) == ROW_KEYS, r["name"]
        assert r["benchmark"] in res["benchmarks"]
        assert isinstance(r["figure"], float) and r["figure"] > 0, r
        assert isinstance(r["unit"], str) and r["unit"]
        assert r["better"] in ("higher", "lower")
        assert r["ratio"] is None or (isinstance(r["ratio"], float) and r["ratio"] > 0)
        assert (r["ratio"] is None) == (r["baseline_figure"] is None)
        assert r["met"] in (None, True, False)
        assert (r["met"] is None) or r["target"] is not None
        assert isinstance(r["notes"], str) and isinstance(r["details"], dict)
    for b in res["benchmarks"].values():
        assert b["seconds"] >= 0 and b["quick"] is True


def test_smoke_runs_write_json_and_table_and_merge(tmp_path, tiny_corpus):
    out = tmp_path / "bench"
    quiet = dict(out=out, smoke=True, corpus=tiny_corpus, music21=False, log=lambda s: None)
    first = bench.run_benchmarks(["prepare"], **quiet)
    assert {r["name"] for r in first["rows"]} == {"prepare_4_files_jobs1", "prepare_4_files_jobs2"}
    both = bench.run_benchmarks(["generate"], **quiet)  # run on its own: keeps prepare's rows
    on_disk = json.loads((out / "results.json").read_text())
    assert on_disk == both
    _check_schema(on_disk)
    names = [r["name"] for r in on_disk["rows"]]
    assert names == ["prepare_4_files_jobs1", "prepare_4_files_jobs2", "generate_batch1", "generate_batch32",
                     "generate_engine_batch1", "realtime_factor_batch1"]
    assert set(on_disk["benchmarks"]) == {"prepare", "generate"}
    g1 = next(r for r in on_disk["rows"] if r["name"] == "generate_batch1")
    assert g1["target"]["on"] == "figure" and g1["target"]["min"] == 2000 and g1["baseline_figure"] > 0
    assert g1["details"]["incremental"]["steps"] == 8
    md = (out / "results.md").read_text()
    assert "| benchmark | figure | unit | baseline |" in md and "Quick mode" in md
    assert all(f"| {n} |" in md for n in names)
    assert not list(out.glob(".*.tmp"))  # atomic writes leave no temp files


def test_length_bench_times_whole_commands_short_and_long(tmp_path, tiny_corpus):
    res = bench.run_benchmarks(["length"], out=tmp_path / "bench", smoke=True, corpus=tiny_corpus, music21=False,
                               log=lambda s: None)
    [row] = res["rows"]
    _check_schema(res)
    assert row["name"] == "generate_long_piece" and row["target"] == {
        "on": "ratio", "min": 0.8, "text": "the rate at 200 states >= 80 % of the rate at 20"}
    short, long = row["details"]["20"], row["details"]["200"]
    assert short["states"] == 20 and long["states"] == 200 and row["ratio"] == pytest.approx(
        long["states_per_s"] / short["states_per_s"], rel=1e-3)
    assert row["met"] is (row["ratio"] >= 0.8)


def test_dataset_memory_against_float64_windows(tiny_dataset_dir):
    from chopinbot.dataset.store import Dataset

    dm = bench_memory.dataset_memory(tiny_dataset_dir)
    ds = Dataset(tiny_dataset_dir)
    assert dm["states"] == len(ds.records) and dm["bytes_per_state"] == 31
    assert dm["windows"] == sum(max(0, f["states"] - 16) for f in ds.manifest["files"])
    assert dm["window_bytes"] == dm["windows"] * 16 * 108 * 8
    assert dm["ours_bytes"] == dm["record_bytes"] + dm["derived_bytes"]
    assert dm["window_bytes"] > 100 * dm["ours_bytes"]


def test_child_process_reports_its_own_peak_memory():
    res = bench_common.run_child("floor_prepare", {})
    # its own peak (VmHWM starts afresh at exec), not this torch-laden parent's
    assert 5 < res["peak_rss_mb"] < 200
    assert res["workers_peak_rss_mb"] == 0.0


def test_row_ratio_reads_times_better():
    faster = bench_common.make_row("x", "t", 2.0, "s", better="lower", baseline_figure=400.0,
                            target={"on": "ratio", "min": 200, "text": ""})
    assert faster["ratio"] == 200.0 and faster["met"] is True
    rate = bench_common.make_row("x", "r", 500.0, "/s", baseline_figure=100.0, target={"on": "figure", "min": 1000})
    assert rate["ratio"] == 5.0 and rate["met"] is False
    none = bench_common.make_row("x", "n", 1.0, "s")
    assert none["ratio"] is None and none["met"] is None and none["baseline_source"] is None


def test_synthetic_corpus_is_transposed_and_stretched(tmp_path):
    import symusic

    src = [CORPUS / "chpn-p7.mid"]
    files = bench_memory.build_synthetic_corpus(tmp_path, 3, src)
    assert len({f.read_bytes() for f in files}) == 3
    a, b = symusic.Score(str(files[0])), symusic.Score(str(files[1]))
    assert b.tracks[1].notes[0].pitch == a.tracks[1].notes[0].pitch + 1  # shift +1
    assert b.key_signatures[0].key == (a.key_signatures[0].key + 7 + 5) % 12 - 5


def test_cli_wrapper_parses_the_same_options():
    from chopinbot.cli import COMMANDS, build_parser

    assert COMMANDS["bench"][0] == "chopinbot_tools.bench"  # loaded by name: the command line imports no tool
    assert build_parser("bench").parse_args(["bench", "generate", "--quick"]).name == "generate"
    p = argparse.ArgumentParser()
    bench.add_arguments(p)
    args = p.parse_args(["generate", "--quick", "--out", "x", "--jobs", "3"])
    assert (args.name, args.quick, args.out, args.jobs) == ("generate", True, "x", 3)
    assert p.parse_args([]).name == "all"
    with pytest.raises(SystemExit):
        p.parse_args(["nonsense"])


def test_training_step_benchmark_runs_both_modes(tiny_dataset_dir):
    """The train benchmark's step mirrors train.py (and imports its helpers): one
    update of a tiny model in each mode catches drift in those interfaces."""
    from chopinbot.dataset.batches import SplitData
    from chopinbot.dataset.store import Dataset
    from chopinbot.model.network import ModelConfig
    from chopinbot.training.train import TrainConfig, build_model_config

    ds = Dataset(tiny_dataset_dir)
    mcfg = build_model_config(TrainConfig(model=ModelConfig(layers=1, hidden=16, duration_classes=[1.0])), ds)
    split = SplitData(ds, "train", mcfg.vocab)
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a tiny model: more threads only contend on a busy machine
    try:
        seq = bench_speed._train_throughput(split, mcfg, 0, 4, 16, 0, 1)
        win = bench_speed._train_throughput(split, mcfg, 16, 4, 16, 0, 1)
    finally:
        torch.set_num_threads(threads)
    assert 0 < seq["predictions"] <= 4 * 16 and win["predictions"] == 4  # chunks may end early at a segment end
    assert seq["predictions_per_s"] > 0 and win["predictions_per_s"] > 0
    assert win["states_computed_per_update"] == 64
