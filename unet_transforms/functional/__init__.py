"""Pure functional kernels: mirror extrapolation, window cropping and tile deformation.

Every function here is deterministic and stateless; the transform classes in
:mod:`unet_transforms` only validate configuration, sample positions and call these.
"""

from ._deform import deform_tile, deformation_coords
from ._mirror import MirrorMode, mirror_index, mirror_pad
from ._tile import Box, crop_tile, register_kernel

__all__ = [
    "Box",
    "MirrorMode",
    "crop_tile",
    "deform_tile",
    "deformation_coords",
    "mirror_index",
    "mirror_pad",
    "register_kernel",
]
