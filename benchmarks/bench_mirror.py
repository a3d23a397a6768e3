"""mirror_pad of a 3 x 2048 x 2048 image by 92 px vs the floor and the alternatives.

The floor is the cost of producing the output at all: allocate an output-sized array
and copy the image into it (numpy's allocator, which asks for huge pages).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torchvision.transforms import v2

from unet_transforms import mirror_pad

from _common import footer, header, parser, round_robin, table

P = 92


def run(dtype: torch.dtype, n: int, repeats: int) -> None:
    image = (torch.rand(3, n, n) * 255).to(dtype)
    array = image.numpy()
    out_shape = (3, n + 2 * P, n + 2 * P)
    np_dtype = array.dtype

    def floor_numpy() -> object:
        out = np.empty(out_shape, dtype=np_dtype)
        out[:, P : P + n, P : P + n] = array
        return out

    def floor_torch_empty() -> object:
        out = torch.empty(out_shape, dtype=dtype)
        out[:, P : P + n, P : P + n] = image
        return out

    candidates = {
        "floor: np.empty + copy": floor_numpy,
        "torch.empty + copy": floor_torch_empty,
        "torch.clone (input size)": image.clone,
        "mirror_pad": lambda: mirror_pad(image, [(P, P), (P, P)]),
        "numpy.pad reflect": lambda: np.pad(array, [(0, 0), (P, P), (P, P)], mode="reflect"),
        "v2.Pad reflect": lambda: v2.Pad(P, padding_mode="reflect")(image),
    }
    if dtype.is_floating_point:
        candidates["F.pad reflect"] = lambda: F.pad(image[None], (P, P, P, P), mode="reflect")
    else:
        print("# F.pad(mode='reflect') does not support uint8: skipped")
    try:
        import cv2

        def opencv() -> object:
            return [cv2.copyMakeBorder(c, P, P, P, P, cv2.BORDER_REFLECT_101) for c in array]

        candidates["cv2.copyMakeBorder (per channel)"] = opencv
    except ImportError:
        print("# opencv not installed: skipped")
    print(f"\n## {dtype}, 3 x {n} x {n}, pad {P}")
    table(round_robin(candidates, repeats), "floor: np.empty + copy")


def main() -> None:
    args = parser(__doc__.split("\n")[0]).parse_args()
    header(args)
    n = 512 if args.quick else 2048
    repeats = 5 if args.quick else args.repeats
    run(torch.float32, n, repeats)
    run(torch.uint8, n, repeats)
    footer()


if __name__ == "__main__":
    main()
