"""DICOM in, PDF out, measured (docs/dicom-and-reports.md).

    python -m training.dicom_check [--out artifacts/dicom_check]

1. Which pixel-data handler decodes which transfer syntax: the sample photo
   (``skimage.data.retina()``) written as DICOM in each syntax this module can make, decoded
   by each installed handler (pydicom's own, Pillow, pylibjpeg, gdcm), compared with the pixels
   it was made from.
2. A JPEG-compressed YBR_FULL_422 DICOM wrapping the very bytes of a JPEG gives the same masks
   as that JPEG (Dice per lesion, bundled model), at the sample's size and at IDRiD's 4288 x 2848.
3. The size of the PDF report of the 4288 x 2848 photo.

:func:`make_dicom` and :func:`dicom_from_jpeg` also make the test suite's DICOM files.
"""

from __future__ import annotations

import argparse
import io
import time
from pathlib import Path

import cv2
import numpy as np

SYNTAXES = ("explicit", "jpeg", "j2k", "j2k_lossless", "rle")


def _dataset(frames: list[np.ndarray], photometric: str, header: dict):
    from pydicom import uid
    from pydicom.dataset import Dataset, FileMetaDataset

    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = uid.ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = uid.OphthalmicPhotography8BitImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = uid.generate_uid()
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
    ds.Modality = "OP"
    ds.Rows, ds.Columns = frames[0].shape[:2]
    ds.SamplesPerPixel = 1 if frames[0].ndim == 2 else 3
    ds.PhotometricInterpretation = photometric
    if ds.SamplesPerPixel == 3:
        ds.PlanarConfiguration = 0
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    if len(frames) > 1:
        ds.NumberOfFrames = len(frames)
    for keyword, value in header.items():
        setattr(ds, keyword, value)
    return ds


def _save(ds) -> bytes:
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def make_dicom(
    image: np.ndarray | list[np.ndarray],
    syntax: str = "explicit",
    *,
    photometric: str | None = None,
    quality: int = 95,
    **header,
) -> bytes:
    """A DICOM OP file of RGB uint8 ``H x W x 3`` frames (or ``H x W`` gray: MONOCHROME2).

    ``syntax``: ``explicit`` (uncompressed; ``photometric`` RGB or YBR_FULL), ``jpeg`` (JPEG
    baseline, 4:2:2, YBR_FULL_422), ``j2k`` (JPEG 2000 at 20:1), ``j2k_lossless``, ``rle``.
    ``header``: DICOM keywords and values (ImageLaterality="L", PixelSpacing=[0.01, 0.01], ...).
    """
    from pydicom import uid
    from pydicom.pixels import convert_color_space

    frames = image if isinstance(image, list) else [image]
    gray = frames[0].ndim == 2
    if syntax == "jpeg":
        from PIL import Image

        data = []
        for frame in frames:
            buf = io.BytesIO()
            Image.fromarray(frame).save(buf, "JPEG", quality=quality, subsampling=1)  # 1: 4:2:2
            data.append(buf.getvalue())
        return dicom_from_jpeg(data, **header)
    photometric = photometric or ("MONOCHROME2" if gray else "RGB")
    ds = _dataset(frames, photometric, header)
    pixels = np.stack(frames)
    if photometric == "YBR_FULL":
        pixels = convert_color_space(pixels, "RGB", "YBR_FULL")
    ds.PixelData = pixels.tobytes()
    compress = {"j2k": uid.JPEG2000, "j2k_lossless": uid.JPEG2000Lossless, "rle": uid.RLELossless}
    if syntax in compress:
        ds.compress(compress[syntax], **({"j2k_cr": [20]} if syntax == "j2k" else {}))
    elif syntax != "explicit":
        raise ValueError(f"syntax must be one of {', '.join(SYNTAXES)}, got {syntax!r}")
    return _save(ds)


