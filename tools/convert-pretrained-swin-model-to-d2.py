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
import argparse
import pickle
import sys

import torch


def keep(k: str) -> bool:
    return not (k.startswith("head.") or k.startswith("norm.") or k.endswith("attn_mask"))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("input", help="official Swin checkpoint (.pth)")
    parser.add_argument("output", help="detectron2 .pkl to write")
    args = parser.parse_args(argv)

    obj = torch.load(args.input, map_location="cpu", weights_only=True)
    obj = obj.get("model", obj)
    newmodel = {}
    for k, v in obj.items():
        if not keep(k):
            print(f"drop {k}")
            continue
        newmodel["backbone." + k] = v.detach().numpy()
    res = {"model": newmodel, "__author__": "third_party", "matching_heuristics": False}
    with open(args.output, "wb") as f:
        pickle.dump(res, f)
    print(f"wrote {len(newmodel)} arrays to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
