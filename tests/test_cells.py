"""Glimpses placed in cells of the proxy (``SaccadeConfig(where="cells")``): they zoom to small
objects on large canvases at any size, and every tool that shows glimpses takes them."""

import pytest
import torch
from tiny import TINY

from pyro_saccade import SaccadeConfig, SaccadeModel
from pyro_saccade.checkpoint import for_task, with_config
from pyro_saccade.cli.predict import describe_prediction
from pyro_saccade.config import MAX_PROXY_SCALE, CellsWhere
from pyro_saccade.data import CanvasBatch, PatchCanvas, proxies_of
from pyro_saccade.glimpse import repeat_images, sample_box
from pyro_saccade.model import Step
from pyro_saccade.posterior import sample_posterior
from pyro_saccade.prediction import boxes, infer, predict

CLASSES = [str(k) for k in range(10)]


def cells_model(**changes: object) -> SaccadeModel:
    torch.manual_seed(0)
    where = dict(kind="cells", box_min=16, box_max=48)
    config = dict(TINY, proxy=64, where=where, evidence="crops")
    return SaccadeModel(SaccadeConfig(classes=CLASSES, task="majority", **{**config, **changes}))


def one_blob(side: int, x0: int, y0: int) -> CanvasBatch:
    """A lazy canvas of ``side`` pixels, black but for one 28-pixel square of ink at (x0, y0)."""
    blob = torch.ones(1, 28, 28)
    canvas = PatchCanvas(
        side, side, blob, torch.tensor([28]), torch.tensor([[x0, y0, x0 + 28, y0 + 28]])
    )
    return CanvasBatch([canvas])


@pytest.mark.parametrize("side", [600, 20000])
def test_untrained_first_glimpse_aims_at_the_only_ink_with_a_box_in_pixels(side: int) -> None:
    model = cells_model()
    x0, y0 = side // 3, side // 2
    out = infer(model, one_blob(side, x0, y0))
    box = boxes(model, out.z[0, 0], side, side, out.centres[0, 0])[0]
    # The box is box_min..box_max pixels wide whatever the canvas ...
    assert 16 <= float(box[2] - box[0]) <= 48
    # ... and centred on the ink as precisely as the proxy shows it: within one proxy pixel.
    proxy_pixel = side / model.config.proxy
    centre = torch.stack([(box[0] + box[2]) / 2, (box[1] + box[3]) / 2])
    assert (centre - torch.tensor([x0 + 14.0, y0 + 14.0])).abs().max() <= proxy_pixel
    if proxy_pixel < 14:  # the box then holds the whole blob
        assert box[0] <= x0 and box[2] >= x0 + 28 and box[1] <= y0 and box[3] >= y0 + 28


def test_a_proxy_side_for_one_resolution_scales_with_the_image() -> None:
    config = cells_model(proxy_for=600).config
    assert config.proxy_side(600, 600) == 64
    assert config.proxy_side(1200, 1800) == 128  # the shorter side sets it
    assert config.proxy_side(900, 900) == 96
    assert config.proxy_side(100_000, 100_000) == MAX_PROXY_SCALE * 64
    assert cells_model().config.proxy_side(1200, 1200) == 64  # proxy_for None: J on any image
    # On a canvas of twice the side, the proxy is twice as large, and the glimpse still aims
    # at the ink within one of its pixels: a third of the 28-pixel blob, as at 600.
    model, side, x0, y0 = cells_model(proxy_for=600), 1200, 500, 700
    images = one_blob(side, x0, y0)
    assert proxies_of(images, model.config.proxy_side).shape[-2:] == (128, 128)
    out = infer(model, images)
    box = boxes(model, out.z[0, 0], side, side, out.centres[0, 0])[0]
    centre = torch.stack([(box[0] + box[2]) / 2, (box[1] + box[3]) / 2])
    assert (centre - torch.tensor([x0 + 14.0, y0 + 14.0])).abs().max() <= side / 128


def test_random_glimpses_go_elsewhere_with_the_same_sizes() -> None:
    model = cells_model()
    images = one_blob(600, 200, 300)
    aimed = infer(model, images)
    scattered = infer(model, images, random=True)
    assert not torch.allclose(aimed.centres, scattered.centres)
    assert torch.allclose(aimed.z[..., 0], scattered.z[..., 0])


def test_posterior_draws_of_a_cells_model_have_boxes_inside_the_reach() -> None:
    model = cells_model()
    image = one_blob(600, 200, 300).dense()[0]
    draws = sample_posterior(model, [image], samples=4)
    boxes = draws.boxes(draws.posterior)
    assert boxes.shape == (4, 1, model.config.glimpses, 4)
    sides = boxes[..., 2] - boxes[..., 0]
    assert (sides >= 16 - 1e-4).all() and (sides <= 48 + 1e-4).all()
    crops = draws.crops(draws.prior)
    assert torch.allclose(
        crops[..., 0], (draws.boxes(draws.prior)[..., 2] - draws.boxes(draws.prior)[..., 0]) / 600
    )


def two_blobs() -> CanvasBatch:
    """Two lazy 600-pixel canvases with one 28-pixel square of ink each."""
    blob = torch.ones(1, 28, 28)
    return CanvasBatch(
        [
            PatchCanvas(600, 600, blob, torch.tensor([28]), torch.tensor([[x, y, x + 28, y + 28]]))
            for x, y in [(100, 400), (450, 80)]
        ]
    )


