"""The probabilistic program: sites, glimpses, learning, checkpoints."""

from __future__ import annotations

import dataclasses
import json

import pyro
import pyro.poutine as poutine
import pytest
import torch
import torch.nn.functional as F
from pyro.infer import Trace_ELBO
from tiny import TINY

from pyro_saccade import SaccadeConfig, SaccadeModel, TrainConfig, load, train
from pyro_saccade.checkpoint import for_task, read_checkpoint, trained_config
from pyro_saccade.data.megapixel import TARGET_SHARE
from pyro_saccade.glimpse import box_grid, extract_glimpse, glimpse_boxes, unsquash, z_at
from pyro_saccade.networks import DigitPairHead
from pyro_saccade.prediction import infer, predict
from pyro_saccade.training import ELBOLoss


def tiny_model(**overrides: object) -> SaccadeModel:
    config = SaccadeConfig(**{**TINY, **overrides})
    return SaccadeModel(config)


def batch(n: int = 4, size: int = 40, classes: int = 55) -> tuple[torch.Tensor, ...]:
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(n, 1, size, size, generator=generator)
    proxies = torch.nn.functional.adaptive_avg_pool2d(images, 16)
    labels = torch.randint(0, classes, (n,), generator=generator)
    return images, proxies, labels


@pytest.mark.parametrize("likelihood, where", [("aggregate", "free"), ("per_glimpse", "cells")])
def test_trace_structure(likelihood: str, where: str) -> None:
    pyro.set_rng_seed(0)
    model = tiny_model(likelihood=likelihood, where=where)
    images, proxies, labels = batch()
    guide_trace = poutine.trace(model.guide).get_trace(images, proxies, labels)
    model_trace = poutine.trace(poutine.replay(model.model, guide_trace)).get_trace(
        images, proxies, labels
    )
    for t in range(2):
        for trace in (guide_trace, model_trace):
            site = trace.nodes[f"z_{t}"]
            assert site["fn"].event_shape == (3,) and site["fn"].batch_shape == (4,)
            assert not site["is_observed"]
        assert model_trace.nodes[f"c_{t}"]["is_observed"]
        assert model_trace.nodes[f"c_{t}"]["fn"].event_shape == (1, 16, 16)
        # where_t, a cell of the proxy's 4 x 4 feature map, in both or in neither
        for trace in (guide_trace, model_trace):
            site = trace.nodes.get(f"where_{t}")
            assert (site is not None) == (where == "cells")
            if site is not None:
                assert site["fn"].batch_shape == (4,) and site["fn"].probs.shape[-1] == 16
    labels_sites = ["y"] if likelihood == "aggregate" else ["y_0", "y_1"]
    assert all(model_trace.nodes[name]["is_observed"] for name in labels_sites)
    assert model_trace.nodes["probs"]["value"].shape == (4, 55)


def test_the_model_replays_the_guides_glimpses_without_cropping_again() -> None:
    model = tiny_model()
    images, proxies, labels = batch()
    crops = []
    model.crop_encoder.register_forward_hook(lambda *args: crops.append(1))
    pyro.set_rng_seed(0)
    loss, probs = ELBOLoss(model)(images, proxies, labels)
    assert len(crops) == model.config.glimpses  # the guide's crops only
    # The same bound from Pyro alone, which crops again in the model.
    pyro.set_rng_seed(0)
    with pyro.validation_enabled(False):
        again = Trace_ELBO().differentiable_loss(model.model, model.guide, images, proxies, labels)
    assert len(crops) == 3 * model.config.glimpses
    assert torch.allclose(loss, again / len(images))
    pyro.set_rng_seed(0)
    guide_trace = poutine.trace(model.guide).get_trace(images, proxies, labels)
    model_trace = poutine.trace(poutine.replay(model.model, guide_trace)).get_trace(
        images, proxies, labels
    )
    assert torch.allclose(probs, model_trace.nodes["probs"]["value"])


