"""The U-Net paper's pixel-wise weight map, and a tv_tensor that transforms move like a label.

Ronneberger et al. (2015), eq. 2: ``w(x) = w_c(x) + w0 * exp(-(d1(x) + d2(x))**2 / (2 sigma**2))``
weights the background gaps between touching cells, so that the network learns to
separate them.
"""

from __future__ import annotations

import importlib
import math
import numbers
from collections.abc import Mapping
from types import ModuleType
from typing import Any, Literal, overload

import numpy as np
import numpy.typing as npt
import torch
from torchvision import tv_tensors

from ._checks import is_int

__all__ = ["WeightMap", "unet_weight_map"]

# the largest border term left out, relative to w0 (see _border_margin)
_RELATIVE_TOLERANCE = 1e-6

_CLASS_NAMES = {0: "background", 1: "foreground"}


class WeightMap(tv_tensors.Mask):  # type: ignore[misc]  # torchvision is untyped
    """A per-pixel loss weight map that torchvision's v2 transforms move like a label.

    A subclass of :class:`torchvision.tv_tensors.Mask`: flips, rotations, crops and
    this library's :class:`~unet_transforms.PairedTileCrop` (which gives it the label's
    output window) treat it as they treat the label, so image, label and weights stay
    aligned. Build it from the output of :func:`unet_weight_map`. As for masks,
    resampling transforms use nearest-neighbour interpolation and torchvision's fill
    (0 by default: no weight); :class:`~unet_transforms.PairedTileCrop` mirrors it, or
    fills it with ``mask_fill`` like the label.

    Example:
        >>> import torch
        >>> from torchvision.transforms import v2
        >>> w = WeightMap(torch.tensor([[1.0, 2.0, 3.0]]))
        >>> out = v2.RandomHorizontalFlip(p=1.0)(w)
        >>> type(out).__name__, out.tolist()
        ('WeightMap', [[3.0, 2.0, 1.0]])
    """


def _scipy_ndimage() -> ModuleType:
    try:
        return importlib.import_module("scipy.ndimage")
    except ImportError as e:
        raise ImportError("unet_weight_map needs SciPy: pip install scipy") from e


def _check_number(value: object, name: str, *, positive: bool) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    number = float(value)
    if not math.isfinite(number) or number < 0 or (positive and number == 0):
        expected = "> 0" if positive else ">= 0"
        raise ValueError(f"{name} must be finite and {expected}, got {value!r}")
    return number


def _check_class_weights(class_weights: object) -> dict[int, float] | None:
    """``None`` for ``"balanced"``, else the weights of classes 0 and 1."""
    if isinstance(class_weights, str):
        if class_weights != "balanced":
            raise ValueError(
                f"class_weights must be 'balanced' or a mapping {{0: background weight, "
                f"1: foreground weight}}, got {class_weights!r}"
            )
        return None
    if not isinstance(class_weights, Mapping):
        raise TypeError(
            f"class_weights must be 'balanced' or a mapping {{0: background weight, "
            f"1: foreground weight}}, got {type(class_weights).__name__}"
        )
    missing = [f"{k} ({n})" for k, n in _CLASS_NAMES.items() if k not in class_weights]
    if missing:
        raise ValueError(
            f"class_weights is missing the keys {', '.join(missing)}; expected keys 0 "
            f"(background) and 1 (foreground)"
        )
    extra = [k for k in class_weights if k not in _CLASS_NAMES]
    if extra:
        raise ValueError(
            f"class_weights has unexpected keys {extra!r}; expected keys 0 (background) "
            f"and 1 (foreground)"
        )
    return {
        k: _check_number(class_weights[k], f"class_weights[{k}]", positive=False)
        for k in _CLASS_NAMES
    }


def _as_numpy(instances: object) -> npt.NDArray[Any]:
    if isinstance(instances, torch.Tensor):
        tensor = instances.as_subclass(torch.Tensor)
        if tensor.is_floating_point() or tensor.is_complex() or tensor.dtype == torch.bool:
            raise TypeError(
                f"instances must have an integer dtype (one label per instance), got "
                f"{tensor.dtype}"
            )
        return tensor.detach().cpu().numpy()
    if isinstance(instances, np.ndarray):
        if instances.dtype.kind not in "iu":
            raise TypeError(
                f"instances must have an integer dtype (one label per instance), got "
                f"{instances.dtype}"
            )
        return instances
    raise TypeError(
        f"instances must be a torch.Tensor or a numpy.ndarray, got {type(instances).__name__}"
    )


