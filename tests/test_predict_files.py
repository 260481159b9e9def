"""Ordinary image files into `predict_file` and `kerasseg predict`: folders, globs, RGBA,
grey/RGB, 16-bit files, large images (tiled or refused)."""

import cv2
import numpy as np
import pytest
import skimage.color
from PIL import Image

import kerasseg
from kerasseg import cli
from kerasseg.inference.files import choose_tile, file_bit_depth, predict_file
from kerasseg.inference.inputs import InputContract, InputNote, fit_to_model, input_contract

TINY = ["--model", "unet", "--model-arg", "base_filters=4", "--model-arg", "depth=2"]
RGB_8BIT = InputContract(channels=3, eight_bit=True)
GREY_8BIT = InputContract(channels=1, eight_bit=True)


def _rng():
    return np.random.default_rng(0)


# ----------------------------------------------------------------------------- fit_to_model


def test_constant_alpha_is_dropped_with_a_note():
    rgba = _rng().integers(0, 256, (8, 9, 4), dtype=np.uint8)
    rgba[..., 3] = 255
    image, notes = fit_to_model(rgba, RGB_8BIT)
    np.testing.assert_array_equal(image, rgba[..., :3])
    assert notes == ["the image's alpha channel is constant: dropped"]


def test_transparent_alpha_is_refused_unless_flattened_over_white():
    rgba = _rng().integers(0, 256, (8, 9, 4), dtype=np.uint8)
    with pytest.raises(ValueError, match="transparent alpha channel .*--flatten-alpha"):
        fit_to_model(rgba, RGB_8BIT)
    image, notes = fit_to_model(rgba, RGB_8BIT, flatten_alpha=True)
    # Pillow's alpha_composite over an opaque white background is the reference.
    white = Image.new("RGBA", (9, 8), (255, 255, 255, 255))
    expected = np.asarray(Image.alpha_composite(white, Image.fromarray(rgba)))[..., :3]
    np.testing.assert_allclose(image, expected, atol=1.0)
    assert "over white" in notes[0]


def test_grey_and_rgb_are_matched_to_the_model_channels():
    grey = _rng().integers(0, 256, (6, 7, 1), dtype=np.uint8)
    image, notes = fit_to_model(grey, RGB_8BIT)
    np.testing.assert_array_equal(image, np.repeat(grey, 3, axis=-1))
    assert notes == ["grey image repeated to RGB for a 3-channel model"]
    rgb = _rng().integers(0, 256, (6, 7, 3), dtype=np.uint8)
    image, notes = fit_to_model(rgb, GREY_8BIT)
    # scikit-image's rgb2gray (BT.709) on [0, 1], back on the stored 0..255 scale.
    np.testing.assert_allclose(image[..., 0], skimage.color.rgb2gray(rgb) * 255, atol=1e-3)
    assert "BT.709" in notes[0]
    with pytest.raises(ValueError, match="has 5 channels and the model takes 3"):
        fit_to_model(np.zeros((4, 4, 5), np.uint8), InputContract(3, False))


def test_sixteen_bit_images_need_a_rescale_rule_for_8_bit_models():
    deep = np.array([[[0], [1000], [65535]]], np.uint16)
    with pytest.raises(ValueError, match="16-bit image for a model that takes 8-bit.*--rescale"):
        fit_to_model(deep, GREY_8BIT, bits=16)
    full, _ = fit_to_model(deep, GREY_8BIT, bits=16, rescale="full")
    np.testing.assert_allclose(full[0, :, 0], [0, 1000 * 255 / 65535, 255], rtol=1e-6)
    shifted = np.array([[[100], [1100], [40100]]], np.uint16)
    stretched, _ = fit_to_model(shifted, GREY_8BIT, bits=16, rescale="minmax")
    np.testing.assert_allclose(stretched[0, :, 0], [0, 1000 * 255 / 40000, 255], rtol=1e-5)
    kept, notes = fit_to_model(deep, GREY_8BIT, bits=16, rescale="keep")
    np.testing.assert_array_equal(kept, deep)
    assert "values as stored" in notes[0]
    with pytest.raises(ValueError, match="`rescale` must be one of"):
        fit_to_model(deep, GREY_8BIT, bits=16, rescale="half")
    # A model without 0..255 normalisation takes the values as stored, with a note.
    raw, notes = fit_to_model(deep, InputContract(1, False), bits=16)
    np.testing.assert_array_equal(raw, deep)
    assert "values as stored (0..65535)" in notes[0]


def test_input_contract_of_presets_and_plain_models():
    assert input_contract(kerasseg.load("unet_isbi2012")) == InputContract(1, True)
    plain = kerasseg.load("unet", base_filters=4, depth=2, input_shape=(None, None, 3))
    assert input_contract(plain) == InputContract(3, False)


