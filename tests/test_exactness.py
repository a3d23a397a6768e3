"""The headline guarantee: tiled inference with a U-Net equals one whole-image pass.

With ``geometry = UNet.geometry(...)`` (``TileGeometry.unet``: the tile stride is a
multiple of ``2**depth``), stitching the tiles' outputs equals one forward pass over
``mirror_pad(image, grid.padding)`` cropped to the image. With the paper's stride (the
full output size, 388) it does not: that test guards the stride against "simplifying".
"""

from __future__ import annotations

import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st

from unet_transforms import TileGeometry, TileGrid, mirror_pad, predict_tiled
from unet_transforms.models import UNet

from common import make_tensor


def make_unet(**kwargs) -> UNet:
    torch.manual_seed(0)
    model = UNet(**kwargs).eval()
    # random but non-degenerate biases, so ReLUs are neither all on nor all off
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.Conv2d | torch.nn.Conv3d) and module.bias is not None:
                module.bias.uniform_(-0.1, 0.1)
    return model


def whole_image(model, image, grid, mode="reflect"):
    canvas = mirror_pad(image, grid.padding, mode)
    with torch.inference_mode():
        out = model(canvas[None])[0]
    offset = [b - m for (b, _), m in zip(grid.padding, grid.geometry.margin)]
    return out[(Ellipsis, *[slice(o, o + n) for o, n in zip(offset, grid.image_size)])]


def assert_exact(tiled, reference):
    scale = reference.abs().max().clamp(min=1e-6)
    assert float((tiled - reference).abs().max() / scale) <= 1e-5


UNET_2D = make_unet(in_channels=2, out_channels=3, depth=2, base_channels=4)
GEOMETRY_2D = UNET_2D.geometry(input_size=60)  # output 20, step 20 (a multiple of 4)
# one conv per level: output 22 is not a multiple of 4, so step 20 keeps the centre 20
UNET_2D_ODD = make_unet(in_channels=2, out_channels=3, depth=2, base_channels=4, convs_per_level=1)
GEOMETRY_2D_ODD = UNET_2D_ODD.geometry(output_size=22)
NETS_2D = {"step=output": (UNET_2D, GEOMETRY_2D), "step<output": (UNET_2D_ODD, GEOMETRY_2D_ODD)}


@settings(max_examples=25)
@given(
    st.tuples(st.integers(1, 90), st.integers(1, 90)),
    st.sampled_from(["reflect", "symmetric"]),
    st.sampled_from(["center", "start"]),
    st.sampled_from(sorted(NETS_2D)),
)
@example((1, 1), "reflect", "center", "step<output")  # a single pixel
@example((7, 3), "symmetric", "start", "step=output")  # smaller than the 20-pixel margin
@example((40, 60), "reflect", "center", "step=output")  # exact multiples of the step
@example((40, 60), "reflect", "start", "step<output")
@example((41, 59), "symmetric", "center", "step<output")  # odd, one pixel off
def test_tiled_equals_whole_image_2d(size, mode, align, net):
    model, geometry = NETS_2D[net]
    assert net == "step=output" or geometry.step < geometry.output_size
    image = make_tensor((2, *size))
    grid = TileGrid(size, geometry, align=align)
    tiled = predict_tiled(model, image, geometry, mode=mode, align=align, batch_size=4)
    assert tiled.shape == (3, *size)
    assert_exact(tiled, whole_image(model, image, grid, mode))


def test_depth_3_with_a_stride_that_is_not_the_output_size():
    model = make_unet(in_channels=1, out_channels=2, depth=3, base_channels=2)
    geometry = model.geometry(output_size=36)  # step 32: keeps the centre 32 of 36
    assert geometry.step == (32, 32)
    image = make_tensor((1, 101, 77))
    grid = TileGrid((101, 77), geometry)
    assert_exact(predict_tiled(model, image, geometry), whole_image(model, image, grid))


UNET_3D = make_unet(in_channels=1, out_channels=2, depth=2, base_channels=2, ndim=3)
UNET_3D_ODD = make_unet(
    in_channels=1, out_channels=2, depth=2, base_channels=2, ndim=3, convs_per_level=1
)


@settings(max_examples=10)
@given(st.tuples(st.integers(1, 30), st.integers(1, 30), st.integers(1, 30)), st.booleans())
@example((1, 1, 1), False)
@example((3, 20, 7), True)
def test_tiled_equals_whole_image_3d(size, odd):
    model = UNET_3D_ODD if odd else UNET_3D
    geometry = (
        model.geometry(output_size=(6, 10, 14))  # steps (4, 8, 12): keep the centres
        if odd
        else model.geometry(input_size=(44, 44, 52))
    )
    image = make_tensor((1, *size))
    grid = TileGrid(size, geometry)
    assert_exact(
        predict_tiled(model, image, geometry, batch_size=2), whole_image(model, image, grid)
    )


def test_paper_stride_is_not_exact_and_ours_is():
    model = make_unet(in_channels=1, out_channels=2, depth=4, base_channels=2)
    image = make_tensor((1, 700, 500))
    exact = TileGeometry.unet(input_size=572)
    assert exact == TileGeometry(572, 388, step=384)
    reference = whole_image(model, image, TileGrid((700, 500), exact))
    assert_exact(predict_tiled(model, image, exact), reference)
    # Same windows, stride 388 = 16 * 24 + 4: neighbouring tiles sit on different
    # pooling grids, so the stitched result is not what the network computes on the
    # whole image. Do not "simplify" the stride to the output size.
    stitched = predict_tiled(model, image, TileGeometry(572, 388))
    relative = float((stitched - reference).abs().max() / reference.abs().max())
    assert relative > 1e-4, (
        "step 388 unexpectedly matched the whole-image pass"
    )  # 10x the tolerance
