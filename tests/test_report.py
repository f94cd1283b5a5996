"""The PDF report: rendered to PNG with poppler's pdftoppm and checked for its parts (pages,
paper size, embedded fonts, the overlay's colours, the tables, provenance, the notice). The
pages are kept under artifacts/test_report/ to look at."""

from __future__ import annotations

import re
import subprocess
from datetime import datetime
from pathlib import Path

import cv2
import numpy as np
import pytest

from hydralanet.config import CLASSES
from hydralanet.inference.loaded import load_model
from hydralanet.inference.segment import lesion_statistics
from hydralanet.io.dicom import read_facts
from hydralanet.preprocessing import fov_mask
from hydralanet.reading.photo import findings, read_photo
from hydralanet.report.pdf import NOTICE, ReportPhoto, ReportWriter, report_pdf
from hydralanet.report.tables import run_record
from training.dicom_check import make_dicom

ARTIFACTS = Path(__file__).resolve().parent.parent / "artifacts" / "test_report"
YELLOW = (255, 221, 0)  # EX's overlay colour


@pytest.fixture(scope="module")
def loaded():
    return load_model(None, device="cpu")


@pytest.fixture(scope="module")
def record(loaded) -> dict:
    return run_record(loaded, loaded.config.preprocessing, loaded.config.thresholds, tta=False, precision="auto")


def planted(image: np.ndarray, at: tuple[float, float], radius: int) -> np.ndarray:
    """Masks with one hard-exudate disc of ``radius`` px at ``at`` (x, y) and nothing else."""
    masks = np.zeros((len(CLASSES),) + image.shape[:2], bool)
    cv2.circle(masks[0].view(np.uint8), (round(at[0]), round(at[1])), radius, 1, -1)
    return masks


def photo_with_reading(image: np.ndarray, masks_at=None, radius: int = 12, **kwargs) -> ReportPhoto:
    fov = fov_mask(image)
    reading = read_photo(image, fov, **kwargs)
    fovea = reading.landmarks.fovea
    masks = planted(image, masks_at or (fovea.x + 20, fovea.y), radius)
    rows = lesion_statistics(masks, fov)
    return ReportPhoto("sample", image, masks, rows, reading, findings(reading, masks))


def render(pdf: bytes, folder: Path, dpi: int = 50) -> tuple[list[np.ndarray], str, str]:
    """Pages as RGB arrays (also kept as PNGs in ``folder``), the text, and pdfinfo + pdffonts."""
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("page-*.png"):
        old.unlink()
    (folder / "report.pdf").write_bytes(pdf)
    subprocess.run(["pdftoppm", "-r", str(dpi), "-png", str(folder / "report.pdf"), str(folder / "page")], check=True)
    pages = [cv2.cvtColor(cv2.imread(str(p)), cv2.COLOR_BGR2RGB) for p in sorted(folder.glob("page-*.png"))]
    text = subprocess.run(["pdftotext", "-layout", str(folder / "report.pdf"), "-"], capture_output=True, text=True)
    info = subprocess.run(["pdfinfo", str(folder / "report.pdf")], capture_output=True, text=True).stdout
    fonts = subprocess.run(["pdffonts", str(folder / "report.pdf")], capture_output=True, text=True).stdout
    return pages, text.stdout, info + fonts


def pixels_near(region: np.ndarray, colour: np.ndarray, tolerance: int = 25) -> int:
    return int((np.abs(region.astype(np.int16) - colour).max(axis=2) < tolerance).sum())


