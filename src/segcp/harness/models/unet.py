"""A plain 2D UNet with BatchNorm and optional (MC) dropout.

Architecture (``width`` = w, the SSL4MIS / RW-CP base UNet when w = 16)::

    encoder  level 0: 2×[conv3×3 → BN → ReLU] at H×W,        w channels
             level 1: maxpool 2 → block at H/2,               2w
             level 2: maxpool 2 → block at H/4,               4w
             level 3: maxpool 2 → block at H/8,               8w
             bottleneck: maxpool 2 → block at H/16,          16w
    decoder  4 × [transposed conv 2×2 stride 2 (halves channels) → concat skip → block]
    head     conv 1×1 → ``n_classes`` logits at H×W

Four down-sampling levels, so H and W must be multiples of 16. Every block is
``conv3×3 → BN → ReLU → dropout → conv3×3 → BN → ReLU``. Dropout (when ``dropout > 0``)
sits between the two convolutions of the blocks at level ``dropout_from_level`` and deeper:
by default (2) the "central" blocks — encoder levels 2–4 and the decoder blocks at levels 3
and 2 — as in Bayesian SegNet (Kendall et al., 2015); 0 puts it in every block, as the SSL4MIS
UNet does in its encoder. The head never sees dropout. Measured on ACDC (4 classes, width 8,
p = 0.25): dropout in every block cost a lot of accuracy (validation mean foreground Dice
0.43 vs 0.72 for the central placement, docs/models.md).

Dropout kind: ``nn.Dropout2d`` (whole feature maps are dropped) by default. Neighbouring
pixels of a conv feature map are strongly correlated, so element-wise dropout
(``nn.Dropout``, ``dropout_kind="element"``) is largely averaged away by the next 3 × 3
convolution: its MC samples differ by speckle, not by where the boundary lies. Channel
dropout removes whole features, so MC samples move the boundary coherently, which is the
variation CONSIGN's principal components are meant to capture. (This is the reasoning, not a
measurement: the two kinds were not compared on trained models.)

Examples
--------
>>> import torch
>>> net = UNet(in_channels=1, n_classes=2, width=4)
>>> net(torch.zeros(2, 1, 32, 32)).shape
torch.Size([2, 2, 32, 32])
"""

from __future__ import annotations

import torch
from torch import nn

from segcp.errors import SegcpError

__all__ = ["UNet", "enable_mc_dropout", "has_dropout"]

DROPOUT_KINDS = ("channel", "element")


def _dropout(p: float, kind: str) -> nn.Module:
    if p <= 0:
        return nn.Identity()
    return nn.Dropout2d(p) if kind == "channel" else nn.Dropout(p)


class ConvBlock(nn.Sequential):
    """conv3×3 → BN → ReLU → dropout → conv3×3 → BN → ReLU (same spatial size)."""

    def __init__(self, c_in: int, c_out: int, p: float, kind: str) -> None:
        super().__init__(
            nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
            nn.BatchNorm2d(c_out),
            nn.ReLU(inplace=True),
            _dropout(p, kind),
            nn.Conv2d(c_out, c_out, 3, padding=1, bias=False),
            nn.BatchNorm2d(c_out),
            nn.ReLU(inplace=True),
        )


class Up(nn.Module):
    """Transposed conv 2×2 (stride 2, halves the channels) → concat skip → ConvBlock."""

    def __init__(self, c_in: int, c_out: int, p: float, kind: str) -> None:
        super().__init__()
        self.up = nn.ConvTranspose2d(c_in, c_out, 2, stride=2)
        self.block = ConvBlock(2 * c_out, c_out, p, kind)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.block(torch.cat([skip, self.up(x)], dim=1))


