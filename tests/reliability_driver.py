"""tools/train_net.py on a tiny generated dataset, for the kill/resume and distributed tests.

    python tests/reliability_driver.py --data DIR [train_net.py arguments ...]

Runs train_net.py's own `main` (through its `launch`, so `--num-gpus 2` starts two Gloo
processes) after registering the tiny dataset `_reliability_tiny_{train,val}` (generated into
DIR) in every process, and with each iteration's metrics written to metrics.json (train_net.py
writes the median of the last 20, every 20 iterations). Model: the demo config (configs/demo/semantic.yaml: ResNet-18, MSDeformAttn pixel
decoder, masked-attention decoder) shrunk to 64x64 inputs with `TINY_OPTS`.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import os
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
NAME = "_reliability_tiny"
NUM_CLASSES = 3
CONFIG = str(ROOT / "configs" / "demo" / "semantic.yaml")

# The demo model, shrunk: 64x64 images, no random augmentation (so that one process with batch 4
# and two with batch 2 see the same pixels), no dropout.
TINY_OPTS = {
    "MODEL.DEVICE": "cpu",
    "MODEL.SEM_SEG_HEAD.NUM_CLASSES": NUM_CLASSES,
    "MODEL.SEM_SEG_HEAD.CONVS_DIM": 32,
    "MODEL.SEM_SEG_HEAD.MASK_DIM": 32,
    "MODEL.MASK_FORMER.HIDDEN_DIM": 32,
    "MODEL.MASK_FORMER.DIM_FEEDFORWARD": 64,
    "MODEL.MASK_FORMER.NUM_OBJECT_QUERIES": 8,
    "MODEL.MASK_FORMER.TRAIN_NUM_POINTS": 256,
    "MODEL.MASK_FORMER.DROPOUT": 0.0,
    # 3 decoder layers, class weight 2, one learning rate: the size the tolerances of
    # test_reliability_e2e were set for (with the demo's 6 layers and class weight 4, per-rank
    # matching points moved a deep layer's class loss by ~20% between 1 and 2 processes).
    "MODEL.MASK_FORMER.DEC_LAYERS": 4,
    "MODEL.MASK_FORMER.CLASS_WEIGHT": 2.0,
    "SOLVER.BACKBONE_MULTIPLIER": 1.0,
    "MODEL.RESNETS.NORM": "FrozenBN",  # per-process BatchNorm statistics differ with 2 processes
    "INPUT.DATASET_MAPPER_NAME": "mask_former_semantic",
    "INPUT.MIN_SIZE_TRAIN": (64,),
    "INPUT.MIN_SIZE_TRAIN_SAMPLING": "choice",
    "INPUT.MAX_SIZE_TRAIN": 64,
    "INPUT.MIN_SIZE_TEST": 64,
    "INPUT.MAX_SIZE_TEST": 64,
    "INPUT.CROP.ENABLED": False,
    "INPUT.RANDOM_FLIP": "none",
    "INPUT.SIZE_DIVISIBILITY": 64,
    "DATASETS.TRAIN": (f"{NAME}_train",),
    "DATASETS.TEST": (f"{NAME}_val",),
    "DATALOADER.NUM_WORKERS": 0,
    "SOLVER.IMS_PER_BATCH": 4,
    "SOLVER.BASE_LR": 1e-3,
    "SOLVER.WARMUP_ITERS": 0,
    "SOLVER.MAX_ITER": 12,
    "SOLVER.CHECKPOINT_PERIOD": 3,
    "TEST.EVAL_PERIOD": 0,
    "SEED": 7,
}


def opts_list(output_dir, **overrides) -> list[str]:
    opts = {**TINY_OPTS, "OUTPUT_DIR": str(output_dir), **overrides}
    out = []
    for k, v in opts.items():
        out += [k, str(v)]
    return out


def make_dataset(root: Path, split: str, n: int, size: int = 64) -> list[dict]:
    """Images with 1-2 rectangles of classes 1-2 on background 0 (a 255 ignore strip on top)."""
    from PIL import Image

    rng = np.random.default_rng({"train": 0, "val": 1}[split])
    d = root / split
    d.mkdir(parents=True, exist_ok=True)
    records = []
    for i in range(n):
        img = rng.integers(0, 60, (size, size, 3), dtype=np.uint8)
        label = np.zeros((size, size), dtype=np.uint8)
        for c in range(1, NUM_CLASSES):
            y, x = rng.integers(0, size // 2, 2)
            label[y : y + size // 3, x : x + size // 3] = c
            img[y : y + size // 3, x : x + size // 3] = rng.integers(60, 255, 3)
        label[:2] = 255
        fi, fl = d / f"{i}.png", d / f"{i}_label.png"
        if not fl.exists():
            Image.fromarray(img).save(fi)
            Image.fromarray(label).save(fl)
        records.append(
            dict(file_name=str(fi), sem_seg_file_name=str(fl), height=size, width=size, image_id=i)
        )
    return records


def register(root: str | os.PathLike) -> None:
    from detectron2.data import DatasetCatalog, MetadataCatalog

    for split, n in (("train", 16), ("val", 6)):
        name = f"{NAME}_{split}"
        records = make_dataset(Path(root), split, n)
        if name in DatasetCatalog.list():
            DatasetCatalog.remove(name)
            MetadataCatalog.remove(name)
        DatasetCatalog.register(name, lambda r=records: r)
        MetadataCatalog.get(name).set(
            stuff_classes=["bg", "a", "b"], ignore_label=255, evaluator_type="sem_seg"
        )


def load_train_net():
    spec = importlib.util.spec_from_file_location("train_net", ROOT / "tools" / "train_net.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@contextlib.contextmanager
def _metrics_every_iteration():
    """metrics.json: one line per iteration with that iteration's values (train_net.py writes
    every 20 iterations the median over the last 20). Restores detectron2's classes on exit, so
    that other tests running in the same process see the normal writers."""
    from detectron2.engine import hooks
    from detectron2.utils import events

    writer_init, json_init = hooks.PeriodicWriter.__init__, events.JSONWriter.__init__

    def periodic_writer_init(self, writers, period=20):
        writer_init(self, writers, period=1)

    def json_writer_init(self, json_file, window_size=20):
        json_init(self, json_file, window_size=1)

    hooks.PeriodicWriter.__init__ = periodic_writer_init
    events.JSONWriter.__init__ = json_writer_init
    try:
        yield
    finally:
        hooks.PeriodicWriter.__init__ = writer_init
        events.JSONWriter.__init__ = json_init


def main(data_dir, args):
    """Per process: register the data, then train_net.main(args)."""
    register(data_dir)
    with _metrics_every_iteration():
        res = load_train_net().main(args)
    from detectron2.utils import comm

    if args.eval_only and comm.is_main_process() and res:
        import json

        with open(os.path.join(data_dir, "eval_result.json"), "w") as f:
            json.dump(res, f)
    return res


if __name__ == "__main__":
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--data", required=True)
    known, rest = pre.parse_known_args()
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import reliability_driver  # so that spawned processes can unpickle `main`

    train_net = load_train_net()
    args = train_net.default_argument_parser().parse_args(rest)
    train_net.launch(
        reliability_driver.main,
        args.num_gpus,
        num_machines=args.num_machines,
        machine_rank=args.machine_rank,
        dist_url=args.dist_url or "auto",
        args=(known.data, args),
        device="cpu",
    )
