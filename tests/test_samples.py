import numpy as np

from kerasseg import datasets, samples


def test_street_mask_holds_camvid_ids_in_a_street_layout():
    image, mask = samples.street()
    assert image.shape == (360, 480, 3) and mask.shape == (360, 480)
    names = datasets.DATASETS["camvid"].class_names
    present = {names[i] for i in np.unique(mask)}
    assert present == {"sky", "building", "pole", "road", "pavement", "tree", "car"}
    assert mask[-1, 240] == names.index("road")  # the road runs out at the bottom centre
    assert mask[0, 240] in (names.index("sky"), names.index("building"))
    assert mask[300, 10] == mask[300, 470] == names.index("pavement")  # beside the road
    assert (mask[:150] == names.index("road")).sum() == 0  # no road above the horizon
    sky = mask == names.index("sky")
    assert sky.any() and np.flatnonzero(sky.any(axis=1)).max() < 0.45 * 360
    # The sky is bright and the road dark, as a camera sees a street by day.
    assert image[sky].mean() > 200 and image[mask == names.index("road")].mean() < 110


def test_street_is_deterministic_and_seeded():
    first, mask = samples.street()
    again, mask_again = samples.load_sample("street")
    other, _ = samples.street(seed=4)
    assert np.array_equal(first, again) and np.array_equal(mask, mask_again)
    assert not np.array_equal(first, other)
