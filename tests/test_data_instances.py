import json

import numpy as np
import pytest
import skimage.io
import tensorflow as tf
from pycocotools import mask as mask_api
from pycocotools.coco import COCO
from skimage.measure import label, regionprops

from kerasseg.data import coco, instances

ISBI_SLICES = ("00", "07", "19")
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:pycocotools")


@pytest.fixture(scope="module")
def dsb_labels(data_dir):
    return skimage.io.imread(data_dir / "dsb2018-sample" / "labels.tif")


@pytest.fixture(scope="module")
def isbi_labels(data_dir):
    folder = data_dir / "isbi2012-membrane" / "train" / "label"
    return {name: skimage.io.imread(folder / f"{name}.png") for name in ISBI_SLICES}


def _map_once(function, *inputs):
    """Run `function` inside tf.data.map (graph mode) on one element with unknown H, W."""
    signature = tuple(
        tf.TensorSpec([None] * np.ndim(x), tf.as_dtype(np.asarray(x).dtype)) for x in inputs
    )
    dataset = tf.data.Dataset.from_generator(lambda: iter([inputs]), output_signature=signature)
    return next(iter(dataset.map(function)))


def _same_partition(a, b):
    """Two label images define the same regions (background 0 in both)."""
    if not np.array_equal(a == 0, b == 0):
        return False
    pairs = np.unique(np.stack([a[a > 0], b[b > 0]]), axis=1)
    return len(np.unique(pairs[0])) == len(np.unique(pairs[1])) == pairs.shape[1]


def _regionprops_boxes(labels):
    props = sorted(regionprops(labels), key=lambda p: p.label)
    return np.array([p.bbox for p in props], np.float32)  # (r0, c0, r1 + 1, c1 + 1)


# --------------------------------------------------------------------------- label images


def test_label_image_dsb2018(dsb_labels):
    ids = np.unique(dsb_labels)
    ids = ids[ids != 0]
    assert len(ids) == 125  # the README's count
    targets = _map_once(lambda x: instances.instances_from_label_image(x), dsb_labels)
    masks = targets["masks"].numpy()
    assert masks.shape == (125, 512, 512) and masks.dtype == np.uint8
    np.testing.assert_array_equal(masks, (dsb_labels[None] == ids[:, None, None]).astype(np.uint8))
    np.testing.assert_array_equal(targets["boxes"].numpy(), _regionprops_boxes(dsb_labels))
    assert targets["boxes"].dtype == tf.float32
    np.testing.assert_array_equal(targets["class_ids"].numpy(), np.ones(125, np.int32))
    assert targets["class_ids"].dtype == tf.int32


def test_label_image_noncontiguous_ids_and_channel_axis():
    labels = np.zeros((6, 7, 1), np.uint16)
    labels[0, 0] = 900  # one pixel
    labels[2:4, 3:7] = 5
    labels[5, :] = 7  # background id below: 7 is an instance only when background != 7
    targets = instances.instances_from_label_image(labels, class_id=3)
    np.testing.assert_array_equal(
        targets["boxes"].numpy(), [[2, 3, 4, 7], [5, 0, 6, 7], [0, 0, 1, 1]]
    )
    np.testing.assert_array_equal(targets["class_ids"].numpy(), [3, 3, 3])
    other = instances.instances_from_label_image(labels, background=7)
    assert other["masks"].shape == (3, 6, 7)  # 0, 5 and 900 (ordered by id)
    np.testing.assert_array_equal(other["masks"].numpy()[0], labels[..., 0] == 0)


def test_label_image_empty():
    targets = _map_once(instances.instances_from_label_image, np.zeros((5, 4), np.int32))
    assert targets["boxes"].shape == (0, 4)
    assert targets["class_ids"].shape == (0,)
    assert targets["masks"].shape == (0, 5, 4)


def test_label_image_errors():
    with pytest.raises(TypeError, match="integer label image"):
        instances.instances_from_label_image(np.zeros((4, 4), np.float32))
    with pytest.raises(ValueError, match=r"\(H, W\) or \(H, W, 1\)"):
        instances.instances_from_label_image(np.zeros((4, 4, 2), np.int32))
    with pytest.raises(ValueError, match="class_id"):
        instances.instances_from_label_image(np.zeros((4, 4), np.int32), class_id=0)


# --------------------------------------------------------------------------- binary masks


