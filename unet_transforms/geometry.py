"""Tile geometry of a segmentation network: input size, output size, margin and stride."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from ._checks import as_int, as_list_if_1d, is_int
from ._value import ImmutableValue
from .config import Configurable

if TYPE_CHECKING:
    import torch

__all__ = ["TileGeometry", "as_geometry"]

_AXIS_NAMES = {2: ("height", "width"), 3: ("depth", "height", "width")}


def _as_sizes(name: str, value: object, ndim: int | None) -> tuple[int, ...]:
    """Normalises an int or a sequence of ints to a tuple; validates type and length.

    Integral floats (``8.0``, as YAML and JSON may give them) count as ints.
    """
    value = as_list_if_1d(value)  # a 1-D numpy array or tensor of sizes
    if isinstance(value, Sequence) and not isinstance(value, str | bytes):
        sizes = tuple(as_int(f"{name}[{i}]", v) for i, v in enumerate(value))
        if len(sizes) not in (2, 3):
            raise ValueError(
                f"{name} must have 2 or 3 entries (one per spatial axis), got {len(sizes)}: "
                f"{value!r}"
            )
        if ndim is not None and len(sizes) != ndim:
            raise ValueError(f"{name} must have {ndim} entries (ndim={ndim}), got {value!r}")
        return sizes
    if not is_int(value) and not isinstance(value, float):
        raise TypeError(f"{name} must be an int or a sequence of ints, got {type(value).__name__}")
    return (as_int(name, value),) * (ndim or 2)


def _is_sequence(value: object) -> bool:
    return isinstance(value, Sequence) and not isinstance(value, str | bytes)


class TileGeometry(ImmutableValue, Configurable):
    """The tile geometry of a network: what goes in, what comes out, and the tile stride.

    A network with unpadded ("valid") convolutions maps an ``input_size`` tile to a
    smaller ``output_size`` tile, losing ``margin = (input_size - output_size) // 2``
    pixels on each side. ``step`` is the stride between neighbouring tiles; each tile
    contributes the centre ``step`` pixels of its output when stitching.

    Args:
        input_size: Spatial size of an input tile: an int (square, 2-D) or one entry
            per spatial axis (2 or 3 entries).
        output_size: Spatial size of the network's output for one input tile.
        step: Tile stride per axis, ``1 <= step <= output_size``. Defaults to
            ``output_size`` (the paper's non-overlapping output tiles). Use
            :meth:`TileGeometry.unet` to get the stride that makes tiled inference
            exactly equal to a whole-image forward pass.

    Raises:
        TypeError: If a size is not an int or a sequence of ints.
        ValueError: If a size is not positive, the lengths differ, ``output_size >
            input_size``, ``input_size - output_size`` is odd, or ``step`` is outside
            ``[1, output_size]``.

    Example:
        >>> g = TileGeometry(572, 388)
        >>> g.input_size, g.output_size, g.margin, g.step, g.ndim
        ((572, 572), (388, 388), (92, 92), (388, 388), 2)
        >>> TileGeometry.unet(input_size=572).step
        (384, 384)
    """

    _value_fields = ("input_size", "output_size", "step")
    input_size: tuple[int, ...]
    output_size: tuple[int, ...]
    step: tuple[int, ...]

    def __init__(
        self,
        input_size: int | Sequence[int],
        output_size: int | Sequence[int],
        *,
        step: int | Sequence[int] | None = None,
    ) -> None:
        input_size, output_size, step = (as_list_if_1d(v) for v in (input_size, output_size, step))
        ndim: int | None = None
        for value in (input_size, output_size, step):
            if isinstance(value, Sequence) and _is_sequence(value):
                ndim = len(value)
                break
        inp = _as_sizes("input_size", input_size, ndim)
        ndim = len(inp)
        out = _as_sizes("output_size", output_size, ndim)
        stp = out if step is None else _as_sizes("step", step, ndim)
        names = _AXIS_NAMES[ndim]
        for axis, (i, o, s) in enumerate(zip(inp, out, stp, strict=True)):
            where = f"axis {axis} ({names[axis]})"
            if i < 1 or o < 1:
                raise ValueError(
                    f"input_size and output_size must be positive, got input_size={i} and "
                    f"output_size={o} on {where}"
                )
            if o > i:
                raise ValueError(
                    f"output_size must not exceed input_size, got output_size={o} > "
                    f"input_size={i} on {where}"
                )
            if (i - o) % 2:
                raise ValueError(
                    f"input_size - output_size must be even (the network must lose the same "
                    f"margin on both sides), got {i} - {o} = {i - o} on {where}"
                )
            if not 1 <= s <= o:
                raise ValueError(f"step must be in [1, output_size={o}], got {s} on {where}")
        object.__setattr__(self, "input_size", inp)
        object.__setattr__(self, "output_size", out)
        object.__setattr__(self, "step", stp)

    @classmethod
    def _compact(
        cls, input_size: tuple[int, ...], output_size: tuple[int, ...], step: tuple[int, ...]
    ) -> TileGeometry:
        """The geometry built from its shortest arguments: an int for a square 2-D size,
        no ``step`` when it equals the output (as a reader would write the call)."""

        def short(v: tuple[int, ...]) -> int | tuple[int, ...]:
            return v[0] if len(v) == 2 and v[0] == v[1] else v

        if step == output_size:
            return cls(short(input_size), short(output_size))
        return cls(short(input_size), short(output_size), step=short(step))

    @property
    def ndim(self) -> int:
        """Number of spatial axes (2 or 3)."""
        return len(self.input_size)

    @property
    def margin(self) -> tuple[int, ...]:
        """Pixels the network loses on each side, per axis: ``(input - output) // 2``."""
        return tuple((i - o) // 2 for i, o in zip(self.input_size, self.output_size, strict=True))

    @property
    def keep_offset(self) -> tuple[int, ...]:
        """Offset of the kept ``step`` pixels inside the output window: ``(output - step) // 2``."""
        return tuple((o - s) // 2 for o, s in zip(self.output_size, self.step, strict=True))

    # ------------------------------------------------------------------ U-Net sizes
    @classmethod
    def unet(
        cls,
        *,
        input_size: int | Sequence[int] | None = None,
        output_size: int | Sequence[int] | None = None,
        depth: int = 4,
        convs_per_level: int = 2,
        kernel_size: int = 3,
        ndim: int = 2,
    ) -> TileGeometry:
        """Geometry of a valid-convolution U-Net, with the stride that makes tiling exact.

        The network has ``depth`` 2x2 max-poolings on the way down, 2x2 up-convolutions on
        the way up and ``convs_per_level`` unpadded ``kernel_size`` convolutions per level.
        ``step`` is the largest multiple of ``2**depth`` that fits in the output, so all
        tiles sit on the same pooling grid and tiled inference equals one forward pass
        over the whole mirror-extrapolated image.

        Args:
            input_size: Input tile size (int or per-axis). Exactly one of ``input_size``
                and ``output_size`` must be given.
            output_size: Output tile size (int or per-axis).
            depth: Number of max-pool / up-conv levels, at most 62 (the output must
                hold ``2**depth`` pixels, and a tensor axis holds fewer than ``2**63``).
            convs_per_level: Unpadded convolutions per level.
            kernel_size: Convolution kernel size.
            ndim: Number of spatial axes when the size is an int (2 or 3); a sequence
                has one entry per axis.

        Returns:
            The matching :class:`TileGeometry`, computed in closed form (constant time for
            any size and depth).

        Raises:
            ValueError: If the network cannot take the size (a pooling would see an odd
                size, or a feature map would vanish); the message names the nearest
                valid sizes. Also if the output is smaller than ``2**depth``, or
                ``depth`` is not in ``[0, 62]``.

        Example:
            >>> TileGeometry.unet(input_size=572)
            TileGeometry(572, 388, step=384)
            >>> TileGeometry.unet(output_size=388).input_size
            (572, 572)
            >>> TileGeometry.unet(input_size=(116, 132, 132), depth=3, ndim=3)
            TileGeometry((116, 132, 132), (28, 44, 44), step=(24, 40, 40))
            >>> TileGeometry.unet(input_size=(116, 132, 132), depth=3).ndim
            3
        """
        net = _UNetArithmetic(
            as_int("depth", depth),
            as_int("convs_per_level", convs_per_level),
            as_int("kernel_size", kernel_size),
        )
        ndim = as_int("ndim", ndim)
        if ndim not in (2, 3):
            raise ValueError(f"ndim must be 2 or 3, got {ndim!r}")
        if (input_size is None) == (output_size is None):
            raise ValueError(
                "exactly one of input_size and output_size must be given, got "
                f"input_size={input_size!r} and output_size={output_size!r}"
            )
        name, given = (
            ("input_size", input_size) if output_size is None else ("output_size", output_size)
        )
        given = as_list_if_1d(given)
        sizes = _as_sizes(name, given, None if _is_sequence(given) else ndim)
        if _is_sequence(given) and ndim != 2 and len(sizes) != ndim:
            # a sequence sets the number of axes; an explicit, different ndim is a mistake
            raise ValueError(f"{name} must have {ndim} entries (ndim={ndim}), got {given!r}")
        factor = net.period
        if output_size is None:
            inp = sizes
            out = tuple(net.output_for(i, axis, factor) for axis, i in enumerate(inp))
        else:
            out = sizes
            inp = tuple(net.input_for(o, axis, factor) for axis, o in enumerate(out))
        for axis, o in enumerate(out):
            if o < factor:
                raise ValueError(
                    f"output size {o} on axis {axis} is smaller than 2**depth={factor}, so no "
                    f"tile stride keeps tiled inference exact; use an input size of at least "
                    f"{net.input_for_min_output(factor)}"
                )
        step = tuple(o // factor * factor for o in out)
        return cls._compact(inp, out, step)

    @classmethod
    def from_model(
        cls,
        model: torch.nn.Module,
        input_size: int | Sequence[int],
        *,
        in_channels: int = 1,
        step: int | Sequence[int] | None = None,
        device: torch.device | str | None = None,
    ) -> TileGeometry:
        """Measures a model's output size by running zeros through it.

        The model runs once on a ``(1, in_channels, *input_size)`` tensor of zeros under
        :func:`torch.inference_mode` in eval mode; the train/eval flags of every submodule
        are restored afterwards, and no weights or buffers change.

        For a same-padding network the output equals the input: build the geometry
        yourself with a smaller output size (e.g. ``TileGeometry(512, 384)``) to discard
        the less reliable border predictions.

        Args:
            model: A network taking ``(N, C, *spatial)`` and returning ``(N, C', *spatial')``.
            input_size: Input tile size (int for square 2-D, or per axis).
            in_channels: Channels of the zeros tensor.
            step: Tile stride, see :class:`TileGeometry`.
            device: Where to run; defaults to the device of the model's first parameter.
                The zeros take the dtype of its first floating-point parameter.

        Returns:
            The measured :class:`TileGeometry`.

        Raises:
            TypeError: If the model does not return a tensor.
            ValueError: If the output has the wrong number of axes or a size that is not a
                centred crop of the input.

        Example:
            >>> import torch
            >>> net = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 5), torch.nn.Conv2d(2, 2, 3))
            >>> TileGeometry.from_model(net, 64)
            TileGeometry(64, 58)
        """
        import torch

        from ._model import check_model, parse_device

        check_model(model)
        inp = _as_sizes("input_size", input_size, None)
        if min(inp) < 1:
            raise ValueError(f"input_size must be positive, got {input_size!r}")
        in_channels = as_int("in_channels", in_channels)
        if in_channels < 1:
            raise ValueError(f"in_channels must be a positive int, got {in_channels!r}")
        floating = [p for p in model.parameters() if p.is_floating_point()]
        device = parse_device(device)
        if device is None:
            device = floating[0].device if floating else torch.device("cpu")
        dtype = floating[0].dtype if floating else torch.float32  # as predict_tiled feeds it
        flags = [(m, m.training) for m in model.modules()]
        model.eval()
        try:
            with torch.inference_mode():
                zeros = torch.zeros((1, in_channels, *inp), device=device, dtype=dtype)
                out = model(zeros)
        except (
            RuntimeError,
            TypeError,
            OverflowError,
        ) as e:  # e.g. a size the network cannot take, a wrong device
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise ValueError(
                f"model cannot run on zeros of shape {(1, in_channels, *inp)} (input_size="
                f"{input_size!r}, in_channels={in_channels}, device={str(device)!r}): {first}"
            ) from e
        finally:
            for m, training in flags:
                m.training = training
        if not isinstance(out, torch.Tensor):
            raise TypeError(f"model must return a tensor, got {type(out).__name__}")
        if out.ndim != len(inp) + 2:
            raise ValueError(
                f"model output must have shape (N, C, *spatial) with {len(inp)} spatial axes, "
                f"got shape {tuple(out.shape)} for input {(1, in_channels, *inp)}"
            )
        out_size = tuple(int(n) for n in out.shape[2:])
        if step is None:
            return cls._compact(inp, out_size, out_size)
        return cls(inp, out_size, step=step)


_PATHS = ("unet_transforms.TileGeometry", "unet_transforms.geometry.TileGeometry")


def as_geometry(value: object, name: str = "geometry") -> TileGeometry:
    """A :class:`TileGeometry` from itself or from plain data, as configs give it.

    Accepts a ``TileGeometry``; a mapping of its arguments
    (``{"input_size": 572, "output_size": 388, "step": 384}``, also with the
    ``"_target_"`` that :meth:`TileGeometry.to_config` writes); ``{"unet": {...}}``
    with the arguments of :meth:`TileGeometry.unet`; or jsonargparse's
    ``{"class_path": "unet_transforms.TileGeometry", "init_args": {...}}``.

    Args:
        value: The geometry or its plain form.
        name: The argument's name, for error messages.

    Raises:
        TypeError: If ``value`` is none of these, or a key is unknown.
        ValueError: If a size is refused; the message names ``name`` and the key.

    Example:
        >>> as_geometry({"input_size": 572, "output_size": 388})
        TileGeometry(input_size=572, output_size=388)
        >>> as_geometry({"unet": {"input_size": 572}})
        TileGeometry(572, 388, step=384)
    """
    if isinstance(value, TileGeometry):
        return value
    if not isinstance(value, Mapping):
        raise TypeError(
            f"{name} must be a TileGeometry or a mapping such as {{'input_size': 572, "
            f"'output_size': 388}} or {{'unet': {{'input_size': 572}}}}, got "
            f"{type(value).__name__} {value!r}"
        )
    args = dict(value)
    if set(args) <= {"class_path", "init_args"} and args.get("class_path") in _PATHS:
        # jsonargparse's form, which LightningCLI passes on as a plain mapping where its
        # own type check refuses an argument (an integral float such as 212.0)
        init_args = args.get("init_args", {})
        if not isinstance(init_args, Mapping):
            raise TypeError(f"{name}.init_args must be a mapping, got {init_args!r}")
        args = dict(init_args)
    target = args.pop("_target_", "unet_transforms.TileGeometry")
    if target != "unet_transforms.TileGeometry":
        raise TypeError(f"{name}._target_ must be 'unet_transforms.TileGeometry', got {target!r}")
    if "unet" in args:
        if len(args) > 1 or not isinstance(args["unet"], Mapping):
            raise TypeError(
                f"{name} as {{'unet': {{...}}}} takes one key holding the arguments of "
                f"TileGeometry.unet, got {value!r}"
            )
        factory: Callable[..., TileGeometry] = TileGeometry.unet
        name, args = f"{name}.unet", dict(args["unet"])
    else:
        factory = TileGeometry
    accepted = (
        {"input_size", "output_size", "step"}
        if factory is TileGeometry
        else {"input_size", "output_size", "depth", "convs_per_level", "kernel_size", "ndim"}
    )
    unknown = sorted(str(k) for k in args if k not in accepted)
    if unknown:
        raise TypeError(
            f"{name} has unknown key {unknown[0]!r}; accepted: {', '.join(sorted(accepted))}"
        )
    if factory is TileGeometry:
        missing = sorted({"input_size", "output_size"} - set(args))
        if missing:
            raise TypeError(f"{name} needs the key {missing[0]!r}, got {value!r}")
    try:
        return factory(**args)
    except (TypeError, ValueError) as e:
        kind = TypeError if isinstance(e, TypeError) else ValueError
        key = re.match(r"\w+", str(e))
        raise kind(f"{name}.{e}" if key and key[0] in accepted else f"{name}: {e}") from e


class _UNetArithmetic:
    """Spatial size arithmetic of a valid-convolution U-Net along one axis, in closed form.

    With ``L = convs_per_level * (kernel_size - 1)`` pixels lost per level and
    ``P = 2**depth``, a size ``x`` on the way down maps to ``(x - L) / 2`` (which must be
    an even number ``>= 2`` before halving), so an input ``n`` is taken exactly when
    ``n + L`` is a multiple of ``P`` and the bottom output ``b = (n + L) / P - 2L`` is
    large enough for the way up. Each level up maps ``y -> 2y - L``; after ``k`` levels
    that is ``2**k (b - L) + L``, positive for every ``k <= depth`` exactly when
    ``b >= L - (L - 1) // P`` (and ``b >= 1``). The output is then
    ``n - L * (3P - 2)``. Every method is a handful of integer operations, whatever the
    sizes.

    ``depth`` is at most :attr:`MAX_DEPTH` = 62: exact tiling needs an output of at
    least ``2**depth`` pixels, and a tensor axis (an int64 size) holds fewer than
    ``2**63``, so a deeper network has no usable size.
    """

    MAX_DEPTH = 62

    def __init__(self, depth: Any, convs_per_level: Any, kernel_size: Any) -> None:
        for name, value, low in (
            ("depth", depth, 0),
            ("convs_per_level", convs_per_level, 1),
            ("kernel_size", kernel_size, 1),
        ):
            if not is_int(value) or value < low:
                raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
        if depth > self.MAX_DEPTH:
            raise ValueError(
                f"depth must be at most {self.MAX_DEPTH} (2**depth must fit a tensor axis, "
                f"which holds fewer than 2**63 pixels), got {depth!r}"
            )
        self.depth = int(depth)
        self.loss = int(convs_per_level) * (int(kernel_size) - 1)
        self.period = 1 << self.depth
        # the smallest bottom output that keeps every size on the way up positive
        self._min_bottom = max(1, self.loss - (self.loss - 1) // self.period)
        self.total_loss = self.loss * (3 * self.period - 2)
        self._min_input = self.period * (self._min_bottom + 2 * self.loss) - self.loss

    def forward(self, size: int) -> int | None:
        """Output size for an input size, or None if the network cannot take it."""
        bottom, rest = divmod(size + self.loss, self.period)
        if rest or bottom - 2 * self.loss < self._min_bottom:
            return None
        return size - self.total_loss

    def valid_inputs_around(
        self, size: int, smallest: int | None = None
    ) -> tuple[int | None, int]:
        """Nearest valid input sizes below and above ``size``, from ``smallest`` on."""
        base = self._min_input if smallest is None else smallest
        if size < base:
            return None, base
        k = (size - base) // self.period
        below = base + k * self.period
        return below, below + self.period

    def output_for(self, size: int, axis: int, min_output: int = 1) -> int:
        """Output size for an input size; the error names the nearest valid inputs whose
        output is at least ``min_output``."""
        out = self.forward(size)
        if out is None:
            base = self.input_for_min_output(min_output)
            below, above = self.valid_inputs_around(size, base)
            near = f"{below} or {above}" if below is not None else f"{above} (the smallest)"
            raise ValueError(
                f"input size {size} on axis {axis} is not a valid U-Net input for depth="
                f"{self.depth} (valid sizes are {base} + {self.period}k); "
                f"nearest valid input sizes: {near}"
            )
        return out

    def input_for(self, size: int, axis: int, min_output: int = 1) -> int:
        """Input size for an output size; the error names the nearest valid outputs of at
        least ``min_output``."""
        inp = size + self.total_loss
        if size < 1 or self.forward(inp) != size:
            min_out = self.input_for_min_output(min_output) - self.total_loss
            if size < min_out:
                raise ValueError(
                    f"output size {size} on axis {axis} is not a valid U-Net output for "
                    f"depth={self.depth} (valid sizes are {min_out} + {self.period}k); "
                    f"smallest valid output size: {min_out}"
                )
            k = (size - min_out) // self.period
            below = min_out + k * self.period
            raise ValueError(
                f"output size {size} on axis {axis} is not a valid U-Net output for depth="
                f"{self.depth} (valid sizes are {min_out} + {self.period}k); nearest valid "
                f"output sizes: {below} or {below + self.period}"
            )
        return inp

    def input_for_min_output(self, min_output: int) -> int:
        """Smallest valid input size whose output is at least ``min_output``."""
        short = min_output + self.total_loss - self._min_input  # pixels still missing
        return self._min_input + max(0, -(-short // self.period)) * self.period