class UNet(nn.Module):
    """2D UNet with four down-sampling levels (see the module docstring).

    Parameters
    ----------
    in_channels : image channels (1 for MRI / ultrasound).
    n_classes : output channels (logits); 2 for a binary task (softmax[:, 1] = foreground).
    width : channels of the first level; level k has ``width · 2**k`` (k = 0..4).
    dropout : dropout probability in the encoder/decoder blocks, 0 for none.
    dropout_kind : ``"channel"`` (``nn.Dropout2d``, default) or ``"element"`` (``nn.Dropout``).
    dropout_from_level : only blocks at level >= this have dropout (level 0 = full
        resolution, 4 = bottleneck). Default 2: the "central" blocks at H/4 and below
        (encoder levels 2-4, decoder levels 3 and 2), as in Bayesian SegNet; 0 = every block.

    Input (B, in_channels, H, W) float with H, W multiples of 16; output (B, n_classes, H, W)
    logits.
    """

    def __init__(
        self,
        in_channels: int = 1,
        n_classes: int = 2,
        width: int = 16,
        dropout: float = 0.0,
        dropout_kind: str = "channel",
        dropout_from_level: int = 2,
    ) -> None:
        super().__init__()
        if int(in_channels) < 1 or int(n_classes) < 2 or int(width) < 1:
            raise SegcpError(
                f"UNet(in_channels={in_channels}, n_classes={n_classes}, width={width}): need in_channels >= 1, n_classes >= 2, width >= 1"
            )
        if not 0.0 <= float(dropout) < 1.0:
            raise SegcpError(f"dropout={dropout!r}: must be in [0, 1)")
        if dropout_kind not in DROPOUT_KINDS:
            raise SegcpError(f"dropout_kind={dropout_kind!r}: expected 'channel' or 'element'")
        self.in_channels, self.n_classes, self.width = int(in_channels), int(n_classes), int(width)
        if int(dropout_from_level) != dropout_from_level or not 0 <= int(dropout_from_level) <= 4:
            raise SegcpError(f"dropout_from_level={dropout_from_level!r}: must be an integer in 0..4")
        self.dropout, self.dropout_kind = float(dropout), dropout_kind
        self.dropout_from_level = int(dropout_from_level)
        c = [self.width * 2**k for k in range(5)]
        kind = dropout_kind

        def p(level: int) -> float:
            return self.dropout if level >= self.dropout_from_level else 0.0

        self.enc = nn.ModuleList([ConvBlock(self.in_channels, c[0], p(0), kind)])
        self.enc.extend(ConvBlock(c[k - 1], c[k], p(k), kind) for k in range(1, 5))
        self.pool = nn.MaxPool2d(2)
        self.dec = nn.ModuleList(Up(c[k], c[k - 1], p(k - 1), kind) for k in range(4, 0, -1))
        self.head = nn.Conv2d(c[0], self.n_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise SegcpError(f"UNet input of shape {tuple(x.shape)}: expected (B, {self.in_channels}, H, W)")
        if x.shape[-1] % 16 or x.shape[-2] % 16:
            raise SegcpError(f"UNet input of size {tuple(x.shape[-2:])}: H and W must be multiples of 16")
        skips = []
        for k, block in enumerate(self.enc):
            x = block(x if k == 0 else self.pool(x))
            skips.append(x)
        x = skips.pop()
        for up in self.dec:
            x = up(x, skips.pop())
        return self.head(x)

    @torch.no_grad()
    def init_head_prior(self, class_freq: torch.Tensor | list[float], weight_scale: float = 0.1) -> None:
        """Start from the class prior: head bias = log class frequency, head weights × ``weight_scale``.

        The prior initialisation of the focal-loss paper (Lin et al., 2017). With a random head
        the initial softmax is far from the (very unbalanced) class frequencies and plain
        cross-entropy spends hundreds of steps unlearning that bias before it learns shapes
        (docs/models.md has the measurement).
        """
        bias = self.head.bias
        assert bias is not None  # the head is built with a bias
        f = torch.as_tensor(class_freq, dtype=bias.dtype).clamp_min(1e-6)
        if f.shape != bias.shape:
            raise SegcpError(f"class_freq of shape {tuple(f.shape)}: expected ({self.n_classes},)")
        bias.copy_(torch.log(f / f.sum()))
        self.head.weight.mul_(float(weight_scale))

    def config(self) -> dict[str, object]:
        """Constructor arguments (stored in checkpoints)."""
        return {
            "in_channels": self.in_channels,
            "n_classes": self.n_classes,
            "width": self.width,
            "dropout": self.dropout,
            "dropout_kind": self.dropout_kind,
            "dropout_from_level": self.dropout_from_level,
        }


def has_dropout(model: nn.Module) -> bool:
    """True when the model holds an active dropout layer (p > 0)."""
    return any(isinstance(m, (nn.Dropout, nn.Dropout2d)) and m.p > 0 for m in model.modules())


def enable_mc_dropout(model: nn.Module) -> nn.Module:
    """Put the model in eval mode (BatchNorm uses running statistics) but keep dropout on."""
    model.eval()
    for m in model.modules():
        if isinstance(m, (nn.Dropout, nn.Dropout2d)):
            m.train()
    return model
