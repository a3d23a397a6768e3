"""Objects from plain config, and back: ``to_config``, ``from_config``, ``Configurable``.

A config is plain data (dicts, lists, str, int, float, bool, None) that ``json.dumps``
and YAML write as they are. An object's config is a flat, Hydra-style dict: ``"_target_"``
names the public dotted path of its class, the other keys are the constructor arguments
*as the caller gave them* (recorded when the object is built, never read back from
attributes). Nested objects nest as their own configs, so ``hydra.utils.instantiate``
and :func:`from_config` build the same object from one file.

:func:`from_config` resolves ``"_target_"`` only against a fixed table: the library's
public names, the torchvision transforms listed in :data:`TORCHVISION_TRANSFORMS`, and
what the caller names in ``allow``. It never imports a module because a config names it
and never evaluates an expression.
"""

from __future__ import annotations

import enum
import functools
import importlib
import inspect
import os
import re
import sys
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar

import numpy as np
import torch
from torchvision import tv_tensors
from torchvision.transforms import v2

__all__ = [
    "TORCHVISION_TRANSFORMS",
    "Configurable",
    "from_config",
    "to_config",
    "named_type",
    "to_plain",
    "torch_dtype",
    "type_name",
]

T = TypeVar("T", bound="Configurable")

#: The torchvision v2 transforms that :func:`to_config` describes and :func:`from_config`
#: builds without ``allow``. Their arguments are read back through the constructor's
#: signature (torchvision keeps each under its own name); every one is checked by a
#: round-trip test.
TORCHVISION_TRANSFORMS = (
    "Compose",
    "RandomApply",
    "RandomChoice",
    "RandomOrder",
    "RandomHorizontalFlip",
    "RandomVerticalFlip",
    "RandomRotation",
    "RandomAffine",
    "ColorJitter",
    "GaussianBlur",
    "ElasticTransform",
    "Normalize",
    "ToDtype",
    "ToImage",
    "ToPureTensor",
    "Identity",
)
_TV_PREFIX = "torchvision.transforms.v2."
_DTYPE = "unet_transforms.config.torch_dtype"
_RESERVED = re.compile(r"^_\w*_$")
_POSITIONAL = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)


