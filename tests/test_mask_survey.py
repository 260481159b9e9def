"""The survey of mask files and the class rules of kerasseg.data.survey, and the label check
inside kerasseg.data.segmentation_dataset."""

import json

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from kerasseg.data import MaskSurvey, check_labels, segmentation_dataset, survey_masks
from kerasseg.data.decode import error_text


def _folder(tmp_path, masks, name="masks"):
    """Write grey images and the given masks (uint8 or uint16 arrays) as PNG pairs."""
    images, folder = tmp_path / f"{name}_images", tmp_path / name
    images.mkdir()
    folder.mkdir()
    pairs = []
    for index, mask in enumerate(masks):
        image_path, mask_path = images / f"{index:02d}.png", folder / f"{index:02d}.png"
        Image.fromarray(np.full(mask.shape, 100, np.uint8)).save(image_path)
        Image.fromarray(mask).save(mask_path)
        pairs.append((str(image_path), str(mask_path)))
    return pairs


def test_counts_match_numpy_on_camvid(data_dir, tmp_path):
    masks = sorted((data_dir / "camvid" / "trainannot").glob("*.png"))[:12]
    survey = survey_masks(masks, progress=False, cache=tmp_path / "masks.json")
    values, counts = np.unique(
        np.concatenate([np.asarray(Image.open(p)).ravel() for p in masks]), return_counts=True
    )
    assert survey.counts == dict(zip(values.tolist(), counts.tolist(), strict=True))
    assert survey.files == 12
    for value in survey.values:
        holding = [str(p) for p in masks if value in np.asarray(Image.open(p))]
        assert survey.file_counts[value] == len(holding)
        assert survey.examples[value] == holding[:5]
    # The cache answers for the same files and is not trusted once one changes.
    cached = json.loads((tmp_path / "masks.json").read_text())
    cached["values"][0][1] += 1000  # a forged count shows whether the cache was used
    (tmp_path / "masks.json").write_text(json.dumps(cached))
    assert (
        survey_masks(masks, progress=False, cache=tmp_path / "masks.json").counts[survey.values[0]]
        == survey.counts[survey.values[0]] + 1000
    )
    copies = []
    for path in masks:
        copy = tmp_path / path.name
        copy.write_bytes(path.read_bytes())
        copies.append(copy)
    fresh = survey_masks(copies, progress=False, cache=tmp_path / "masks.json")
    assert fresh.counts == survey.counts


def test_class_rules(tmp_path):
    def survey(*value_sets):
        counts = {}
        for values in value_sets:
            for v in values:
                counts[v] = counts.get(v, 0) + 10
        files = {v: sum(v in s for s in value_sets) for v in counts}
        examples = {
            v: [f"m{i}.png" for i, s in enumerate(value_sets) if v in s][:5] for v in counts
        }
        return MaskSurvey(len(value_sets), counts, files, examples)

    assert survey({0, 1}).infer_classes() == (2, None, None)
    assert survey({0, 1, 2}, {0, 3}).infer_classes() == (4, None, None)
    classes, class_map, note = survey({0, 255}, {0}).infer_classes()
    assert (classes, class_map) == (2, {0: 0, 255: 1}) and "255 taken as class 1" in note
    assert survey({0, 1, 11}).infer_classes(ignore_label=11) == (2, None, None)
    with pytest.raises(ValueError, match=r"--class-map 0:0,128:1,255:2"):
        survey({0, 128, 255}).infer_classes()
    with pytest.raises(ValueError, match="only the value 0"):
        survey({0}, {0}).infer_classes()
    with pytest.raises(ValueError, match="look like images or instance labels"):
        survey(set(range(0, 256, 3))).infer_classes()
    # An explicit count: out-of-range values are named with the files holding them.
    with pytest.raises(ValueError, match=r"\{7\}.*7 in m1.png") as error:
        survey({0, 1}, {0, 1, 7}).check_classes(2)
    assert "m0.png" not in str(error.value)
    survey({0, 1, 255}).check_classes(2, ignore_label=255)
    with pytest.raises(ValueError, match="does not map"):
        survey({0, 128, 255}).check_classes(2, class_map={0: 0, 255: 1})
    with pytest.raises(ValueError, match="outside the 2 classes"):
        survey({0, 255}).check_classes(2, class_map={0: 0, 255: 2})
    # One rule for train and evaluate: a binary count with {0, v} maps v to 1.
    assert survey({0, 255}).resolve(2)[:2] == (2, {0: 0, 255: 1})
    assert survey({0, 1, 2}).resolve(3) == (3, None, None)
    assert survey({0, 128, 255}).resolve(None, {0: 0, 128: 1, 255: 2})[0] == 3
    with pytest.raises(ValueError, match=r"\{2\}"):
        survey({0, 1, 2}).resolve(2)
    line = survey({0, 255}, {0}).summary()
    assert line == "masks: 2 files, values {0: 67 %, 255: 33 %}"


def test_unreadable_mask_is_named(tmp_path):
    pairs = _folder(tmp_path, [np.zeros((8, 8), np.uint8)] * 2)
    broken = tmp_path / "masks" / "01.png"
    broken.write_bytes(broken.read_bytes()[:30])
    with pytest.raises(ValueError, match=r"truncated or corrupt PNG .*01\.png"):
        survey_masks(pairs, progress=False)


def test_pipeline_names_the_file_with_an_out_of_range_label(tmp_path):
    binary = np.zeros((16, 16), np.uint8)
    binary[4:8, 4:8] = 1
    seven = binary.copy()
    seven[0, 0] = 7
    pairs = _folder(tmp_path, [binary, seven, binary])
    dataset = segmentation_dataset(pairs, batch_size=1, num_classes=2)
    with pytest.raises(tf.errors.InvalidArgumentError) as error:
        list(dataset)
    assert error_text(error.value) == (
        f"mask {pairs[1][1]} holds values other than the class ids 0..1 (after any class map), "
        "whose pixels a loss would skip; values (up to 10): 7"
    )
    # With the value as the ignore label, or mapped by a class map, it passes.
    assert len(list(segmentation_dataset(pairs, batch_size=1, num_classes=2, ignore_label=7))) == 3
    mapped = segmentation_dataset(pairs, batch_size=3, num_classes=2, class_map={0: 0, 1: 1, 7: 0})
    ((images, masks),) = list(mapped)
    assert set(np.unique(masks.numpy())) == {0, 1}
    # A class map whose targets leave the classes is caught after the mapping.
    wrong = segmentation_dataset(pairs, batch_size=3, num_classes=2, class_map={0: 0, 1: 2, 7: 0})
    with pytest.raises(tf.errors.InvalidArgumentError) as error:
        list(wrong)
    assert error_text(error.value).endswith(
        "00.png holds values other than the class ids 0..1 "
        "(after any class map), whose pixels a loss would "
        "skip; values (up to 10): 2"
    )
    with pytest.raises(ValueError, match="num_classes"):
        segmentation_dataset(pairs, num_classes=0)


def test_check_labels_on_float_masks_and_eagerly():
    soft = tf.constant([[0.0, 0.5], [1.0, 1.0]])
    assert check_labels(soft, 2).numpy().tolist() == soft.numpy().tolist()
    with pytest.raises(tf.errors.InvalidArgumentError) as error:
        check_labels(tf.constant([0, 255, 1]), 2, source="a batch")
    assert error_text(error.value) == (
        "a batch holds values other than the class ids 0..1 (after any class map), whose pixels "
        "a loss would skip; values (up to 10): 255"
    )
    assert check_labels(tf.constant([0, 255, 1]), 2, ignore_label=255).shape == (3,)