def test_binary_mask_isbi_matches_skimage(isbi_labels):
    for name, image in isbi_labels.items():
        reference = label(image > 0, connectivity=1)
        labels = _map_once(instances.connected_components, image).numpy()
        assert _same_partition(labels, reference), name
        np.testing.assert_array_equal(labels, reference)  # even the numbering
        assert 80 <= reference.max() <= 180, (name, reference.max())  # "about 130 per slice"
    image = isbi_labels["00"]
    targets = _map_once(instances.instances_from_binary_mask, image)
    reference = label(image > 0, connectivity=1)
    count = reference.max()
    assert targets["masks"].shape == (count, 512, 512)
    np.testing.assert_array_equal(
        instances.label_image_from_instances(targets["masks"]).numpy(), reference
    )
    np.testing.assert_array_equal(targets["boxes"].numpy(), _regionprops_boxes(reference))


def test_binary_mask_connectivity_8(isbi_labels):
    image = isbi_labels["07"]
    reference = label(image > 0, connectivity=2)
    labels = instances.connected_components(image, connectivity=8).numpy()
    np.testing.assert_array_equal(labels, reference)
    rng = np.random.default_rng(1)
    noise = rng.random((37, 53)) < 0.45  # many diagonal-only contacts
    for connectivity, skimage_connectivity in ((4, 1), (8, 2), (1, 1), (2, 2)):
        np.testing.assert_array_equal(
            instances.connected_components(noise, connectivity=connectivity).numpy(),
            label(noise, connectivity=skimage_connectivity),
        )


def test_binary_mask_edge_cases():
    empty = instances.instances_from_binary_mask(np.zeros((3, 5), bool))
    assert empty["masks"].shape == (0, 3, 5) and empty["boxes"].shape == (0, 4)
    full = instances.instances_from_binary_mask(np.full((3, 5, 1), 255, np.uint8), class_id=2)
    np.testing.assert_array_equal(full["boxes"].numpy(), [[0, 0, 3, 5]])
    np.testing.assert_array_equal(full["class_ids"].numpy(), [2])
    with pytest.raises(ValueError, match="connectivity"):
        instances.instances_from_binary_mask(np.zeros((3, 5), bool), connectivity=6)
    with pytest.raises(TypeError, match="bool or integer"):
        instances.connected_components(np.zeros((3, 5), np.float32))


# --------------------------------------------------------------------------- boxes, editing


def test_boxes_from_masks_corners():
    masks = np.zeros((4, 5, 6), np.uint8)
    masks[0, 2, 3] = 1  # one pixel
    masks[2] = 1  # full
    masks[3, 1:3, 0] = 1
    masks[3, 4, 5] = 1
    boxes = instances.boxes_from_masks(masks).numpy()
    np.testing.assert_array_equal(boxes, [[2, 3, 3, 4], [0, 0, 0, 0], [0, 0, 5, 6], [1, 0, 5, 6]])
    assert instances.boxes_from_masks(np.zeros((0, 5, 6), bool)).shape == (0, 4)


def test_drop_empty_channels_and_padding():
    masks = np.zeros((3, 4, 4), np.uint8)
    masks[0, :2, :2] = 1
    masks[2, 3, 3] = 1
    targets = {
        "boxes": instances.boxes_from_masks(masks),
        "class_ids": tf.constant([1, 2, 3]),
        "masks": masks,
        "is_crowd": tf.constant([False, False, True]),
        "image_id": tf.constant(7, tf.int64),
    }
    kept = instances.drop_empty_instances(targets)
    np.testing.assert_array_equal(kept["class_ids"].numpy(), [1, 3])
    np.testing.assert_array_equal(kept["is_crowd"].numpy(), [False, True])
    np.testing.assert_array_equal(kept["masks"].numpy(), masks[[0, 2]])
    assert kept["image_id"].numpy() == 7

    channels = instances.masks_to_channels(masks)
    assert channels.shape == (4, 4, 3) and channels.dtype == tf.int32
    np.testing.assert_array_equal(instances.channels_to_masks(channels).numpy(), masks)
    filled = tf.where(tf.range(4)[:, None, None] >= 3, 255, channels)  # e.g. an ignore fill
    assert instances.channels_to_masks(filled).numpy()[:, 3].sum() == 0

    padded = instances.to_padded(kept, 4)
    assert int(padded["num_instances"]) == 2
    np.testing.assert_array_equal(padded["class_ids"].numpy(), [1, 3, -1, -1])
    np.testing.assert_array_equal(padded["boxes"].numpy()[2:], np.zeros((2, 4)))
    assert padded["masks"].shape == (4, 4, 4) and padded["masks"].numpy()[2:].sum() == 0
    np.testing.assert_array_equal(padded["is_crowd"].numpy(), [False, True, False, False])
    back = instances.from_padded(padded)
    for key in ("boxes", "class_ids", "masks", "is_crowd"):
        np.testing.assert_array_equal(back[key].numpy(), np.asarray(kept[key]))
    with pytest.raises(tf.errors.InvalidArgumentError, match="max_instances=1"):
        instances.to_padded(kept, 1)
    with pytest.raises(ValueError, match="max_instances"):
        instances.to_padded(kept, -1)
    with pytest.raises(ValueError, match="already padded"):
        instances.to_padded(padded, 4)


