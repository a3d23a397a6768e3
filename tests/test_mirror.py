"""mirror_pad and mirror_index: equal to numpy.pad for every size and pad width."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torchvision import tv_tensors

from unet_transforms import mirror_pad
from unet_transforms.functional import _mirror as mirror_module
from unet_transforms.functional import mirror_index

from common import DTYPES, make_tensor

MODES = ["reflect", "symmetric"]


def numpy_oracle(x: torch.Tensor, padding, mode: str) -> np.ndarray:
    lead = x.ndim - len(padding)
    array = x.float().numpy() if x.dtype == torch.bfloat16 else x.numpy()
    return np.pad(array, [(0, 0)] * lead + [tuple(p) for p in padding], mode=mode)


@st.composite
def shapes_and_pads(draw, max_ndim: int = 3):
    ndim = draw(st.integers(1, max_ndim))
    lead = draw(st.lists(st.integers(1, 3), max_size=2))
    spatial = draw(st.lists(st.integers(1, 9), min_size=ndim, max_size=ndim))
    pads = draw(
        st.lists(st.tuples(st.integers(0, 25), st.integers(0, 25)), min_size=ndim, max_size=ndim)
    )
    return (*lead, *spatial), pads


@given(shapes_and_pads(), st.sampled_from(MODES), st.sampled_from(DTYPES))
def test_mirror_pad_equals_numpy_pad(shape_pads, mode, dtype):
    shape, pads = shape_pads
    x = make_tensor(shape, dtype)
    out = mirror_pad(x, pads, mode)
    assert out.dtype == dtype
    expected = numpy_oracle(x, pads, mode)
    got = out.float().numpy() if dtype == torch.bfloat16 else out.numpy()
    np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("size", [1, 2, 3, 7])
def test_pads_much_wider_than_the_axis(mode, size):
    x = torch.arange(size * 2).reshape(2, size)
    pads = [(0, 0), (5 * size + 3, 4 * size + 1)]
    np.testing.assert_array_equal(
        mirror_pad(x, pads, mode).numpy(), np.pad(x.numpy(), pads, mode=mode)
    )


def test_large_image_fast_path_equals_numpy():
    x = make_tensor((3, 300, 500))  # > 1 MiB output: numpy-backed allocation
    pads = [(92, 100), (7, 600)]
    np.testing.assert_array_equal(
        mirror_pad(x, pads).numpy(), np.pad(x.numpy(), [(0, 0), *pads], mode="reflect")
    )


@pytest.mark.parametrize("mode", MODES)
def test_autograd_matches_numpy_and_flows(mode):
    x = torch.rand(2, 3, 4, dtype=torch.float64, requires_grad=True)
    pads = [(5, 2), (0, 9)]
    y = mirror_pad(x, pads, mode)
    np.testing.assert_array_equal(y.detach().numpy(), numpy_oracle(x.detach(), pads, mode))
    (y * torch.arange(y.numel(), dtype=y.dtype).reshape(y.shape)).sum().backward()
    assert x.grad is not None
    # the gradient of a gather is the scatter-add of the output gradient
    weights = torch.arange(y.numel(), dtype=torch.float64).reshape(y.shape)
    assert torch.isclose(x.grad.sum(), weights.sum())
    assert torch.autograd.gradcheck(lambda t: mirror_pad(t, pads, mode), (x,))


@pytest.mark.parametrize("shape", [(3, 5, 6), (2, 300, 400)])  # the kernel, numpy's path
@pytest.mark.parametrize("mode", MODES)
def test_grad_requiring_input_without_grad_takes_the_fast_paths(shape, mode):
    """Under no_grad a tensor that requires grad is padded like any other (torch's kernel
    or the numpy view path, not the gathers kept for autograd): no graph, numpy's values."""
    x = torch.rand(shape, requires_grad=True)
    with torch.no_grad():
        y = mirror_pad(x, [(2, 3), (4, 1)], mode)
    assert not y.requires_grad
    np.testing.assert_array_equal(y.numpy(), numpy_oracle(x.detach(), [(2, 3), (4, 1)], mode))


def test_input_not_modified_and_output_is_new_memory():
    x = torch.arange(12).reshape(3, 4)
    before = x.clone()
    out = mirror_pad(x, [(0, 0), (0, 0)])
    out += 1
    assert torch.equal(x, before)


def test_tv_tensor_type_is_kept():
    x = tv_tensors.Mask(torch.zeros(5, 6, dtype=torch.uint8))
    out = mirror_pad(x, [(1, 2), (3, 4)])
    assert isinstance(out, tv_tensors.Mask)
    assert out.shape == (8, 13)


