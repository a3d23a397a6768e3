"""A reference U-Net (Ronneberger et al., 2015), valid or same padding, 2-D or 3-D."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ._checks import as_int
from .config import Configurable
from .geometry import TileGeometry, _as_sizes, _UNetArithmetic

__all__ = ["UNet"]


# Bounds of a UNet's arguments, checked before anything is built (and in checkpoints): far
# beyond any trained U-Net (the paper's widest layer has 1024 channels), tight enough that
# describing the model is instant and its sizes fit in int64.
MAX_CHANNELS = 1 << 16
MAX_WIDTH = 1 << 20  # base_channels * 2**depth, the widest layer
ARG_BOUNDS = {
    "in_channels": (1, MAX_CHANNELS),
    "out_channels": (1, MAX_CHANNELS),
    "depth": (0, 20),
    "base_channels": (1, MAX_WIDTH),
    "convs_per_level": (1, 16),
    "padding": (0, 1),
    "ndim": (2, 3),
}


def _check_int(name: str, value: object) -> int:
    number = as_int(name, value)
    low, high = ARG_BOUNDS[name]
    if number < low:
        raise ValueError(f"{name} must be >= {low}, got {value!r}")
    if number > high:
        raise ValueError(f"{name} must be at most {high}, got {value!r}")
    return number


def _centre_crop(x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    nd = len(size)
    index = [slice(None)] * (x.ndim - nd)
    for have, want in zip(x.shape[x.ndim - nd :], size, strict=True):
        start = (have - want) // 2
        index.append(slice(start, start + want))
    return x[tuple(index)]


class UNet(Configurable, nn.Module):
    """The U-Net of Ronneberger et al. (2015), and its 3-D variant (Çiçek et al., 2016).

    Per level ``convs_per_level`` 3x3 convolutions (unpadded for ``padding=0``, as in
    the paper; ``padding=1`` for the same-padding variant), each followed by ReLU;
    2x2 max-pooling down; channels doubling per level; 2x2 stride-2 transposed
    convolutions up, concatenated with the centre-cropped encoder features; a final
    1x1 convolution.

    Args:
        in_channels: Input channels.
        out_channels: Output channels (classes).
        depth: Number of poolings.
        base_channels: Channels of the first level (64 in the paper).
        convs_per_level: Convolutions per level.
        padding: 0 (valid convolutions) or 1 (same padding).
        ndim: 2 or 3 spatial axes.

    Shape:
        - Input: ``(N, in_channels, *spatial)`` with a size the network can take
          (see :meth:`geometry`).
        - Output: ``(N, out_channels, *spatial_out)``; ``spatial_out`` is smaller by
          ``2 * margin`` for ``padding=0`` and equal for ``padding=1``.

    Example:
        >>> net = UNet(1, 2, depth=2, base_channels=4)
        >>> net.geometry(input_size=60)
        TileGeometry(60, 20)
        >>> net(torch.zeros(1, 1, 60, 60)).shape
        torch.Size([1, 2, 20, 20])
    """

    def __init__(
        self,
        in_channels: int = 1,
        out_channels: int = 2,
        *,
        depth: int = 4,
        base_channels: int = 64,
        convs_per_level: int = 2,
        padding: int = 0,
        ndim: int = 2,
    ) -> None:
        super().__init__()
        self.in_channels = _check_int("in_channels", in_channels)
        self.out_channels = _check_int("out_channels", out_channels)
        self.depth = _check_int("depth", depth)
        self.base_channels = _check_int("base_channels", base_channels)
        self.convs_per_level = _check_int("convs_per_level", convs_per_level)
        if self.base_channels * 2**self.depth > MAX_WIDTH:
            raise ValueError(
                f"base_channels * 2**depth (the widest layer) must be at most {MAX_WIDTH}, got "
                f"{self.base_channels} * 2**{self.depth}"
            )
        padding, ndim = as_int("padding", padding), as_int("ndim", ndim)
        if padding not in (0, 1):
            raise ValueError(f"padding must be 0 (valid) or 1 (same), got {padding!r}")
        if ndim not in (2, 3):
            raise ValueError(f"ndim must be 2 or 3, got {ndim!r}")
        self.padding = padding
        self.ndim = ndim
        conv = nn.Conv2d if ndim == 2 else nn.Conv3d
        up = nn.ConvTranspose2d if ndim == 2 else nn.ConvTranspose3d
        self.pool = nn.MaxPool2d(2) if ndim == 2 else nn.MaxPool3d(2)

        def block(cin: int, cout: int) -> nn.Sequential:
            layers: list[nn.Module] = []
            for i in range(self.convs_per_level):
                layers += [conv(cin if i == 0 else cout, cout, 3, padding=padding), nn.ReLU()]
            return nn.Sequential(*layers)

        widths = [self.base_channels * 2**level for level in range(self.depth + 1)]
        self.down = nn.ModuleList()
        cin = self.in_channels
        for w in widths[:-1]:
            self.down.append(block(cin, w))
            cin = w
        self.bottom = block(cin, widths[-1])
        self.ups = nn.ModuleList()
        self.up_blocks = nn.ModuleList()
        for w in reversed(widths[:-1]):
            self.ups.append(up(2 * w, w, 2, stride=2))
            self.up_blocks.append(block(2 * w, w))
        self.head = conv(widths[0], self.out_channels, 1)
        self._sizes = _UNetArithmetic(self.depth, self.convs_per_level, 3)

    def _check_input(self, x: torch.Tensor) -> None:
        if x.ndim != self.ndim + 2 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"input must have shape (N, {self.in_channels}, *{self.ndim} spatial sizes), "
                f"got {tuple(x.shape)}"
            )
        for axis, size in enumerate(x.shape[2:]):
            if self.padding == 0:
                self._sizes.output_for(int(size), axis)  # raises with the nearest sizes
            elif size % 2**self.depth:
                k = int(size) // 2**self.depth * 2**self.depth
                raise ValueError(
                    f"input size {size} on axis {axis} must be a multiple of 2**depth="
                    f"{2**self.depth} for a same-padding U-Net; nearest: {k or 2**self.depth} "
                    f"or {k + 2**self.depth}"
                )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input(x)
        skips = []
        for block in self.down:
            x = block(x)
            skips.append(x)
            x = self.pool(x)
        x = self.bottom(x)
        for up, block, skip in zip(self.ups, self.up_blocks, reversed(skips), strict=True):
            x = up(x)
            x = block(torch.cat([_centre_crop(skip, x.shape[2:]), x], dim=1))
        out: torch.Tensor = self.head(x)
        return out

    def geometry(
        self,
        *,
        input_size: int | Sequence[int] | None = None,
        output_size: int | Sequence[int] | None = None,
    ) -> TileGeometry:
        """The network's :class:`TileGeometry`, with the stride that makes tiling exact.

        For ``padding=0`` this is :meth:`TileGeometry.unet` (give exactly one size).
        For ``padding=1`` give ``input_size`` (a multiple of ``2**depth``) and optionally
        a smaller ``output_size`` to discard border predictions (default: the input).

        Example:
            >>> UNet(base_channels=4).geometry(output_size=388)
            TileGeometry(572, 388, step=384)
            >>> UNet(base_channels=4, padding=1, depth=2).geometry(input_size=64, output_size=48)
            TileGeometry(64, 48)
        """
        if self.padding == 0:
            return TileGeometry.unet(
                input_size=input_size,
                output_size=output_size,
                depth=self.depth,
                convs_per_level=self.convs_per_level,
                kernel_size=3,
                ndim=self.ndim,
            )
        if input_size is None:
            raise ValueError("a same-padding UNet needs input_size (a multiple of 2**depth)")
        factor = 2**self.depth
        inp = _as_sizes("input_size", input_size, self.ndim)
        out = inp if output_size is None else _as_sizes("output_size", output_size, self.ndim)
        for axis, size in enumerate(inp):
            if size % factor:
                raise ValueError(
                    f"input_size {size} on axis {axis} must be a multiple of 2**depth={factor}"
                )
        step = tuple(max(o // factor * factor, 1) if o >= factor else o for o in out)
        return TileGeometry._compact(inp, out, step)
