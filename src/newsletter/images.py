"""The images of an issue as readers' mail clients load them: re-encoded with Pillow, at most 1200 px wide
(twice the 600 px column, for sharp phones), upright, and without EXIF (a phone photo's metadata tells every
reader where it was taken). Their published sizes give each <img> its width and height.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from .errors import IssueError
from .files import atomic_path

MAX_WIDTH = 1200
COLUMN_WIDTH = 552  # the 600 px email minus the image's 24 px padding either side
JPEG_QUALITY = 82
HEAVY_BYTES = 1024 * 1024  # `check` warns above this, after re-encoding
RASTER_SUFFIXES = (".jpg", ".jpeg", ".png", ".gif", ".webp")  # re-encoded (resized, EXIF dropped)
COPIED_SUFFIXES = (".svg", ".avif")  # published as they are
IMAGE_SUFFIXES = RASTER_SUFFIXES + COPIED_SUFFIXES
_ROTATED = {5, 6, 7, 8}  # EXIF orientations that swap width and height
_ORIENTATION = 0x0112


@dataclass(frozen=True)
class Published:
    """One image as published: its size in pixels, and the size it is shown at in the email."""

    width: int
    height: int

    @property
    def display(self) -> tuple[int, int]:
        """(width, height) in the column: never wider than the column, never enlarged."""
        w = min(self.width, COLUMN_WIDTH)
        return w, max(1, round(self.height * w / self.width))


def _scaled(width: int, height: int) -> Published:
    if width > MAX_WIDTH:
        return Published(MAX_WIDTH, max(1, round(height * MAX_WIDTH / width)))
    return Published(width, height)


def published_size(path: Path) -> Published:
    """The size `publish` gives this image, read from its header (no pixels decoded)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            width, height = im.size
            if im.getexif().get(_ORIENTATION) in _ROTATED:
                width, height = height, width
    except (UnidentifiedImageError, OSError) as exc:
        raise IssueError(f"not an image that can be read ({exc.__class__.__name__})", path=path) from None
    return _scaled(width, height)


def publish(source: Path, target: Path) -> Published:
    """Write the web copy of `source` to `target`: orientation applied, at most MAX_WIDTH wide, re-encoded
    (JPEG quality 82, progressive; PNG optimised), metadata dropped. Skipped when `target` is the copy of
    this version of `source` (same modification time)."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    stamp = source.stat().st_mtime_ns
    if target.exists() and target.stat().st_mtime_ns == stamp:
        return published_size(source)  # the copy of this very version (a changed photo has another time)
    try:
        with atomic_path(target, what=f"the published copy of {source.name}") as tmp, Image.open(source) as original:
            fmt = (original.format or "").upper()
            if fmt == "GIF":  # animations are kept as they are; GIF carries no EXIF
                shutil.copyfile(source, tmp)
                size = _scaled(*original.size)
            else:
                size = _reencode(ImageOps.exif_transpose(original), fmt, tmp)
        os.utime(target, ns=(stamp, stamp))  # the copy carries its source's time: how it is known fresh
    except (UnidentifiedImageError, OSError) as exc:
        raise IssueError(f"cannot publish this image: {exc}", path=source) from None
    return size


def _reencode(im: object, fmt: str, out: Path) -> Published:
    from PIL import Image

    assert isinstance(im, Image.Image)
    if im.width > MAX_WIDTH:
        im = im.resize((MAX_WIDTH, max(1, round(im.height * MAX_WIDTH / im.width))), Image.Resampling.LANCZOS)
    if fmt == "PNG":
        im.save(out, "PNG", optimize=True)  # no exif= or pnginfo=: text chunks and EXIF are dropped
    elif fmt == "WEBP":
        im.save(out, "WEBP", quality=JPEG_QUALITY)
    else:
        if im.mode not in ("RGB", "L"):
            im = im.convert("RGB")
        im.save(out, "JPEG", quality=JPEG_QUALITY, progressive=True, optimize=True)
    return Published(im.width, im.height)


def image_cache(root: Path, slug: str) -> Path:
    """build/images/<slug>/: the published copies `check` and `preview` make (archive writes its own)."""
    return root / "build" / "images" / slug


def publish_issue_images(issue_dir: Path, target: Path) -> list[str]:
    """Every image beside the essay (regular files only: never a link), published into `target` under its name:
    photos re-encoded, SVG and AVIF copied. Returns their names."""
    from .issue import issue_files

    names = []
    for p in issue_files(issue_dir):
        suffix = p.suffix.lower()
        if suffix in RASTER_SUFFIXES:
            publish(p, target / p.name)
        elif suffix in COPIED_SUFFIXES:
            with atomic_path(target / p.name, what=f"the published copy of {p.name}") as tmp:
                shutil.copyfile(p, tmp)
        else:
            continue
        names.append(p.name)
    return names