def test_crop_lands_where_z_points() -> None:
    image = torch.zeros(1, 1, 120, 200)
    image[..., 30:50, 140:160] = 1.0  # a bright 20x20 square centred at (x=150, y=40)
    smin, smax = 0.1, 0.5
    scale = torch.tensor([20 / 120])  # crop side 20 px of the shorter side, 120
    sx, sy = 20 / 200, 20 / 120
    x = torch.tensor([(150 / 200 * 2 - 1) / (1 - sx)])
    y = torch.tensor([(40 / 120 * 2 - 1) / (1 - sy)])
    z = unsquash(scale, x, y, smin, smax)
    box = glimpse_boxes(z, 120, 200, smin, smax)[0]
    assert torch.allclose(box, torch.tensor([140.0, 30.0, 160.0, 50.0]), atol=0.05)
    crop = extract_glimpse(image, z, 10, smin, smax)
    assert crop.shape == (1, 1, 10, 10)
    assert crop.min() > 0.99  # every sample inside the square
    elsewhere = extract_glimpse(image, torch.zeros(1, 3), 10, smin, smax)
    assert elsewhere.max() < 1e-6  # the centre of the image is dark


def test_a_box_samples_the_points_of_the_spatial_transformer() -> None:
    # box_grid is F.affine_grid for a box's scale-and-shift matrix, computed without its bmm.
    generator = torch.Generator().manual_seed(0)
    sx, sy = torch.rand(2, 6, generator=generator) * 0.3
    cx, cy = torch.rand(2, 6, generator=generator) * 2 - 1
    zeros = torch.zeros(6)
    theta = torch.stack([torch.stack([sx, zeros, cx], -1), torch.stack([zeros, sy, cy], -1)], -2)
    for side in (7, 32, 64):
        expected = F.affine_grid(theta, [6, 1, side, side], align_corners=False)
        assert torch.equal(box_grid((sx, sy, cx, cy), side), expected)


def test_glimpse_stays_inside_image() -> None:
    z = torch.tensor([[10.0, 10.0, -10.0], [-10.0, -10.0, 10.0]])
    boxes = glimpse_boxes(z, 300, 500, 0.1, 0.4)
    assert (boxes[:, 0] >= -1e-4).all() and (boxes[:, 2] <= 500 + 1e-4).all()
    assert (boxes[:, 1] >= -1e-4).all() and (boxes[:, 3] <= 300 + 1e-4).all()
    sides = boxes[:, 2] - boxes[:, 0]
    assert torch.allclose(sides, torch.tensor([120.0, 30.0]), atol=0.1)  # 0.4 / 0.1 of 300


def test_z_at_centres_the_crop_as_far_as_the_border_allows() -> None:
    z_scale = unsquash(torch.tensor([0.4, 0.4]), torch.zeros(2), torch.zeros(2), 0.2, 0.6)[:, 0]
    centre = torch.tensor([[0.3, -0.5], [0.95, 0.0]])  # normalised (x, y)
    box = glimpse_boxes(z_at(z_scale, centre, 0.2, 0.6), 100, 100, 0.2, 0.6)
    # 40 px crops: the first centred on (65, 25); the second would cross the right edge, so
    # it stops there (98% of the way, where atanh is still finite).
    assert torch.allclose(box[0], torch.tensor([45.0, 5.0, 85.0, 45.0]), atol=0.05)
    assert 99.0 < box[1, 2] <= 100.0 and torch.allclose(box[1, 1::2], torch.tensor([30.0, 70.0]))


def test_saliency_posterior_moves_glimpses_towards_high_scores() -> None:
    model = tiny_model()
    head = model.where.posterior_net
    maps = torch.zeros(1, head.cell.in_channels, 4, 4)
    maps[0, :, 0, 3] = 1.0  # one bright cell, top right
    torch.nn.init.constant_(head.cell.weight, 5.0)
    features, h = torch.zeros(1, 16), torch.zeros(1, 32)
    _, _, centre = head(maps, features, h)
    assert centre[0, 0] > 0.5 and centre[0, 1] < -0.5