@pytest.mark.parametrize("source", ["lazy", "tensor", "one tensor"])
def test_repeated_images_crop_as_copies_of_them(source: str) -> None:
    lazy = two_blobs()
    images = {"lazy": lazy, "tensor": lazy.dense(), "one tensor": lazy.dense()[:1]}[source]
    copies = repeat_images(images, 3)
    batch = len(images) if source == "lazy" else images.shape[0]
    assert tuple(copies.shape) == (3 * batch, 1, 600, 600)
    generator = torch.Generator().manual_seed(0)
    box = (
        torch.full((3 * batch,), 0.1),
        torch.full((3 * batch,), 0.1),
        torch.rand(3 * batch, generator=generator) * 2 - 1,
        torch.rand(3 * batch, generator=generator) * 2 - 1,
    )
    dense = lazy.dense()[:batch].repeat(3, 1, 1, 1)
    torch.testing.assert_close(sample_box(copies, box, 8, 2), sample_box(dense, box, 8, 2))


def test_predict_samples_sets_the_draws_a_prediction_averages() -> None:
    model = cells_model(predict_samples=3)
    images = two_blobs()
    drawn = infer(model, images)
    assert drawn.z.shape == (3, 2, model.config.glimpses, 3)
    assert infer(model, images, samples=0).z.shape == (1, 2, model.config.glimpses, 3)
    # The draws are one pass over copies of the images, whatever holds them.
    dense = infer(model, images.dense())
    torch.testing.assert_close(dense.probs, drawn.probs, atol=1e-5, rtol=0)
    torch.testing.assert_close(dense.centres, drawn.centres)


def test_each_draw_reads_its_own_images_proxy() -> None:
    model = cells_model()
    with torch.no_grad():  # untrained, q and the attention ignore the proxy's features and h
        for parameter in model.parameters():
            parameter.add_(0.3 * torch.randn_like(parameter))
    images = torch.rand(2, 1, 300, 300, generator=torch.Generator().manual_seed(0))
    images[1] *= torch.linspace(0, 1, 300)  # unlike the first: another h after a glimpse
    proxies = proxies_of(images, model.config.proxy)

    def glimpses(draws: int) -> list[torch.Tensor]:
        steps: list[Step] = []
        with torch.no_grad():
            model.guide(images, proxies, steps=steps, mean=True, draws=draws)
        return [model.read(steps).softmax(-1), *(s.z for s in steps), *(s.centre for s in steps)]

    for one, three in zip(glimpses(1), glimpses(3), strict=True):
        torch.testing.assert_close(three, one.repeat(3, *[1] * (one.dim() - 1)), atol=1e-4, rtol=0)


def test_predict_reports_the_mean_glimpses_of_a_model_that_averages_draws() -> None:
    model = cells_model(predict_samples=4)
    image = one_blob(600, 200, 300).dense()[0]
    averaged = describe_prediction(model, image)
    mean = describe_prediction(model, image, samples=0)
    assert averaged["glimpses"] == mean["glimpses"]
    probs = predict(model, image[None])[0]
    assert averaged["probability"] == pytest.approx(float(probs.max()))


def test_a_pair_model_reads_megapixel_majority_with_its_own_digit_evidence() -> None:
    pairs = SaccadeModel(SaccadeConfig(task="identify", **dict(TINY, proxy=64, where="cells")))
    majority = with_config(for_task(pairs, "majority", CLASSES), glimpses=3, proxy=32)
    assert majority.config.head == "digit_pairs"
    reader = pairs.state_dict()
    for name, weights in majority.state_dict().items():
        assert torch.equal(weights, reader[name]), name
    evidence = torch.zeros(2, 10)
    evidence[0, 7] = evidence[1, 2] = 3.0  # most evidence for 7, then for 2
    assert majority.classifier.combine(evidence).argmax(-1).tolist() == [7, 2]


def test_with_config_keeps_the_model_in_the_mode_it_was_in() -> None:
    model = cells_model()
    assert with_config(model.eval(), predict_samples=0).training is False
    assert with_config(model.train(), predict_samples=0).training is True


def test_train_set_options_build_the_model_and_resume_only_as_configured(tmp_path) -> None:
    from click.testing import CliRunner

    from pyro_saccade.checkpoint import load
    from pyro_saccade.cli import main

    out = tmp_path / "run"
    tiny = [
        f"--set={key}={value}"
        for key, value in TINY.items()
        if key not in ("glimpses", "crop", "proxy")
    ]
    command = [
        "train", "--task", "majority", "--canvas", "200", "--noise", "3", "--glimpses", "2",
        "--crop", "16", "--proxy", "32", "--epochs", "1", "--train-size", "4", "--test-size", "2",
        "--batch-size", "2", "--quiet", "--set", "where=cells", "--set", "where.learn=false",
        *tiny, "--out", str(out),
    ]  # fmt: skip
    runner = CliRunner()
    assert runner.invoke(main, command).exit_code == 0
    model = load(out)
    assert model.config.where.kind == "cells" and not model.config.where.learn
    assert not any(p.requires_grad for p in model.where.attention.parameters())
    again = runner.invoke(main, [*command, "--resume"])
    assert again.exit_code == 0, again.output
    other = runner.invoke(
        main, [*command[:-2], "--set", "where.learn=true", "--out", str(out), "--resume"]
    )
    assert other.exit_code == 2 and "where.learn=False" in other.output


def test_the_object_size_sets_the_box_range_unless_it_is_set() -> None:
    assert CellsWhere(object_size=50).box_range() == (50, 200)
    assert CellsWhere(object_size=50, box_max=120).box_range() == (50, 120)
    model = cells_model(where=dict(kind="cells", object_size=12))
    side = 600
    out = infer(model, one_blob(side, 200, 300), samples=3)
    widths = [
        float(box[2] - box[0])
        for draw in range(3)
        for box in boxes(model, out.z[draw, 0], side, side, out.centres[draw, 0])
    ]
    assert all(12 <= width <= 48 for width in widths)
