"""Image, video and audio files of multimodal rows: where they are, whether they can be read, and what the
model sees of them.

Paths in the data are relative to `media_dir` (default: dataset_dir), as in LLaMA-Factory, or absolute.
Hub datasets that embed images (a `{"bytes": ...}` cell) are written once to a content-addressed file
under $TUNEFORGE_HOME, so every row still refers to its image by path (the token cache stores paths).
Images are scaled, aspect kept, into [image_min_pixels, image_max_pixels] before the image processor.

A row keeps its media as one tuple of references in placeholder order: an image is its path, a video is
`video:` + a JSON list (one video file, or the frame images of a pre-sampled video, as LLaMA-Factory
accepts), an audio file is `audio:` + its path. Video and audio files are decoded with PyAV (FFmpeg):
frames are sampled at `video_fps`, at most `video_maxlen`, evenly over the video; audio is mixed to mono
and resampled to `audio_sampling_rate`.
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


KINDS = ("image", "video", "audio")
PLACEHOLDERS = {"image": "<image>", "video": "<video>", "audio": "<audio>"}  # each kind's mark in a message


def image_paths(
    value: Any, column: str, media_dir: str | Path, source: str, kind: str = "image"
) -> tuple[str, ...]:
    """The absolute paths of a row's `images` (or `audios`) cell (a path, a list of paths, or datasets'
    `{"path"|"bytes"}` cells); a missing file or a URL is a `DataError` naming the row."""
    cells = value if isinstance(value, list) else [value]
    return tuple(
        _media_path(cell, f"{source}: {column}[{i}]", media_dir, kind) for i, cell in enumerate(cells)
    )


def _media_path(cell: Any, where: str, media_dir: str | Path, kind: str) -> str:
    if isinstance(cell, dict) and cell.get("bytes"):
        return str(stored_image(cell["bytes"]))
    name = cell.get("path") if isinstance(cell, dict) else cell
    if not isinstance(name, str) or not name:
        raise DataError(f"{where} should be an {kind} file path, got {cell!r}", "media")
    if "://" in name:
        raise DataError(
            f"{where} is a URL ({name}); tuneforge reads {kind}s from disk only: download it and give the path "
            "(relative to media_dir, which defaults to dataset_dir)",
            "media",
        )
    path = Path(name).expanduser()
    path = path if path.is_absolute() else Path(media_dir) / path
    if not path.is_file():
        raise DataError(
            f"{where}: {kind} file {path} does not exist (relative paths start at media_dir, default dataset_dir)",
            "media",
        )
    return str(path)


def media_refs(
    row: dict[str, Any], columns: dict[str, str], media_dir: str | Path, source: str
) -> dict[str, list]:
    """A row's media by kind, as references (see the module's docstring), each list in placeholder order."""
    import json

    refs: dict[str, list] = {kind: [] for kind in KINDS}
    for kind in KINDS:
        column = columns.get(f"{kind}s")
        if not column or not row.get(column):
            continue
        if kind == "image":
            refs[kind] = list(image_paths(row[column], column, media_dir, source))
        elif kind == "audio":
            refs[kind] = [f"audio:{p}" for p in image_paths(row[column], column, media_dir, source, "audio")]
        else:
            cells = row[column] if isinstance(row[column], list) else [row[column]]
            for i, cell in enumerate(cells):
                where = f"{source}: {column}[{i}]"
                frames = cell if isinstance(cell, list) else [cell]  # a list: the frames of one video
                if not frames:
                    raise DataError(f"{where} is an empty list of frames", "media")
                kinds = "image" if isinstance(cell, list) else "video"
                paths = [_media_path(f, f"{where}", media_dir, kinds) for f in frames]
                refs[kind].append("video:" + json.dumps(paths, ensure_ascii=False))
    return refs


def media_ref(kind: str, path: str) -> str:
    """The reference of one file of this kind ("image", "video" or "audio")."""
    import json

    return {"image": path, "video": "video:" + json.dumps([path]), "audio": "audio:" + path}[kind]


def kind_of(ref: str) -> str:
    """ "image", "video" or "audio" for a media reference."""
    head = ref.split(":", 1)[0]
    return head if head in ("video", "audio") else "image"


def video_files(ref: str) -> list[str]:
    """The video file, or the frame images, of a `video:` reference."""
    import json

    return json.loads(ref.split(":", 1)[1])


def audio_file(ref: str) -> str:
    return ref.split(":", 1)[1]


def _av() -> Any:
    try:
        import av
    except ImportError:
        raise DataError(
            "reading video and audio files needs PyAV (FFmpeg): pip install 'tuneforge[media]' (or pip install av)",
            "media",
        ) from None
    return av


def video_sampling(
    ref: str, fps: float, maxlen: int, source: str
) -> tuple[list[int] | None, float, int, int]:
    """(frame indices to sample, sampled frames per second, width, height) of a video, from its header only.
    Frame lists are taken whole (indices None, `fps` as given). LLaMA-Factory's rule: floor(duration x fps)
    frames, at least 1, at most `maxlen` and the video's frame count, evenly spaced from first to last."""
    files = video_files(ref)
    if len(files) > 1 or not _is_video_file(files[0]):
        width, height = image_size(files[0], source)
        return None, fps, width, height
    av = _av()
    try:
        with av.open(files[0]) as container:
            stream = next((s for s in container.streams if s.type == "video"), None)
            if stream is None:
                raise DataError(f"{source}: {files[0]} has no video stream", "media")
            total = stream.frames or _count_frames(container, stream)
            duration = (
                float(stream.duration * stream.time_base)
                if stream.duration
                else total / float(stream.average_rate or fps)
            )
            width, height = stream.codec_context.width, stream.codec_context.height
    except (av.error.FFmpegError, OSError) as err:
        raise DataError(
            f"{source}: video {files[0]} cannot be read ({err}); replace or remove it", "media"
        ) from None
    count = min(total, maxlen, max(1, math.floor(duration * fps)))
    indices = [int(i) for i in _linspace(0, total - 1, count)]
    sampled_fps = count / duration if duration > 0 else fps
    return indices, sampled_fps, width, height


