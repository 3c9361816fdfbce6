#!/usr/bin/env python
"""Train or evaluate Mask2Former with Detectron2's command line.

    python tools/train_net.py --config-file configs/.../maskformer2_R50_bs16_160k.yaml \
        --num-gpus 8 [--resume] [--eval-only MODEL.WEIGHTS model.pkl] [KEY VALUE ...]

`--num-gpus N` starts N processes per machine: one per GPU (NCCL), or N CPU processes with Gloo
on a machine without CUDA (or with MODEL.DEVICE cpu). See docs/training.md.
"""

import logging
import os
import sys
import warnings

import torch
from detectron2.engine import default_argument_parser, default_setup
from detectron2.evaluation import verify_results
from detectron2.utils import comm
from detectron2.utils.logger import setup_logger

# Running from a checkout without `pip install -e .`: make the package importable.
TOOLS = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(TOOLS))

import mask2former  # noqa: E402,F401  (registers datasets, model parts, evaluators)
from mask2former.checkpoint import MaskFormerCheckpointer  # noqa: E402
from mask2former.checkpoint.checks import require_loaded_weights  # noqa: E402
from mask2former.config import load_config  # noqa: E402
from mask2former.data.dataset_checks import check_num_classes  # noqa: E402
from mask2former.data.datasets import register_user_datasets  # noqa: E402
from mask2former.data.datasets.register_demo_shapes import demo_shapes_sources  # noqa: E402
from mask2former.engine import Trainer, launch  # noqa: E402
from mask2former.model_zoo import local_weights_path  # noqa: E402

# shapely's deprecation warnings flood the log of the LSJ mappers (as upstream silences them).
warnings.filterwarnings("ignore", category=DeprecationWarning, module="shapely")


def _device_from_opts(opts: list[str] | None) -> str:
    """'cpu' if MODEL.DEVICE cpu was given on the command line, else 'auto'."""
    opts = opts or []
    for key, value in zip(opts[0::2], opts[1::2]):
        if key == "MODEL.DEVICE" and str(value).startswith("cpu"):
            return "cpu"
    return "auto"


def setup(args):
    """Detectron2 defaults + DeepLab and Mask2Former keys, --config-file, KEY VALUE overrides."""
    # load_config = get_cfg + add_deeplab_config + add_maskformer2_config + file + overrides,
    # with errors that name the closest valid key.
    cfg = load_config(args.config_file, args.opts, freeze=False)
    if cfg.MODEL.DEVICE.startswith("cuda") and not torch.cuda.is_available():
        cfg.MODEL.DEVICE = "cpu"  # logged below, once the logger exists
        device_note = "CUDA is not available: training on the CPU (MODEL.DEVICE cpu)."
    else:
        device_note = None
    cfg.freeze()
    default_setup(cfg, args)
    # detectron2's default_setup does not set up the "mask2former" logger.
    setup_logger(output=cfg.OUTPUT_DIR, distributed_rank=comm.get_rank(), name="mask2former")
    if device_note:
        logging.getLogger("mask2former").warning(device_note)
    return cfg


def generate_demo_data(dataset_names) -> None:
    """Generate the built-in demo_shapes datasets among `dataset_names` that are not there yet
    (tools/generate_demo_shapes.py; a no-op when they are, safe in several processes at once)."""
    sources = demo_shapes_sources(dataset_names)
    if not sources:
        return
    if TOOLS not in sys.path:
        sys.path.insert(0, TOOLS)
    import generate_demo_shapes

    for root, splits in sources:
        generate_demo_shapes.prepare_demo_shapes(root, splits=splits)


def main(args):
    # The user's datasets ($MASK2FORMER_DATASETS, docs/datasets.md), in every process `launch`
    # starts: this runs in each of them.
    register_user_datasets()
    cfg = setup(args)
    # A config on the built-in demo dataset trains from a fresh checkout (docs/demo.md).
    generate_demo_data(
        cfg.DATASETS.TEST if args.eval_only else cfg.DATASETS.TRAIN + cfg.DATASETS.TEST
    )
    # MODEL.SEM_SEG_HEAD.NUM_CLASSES must be the test datasets' class count (training: also
    # DATASETS.TRAIN, checked when the train loader is built).
    check_num_classes(cfg, cfg.DATASETS.TEST, "DATASETS.TEST")
    if args.eval_only:
        model = Trainer.build_model(cfg)
        checkpointer = MaskFormerCheckpointer(model, save_dir=cfg.OUTPUT_DIR)
        if cfg.MODEL.WEIGHTS and not (args.resume and checkpointer.has_checkpoint()):
            local_weights_path(cfg.MODEL.WEIGHTS)  # a URL offline: a clear DownloadError
        checkpointer.resume_or_load(cfg.MODEL.WEIGHTS, resume=args.resume)
        # A checkpoint that filled most of the model is required (else: random results).
        require_loaded_weights(
            model.state_dict(),
            checkpointer.loaded_keys,
            checkpointer.loaded_from or cfg.MODEL.WEIGHTS,
            allow=getattr(args, "allow_partial_weights", False),
        )
        res = Trainer.test(cfg, model)
        if cfg.TEST.AUG.ENABLED:
            res.update(Trainer.test_with_TTA(cfg, model))
        if comm.is_main_process():
            verify_results(cfg, res)
        return res

    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=args.resume)
    return trainer.train()


def argument_parser():
    """detectron2's command line, plus --allow-partial-weights."""
    parser = default_argument_parser()
    parser.add_argument(
        "--allow-partial-weights",
        action="store_true",
        help="with --eval-only: evaluate even if MODEL.WEIGHTS filled less than half of the model",
    )
    return parser


def invoke_main() -> None:
    args = argument_parser().parse_args()
    print("Command Line Args:", args)
    launch(
        main,
        args.num_gpus,
        num_machines=args.num_machines,
        machine_rank=args.machine_rank,
        dist_url=args.dist_url,
        args=(args,),
        device=_device_from_opts(args.opts),
    )


if __name__ == "__main__":
    invoke_main()
