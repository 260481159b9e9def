"""kerasseg.html_page: plain text is escaped, tables keep their shape, pictures round-trip."""

import base64
import io
import re

import numpy as np
import pytest
from PIL import Image

from kerasseg import html_page

PNG_SOURCE = re.compile(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"')


def _decoded(block):
    """The pictures of an HTML block, decoded from their data: URLs with Pillow."""
    return [
        np.asarray(Image.open(io.BytesIO(base64.b64decode(data))))
        for data in PNG_SOURCE.findall(block)
    ]


def test_text_is_escaped_everywhere():
    hostile = '<script>alert("x")</script> & "quoted"'
    blocks = [
        html_page.heading(hostile),
        html_page.paragraph(hostile),
        html_page.table([hostile, "b"], [[hostile, 1.5]], caption=hostile),
        html_page.image(np.zeros((2, 2), np.uint8), hostile, caption=hostile),
    ]
    text = html_page.page(hostile, blocks)
    assert "<script>" not in text and 'alert("x")' not in text
    # title, h1, heading, paragraph, th, td, table caption, alt and figcaption
    assert text.count("&lt;script&gt;") == 9
    assert (
        'alt="&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; &quot;quoted&quot;"' in text
    )
    assert "<td>1.5</td>" in html_page.table(["a"], [[1.5]])
    assert "<td>n/a</td>" in html_page.table(["a"], [[None]])


def test_table_rows_must_fit_the_header():
    with pytest.raises(ValueError, match="table row 1 has 1 cells for 2 columns"):
        html_page.table(["a", "b"], [[1, 2], [3]])
    with pytest.raises(ValueError, match="`level` must be 1, 2 or 3; got 4"):
        html_page.heading("x", level=4)


@pytest.mark.parametrize("shape", [(5, 7), (5, 7, 3), (5, 7, 4)])
def test_embedded_png_decodes_to_the_same_pixels(shape):
    pixels = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
    block = html_page.image(pixels, "noise", caption="c", width=120)
    assert 'width="120"' in block and "<figcaption>c</figcaption>" in block
    (decoded,) = _decoded(block)
    np.testing.assert_array_equal(decoded, pixels)


@pytest.mark.parametrize(
    "pixels", [np.zeros((4, 4), np.float32), np.zeros((0, 4), np.uint8), np.zeros(4, np.uint8)]
)
def test_pictures_must_be_non_empty_uint8_images(pixels):
    with pytest.raises(ValueError, match="non-empty uint8"):
        html_page.image(pixels, "x")


def test_matplotlib_figure_is_embedded_at_its_size(tmp_path):
    from matplotlib.figure import Figure

    chart = Figure(figsize=(3, 2))
    chart.add_subplot().plot([0, 1], [1, 0])
    (decoded,) = _decoded(html_page.figure(chart, "a line", dpi=50))
    assert decoded.shape[:2] == (100, 150)  # (2 in x 50 dpi, 3 in x 50 dpi)
    path = html_page.write_page(tmp_path / "page.html", "T", [html_page.paragraph("p")])
    assert path.read_text(encoding="utf-8") == html_page.page("T", [html_page.paragraph("p")])
    assert [p.name for p in tmp_path.iterdir()] == ["page.html"]  # no temporary left
