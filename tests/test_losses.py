"""weighted_cross_entropy against torch's cross_entropy and the weighted definition."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from unet_transforms.losses import weighted_cross_entropy
from unet_transforms.weightmap import WeightMap

SPATIAL = [(), (7,), (5, 3), (4, 3, 2)]


def make(spatial, classes=3, batch=2, seed=0, ignore=None):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(batch, classes, *spatial, generator=g) * 3
    target = torch.randint(0, classes, (batch, *spatial), generator=g)
    if ignore is not None:
        target[torch.rand(target.shape, generator=g) < 0.3] = ignore
    weights = torch.rand(batch, *spatial, generator=g) * 5
    return logits, target, weights


@pytest.mark.parametrize("spatial", SPATIAL)
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("ignore_index", [None, -100, 255])
def test_unit_weights_equal_torch_cross_entropy(spatial, reduction, ignore_index):
    logits, target, _ = make(spatial, ignore=ignore_index)
    ones = torch.ones(target.shape)
    ours = weighted_cross_entropy(
        logits, target, ones, ignore_index=ignore_index, reduction=reduction
    )
    theirs = F.cross_entropy(
        logits,
        target,
        ignore_index=-100 if ignore_index is None else ignore_index,
        reduction=reduction,
    )
    torch.testing.assert_close(ours, theirs)


@pytest.mark.parametrize("spatial", SPATIAL[1:])
@pytest.mark.parametrize("ignore_index", [None, 255])
def test_weighted_definition_and_gradients(spatial, ignore_index):
    logits, target, weights = make(spatial, seed=1, ignore=ignore_index)
    valid = torch.ones(target.shape, dtype=torch.bool)
    if ignore_index is not None:
        valid = target != ignore_index
    per_pixel = F.cross_entropy(logits, target.masked_fill(~valid, 0), reduction="none")
    expected_none = torch.where(valid, weights * per_pixel, 0.0)
    expected_mean = expected_none.sum() / weights[valid].sum()

    a = logits.clone().requires_grad_()
    b = logits.clone().requires_grad_()
    loss = weighted_cross_entropy(a, target, weights, ignore_index=ignore_index)
    torch.testing.assert_close(loss, expected_mean)
    none = weighted_cross_entropy(b, target, weights, ignore_index=ignore_index, reduction="none")
    torch.testing.assert_close(none, expected_none)
    total = weighted_cross_entropy(
        logits, target, weights, ignore_index=ignore_index, reduction="sum"
    )
    torch.testing.assert_close(total, expected_none.sum())
    loss.backward()
    (none.sum() / weights[valid].sum()).backward()
    assert a.grad is not None and torch.isfinite(a.grad).all() and a.grad.abs().sum() > 0
    torch.testing.assert_close(a.grad, b.grad)


def test_gradient_matches_torch_with_unit_weights():
    logits, target, _ = make((6, 5), seed=2, ignore=255)
    a, b = logits.clone().requires_grad_(), logits.clone().requires_grad_()
    weighted_cross_entropy(a, target, torch.ones(target.shape), ignore_index=255).backward()
    F.cross_entropy(b, target, ignore_index=255).backward()
    torch.testing.assert_close(a.grad, b.grad)


def test_gradient_flows_to_the_weights():
    logits, target, weights = make((4, 4), seed=3)
    weights.requires_grad_()
    weighted_cross_entropy(logits, target, weights, reduction="sum").backward()
    torch.testing.assert_close(weights.grad, F.cross_entropy(logits, target, reduction="none"))


def test_weight_map_and_channel_axis_of_one():
    logits, target, weights = make((5, 3), seed=4)
    expected = weighted_cross_entropy(logits, target, weights)
    torch.testing.assert_close(
        weighted_cross_entropy(logits, target, WeightMap(weights)), expected
    )
    torch.testing.assert_close(weighted_cross_entropy(logits, target, weights[:, None]), expected)
    out = weighted_cross_entropy(logits, target, WeightMap(weights), reduction="none")
    assert type(out) is torch.Tensor


def test_zero_total_weight_gives_zero_not_nan():
    logits, target, _ = make((3, 3), seed=5)
    zeros = torch.zeros(target.shape)
    x = logits.clone().requires_grad_()
    loss = weighted_cross_entropy(x, target, zeros)
    loss.backward()
    assert loss.item() == 0.0 and x.grad is not None
    assert torch.equal(x.grad, torch.zeros_like(x))
    everything_ignored = torch.full(target.shape, 7)
    loss = weighted_cross_entropy(
        logits, everything_ignored, torch.ones(target.shape), ignore_index=7
    )
    assert loss.item() == 0.0


def test_inputs_not_modified():
    logits, target, weights = make((4, 5), seed=6, ignore=255)
    copies = [t.clone() for t in (logits, target, weights)]
    weighted_cross_entropy(logits, target, weights, ignore_index=255, reduction="none")
    for before, after in zip(copies, (logits, target, weights)):
        assert torch.equal(before, after)


def test_no_ignore_index_ignores_nothing():
    # torch's default ignore_index is -100; without one, -100 is an out-of-range class
    logits, target, weights = make((3,), seed=7)
    target[0, 0] = -100
    with pytest.raises(ValueError, match=r"target must hold class indices in \[0, 3\) for "):
        weighted_cross_entropy(logits, target, weights)


def test_classes_out_of_range_name_the_target():
    # gather's RuntimeError (a device-side assert on CUDA) did not name the argument
    logits = torch.randn(2, 3, 4, 5)
    for bad in (-1, 3, 255):
        target = torch.zeros(2, 4, 5, dtype=torch.long)
        target[1, 2, 3] = bad
        with pytest.raises(
            ValueError,
            match=rf"\[0, 3\) .*classes, got values from {min(bad, 0)} to {max(bad, 0)}",
        ):
            weighted_cross_entropy(logits, target, torch.ones(2, 4, 5))
    target[1, 2, 3] = 255  # ignored: fine
    weighted_cross_entropy(logits, target, torch.ones(2, 4, 5), ignore_index=255)


def test_an_ignore_index_the_target_cannot_hold_ignores_nothing():
    # compared in the target's dtype, 256 wrapped to class 0 of a uint8 target
    logits, target, weights = make((4,), seed=8)
    expected = weighted_cross_entropy(logits, target, weights, reduction="none")
    for dtype, ignore in [(torch.uint8, 256), (torch.int16, 2**40), (torch.int32, -(2**40))]:
        got = weighted_cross_entropy(
            logits, target.to(dtype), weights, ignore_index=ignore, reduction="none"
        )
        assert torch.equal(got, expected)
    huge = weighted_cross_entropy(logits, target, weights, ignore_index=2**70, reduction="none")
    assert torch.equal(huge, expected)


def test_zero_weight_with_an_infinite_ce_gives_zero_not_nan():
    logits = torch.zeros(1, 2, 1, 2)
    logits[0, 0] = float("-inf")  # class 0 impossible: its CE is inf
    x = logits.clone().requires_grad_()
    target = torch.zeros(1, 1, 2, dtype=torch.long)
    weights = torch.tensor([[[0.0, 0.0]]])
    loss = weighted_cross_entropy(x, target, weights)
    loss.backward()
    assert loss.item() == 0.0 and not x.grad.isnan().any()
    none = weighted_cross_entropy(logits, target, weights, reduction="none")
    assert torch.equal(none, torch.zeros(1, 1, 2))
    # a zero weight on a finite CE keeps its gradient: the CE
    logits, target, _ = make((3,), seed=9)
    w = torch.zeros(target.shape, requires_grad=True)
    weighted_cross_entropy(logits, target, w, reduction="sum").backward()
    ce = torch.nn.functional.cross_entropy(logits, target, reduction="none")
    torch.testing.assert_close(w.grad, ce)


@pytest.mark.parametrize(
    ("args", "kwargs", "error", "match"),
    [
        (((2, 3, 4, 5), (2, 4, 6), (2, 4, 5)), {}, ValueError,
         r"target must have shape \(N, \*spatial\) = \(2, 4, 5\) for logits \(2, 3, 4, 5\), got \(2, 4, 6\)"),
        (((2, 3, 4, 5), (2, 1, 4, 5), (2, 4, 5)), {}, ValueError, r"target must have shape"),
        (((2, 3, 4, 5), (2, 4, 5), (2, 5, 4)), {}, ValueError,
         r"weights must have the target's shape \(N, \*spatial\) = \(2, 4, 5\) \(or \(N, 1, \*spatial\)\), got \(2, 5, 4\)"),
        (((2, 3, 4, 5), (2, 4, 5), (2, 2, 4, 5)), {}, ValueError, r"weights must have .* got \(2, 2, 4, 5\)"),
        (((3,), (3,), (3,)), {}, ValueError, r"logits must have shape \(N, C, \*spatial\), got \(3,\)"),
        (((2, 3), (2,), (2,)), {"reduction": "avg"}, ValueError,
         r"reduction must be 'mean', 'sum' or 'none', got 'avg'"),
        (((2, 3), (2,), (2,)), {"ignore_index": 1.5}, TypeError,
         r"ignore_index must be None or an int, got float"),
    ],
)  # fmt: skip
def test_shape_and_argument_errors(args, kwargs, error, match):
    logits, target, weights = (torch.zeros(s) for s in args)
    with pytest.raises(error, match=match):
        weighted_cross_entropy(logits, target.long(), weights, **kwargs)


@pytest.mark.parametrize(
    ("logits", "target", "weights", "match"),
    [
        (torch.zeros(2, 3, dtype=torch.long), torch.zeros(2, dtype=torch.long), torch.ones(2),
         r"logits must be a floating-point tensor, got torch.int64"),
        (torch.zeros(2, 3), torch.zeros(2), torch.ones(2),
         r"target must be an integer tensor of class indices, got torch.float32"),
        (torch.zeros(2, 3), torch.zeros(2, dtype=torch.long), torch.ones(2, dtype=torch.long),
         r"weights must be a floating-point tensor, got torch.int64"),
        ([[0.0, 1.0]], torch.zeros(1, dtype=torch.long), torch.ones(1),
         r"logits must be a torch.Tensor, got list"),
        (torch.zeros(2, 3), torch.zeros(2, dtype=torch.long), 1.0,
         r"weights must be a torch.Tensor, got float"),
    ],
)  # fmt: skip
def test_type_errors(logits, target, weights, match):
    with pytest.raises(TypeError, match=match):
        weighted_cross_entropy(logits, target, weights)


@pytest.mark.parametrize("dtype", [torch.uint16, torch.uint32, torch.uint64])
@pytest.mark.parametrize("ignore_index", [None, 255])
def test_wide_unsigned_targets_equal_their_int64_values(dtype, ignore_index):
    """16-bit masks (ImageMaskFolder reads PNG mode I;16 as uint16) reach the loss."""
    torch.manual_seed(0)
    logits = torch.randn(2, 3, 5, 4)
    target = torch.randint(0, 3, (2, 5, 4))
    target[0, 0, 0] = 255
    if ignore_index is None:
        target[0, 0, 0] = 1
    weights = torch.rand(2, 5, 4)
    expected = weighted_cross_entropy(logits, target, weights, ignore_index=ignore_index)
    got = weighted_cross_entropy(logits, target.to(dtype), weights, ignore_index=ignore_index)
    torch.testing.assert_close(got, expected, rtol=0, atol=0)
