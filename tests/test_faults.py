"""Faults lose nothing: atomic checkpoints, divergence, Ctrl-C, exact resumption, determinism."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pyro
import pytest
import torch
from click.testing import CliRunner
from inject import Crash, PoisonGradient, after_step, broken_step, crash, nan_output, signal_self
from tiny import TINY

from pyro_saccade import SaccadeConfig, TrainingDiverged, load, predict, train
from pyro_saccade.checkpoint import read_checkpoint
from pyro_saccade.cli import main
from pyro_saccade.data import class_names, save_image
from pyro_saccade.training import TrainConfig

# Two steps of 8 canvases per epoch; noise on the proxy so that the RNG state matters too.
RUN = dict(canvas=[40, 40], train_size=16, test_size=8, batch_size=8, epochs=2, proxy_noise=0.1)
TIMING = ("train_seconds", "canvases_per_second")


def config() -> SaccadeConfig:
    return SaccadeConfig(classes=class_names("identify"), **TINY)


def metrics(out: Path) -> list[dict]:
    """metrics.jsonl without the wall-clock fields."""
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k not in TIMING} for r in records]


def saved_at(out: Path) -> tuple[int, int]:
    """(epochs done, steps into the next) of the run's checkpoint."""
    state = read_checkpoint(out)["train_state"]
    return state["epoch"], state["step"]


def assert_same_run(out: Path, reference: Path) -> None:
    assert metrics(out) == metrics(reference)
    ours, theirs = read_checkpoint(out)["model"], read_checkpoint(reference)["model"]
    assert all(torch.equal(ours[k], theirs[k]) for k in theirs)


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An uninterrupted run."""
    out = tmp_path_factory.mktemp("reference")
    pyro.clear_param_store()
    train(config(), TrainConfig(**RUN), out=out, progress=False)
    return out


@pytest.mark.parametrize(
    ("sig", "step", "saved"),
    [
        (signal.SIGINT, 1, (0, 1)),
        (signal.SIGINT, 2, (0, 2)),
        (signal.SIGINT, 3, (1, 1)),
        (signal.SIGTERM, 3, (1, 1)),
    ],
    ids=["ctrl-c-mid-epoch-1", "ctrl-c-end-of-epoch-1", "ctrl-c-mid-epoch-2", "sigterm"],
)
def test_a_signal_saves_a_checkpoint_and_resume_equals_the_uninterrupted_run(
    reference: Path, tmp_path: Path, sig: int, step: int, saved: tuple[int, int]
) -> None:
    pyro.clear_param_store()
    with after_step(step, signal_self(sig)), pytest.raises(KeyboardInterrupt, match="saved"):
        train(config(), TrainConfig(**RUN), out=tmp_path, progress=False)
    assert saved_at(tmp_path) == saved
    pyro.clear_param_store()
    train(out=tmp_path, resume=True, progress=False)
    assert_same_run(tmp_path, reference)


def test_a_resumed_epoch_reports_its_training_time_before_the_interruption_too(
    tmp_path: Path,
) -> None:
    pyro.clear_param_store()
    with after_step(1, signal_self(signal.SIGINT)), pytest.raises(KeyboardInterrupt):
        train(config(), TrainConfig(**RUN), out=tmp_path, progress=False)
    payload = read_checkpoint(tmp_path)
    assert payload["train_state"]["seconds"] > 0
    payload["train_state"]["seconds"] = 1000.0  # as if the epoch had trained 1000 s before
    torch.save(payload, tmp_path / "checkpoint.pt")
    pyro.clear_param_store()
    train(out=tmp_path, resume=True, progress=False)
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert records[0]["train_seconds"] > 1000
    assert records[1]["train_seconds"] < 1000


@pytest.mark.parametrize(("every", "saved"), [(0, (1, 0)), (1, (1, 1))])
def test_the_same_call_starts_a_run_and_resumes_it_after_a_crash(
    reference: Path, tmp_path: Path, every: int, saved: tuple[int, int]
) -> None:
    run = TrainConfig(**RUN, checkpoint_every=every)
    pyro.clear_param_store()
    with after_step(4, crash), pytest.raises(Crash):  # nothing to resume yet: the run starts
        train(config(), run, out=tmp_path, resume=True, progress=False)
    # The last step of an epoch leaves its checkpoint to the epoch's end, after evaluation.
    assert saved_at(tmp_path) == saved
    # A kill between an epoch's metrics line and its checkpoint, or in the middle of the line.
    with open(tmp_path / "metrics.jsonl", "a") as f:
        f.write('{"epoch": 2, "loss": 4.0}\n{"epoch": 3, "lo')
    pyro.clear_param_store()
    train(config(), run, out=tmp_path, resume=True, progress=False)
    assert_same_run(tmp_path, reference)


CLI_RUN = ["train", "--canvas", "40", "--crop", "16", "--proxy", "16", "--glimpses", "1"]
CLI_RUN += ["--epochs", "2", "--train-size", "16", "--test-size", "8", "--batch-size", "8"]
CLI_RUN += ["--checkpoint-every", "1", "--quiet", "--resume"]


def test_one_train_command_starts_continues_and_completes_a_run(tmp_path: Path) -> None:
    out = tmp_path / "run"
    command = [*CLI_RUN, "--out", str(out)]
    with after_step(4, crash):  # in epoch 2, one step after its last checkpoint
        first = CliRunner().invoke(main, command)
    assert isinstance(first.exception, Crash), first.output
    assert first.output.splitlines() == [f"starting the run in {out}: no checkpoint to resume yet"]
    second = CliRunner().invoke(main, command)
    assert second.exit_code == 0, second.output
    assert second.output.splitlines() == [
        f"resuming the run in {out} at epoch 2 of 2, step 2",
        f"checkpoint: {out / 'checkpoint.pt'}",
    ]
    assert [record["epoch"] for record in metrics(out)] == [1, 2]
    third = CliRunner().invoke(main, command)
    assert third.exit_code == 0, third.output
    finished = f"the run in {out} has finished its 2 epochs: nothing left to train"
    assert third.output.splitlines()[0] == finished
    assert [record["epoch"] for record in metrics(out)] == [1, 2]
    assert saved_at(out) == (2, 0)


def test_same_seed_same_results(reference: Path, tmp_path: Path) -> None:
    pyro.clear_param_store()
    model = train(config(), TrainConfig(**RUN, workers=1), out=tmp_path, progress=False)
    assert_same_run(tmp_path, reference)  # data-loader workers do not change a thing
    images, again = torch.rand(3, 1, 40, 40), load(reference)
    pyro.set_rng_seed(5)
    first = predict(model, images, samples=4)
    pyro.set_rng_seed(5)
    assert torch.equal(predict(again, images, samples=4), first)
    save_image(images[0], tmp_path / "image.png")
    args = ["predict", str(reference), str(tmp_path / "image.png"), "--samples", "4", "--json"]
    outputs = {CliRunner().invoke(main, [*args, "--seed", "3"]).output for _ in range(2)}
    assert len(outputs) == 1 and "probability" in outputs.pop()
    versions = json.loads(read_checkpoint(tmp_path)["versions"])
    assert {"pyro_saccade", "torch", "pyro", "numpy", "python"} <= set(versions)
    assert json.loads((tmp_path / "config.json").read_text())["versions"] == versions


@pytest.mark.parametrize(
    ("fault", "message"),
    [(nan_output, "loss became nan"), (PoisonGradient.apply, "gradient norm became nan")],
    ids=["nan-loss", "nan-gradient"],
)
def test_divergence_stops_and_keeps_the_last_good_checkpoint(
    tmp_path: Path, fault: Callable[[torch.Tensor], torch.Tensor], message: str
) -> None:
    pyro.clear_param_store()
    # The last step of epoch 2 breaks: its checkpoint must not be written with broken weights.
    with (
        broken_step(4, fault),
        pytest.raises(TrainingDiverged, match=f"{message} at epoch 2, step 2; the last good"),
    ):
        train(config(), TrainConfig(**RUN), out=tmp_path, progress=False)
    payload = read_checkpoint(tmp_path)
    assert payload["train_state"]["epoch"] == 1
    assert all(torch.isfinite(v).all() for v in payload["model"].values())
    assert len(metrics(tmp_path)) == 1
    load(tmp_path)


def test_diverged_training_is_one_line_through_the_cli(tmp_path: Path) -> None:
    args = ["train", "--canvas", "40", "--crop", "16", "--proxy", "16", "--glimpses", "1"]
    args += ["--epochs", "1", "--train-size", "8", "--test-size", "8", "--quiet"]
    with broken_step(1, nan_output):
        result = CliRunner().invoke(main, [*args, "--out", str(tmp_path / "run")])
    assert result.exit_code == 1
    assert result.output.splitlines() == [
        "Error: training diverged: loss became nan at epoch 1, step 1; no checkpoint had been "
        "written yet"
    ]


KILLED_RUN = """
import sys, torch
torch.set_num_threads(1)
from pyro_saccade import SaccadeConfig, train
from pyro_saccade.data import class_names
from pyro_saccade.training import TrainConfig

