"""The small neural networks of the model, kept apart from the probabilistic program.

As in the paper: group norm in convolutions, ReLU activations, a fully convolutional crop
classifier with spatial pooling, a conv-transpose proxy decoder.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .config import EVIDENCE_TASKS, SHOWN_ONLY_TASKS


def conv_block(in_channels: int, out_channels: int, stride: int = 1) -> nn.Sequential:
    """3x3 convolution, group norm, ReLU."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False),
        nn.GroupNorm(min(8, out_channels), out_channels),
        nn.ReLU(inplace=True),
    )


class CropEncoder(nn.Module):
    """Fully convolutional features of a crop, spatially pooled: [B, C, L, L] -> [B, 2 * F],
    each feature's maximum over the crop, then its mean.

    The maximum alone cannot tell a crop with two 6s from one with a single 6; the mean, still
    blind to where things are, grows with how much of the crop a pattern covers.
    """

    def __init__(self, channels: int, width: int, features: int) -> None:
        super().__init__()
        self.outputs = 2 * features
        self.body = nn.Sequential(
            conv_block(channels, width),
            conv_block(width, 2 * width, stride=2),
            conv_block(2 * width, 2 * width),
            conv_block(2 * width, 4 * width, stride=2),
            conv_block(4 * width, features),
        )

    def forward(self, crops: Tensor) -> Tensor:
        maps = self.body(crops)
        return torch.cat([maps.amax(dim=(-2, -1)), maps.mean(dim=(-2, -1))], -1)


class ProxyEncoder(nn.Module):
    """Features of the proxy image c that keep a coarse spatial layout: [B, C, J, J] -> [B, F]."""

    def __init__(
        self, channels: int, width: int, features: int, grid: int = 4, strided: bool = False
    ) -> None:
        super().__init__()
        # Two stride-2 layers make the map J / CELL (config.CELL). strided: the first layer
        # already halves the proxy, so a large proxy (192 x 192 to find 28-pixel digits on
        # 1500 x 1500 canvases) costs a quarter as much.
        self.body = nn.Sequential(
            conv_block(channels, width, stride=2 if strided else 1),
            conv_block(width, 2 * width, stride=1 if strided else 2),
            conv_block(2 * width, 2 * width, stride=2),
            nn.AdaptiveAvgPool2d(grid),
            nn.Flatten(),
            nn.Linear(2 * width * grid * grid, features),
            nn.ReLU(inplace=True),
        )

    def forward(self, proxies: Tensor) -> Tensor:
        return self.body(proxies)

    def encode(self, proxies: Tensor) -> tuple[Tensor, Tensor]:
        """The pooled features [B, F] and the feature map [B, 2 * width, J / 4, J / 4]."""
        maps = self.body[:3](proxies)
        return self.body[3:](maps), maps


class ProxyDecoder(nn.Module):
    """Logits (or means) of p(c | z_t, h_{t-1}) from [z, h]: conv-transpose upsampling to J x J."""

    def __init__(self, latent: int, hidden: int, channels: int, proxy: int, width: int) -> None:
        super().__init__()
        if proxy % 4:
            raise ValueError(f"proxy size must be a multiple of 4, got {proxy}")
        self.base = proxy // 4
        self.width = width
        self.fc = nn.Sequential(
            nn.Linear(latent + hidden, width * self.base * self.base), nn.ReLU(inplace=True)
        )
        self.up = nn.Sequential(
            nn.ConvTranspose2d(width, width, 4, stride=2, padding=1),
            nn.GroupNorm(min(8, width), width),
            nn.ReLU(inplace=True),
            nn.ConvTranspose2d(width, channels, 4, stride=2, padding=1),
        )

    def forward(self, z: Tensor, h: Tensor) -> Tensor:
        x = self.fc(torch.cat([z, h], -1)).view(-1, self.width, self.base, self.base)
        return self.up(x)


