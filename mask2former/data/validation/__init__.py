"""Input checks with errors that name the file, the problem and the fix.

The dataset mappers and loaders call these instead of failing deep inside a data-loader worker (or,
worse, silently training on a wrong target). Two levels:

* **per sample** (in the mappers, on the pixels): :func:`read_image`, :func:`check_image_size`
  (``images.py``), :func:`read_sem_seg`, :func:`check_sem_seg`, :func:`read_panoptic_png`,
  :func:`check_panoptic_segments` (``labels.py``), :func:`check_instance_annotations`
  (``annotations.py``);
* **per dataset** (when the list of dicts is built, no decoding): :func:`validate_dataset_dicts`
  (``annotations.py``) checks category ids and polygons of every record up front and reports
  counts, so a bad record is reported before training starts instead of at iteration 50k.

The errors (``errors.py``) are :class:`InvalidInputError` and its :class:`MissingFileError`.

Decisions (see docs/reliability.md):

* **Images**: EXIF orientation is applied (as Detectron2 does); grayscale is replicated to 3
  channels; RGBA / LA / palette-with-transparency lose their alpha channel (no compositing);
  16-bit (``I;16``), 32-bit integer (``I``) and float (``F``) grayscale images are scaled to 8 bit
  (Detectron2's ``read_image`` clips them to 255, which turns most 16-bit images white); a float
  image with NaN/Inf pixels raises (they would train as black). Missing,
  unreadable and truncated files raise :class:`InvalidInputError` (:class:`MissingFileError` for
  missing ones) naming the file.
* **Polygons with fewer than 3 points** (< 6 coordinates) are dropped with a warning and a count
  (COCO itself contains some, and Detectron2's COCO loader drops them the same way); an instance
  left with no polygon is dropped too. A polygon with an odd number of coordinates is malformed
  and raises.
* **Empty annotation lists** are valid (an image without objects: all queries learn "no object");
  they are counted and logged once per dataset. Instance datasets drop them at load time when
  ``DATALOADER.FILTER_EMPTY_ANNOTATIONS`` is True (Detectron2's default).
* Category ids not in the metadata, panoptic PNG segment ids missing from ``segments_info``, and
  semantic label values outside ``[0, num_classes)`` that are not ``ignore_label`` raise.
"""

from .annotations import (
    check_category_id,
    check_instance_annotations,
    clean_polygons,
    validate_dataset_dicts,
)
from .errors import InvalidInputError, MissingFileError, require_file
from .images import check_image_size, read_image
from .labels import check_panoptic_segments, check_sem_seg, read_panoptic_png, read_sem_seg

__all__ = [
    "InvalidInputError",
    "MissingFileError",
    "check_category_id",
    "check_image_size",
    "check_instance_annotations",
    "check_panoptic_segments",
    "check_sem_seg",
    "clean_polygons",
    "read_image",
    "read_panoptic_png",
    "read_sem_seg",
    "require_file",
    "validate_dataset_dicts",
]