@pytest.mark.parametrize(
    ("padding", "mode", "error", "match"),
    [
        ([(-1, 0)], "reflect", ValueError, r"non-negative, got \(-1, 0\) for axis 0"),
        ([(1, 0)], "wrap", ValueError, r"mode must be 'reflect' or 'symmetric', got 'wrap'"),
        (
            [(1, 0), (1, 1), (0, 0)],
            "reflect",
            ValueError,
            r"3 \(before, after\) pairs but x has only 2 axes",
        ),
        ([1, 2], "reflect", TypeError, r"\(before, after\) int pairs, got 1 for axis 0"),
        ([(1.5, 2)], "reflect", TypeError, r"int pairs"),
        ([], "reflect", TypeError, r"non-empty sequence"),
        ("ab", "reflect", TypeError, r"non-empty sequence"),
    ],
)
def test_bad_arguments(padding, mode, error, match):
    with pytest.raises(error, match=match):
        mirror_pad(torch.zeros(3, 4), padding, mode)


def test_only_pixels_are_mirrored():
    # a BoundingBoxes was padded as if its coordinates were pixels (shape (1, 4) ->
    # (7, 10), canvas_size unchanged); key points failed inside torchvision
    class ClassLabels(tv_tensors.TVTensor):
        pass

    for x in (
        tv_tensors.BoundingBoxes([[1.0, 2.0, 5.0, 6.0]], format="XYXY", canvas_size=(10, 10)),
        tv_tensors.KeyPoints([[1.0, 2.0], [3.0, 4.0]], canvas_size=(10, 10)),
        torch.ones(2, 2).as_subclass(ClassLabels),
    ):
        with pytest.raises(TypeError, match=rf"x must hold pixels .*got {type(x).__name__}"):
            mirror_pad(x, [(1, 1), (1, 1)])
    for x in (tv_tensors.Image(torch.ones(1, 2, 2)), tv_tensors.Video(torch.ones(1, 1, 2, 2))):
        assert type(mirror_pad(x, [(1, 1), (1, 1)])) is type(x)


def test_empty_axis_and_non_tensor():
    with pytest.raises(ValueError, match=r"cannot mirror an empty axis: x has shape \(3, 0\)"):
        mirror_pad(torch.zeros(3, 0), [(1, 1)])
    with pytest.raises(TypeError, match=r"x must be a torch\.Tensor, got ndarray"):
        mirror_pad(np.zeros((3, 3)), [(1, 1)])


@given(st.integers(1, 12), st.integers(-40, 40), st.integers(0, 40), st.sampled_from(MODES))
def test_mirror_index_matches_numpy(size, start, length, mode):
    positions = range(start, start + length)
    idx = mirror_index(positions, size, mode)
    assert idx.dtype == torch.int64
    if length:
        assert int(idx.min()) >= 0 and int(idx.max()) < size
    # numpy oracle: pad an arange wide enough, then read the positions
    before = max(0, -start)
    after = max(0, start + length - size)
    padded = np.pad(np.arange(size), (before, after), mode=mode)
    expected = padded[np.arange(start, start + length) + before]
    np.testing.assert_array_equal(idx.numpy(), expected)


def test_mirror_index_errors():
    with pytest.raises(ValueError, match="size must be >= 1, got 0"):
        mirror_index(range(3), 0)
    with pytest.raises(ValueError, match="mode must be"):
        mirror_index(range(3), 2, "edge")
    with pytest.raises(TypeError, match="size must be an int, got float"):
        mirror_index(range(3), 3.0)
    with pytest.raises(TypeError, match=r"positions must be integers, got \[0\.5\]"):
        mirror_index([0.5], 3)
    with pytest.raises(
        TypeError, match=r"positions must be integers, got a torch\.float32 tensor"
    ):
        mirror_index(torch.tensor([1.0]), 3)
    with pytest.raises(TypeError, match="positions must be a range, a tensor or a sequence"):
        mirror_index("ab", 3)


def test_mirror_index_takes_sequences_and_arrays():
    expected = mirror_index(range(-4, 6), 3).tolist()
    assert mirror_index(list(range(-4, 6)), 3).tolist() == expected
    assert mirror_index(np.arange(-4, 6), 3).tolist() == expected
    assert mirror_index(torch.arange(-4, 6, dtype=torch.int32), 3).dtype == torch.int64


