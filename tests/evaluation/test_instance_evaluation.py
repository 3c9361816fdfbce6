"""InstanceSegEvaluator against pycocotools' COCOeval on the same predictions: mask and box AP,
AP50, AP75, APs/m/l and AP per class, to 0.01, for datasets registered with
`register_instance_dataset` and `register_panoptic_dataset` (with an instance json, and without:
the instance ground truth is then derived from the panoptic PNGs). The categories are listed out
of id order (tests/evaluation/crosscheck_data.py), so a per-class AP named by position instead of
by category id shows another class's value."""

import math

import pytest
from detectron2.data import DatasetCatalog, MetadataCatalog

from mask2former.data.datasets.custom import register_instance_dataset, register_panoptic_dataset
from mask2former.evaluation import InstanceSegEvaluator

from . import crosscheck_data as X


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return X.write_dataset(str(tmp_path_factory.mktemp("crosscheck_instance")))


@pytest.fixture(scope="module")
def official(data):
    results = X.coco_results()
    return {t: X.official_ap(data["instances_json"], results, t) for t in ("segm", "bbox")}


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):  # instance json derived from panoptic PNGs goes here
    monkeypatch.setenv("MASK2FORMER_CACHE", str(tmp_path / "cache"))


def register(data, how: str) -> str:
    name = X.fresh_name(f"_xcheck_instance_{how}")
    if how == "instance":
        register_instance_dataset(name, data["instances_json"], data["images"])
    else:
        register_panoptic_dataset(
            name,
            data["images"],
            data["panoptic"],
            data["panoptic_json"],
            sem_seg_root=data["semantic"] if how == "panoptic_files" else None,
            instances_json=data["instances_json"] if how == "panoptic_files" else None,
        )
    return name


HOW = ["instance", "panoptic_files", "panoptic_only"]


@pytest.mark.parametrize("how", HOW)
def test_ap_equals_pycocotools(data, official, tmp_path, how):
    name = register(data, how)
    meta = MetadataCatalog.get(name)
    res = X.run(
        InstanceSegEvaluator(name, output_dir=str(tmp_path)),
        DatasetCatalog.get(name),
        lambda r: X.instances_output(r["image_id"], meta),
    )
    for task in ("segm", "bbox"):
        X.assert_all_close(res[task], official[task])
        assert sorted(k for k in res[task] if k.startswith("AP-")) == [
            "AP-chair",
            "AP-dog",
            "AP-person",
        ]
    # the data makes the classes differ, so a naming by position would show
    assert res["segm"]["AP-person"] != pytest.approx(res["segm"]["AP-chair"], abs=1)
    assert math.isnan(res["segm"]["AP-dog"])  # predicted, but no ground truth


@pytest.mark.parametrize("how", HOW)
def test_no_predictions_per_class_by_category_id(data, tmp_path, how):
    """Nothing predicted: 0 where a class has (non-crowd) ground truth, NaN where it has none,
    each under its own name."""
    name = register(data, how)
    meta = MetadataCatalog.get(name)
    empty = {i: [] for i, _ in X.IMAGES}
    res = X.run(
        InstanceSegEvaluator(name, output_dir=str(tmp_path)),
        DatasetCatalog.get(name),
        lambda r: X.instances_output(r["image_id"], meta, empty),
    )["segm"]
    assert res["AP"] == 0 and res["AP-person"] == 0 and res["AP-chair"] == 0
    assert math.isnan(res["AP-dog"])


class _FakeCOCO:
    def __init__(self, cats):
        self.cats = {c["id"]: c for c in cats}

    def getCatIds(self):  # noqa: N802
        return sorted(self.cats)

    def loadCats(self, ids):  # noqa: N802
        return [self.cats[i] for i in ids]


@pytest.mark.parametrize("all_in_thing_classes", [False, True])
def test_names_through_the_id_mapping_for_each_metadata_layout(all_in_thing_classes):
    """thing_classes listing the things only (panoptic registrations) or every class by
    contiguous id (Mapillary, detectron2's standard panoptic metadata); json names otherwise."""
    from detectron2.data.catalog import Metadata

    from mask2former.data.datasets.panoptic import panoptic_metadata
    from mask2former.evaluation.instance_evaluation import thing_names_by_category_id

    things = [c for c in X.CATEGORIES if c["isthing"]]
    coco = _FakeCOCO(
        [dict(c, name=f"json-{c['name']}") for c in things] + [{"id": 99, "name": "x"}]
    )
    meta = Metadata(**panoptic_metadata(X.CATEGORIES, all_in_thing_classes))
    names = thing_names_by_category_id(meta, coco)
    assert names == {X.DOG: "dog", X.PERSON: "person", X.CHAIR: "chair", 99: "x"}
    assert thing_names_by_category_id(Metadata(), coco)[X.CHAIR] == "json-chair"


def test_a_shared_name_gets_each_category_id():
    """Two categories named "car" would write one "AP-car" result over the other."""
    from detectron2.data.catalog import Metadata

    from mask2former.evaluation.instance_evaluation import thing_names_by_category_id

    coco = _FakeCOCO([{"id": 3, "name": "car"}, {"id": 7, "name": "car"}, {"id": 9, "name": "bus"}])
    names = thing_names_by_category_id(Metadata(), coco)
    assert names == {3: "car (id 3)", 7: "car (id 7)", 9: "bus"}
