"""tf.data input pipelines for segmentation: sources, decoding, transforms, augmentation.

TensorFlow lives here (and in export); the models stay Keras-only.

    pairs = kerasseg.data.paired_files("images/", "masks/")
    dataset = kerasseg.data.segmentation_dataset(
        pairs, image_size=(256, 256), augment=kerasseg.data.JointAugment(horizontal_flip=True),
        preprocessing="unet", shuffle=True, seed=0, cache=True)
"""

from kerasseg.data.augment import JointAugment, seeds_dataset
from kerasseg.data.coco import read_coco, rle_decode, rle_encode
from kerasseg.data.decode import (
    decode_image,
    decode_mask,
    decode_pair,
    load_pair,
    read_image,
    read_mask,
)
from kerasseg.data.instance_pipeline import instance_dataset
from kerasseg.data.instances import (
    boxes_from_masks,
    instances_from_binary_mask,
    instances_from_label_image,
    to_padded,
)
from kerasseg.data.pipeline import augment_instances, segmentation_dataset
from kerasseg.data.sources import file_pairs, paired_files
from kerasseg.data.survey import MaskSurvey, survey_masks
from kerasseg.data.tfrecord import read_tfrecords, write_tfrecords
from kerasseg.data.transforms import check_labels, pad_to_multiple, remap_classes, resize

__all__ = [
    "JointAugment",
    "MaskSurvey",
    "augment_instances",
    "boxes_from_masks",
    "check_labels",
    "decode_image",
    "decode_mask",
    "decode_pair",
    "file_pairs",
    "instance_dataset",
    "instances_from_binary_mask",
    "instances_from_label_image",
    "load_pair",
    "paired_files",
    "pad_to_multiple",
    "read_coco",
    "read_image",
    "read_mask",
    "read_tfrecords",
    "remap_classes",
    "resize",
    "rle_decode",
    "rle_encode",
    "seeds_dataset",
    "segmentation_dataset",
    "survey_masks",
    "to_padded",
    "write_tfrecords",
]
