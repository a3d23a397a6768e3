"""Gaussian blending equals MONAI's sliding_window_inference on the same windows."""

from __future__ import annotations

import monai.inferers as monai_inferers  # pinned in the dev extra: this test always runs
import torch
from hypothesis import given
from hypothesis import strategies as st

import unet_transforms as ut


def same_padding_net() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(4, 2, 3, padding=1)
    ).eval()


NET = same_padding_net()


@given(
    size=st.tuples(st.integers(8, 90), st.integers(8, 90)),
    tile_and_step=st.sampled_from([(16, 12), (16, 8), (32, 24), (24, 18), (40, 20)]),
    align=st.sampled_from(["center", "start"]),
)
def test_gaussian_blend_equals_monai_on_the_mirrored_canvas(size, tile_and_step, align):
    tile, step = tile_and_step
    geometry = ut.TileGeometry(tile, tile, step=step)
    image = torch.rand(1, *size)
    grid = ut.TileGrid(size, geometry, align=align)
    # the grid's input windows cover the mirror-extrapolated canvas with stride `step`,
    # exactly the windows MONAI scans there with overlap = 1 - step / tile
    canvas = ut.mirror_pad(image, grid.padding)
    with torch.no_grad():
        theirs = monai_inferers.sliding_window_inference(
            canvas[None],
            roi_size=(tile, tile),
            sw_batch_size=4,
            predictor=NET,
            overlap=1 - step / tile,
            mode="gaussian",
            sigma_scale=0.125,
        )[0]
    (b0, _), (b1, _) = grid.padding
    theirs = theirs[:, b0 : b0 + size[0], b1 : b1 + size[1]]
    ours = ut.predict_tiled(NET, image, geometry, blend="gaussian", align=align)
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)
