"""Training dataset mappers, selected by `INPUT.DATASET_MAPPER_NAME`:

| name                   | class                                   |
|------------------------|-----------------------------------------|
| `mask_former_semantic` | `MaskFormerSemanticDatasetMapper`       |
| `mask_former_panoptic` | `MaskFormerPanopticDatasetMapper`       |
| `mask_former_instance` | `MaskFormerInstanceDatasetMapper`       |
| `coco_instance_lsj`    | `COCOInstanceNewBaselineDatasetMapper`  |
| `coco_panoptic_lsj`    | `COCOPanopticNewBaselineDatasetMapper`  |
"""

from .coco_instance_new_baseline_dataset_mapper import COCOInstanceNewBaselineDatasetMapper
from .coco_panoptic_new_baseline_dataset_mapper import COCOPanopticNewBaselineDatasetMapper
from .mask_former_instance_dataset_mapper import MaskFormerInstanceDatasetMapper
from .mask_former_panoptic_dataset_mapper import MaskFormerPanopticDatasetMapper
from .mask_former_semantic_dataset_mapper import MaskFormerSemanticDatasetMapper

# INPUT.DATASET_MAPPER_NAME -> mapper class
MAPPERS = {
    "mask_former_semantic": MaskFormerSemanticDatasetMapper,
    "mask_former_panoptic": MaskFormerPanopticDatasetMapper,
    "mask_former_instance": MaskFormerInstanceDatasetMapper,
    "coco_instance_lsj": COCOInstanceNewBaselineDatasetMapper,
    "coco_panoptic_lsj": COCOPanopticNewBaselineDatasetMapper,
}

__all__ = [
    "MAPPERS",
    "MaskFormerSemanticDatasetMapper",
    "MaskFormerPanopticDatasetMapper",
    "MaskFormerInstanceDatasetMapper",
    "COCOInstanceNewBaselineDatasetMapper",
    "COCOPanopticNewBaselineDatasetMapper",
]
