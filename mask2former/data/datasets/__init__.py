"""Dataset registration. Importing this package registers the paper's datasets (paths under
$DETECTRON2_DATASETS, default ./datasets) and exposes one-call helpers for custom data; the
user's own registration files ($MASK2FORMER_DATASETS) run only when `register_user_datasets()` is
called (tools/train_net.py does, in every process)."""

from . import (  # noqa: F401  (registration happens at import)
    register_ade20k_full,
    register_ade20k_instance,
    register_ade20k_panoptic,
    register_cityscapes,
    register_coco_panoptic_annos_semseg,
    register_demo_shapes,
    register_mapillary_vistas,
    register_mapillary_vistas_panoptic,
)
from ._utils import register_user_datasets
from .custom import register_instance_dataset, register_panoptic_dataset, register_semantic_dataset
from .panoptic import semantic_from_panoptic_record, write_semantic_from_panoptic

__all__ = [
    "register_user_datasets",
    "register_instance_dataset",
    "register_panoptic_dataset",
    "register_semantic_dataset",
    "semantic_from_panoptic_record",
    "write_semantic_from_panoptic",
]