def test_crop_through_channels_in_tf_data(dsb_labels):
    """Instances -> channels -> crop -> masks -> boxes -> drop empty == instances of the crop."""

    def crop_targets(labels):
        targets = instances.instances_from_label_image(labels)
        channels = instances.masks_to_channels(targets["masks"])[100:300, 256:]
        masks = instances.channels_to_masks(channels)
        moved = dict(targets, masks=masks, boxes=instances.boxes_from_masks(masks))
        return instances.drop_empty_instances(moved)

    cropped = _map_once(crop_targets, dsb_labels)
    expected = instances.instances_from_label_image(dsb_labels[100:300, 256:])
    assert 0 < len(expected["class_ids"]) < 125
    for key in ("boxes", "class_ids", "masks"):
        np.testing.assert_array_equal(cropped[key].numpy(), expected[key].numpy())


def test_padded_batches_in_tf_data(isbi_labels):
    images = np.stack([isbi_labels[name][:128, :128] for name in ISBI_SLICES])
    dataset = tf.data.Dataset.from_tensor_slices(images).map(
        lambda image: instances.to_padded(instances.instances_from_binary_mask(image), 64)
    )
    batch = next(iter(dataset.batch(3)))
    counts = [label(image > 0, connectivity=1).max() for image in images]
    np.testing.assert_array_equal(batch["num_instances"].numpy(), counts)
    assert batch["masks"].shape == (3, 64, 128, 128)
    for i, n in enumerate(counts):
        assert np.all(batch["class_ids"].numpy()[i, n:] == -1)
        assert np.all(batch["class_ids"].numpy()[i, :n] == 1)
    too_few = tf.data.Dataset.from_tensor_slices(images).map(
        lambda image: instances.to_padded(instances.instances_from_binary_mask(image), 2)
    )
    with pytest.raises(tf.errors.InvalidArgumentError, match="never truncated"):
        next(iter(too_few))


def test_label_image_from_instances_overlap():
    masks = np.zeros((2, 3, 3), bool)
    masks[0, :2, :2] = True
    masks[1, 1:, 1:] = True
    np.testing.assert_array_equal(
        instances.label_image_from_instances(masks).numpy(), [[1, 1, 0], [1, 2, 2], [0, 2, 2]]
    )
    assert instances.label_image_from_instances(np.zeros((0, 2, 3), bool)).numpy().sum() == 0


# --------------------------------------------------------------------------- RLE


def _reference_rle(mask):
    rle = mask_api.encode(np.asfortranarray(mask.astype(np.uint8)))
    return rle["counts"].decode("ascii")


def _edge_masks():
    rng = np.random.default_rng(2)
    masks = [
        np.zeros((5, 7), np.uint8),
        np.ones((5, 7), np.uint8),
        np.ones((1, 1), np.uint8),
        np.zeros((1, 1), np.uint8),
        np.ones((1, 9), np.uint8),
        np.eye(13, 3, dtype=np.uint8),
        (rng.random((31, 17)) < 0.5).astype(np.uint8),  # short runs: negative differences
        (rng.random((300, 401)) < 0.001).astype(np.uint8),  # long runs: multi-char numbers
    ]
    for r, c in ((0, 0), (4, 6), (0, 6), (4, 0), (2, 3)):
        one = np.zeros((5, 7), np.uint8)
        one[r, c] = 1
        masks.append(one)
    return masks