# --------------------------------------------------------------------------- objects
def _without_numpy_scalars(value: Any) -> Any:
    """``value`` with numpy scalars as builtins, inside lists, tuples and dicts too (keys
    included); arrays inside them (a dataset's samples) are left as they are."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, list | tuple) and not hasattr(value, "_fields"):
        return type(value)(_without_numpy_scalars(v) for v in value)
    if isinstance(value, dict):
        return {_without_numpy_scalars(k): _without_numpy_scalars(v) for k, v in value.items()}
    return value


class Configurable:
    """Mixin that records constructor arguments as given: ``to_config()`` and repr.

    ``__new__`` binds the call to the signature of ``__init__`` before ``__init__``
    runs, so a subclass keeps a plain, fully annotated ``__init__`` (what jsonargparse
    and LightningCLI read) and needs nothing else. Containers among the arguments are
    copied, so changing a list after construction does not change the config.

    Example:
        >>> class Blur(Configurable):
        ...     def __init__(self, sigma: float, *, size: int = 3) -> None:
        ...         self.sigma, self.size = sigma, size
        >>> Blur(2.0, size=5)
        Blur(2.0, size=5)
        >>> Blur(2.0).to_config()["sigma"]
        2.0
    """

    _config_args: dict[str, Any]
    _config_positional: int

    def __new__(cls: type[T], *args: Any, **kwargs: Any) -> T:
        self = super().__new__(cls)
        try:
            bound = _init_signature(cls).bind(None, *args, **kwargs)  # type: ignore[arg-type]
        except TypeError:
            # __init__ reports a bad call; unpickling calls __new__ without arguments
            # and restores the recorded arguments with the rest of the state.
            return self
        params = _init_signature(cls).parameters  # type: ignore[arg-type]
        arguments: dict[str, Any] = {}
        for name, value in list(bound.arguments.items())[1:]:  # without self
            if params[name].kind is inspect.Parameter.VAR_KEYWORD:
                arguments.update(value)  # **options: each one its own key, as given
            else:
                arguments[name] = value
        positional = 0  # recorded arguments given by position (*args counts as one)
        for name in list(bound.arguments)[1:]:
            kind = params[name].kind
            if kind is inspect.Parameter.VAR_POSITIONAL:
                positional += 1
                break
            if positional >= len(args) or kind not in _POSITIONAL:
                break
            positional += 1
        object.__setattr__(self, "_config_args", {k: _snapshot(v) for k, v in arguments.items()})
        object.__setattr__(self, "_config_positional", positional)
        return self

    def to_config(self) -> dict[str, Any]:
        """The object as plain data: ``{"_target_": public path, **arguments as given}``.

        Raises:
            TypeError: If an argument cannot be described as plain data (e.g. a user's
                dataset without ``to_config``); the message names the argument.
        """
        target = _target_name(type(self))
        args = self._recorded_args()
        for param in _init_signature(type(self)).parameters.values():  # type: ignore[arg-type]
            if (
                param.kind in (param.VAR_POSITIONAL, param.POSITIONAL_ONLY)
                and param.name != "self"
            ):
                raise TypeError(
                    f"{type(self).__name__} cannot be described as a config: a config gives "
                    f"arguments by keyword, and {type(self).__name__}.__init__ takes "
                    f"{'*' if param.kind is param.VAR_POSITIONAL else ''}{param.name} by "
                    "position only (define to_config() to describe it)"
                )
        return {"_target_": target, **_encode_args(args, type(self).__name__)}

    def _recorded_args(self) -> dict[str, Any]:
        try:
            return self._config_args
        except AttributeError:
            raise TypeError(
                f"{type(self).__name__} has no recorded constructor arguments (it was not "
                "built by calling the class)"
            ) from None

    def __getstate__(self) -> dict[str, Any]:
        # numpy values among the recorded arguments (sizes given as arrays) as lists, so
        # that torch.load(weights_only=True) reads the object back (allow_in_torch_load)
        getstate = getattr(super(), "__getstate__", None)  # object's, from Python 3.11
        state = dict((getstate() if getstate is not None else None) or self.__dict__)
        if "_config_args" in state:
            state["_config_args"] = {
                k: v.tolist() if isinstance(v, np.ndarray) else _without_numpy_scalars(v)
                for k, v in state["_config_args"].items()
            }
        return state

    def __repr__(self) -> str:
        args = self._recorded_args()
        params = _init_signature(type(self)).parameters  # type: ignore[arg-type]
        parts: list[str] = []
        for i, (k, v) in enumerate(args.items()):
            if i >= self._config_positional:
                parts.append(f"{k}={v!r}")
            elif k in params and params[k].kind is inspect.Parameter.VAR_POSITIONAL:
                parts.extend(map(repr, v))  # *args, as given
            else:
                parts.append(repr(v))
        return f"{type(self).__name__}({', '.join(parts)})"


@functools.cache
def _init_signature(cls: type) -> inspect.Signature:
    return inspect.signature(cls.__init__)  # type: ignore[misc]


def _snapshot(value: Any) -> Any:
    """A copy of the containers in ``value`` (leaves kept); OmegaConf nodes as plain data."""
    if _is_omegaconf(value):
        from omegaconf import OmegaConf

        return OmegaConf.to_container(value, resolve=True)
    if type(value) in (list, tuple):
        return type(value)(_snapshot(v) for v in value)
    if type(value) is dict:
        return {k: _snapshot(v) for k, v in value.items()}
    if isinstance(value, np.ndarray | torch.Tensor) and _is_plain_array(value):
        return value.copy() if isinstance(value, np.ndarray) else value.clone()  # sizes
    return value


def _is_omegaconf(value: object) -> bool:
    return type(value).__module__.startswith("omegaconf")


# --------------------------------------------------------------------------- to_config
def to_config(obj: Any) -> dict[str, Any]:
    """The config of a library object, a supported torchvision transform or a pipeline.

    For the library's objects this is ``obj.to_config()``. ``v2.Compose``,
    ``RandomApply``, ``RandomChoice`` and ``RandomOrder`` nest the configs of their
    transforms; the torchvision transforms in :data:`TORCHVISION_TRANSFORMS` are
    described through their constructor's signature. A user's class takes part by
    defining ``to_config()``.

    Args:
        obj: The object to describe.

    Returns:
        Plain data, safe for ``json.dumps`` and YAML.

    Raises:
        TypeError: If ``obj`` (or a part of it) cannot be described; the message names
            the part and says what to do.

    Example:
        >>> from torchvision.transforms import v2
        >>> from unet_transforms import PairedTileCrop, TileGeometry
        >>> pipeline = v2.Compose([PairedTileCrop(TileGeometry(572, 388)), v2.RandomVerticalFlip()])
        >>> crop, flip = to_config(pipeline)["transforms"]
        >>> crop
        {'_target_': 'unet_transforms.PairedTileCrop', 'geometry': {'_target_': 'unet_transforms.TileGeometry', 'input_size': 572, 'output_size': 388}}
        >>> flip
        {'_target_': 'torchvision.transforms.v2.RandomVerticalFlip'}
    """
    return _encode_object(obj, "")


def to_plain(value: Any, name: str = "value") -> Any:
    """``value`` as plain data: configs, OmegaConf containers, tuples, numpy scalars.

    Objects inside are written as their configs, as :func:`to_config` does.

    Raises:
        TypeError: If a part cannot be written as plain data; the message names it.

    Example:
        >>> to_plain({"sizes": (572, 572)})
        {'sizes': [572, 572]}
    """
    return _encode(value, name)


def _encode_object(obj: Any, path: str) -> dict[str, Any]:
    to_config = getattr(obj, "to_config", None)
    if callable(to_config) and not isinstance(obj, type):
        config = to_config()
        if not isinstance(config, dict) or not isinstance(config.get("_target_"), str):
            raise TypeError(
                f"{_where(path)}{type(obj).__name__}.to_config() must return a dict with a "
                f"'_target_' string, got {type(config).__name__}"
            )
        return config
    name = type(obj).__name__
    if name in TORCHVISION_TRANSFORMS and type(obj) is getattr(v2, name):
        return {"_target_": _TV_PREFIX + name, **_encode_args(_read_back(obj), path or name)}
    raise TypeError(
        f"{_where(path)}cannot describe {type(obj).__name__} as a config: to_config supports "
        f"the library's objects, the torchvision transforms {', '.join(TORCHVISION_TRANSFORMS)}, "
        "and classes that define to_config() returning {'_target_': ..., **arguments}"
    )


def _read_back(obj: Any) -> dict[str, Any]:
    """A torchvision transform's arguments, read back under their own names (torchvision
    keeps each one so), left out where they equal the default: the shortest call."""
    args = {}
    for param in list(_init_signature(type(obj)).parameters.values())[1:]:  # type: ignore[arg-type]
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            continue
        value = getattr(obj, param.name)
        if param.default is not param.empty and _equal(value, param.default):
            continue
        args[param.name] = value
    return args


def _equal(a: Any, b: Any) -> bool:
    try:
        return type(a) is type(b) and bool(a == b)
    except (TypeError, ValueError, RuntimeError):  # e.g. tensors of different shapes
        return False


def _encode_args(args: Mapping[str, Any], owner: str) -> dict[str, Any]:
    return {k: _encode(v, f"{owner}.{k}" if owner else k) for k, v in args.items()}


def _encode(value: Any, path: str) -> Any:
    """``value`` as plain data; ``path`` names it in errors."""
    if value is None or type(value) in (bool, int, float, str):
        return value
    if isinstance(value, np.generic | np.ndarray | torch.Tensor) and _is_plain_array(value):
        return value.tolist()  # a number or a short list of them, e.g. sizes
    if isinstance(value, enum.Enum):  # e.g. v2.InterpolationMode: torchvision takes its name
        return _encode(value.value, path)
    for plain in (bool, int, float, str):  # subclasses (numpy scalars are handled above)
        if isinstance(value, plain):
            return plain(value) if plain is not str else str.__str__(value)
    if isinstance(value, torch.device):
        return str(value)
    if isinstance(value, torch.nn.ModuleList | torch.nn.Sequential):
        value = list(value)  # torchvision's scriptable form of a list of transforms
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, torch.dtype):
        return {"_target_": _DTYPE, "name": str(value).removeprefix("torch.")}
    if _is_omegaconf(value):  # e.g. the list Hydra gives a Compose; items may be objects
        value = dict(value.items()) if isinstance(value, Mapping) else list(value)
    if isinstance(value, list | tuple):
        return [_encode(v, f"{path}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, Mapping):
        encoded = {}
        for key, item in value.items():
            try:
                name = type_name(key) if isinstance(key, type) else key
            except TypeError as e:
                raise TypeError(f"{path}: {e}") from None
            if not isinstance(name, str):
                raise TypeError(
                    f"{path}: a config mapping needs str or type keys, got "
                    f"{type(key).__name__} {key!r}"
                )
            encoded[name] = _encode(item, f"{path}.{name}")
        return encoded
    return _encode_object(value, path)


def _is_plain_array(value: np.generic | np.ndarray | torch.Tensor) -> bool:
    """A scalar, a 1-D array of at most 16 entries or a 2-D integer array of at most 16
    columns (one size per row), not image data (tv_tensors)."""
    if isinstance(value, tv_tensors.TVTensor | torch.nn.Parameter):
        return False
    if value.ndim == 2:
        integer = (
            not (value.dtype.is_floating_point or value.dtype.is_complex)
            and value.dtype != torch.bool
            if isinstance(value, torch.Tensor)
            else value.dtype.kind in "iu"
        )
        return integer and value.shape[1] <= 16
    return value.ndim == 0 or (value.ndim == 1 and value.shape[0] <= 16)


def _where(path: str) -> str:
    return f"{path}: " if path else ""


@functools.cache
def _registry() -> dict[str, Any]:
    """Public dotted name -> object, for every name ``from_config`` builds by default."""
    import unet_transforms
    from unet_transforms import datasets, models, sampling

    table: dict[str, Any] = {}
    for module in (unet_transforms, models, datasets, sampling):
        for name in module.__all__:
            table[f"{module.__name__}.{name}"] = getattr(module, name)
    for name in TORCHVISION_TRANSFORMS:
        table[_TV_PREFIX + name] = getattr(v2, name)
    table[_DTYPE] = torch_dtype
    return table


@functools.cache
def _public_names() -> dict[Any, str]:
    names: dict[Any, str] = {}
    for name, obj in _registry().items():
        names.setdefault(obj, name)
    return names


def _target_name(cls: type) -> str:
    """The public dotted path of ``cls``; a user's subclass gives its own path."""
    return _public_names().get(cls) or f"{cls.__module__}.{cls.__qualname__}"