def test_the_guide_scale_stays_under_its_bound() -> None:
    from pyro_saccade.networks import GaussianHead

    bounded = GaussianHead(4, 8, 3, init_scale=0.2, max_scale=0.5)
    free = GaussianHead(4, 8, 3, init_scale=0.2)
    for head in (bounded, free):
        assert torch.allclose(head(torch.zeros(1, 4))[1], torch.full((1, 3), 0.2), atol=1e-3)
        torch.nn.init.constant_(head.scale.bias, 50.0)  # what a runaway entropy term does
    assert bounded(torch.zeros(1, 4))[1].max() <= 0.5 + 1e-4
    assert free(torch.zeros(1, 4))[1].min() > 10


def test_for_task_turns_pair_probabilities_into_sums() -> None:
    pyro.set_rng_seed(0)
    identify = tiny_model()
    with torch.no_grad():
        identify.classifier.evidence.weight.normal_()  # make the digit evidence matter
    sums = for_task(identify, "sum", [str(k) for k in range(19)])
    assert sums.config.task == "sum" and sums.config.num_classes == 19
    images, proxies, _ = batch(n=3)
    pairs = predict(identify, images, proxies)
    digit_sums = torch.tensor([a + b for a in range(10) for b in range(a, 10)])
    expected = torch.zeros(3, 19).index_add_(1, digit_sums, pairs)
    assert torch.allclose(predict(sums, images, proxies), expected, atol=1e-5)
    with pytest.raises(ValueError, match="digit-pair model"):
        for_task(tiny_model(head="linear"), "sum", [str(k) for k in range(19)])


def test_a_summing_reader_moves_to_a_task_read_only_from_what_crops_show() -> None:
    digits = [str(k) for k in range(10)]
    majority = tiny_model(task="majority", classes=digits, head="digit_pairs", evidence="crops")
    top = for_task(majority, "top", evidence="shown")
    assert top.config.evidence == "shown"
    kept = majority.classifier.evidence.weight
    assert torch.equal(top.classifier.evidence.weight, kept)
    assert not top.classifier.nothing.weight.any()  # "nothing" starts with no evidence
    with pytest.raises(ValueError, match="evidence='shown'"):
        for_task(majority, "top")


def read_crops(
    task: str,
    evidence: str,
    crops: list[tuple[int | None, float]],
    heights: list[float] | None = None,
) -> torch.Tensor:
    """Class probabilities of a digit-pair head after crops that each show ``digit`` with
    evidence ``logit`` (0 for the other nine digits; every digit for None), their boxes centred
    at ``heights`` (normalised, -1 the top edge; all 0 unless given)."""
    head = DigitPairHead(10, task, evidence, target_share=TARGET_SHARE)
    with torch.no_grad():
        head.evidence.weight.copy_(torch.eye(10))
        head.evidence.bias.zero_()
    heights = [0.0] * len(crops) if heights is None else heights
    total = None
    for (digit, logit), y in zip(crops, heights, strict=True):
        features = torch.zeros(1, 10)
        features = (
            features + logit
            if digit is None
            else features.index_fill_(1, torch.tensor([digit]), logit)
        )
        evidence = head.read(features, torch.tensor([y]))
        total = evidence if total is None else head.accumulate(total, evidence)
    logits = head.combine(total)[0]
    return torch.sigmoid(logits) if task == "multi" else logits.softmax(-1)


def test_the_mixture_reads_a_pair_from_sure_and_unsure_crops() -> None:
    pairs = [f"{a}-{b}" for a in range(10) for b in range(a, 10)]
    crops = [(3, 8.0), (3, 8.0), (7, 1.5), (7, 1.5)]  # two sure crops of a 3, two unsure of a 7
    assert pairs[read_crops("identify", "mixture", crops).argmax()] == "3-7"
    # Summed evidence answers the surer digit twice.
    assert pairs[read_crops("identify", "crops", crops).argmax()] == "3-3"
    # Crops that all show a 3 are a pair of 3s.
    assert pairs[read_crops("identify", "mixture", [(3, 8.0)] * 4).argmax()] == "3-3"


