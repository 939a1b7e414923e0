"""saccade benchmark: tiny end-to-end runs on dense and lazy canvases, the rules that skip
unaffordable cells, and the error of an installation without the benchmark's code."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from pyro_saccade import SaccadeConfig
from pyro_saccade.cli import benchmark, main
from pyro_saccade.config import CELL


def test_tiny_benchmark_writes_the_report(tmp_path: object) -> None:
    args = ["benchmark", "--sizes", "64", "--batch-sizes", "1", "--repeats", "1"]
    args += ["--quiet", "--out", str(tmp_path)]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "benchmark.json").read_text())
    assert {"machine", "settings", "params", "tiles", "results", "seconds"} <= set(report)
    assert set(report["params"]) == {"saccade", "resnet18-tiled", "resnet18", "proxy-cnn"}
    cells = {(r["subject"], r["phase"]): r for r in report["results"]}
    assert set(cells) == {
        ("saccade", "proxy"),
        ("saccade", "infer"),
        ("saccade", "predict"),
        ("saccade", "train"),
        ("resnet18-tiled", "infer"),
        ("resnet18-tiled", "train"),
        ("resnet18", "infer"),
        ("resnet18", "train"),
        ("proxy-cnn", "infer"),
    }
    for key in [("saccade", "infer"), ("saccade", "train"), ("resnet18-tiled", "infer")]:
        cell = cells[key]
        assert cell["status"] == "ok", cell
        assert cell["runs"] == 1 and cell["latency_s"] > 0 and cell["memory_mb"] >= 0
    # Inference is also measured cold, in a process of its own; training steps are not.
    for key in [("saccade", "predict"), ("resnet18-tiled", "infer"), ("proxy-cnn", "infer")]:
        cell = cells[key]
        assert cell["cold_mb"] >= cell["cold_file_mb"] >= 0 and cell["first_s"] > 0, cell
    assert "cold_mb" not in cells[("saccade", "train")]
    # Never a number for what was not measured: a batch-norm head cannot train on one image.
    skipped = cells[("resnet18", "train")]
    assert skipped["status"] == "skipped" and "latency_s" not in skipped
    assert "batch of 1" in skipped["reason"]
    assert (tmp_path / "benchmark.png").stat().st_size > 0
    text = (tmp_path / "benchmark.md").read_text()
    assert "### Inference latency" in text and "Targets at batch 1" in text


def test_lazy_benchmark_times_inference_on_canvases_never_drawn(tmp_path: object) -> None:
    # 20000² float32 pixels would take 1.5 GB: a lazy canvas holds only its patches.
    args = ["benchmark", "--lazy", "--sizes", "150,20000", "--batch-sizes", "1", "--repeats", "1"]
    args += ["--memory-limit", "0.5", "--quiet", "--out", str(tmp_path)]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "benchmark.json").read_text())
    assert report["settings"]["lazy"] and set(report["params"]) == {"saccade", "proxy-cnn"}
    cells = {(r["subject"], r["phase"], r["canvas"][0]): r for r in report["results"]}
    assert {key[:2] for key in cells} == {
        ("saccade", "proxy"),
        ("saccade", "infer"),
        ("saccade", "predict"),
        ("proxy-cnn", "infer"),
    }
    for cell in cells.values():
        assert cell["status"] == "ok", cell
    assert cells[("saccade", "predict", 20000)]["cold_mb"] >= 0
    assert "On lazy canvases, batch 1" in (tmp_path / "benchmark.md").read_text()


def test_cells_beyond_the_budget_or_memory_are_skipped_with_a_reason() -> None:
    skip_reason = benchmark.benchmark_code().skip_reason
    measured = {
        "subject": "resnet18",
        "phase": "infer",
        "canvas": (100, 100),
        "batch": 1,
        "status": "ok",
        "latency_s": 0.5,
        "warmup_s": 0.5,
        "memory_mb": 10.0,
    }
    # 100x the pixels of a 0.5 s run: about 50 s, so a warm-up and a run need 100 s.
    reason = skip_reason("resnet18", "infer", (1000, 1000), 1, [measured], 60.0, 1e6)
    assert "50 s per run" in reason and "60 s budget" in reason
    assert skip_reason("resnet18", "infer", (1000, 1000), 1, [measured], 200.0, 1e6) is None
    # 1000 MB of activations (scaled) plus a 3.8 MB input exceed a 500 MB limit.
    reason = skip_reason("resnet18", "infer", (1000, 1000), 1, [measured], 200.0, 500.0)
    assert "memory limit" in reason
    # The saccade model's cost is flat in the canvas: only its input has to fit.
    assert skip_reason("saccade", "infer", (1000, 1000), 1, [], 1.0, 500.0) is None
    assert "input" in skip_reason("saccade", "infer", (20000, 20000), 1, [], 1.0, 500.0)
    # A lazy canvas holds only its patches, whatever its size.
    assert skip_reason("saccade", "infer", (20000, 20000), 1, [], 1.0, 500.0, lazy=True) is None


def test_without_a_source_checkout_the_command_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(benchmark, "BENCHMARKS", tmp_path / "benchmarks")
    result = CliRunner().invoke(main, ["benchmark", "--quiet", "--out", str(tmp_path / "out")])
    assert result.exit_code == 1 and result.exception.__class__ is SystemExit
    (line,) = result.output.splitlines()
    assert line.startswith("Error: the benchmark's code is not installed: it is in benchmarks/")


@pytest.mark.parametrize(
    "path", sorted((Path(__file__).parents[1] / "docs/benchmark-megapixel").glob("*.json"))
)
def test_the_documented_benchmark_configs_build_a_model(path: Path) -> None:
    # benchmarks/megapixel.sh times these configurations by default
    config = SaccadeConfig.from_dict(json.loads(path.read_text())["model"])
    assert config.proxy % CELL == 0