# ------------------------------------------- strips copied once (issue 11, item 14)
@pytest.mark.parametrize("row_loops", [0, 64])  # torch flips, or numpy reversed rows
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    ("shape", "pads"),
    [
        ((3, 9, 9), [(8, 1), (1, 8)]),  # widest reflect strips: size - 1
        ((3, 9, 9), [(9, 0), (0, 9)]),  # widest symmetric strips (reflect: by index)
        ((70, 4, 5), [(2, 3), (1, 4)]),  # more leading slices than the numpy row loop
        ((2, 3, 4, 5), [(2, 3), (3, 4), (4, 5)]),  # 3 padded axes: corners of corners
        ((2, 3, 4, 5), [(3, 3), (0, 0), (4, 4)]),  # an unpadded axis in between
        ((4, 6, 7), [(0, 0), (6, 6), (7, 7)]),  # the first padded axis is not the first
        ((0, 5, 5), [(1, 2), (3, 1)]),  # no leading slice at all
    ],
)
def test_strips_equal_numpy_pad_on_every_path(monkeypatch, row_loops, mode, shape, pads):
    monkeypatch.setattr(mirror_module, "_REFLECT_KERNEL_SMALL_BYTES", -1)  # numpy's paths
    monkeypatch.setattr(mirror_module, "_MAX_ROW_LOOPS", row_loops)
    for dtype in (torch.uint8, torch.float32, torch.bfloat16, torch.complex64):
        x = make_tensor(shape, torch.float32).mul(100).to(dtype)
        np.testing.assert_array_equal(
            mirror_pad(x, pads, mode).float().numpy()
            if dtype == torch.bfloat16
            else mirror_pad(x, pads, mode).numpy(),
            numpy_oracle(x, pads, mode),
        )


def test_conjugate_and_negative_views_are_resolved():
    z = torch.randn(3, 4, dtype=torch.complex64)
    np.testing.assert_array_equal(
        mirror_pad(z.conj(), [(2, 2), (1, 3)]).numpy(),
        np.pad(z.conj().resolve_conj().numpy(), [(2, 2), (1, 3)], mode="reflect"),
    )
    negative = z.conj().imag  # a view with torch's negative bit set
    assert negative.is_neg()
    np.testing.assert_array_equal(
        mirror_pad(negative, [(2, 1), (3, 3)]).numpy(),
        np.pad(-z.imag.numpy(), [(2, 1), (3, 3)], mode="reflect"),
    )


def test_non_contiguous_and_expanded_inputs():
    base = make_tensor((6, 7, 8))
    for x in (base.transpose(1, 2), base[:, ::2, 1::3], torch.ones(1, 5).expand(4, 5)):
        pads = [(3, 2), (1, 2)]
        np.testing.assert_array_equal(
            mirror_pad(x, pads).numpy(), numpy_oracle(x.contiguous(), pads, "reflect")
        )


# ------------------------------ image and last-axis strips in row chunks (item 14)
@pytest.mark.parametrize("chunk_bytes", [1, 200, 1 << 20])  # a row, a few rows, one chunk
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    ("shape", "pads"),
    [
        ((9,), [(8, 7)]),  # 1-D: one chunk whatever its size
        ((5, 9), [(0, 0), (7, 8)]),  # only the last axis padded
        ((3, 9, 9), [(8, 1), (1, 8)]),  # widest reflect strips: size - 1
        ((3, 9, 9), [(9, 0), (0, 9)]),  # widest symmetric strips (reflect: by index)
        ((2, 3, 7, 6), [(2, 3), (3, 4), (4, 5)]),  # 3 padded axes
        ((4, 6, 7), [(3, 2), (0, 0)]),  # last axis unpadded: the chunks only copy
        ((0, 5, 5), [(1, 2), (3, 1)]),  # no leading slice at all
        ((1, 1, 5), [(0, 1), (2, 2)]),  # one row
    ],
)
def test_chunked_fill_equals_numpy_pad(monkeypatch, chunk_bytes, mode, shape, pads):
    monkeypatch.setattr(mirror_module, "_REFLECT_KERNEL_SMALL_BYTES", -1)
    monkeypatch.setattr(mirror_module, "_CHUNK_BYTES", chunk_bytes)
    for dtype in (torch.uint8, torch.bool, torch.int64, torch.float16, torch.float32):
        x = make_tensor(shape, dtype)
        before = x.clone()
        np.testing.assert_array_equal(
            mirror_pad(x, pads, mode).numpy(), numpy_oracle(x, pads, mode)
        )
        assert torch.equal(x, before)