def test_the_mixture_caps_what_one_crop_says_about_the_majority() -> None:
    crops = [(5, 20.0), (2, 3.0), (2, 3.0), (2, 3.0)]  # one very sure 5, three likely 2s
    assert read_crops("majority", "mixture", crops).argmax() == 2
    assert read_crops("majority", "crops", crops).argmax() == 5


def test_max_top_and_multi_read_what_each_crop_shows_and_where() -> None:
    crops = [(3, 8.0), (7, 8.0), (2, 8.0), (7, 8.0)]
    assert read_crops("max", "shown", crops).argmax() == 7
    # A crop that shows nothing clearly (a scribble) does not make a 9 the largest.
    assert read_crops("max", "shown", [*crops, (0, 0.0)]).argmax() == 7
    present = read_crops("multi", "shown", [*crops, (5, 8.0)])
    assert (present[[2, 3, 5, 7]] > 0.99).all() and (present[[0, 1, 4, 6, 8, 9]] < 0.01).all()
    # top: the highest crop that shows a digit, wherever it comes in the sequence ...
    heights = [0.5, -0.2, 0.9, 0.1]
    assert read_crops("top", "shown", crops, heights).argmax() == 7
    assert read_crops("top", "shown", crops, [0.5, 0.3, -0.6, 0.1]).argmax() == 2
    # ... and above it, a crop that shows nothing does not count.
    blank = (None, -20.0)  # evidence against every digit: the crop shows nothing
    on_top = read_crops("top", "shown", [blank, *crops], [-0.9, *heights])
    assert on_top.argmax() == 7 and on_top[7] > 0.99
    with pytest.raises(ValueError, match="shown"):
        SaccadeConfig(task="max", classes=[str(k) for k in range(10)], head="digit_pairs")


def test_the_shown_majority_takes_no_vote_from_a_crop_that_shows_nothing() -> None:
    crops = [(3, 8.0), (3, 8.0), (7, 8.0)]
    probs = read_crops("majority", "shown", crops)
    # two sure crops of the class against one of another: (3/5)^2 (2/45) / ((2/45)^2 3/5)
    assert probs.argmax() == 3 and torch.isclose(probs[3] / probs[7], torch.tensor(13.5), 0.02)
    blank = (None, -20.0)  # evidence against every digit: the crop shows nothing
    assert torch.allclose(read_crops("majority", "shown", [*crops, blank, blank]), probs)
    # Two sure crops of a 7 outvote one of a 3, however sure.
    assert read_crops("majority", "shown", [(3, 30.0), (7, 8.0), (7, 8.0)]).argmax() == 7


def test_antialiased_glimpse_averages_fine_detail_instead_of_aliasing_it() -> None:
    image = torch.zeros(1, 1, 100, 100)
    image[..., ::3] = 1.0  # one-pixel stripes every third column: a mean of 1/3
    z = torch.tensor([[10.0, 0.0, 0.0]])  # the widest crop: a 90-pixel window into 32 pixels
    aliased = extract_glimpse(image, z, 32, 0.3, 0.9)
    averaged = extract_glimpse(image, z, 32, 0.3, 0.9, antialias=4)
    assert averaged.shape == aliased.shape == (1, 1, 32, 32)
    assert aliased.std() > 0.25  # one sample per pixel: stripes or gaps, depending on where
    assert averaged.std() < 0.05 and abs(averaged.mean() - 1 / 3) < 0.01


def test_scale_gets_a_gradient() -> None:
    image = torch.rand(1, 1, 64, 64)
    z = torch.zeros(1, 3, requires_grad=True)
    extract_glimpse(image, z, 8, 0.1, 0.9).sum().backward()
    assert z.grad[0, 0].abs() > 0  # the authors' max(|s|, 1/p) had none here


