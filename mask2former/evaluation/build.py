"""`build_evaluator`: the evaluators of a dataset, chosen by its metadata's `evaluator_type`.

Same selection as the published `Trainer.build_evaluator` (train_net.py), so a panoptic model's
three outputs are evaluated in one run when `MODEL.MASK_FORMER.TEST.{PANOPTIC,INSTANCE,
SEMANTIC}_ON` are set:

* sem_seg: SemSeg
* ade20k_panoptic_seg, coco_panoptic_seg, mapillary_vistas_panoptic_seg: Panoptic if PANOPTIC_ON,
  Instance if INSTANCE_ON, SemSeg if SEMANTIC_ON
* coco: Instance (bbox + segm)
* cityscapes_instance: CityscapesInstance; cityscapes_sem_seg: CityscapesSemSeg
* cityscapes_panoptic_seg: Panoptic if PANOPTIC_ON, CityscapesSemSeg if SEMANTIC_ON,
  CityscapesInstance if INSTANCE_ON
* lvis: LVIS (needs the `lvis` package)

Differences from the published code: "Instance" is `InstanceSegEvaluator` everywhere (COCO's ids
work with it too), which adds Boundary AP when `TEST.BOUNDARY_AP` is true; ADE20K-panoptic's
semantic evaluator follows SEMANTIC_ON like the other panoptic datasets; results go to
`OUTPUT_DIR/inference/<dataset>` (one folder per dataset, so two test sets do not overwrite each
other's files) with a results table, and progress is reported while images are processed.
"""

from __future__ import annotations

import os

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.utils import comm

from .cityscapes_evaluation import CityscapesInstanceEvaluator, CityscapesSemSegEvaluator
from .instance_evaluation import InstanceSegEvaluator
from .panoptic_evaluation import COCOPanopticEvaluator
from .reporting import EvaluatorGroup
from .sem_seg_evaluation import SemSegEvaluator

__all__ = ["EVALUATOR_TYPES", "build_evaluator"]

EVALUATOR_TYPES = (
    "sem_seg",
    "ade20k_panoptic_seg",
    "coco",
    "coco_panoptic_seg",
    "mapillary_vistas_panoptic_seg",
    "cityscapes_instance",
    "cityscapes_sem_seg",
    "cityscapes_panoptic_seg",
    "lvis",
)


def _single_machine(evaluator_type: str) -> None:
    if comm.get_world_size() != comm.get_local_size():
        raise RuntimeError(
            f"evaluator_type {evaluator_type!r}: the Cityscapes evaluators work on a single "
            "machine only (all processes write into one local folder); evaluate with "
            "--num-machines 1."
        )


def build_evaluator(cfg, dataset_name: str, output_folder: str | None = None) -> EvaluatorGroup:
    """The `DatasetEvaluators` for `dataset_name` (see the module docstring for the table).

    Raises ValueError for an unknown or missing `evaluator_type`, and when the config enables no
    output that the dataset can evaluate.
    """
    meta = MetadataCatalog.get(dataset_name)
    evaluator_type = meta.get("evaluator_type", None)
    if evaluator_type not in EVALUATOR_TYPES:
        raise ValueError(
            f"dataset {dataset_name!r} has evaluator_type={evaluator_type!r}; expected one of "
            f"{', '.join(EVALUATOR_TYPES)}. Set it when registering the dataset, e.g. "
            f"MetadataCatalog.get({dataset_name!r}).set(evaluator_type='sem_seg')."
        )
    if output_folder is None:
        output_folder = os.path.join(cfg.OUTPUT_DIR, "inference", dataset_name)
    test = cfg.MODEL.MASK_FORMER.TEST
    semantic_on, instance_on, panoptic_on = test.SEMANTIC_ON, test.INSTANCE_ON, test.PANOPTIC_ON

    records = DatasetCatalog.get(dataset_name)

    def semseg():
        return SemSegEvaluator(
            dataset_name,
            distributed=True,
            output_dir=output_folder,
            dataset_records=records,
            miou_convention=cfg.TEST.MIOU_CONVENTION,
        )

    def instance():
        return InstanceSegEvaluator(
            dataset_name,
            output_dir=output_folder,
            max_dets_per_image=cfg.TEST.DETECTIONS_PER_IMAGE,
            boundary_ap=cfg.TEST.BOUNDARY_AP,
            dilation_ratio=cfg.TEST.BOUNDARY_AP_DILATION_RATIO,
        )

    def panoptic():
        return COCOPanopticEvaluator(dataset_name, output_folder)

    evaluators = []
    t = evaluator_type
    if t == "sem_seg":
        evaluators.append(semseg())
    elif t == "coco":
        evaluators.append(instance())
    elif t in ("ade20k_panoptic_seg", "coco_panoptic_seg", "mapillary_vistas_panoptic_seg"):
        if panoptic_on:
            evaluators.append(panoptic())
        if instance_on:
            evaluators.append(instance())
        if semantic_on:
            evaluators.append(semseg())
    elif t == "cityscapes_instance":
        _single_machine(t)
        evaluators.append(CityscapesInstanceEvaluator(dataset_name))
    elif t == "cityscapes_sem_seg":
        _single_machine(t)
        evaluators.append(CityscapesSemSegEvaluator(dataset_name))
    elif t == "cityscapes_panoptic_seg":
        if panoptic_on:
            evaluators.append(panoptic())
        if semantic_on or instance_on:
            _single_machine(t)
        if semantic_on:
            evaluators.append(CityscapesSemSegEvaluator(dataset_name))
        if instance_on:
            evaluators.append(CityscapesInstanceEvaluator(dataset_name))
    elif t == "lvis":
        try:
            import lvis  # noqa: F401
        except ImportError:
            raise ImportError(
                f"dataset {dataset_name!r} is evaluated with LVIS AP, which needs the `lvis` "
                "package: pip install lvis"
            ) from None
        from detectron2.evaluation import LVISEvaluator

        evaluators.append(LVISEvaluator(dataset_name, output_dir=output_folder))

    if not evaluators:
        raise ValueError(
            f"dataset {dataset_name!r} ({t}): nothing to evaluate, because "
            "MODEL.MASK_FORMER.TEST.PANOPTIC_ON, INSTANCE_ON and SEMANTIC_ON are all False. "
            "Turn on the outputs the model should produce."
        )
    return EvaluatorGroup(evaluators, dataset_name, output_folder, num_images=len(records))