config = SaccadeConfig(classes=class_names("identify"), **{tiny})
train(config, TrainConfig(**{run}), out=sys.argv[1], progress=False)
"""


def test_sigkill_while_writing_checkpoints_leaves_the_last_one_loadable(tmp_path: Path) -> None:
    # One step per epoch: much of the time goes into writing checkpoints.
    run = dict(canvas=[40, 40], train_size=8, test_size=1, batch_size=8, epochs=12)
    out = tmp_path / "run"
    process = subprocess.Popen(
        [sys.executable, "-c", KILLED_RUN.format(tiny=TINY, run=run), str(out)],
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    try:
        deadline = time.monotonic() + 60
        while process.poll() is None and time.monotonic() < deadline:
            if (out / "metrics.jsonl").exists() and len(metrics(out)) >= 3:
                break
            time.sleep(0.005)
        time.sleep(0.02)  # somewhere in the next epoch or checkpoint
        process.send_signal(signal.SIGKILL)
    finally:
        process.wait()
    assert process.returncode == -signal.SIGKILL
    done = saved_at(out)[0]
    # Each epoch writes its metrics line, then its checkpoint: the kill may fall in between.
    assert 2 <= done < 12 and len(metrics(out)) in (done, done + 1)
    assert predict(load(out), torch.rand(1, 1, 40, 40)).isfinite().all()
    pyro.clear_param_store()
    train(out=out, resume=True, progress=False)
    assert [record["epoch"] for record in metrics(out)] == list(range(1, 13))
