"""COCO reading: xywh -> xyxy targets, crowd / degenerate boxes and empty images dropped, flips, errors."""

import json
import logging

import pytest
import torch
from PIL import Image

from aaconv.data.coco import CocoDetection, annotations_to_target
from aaconv.errors import DataError


def test_target_conversion_drops_crowd_and_degenerate_boxes():
    anns = [
        {"bbox": [2, 3, 10, 5], "category_id": 7},
        {"bbox": [1, 1, 0, 4], "category_id": 1},
        {"bbox": [0, 0, 5, 5], "category_id": 2, "iscrowd": 1},
        {"bbox": [30, 30, 5, 5], "category_id": 3},
    ]
    target, dropped = annotations_to_target(anns, width=20, height=20)
    assert target["boxes"].tolist() == [[2.0, 3.0, 12.0, 8.0]] and target["labels"].tolist() == [7]
    assert dropped == 2  # zero width, and entirely outside the image


def _write_coco(root, annotations):
    (root / "train2017").mkdir(parents=True)
    (root / "annotations").mkdir()
    images = []
    for image_id in (1, 2):
        Image.new("RGB", (20, 10), (image_id * 50, 0, 0)).save(root / "train2017" / f"{image_id}.png")
        images.append({"id": image_id, "file_name": f"{image_id}.png", "width": 20, "height": 10})
    data = {"images": images, "annotations": annotations, "categories": [{"id": 5, "name": "x"}]}
    (root / "annotations" / "instances_train2017.json").write_text(json.dumps(data))


def test_training_split_drops_images_without_boxes_and_flips(tmp_path):
    _write_coco(tmp_path, [{"id": 1, "image_id": 1, "bbox": [2, 1, 6, 4], "category_id": 5, "area": 24, "iscrowd": 0}])
    dataset = CocoDetection(tmp_path, "train2017", train=True, hflip=1.0)
    assert len(dataset) == 1
    image, target = dataset[0]
    assert image.shape == (3, 10, 20) and image.dtype == torch.float32
    assert target["boxes"].tolist() == [[12.0, 1.0, 18.0, 5.0]] and int(target["image_id"]) == 1
    assert len(CocoDetection(tmp_path, "train2017", train=False)) == 2  # evaluation keeps every image


def test_no_usable_image_and_missing_layout_are_data_errors(tmp_path):
    _write_coco(tmp_path, [])
    with pytest.raises(DataError, match="no usable image"):
        CocoDetection(tmp_path, "train2017", train=True)
    with pytest.raises(DataError, match="val2017"):
        CocoDetection(tmp_path, "val2017", train=False)


def _broken(edit):
    def write(root):
        _write_coco(root, [{"id": 1, "image_id": 1, "bbox": [2, 1, 6, 4], "category_id": 5, "iscrowd": 0}])
        file = root / "annotations" / "instances_train2017.json"
        data = json.loads(file.read_text())
        edit(data)
        file.write_text(json.dumps(data))

    return write


BROKEN_ANNOTATIONS = {
    "a list at the top level": (_broken(lambda d: d.clear()), "the top level must be an object with 'images'"),
    "no 'images' key": (_broken(lambda d: d.pop("images")), "the top level must be an object with 'images'"),
    "a 3-number bbox": (_broken(lambda d: d["annotations"][0].update(bbox=[1, 2, 3])), r"bbox \[1, 2, 3\] is not"),
    "a string bbox": (_broken(lambda d: d["annotations"][0].update(bbox="1 2 3 4")), "bbox '1 2 3 4' is not"),
    "no bbox": (_broken(lambda d: d["annotations"][0].pop("bbox")), "bbox None is not"),
    "a NaN width": (_broken(lambda d: d["annotations"][0].update(bbox=[1, 2, float("nan"), 3])), "finite numbers"),
    "a string image_id": (_broken(lambda d: d["annotations"][0].update(image_id="1")), "image_id '1' is not an int"),
    "a bool category": (_broken(lambda d: d["annotations"][0].update(category_id=True)), "category_id True is not"),
    "category 0": (_broken(lambda d: d["categories"][0].update(id=0)), "category id 0 is not an integer >= 1"),
    "no width": (_broken(lambda d: d["images"][0].pop("width")), "image 1: width x height None x 10 are not pos"),
    "a path outside": (_broken(lambda d: d["images"][0].update(file_name="../1.png")), "'../1.png' is not a file"),
    "an absolute path": (_broken(lambda d: d["images"][0].update(file_name="/etc/passwd")), "'/etc/passwd' is not"),
    "a duplicate image": (_broken(lambda d: d["images"][1].update(id=1)), "image id 1 is listed more than once"),
}


