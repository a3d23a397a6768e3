"""Input builders and checkers shared by the tests (after torchvision's common_utils)."""

from __future__ import annotations

import copy
import pickle
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import PIL.Image
import torch
from hypothesis import strategies as st
from torchvision import tv_tensors

from unet_transforms import TileGeometry, TileGrid

# Odd, non-square: catches height/width swaps.
DEFAULT_SIZE = (17, 11)
DTYPES = [torch.uint8, torch.bool, torch.int64, torch.float16, torch.bfloat16, torch.float32]


def make_tensor(
    shape: Sequence[int], dtype: torch.dtype = torch.float32, seed: int = 0
) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    if dtype == torch.bool:
        return torch.randint(0, 2, tuple(shape), generator=g).bool()
    if dtype.is_floating_point:
        return torch.rand(tuple(shape), generator=g).to(dtype)
    return torch.randint(0, 100, tuple(shape), generator=g).to(dtype)


def make_image(
    size: Sequence[int] = DEFAULT_SIZE, channels: int = 3, dtype: torch.dtype = torch.float32
) -> tv_tensors.Image:
    return tv_tensors.Image(make_tensor((channels, *size), dtype))


def make_video(size: Sequence[int] = DEFAULT_SIZE, frames: int = 2) -> tv_tensors.Video:
    return tv_tensors.Video(make_tensor((frames, 3, *size)))


def make_mask(
    size: Sequence[int] = DEFAULT_SIZE, dtype: torch.dtype = torch.int64
) -> tv_tensors.Mask:
    return tv_tensors.Mask(make_tensor(tuple(size), dtype, seed=1))


def make_bounding_boxes(size: Sequence[int] = DEFAULT_SIZE) -> tv_tensors.BoundingBoxes:
    h, w = size
    return tv_tensors.BoundingBoxes(
        torch.tensor([[1.0, 2.0, w - 2.0, h - 3.0], [0.0, 0.0, 3.0, 4.0]]),
        format="XYXY",
        canvas_size=(h, w),
    )


def make_keypoints(size: Sequence[int] = DEFAULT_SIZE) -> tv_tensors.KeyPoints:
    h, w = size
    return tv_tensors.KeyPoints(torch.tensor([[1.0, 2.0], [w - 1.0, h - 1.0]]), canvas_size=(h, w))


def make_pil(size: Sequence[int] = DEFAULT_SIZE, mode: str = "RGB") -> PIL.Image.Image:
    h, w = size
    rng = np.random.default_rng(0)
    if mode == "RGB":
        return PIL.Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
    image = PIL.Image.fromarray(rng.integers(0, 5, (h, w), dtype=np.uint8))
    if mode == "P":
        image.putpalette([v for i in range(256) for v in (i, 255 - i, i // 2)])
    return image


def sizes(ndim: int, max_size: int = 40) -> st.SearchStrategy[tuple[int, ...]]:
    """Spatial sizes: 1, small, odd, and larger ones."""
    return st.tuples(*[st.integers(1, max_size)] * ndim)


def _leaves(sample: Any) -> list[Any]:
    from torch.utils._pytree import tree_flatten

    return tree_flatten(sample)[0]


def check_transform(transform: Callable[..., Any], sample: Any) -> Any:
    """Runs ``transform`` on a sample the way pipelines do, checking the invariants.

    Checks: output structure and leaf types match the input, dtypes and devices are kept,
    non-tensor leaves pass through by identity, the input is not modified in place, and a
    pickled copy gives the same result under the same seed. Returns the output.
    """
    before = copy.deepcopy(sample)
    torch.manual_seed(0)
    out = transform(sample)
    for a, b in zip(_leaves(sample), _leaves(before), strict=True):
        if isinstance(a, torch.Tensor):
            assert torch.equal(a, b), "the transform modified its input in place"
    in_leaves, out_leaves = _leaves(sample), _leaves(out)
    assert len(in_leaves) == len(out_leaves)
    for a, b in zip(in_leaves, out_leaves, strict=True):
        assert type(a) is type(b), f"{type(a).__name__} came back as {type(b).__name__}"
        if isinstance(a, torch.Tensor):
            assert a.dtype == b.dtype and a.device == b.device
        elif not isinstance(a, PIL.Image.Image):
            assert a is b, "non-tensor leaves must pass through unchanged"
    clone = pickle.loads(pickle.dumps(transform))
    torch.manual_seed(0)
    again = clone(sample)
    for a, b in zip(out_leaves, _leaves(again), strict=True):
        if isinstance(a, torch.Tensor):
            assert torch.equal(a, b)
        elif isinstance(a, PIL.Image.Image):
            assert np.array_equal(np.asarray(a), np.asarray(b))
    return out


@st.composite
def geometries(draw, ndim: int | None = None):
    ndim = ndim or draw(st.sampled_from([2, 3]))
    out = draw(st.lists(st.integers(1, 9), min_size=ndim, max_size=ndim))
    margin = draw(st.lists(st.integers(0, 6), min_size=ndim, max_size=ndim))
    step = [draw(st.integers(1, o)) for o in out]
    return TileGeometry([o + 2 * m for o, m in zip(out, margin)], out, step=step)


@st.composite
def grids(draw, ndim: int | None = None, max_size: int = 30):
    geometry = draw(geometries(ndim))
    size = draw(st.lists(st.integers(1, max_size), min_size=geometry.ndim, max_size=geometry.ndim))
    align = draw(st.sampled_from(["center", "start"]))
    return TileGrid(size, geometry, align=align)
