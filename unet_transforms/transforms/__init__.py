"""torchvision ``transforms.v2`` transforms for the overlap-tile strategy."""

from ._mirror import MirrorExtrapolate
from ._tile import OverlapTileCrop, PairedTileCrop

__all__ = ["MirrorExtrapolate", "OverlapTileCrop", "PairedTileCrop"]