def dicom_from_jpeg(jpeg: bytes | list[bytes], **header) -> bytes:
    """A DICOM OP file (JPEG baseline, YBR_FULL_422) holding these JPEG files' bytes unchanged,
    as a PACS wraps a camera's JPEG: one frame per JPEG."""
    from PIL import Image
    from pydicom import uid
    from pydicom.encaps import encapsulate

    jpegs = jpeg if isinstance(jpeg, list) else [jpeg]
    first = np.asarray(Image.open(io.BytesIO(jpegs[0])))
    ds = _dataset([first] * len(jpegs), "YBR_FULL_422", header)
    ds.file_meta.TransferSyntaxUID = uid.JPEGBaseline8Bit
    ds.PixelData = encapsulate(jpegs)
    ds["PixelData"].VR = "OB"
    ds.LossyImageCompression = "01"
    return _save(ds)


def handler_table(image: np.ndarray) -> list[dict]:
    """Each syntax x each installed handler: decoded or not, largest and mean pixel error."""
    import pydicom
    from pydicom.pixels import get_decoder, pixel_array

    rows = []
    for syntax, photometric in [("explicit", "RGB"), ("explicit", "YBR_FULL")] + [(s, None) for s in SYNTAXES[1:]]:
        data = make_dicom(image, syntax, photometric=photometric)
        ts = pydicom.dcmread(io.BytesIO(data)).file_meta.TransferSyntaxUID
        reference = image
        if syntax == "jpeg":  # what any JPEG decoder makes of it, not the photo before compression
            from hydralanet.io.images import read_image

            reference = read_image(data, name="reference.dcm")
        for plugin in get_decoder(ts).available_plugins or ("native",):
            row = {"syntax": f"{ts.name} ({photometric or 'as encoded'})", "handler": plugin}
            try:
                kwargs = {} if plugin == "native" else {"decoding_plugin": plugin}
                out = pixel_array(io.BytesIO(data), as_rgb=True, **kwargs)
                diff = np.abs(out.astype(np.int16) - reference)
                row.update(decoded=True, max_error=int(diff.max()), mean_error=round(float(diff.mean()), 3))
            except Exception as exc:  # a handler that cannot is the measurement
                row.update(decoded=False, error=f"{type(exc).__name__}: {str(exc)[:80]}")
            rows.append(row)
    return rows


def gdcm_rows(image: np.ndarray) -> list[dict]:
    """JPEG lossless and JPEG-LS, which nothing pinned here can write: written by gdcm's
    transcoder when ``python-gdcm`` is installed (not pinned; empty list without it), then
    decoded by each installed handler."""
    import tempfile

    try:
        import gdcm
    except ImportError:
        return []
    import pydicom
    from pydicom.pixels import get_decoder, pixel_array

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        source = Path(tmp) / "explicit.dcm"
        source.write_bytes(make_dicom(image))
        for name in ("JPEGLosslessProcess14_1", "JPEGLSLossless", "JPEGLSNearLossless"):
            reader = gdcm.ImageReader()
            reader.SetFileName(str(source))
            change = gdcm.ImageChangeTransferSyntax()
            change.SetTransferSyntax(gdcm.TransferSyntax(getattr(gdcm.TransferSyntax, name)))
            if not reader.Read():
                continue
            change.SetInput(reader.GetImage())
            if not change.Change():
                continue
            writer, target = gdcm.ImageWriter(), Path(tmp) / f"{name}.dcm"
            writer.SetFile(reader.GetFile())
            writer.SetImage(change.GetOutput())
            writer.SetFileName(str(target))
            writer.Write()
            ts = pydicom.dcmread(target).file_meta.TransferSyntaxUID
            for plugin in get_decoder(ts).available_plugins:
                out = pixel_array(target, decoding_plugin=plugin)
                diff = np.abs(out.astype(np.int16) - image)
                rows.append(
                    {"syntax": ts.name, "handler": plugin, "decoded": True, "max_error": int(diff.max()),
                     "mean_error": round(float(diff.mean()), 3)}
                )  # fmt: skip
    return rows


