"""Training with several processes: torchrun, DistributedDataParallel, gloo on loopback."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

from pyro_saccade import training
from pyro_saccade.data import TwoDigitCluttered
from pyro_saccade.training import epoch_subset, load

pytestmark = pytest.mark.skipif(not dist.is_available(), reason="torch.distributed unavailable")

REPO = Path(__file__).resolve().parents[1]


def torchrun(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """``torchrun --standalone --nproc_per_node 2 ARGS``: two CPU processes on a free local port."""
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env.update(OMP_NUM_THREADS="1", PYTHONPATH=f"{REPO}{os.pathsep}{env.get('PYTHONPATH', '')}")
    if sys.platform == "linux":
        env.setdefault("GLOO_SOCKET_IFNAME", "lo")  # loopback, whatever the hostname resolves to
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node"]
    return subprocess.run(
        [*command, "2", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=180
    )


def test_processes_take_disjoint_shards_that_make_the_global_batches(monkeypatch) -> None:
    dataset = TwoDigitCluttered("identify", 40, n=30, distractors=0)
    shards = []
    for rank in range(2):
        monkeypatch.setattr(training, "world", lambda rank=rank: (rank, 2))
        shards.append(list(epoch_subset(dataset, epoch=1, size=15).indices))
    assert shards == [[15, 17, 19, 21, 23, 25, 27], [16, 18, 20, 22, 24, 26, 28]]
    # After k steps of b per process, a resumed process starts at the global position 2 * k * b.
    resumed = list(epoch_subset(dataset, epoch=1, size=15, start=2).indices)
    assert resumed == [20, 22, 24, 26, 28]


def test_torchrun_trains_one_model_on_two_processes(tmp_path: Path) -> None:
    out = tmp_path / "run"
    result = torchrun(
        "-m", "pyro_saccade.cli", "train", "--canvas", "40", "--distractors", "2",
        "--epochs", "2", "--train-size", "24", "--test-size", "10", "--batch-size", "8",
        "--glimpses", "2", "--crop", "16", "--proxy", "16", "--quiet", "--out", str(out),
        cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("checkpoint:") == 1  # one report, not one per process
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    # One writer: one line per epoch. 24 canvases in batches of 8 over 2 processes: 3 steps each.
    assert [r["epoch"] for r in records] == [1, 2]
    assert all(r["processes"] == 2 for r in records)
    payload = torch.load(out / "checkpoint.pt", weights_only=True)
    assert json.loads(payload["position"])["epoch"] == 2
    assert len(payload["rngs"]) == 2 and not torch.equal(*payload["rngs"])
    model = load(out)
    probs = model.predict(torch.rand(2, 1, 40, 40))
    assert probs.shape == (2, 55) and torch.allclose(probs.sum(-1), torch.ones(2))


REPLICAS = """
import torch
from pyro_saccade.training import TrainConfig, process_group, sync_replicas, train, world

with process_group("cpu"):
    rank, processes = world()
    report = []
    torch.manual_seed(0)
    layer = torch.nn.Linear(3, 2)
    sync_replicas(layer)
    report.append(f"{processes} equal replicas pass")
    if rank == 1:
        with torch.no_grad():
            layer.weight[0, 0] += 1e-6
    try:
        sync_replicas(layer)
    except RuntimeError as error:
        report.append(str(error))
    try:
        train(train_config=TrainConfig(batch_size=5), out="unused", progress=False)
    except ValueError as error:
        report.append(str(error))
    with open(f"rank{rank}.txt", "w") as f:  # one file each: printed lines could interleave
        f.write("\\n".join(report))
"""


def test_replicas_that_differ_are_caught_on_every_process(tmp_path: Path) -> None:
    (tmp_path / "replicas.py").write_text(REPLICAS)
    result = torchrun("replicas.py", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    for rank in range(2):
        assert (tmp_path / f"rank{rank}.txt").read_text().splitlines() == [
            "2 equal replicas pass",
            "model replicas diverged: 1 of 2 processes hold parameters different from rank 0's",
            "batch size 5 does not split evenly over 2 processes",
        ]
    assert not (tmp_path / "unused").exists()