def type_name(cls: type) -> str:
    """The public dotted name of a tv_tensor or library class, as configs write types
    (e.g. the keys of a per-type ``mask_fill``).

    Raises:
        TypeError: If ``cls`` has no public name :func:`named_type` resolves.

    Example:
        >>> from torchvision import tv_tensors
        >>> type_name(tv_tensors.Mask)
        'torchvision.tv_tensors.Mask'
    """
    for name, obj in _types().items():
        if obj is cls:
            return name
    raise TypeError(
        f"cannot name the type {cls.__qualname__} in a config: only torchvision's tv_tensors "
        "and the library's public classes have names"
    )


def named_type(name: str) -> type:
    """The class a config names with :func:`type_name`.

    Raises:
        ValueError: If ``name`` is not such a name.

    Example:
        >>> named_type("unet_transforms.WeightMap").__name__
        'WeightMap'
    """
    types = _types()
    if name not in types:
        raise ValueError(
            f"unknown type name {name!r}: configs name tv_tensors as "
            "'torchvision.tv_tensors.Mask' and library classes as 'unet_transforms.WeightMap'"
        )
    return types[name]


@functools.cache
def _types() -> dict[str, type]:
    table = {
        f"torchvision.tv_tensors.{name}": cls
        for name, cls in vars(tv_tensors).items()
        if isinstance(cls, type) and issubclass(cls, tv_tensors.TVTensor)
    }
    table.update({k: v for k, v in _registry().items() if isinstance(v, type)})
    return table