def test_report_of_the_sample_has_its_parts(retina, loaded, record) -> None:
    image = cv2.resize(retina, (800, 800), interpolation=cv2.INTER_AREA)
    photo = photo_with_reading(image, radius=30)
    created = datetime(2026, 11, 30, 12, 0)
    pdf = report_pdf(photo, record, loaded.config.provenance, created=created)
    pages, text, info = render(pdf, ARTIFACTS / "a4", dpi=100)

    assert pdf.startswith(b"%PDF") and len(pages) == 2
    assert re.search(r"Page size:\s+595.28 x 841.89 pts \(A4\)", info)
    fonts = [line.split() for line in info.splitlines() if "DejaVuSans" in line]
    assert len(fonts) == 2 and all(row[-5:-3] == ["yes", "yes"] for row in fonts)  # embedded, subset
    # The overlay (right half of page 1's pictures) shows the planted exudate: EX's yellow over
    # the photo at opacity 0.5; the photo (left half) has no pixel of that colour.
    x, y = (round(v) for v in np.argwhere(photo.masks[0]).mean(axis=0)[::-1])
    blend = 0.5 * image[y - 5 : y + 6, x - 5 : x + 6].reshape(-1, 3).mean(axis=0) + 0.5 * np.array(YELLOW)
    page = pages[0]
    pictures = page[int(0.1 * page.shape[0]) : int(0.4 * page.shape[0])]  # above the legend's swatches
    half = page.shape[1] // 2
    assert pixels_near(pictures[:, half:], blend) > 100 and pixels_near(pictures[:, :half], blend) == 0

    words = " ".join(text.split())
    lines = {
        line.split()[0] + " " + line.split()[1]: line.split() for line in text.splitlines() if len(line.split()) > 6
    }
    ex = lines["EX hard"]  # the lesion table: name, threshold, pixels, % of FOV, count, largest
    assert ex[-2:] == ["1", f"{photo.statistics[0]['largest_px']:,}"] and ex[-4] == f"{photo.statistics[0]['pixels']:,}"
    assert "DME risk grade 2: 1 hard exudate within 1 DD of the fovea" in words
    assert "Eye left (from the disc's side)" in words
    assert "assumed: 1 disc diameter" in words
    assert re.search(r"centre\s+1 \(\d[\d,]*\)\s+0 \(0\)", text)  # the zone table: EX in the centre
    assert loaded.identity["sha256"] in words
    # What the model learnt from, on the first page, from the checkpoint's provenance.
    first_page = " ".join(text.split("\f")[0].split())
    training = "Training data IDRiD: 94 photos for training, 20 for validation, 27 for test; initialised from"
    assert f"Model {loaded.identity['name']}" in first_page and training in first_page
    assert NOTICE in words and "2026-11-30 12:00 UTC" in words and "HydraLA-Net 0.1.0" in words


def test_letter_paper_dicom_facts_and_identifiers(retina, loaded, record) -> None:
    image = cv2.resize(retina, (600, 600), interpolation=cv2.INTER_AREA)
    data = make_dicom(image, ImageLaterality="L", PixelSpacing=[0.02, 0.02], PatientID="PID-55", Manufacturer="Acme")
    facts = read_facts(data)
    photo = photo_with_reading(image, laterality=facts.laterality, mm_per_px=facts.mm_per_px)
    photo.facts = facts
    pages, text, info = render(report_pdf(photo, record, paper="letter"), ARTIFACTS / "letter")
    words = " ".join(text.split())
    assert re.search(r"Page size:\s+612 x 792 pts \(letter\)", info) and len(pages) == 2
    assert "Eye left (from the DICOM header (ImageLaterality))" in words
    assert "measured: 0.02 mm per pixel (DICOM PixelSpacing); 1.5 mm = 75.0 px" in words
    assert "Identifiers withheld" in words and "PID-55" not in words and "camera Acme" in words

    photo.facts = read_facts(data, keep_identifiers=True)
    words = " ".join(render(report_pdf(photo, record), ARTIFACTS / "identifiers")[1].split())
    assert "PatientID PID-55" in words and "withheld" not in words


def test_full_size_photo_report_is_small_and_combined_reports_add_up(retina, loaded, record) -> None:
    """A 4288 x 2848 photo (IDRiD's size): the report stays well under 2 MB."""
    frame = np.zeros((2848, 4288, 3), np.uint8)
    frame[:, 720:3568] = cv2.resize(retina, (2848, 2848), interpolation=cv2.INTER_CUBIC)
    photo = photo_with_reading(frame, radius=30)
    pdf = report_pdf(photo, record, loaded.config.provenance)
    assert len(pdf) < 2_000_000
    (ARTIFACTS / "full_size.pdf").parent.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / "full_size.pdf").write_bytes(pdf)

    small = photo_with_reading(cv2.resize(retina, (300, 300), interpolation=cv2.INTER_AREA))
    book = ReportWriter(record, loaded.config.provenance).add(small).add(small)
    pages, text, _ = render(book.to_bytes(), ARTIFACTS / "combined", dpi=20)
    assert len(pages) == 4 and text.count("HydraLA-Net reading: sample") == 2


def test_bad_paper_is_refused(record) -> None:
    with pytest.raises(ValueError, match="paper must be one of a4, letter, got 'a5'"):
        ReportWriter(record, paper="a5")


def test_training_data_is_named_for_people() -> None:
    from hydralanet.report.pdf import describe_training_data

    idrid = {"trained": True, "datasets": {"idrid": {"train": 54, "val": 27}}}
    assert describe_training_data(idrid) == "IDRiD: 54 photos for training, 27 for validation"
    both = {"datasets": {"idrid": {"train": 1}, "ddr": {"train": 383, "test": 225}}}
    assert describe_training_data(both) == "IDRiD: 1 photo for training; DDR: 383 photos for training, 225 for test"
    assert describe_training_data({**idrid, "pretraining": "the synthetic demonstration model"}) == (
        "IDRiD: 54 photos for training, 27 for validation; initialised from the synthetic demonstration model"
    )
    assert describe_training_data({"trained": False}).startswith("none (untrained")
    assert describe_training_data({}) == "not recorded in the checkpoint"