# ----------------------------------------------------------------------------- files


def test_file_bit_depth_reads_the_header(tmp_path):
    cv2.imwrite(str(tmp_path / "rgb16.png"), np.full((4, 5, 3), 40000, np.uint16))
    cv2.imwrite(str(tmp_path / "grey8.png"), np.zeros((4, 5), np.uint8))
    cv2.imwrite(str(tmp_path / "grey16.tif"), np.full((4, 5), 300, np.uint16))
    cv2.imwrite(str(tmp_path / "rgb8.jpg"), np.zeros((4, 5, 3), np.uint8))
    depths = {
        name: file_bit_depth(tmp_path / name) for name in sorted(p.name for p in tmp_path.iterdir())
    }
    assert depths == {"grey16.tif": 16, "grey8.png": 8, "rgb16.png": 16, "rgb8.jpg": 8}


def test_choose_tile():
    assert choose_tile(100, 100, "auto", 100 * 100) is None
    assert choose_tile(101, 100, "auto", 100 * 100) == 512
    assert choose_tile(10, 10, 64, 100) == 64
    assert choose_tile(10**5, 10**5, None, None) is None
    with pytest.raises(
        ValueError, match=r"8000x8000 = 64,000,000 pixels, above max_pixels = 4,194,304"
    ):
        choose_tile(8000, 8000, None, 2048 * 2048)


def test_predict_file_fits_an_rgba_file_to_a_grey_preset(tmp_path):
    model = kerasseg.load("unet_isbi2012")
    grey = _rng().integers(0, 256, (64, 64), dtype=np.uint8)
    rgba = np.dstack([grey, grey, grey, np.full_like(grey, 255)])
    Image.fromarray(rgba).save(tmp_path / "slice.png")
    Image.fromarray(grey).save(tmp_path / "grey.png")
    with pytest.warns(InputNote, match="alpha channel is constant"):
        from_rgba = predict_file(model, tmp_path / "slice.png", tmp_path / "a.png")
    from_grey = predict_file(model, tmp_path / "grey.png", tmp_path / "b.png")
    np.testing.assert_array_equal(from_rgba, from_grey)


# ----------------------------------------------------------------------------- the CLI


def _write_images(folder, count, size=(32, 40), mode="L"):
    folder.mkdir(parents=True, exist_ok=True)
    rng = _rng()
    for index in range(count):
        shape = size if mode == "L" else (*size, len(mode))
        pixels = rng.integers(0, 256, shape, dtype=np.uint8)
        if mode == "RGBA":
            pixels[..., 3] = 255
        Image.fromarray(pixels, mode).save(folder / f"im{index}.png")


def test_cli_predicts_folders_and_globs_with_a_summary(tmp_path, capsys):
    _write_images(tmp_path / "a", 3)
    _write_images(tmp_path / "b" / "deep", 2, mode="RGBA")
    (tmp_path / "a" / "notes.txt").write_text("not an image")
    out = tmp_path / "out"
    assert cli.main(["predict", *TINY, str(tmp_path / "a"), "--out", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["im0.png", "im1.png", "im2.png"]
    assert "3 image(s) ->" in capsys.readouterr().err
    pattern = str(tmp_path / "b" / "**" / "*.png")
    out2 = tmp_path / "out2"
    assert cli.main(["predict", *TINY, pattern, "--out", str(out2)]) == 0
    err = capsys.readouterr().err
    assert sorted(p.name for p in out2.iterdir()) == ["im0.png", "im1.png"]
    # Two RGBA files, one note.
    assert err.count("alpha channel is constant: dropped") == 1


def test_cli_refuses_unusable_inputs_in_one_line(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    deep = tmp_path / "deep.png"
    cv2.imwrite(str(deep), np.full((64, 64), 40000, np.uint16))
    cases = [
        ([str(tmp_path / "empty")], "holds no image files"),
        ([str(tmp_path / "nothing*.png")], "no file matches"),
        ([str(deep), "--model", "unet_isbi2012"], "16-bit image for a model that takes 8-bit"),
        (
            [str(deep), "--model", "unet_isbi2012", "--rescale", "full", "--no-tile"]
            + ["--max-pixels", "100"],
            "tiling is off",
        ),
        ([str(deep), *TINY, "--tile", "64", "--no-tile"], "contradict"),
        ([str(deep), *TINY, "--overlap", "1"], "--overlap must be"),
    ]
    for arguments, message in cases:
        if "--model" not in arguments:
            arguments = [*arguments, *TINY]
        status = cli.main(["predict", *arguments, "--out", str(tmp_path / "out")])
        err = capsys.readouterr().err
        assert status == 2, (arguments, err)
        assert message in err, (arguments, err)
        assert len(err.strip().splitlines()) == 1, err
