"""Data: dataset registration (`datasets`) and the training mappers (`dataset_mappers`)."""

from . import datasets  # noqa: F401  (registers the datasets)
from .dataset_mappers import (  # noqa: F401
    MAPPERS,
    COCOInstanceNewBaselineDatasetMapper,
    COCOPanopticNewBaselineDatasetMapper,
    MaskFormerInstanceDatasetMapper,
    MaskFormerPanopticDatasetMapper,
    MaskFormerSemanticDatasetMapper,
)