@pytest.mark.parametrize("evidence", ["crops", "mixture", "state"])
def test_a_few_steps_fit_a_tiny_batch(evidence: str) -> None:
    pyro.set_rng_seed(0)
    # Crops of at most half the side: a 16-pixel crop of a wider window would alias the stripes.
    # The label's term weighs ten times the others: Adam's steps depend on the ratio alone.
    where = dict(scale_min=0.15, scale_max=0.5)
    model = tiny_model(kl_weight=0.005, proxy_weight=0.0001, evidence=evidence, where=where)
    # Four images whose stripes (periods 2, 4, 6, 10 px) tell their class wherever a crop lands.
    columns = torch.arange(40)
    stripes = [((columns // p) % 2).float().expand(40, 40) for p in (1, 2, 3, 5)]
    images = torch.stack(stripes).unsqueeze(1)
    proxies = torch.nn.functional.adaptive_avg_pool2d(images, 16)
    labels = torch.tensor([3, 17, 29, 54])
    if evidence == "mixture":  # every crop of an image shows the same digit: pairs of it
        labels = torch.tensor([0, 10, 19, 54])
    loss_fn = ELBOLoss(model)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    before = predict(model, images, proxies)[torch.arange(4), labels]
    for _ in range(100):
        optimizer.zero_grad()
        loss_fn(images, proxies, labels)[0].backward()
        optimizer.step()
    probs = predict(model, images, proxies)
    assert (probs.argmax(-1) == labels).all()
    assert (probs[torch.arange(4), labels] > 5 * before).all()


def test_prediction_shapes_and_samples() -> None:
    pyro.set_rng_seed(0)
    model = tiny_model()
    images, proxies, _ = batch(n=3)
    mean = infer(model, images, proxies)
    assert mean.probs.shape == (3, 55) and mean.z.shape == (1, 3, 2, 3)
    assert torch.allclose(mean.probs.sum(-1), torch.ones(3), atol=1e-5)
    again = infer(model, images, proxies)
    assert torch.equal(mean.probs, again.probs)  # posterior mean is deterministic
    sampled = infer(model, images, proxies, samples=5)
    assert sampled.z.shape == (5, 3, 2, 3)
    assert torch.allclose(sampled.probs.sum(-1), torch.ones(3), atol=1e-5)
    assert not torch.equal(sampled.z[0], sampled.z[1])


def test_any_image_size() -> None:
    model = tiny_model()
    for height, width in [(40, 40), (57, 123), (300, 90)]:
        images = torch.rand(2, 1, height, width)
        assert predict(model, images).shape == (2, 55)


def test_config_rejects_nonsense() -> None:
    for bad in [
        dict(glimpses=0),
        dict(proxy=30),
        dict(where=dict(scale_min=0.6, scale_max=0.5)),
        dict(where="grid"),
        dict(where=dict(kind="cells", box_min=48, box_max=32)),
        dict(where=dict(kind="cells", scale_min=0.2)),
        dict(likelihood="product"),
        dict(posterior_std=0.0),
        dict(posterior_std=0.6, posterior_std_max=0.5),
    ]:
        with pytest.raises(ValueError):
            SaccadeConfig(**bad)
    with pytest.raises(ValueError, match="mixture"):
        SaccadeConfig(task="mark", classes=[str(k) for k in range(10)], evidence="mixture")


def test_train_checkpoint_round_trip(tmp_path) -> None:
    config = SaccadeConfig(**TINY)
    run = TrainConfig(epochs=1, train_size=16, test_size=8, batch_size=8, canvas=[40, 40])
    model = train(config, run, out=tmp_path, progress=False)
    images = torch.rand(3, 1, 40, 40)
    loaded = load(tmp_path)
    assert torch.equal(predict(model, images), predict(loaded, images))
    assert loaded.config == model.config
    # The proxy side is for the canvas trained on; the config given is left as it was.
    assert model.config.proxy_for == 40 and config.proxy_for is None
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 1 and "test_accuracy" in lines[0]


@pytest.mark.parametrize("precision", ["float32", "bfloat16"])
def test_training_precision_is_the_precision_the_networks_run_in(tmp_path, precision) -> None:
    model = tiny_model()
    seen = set()
    model.crop_encoder.register_forward_hook(lambda module, args, out: seen.add(out.dtype))
    run = TrainConfig(epochs=1, train_size=8, test_size=4, batch_size=4, canvas=[40, 40])
    run = dataclasses.replace(run, precision=precision)
    train(model.config, run, out=tmp_path, progress=False, model=model)
    # Training batches run in the chosen precision; evaluation and the weights stay float32.
    assert seen == {torch.float32, getattr(torch, precision)}
    assert all(p.dtype == torch.float32 for p in load(tmp_path).parameters())
    assert json.loads((tmp_path / "config.json").read_text())["train"]["precision"] == precision
    with pytest.raises(ValueError, match="precision"):
        TrainConfig(precision="float16")


def test_export_saves_a_model_read_another_way_without_training(tmp_path) -> None:
    from click.testing import CliRunner

    from pyro_saccade.cli import main

    run = TrainConfig(epochs=1, train_size=8, test_size=4, batch_size=4, canvas=[40, 40])
    trained = train(SaccadeConfig(**TINY), run, out=tmp_path / "identify", progress=False)
    args = ["export", str(tmp_path / "identify"), "--out", str(tmp_path / "sum.pt")]
    args += ["--task", "sum", "--canvas", "60", "--set", "predict_samples=2"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    exported = load(tmp_path / "sum.pt")
    assert exported.config.task == "sum" and exported.config.predict_samples == 2
    assert trained_config(read_checkpoint(tmp_path / "sum.pt")).canvas == [60, 60]
    weights = trained.state_dict()
    assert all(torch.equal(weights[k], v) for k, v in exported.state_dict().items())
    assert "optimizer" not in read_checkpoint(tmp_path / "sum.pt")
    # A setting that would change the weights is refused.
    result = CliRunner().invoke(main, [*args[:4], "--set", "hidden=64"])
    assert result.exit_code != 0 and "hidden" in result.output


def test_cli_fine_tunes_an_identify_model_on_sums(tmp_path) -> None:
    from click.testing import CliRunner

    from pyro_saccade.cli import main

    run = TrainConfig(epochs=1, train_size=8, test_size=4, batch_size=4, canvas=[40, 40])
    train(SaccadeConfig(**TINY), run, out=tmp_path / "identify", progress=False)
    args = ["train", "--init", str(tmp_path / "identify"), "--task", "sum", "--canvas", "40"]
    args += ["--epochs", "1", "--train-size", "8", "--test-size", "4", "--batch-size", "4"]
    result = CliRunner().invoke(main, [*args, "--quiet", "--out", str(tmp_path / "sum")])
    assert result.exit_code == 0, result.output
    model = load(tmp_path / "sum")
    assert model.config.task == "sum" and model.config.classes[-1] == "18"
    # An identify model is evaluated on sums as it is.
    args = ["evaluate", str(tmp_path / "identify"), "--task", "sum", "--n", "4", "--json"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["task"] == "sum"


def test_evaluate_answers_the_task_a_saved_model_was_moved_to(tmp_path) -> None:
    # A model trained on identification, moved to sums and saved, is evaluated on sums.
    from click.testing import CliRunner

    from pyro_saccade.checkpoint import save_checkpoint
    from pyro_saccade.cli import main
    from pyro_saccade.data import class_names

    model = for_task(tiny_model(), "sum", class_names("sum"))
    save_checkpoint(tmp_path / "sum.pt", model, TrainConfig(canvas=[40, 40]))
    args = ["evaluate", str(tmp_path / "sum.pt"), "--n", "4", "--json"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["task"] == "sum"
