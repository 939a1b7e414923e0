"""Training with several processes: torchrun, DistributedDataParallel, gloo on loopback."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from click.testing import CliRunner
from inject import after_step, signal_self

from pyro_saccade.checkpoint import load, read_checkpoint
from pyro_saccade.cli import main
from pyro_saccade.data import TwoDigitCluttered
from pyro_saccade.prediction import predict
from pyro_saccade.training import epoch_subset
from pyro_saccade.training.distributed import restarts_share_a_store

pytestmark = pytest.mark.skipif(not dist.is_available(), reason="torch.distributed unavailable")

REPO = Path(__file__).resolve().parents[1]


def torchrun_command(*args: str) -> tuple[list[str], dict[str, str]]:
    """``torchrun --standalone --nproc_per_node 2 ARGS`` (two CPU processes on a free local port)
    and its environment."""
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env.update(OMP_NUM_THREADS="1", PYTHONPATH=f"{REPO}{os.pathsep}{env.get('PYTHONPATH', '')}")
    # A store of the workers' own in every attempt: torchrun's shared one keeps the previous
    # attempt's keys, which can make a restart fail or hang (distributed.process_group warns).
    env["TORCH_DISABLE_SHARE_RDZV_TCP_STORE"] = "1"
    if sys.platform == "linux":
        env.setdefault("GLOO_SOCKET_IFNAME", "lo")  # loopback, whatever the hostname resolves to
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node"]
    return [*command, "2", *args], env


def torchrun(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    command, env = torchrun_command(*args)
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=180)


# 48 canvases in global batches of 8 over 2 processes: 6 steps of 4 canvases each per epoch.
TRAIN = ["-m", "pyro_saccade.cli", "train", "--canvas", "40", "--distractors", "2"]
TRAIN += ["--epochs", "2", "--train-size", "48", "--test-size", "10", "--batch-size", "8"]
TRAIN += ["--glimpses", "2", "--crop", "16", "--proxy", "16", "--quiet"]
TIMING = ("train_seconds", "canvases_per_second")


def metrics(out: Path) -> list[dict]:
    """metrics.jsonl without the wall-clock fields."""
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k not in TIMING} for r in records]


@pytest.fixture(scope="module")
def two_processes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An uninterrupted run of TRAIN under torchrun."""
    cwd = tmp_path_factory.mktemp("two_processes")
    result = torchrun(*TRAIN, "--out", str(cwd / "run"), cwd=cwd)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("checkpoint:") == 1  # one report, not one per process
    return cwd / "run"


def shares(processes: int, size: int, start: int = 0) -> list[list[int]]:
    """The canvases of epoch 1 (of ``size``) that each process takes, skipping ``start`` of its
    own."""
    dataset = TwoDigitCluttered("identify", 40, n=2 * size, distractors=0)
    return [
        list(epoch_subset(dataset, 1, size, start, rank, processes).indices)
        for rank in range(processes)
    ]


def test_processes_take_disjoint_shards_that_make_the_global_batches() -> None:
    assert shares(2, 15) == [[15, 17, 19, 21, 23, 25, 27], [16, 18, 20, 22, 24, 26, 28]]
    # After k steps of b per process, a resumed process starts at the global position 2 * k * b.
    assert shares(2, 15, start=2) == [[19, 21, 23, 25, 27], [20, 22, 24, 26, 28]]


def test_a_run_resumed_on_another_number_of_processes_continues_with_the_same_canvases() -> None:
    # 2 steps of a global batch of 4: 2 canvases per step each for two processes, 4 for one.
    one, two = shares(1, 16, start=2 * 4), shares(2, 16, start=2 * 2)
    assert one == [list(range(24, 32))] and sorted(two[0] + two[1]) == one[0]


def test_torchrun_trains_one_model_on_two_processes(two_processes: Path) -> None:
    out = two_processes
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2]  # one writer: one line per epoch
    assert all(r["processes"] == 2 for r in records)
    payload = torch.load(out / "checkpoint.pt", weights_only=True)
    assert payload["train_state"]["epoch"] == 2
    assert len(payload["rngs"]) == 2 and not torch.equal(*payload["rngs"])
    model = load(out)
    probs = predict(model, torch.rand(2, 1, 40, 40))
    assert probs.shape == (2, 55) and torch.allclose(probs.sum(-1), torch.ones(2))


