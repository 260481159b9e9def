"""Static, self-contained HTML pages: one file, inline CSS, pictures embedded as PNG data,
no scripts and no network, so a page opens the same from a disk, an archive or a CI artefact.

    parts = [heading("Evaluation"), table(["class", "IoU"], rows), image(picture, "overlay")]
    write_page("report/index.html", "Evaluation of unet_camvid", parts)

Every text given is HTML-escaped here; callers pass plain text, never markup.
"""

import base64
import html
import io

import numpy as np

from kerasseg import files

__all__ = ["figure", "heading", "image", "page", "paragraph", "table", "write_page"]

_STYLE = """
body { font-family: sans-serif; margin: 2em auto; max-width: 1200px; color: #222; }
h1 { font-size: 1.6em; } h2 { font-size: 1.25em; margin-top: 1.6em; }
table { border-collapse: collapse; margin: 0.6em 0; }
th, td { border: 1px solid #bbb; padding: 0.25em 0.6em; text-align: right; }
th:first-child, td:first-child { text-align: left; }
th { background: #eee; }
figure { display: inline-block; margin: 0.4em 0.8em 0.8em 0; vertical-align: top; }
figcaption { font-size: 0.9em; color: #444; max-width: 100%; }
img { image-rendering: pixelated; max-width: 100%; }
"""


def _png_base64(pixels):
    """Base64 text of a uint8 (H, W), (H, W, 3) or (H, W, 4) array encoded as PNG."""
    from PIL import Image  # Pillow: the PNG encoder

    pixels = np.asarray(pixels)
    if pixels.dtype != np.uint8 or pixels.ndim not in (2, 3) or 0 in pixels.shape:
        raise ValueError(
            f"html_page: a picture must be a non-empty uint8 (H, W[, 3 or 4]) array; got "
            f"dtype {pixels.dtype} and shape {pixels.shape}."
        )
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _figure_block(data, alt, caption, width):
    size = "" if width is None else f' width="{int(width)}"'
    text = html.escape(alt, quote=True)
    block = f'<figure><img src="data:image/png;base64,{data}" alt="{text}"{size}>'
    if caption:
        block += f"<figcaption>{html.escape(caption)}</figcaption>"
    return block + "</figure>"


def image(pixels, alt, *, caption=None, width=None):
    """An embedded picture with its alternative text (and an optional caption).

    Args:
        pixels: uint8 (H, W) grey, (H, W, 3) RGB or (H, W, 4) RGBA array.
        alt: plain text describing the picture (shown when it cannot be).
        caption: optional plain text shown below it.
        width: optional display width in CSS pixels (the picture keeps its own pixels).
    """
    return _figure_block(_png_base64(pixels), alt, caption, width)


def figure(chart, alt, *, caption=None, dpi=100):
    """An embedded matplotlib `Figure` (drawn with its own Agg canvas, as PNG)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(chart)
    canvas.draw()
    buffer = io.BytesIO()
    chart.savefig(buffer, format="png", dpi=dpi)
    data = base64.b64encode(buffer.getvalue()).decode("ascii")
    return _figure_block(data, alt, caption, None)


def heading(text, level=2):
    """An `<h1>`..`<h3>` heading of plain text."""
    if level not in (1, 2, 3):
        raise ValueError(f"html_page: `level` must be 1, 2 or 3; got {level!r}.")
    return f"<h{level}>{html.escape(text)}</h{level}>"


def paragraph(text):
    """A paragraph of plain text."""
    return f"<p>{html.escape(text)}</p>"


def table(header, rows, *, caption=None):
    """A table of plain-text cells (numbers are written with `str`; None as "n/a").

    Args:
        header: the column titles.
        rows: sequences of cells, each as long as `header`.
        caption: optional plain-text caption above the table.
    """
    header = [str(cell) for cell in header]
    lines = ["<table>"]
    if caption:
        lines.append(f"<caption>{html.escape(caption)}</caption>")
    lines.append("<tr>" + "".join(f"<th>{html.escape(cell)}</th>" for cell in header) + "</tr>")
    for number, row in enumerate(rows):
        row = ["n/a" if cell is None else str(cell) for cell in row]
        if len(row) != len(header):
            raise ValueError(
                f"html_page: table row {number} has {len(row)} cells for {len(header)} columns."
            )
        lines.append("<tr>" + "".join(f"<td>{html.escape(cell)}</td>" for cell in row) + "</tr>")
    return "\n".join(lines + ["</table>"])


def page(title, parts):
    """The text of a whole page: `title` (plain text) and the blocks made by this module."""
    body = "\n".join(parts)
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{html.escape(title)}</title>\n<style>{_STYLE}</style>\n</head>\n"
        f"<body>\n<h1>{html.escape(title)}</h1>\n{body}\n</body>\n</html>\n"
    )


def write_page(path, title, parts):
    """Write `page(title, parts)` to `path` atomically (UTF-8); returns the path."""
    with files.atomic_path(path) as temporary:
        with open(temporary, "w", encoding="utf-8") as handle:
            handle.write(page(title, parts))
    return path