def test_rle_matches_pycocotools(dsb_labels, isbi_labels):
    real = [dsb_labels == i for i in np.unique(dsb_labels)[1:]]
    reference = label(isbi_labels["19"] > 0, connectivity=1)
    real += [reference == i for i in range(1, reference.max() + 1)]
    for mask in real + _edge_masks():
        ours = coco.rle_encode(mask)
        expected = _reference_rle(mask)
        assert ours == {"size": list(mask.shape), "counts": expected}
        decoded = coco.rle_decode(ours)
        assert decoded.dtype == np.uint8
        np.testing.assert_array_equal(decoded, mask.astype(np.uint8))
        both = {"size": list(mask.shape), "counts": expected.encode()}
        np.testing.assert_array_equal(coco.rle_decode(both), mask_api.decode(both))
        _, counts = coco.rle_to_counts(ours)
        np.testing.assert_array_equal(
            coco.rle_decode({"size": list(mask.shape), "counts": counts.tolist()}), mask
        )


def test_rle_errors():
    with pytest.raises(ValueError, match="sum to 5 pixels"):
        coco.rle_decode({"size": [2, 3], "counts": [2, 3]})
    with pytest.raises(ValueError, match="'size' and 'counts'"):
        coco.rle_decode({"counts": "52"})
    with pytest.raises(ValueError, match="characters"):
        coco.rle_decode({"size": [2, 3], "counts": "6~"})
    with pytest.raises(ValueError, match=">= 0"):
        coco.rle_decode({"size": [2, 3], "counts": [7, -1]})
    with pytest.raises(TypeError, match="bool or integer"):
        coco.rle_encode(np.zeros((2, 2), np.float32))


# --------------------------------------------------------------------------- polygons


def _reference_polygon_mask(polygons, height, width):
    return mask_api.decode(mask_api.merge(mask_api.frPyObjects(polygons, height, width)))


def _random_polygons(rng, count):
    cases = []
    for trial in range(count):
        height, width = (int(v) for v in rng.integers(1, 48, 2))
        polygons = []
        for _ in range(int(rng.integers(1, 4))):
            points = int(rng.integers(3, 10))
            if trial % 3 == 0:
                xy = rng.uniform(-4, [width + 4, height + 4], (points, 2))
            elif trial % 3 == 1:
                xy = rng.integers(-1, [width + 2, height + 2], (points, 2)) + 0.5 * rng.integers(
                    0, 2, (points, 2)
                )
            else:
                xy = rng.uniform(0, [width, height]) + rng.uniform(-1.2, 1.2, (points, 2))
            polygons.append(xy.ravel().tolist())
        cases.append((polygons, height, width))
    return cases


def test_polygon_matches_pycocotools():
    handcrafted = [
        ([[1.2, 1.1, 1.9, 1.3, 1.4, 1.8]], 4, 4),  # tiny triangle
        ([[0.0, 0.0, 7.0, 0.0, 7.0, 5.0, 0.0, 5.0]], 5, 7),  # the whole image, on the border
        ([[-3.0, -2.0, 9.5, 1.0, 4.0, 8.0]], 5, 7),  # beyond the image
        ([[2.0, 1.0, 5.0, 1.0, 5.0, 4.0, 2.0, 4.0]], 6, 8),  # integer rectangle
        ([[0.5, 0.5, 3.5, 0.5, 2.0, 3.0], [2.5, 2.5, 6.5, 2.5, 6.0, 5.5, 2.5, 5.0]], 7, 8),
        ([[1.0, 1.0, 4.0, 1.0, 4.0, 4.0, 1.0, 4.0], [8.0, 2.0, 10.0, 2.0, 9.0, 6.0]], 8, 12),
        ([[3.0, 3.0, 3.0, 3.0, 3.0, 3.0]], 6, 6),  # degenerate: repeated vertices
        ([30.25, 10.5, 60.75, 12.0, 48.0, 40.5, 20.0, 33.0], 50, 70),  # one flat polygon
    ]
    for polygons, height, width in handcrafted + _random_polygons(np.random.default_rng(3), 400):
        reference = _reference_polygon_mask(
            polygons if isinstance(polygons[0], list) else [polygons], height, width
        )
        np.testing.assert_array_equal(coco.polygon_to_mask(polygons, height, width), reference)
        rle = coco.polygon_to_rle(polygons, height, width)
        merged = mask_api.merge(
            mask_api.frPyObjects(
                polygons if isinstance(polygons[0], list) else [polygons], height, width
            )
        )
        assert rle["counts"] == merged["counts"].decode("ascii")


