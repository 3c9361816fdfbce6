#!/usr/bin/env python
"""Convert an official Swin Transformer ImageNet checkpoint (.pth) into a detectron2 .pkl.

    python tools/convert-pretrained-swin-model-to-d2.py swin_tiny_patch4_window7_224.pth \
        swin_tiny_patch4_window7_224.pkl

The official files hold {"model": state_dict}. The output holds {"model": name -> numpy array,
"__author__": "third_party", "matching_heuristics": False} with exact names under `backbone.`;
the classifier (`head.*`), the final `norm.*` and the precomputed shifted-window masks
(`*.attn_mask`, recomputed at run time) are dropped. After loading with MODEL.WEIGHTS the
checkpointer reports as missing only the head and the per-stage output norms `backbone.norm0..3`
(new in the segmentation model).
"""

import os
import sys

# The shared conversion code sits next to this script (tools/ is not a package: detectron2
# installs a top-level `tools` that would shadow it).
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _convert_to_d2 import convert_main  # noqa: E402


def keep(k: str) -> bool:
    return not (k.startswith("head.") or k.startswith("norm.") or k.endswith("attn_mask"))


def convert_key(k: str) -> str | None:
    """Swin name -> detectron2 name (None = drop)."""
    return "backbone." + k if keep(k) else None


def main(argv=None) -> int:
    return convert_main(
        argv,
        doc=__doc__,
        input_help="official Swin checkpoint (.pth)",
        container_key="model",
        convert_key=convert_key,
        author="third_party",
    )


if __name__ == "__main__":
    sys.exit(main())
