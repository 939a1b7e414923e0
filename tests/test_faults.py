"""Faults lose nothing: atomic checkpoints, divergence, Ctrl-C, exact resumption, determinism."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyro
import pytest
import torch
from click.testing import CliRunner
from tiny import TINY

from pyro_saccade import SaccadeConfig, TrainingDiverged, load, predict, train
from pyro_saccade import training as training_module
from pyro_saccade.cli import main
from pyro_saccade.data import class_names, save_image
from pyro_saccade.training import TrainConfig, read_checkpoint

# Two steps of 8 canvases per epoch; noise on the proxy so that the RNG state matters too.
RUN = dict(canvas=[40, 40], train_size=16, test_size=8, batch_size=8, epochs=2, proxy_noise=0.1)
TIMING = ("train_seconds", "canvases_per_second")


def config() -> SaccadeConfig:
    return SaccadeConfig(classes=class_names("identify"), **TINY)


def metrics(out: Path) -> list[dict]:
    """metrics.jsonl without the wall-clock fields."""
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k not in TIMING} for r in records]


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


class Crash(Exception):
    """Stands for a kill: nothing after it runs."""


def interrupt_at(monkeypatch: pytest.MonkeyPatch, call: int) -> None:
    """Send this process SIGINT, as Ctrl-C does, during the ``call``-th batch (counting the
    evaluation batches: one after each epoch)."""
    calls = {"n": 0}
    correct = training_module.correct

    def counting(*args: object) -> torch.Tensor:
        calls["n"] += 1
        if calls["n"] == call:
            os.kill(os.getpid(), signal.SIGINT)
        return correct(*args)

    monkeypatch.setattr(training_module, "correct", counting)


@pytest.mark.parametrize(
    ("call", "batch"),
    [(1, (0, 1)), (2, (0, 2)), (4, (1, 1))],
    ids=["mid-epoch-1", "end-of-epoch-1", "mid-epoch-2"],
)
def test_ctrl_c_saves_a_checkpoint_and_resume_equals_the_uninterrupted_run(
    reference: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    call: int,
    batch: tuple[int, int],
) -> None:
    interrupt_at(monkeypatch, call)
    with pytest.raises(KeyboardInterrupt, match="checkpoint saved"):
        train(config(), TrainConfig(**RUN), out=tmp_path, progress=False)
    position = json.loads(read_checkpoint(tmp_path)["position"])
    assert (position["epoch"], position["batch"]) == batch
    monkeypatch.undo()
    pyro.clear_param_store()
    train(out=tmp_path, resume=True, progress=False)
    assert_same_run(tmp_path, reference)


def test_resume_after_a_kill_at_the_end_of_an_epoch(
    reference: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    save = training_module.save_checkpoint

    def save_then_die(*args: object, **kwargs: object) -> None:
        save(*args, **kwargs)
        raise Crash

    monkeypatch.setattr(training_module, "save_checkpoint", save_then_die)
    with pytest.raises(Crash):
        train(config(), TrainConfig(**RUN), out=tmp_path, progress=False)
    monkeypatch.undo()
    assert json.loads(read_checkpoint(tmp_path)["position"])["epoch"] == 1
    pyro.clear_param_store()
    train(out=tmp_path, resume=True, progress=False)
    assert_same_run(tmp_path, reference)


def test_the_same_call_starts_a_run_and_resumes_it_from_a_checkpoint_every_k_steps(
    reference: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    positions = []
    save = training_module.save_checkpoint

    def save_then_die(*args: object) -> None:
        save(*args)
        positions.append(json.loads(args[3]["position"]))
        if len(positions) == 3:
            raise Crash

    monkeypatch.setattr(training_module, "save_checkpoint", save_then_die)
    run = TrainConfig(**RUN, checkpoint_every=1)
    pyro.clear_param_store()
    with pytest.raises(Crash):
        train(config(), run, out=tmp_path, resume=True, progress=False)  # nothing to resume yet
    # After every step, but the last of an epoch, whose checkpoint follows its evaluation.
    assert [(p["epoch"], p["batch"]) for p in positions] == [(0, 1), (1, 0), (1, 1)]
    monkeypatch.undo()
    pyro.clear_param_store()
    train(config(), run, out=tmp_path, resume=True, progress=False)
    assert_same_run(tmp_path, reference)


CLI_RUN = ["train", "--canvas", "40", "--crop", "16", "--proxy", "16", "--glimpses", "1"]
CLI_RUN += ["--epochs", "2", "--train-size", "16", "--test-size", "8", "--batch-size", "8"]
CLI_RUN += ["--checkpoint-every", "1", "--quiet", "--resume"]


def test_one_train_command_starts_continues_and_completes_a_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "run"
    command = [*CLI_RUN, "--out", str(out)]
    save = training_module.save_checkpoint

    def save_then_die(*args: object) -> None:
        save(*args)
        position = json.loads(args[3]["position"])
        if (position["epoch"], position["batch"]) == (1, 1):  # one step into epoch 2
            raise Crash

    monkeypatch.setattr(training_module, "save_checkpoint", save_then_die)
    first = CliRunner().invoke(main, command)
    assert isinstance(first.exception, Crash), first.output
    assert first.output.splitlines() == [f"starting the run in {out}: no checkpoint to resume yet"]
    monkeypatch.undo()
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
    assert json.loads(read_checkpoint(out)["position"])["epoch"] == 2


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


class PoisonGradient(torch.autograd.Function):
    """The identity, with a NaN gradient: a finite loss whose backward pass breaks."""

    @staticmethod
    def forward(ctx: object, x: torch.Tensor) -> torch.Tensor:
        return x.clone()

    @staticmethod
    def backward(ctx: object, grad: torch.Tensor) -> torch.Tensor:
        return grad * float("nan")


# Pyro warns of the NaN that the fault injects on purpose.
@pytest.mark.filterwarnings("ignore:Encountered NaN:UserWarning")
@pytest.mark.parametrize("fault", ["nan-image", "nan-gradient"])
def test_divergence_stops_and_keeps_the_last_good_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fault: str
) -> None:
    # The last step of epoch 2 breaks: its checkpoint must not be written with broken weights.
    calls = {"n": 0}
    prepare, objective = training_module.prepare, training_module.objective

    def nan_images(images: torch.Tensor, *args: object) -> tuple[torch.Tensor, torch.Tensor]:
        calls["n"] += 1  # epoch 1: batches 1, 2 and evaluation 3; epoch 2: batches 4, 5
        if calls["n"] == 5:
            images = images.clone()
            images[0, 0, 0, 0] = float("nan")
        return prepare(images, *args)

    def poisoned(model: torch.nn.Module) -> torch.nn.Module:
        loss = objective(model)

        def forward(*args: object) -> torch.Tensor:
            calls["n"] += 1  # training steps only
            value, probs = loss(*args)
            return (PoisonGradient.apply(value) if calls["n"] == 4 else value), probs

        return forward

    if fault == "nan-image":
        monkeypatch.setattr(training_module, "prepare", nan_images)
    else:
        monkeypatch.setattr(training_module, "objective", poisoned)
    pyro.clear_param_store()
    message = "loss became nan" if fault == "nan-image" else "gradient norm became nan"
    with pytest.raises(TrainingDiverged, match=f"{message} at epoch 2, step 2; the last good"):
        train(config(), TrainConfig(**RUN), out=tmp_path, progress=False)
    payload = read_checkpoint(tmp_path)
    assert json.loads(payload["position"])["epoch"] == 1
    assert all(torch.isfinite(v).all() for v in payload["model"].values())
    assert len(metrics(tmp_path)) == 1
    load(tmp_path)


def test_diverged_training_is_one_line_through_the_cli(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    prepare = training_module.prepare

    def nan_images(images: torch.Tensor, *args: object) -> tuple[torch.Tensor, torch.Tensor]:
        return prepare(images * float("nan"), *args)

    monkeypatch.setattr(training_module, "prepare", nan_images)
    args = ["train", "--canvas", "40", "--crop", "16", "--proxy", "16", "--glimpses", "1"]
    args += ["--epochs", "1", "--train-size", "8", "--test-size", "8", "--quiet"]
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
    done = json.loads(read_checkpoint(out)["position"])["epoch"]
    # Each epoch writes its metrics line, then its checkpoint: the kill may fall in between.
    assert 2 <= done < 12 and len(metrics(out)) in (done, done + 1)
    assert predict(load(out), torch.rand(1, 1, 40, 40)).isfinite().all()
    pyro.clear_param_store()
    train(out=out, resume=True, progress=False)
    assert [record["epoch"] for record in metrics(out)] == list(range(1, 13))
