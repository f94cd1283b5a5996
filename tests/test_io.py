from __future__ import annotations

import io

import cv2
import numpy as np
import pytest
from PIL import Image

from hydralanet.io.images import ImageError, list_images, read_image


def _encode(pil: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    pil.save(buf, format=fmt, **kw)
    return buf.getvalue()


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    rng = np.random.default_rng(0)
    img = np.zeros((90, 120, 3), np.uint8)
    img[..., 0] = np.linspace(0, 255, 120, dtype=np.uint8)[None]
    img[..., 1] = np.linspace(0, 200, 90, dtype=np.uint8)[:, None]
    img[..., 2] = rng.integers(0, 50, (90, 120))
    return img


@pytest.mark.parametrize("fmt", ["PNG", "TIFF", "BMP"])
def test_lossless_formats_round_trip(photo, fmt):
    assert np.array_equal(read_image(_encode(Image.fromarray(photo), fmt)), photo)


def test_jpeg_decodes_close(photo, tmp_path):
    path = tmp_path / "a.jpg"
    path.write_bytes(_encode(Image.fromarray(photo), "JPEG", quality=98))
    out = read_image(path)
    assert out.shape == photo.shape and out.dtype == np.uint8
    assert np.abs(out[..., :2].astype(int) - photo[..., :2]).mean() < 3  # blue is noise: JPEG blurs it


def test_exif_orientation_is_applied(photo):
    # Orientation 6: the viewer rotates the stored pixels 90 degrees clockwise to display.
    stored = Image.fromarray(photo).transpose(Image.Transpose.ROTATE_90)  # counter-clockwise
    exif = Image.Exif()
    exif[0x0112] = 6
    out = read_image(_encode(stored, "PNG", exif=exif.tobytes()))
    assert np.array_equal(out, photo)


def test_grayscale_rgba_cmyk(photo):
    gray = photo[..., 1]
    out = read_image(_encode(Image.fromarray(gray), "PNG"))
    assert out.shape == photo.shape and np.array_equal(out[..., 0], gray) and np.array_equal(out[..., 2], gray)

    rgba = np.dstack([photo, np.full(photo.shape[:2], 255, np.uint8)])
    rgba[:10, :10, 3] = 0  # transparent corner composites onto black, the fundus surround
    out = read_image(_encode(Image.fromarray(rgba, "RGBA"), "PNG"))
    assert np.array_equal(out[10:, 10:], photo[10:, 10:]) and out[:10, :10].max() == 0

    cmyk = Image.fromarray(photo).convert("CMYK")
    out = read_image(_encode(cmyk, "TIFF"))
    assert np.abs(out.astype(int) - photo).max() <= 2


def test_sixteen_bit_gray_and_rgb_are_scaled(photo):
    gray16 = photo[..., 0].astype(np.uint16) * 257  # 255 -> 65535
    out = read_image(_encode(Image.fromarray(gray16), "PNG"))
    assert np.array_equal(out[..., 0], photo[..., 0])

    rgb16 = photo.astype(np.uint16) * 257
    ok, buf = cv2.imencode(".tiff", cv2.cvtColor(rgb16, cv2.COLOR_RGB2BGR))
    assert ok
    out = read_image(buf.tobytes())
    assert np.abs(out.astype(int) - photo).max() <= 1


@pytest.mark.parametrize(
    "data, message",
    [
        (b"", "file is empty"),
        (b"GIF89a-nope" * 10, "not a recognised image"),
        (b"hello, this is text", "not a recognised image"),
    ],
)
def test_bad_bytes_give_one_line_errors(data, message):
    with pytest.raises(ImageError, match=message) as err:
        read_image(data, name="upload.jpg")
    assert str(err.value).startswith("upload.jpg: ") and "\n" not in str(err.value)


def test_truncated_jpeg(photo, tmp_path):
    big = cv2.resize(photo, (600, 450))
    data = _encode(Image.fromarray(big), "JPEG", quality=95)
    path = tmp_path / "cut.jpg"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageError, match="truncated or corrupt") as err:
        read_image(path)
    assert str(path) in str(err.value)


def test_missing_file_and_folder(tmp_path):
    with pytest.raises(ImageError, match="file not found"):
        read_image(tmp_path / "nope.png")
    with pytest.raises(ImageError, match="is a folder"):
        read_image(tmp_path)


def test_tiny_image_refused(photo):
    with pytest.raises(ImageError, match=r"too small \(63 x 80"):
        read_image(_encode(Image.fromarray(photo[:80, :63]), "PNG"))


def test_decompression_bomb_refused_before_decoding():
    # A 1-bit 10000 x 6000 PNG is a few kB but 60 Mpixel: refuse from the header alone.
    bomb = _encode(Image.new("1", (10000, 6000)), "PNG")
    assert len(bomb) < 100_000
    with pytest.raises(ImageError, match="too large"):
        read_image(bomb, name="bomb.png")
    with pytest.raises(ImageError, match="too large"):
        read_image(_encode(Image.new("L", (300, 300)), "PNG"), max_pixels=50_000)


def test_list_images_expands_folders(tmp_path, photo):
    for name in ["b.png", "a.JPG", "notes.txt"]:
        (tmp_path / name).write_bytes(b"x")
    missing = tmp_path / "missing.png"
    assert list_images([tmp_path, missing]) == [tmp_path / "a.JPG", tmp_path / "b.png", missing]


def test_atomic_file_replaces_whole_or_not_at_all(tmp_path):
    from hydralanet.io.images import atomic_file, write_atomic

    target = tmp_path / "sub" / "out.bin"
    write_atomic(target, b"old")  # makes the folder
    with pytest.raises(RuntimeError, match="writer failed"), atomic_file(target) as fh:
        fh.write(b"half of the new")
        raise RuntimeError("writer failed")
    assert target.read_bytes() == b"old"  # the failed write left the old file, and no temporary one
    assert sorted(p.name for p in target.parent.iterdir()) == ["out.bin"]
    with atomic_file(target) as fh:
        np.save(fh, np.arange(3))  # a writer that streams into the file
    assert np.load(target).tolist() == [0, 1, 2]
    assert sorted(p.name for p in target.parent.iterdir()) == ["out.bin"]
    assert target.stat().st_mode & 0o777 == 0o666 & ~_umask()  # readable by others, as files open() makes


def _umask() -> int:
    import os

    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_check_image_answers_from_the_header_what_read_image_would_refuse() -> None:
    from hydralanet.io.images import check_image

    def png(w: int, h: int, mode: str = "RGB") -> bytes:
        buf = io.BytesIO()
        Image.new(mode, (w, h)).save(buf, format="PNG")
        return buf.getvalue()

    check_image(png(300, 200), name="fine.png")  # passes, and so does read_image
    assert read_image(png(300, 200), name="fine.png").shape == (200, 300, 3)
    cases = {
        "empty.png": (b"", "file is empty"),
        "junk.jpg": (b"\xff\xd8\xff\xe0" + bytes(range(256)) * 8, "not a recognised image"),
        "huge.png": (png(8000, 7000, "1"), "image is too large (8000 x 7000"),
        "tiny.png": (png(40, 300), "image is too small (40 x 300"),
    }
    for name, (data, message) in cases.items():
        with pytest.raises(ImageError) as header:
            check_image(data, name=name)
        with pytest.raises(ImageError) as decoded:
            read_image(data, name=name)
        assert str(header.value) == str(decoded.value) and message in str(header.value)
        assert str(header.value).startswith(f"{name}: ")