def test_polygon_errors():
    with pytest.raises(ValueError, match="at least 3"):
        coco.polygon_to_mask([[1.0, 2.0, 3.0, 4.0]], 5, 5)
    with pytest.raises(ValueError, match="non-empty list"):
        coco.polygon_to_mask([], 5, 5)
    with pytest.raises(ValueError, match="height"):
        coco.polygon_to_mask([[1.0, 2.0, 3.0, 4.0, 5.0, 1.0]], -5, 5)


# --------------------------------------------------------------------------- read_coco


@pytest.fixture(scope="module")
def coco_file(tmp_path_factory, dsb_labels, isbi_labels):
    """A COCO file of dsb2018 (compressed RLE), ISBI (uncompressed RLE, polygons, a crowd)."""
    isbi = label(isbi_labels["00"] > 0, connectivity=1)
    annotations = coco.label_image_to_coco(dsb_labels, 11, category_id=7)
    isbi_annotations = coco.label_image_to_coco(
        isbi, 22, category_id=3, first_id=len(annotations) + 1
    )
    for annotation in isbi_annotations[::3]:  # uncompressed counts, as COCO crowds have
        _, counts = coco.rle_to_counts(annotation["segmentation"])
        annotation["segmentation"] = {"size": [512, 512], "counts": counts.tolist()}
    isbi_annotations[1]["iscrowd"] = 1
    annotations += isbi_annotations
    next_id = len(annotations) + 1
    annotations += [
        {
            "id": next_id,
            "image_id": 22,
            "category_id": 5,
            "iscrowd": 0,
            "segmentation": [
                [10.5, 20.0, 60.0, 25.5, 40.0, 70.0],
                [100.0, 0.0, 130.0, 0.0, 115.0, 9.4],
            ],
        },
        {
            "id": next_id + 1,
            "image_id": 11,
            "category_id": 5,
            "iscrowd": 0,
            "segmentation": [[505.0, 500.0, 512.0, 500.0, 512.0, 512.0, 503.2, 512.0]],
        },
    ]
    data = {
        "images": [
            {"id": 11, "file_name": "dsb.tif", "height": 512, "width": 512},
            {"id": 22, "file_name": "isbi00.png", "height": 512, "width": 512},
            {"id": 33, "file_name": "empty.png", "height": 40, "width": 30},
        ],
        "annotations": annotations,
        "categories": [
            {"id": 7, "name": "nucleus"},
            {"id": 3, "name": "neurite"},
            {"id": 5, "name": "polygon"},
        ],
    }
    path = tmp_path_factory.mktemp("coco") / "instances.json"
    path.write_text(json.dumps(data))
    return path


def test_read_coco_matches_pycocotools(coco_file, tmp_path):
    dataset, info = coco.read_coco(coco_file, tmp_path)
    assert info.class_names == ("background", "neurite", "polygon", "nucleus")
    assert info.category_to_class == {3: 1, 5: 2, 7: 3}
    assert info.num_classes == 4 and info.image_ids == (11, 22, 33)
    assert info.num_crowd == 1 and info.num_skipped == 0
    reference = COCO(str(coco_file))
    elements = list(dataset)
    assert [int(e["image_id"]) for e in elements] == [11, 22, 33]
    total = 0
    for element in elements:
        image_id = int(element["image_id"])
        file_name = reference.imgs[image_id]["file_name"]
        assert element["image_path"].numpy().decode() == str(tmp_path / file_name)
        anns = reference.loadAnns(reference.getAnnIds(imgIds=[image_id], iscrowd=None))
        total += len(anns)
        masks = element["masks"].numpy()
        height, width = reference.imgs[image_id]["height"], reference.imgs[image_id]["width"]
        assert masks.shape == (len(anns), height, width) and masks.dtype == np.uint8
        expected = np.stack([reference.annToMask(a) for a in anns]) if anns else masks
        np.testing.assert_array_equal(masks, expected)
        np.testing.assert_array_equal(
            element["boxes"].numpy(), instances.boxes_from_masks(expected).numpy()
        )
        np.testing.assert_array_equal(
            element["class_ids"].numpy(), [info.category_to_class[a["category_id"]] for a in anns]
        )
        np.testing.assert_array_equal(
            element["is_crowd"].numpy(), [bool(a["iscrowd"]) for a in anns]
        )
    assert total == info.num_annotations
    assert (elements[0]["class_ids"].numpy() == 3).sum() == 125  # dsb2018 nuclei


