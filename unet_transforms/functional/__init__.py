"""Pure functional kernels: mirror extrapolation and window cropping.

Every function here is deterministic and stateless; the transform classes in
:mod:`unet_transforms` only validate configuration, sample positions and call these.
"""

from ._mirror import MirrorMode, mirror_index, mirror_pad
from ._tile import Box, crop_tile, register_kernel

__all__ = ["Box", "MirrorMode", "crop_tile", "mirror_index", "mirror_pad", "register_kernel"]