class GaussianHead(nn.Module):
    """loc and positive scale of a diagonal Gaussian over z from a feature vector.

    With ``max_scale`` the scale is bounded (a sigmoid instead of a softplus): a guide's scale
    left free grows with the entropy term of the bound wherever the likelihood is flat, until its
    training glimpses land at random.
    """

    def __init__(
        self,
        inputs: int,
        hidden: int,
        latent: int,
        init_scale: float = 1.0,
        max_scale: float | None = None,
    ) -> None:
        super().__init__()
        if max_scale is not None and not 0 < init_scale < max_scale:
            raise ValueError(f"need 0 < init_scale < max_scale, got {init_scale}, {max_scale}")
        self.max_scale = max_scale
        self.body = nn.Sequential(nn.Linear(inputs, hidden), nn.ReLU(inplace=True))
        self.loc = nn.Linear(hidden, latent)
        self.scale = nn.Linear(hidden, latent)
        # Start near N(0, init_scale): glimpses begin spread over the image, not collapsed.
        nn.init.zeros_(self.loc.weight)
        nn.init.zeros_(self.loc.bias)
        nn.init.zeros_(self.scale.weight)
        init = torch.tensor(init_scale)
        bias = torch.log(torch.expm1(init)) if max_scale is None else torch.logit(init / max_scale)
        nn.init.constant_(self.scale.bias, float(bias))

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        x = self.body(x)
        raw = self.scale(x)
        if self.max_scale is None:
            return self.loc(x), F.softplus(raw) + 1e-4
        return self.loc(x), self.max_scale * torch.sigmoid(raw) + 1e-4