def test_a_run_interrupted_on_one_process_continues_on_two(tmp_path: Path) -> None:
    out = tmp_path / "run"
    with after_step(3, signal_self(signal.SIGINT)):  # Ctrl-C halfway through epoch 1
        first = CliRunner().invoke(main, [*TRAIN[2:], "--out", str(out)])
    assert first.exit_code == 130, first.output
    assert saved_position(out) == (0, 3) and len(read_checkpoint(out)["rngs"]) == 1
    before = read_checkpoint(out)["train_state"]["seconds"]  # epoch 1's training until Ctrl-C
    result = torchrun(*TRAIN, "--resume", "--out", str(out), cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.splitlines()[0] == f"resuming the run in {out} at epoch 1 of 2, step 4"
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [(r["epoch"], r["processes"]) for r in records] == [(1, 2), (2, 2)]
    # Epoch 1 went on from its 25th canvas: 24 were left for the two processes.
    resumed = records[0]["canvases_per_second"] * (records[0]["train_seconds"] - before)
    assert resumed == pytest.approx(24)
    assert len(read_checkpoint(out)["rngs"]) == 2  # their own noise from now on
    assert predict(load(out), torch.rand(1, 1, 40, 40)).isfinite().all()


REPLICAS = """
import torch
from pyro_saccade.training import TrainConfig, train
from pyro_saccade.training.distributed import process_group, sync_replicas, world

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


@pytest.mark.parametrize(
    ("shared", "restarts", "hazard"),
    [("True", "2", True), ("False", "2", False), ("True", "0", False)],
)
def test_restarts_on_torchruns_shared_store_are_recognised(
    monkeypatch: pytest.MonkeyPatch, shared: str, restarts: str, hazard: bool
) -> None:
    monkeypatch.setenv("TORCHELASTIC_USE_AGENT_STORE", shared)
    monkeypatch.setenv("TORCHELASTIC_MAX_RESTARTS", restarts)
    assert restarts_share_a_store() == hazard


def saved_position(out: Path) -> tuple[int, int] | None:
    """(epochs done, steps into the next) of the run's checkpoint; None before the first one."""
    try:  # mapped, not read: only the position is needed, and a run is writing meanwhile
        payload = torch.load(out / "checkpoint.pt", weights_only=True, mmap=True)
    except FileNotFoundError:
        return None
    state = payload["train_state"]
    return state["epoch"], state["step"]


def workers(agent: int) -> dict[int, int]:
    """{rank: process id} of the workers that a torchrun agent started (read from /proc)."""
    found = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parent = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            environ = (stat.parent / "environ").read_bytes().split(b"\0") if parent == agent else []
        except (OSError, ValueError, IndexError):  # a process that ended meanwhile
            continue
        ranks = [int(item[5:]) for item in environ if item.startswith(b"RANK=")]
        found.update({rank: int(stat.parent.name) for rank in ranks})
    return found


@pytest.mark.skipif(sys.platform != "linux", reason="finds the worker processes in /proc")
def test_torchrun_restarts_a_killed_worker_and_the_run_ends_as_if_never_interrupted(
    two_processes: Path, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    restartable = ["--max-restarts", "2", *TRAIN, "--checkpoint-every", "1", "--resume"]
    command, env = torchrun_command(*restartable, "--out", str(out))
    with open(tmp_path / "stdout", "w") as stdout, open(tmp_path / "stderr", "w") as stderr:
        agent = subprocess.Popen(
            command, cwd=tmp_path, env=env, stdout=stdout, stderr=stderr, start_new_session=True
        )
    try:
        deadline = time.monotonic() + 120
        # One step into epoch 2, with 5 steps left in which to kill a worker in mid-epoch.
        while (saved_position(out) or (0, 0)) < (1, 1):
            assert agent.poll() is None and time.monotonic() < deadline, "no checkpoint came"
            time.sleep(0.01)
        os.kill(workers(agent.pid)[1], signal.SIGKILL)
        agent.wait(timeout=120)
    finally:
        if agent.poll() is None:
            os.killpg(agent.pid, signal.SIGKILL)
            agent.wait()
    log = (tmp_path / "stdout").read_text()
    assert agent.returncode == 0, log + (tmp_path / "stderr").read_text()
    lines = log.splitlines()
    assert lines[0] == f"starting the run in {out}: no checkpoint to resume yet"
    # Restarted by torchrun, the same command continues in mid-epoch from the last checkpoint.
    assert lines[1].startswith(f"resuming the run in {out} at epoch 2 of 2, step "), log
    assert lines[2:] == [f"checkpoint: {out / 'checkpoint.pt'}"]
    assert metrics(out) == metrics(two_processes)
    ours, theirs = read_checkpoint(out), read_checkpoint(two_processes)
    assert all(torch.equal(ours["model"][k], v) for k, v in theirs["model"].items())
    assert predict(load(out), torch.rand(1, 1, 40, 40)).isfinite().all()