def test_read_coco_dsb_boxes(coco_file, dsb_labels):
    dataset, _ = coco.read_coco(coco_file, category_ids=[7])
    first = next(iter(dataset))
    assert first["image_path"].numpy() == b"dsb.tif"
    np.testing.assert_array_equal(first["boxes"].numpy(), _regionprops_boxes(dsb_labels))
    np.testing.assert_array_equal(first["class_ids"].numpy(), np.ones(125))


def test_read_coco_category_subset(coco_file):
    dataset, info = coco.read_coco(coco_file, category_ids=[5, 7])
    assert info.class_names == ("background", "polygon", "nucleus")
    assert info.category_to_class == {5: 1, 7: 2}
    elements = list(dataset)
    assert [len(e["class_ids"]) for e in elements] == [126, 1, 0]
    np.testing.assert_array_equal(elements[0]["class_ids"].numpy(), [2] * 125 + [1])
    assert info.num_skipped == 136  # the ISBI neurites (category 3), left out and counted
    with pytest.raises(ValueError, match="distinct ids"):
        coco.read_coco(coco_file, category_ids=[5, 8])


def _write(tmp_path, data):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(data))
    return path


def _small_file():
    return {
        "images": [{"id": 1, "file_name": "a.png", "height": 4, "width": 5}],
        "annotations": [
            {
                "id": 9,
                "image_id": 1,
                "category_id": 2,
                "iscrowd": 0,
                "segmentation": {"size": [4, 5], "counts": [3, 4, 13]},
            }
        ],
        "categories": [{"id": 2, "name": "thing"}],
    }


def test_read_coco_errors(tmp_path):
    dataset, info = coco.read_coco(_write(tmp_path, _small_file()))
    masks = next(iter(dataset))["masks"].numpy()
    np.testing.assert_array_equal(masks[0], coco.rle_decode({"size": [4, 5], "counts": [3, 4, 13]}))

    data = _small_file()
    data["annotations"][0]["image_id"] = 5
    with pytest.raises(ValueError, match="annotation id 9 refers to unknown image id 5"):
        coco.read_coco(_write(tmp_path, data))
    data = _small_file()
    data["annotations"][0]["segmentation"] = {"size": [5, 4], "counts": [3, 4, 13]}
    with pytest.raises(ValueError, match=r"size \[5, 4\] differs .* \[4, 5\]"):
        coco.read_coco(_write(tmp_path, data))
    data = _small_file()
    del data["images"][0]["height"]
    with pytest.raises(KeyError, match=r"an image lacks the key\(s\) \['height'\]"):
        coco.read_coco(_write(tmp_path, data))
    data = _small_file()
    del data["categories"]
    with pytest.raises(KeyError, match="'categories'"):
        coco.read_coco(_write(tmp_path, data))
    data = _small_file()
    data["annotations"][0]["category_id"] = 4
    with pytest.raises(ValueError, match="unknown category id 4"):
        coco.read_coco(_write(tmp_path, data))
    data = _small_file()
    data["annotations"][0]["segmentation"]["counts"] = [3, 4, 12]
    with pytest.raises(ValueError, match="annotation id 9 .* sum to 19 pixels"):
        coco.read_coco(_write(tmp_path, data))
    data = _small_file()
    data["annotations"][0]["segmentation"] = [[1.0, 1.0, 2.0, 2.0]]
    with pytest.raises(ValueError, match="annotation id 9 .* at least 3 points"):
        coco.read_coco(_write(tmp_path, data))


def test_masks_from_counts_graph():
    masks = _edge_masks()[6:7] * 2 + [np.zeros((31, 17), np.uint8)]
    counts = [coco.rle_to_counts(coco.rle_encode(m))[1] for m in masks]
    ragged = tf.ragged.constant([c.tolist() for c in counts], dtype=tf.int32)
    decoded = tf.function(lambda r: coco.masks_from_counts(r, 31, 17))(ragged)
    np.testing.assert_array_equal(decoded.numpy(), np.stack(masks))
    empty = coco.masks_from_counts(tf.ragged.constant([], dtype=tf.int32, ragged_rank=1), 3, 2)
    assert empty.shape == (0, 3, 2)
    with pytest.raises(tf.errors.InvalidArgumentError, match="does not sum"):
        coco.masks_from_counts(tf.ragged.constant([[1, 2]]), 3, 2)
