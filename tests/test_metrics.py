"""Coverage, pixels read, the glimpse evaluation behind `saccade evaluate`, and the proxy CNN."""

from __future__ import annotations

import json
from pathlib import Path

import pyro
import pytest
import torch
from tiny import TINY
from torch.utils.data import Subset

from pyro_saccade import load
from pyro_saccade.baselines import ClassifierLoss, ProxyCNN
from pyro_saccade.data import MegapixelMNIST, TwoDigitCluttered, make_proxy
from pyro_saccade.metrics import (
    GlimpseEvaluation,
    _Tally,
    covered,
    deciding_digits,
    evaluate_glimpses,
    union_area,
)
from pyro_saccade.model import SaccadeConfig, SaccadeModel
from pyro_saccade.prediction import predict
from pyro_saccade.training import TrainConfig, evaluate, train_baseline


def boxes(*rows: tuple[float, float, float, float]) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float32)


def test_a_digit_is_covered_by_a_glimpse_holding_half_of_it_at_most_4x_its_side() -> None:
    digit = boxes((100, 100, 130, 130))  # side 30
    assert covered(digit, boxes((90, 90, 150, 150))).tolist() == [True]
    # Wholly inside, but 200 px wide: the crop shows the digit at under a quarter of its size.
    assert covered(digit, boxes((0, 0, 200, 200))).tolist() == [False]
    assert covered(digit, boxes((70, 70, 190, 190))).tolist() == [True]  # exactly 4x
    assert covered(digit, boxes((70, 70, 191, 191))).tolist() == [False]
    # A third of the digit under the glimpse is not enough; half is.
    assert covered(digit, boxes((120, 100, 180, 160))).tolist() == [False]
    assert covered(digit, boxes((115, 100, 175, 160))).tolist() == [True]
    # One good glimpse among bad ones covers it; each digit is judged on its own.
    many = boxes((0, 0, 200, 200), (120, 100, 180, 160), (95, 95, 135, 135))
    two = boxes((100, 100, 130, 130), (400, 400, 428, 428))
    assert covered(two, many).tolist() == [True, False]


def test_deciding_digits_of_each_task() -> None:
    described = {
        "digits": [4, 7, 4, 9, 4],
        "boxes": [
            (0, 50, 28, 78),
            (40, 10, 68, 38),
            (80, 60, 108, 88),
            (0, 10, 28, 38),
            (9, 9, 9, 9),
        ],
        "target": 4,
    }
    assert deciding_digits("majority", described) == [0, 2, 4]
    assert deciding_digits("max", described) == [3]
    assert deciding_digits("top", described) == [4]  # nearest the top edge
    described["boxes"][4] = (50, 90, 78, 118)
    assert deciding_digits("top", described) == [3]  # y tied with digit 1: the leftmost
    assert deciding_digits("multi", described) == [0, 1, 2, 3, 4]
    described["digits"] = [9, 7, 4, 9, 4]
    assert deciding_digits("max", described) == [0, 3]
    assert deciding_digits("identify", {"digits": [3, 3], "boxes": [(0,) * 4] * 2}) == [0, 1]
    with pytest.raises(ValueError, match="no deciding digits"):
        deciding_digits("photo", described)


def test_union_area_is_exact_and_clipped_to_the_image() -> None:
    overlapping = boxes((0, 0, 10, 10), (5, 5, 15, 15))
    assert union_area(overlapping, 100, 100) == 175
    assert union_area(boxes((0, 0, 10, 10), (2, 2, 8, 8)), 100, 100) == 100  # nested
    assert union_area(boxes((-5, -5, 10, 10), (6, -3, 20, 4)), 8, 8) == 64
    assert union_area(boxes((0.5, 0, 2.25, 1)), 10, 10) == pytest.approx(1.75)
    assert union_area(boxes((20, 20, 30, 30)), 10, 10) == 0  # wholly outside
    # A 100,000^2 image costs what a small one does.
    huge = boxes((0, 0, 60_000, 60_000), (50_000, 50_000, 100_000, 120_000))
    assert union_area(huge, 100_000, 100_000) == 60_000**2 + 50_000**2 - 10_000**2
    # Against a pixel mask, on boxes with integer corners.
    generator = torch.Generator().manual_seed(0)
    corners = torch.randint(-5, 45, (6, 2, 2), generator=generator).sort(1).values
    random = corners.permute(0, 2, 1).reshape(6, 4)[:, [0, 2, 1, 3]].float()
    mask = torch.zeros(40, 30, dtype=torch.bool)
    for x0, y0, x1, y1 in random.long().clamp(min=0).tolist():
        mask[y0:y1, x0:x1] = True
    assert union_area(random, 40, 30) == mask.sum()


def test_pixels_read_count_every_draw_and_coverage_each_draw_on_its_own() -> None:
    # Two draws of one glimpse on one 100 x 100 canvas: only the first covers its digit.
    draws = torch.tensor([[[[0.0, 0, 20, 20]]], [[[50.0, 50, 70, 70]]]])  # [S, B, T, 4]
    tally = _Tally(glimpses=1)
    tally.add(draws, 100, 100, [boxes((2, 2, 18, 18))])
    result = GlimpseEvaluation(n=1, accuracy=1.0)
    tally.fill(result, described=True)
    assert result.pixels_read == pytest.approx(800 / 10_000)  # both boxes were read
    assert result.coverage == 0.5 and result.deciding_digits == 2