def torch_dtype(name: str) -> torch.dtype:
    """A ``torch.dtype`` from its name, as configs write it (``"float32"``).

    Args:
        name: A dtype name of ``torch``: ``"float32"``, ``"uint8"``, ``"int64"``...

    Raises:
        ValueError: If ``name`` is not a torch dtype.

    Example:
        >>> torch_dtype("float32")
        torch.float32
    """
    dtype = (
        getattr(torch, str(name).removeprefix("torch."), None) if isinstance(name, str) else None
    )
    if not isinstance(dtype, torch.dtype):
        raise ValueError(f"name must name a torch dtype such as 'float32', got {name!r}")
    return dtype


# --------------------------------------------------------------------------- from_config
def from_config(config: Any, *, allow: Iterable[str | Callable[..., Any]] = ()) -> Any:
    """Builds the objects a config describes, recursively.

    Every mapping with a ``"_target_"`` key is a call: the target with the other keys as
    keyword arguments (built first). Mappings without one and lists are plain data.
    Accepts ``dict``, any ``Mapping`` and OmegaConf containers. Laws:
    ``from_config(c).to_config() == c`` for every config that :func:`to_config` wrote,
    and ``from_config(x.to_config()) == x`` for values such as :class:`TileGeometry`.

    Args:
        config: The config.
        allow: Further targets to allow, as dotted names (imported when a config uses
            them) or as the callables themselves. By default only the library's public
            names and :data:`TORCHVISION_TRANSFORMS` are built.

    Returns:
        The object (or plain data, for a config without targets).

    Raises:
        ValueError: If a target is not allowed (nothing is imported for it), or a value
            is refused by its constructor; the message names the key path, e.g.
            ``transforms[0].geometry.input_size``.
        TypeError: If a key is unknown, an argument is missing or has the wrong type.

    Example:
        >>> from_config({"_target_": "unet_transforms.TileGeometry", "input_size": 572,
        ...              "output_size": 388})
        TileGeometry(input_size=572, output_size=388)
        >>> from_config({"_target_": "os.system", "command": "ls"})
        Traceback (most recent call last):
        ...
        ValueError: _target_ 'os.system' is not allowed: from_config builds the library's public names and the torchvision transforms in TORCHVISION_TRANSFORMS; pass allow=['os.system'] to allow it
    """
    allowed = _allowed(allow)
    if _is_omegaconf(config):
        config = _snapshot(config)
    return _build(config, "", allowed)