def _border_margin(sigma: float) -> int:
    """How far a box around an instance must reach so that the border term it misses
    is at most ``_RELATIVE_TOLERANCE * w0``.

    A background pixel outside an instance's box grown by ``R`` pixels per axis is at
    least ``R + 1`` from it (one axis alone differs by that much), and at least 1 from
    any instance. An instance it does not see is therefore either its second-nearest
    or farther (``d2 >= R + 1``), or its nearest (then ``d2 >= d1 >= R + 1``): in both
    cases ``d1 + d2 >= R + 2``. The term ``w0 * exp(-(d1 + d2)**2 / (2 sigma**2))`` is
    then at most ``_RELATIVE_TOLERANCE * w0`` once
    ``R + 2 >= sigma * sqrt(2 ln(1 / _RELATIVE_TOLERANCE))``. (A bound on ``d1`` alone,
    ``d1 > sigma * sqrt(2 ln 1e6) / 2``, would not do: a pixel next to one instance
    has ``d1 = 1`` and may still miss a second one within reach.)

    Example:
        >>> _border_margin(5.0), _border_margin(1.0), _border_margin(0.1)
        (25, 4, 0)
    """
    reach = sigma * math.sqrt(2.0 * math.log(1.0 / _RELATIVE_TOLERANCE))
    return max(0, math.ceil(reach) - 2)


@overload
def unet_weight_map(
    instances: torch.Tensor,
    *,
    w0: float = ...,
    sigma: float = ...,
    class_weights: Literal["balanced"] | Mapping[int, float] = ...,
    background: int = ...,
    ignore_index: int | None = ...,
) -> torch.Tensor: ...


@overload
def unet_weight_map(
    instances: npt.NDArray[Any],
    *,
    w0: float = ...,
    sigma: float = ...,
    class_weights: Literal["balanced"] | Mapping[int, float] = ...,
    background: int = ...,
    ignore_index: int | None = ...,
) -> npt.NDArray[np.float32]: ...


def unet_weight_map(
    instances: torch.Tensor | npt.NDArray[Any],
    *,
    w0: float = 10.0,
    sigma: float = 5.0,
    class_weights: Literal["balanced"] | Mapping[int, float] = "balanced",
    background: int = 0,
    ignore_index: int | None = None,
) -> torch.Tensor | npt.NDArray[np.float32]:
    """The U-Net paper's weight map (Ronneberger et al., 2015, eq. 2) of an instance image.

    ``w(x) = w_c(x) + w0 * exp(-(d1(x) + d2(x))**2 / (2 * sigma**2))``, where, for
    background pixels only, ``d1`` and ``d2`` are the Euclidean distances (in pixels,
    centre to centre) to the nearest and the second-nearest instance. Foreground pixels
    get ``w_c`` alone; with fewer than two instances there is no border term. Every
    value other than ``background`` and ``ignore_index`` is one instance (label
    touching cells with different values: a binary mask is one instance).

    The distances are kept as a running nearest and second-nearest distance (memory
    proportional to one image), updated from one exact distance transform per
    instance restricted to its bounding box grown by
    ``R = max(0, ceil(sigma * sqrt(2 ln 1e6)) - 2)`` pixels per axis (25 for
    ``sigma=5``). A background pixel outside an instance's box is at least ``R + 1``
    from it and at least 1 from every instance, so when it misses an instance,
    ``d1 + d2 >= R + 2 >= sigma * sqrt(2 ln 1e6)``: every term left out is at most
    ``1e-6 * w0``, and the result matches one whole-image distance transform per
    instance to that.

    Args:
        instances: Integer instance labels, 2-D ``(H, W)`` or 3-D ``(D, H, W)``, as a
            tensor (any device) or a numpy array. Not modified.
        w0: Weight of the border term (``>= 0``).
        sigma: Width of the border term in pixels (``> 0``).
        class_weights: ``"balanced"``: ``w_c = N / (K * N_c)`` for a pixel of class
            ``c`` (background or foreground), with ``N`` the pixels not ignored, ``N_c``
            those of class ``c`` and ``K`` the classes present, so each class carries the
            same total weight. A mapping gives the weights directly: key ``0`` the
            background's, key ``1`` the foreground's (both required).
        background: The label of background pixels.
        ignore_index: A label whose pixels get weight 0 and are left out of ``N``; they
            are neither background nor an instance.

    Returns:
        A float32 map of the input's shape: a tensor on the input's device for a tensor
        (wrap it in :class:`WeightMap` for the transforms), a numpy array for an array.

    Raises:
        TypeError: For a non-integer ``instances`` dtype (bool included), an input that
            is neither a tensor nor an array, or arguments of the wrong type.
        ValueError: For ``instances`` that are not 2-D or 3-D, ``w0 < 0``,
            ``sigma <= 0``, ``ignore_index == background``, or ``class_weights`` with
            missing or unknown keys or negative weights.
        ImportError: If SciPy is not installed.

    Example:
        >>> import torch
        >>> cells = torch.tensor([[1, 1, 0, 2, 2]])
        >>> w = unet_weight_map(cells, w0=10.0, sigma=1.0)
        >>> print(*(round(v, 4) for v in w.tolist()[0]))
        0.625 0.625 3.8534 0.625 0.625
    """
    array = _as_numpy(instances)
    ndimage = _scipy_ndimage()
    w0 = _check_number(w0, "w0", positive=False)
    sigma = _check_number(sigma, "sigma", positive=True)
    weights = _check_class_weights(class_weights)
    if not is_int(background):
        raise TypeError(f"background must be an int label, got {type(background).__name__}")
    if ignore_index is not None:
        if not is_int(ignore_index):
            raise TypeError(
                f"ignore_index must be None or an int label, got {type(ignore_index).__name__}"
            )
        if int(ignore_index) == int(background):
            raise ValueError(
                f"ignore_index must differ from background, got both {int(background)}"
            )
    if array.ndim not in (2, 3):
        raise ValueError(
            f"instances must be 2-D (H, W) or 3-D (D, H, W), got shape {tuple(array.shape)}"
        )
    ignore = None if ignore_index is None else int(ignore_index)
    out = _weight_map(ndimage, array, w0, sigma, weights, int(background), ignore)
    if isinstance(instances, torch.Tensor):
        return torch.from_numpy(out).to(instances.device)
    return out