@pytest.mark.parametrize("case", BROKEN_ANNOTATIONS)
def test_broken_annotations_are_one_data_error_naming_the_entry(tmp_path, case):
    write, message = BROKEN_ANNOTATIONS[case]
    write(tmp_path)
    with pytest.raises(DataError, match=f"instances_train2017.json: .*{message}"):
        CocoDetection(tmp_path, "train2017", train=True)


def test_an_image_of_another_size_than_annotated_is_a_data_error(tmp_path):
    _write_coco(tmp_path, [{"id": 1, "image_id": 1, "bbox": [2, 1, 6, 4], "category_id": 5, "iscrowd": 0}])
    Image.new("RGB", (40, 20)).save(tmp_path / "train2017" / "1.png")  # annotated as 20x10
    dataset = CocoDetection(tmp_path, "train2017", train=False)
    with pytest.raises(DataError, match=r"1.png is 40x20 but its annotation says 20x10"):
        dataset[0]
    assert dataset[1][0].shape == (3, 10, 20)


def _split_line(caplog, split):
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith(f"COCO {split}:")]
    assert len(lines) == 1, lines
    return lines[0]


@pytest.mark.parametrize("train", [True, False])
def test_each_split_states_its_degenerate_boxes_and_orphan_annotations(tmp_path, caplog, train):
    _write_coco(
        tmp_path,
        [
            {"id": 1, "image_id": 1, "bbox": [2, 1, 6, 4], "category_id": 5, "area": 24, "iscrowd": 0},
            {"id": 2, "image_id": 1, "bbox": [25, 1, 6, 4], "category_id": 5, "area": 24, "iscrowd": 0},  # outside
            {"id": 3, "image_id": 2, "bbox": [3, 3, 0, 4], "category_id": 5, "area": 0, "iscrowd": 0},  # no width
            {"id": 4, "image_id": 9, "bbox": [1, 1, 4, 4], "category_id": 5, "area": 16, "iscrowd": 0},  # no image 9
        ],
    )
    with caplog.at_level(logging.INFO, logger="aaconv"):
        dataset = CocoDetection(tmp_path, "train2017", train=train)
    line = _split_line(caplog, "train2017")
    used = 1 if train else 2  # image 2 has no usable box: training drops it, evaluation keeps it
    assert len(dataset) == used
    assert line.startswith(f"COCO train2017: {used} images used of 2, 1 boxes; 2 degenerate or outside-the-image boxes")
    assert "1 annotations for image ids with no image ignored" in line
    assert ("dropped from training" if train else "kept (pycocotools") in line


def test_unknown_category_id_is_a_data_error_naming_the_annotation(tmp_path):
    _write_coco(
        tmp_path, [{"id": 7, "image_id": 1, "bbox": [2, 1, 6, 4], "category_id": 200, "area": 24, "iscrowd": 0}]
    )
    with pytest.raises(DataError, match="instances_train2017.json: annotation 7: category_id 200 is not among"):
        CocoDetection(tmp_path, "train2017", train=True)


def test_invalid_annotation_json_is_a_data_error(tmp_path):
    _write_coco(tmp_path, [])
    (tmp_path / "annotations" / "instances_train2017.json").write_text('{"images": [')
    with pytest.raises(DataError, match="are not valid JSON"):
        CocoDetection(tmp_path, "train2017", train=True)