def dice(a: np.ndarray, b: np.ndarray) -> float:
    total = int(a.sum()) + int(b.sum())
    return 1.0 if total == 0 else 2.0 * int((a & b).sum()) / total


def jpeg_vs_dicom(loaded, image: np.ndarray, out: Path | None) -> tuple[dict, float]:
    """Masks of a JPEG and of the DICOM wrapping its bytes: Dice per lesion; and the PDF size."""
    from PIL import Image

    from hydralanet.config import CLASSES
    from hydralanet.inference.segment import lesion_statistics, predict
    from hydralanet.io.images import read_image
    from hydralanet.reading.photo import findings, read_photo
    from hydralanet.report.pdf import ReportPhoto, report_pdf
    from hydralanet.report.tables import run_record

    buf = io.BytesIO()
    Image.fromarray(image).save(buf, "JPEG", quality=95, subsampling=1)
    jpeg = buf.getvalue()
    dcm = dicom_from_jpeg(jpeg, ImageLaterality="L")
    thresholds = loaded.config.thresholds
    masks = {}
    for kind, data in (("jpeg", jpeg), ("dicom", dcm)):
        photo = read_image(data, name=f"sample.{kind}")
        prediction = predict(loaded, photo)
        masks[kind] = prediction.masks(thresholds)
    scores = {c: round(dice(masks["jpeg"][k], masks["dicom"][k]), 6) for k, c in enumerate(CLASSES)}
    scores["pixels_equal"] = bool(np.array_equal(read_image(jpeg), read_image(dcm)))
    reading = read_photo(photo, prediction.fov, laterality="left", probabilities=prediction.probabilities)
    record = run_record(loaded, loaded.config.preprocessing, thresholds, tta=False, precision="auto")
    rows = lesion_statistics(masks["dicom"], prediction.fov, thresholds)
    report = ReportPhoto("sample", photo, masks["dicom"], rows, reading, findings(reading, masks["dicom"]))
    started = time.perf_counter()
    pdf = report_pdf(report, record, loaded.config.provenance)
    scores["pdf_seconds"] = round(time.perf_counter() - started, 2)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        h, w = image.shape[:2]
        (out / f"sample_{w}x{h}.pdf").write_bytes(pdf)
        (out / f"sample_{w}x{h}.dcm").write_bytes(dcm)
    return scores, len(pdf) / 1e6


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=None, help="keep the DICOM files and PDFs made here")
    args = parser.parse_args(argv)
    from skimage.data import retina

    from hydralanet.inference.loaded import load_model

    sample = retina()
    print("1. transfer syntax x handler (sample photo at 512 x 512)")
    small = cv2.resize(sample, (512, 512), interpolation=cv2.INTER_AREA)
    for row in handler_table(small) + gdcm_rows(small):
        result = f"max error {row['max_error']}, mean {row['mean_error']}" if row["decoded"] else row["error"]
        print(f"   {row['syntax']:<70} {row['handler']:<10} {result}")
    loaded = load_model(None, device="cpu")
    print("2./3. JPEG vs the DICOM wrapping it (bundled model): Dice per lesion; PDF report size")
    for size in (sample.shape[1::-1], (4288, 2848)):
        image = sample if tuple(size) == sample.shape[1::-1] else _to_frame(sample, size)
        scores, megabytes = jpeg_vs_dicom(loaded, image, args.out)
        print(f"   {size[0]} x {size[1]}: {scores}; PDF {megabytes:.2f} MB")


def _to_frame(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """The round photo on a black camera frame of ``size`` (w, h), as IDRiD's 4288 x 2848."""
    w, h = size
    side = h
    disc = cv2.resize(image, (side, side), interpolation=cv2.INTER_CUBIC)
    frame = np.zeros((h, w, 3), np.uint8)
    x0 = (w - side) // 2
    frame[:, x0 : x0 + side] = disc
    return frame


if __name__ == "__main__":
    main()
