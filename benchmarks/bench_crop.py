"""Paired crop per training sample: PairedTileCrop vs the lower bound and the alternatives.

4096 x 4096 float32 image + int64 mask, TileGeometry(572, 388). The lower bound is
plain slicing plus a copy of a 572^2 and a 388^2 window at an interior position (a
transform must return memory the caller may modify; view-only slicing is shown too).
"""

from __future__ import annotations

from torchvision.transforms import v2

from unet_transforms import PairedTileCrop

from _common import footer, header, paired_sample, parser, round_robin, table


def main() -> None:
    args = parser(__doc__.split("\n")[0]).parse_args()
    header(args)
    n, geometry, image, mask = paired_sample(args.quick)
    repeats = 5 if args.quick else args.repeats
    a, b = n // 2, n // 3

    def floor_copy() -> object:
        return (
            image[:, a : a + 572, b : b + 572].clone(),
            mask[a + 92 : a + 480, b + 92 : b + 480].clone(),
        )

    def floor_view() -> object:
        return (image[:, a : a + 572, b : b + 572], mask[a + 92 : a + 480, b + 92 : b + 480])

    random_crop = PairedTileCrop(geometry)
    border_crop = PairedTileCrop(geometry, index=0)  # the corner tile: mirrored
    candidates = {
        "floor: slice + copy": floor_copy,
        "floor: slice (view only)": floor_view,
        "PairedTileCrop random": lambda: random_crop(image, mask),
        "PairedTileCrop border tile": lambda: border_crop(image, mask),
    }
    compose = v2.Compose([v2.Pad(92, padding_mode="reflect"), v2.RandomCrop(572)])
    candidates["v2 Pad(reflect)+RandomCrop"] = lambda: compose(image, mask)
    try:
        import albumentations as A

        np_image, np_mask = image[0].numpy(), mask.numpy()
        aug = A.Compose([A.PadIfNeeded(572, 572, border_mode=4), A.RandomCrop(572, 572)])
        candidates["albumentations Pad+RandomCrop"] = lambda: aug(image=np_image, mask=np_mask)
    except ImportError:
        print("# albumentations not installed: skipped")
    results = round_robin(candidates, repeats)
    table(results, "floor: slice + copy")
    footer()


if __name__ == "__main__":
    main()