@given(shapes_and_pads(), st.sampled_from(MODES), st.integers(1, 400))
def test_chunked_fill_any_chunk_size(shape_pads, mode, chunk_bytes):
    shape, pads = shape_pads
    x = make_tensor(shape, torch.int16)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(mirror_module, "_REFLECT_KERNEL_SMALL_BYTES", -1)
        patch.setattr(mirror_module, "_CHUNK_BYTES", chunk_bytes)
        out = mirror_pad(x, pads, mode)
    np.testing.assert_array_equal(out.numpy(), numpy_oracle(x, pads, mode))


@pytest.mark.parametrize("mode", MODES)
def test_chunked_fill_on_strided_inputs(monkeypatch, mode):
    monkeypatch.setattr(mirror_module, "_REFLECT_KERNEL_SMALL_BYTES", -1)
    monkeypatch.setattr(mirror_module, "_CHUNK_BYTES", 300)
    base = make_tensor((4, 20, 30), torch.uint8)
    views = (
        base.transpose(1, 2),  # last axis strided
        base[:, ::3, 1::2],  # both axes strided
        base.permute(2, 0, 1),  # leading axis innermost
        torch.ones(1, 9, dtype=torch.float32).expand(6, 9),  # stride 0
        torch.arange(9, dtype=torch.uint8).expand(6, 9),  # stride 0, 1-byte pixels
        base.float()[:, 1::2, ::3],  # both axes strided, 4-byte pixels
    )
    for x in views:
        pads = [(4, 3), (5, 2)]
        before = x.clone()
        np.testing.assert_array_equal(
            mirror_pad(x, pads, mode).numpy(), numpy_oracle(x.contiguous(), pads, mode)
        )
        assert torch.equal(x, before)


def test_large_chunked_image_is_not_modified():
    x = make_tensor((3, 700, 600), torch.uint8)  # several 1 MiB chunks
    before = x.clone()
    out = mirror_pad(x, [(92, 92), (92, 92)])
    np.testing.assert_array_equal(out.numpy(), numpy_oracle(x, [(92, 92), (92, 92)], "reflect"))
    assert torch.equal(x, before)
    assert out.data_ptr() != x.data_ptr()


@pytest.mark.parametrize(
    ("padding", "expected"),
    [
        ([(1, 2), (3, 4)], ((1, 2), (3, 4))),  # the fast path: plain ints
        ([[0, 5]], ((0, 5),)),  # lists as pairs
        (((np.int64(2), 1),), ((2, 1),)),  # numpy ints: the checked path
        ([(torch.tensor(3), 0)], ((3, 0),)),  # 0-d integer tensors too
    ],
)
def test_normalize_padding_returns_int_tuples(padding, expected):
    pads = mirror_module.normalize_padding(padding)
    assert pads == expected
    assert all(type(p) is int for pair in pads for p in pair)


@pytest.mark.parametrize(
    ("padding", "error"),
    [([(1, -2)], ValueError), ([(True, 1)], TypeError), ([(1, 2, 3)], TypeError), ([], TypeError)],
)
def test_normalize_padding_fast_path_keeps_the_checks(padding, error):
    with pytest.raises(error):
        mirror_module.normalize_padding(padding)


# --------------------------------- torch's reflection_pad2d kernel for large outputs
@pytest.mark.parametrize(
    ("shape", "pads"),
    [
        ((9, 8), [(8, 1), (1, 7)]),  # 2-D; widest pads the kernel takes: size - 1
        ((3, 9, 8), [(2, 3), (4, 5)]),
        ((2, 3, 5, 6), [(0, 0), (4, 1), (2, 5)]),  # leading axes as planes
        ((2, 3, 5, 6), [(1, 0), (4, 1), (2, 5)]),  # an earlier axis padded: numpy path
        ((3, 9, 8), [(9, 0), (0, 1)]),  # a pad as wide as the axis: numpy path
        ((4, 6, 7), [(0, 0), (3, 3)]),  # one axis of the two padded
        ((0, 5, 5), [(1, 2), (3, 1)]),  # nothing to pad
    ],
)
@pytest.mark.parametrize("mode", MODES)  # symmetric never takes the kernel
def test_reflect_kernel_equals_numpy_pad(monkeypatch, shape, pads, mode):
    monkeypatch.setattr(mirror_module, "_REFLECT_KERNEL_MIN_BYTES", 0)
    monkeypatch.setattr(mirror_module, "_REFLECT_KERNEL_WIDTH_PER_PAD", 0)
    dtypes = (torch.uint8, torch.int8, torch.int64, torch.float16, torch.float64)
    for dtype in (*dtypes, torch.bool, torch.uint16, torch.complex64, torch.bfloat16):
        x = make_tensor(shape, torch.float32).mul(100).to(dtype)
        before = x.clone()
        got = mirror_pad(x, pads, mode)
        expected = numpy_oracle(x, pads, mode)
        np.testing.assert_array_equal(
            got.float().numpy() if dtype == torch.bfloat16 else got.numpy(), expected
        )
        assert torch.equal(x, before)