def _allowed(allow: Iterable[str | Callable[..., Any]]) -> dict[str, Any]:
    if isinstance(allow, str):
        allow = [allow]
    allowed: dict[str, Any] = {}
    for entry in allow:
        if isinstance(entry, str):
            allowed[entry] = None  # imported when a config names it
        elif callable(entry):
            name = f"{entry.__module__}.{getattr(entry, '__qualname__', type(entry).__name__)}"
            allowed[name] = entry
        else:
            raise TypeError(
                f"allow must hold dotted names or callables, got {type(entry).__name__}"
            )
    return allowed


def _resolve(target: str, path: str, allowed: dict[str, Any]) -> Any:
    registry = _registry()
    if target in registry:
        return registry[target]
    if target not in allowed:
        # a callable allowed as itself, named by another public path than the module
        # that defines it (torchvision.transforms.v2.RandomResizedCrop is defined in
        # torchvision.transforms.v2._geometry); looked up in loaded modules only
        loaded = _loaded(target)
        if loaded is not None and any(loaded is obj for obj in allowed.values()):
            return loaded
        raise ValueError(
            f"{_where(path)}_target_ {target!r} is not allowed: from_config builds the "
            "library's public names and the torchvision transforms in "
            f"TORCHVISION_TRANSFORMS; pass allow=[{target!r}] to allow it"
        )
    if allowed[target] is None:
        allowed[target] = _import(target, path)
    return allowed[target]


def _loaded(dotted: str) -> Any:
    """What ``dotted`` names among the modules already imported, without importing or
    running a module's ``__getattr__``; ``None`` if nothing."""
    parts = dotted.split(".")
    for split in range(len(parts) - 1, 0, -1):
        obj: Any = sys.modules.get(".".join(parts[:split]))
        if obj is None:
            continue
        for attr in parts[split:]:
            obj = inspect.getattr_static(obj, attr, None)
            if obj is None:
                return None
        return obj
    return None


def _import(dotted: str, path: str) -> Any:
    """Imports an allowed dotted name: the longest importable module, then attributes."""
    parts = dotted.split(".")
    for split in range(len(parts) - 1, 0, -1):
        try:
            obj: Any = importlib.import_module(".".join(parts[:split]))
        except ImportError:
            continue
        try:
            for attr in parts[split:]:
                obj = getattr(obj, attr)
        except AttributeError:
            break
        return obj
    raise ValueError(f"{_where(path)}_target_ {dotted!r} was allowed but cannot be imported")


