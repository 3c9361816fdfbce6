#!/usr/bin/env python
"""Convert a torchvision ResNet checkpoint (.pth) into a detectron2 backbone file (.pkl).

    python tools/convert-torchvision-to-d2.py resnet101-63fe2227.pth R-101.pkl

The output holds {"model": name -> numpy array, "__author__": "torchvision",
"matching_heuristics": False} with exact detectron2 names under `backbone.` (stem.conv1,
res{2..5}.{i}.conv{1,2,3}[.norm], shortcut[.norm]); the classifier (fc.*) and BN counters
(num_batches_tracked) are dropped. Load it with MODEL.WEIGHTS; the checkpointer then reports the
head keys as missing (they start from their initialisation) and nothing else.
Use it with configs whose RESNETS.STRIDE_IN_1X1 is False (all Mask2Former configs).
"""

import os
import re
import sys

# The shared conversion code sits next to this script (tools/ is not a package: detectron2
# installs a top-level `tools` that would shadow it).
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _convert_to_d2 import convert_main  # noqa: E402


def convert_key(k: str) -> str | None:
    """torchvision name -> detectron2 name (None = drop)."""
    if k.startswith("fc.") or k.endswith("num_batches_tracked"):
        return None
    old = k
    if "layer" not in k:
        k = "stem." + k
    for t in [1, 2, 3, 4]:
        k = k.replace(f"layer{t}", f"res{t + 1}")
    for t in [1, 2, 3]:
        k = k.replace(f"bn{t}", f"conv{t}.norm")
    k = k.replace("downsample.0", "shortcut")
    k = k.replace("downsample.1", "shortcut.norm")
    if not re.fullmatch(
        r"(stem\.conv1|res[2-5]\.\d+\.(conv[123]|shortcut))(\.norm)?\.(weight|bias|running_mean|running_var)",
        k,
    ):
        raise ValueError(
            f"unexpected torchvision key {old!r} (-> {k!r}); is this a torchvision ResNet?"
        )
    return "backbone." + k


def main(argv=None) -> int:
    return convert_main(
        argv,
        doc=__doc__,
        input_help="torchvision ResNet state dict (.pth)",
        container_key="state_dict",
        convert_key=convert_key,
        author="torchvision",
        log_renames=True,
    )


if __name__ == "__main__":
    sys.exit(main())
