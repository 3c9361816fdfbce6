"""COCOPanopticEvaluator against panopticapi's `pq_compute` on the same predictions, for a
dataset registered with `register_panoptic_dataset` (with and without semantic / instance
files): PQ, SQ, RQ (all / things / stuff) and per class, to 0.01. The data
(tests/evaluation/crosscheck_data.py) has out-of-order category ids, VOID, a crowd segment, a
predicted-only thing, an unannotated stuff class and two images with one basename."""

import pytest
from detectron2.data import DatasetCatalog, MetadataCatalog

from mask2former.data.datasets.custom import register_panoptic_dataset
from mask2former.evaluation import COCOPanopticEvaluator
from mask2former.evaluation.panoptic_evaluation import prediction_file_name

from . import crosscheck_data as X


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return X.write_dataset(str(tmp_path_factory.mktemp("crosscheck_panoptic")))


@pytest.fixture(scope="module")
def official(data, tmp_path_factory):
    return X.official_pq(data, str(tmp_path_factory.mktemp("official_pq")))


def _register(data, with_files: bool) -> str:
    name = X.fresh_name(f"_xcheck_panoptic_{int(with_files)}")
    register_panoptic_dataset(
        name,
        data["images"],
        data["panoptic"],
        data["panoptic_json"],
        sem_seg_root=data["semantic"] if with_files else None,
        instances_json=data["instances_json"] if with_files else None,
    )
    return name


@pytest.mark.parametrize("with_files", [True, False], ids=["with_sem_inst", "panoptic_only"])
def test_pq_equals_panopticapi(data, official, tmp_path, with_files):
    name = _register(data, with_files)
    meta = MetadataCatalog.get(name)
    records = DatasetCatalog.get(name)
    # two images share the basename "frame": their predictions must not overwrite each other
    assert len({r["file_name"].rsplit("/", 1)[-1] for r in records}) < len(records)
    res = X.run(
        COCOPanopticEvaluator(name, str(tmp_path)),
        records,
        lambda r: X.panoptic_output(r["image_id"], meta),
    )["panoptic_seg"]
    X.assert_all_close(res, official)
    # the cases the data was built for
    assert res["PQ-dog"] == pytest.approx(0.0)  # predicted once, no ground truth: a false positive
    assert res["PQ-water"] != res["PQ-water"]  # nobody annotates or predicts it: NaN
    assert 0 < res["PQ"] < 100


def test_prediction_files_are_named_by_image_id():
    assert prediction_file_name(7) == "7.png"
    assert prediction_file_name("cam0/frame 1") == "cam0_frame_1.png"


def test_two_inputs_on_one_file_is_an_error(data, tmp_path):
    name = _register(data, False)
    meta = MetadataCatalog.get(name)
    r = DatasetCatalog.get(name)[0]
    ev = COCOPanopticEvaluator(name, str(tmp_path))
    ev.reset()
    for image_id in ("a/b", "a_b"):  # distinct ids, one sanitised file name
        out = X.panoptic_output(r["image_id"], meta)
        ev.process([dict(r, image_id=image_id)], [out])
    with pytest.raises(ValueError, match="both map to prediction file 'a_b.png'"):
        ev.evaluate()
    ev.reset()
    for _ in range(2):
        ev.process([r], [X.panoptic_output(r["image_id"], meta)])
    with pytest.raises(ValueError, match="evaluated twice"):
        ev.evaluate()