def tiny_saccade(**changes: object) -> SaccadeModel:
    torch.manual_seed(0)
    return SaccadeModel(SaccadeConfig(**{**TINY, **changes})).eval()


def test_evaluate_glimpses_agrees_with_evaluate_whatever_else_it_draws() -> None:
    model = tiny_saccade()
    data = TwoDigitCluttered("identify", 40, 12, split="test", seed=1)
    # Posterior samples and noisy proxies draw from the global RNG; the random glimpses and the
    # baseline from streams of their own, so the accuracy is evaluate's.
    pyro.set_rng_seed(3)
    expected = evaluate(model, data, batch_size=5, samples=2, noise=0.1)
    results = []
    for baseline in (None, ProxyCNN(model.config.classes, 8)):
        pyro.set_rng_seed(3)
        results.append(
            evaluate_glimpses(
                model, data, batch_size=5, samples=2, noise=0.1, seed=3, proxy_baseline=baseline
            )
        )
    first, second = results
    assert first.accuracy == second.accuracy == expected
    assert first.random_glimpses_accuracy == second.random_glimpses_accuracy
    assert first.n == 12 and first.glimpses == 2 and first.deciding_digits == 12 * 2 * 2
    assert 0 <= first.coverage <= 1 and 0 < first.pixels_read <= 1
    # TINY's glimpses are 0.3..0.8 of the 40 px side.
    assert 12 <= first.box_side <= 32 and len(first.box_sides) == 2
    assert first.proxy_baseline_accuracy is None and second.proxy_baseline_accuracy is not None


def test_evaluate_glimpses_on_lazy_megapixel_canvases_with_cells() -> None:
    model = tiny_saccade(
        proxy=32,
        where=dict(kind="cells", box_min=24, box_max=64),
        task="majority",
        classes=[str(k) for k in range(10)],
    )
    data = MegapixelMNIST("majority", 600, 5, noise=10, split="test", seed=1, lazy=True)
    result = evaluate_glimpses(model, data, batch_size=3, seed=1)
    assert result.deciding_digits == 5 * 3  # the three digits of the target class
    assert 0 <= result.coverage <= 1 and 0 <= result.random_glimpses_accuracy <= 1
    assert 0 <= result.random_glimpses_coverage <= 1
    assert 24 <= result.box_side <= 64
    # Two boxes of at most 64 px on 600^2.
    assert 0 < result.pixels_read <= 2 * 64**2 / 600**2
    # Some of the canvases, described by the dataset they come from: max's deciding digits
    # (those of the largest class) are one or more, canvas by canvas.
    data = MegapixelMNIST("max", 600, 8, noise=10, split="test", seed=1, lazy=True)
    chosen = [6, 2, 3]  # 3 + 3 + 3 deciding digits; the first three canvases hold 5
    some = evaluate_glimpses(model, Subset(data, chosen), batch_size=2, seed=1)
    expected = [len(deciding_digits("max", data.describe(i))) for i in chosen]
    assert some.n == 3 and some.deciding_digits == sum(expected)


def quadrant_set(n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """32^2 images of a bright 6^2 square in one of four quadrants, over noise; the label is
    the quadrant, which an 8^2 proxy shows."""
    labels = torch.randint(0, 4, (n,), generator=generator)
    images = torch.rand(n, 1, 32, 32, generator=generator) * 0.3
    offsets = torch.randint(0, 10, (n, 2), generator=generator)
    for image, label, (dy, dx) in zip(images, labels.tolist(), offsets.tolist(), strict=True):
        y, x = 16 * (label // 2) + dy, 16 * (label % 2) + dx
        image[:, y : y + 6, x : x + 6] = 1.0
    return images, labels


def test_the_proxy_cnn_learns_from_proxies_alone() -> None:
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(0)
    model = ProxyCNN(4, 8, width=8)
    loss_fn = ClassifierLoss(model)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(30):
        images, labels = quadrant_set(32, generator)
        # The full images are never read: only their proxies go in.
        loss, _ = loss_fn(object(), make_proxy(images, 8), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    images, labels = quadrant_set(200, generator)
    probs = predict(model, object(), make_proxy(images, 8))
    assert (probs.argmax(-1) == labels).float().mean() >= 0.9  # chance: 0.25


def test_the_proxy_cnn_trains_in_the_training_loop_on_its_own_proxies(tmp_path: Path) -> None:
    run = TrainConfig(canvas=[40, 40], epochs=1, train_size=16, test_size=8, batch_size=8)
    model = train_baseline("proxy-cnn", run, out=tmp_path, progress=False, proxy=16)
    assert isinstance(load(tmp_path), ProxyCNN) and model.config.proxy == 16
    record = json.loads((tmp_path / "metrics.jsonl").read_text().splitlines()[-1])
    assert record["epoch"] == 1 and 0 <= record["test_accuracy"] <= 1
    # Given the proxies, it reads nothing else; without them it builds its own.
    images = torch.rand(2, 1, 40, 40)
    expected = predict(model, images)
    assert torch.equal(predict(model, object(), make_proxy(images, 16)), expected)