def _is_video_file(path: str) -> bool:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path):
            return False
    except (OSError, UnidentifiedImageError):
        return True


def _count_frames(container: Any, stream: Any) -> int:
    count = sum(1 for _ in container.demux(stream) if _.size)
    container.seek(0)
    return count


def _linspace(start: float, stop: float, count: int) -> list[float]:
    import numpy as np

    return np.linspace(start, stop, count).astype(np.int32).tolist()


def video_frames(ref: str, fps: float, maxlen: int, max_pixels: int, min_pixels: int) -> list[Image]:
    """The sampled frames of a video as RGB images scaled into the pixel limits."""
    indices, _, _, _ = video_sampling(ref, fps, maxlen, ref)
    files = video_files(ref)
    if indices is None:
        return [load_image(p, max_pixels, min_pixels) for p in files]
    wanted = set(indices)
    frames = []
    with _av().open(files[0]) as container:
        stream = next(s for s in container.streams if s.type == "video")
        for i, frame in enumerate(container.decode(stream)):
            if i in wanted:
                frames.append(_scaled(frame.to_image().convert("RGB"), max_pixels, min_pixels))
            if i >= indices[-1]:
                break
    return frames


def load_audio(path: str, sampling_rate: int, source: str = "") -> Any:
    """The audio as a float32 mono numpy array at `sampling_rate` (FFmpeg's resampler); an unreadable file is
    a `DataError` naming the row."""
    import numpy as np

    av = _av()
    try:
        with av.open(path) as container:
            stream = next((s for s in container.streams if s.type == "audio"), None)
            if stream is None:
                raise DataError(f"{source}: {path} has no audio stream", "media")
            resampler = av.AudioResampler(format="flt", layout="mono", rate=sampling_rate)
            chunks = [
                out.to_ndarray().reshape(-1)
                for frame in container.decode(stream)
                for out in resampler.resample(frame)
            ]
            chunks += [out.to_ndarray().reshape(-1) for out in resampler.resample(None)]
    except (av.error.FFmpegError, OSError) as err:
        raise DataError(
            f"{source}: audio {path} cannot be read ({err}); replace or remove it", "media"
        ) from None
    return np.concatenate(chunks).astype(np.float32) if chunks else np.zeros(0, dtype=np.float32)


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


def image_from_url(url: str, kind: str = "image") -> str:
    """The local path of an OpenAI `image_url`: a `data:` URL is stored, a `file://` URL names a file here;
    remote URLs are refused (ValueError, in a sentence), as the server never fetches from the network."""
    import base64
    import binascii
    from urllib.parse import unquote, urlparse

    if url.startswith("data:"):
        header, _, payload = url.partition(",")
        if not header.endswith(";base64"):
            article = "an" if kind[0] in "aeiou" else "a"
            raise ValueError(
                f"{article} {kind} data: URL must be base64-encoded (data:{kind}/...;base64,...)"
            )
        try:
            return str(stored_image(base64.b64decode(payload, validate=True)))
        except binascii.Error:
            raise ValueError(f"the {kind} data: URL is not valid base64") from None
    if url.startswith("file://"):
        path = Path(unquote(urlparse(url).path))
        if not path.is_file():
            raise ValueError(f"{kind} {url}: no such file on the server")
        return str(path)
    raise ValueError(
        f"{kind} URL {url[:60]} is not fetched (the server does not reach the network for media); send the {kind} "
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
    return _scaled(image, max_pixels, min_pixels)


def _scaled(image: Image, max_pixels: int, min_pixels: int) -> Image:
    size = scaled_size(*image.size, max_pixels, min_pixels)
    return image if size == image.size else image.resize(size)
