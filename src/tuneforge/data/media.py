"""Image files of multimodal rows: where they are, whether they can be read, and the size the model sees.

Paths in the data are relative to `media_dir` (default: dataset_dir), as in LLaMA-Factory, or absolute.
Hub datasets that embed images (a `{"bytes": ...}` cell) are written once to a content-addressed file
under $TUNEFORGE_HOME, so every row still refers to its image by path (the token cache stores paths).
Images are scaled, aspect kept, into [image_min_pixels, image_max_pixels] before the image processor.
"""

from __future__ import annotations

import hashlib
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tuneforge.data.conversation import DataError
from tuneforge.utils.paths import tuneforge_home

if TYPE_CHECKING:
    from PIL.Image import Image


def image_paths(value: Any, column: str, media_dir: str | Path, source: str) -> tuple[str, ...]:
    """The absolute paths of a row's `images` cell (a path, a list of paths, or datasets' `{"path"|"bytes"}`
    cells); a missing file or a URL is a `DataError` naming the row."""
    cells = value if isinstance(value, list) else [value]
    paths = []
    for i, cell in enumerate(cells):
        where = f"{source}: {column}[{i}]"
        if isinstance(cell, dict) and cell.get("bytes"):
            paths.append(str(stored_image(cell["bytes"])))
            continue
        name = cell.get("path") if isinstance(cell, dict) else cell
        if not isinstance(name, str) or not name:
            raise DataError(f"{where} should be an image file path, got {cell!r}", "media")
        if "://" in name:
            raise DataError(
                f"{where} is a URL ({name}); tuneforge reads images from disk only: download it and give the path "
                "(relative to media_dir, which defaults to dataset_dir)",
                "media",
            )
        path = Path(name).expanduser()
        path = path if path.is_absolute() else Path(media_dir) / path
        if not path.is_file():
            raise DataError(
                f"{where}: image file {path} does not exist (relative paths start at media_dir, default "
                "dataset_dir)",
                "media",
            )
        paths.append(str(path))
    return tuple(paths)


def stored_image(data: bytes) -> Path:
    """Image bytes (from a hub dataset or an API request) as a content-addressed file under $TUNEFORGE_HOME."""
    digest = hashlib.sha256(data).hexdigest()
    path = tuneforge_home() / "cache" / "media" / digest[:2] / digest
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f"{digest}.partial")
        partial.write_bytes(data)
        partial.replace(path)
    return path


def image_from_url(url: str) -> str:
    """The local path of an OpenAI `image_url`: a `data:` URL is stored, a `file://` URL names a file here;
    remote URLs are refused (ValueError, in a sentence), as the server never fetches from the network."""
    import base64
    import binascii
    from urllib.parse import unquote, urlparse

    if url.startswith("data:"):
        header, _, payload = url.partition(",")
        if not header.endswith(";base64"):
            raise ValueError("an image data: URL must be base64-encoded (data:image/png;base64,...)")
        try:
            return str(stored_image(base64.b64decode(payload, validate=True)))
        except binascii.Error:
            raise ValueError("the image data: URL is not valid base64") from None
    if url.startswith("file://"):
        path = Path(unquote(urlparse(url).path))
        if not path.is_file():
            raise ValueError(f"image {url}: no such file on the server")
        return str(path)
    raise ValueError(
        f"image URL {url[:60]} is not fetched (the server does not reach the network for images); send the image "
        "as a data: URL (base64) or a file:// path on the server"
    )


def scaled_size(width: int, height: int, max_pixels: int, min_pixels: int) -> tuple[int, int]:
    """(width, height) scaled by one factor so that width x height lies in [min_pixels, max_pixels]
    (LLaMA-Factory's rule: shrink above the maximum, grow below the minimum, round down)."""
    for limit, outside in (
        (max_pixels, width * height > max_pixels),
        (min_pixels, width * height < min_pixels),
    ):
        if outside:
            factor = math.sqrt(limit / (width * height))
            width, height = max(1, int(width * factor)), max(1, int(height * factor))
    return width, height


def image_size(path: str, source: str) -> tuple[int, int]:
    """(width, height) from the file's header; an unreadable file is a `DataError` naming the row."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            return image.size
    except (OSError, UnidentifiedImageError) as err:
        raise DataError(
            f"{source}: image {path} cannot be read ({err}); replace or remove it", "media"
        ) from None


def load_image(path: str, max_pixels: int, min_pixels: int) -> Image:
    """The image as RGB, scaled into the pixel limits (what the image processor receives)."""
    from PIL import Image

    with Image.open(path) as opened:
        image = opened.convert("RGB")
    size = scaled_size(*image.size, max_pixels, min_pixels)
    return image if size == image.size else image.resize(size)
