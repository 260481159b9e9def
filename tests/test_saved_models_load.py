"""`.keras` files saved before the package's layout changed still load and predict the same.

The fixtures in tests/fixtures/saved_before_layout/ were saved by kerasseg 0.1.0 as it was at
commit 0908378 (classical layers in `kerasseg.layers`, `ImagePreprocessing` in
`kerasseg.layers.preprocessing`), with their outputs on fixed inputs. Keras records each
class by its registered name ("kerasseg>OtsuThreshold"), which the move must keep.
"""

from pathlib import Path

import keras
import numpy as np
import pytest

import kerasseg  # noqa: F401 (registers the serializable classes)

FIXTURES = Path(__file__).parent / "fixtures" / "saved_before_layout"


@pytest.mark.parametrize("name", ["unet_tiny", "otsu", "canny", "kmeans"])
def test_a_model_saved_before_the_layout_change_loads_and_predicts_the_same(name):
    expected = np.load(FIXTURES / "expected.npz")
    model = keras.saving.load_model(FIXTURES / f"{name}.keras")
    outputs = model.predict(expected[f"{name}/input"], verbose=0)
    outputs = outputs if isinstance(outputs, dict) else {"output": outputs}
    keys = sorted(key.split("/", 1)[1] for key in expected.files if key.startswith(f"{name}/"))
    assert sorted(outputs) == [key for key in keys if key != "input"]
    for key, value in outputs.items():
        np.testing.assert_allclose(np.asarray(value), expected[f"{name}/{key}"], atol=1e-5)