class SaliencyHead(nn.Module):
    """q(z_t | c, h_{t-1}) that looks for its glimpse on the proxy's feature map.

    A 1x1 convolution scores every cell of the map, a linear map of h_{t-1} adds a score per cell
    (so that a later glimpse can avoid what was seen), and the glimpse centre is the soft-argmax
    of the scores in normalised image coordinates. Finding "a digit somewhere" is then the same
    small detector at every position instead of a regression from flattened features to
    coordinates, which is what the plain ``GaussianHead`` has to learn and learns slowly.
    The scale's location and all three standard deviations come from a ``GaussianHead``.
    """

    def __init__(
        self,
        channels: int,
        grid: int,
        inputs: int,
        hidden: int,
        latent: int,
        init_scale: float = 1.0,
        max_scale: float | None = None,
    ) -> None:
        super().__init__()
        self.cell = nn.Conv2d(channels, 1, 1)
        self.recall = nn.Linear(hidden, grid * grid)
        nn.init.zeros_(self.recall.weight)
        nn.init.zeros_(self.recall.bias)
        self.rest = GaussianHead(inputs, hidden, latent, init_scale, max_scale)
        centres = (torch.arange(grid) + 0.5) / grid * 2 - 1
        ys, xs = torch.meshgrid(centres, centres, indexing="ij")
        self.register_buffer("cells", torch.stack([xs, ys], -1).view(-1, 2), persistent=False)

    def forward(self, maps: Tensor, features: Tensor, h: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(loc, scale) of q over z, and the centre [B, 2] (x, y in [-1, 1]) it aims at;
        loc[..., 1:] is left for the caller to set from the centre and the crop's scale."""
        scores = self.cell(maps).flatten(1)  # maps [B, ...] are shared by h's S * B draws
        scores = scores.repeat(h.shape[0] // scores.shape[0], 1) + self.recall(h)
        centre = scores.softmax(-1) @ self.cells.to(scores.dtype)
        loc, scale = self.rest(torch.cat([features, h], -1))
        return loc, scale, centre


def evidence_linear(inputs: int, outputs: int) -> nn.Linear:
    """A linear layer with small initial weights: evidence begins nearly neutral instead of
    summing large random logits over glimpses, yet still passes gradient to the features."""
    layer = nn.Linear(inputs, outputs)
    nn.init.normal_(layer.weight, std=0.01)
    nn.init.zeros_(layer.bias)
    return layer


class LinearHead(nn.Module):
    """Class evidence is a linear function of the features; logits are the summed evidence."""

    def __init__(self, inputs: int, classes: int) -> None:
        super().__init__()
        self.evidence = evidence_linear(inputs, classes)

    def read(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        """Evidence [B, E] from features or a state (``y``, the crop's height, is not read)."""
        return self.evidence(x)

    @staticmethod
    def accumulate(total: Tensor, evidence: Tensor) -> Tensor:
        return total + evidence

    def combine(self, evidence: Tensor) -> Tensor:
        return evidence


def shown_logits(task: str, crops: Tensor, target_share: float | None = None) -> Tensor:
    """Logits [B, 10] of majority, max, top or multi from what each of T crops shows,
    [B, T, 12]: log p_t of the ten digits and of nothing, and the crop's vertical centre (-1 top,
    1 bottom).

    majority: log p(crops | c) up to a constant, each crop a scribble or empty patch (nothing,
    as likely whatever c is) or a digit, of class c with probability r = ``target_share``, of
    each other class with (1 - r) / 9: sum_t log(p_t(nothing) + sum_k p_t(k) p(k | c) / (1/10)),
    the reader's p_t taken as a posterior under uniform digits. A scribble read as nothing adds
    no vote, where a reader without that outcome must call it some digit.
    Digit k is absent unless some crop shows it, log P(k absent) = sum_t log(1 - p_t(k)).
    multi: the logit of P(k present). max: log P(k present) + sum_{j > k} log P(j absent).
    top: the highest crop that shows a digit shows k, log sum_t p_t(k) prod_{s above t}
    p_s(nothing).
    """
    log_p, y = crops[..., :11], crops[..., 11]
    if task == "majority":
        if target_share is None:
            raise ValueError("the shown reading of majority needs the canvases' target_share")
        other = (1 - target_share) / 9
        ratio = torch.full((10, 10), math.log(10 * other), dtype=log_p.dtype, device=log_p.device)
        ratio.fill_diagonal_(math.log(10 * target_share))  # [c, k]: log p(k | c) / (1/10)
        digit = (log_p[..., None, :10] + ratio).logsumexp(-1)  # [B, T, c]
        return torch.logaddexp(digit, log_p[..., 10:]).sum(-2)
    if task == "top":
        above = (y.unsqueeze(-1) > y.unsqueeze(-2)).to(log_p.dtype)  # [B, t, s]: s above t
        none_above = above @ log_p[..., 10:]  # [B, T, 1]
        return (log_p[..., :10] + none_above).logsumexp(-2)
    # log(1 - p), accurate where p is near one (expm1) and finite where it is one
    absent = torch.log(-torch.expm1(log_p[..., :10].clamp(max=-1e-7))).sum(-2)
    present = torch.log(-torch.expm1(absent.clamp(max=-1e-6)))  # no crop read: not quite 0
    if task == "multi":
        return present - absent
    above = absent.flip(-1).cumsum(-1).flip(-1) - absent  # sum over j > k
    return present + above


class DigitPairHead(nn.Module):
    """Class logits for two-digit tasks built from per-digit evidence s in R^10.

    identify: logit(a, b) = s_a + s_b + u_ab over unordered pairs; sum: log-sum-exp of the pair
    logits with a + b = k; mark, majority and multi: s itself (one logit per digit). Every label
    then teaches both of its digits at once, where a plain 55-way linear layer must learn each
    pair separately: on 2 CPU cores this is the difference between learning in minutes and
    sitting at chance.

    s_a + s_b alone cannot be sure of a pair of two different digits against a pair of twice
    the likelier one: (a, b) beats (a, a) only while s_b > s_a, and (b, b) only while s_a > s_b,
    so all the margin comes from the biases.

    ``evidence="mixture"`` instead reads each crop as showing one of the digits the label
    holds: with p_t the softmax of crop t's evidence, log p(crop_t | a, b) =
    log((p_t(a) + p_t(b)) / 2) for a pair, log(r p_t(y) + (1 - r) / 9 (1 - p_t(y))) for
    majority, where r is the canvases' ``target_share`` of digits of the label's class (3/5 on
    Megapixel MNIST). The logits are these summed over the crops, plus the log prior of the
    pair (two digits drawn independently and uniformly): a crop that shows a makes (a, b) as
    likely as (a, a), and only crops of b can tell them apart, however confident the crops of a
    are.

    With ``evidence="shown"`` (majority, max, top, multi) the label is a function of what each
    crop shows and where: a crop shows one of the ten digits or nothing (a scribble, an empty
    patch: one more outcome, ``nothing``, whose evidence is zero at initialisation), and
    ``shown_logits`` reads the label from the crops' outcomes and heights. ``evidence`` "crops"
    and "state" sum the evidence.
    """

    def __init__(
        self, hidden: int, task: str, evidence: str = "crops", target_share: float | None = None
    ) -> None:
        super().__init__()
        if task not in EVIDENCE_TASKS:
            raise ValueError(f"the digit-pair head needs a digit task, got {task!r}")
        if task in SHOWN_ONLY_TASKS and evidence != "shown":
            raise ValueError(f"the digit-pair head reads {task!r} from the crops: evidence='shown'")
        if evidence in ("mixture", "shown") and task == "majority" and target_share is None:
            raise ValueError(f"the {evidence} reading of majority needs the canvases' target_share")
        self.task = task
        self.mixture = evidence == "mixture"
        self.shown = evidence == "shown"
        self.target_share = target_share
        self.evidence = evidence_linear(hidden, 10)
        if self.shown:
            self.nothing = nn.Linear(hidden, 1)
            nn.init.zeros_(self.nothing.weight)
            nn.init.zeros_(self.nothing.bias)
        pairs = [(a, b) for a in range(10) for b in range(a, 10)]
        self.register_buffer("first", torch.tensor([a for a, _ in pairs]), persistent=False)
        self.register_buffer("second", torch.tensor([b for _, b in pairs]), persistent=False)
        self.register_buffer(
            "sums",
            torch.tensor([[a + b == k for a, b in pairs] for k in range(19)]),
            persistent=False,
        )
        self.pair_bias = nn.Parameter(torch.zeros(len(pairs)))
        self.register_buffer(
            "pair_prior",
            torch.tensor([math.log(2.0) if a != b else 0.0 for a, b in pairs]),
            persistent=False,
        )

    def read(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        """Evidence [B, 10] per digit of the crop whose box is centred at height ``y`` [B]
        (normalised; read by ``shown`` only); with ``mixture``, log p(crop | label) per class
        (majority) or per pair (identify, sum); with ``shown``, [B, 1, 12]: log p of the ten
        digits and of nothing, and ``y``."""
        evidence = self.evidence(x)
        if self.shown:
            shown = torch.cat([evidence, self.nothing(x)], -1).log_softmax(-1)
            return torch.cat([shown, y.unsqueeze(-1)], -1).unsqueeze(1)
        if not self.mixture:
            return evidence
        if self.task == "majority":
            p = evidence.softmax(-1)
            share = self.target_share
            return (share * p + (1 - share) / 9 * (1 - p)).log()
        log_p = evidence.log_softmax(-1)
        return torch.logaddexp(log_p[:, self.first], log_p[:, self.second]) - math.log(2.0)

    def accumulate(self, total: Tensor, evidence: Tensor) -> Tensor:
        """``read``'s evidence of one more crop added to that of the crops before: summed, or
        kept crop by crop (``shown``)."""
        if self.shown:
            return torch.cat([total, evidence], 1)
        return total + evidence

    def combine(self, evidence: Tensor) -> Tensor:
        """Logits of the task's classes from ``read``'s evidence of the crops (``accumulate``)."""
        if self.shown:
            return shown_logits(self.task, evidence, self.target_share)
        if self.mixture:
            if self.task == "majority":
                return evidence
            pair = evidence + self.pair_prior
        elif self.task in ("mark", "majority", "multi"):  # the digits present, or the most seen
            return evidence
        else:
            pair = evidence[:, self.first] + evidence[:, self.second] + self.pair_bias
        if self.task == "identify":
            return pair
        return pair.unsqueeze(1).masked_fill(~self.sums, float("-inf")).logsumexp(-1)
