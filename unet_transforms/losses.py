"""Losses for U-Net training: the paper's pixel-wise weighted cross-entropy."""

from __future__ import annotations

from typing import Literal

import torch

from ._checks import as_int64_if_wide_unsigned, holds_int, is_int, is_one_of

__all__ = ["weighted_cross_entropy"]

Reduction = Literal["mean", "sum", "none"]


def _spatial_weights(weights: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``weights`` of ``target``'s shape; a channel axis of 1 after the batch axis is
    dropped (the only reading of ``(N, 1, *spatial)`` against a ``(N, *spatial)``
    target)."""
    if weights.shape == target.shape:
        return weights
    if (
        weights.ndim == target.ndim + 1
        and weights.shape[1] == 1
        and weights.shape[:1] + weights.shape[2:] == target.shape
    ):
        return weights[:, 0]
    raise ValueError(
        f"weights must have the target's shape (N, *spatial) = {tuple(target.shape)} "
        f"(or (N, 1, *spatial)), got {tuple(weights.shape)}"
    )


def weighted_cross_entropy(
    logits: torch.Tensor,
    target: torch.Tensor,
    weights: torch.Tensor,
    *,
    ignore_index: int | None = None,
    reduction: Reduction = "mean",
) -> torch.Tensor:
    """Cross-entropy weighted per pixel, as in the U-Net paper (eq. 1).

    ``CE(x) = -log softmax(logits)[target(x)]`` at every pixel, multiplied by
    ``weights(x)`` (e.g. from :func:`~unet_transforms.unet_weight_map`). Pixels whose
    target is ``ignore_index`` contribute nothing, to the loss nor to the total weight.

    Args:
        logits: ``(N, C, *spatial)`` floating-point scores.
        target: ``(N, *spatial)`` integer class indices in ``[0, C)`` (or
            ``ignore_index``).
        weights: ``(N, *spatial)`` floating-point weights, ``>= 0`` (a
            :class:`~unet_transforms.WeightMap` or a plain tensor); ``(N, 1, *spatial)``
            is accepted too.
        ignore_index: A target value whose pixels are left out; ``None`` ignores none.
        reduction: ``"mean"``: ``sum(w * CE) / sum(w)`` over the pixels not ignored,
            and 0 (not NaN) where that total weight is 0 (every pixel ignored or
            weighted 0), so a batch without weight adds no gradient; ``"sum"``:
            ``sum(w * CE)``; ``"none"``: the per-pixel ``w * CE``, ``(N, *spatial)``,
            with 0 at ignored pixels.

    Returns:
        A scalar, or the per-pixel losses for ``reduction="none"``. Differentiable with
        respect to ``logits`` (and ``weights``).

    Raises:
        TypeError: For non-tensor arguments, non-floating ``logits`` or ``weights``, a
            non-integer ``target``, or a non-int ``ignore_index``.
        ValueError: For shapes that do not fit together (the message names both),
            arguments on different devices, an unknown ``reduction``, or a target
            outside ``[0, C)`` at a pixel not ignored.

    Shape:
        - logits: ``(N, C, *spatial)``
        - target, weights: ``(N, *spatial)``
        - output: ``()``, or ``(N, *spatial)`` for ``reduction="none"``

    Example:
        >>> import torch
        >>> logits = torch.zeros(1, 2, 1, 3)  # both classes equally likely: CE = log 2
        >>> target = torch.tensor([[[0, 1, 255]]])
        >>> weights = torch.tensor([[[1.0, 3.0, 5.0]]])
        >>> loss = weighted_cross_entropy(logits, target, weights, ignore_index=255)
        >>> round(loss.item(), 4), round(torch.log(torch.tensor(2.0)).item(), 4)
        (0.6931, 0.6931)
        >>> weighted_cross_entropy(logits, target, weights, ignore_index=255, reduction="none")
        tensor([[[0.6931, 2.0794, 0.0000]]])
    """
    for name, value in (("logits", logits), ("target", target), ("weights", weights)):
        if not isinstance(value, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    if not is_one_of(reduction, ("mean", "sum", "none")):
        raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")
    if ignore_index is not None and not is_int(ignore_index):
        raise TypeError(f"ignore_index must be None or an int, got {type(ignore_index).__name__}")
    logits = logits.as_subclass(torch.Tensor)
    target = target.as_subclass(torch.Tensor)
    weights = weights.as_subclass(torch.Tensor)
    if not logits.is_floating_point():
        raise TypeError(f"logits must be a floating-point tensor, got {logits.dtype}")
    if not weights.is_floating_point():
        raise TypeError(f"weights must be a floating-point tensor, got {weights.dtype}")
    if target.is_floating_point() or target.is_complex() or target.dtype == torch.bool:
        raise TypeError(f"target must be an integer tensor of class indices, got {target.dtype}")
    if logits.ndim < 2:
        raise ValueError(f"logits must have shape (N, C, *spatial), got {tuple(logits.shape)}")
    if target.shape != logits.shape[:1] + logits.shape[2:]:
        raise ValueError(
            f"target must have shape (N, *spatial) = {tuple(logits.shape[:1] + logits.shape[2:])} "
            f"for logits {tuple(logits.shape)}, got {tuple(target.shape)}"
        )
    weights = _spatial_weights(weights, target)
    if not logits.device == target.device == weights.device:
        raise ValueError(
            f"logits, target and weights must be on one device, got {logits.device}, "
            f"{target.device} and {weights.device}"
        )

    valid = None
    index = as_int64_if_wide_unsigned(target)  # e.g. 16-bit masks read from PNG
    # an ignore_index the target's dtype cannot hold matches no pixel
    if ignore_index is not None and holds_int(target.dtype, int(ignore_index)):
        valid = index != int(ignore_index)
        index = index.masked_fill(~valid, 0)
    classes = logits.shape[1]
    if index.numel():
        lo, hi = (int(v) for v in torch.aminmax(index))
        if lo < 0 or hi >= classes:
            raise ValueError(
                f"target must hold class indices in [0, {classes}) for logits of {classes} "
                f"classes{'' if ignore_index is None else ' (or ignore_index)'}, got values "
                f"from {lo} to {hi}"
            )
    log_p = torch.log_softmax(logits, dim=1)
    ce = -log_p.gather(1, index.long().unsqueeze(1)).squeeze(1)
    if valid is not None:
        weights = weights.masked_fill(~valid, 0)
    # 0, not 0 * inf = NaN, where the weight is 0 and the CE infinite (an ignored
    # pixel's arbitrary class, or a class whose logit is -inf); elsewhere a zero weight
    # keeps its gradient, the CE
    loss = (weights * ce).masked_fill((weights == 0) & ce.isinf(), 0)
    if reduction == "none":
        return loss
    total = loss.sum()
    if reduction == "sum":
        return total
    weight = weights.sum()
    nonzero = weight != 0
    return torch.where(nonzero, total / torch.where(nonzero, weight, 1), 0.0 * total)
