"""torchvision ``transforms.v2`` transforms for the overlap-tile strategy."""

from ._base import LabelAsImageWarning
from ._mirror import MirrorExtrapolate
from ._tile import OverlapTileCrop, PairedTileCrop

__all__ = ["LabelAsImageWarning", "MirrorExtrapolate", "OverlapTileCrop", "PairedTileCrop"]
