"""Overlap-tile mirroring, tiling and stitching for U-Net style segmentation.

The public API: :class:`TileGeometry` (a network's tile sizes), :class:`TileGrid` (the
overlap-tile plan of one image), :func:`mirror_pad`, and the torchvision v2 transforms
:class:`MirrorExtrapolate`, :class:`OverlapTileCrop` and :class:`PairedTileCrop`.
"""

from .config import allow_in_torch_load, from_config, to_config
from .dataset import TiledDataset
from .deformation import Deformation
from .functional import crop_tile, mirror_pad
from .geometry import TileGeometry
from .grid import Tile, TileGrid, TileIndexError, tile_at
from .inference import TTA, predict_tiled
from .merging import TileMerger
from .planning import plan_geometry
from .sampling import ForegroundSampler, LabelSampler, WeightedSampler
from .transforms import (
    LabelAsImageWarning,
    MirrorExtrapolate,
    OverlapTileCrop,
    PairedTileCrop,
)
from .weightmap import WeightMap, unet_weight_map

# plain values that Lightning keeps in checkpoints as hyperparameters
allow_in_torch_load(
    TileGeometry, TileGrid, Deformation, LabelSampler, ForegroundSampler, WeightedSampler
)
del allow_in_torch_load, ForegroundSampler, LabelSampler, WeightedSampler

__version__ = "0.1.0"

__all__ = [
    "Deformation",
    "LabelAsImageWarning",
    "MirrorExtrapolate",
    "OverlapTileCrop",
    "PairedTileCrop",
    "Tile",
    "TileGeometry",
    "TileGrid",
    "TileIndexError",
    "TTA",
    "TileMerger",
    "TiledDataset",
    "WeightMap",
    "crop_tile",
    "from_config",
    "mirror_pad",
    "plan_geometry",
    "predict_tiled",
    "tile_at",
    "to_config",
    "unet_weight_map",
]