@given(shapes_and_pads(), st.sampled_from(DTYPES))
def test_reflect_kernel_any_shape(shape_pads, dtype):
    shape, pads = shape_pads
    x = make_tensor(shape, dtype)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(mirror_module, "_REFLECT_KERNEL_MIN_BYTES", 0)
        patch.setattr(mirror_module, "_REFLECT_KERNEL_WIDTH_PER_PAD", 0)
        out = mirror_pad(x, pads, "reflect")
    got = out.float().numpy() if dtype == torch.bfloat16 else out.numpy()
    np.testing.assert_array_equal(got, numpy_oracle(x, pads, "reflect"))


def test_reflect_kernel_skips_views_it_cannot_take(monkeypatch):
    monkeypatch.setattr(mirror_module, "_REFLECT_KERNEL_MIN_BYTES", 0)
    monkeypatch.setattr(mirror_module, "_REFLECT_KERNEL_WIDTH_PER_PAD", 0)
    z = torch.randn(2, 5, 6, dtype=torch.complex64)
    pads = [(2, 2), (1, 3)]
    for x in (z.conj(), z.transpose(1, 2), z[:, ::2]):  # conjugate bit, strided
        np.testing.assert_array_equal(
            mirror_pad(x, pads).numpy(),
            numpy_oracle(x.resolve_conj().contiguous(), pads, "reflect"),
        )


def spy_on_kernel(monkeypatch):
    """The output shapes of every call of torch's reflection_pad2d kernel (into a buffer
    or a new tensor), from now on."""
    calls = []

    def spying_on(kernel):
        def spy(*args, **kwargs):
            out = kernel(*args, **kwargs)
            calls.append(out.shape)
            return out

        return spy

    for name in ("_reflection_pad2d", "_reflection_pad2d_new"):
        monkeypatch.setattr(mirror_module, name, spying_on(getattr(mirror_module, name)))
    return calls


def test_large_output_takes_the_kernel_and_keeps_the_input(monkeypatch):
    calls = spy_on_kernel(monkeypatch)
    x = make_tensor((3, 1024, 800))  # 14 MB of output: over _REFLECT_KERNEL_MIN_BYTES
    before = x.clone()
    pads = [(92, 92), (92, 92)]
    out = mirror_pad(x, pads)
    assert calls == [(3, 1208, 984)]
    assert mirror_pad(x[:1, :500], pads).shape == (1, 684, 984)  # 2.7 MB: numpy path
    wide = [(92, 92), (150, 150)]  # 300 px of pads on 800: numpy path
    np.testing.assert_array_equal(mirror_pad(x, wide).numpy(), numpy_oracle(x, wide, "reflect"))
    assert len(calls) == 1
    assert out.numel() * out.itemsize >= mirror_module._REFLECT_KERNEL_MIN_BYTES
    np.testing.assert_array_equal(out.numpy(), numpy_oracle(x, pads, "reflect"))
    assert torch.equal(x, before)
    np.testing.assert_array_equal(
        mirror_pad(x, pads, "symmetric").numpy(), numpy_oracle(x, pads, "symmetric")
    )


def test_small_output_takes_the_kernel_whatever_its_pads(monkeypatch):
    calls = spy_on_kernel(monkeypatch)
    x = make_tensor((1, 100, 64))  # a border tile's image part
    pads = [(92, 0), (60, 3)]  # wider than a quarter of the axis: small outputs still
    out = mirror_pad(x, pads)
    assert calls == [(1, 192, 127)]
    assert out.numel() * out.itemsize <= mirror_module._REFLECT_KERNEL_SMALL_BYTES
    np.testing.assert_array_equal(out.numpy(), numpy_oracle(x, pads, "reflect"))
    mirror_pad(x, pads, "symmetric")  # no kernel for symmetric
    mirror_pad(make_tensor((3, 300, 300)), [(92, 92), (92, 92)])  # 2.5 MB: numpy's path
    assert len(calls) == 1
