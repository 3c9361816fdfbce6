"""Evaluation: PQ, AP (with Boundary AP) and mIoU, chosen per dataset by `build_evaluator`."""

from .boundary import boundary_iou, make_boundary_cocoeval, mask_to_boundary
from .build import EVALUATOR_TYPES, build_evaluator
from .cityscapes_evaluation import CityscapesInstanceEvaluator, CityscapesSemSegEvaluator
from .instance_evaluation import InstanceSegEvaluator
from .panoptic_evaluation import COCOPanopticEvaluator
from .reporting import EvaluatorGroup, write_results_table
from .sem_seg_evaluation import SemSegEvaluator
from .semantic_pq import semantic_pq

__all__ = [
    "EVALUATOR_TYPES",
    "build_evaluator",
    "EvaluatorGroup",
    "SemSegEvaluator",
    "COCOPanopticEvaluator",
    "InstanceSegEvaluator",
    "CityscapesSemSegEvaluator",
    "CityscapesInstanceEvaluator",
    "boundary_iou",
    "mask_to_boundary",
    "make_boundary_cocoeval",
    "semantic_pq",
    "write_results_table",
]