def _weight_map(
    ndimage: ModuleType,
    array: npt.NDArray[Any],
    w0: float,
    sigma: float,
    class_weights: dict[int, float] | None,
    background: int,
    ignore_index: int | None,
) -> npt.NDArray[np.float32]:
    """The weight map of a validated 2-D or 3-D integer array (float64 inside)."""
    labels, n_instances = _relabel(array, background, ignore_index)

    is_background = array == background
    is_foreground = labels > 0
    if class_weights is None:
        counts = (int(is_background.sum()), int(is_foreground.sum()))
        total, present = sum(counts), sum(c > 0 for c in counts)
        class_weights = {c: total / (present * n) if n else 0.0 for c, n in enumerate(counts)}
    out = np.zeros(array.shape, dtype=np.float64)
    out[is_background] = class_weights[0]
    out[is_foreground] = class_weights[1]

    if n_instances >= 2 and w0 > 0:
        d1, d2 = _two_nearest(ndimage, labels, sigma)
        near = is_background & np.isfinite(d2)
        with np.errstate(over="ignore", under="ignore"):
            scaled = (d1[near] + d2[near]) / sigma
            out[near] += w0 * np.exp(-0.5 * scaled * scaled)
    return out.astype(np.float32)


def _relabel(
    array: npt.NDArray[Any], background: int, ignore_index: int | None
) -> tuple[npt.NDArray[np.intp], int]:
    """The instances numbered 1..K in the order of their values, 0 for background and
    ignored pixels; and K."""
    if array.size == 0:
        return np.zeros(array.shape, dtype=np.intp), 0
    lo, hi = int(array.min()), int(array.max())
    if hi - lo <= 2 * array.size and hi <= np.iinfo(np.intp).max:
        # a dense range of values (the usual case): count them, in linear time
        index = array.astype(np.intp)
        index -= lo
        is_instance = np.bincount(index.ravel(), minlength=hi - lo + 1) > 0

        def position(label: int) -> int:
            return label - lo
    else:  # sparse values: sort them
        values, inverse = np.unique(array, return_inverse=True)
        index = inverse.reshape(array.shape)
        is_instance = np.ones(len(values), dtype=bool)

        def position(label: int) -> int:
            at = int(np.searchsorted(values, label))
            return at if values[at] == label else -1

    for label in (background, ignore_index):
        if label is not None and lo <= label <= hi and (at := position(label)) >= 0:
            is_instance[at] = False
    n_instances = int(is_instance.sum())
    lut = np.zeros(len(is_instance), dtype=np.intp)
    lut[is_instance] = np.arange(1, n_instances + 1)
    return lut[index], n_instances


def _two_nearest(
    ndimage: ModuleType, labels: npt.NDArray[np.intp], sigma: float
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Running distances to the nearest and second-nearest instance (``inf`` where an
    instance is farther than the margin); ``labels`` are 0 or an instance 1..K."""
    margin = min(_border_margin(sigma), max(labels.shape))
    d1 = np.full(labels.shape, np.inf)
    d2 = np.full(labels.shape, np.inf)
    for k, box in enumerate(ndimage.find_objects(labels), start=1):
        if box is None:
            continue
        grown = tuple(
            slice(max(0, s.start - margin), min(n, s.stop + margin))
            for s, n in zip(box, labels.shape, strict=True)
        )
        dist = ndimage.distance_transform_edt(labels[grown] != k)
        n1, n2 = d1[grown], d2[grown]  # views
        np.minimum(n2, np.maximum(n1, dist), out=n2)
        np.minimum(n1, dist, out=n1)
    return d1, d2