def _build(node: Any, path: str, allowed: dict[str, Any]) -> Any:
    if isinstance(node, Mapping):
        if "_target_" not in node:
            # type names back to types: torchvision looks per-type fills and dtypes up
            # by type (and skips a str key silently)
            types = _types()
            return {
                types.get(k, k) if isinstance(k, str) else k: _build(v, _join(path, k), allowed)
                for k, v in node.items()
            }
        return _call(node, path, allowed)
    if isinstance(node, list | tuple):
        return [_build(v, f"{path}[{i}]", allowed) for i, v in enumerate(node)]
    return node


def _join(path: str, key: object) -> str:
    return f"{path}.{key}" if path else str(key)


def _call(node: Mapping[Any, Any], path: str, allowed: dict[str, Any]) -> Any:
    target = node["_target_"]
    if not isinstance(target, str):
        raise TypeError(f"{_join(path, '_target_')} must be a str, got {type(target).__name__}")
    reserved = [k for k in node if isinstance(k, str) and _RESERVED.match(k) and k != "_target_"]
    if reserved:
        raise ValueError(
            f"{_where(path)}reserved key {reserved[0]!r} is not supported: a config is "
            "'_target_' beside the constructor's keyword arguments"
        )
    factory = _resolve(target, path, allowed)
    kwargs = {k: node[k] for k in node if k != "_target_"}
    names = _keyword_names(factory)
    if names is not None:
        unknown = [k for k in kwargs if k not in names]
        if unknown:
            raise TypeError(
                f"{_join(path, unknown[0])}: {target} has no argument {unknown[0]!r}; "
                f"its arguments are {', '.join(names) or 'none'}"
            )
    kwargs = {k: _build(v, _join(path, k), allowed) for k, v in kwargs.items()}
    try:
        return factory(**kwargs)
    except (TypeError, ValueError) as e:
        kind = TypeError if isinstance(e, TypeError) else ValueError
        raise kind(_locate(str(e), path, target, names or list(kwargs))) from e


def _keyword_names(factory: Any) -> list[str] | None:
    """The keyword arguments ``factory`` takes, or None if it takes any (``**kwargs``)."""
    try:
        params = list(
            (
                _init_signature(factory)
                if isinstance(factory, type)
                else inspect.signature(factory)
            ).parameters.values()
        )
    except (TypeError, ValueError):
        return None
    if isinstance(factory, type):
        params = params[1:]
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return None
    return [p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]


def _locate(message: str, path: str, target: str, names: list[str]) -> str:
    """Puts the key path in front of a constructor's message.

    A message that starts with an argument name (``"input_size must be ..."``) gets the
    path joined to that name (``"geometry.input_size must be ..."``).
    """
    for name in sorted(names, key=len, reverse=True):
        if re.match(rf"{re.escape(name)}\b", message):
            return f"{path}.{message}" if path else message
    return f"{path or '<config>'} ({target}): {message}"


def allow_in_torch_load(*classes: type) -> None:
    """Lets ``torch.load(weights_only=True)``, torch's default, read instances of the
    given plain value classes (Lightning keeps hyperparameters such as a
    :class:`TileGeometry` in its checkpoints). Does nothing on a torch without
    ``torch.serialization.add_safe_globals``.

    Example:
        >>> import io
        >>> from unet_transforms import TileGeometry
        >>> buffer = io.BytesIO()
        >>> torch.save({"geometry": TileGeometry(572, 388)}, buffer)
        >>> _ = buffer.seek(0)
        >>> torch.load(buffer)["geometry"]
        TileGeometry(572, 388)
    """
    add = getattr(torch.serialization, "add_safe_globals", None)
    if add is not None:
        add(list(classes))


def _register_yaml() -> None:
    """Lets PyYAML (when installed) write configurable objects as their config."""
    try:
        import yaml
    except ImportError:
        return

    def represent(dumper: Any, obj: Configurable) -> Any:
        return dumper.represent_dict(obj.to_config())

    for dumper in (yaml.Dumper, yaml.SafeDumper):
        yaml.add_multi_representer(Configurable, represent, Dumper=dumper)


_register_yaml()
