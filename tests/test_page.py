"""What a visitor reads: the whole page's text after each state, on a laptop and on a phone.

The browser tests in ``test_browser.py`` count images, captions and exceptions; this one reads
every word the page holds (collapsed parts too) and fails on anything a visitor was not meant
to see: Python help panels, JSON dumps, object reprs, module paths, raw dicts, internal names.
It runs the bundled model (its provenance is what the sidebar and the report describe) and
keeps a whole-page screenshot of each state under ``artifacts/page/``. The bundled model's MA
slider is tested here too, on the same server (one start of the app and its model, not two).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import cv2
import numpy as np
import pytest
from playwright.sync_api import expect

from tests.test_browser import (
    COUNT_RUNS,
    MODEL_TIMEOUT_MS,
    RERUN_DONE,
    ROOT,
    UI_TIMEOUT_MS,
    browser,  # noqa: F401 - a fixture
    camera_photo,  # noqa: F401 - a fixture
    chromium,  # noqa: F401 - a fixture
    lesion_caption,
    open_page,
    snap,
    streamlit_server,
    wait_idle,
    workdir,  # noqa: F401 - a fixture
)
from tests.test_browser import SCREENSHOTS as BROWSER_SCREENSHOTS

SCREENSHOTS = ROOT / "artifacts" / "page"
LAPTOP = {"width": 1366, "height": 768}
PHONE = {"width": 390, "height": 844}

# Elements that are never meant for a visitor.
FORBIDDEN_ELEMENTS = {
    "a Python help panel": "[data-testid='stHelp']",
    "a JSON dump": "[data-testid='stJson']",
    "a traceback": "[data-testid='stException']",
}
# Text that is never meant for a visitor: what Python prints for its objects, and raw data.
FORBIDDEN_TEXT = {
    "an object repr": r"object at 0x|<bound method|<function |<class '",
    "a module path": r"\bhydralanet\.[a-z_]",
    "a help text": r"No docs available",
    "a raw dict or list": r"\{'|\{\"|\['",
    "a Python None": r"\bNone\b",
    "an internal name": r"\b[a-z][a-z0-9]*_[a-z0-9_]+\b(?!\.[a-z])",  # illumination_ratio, within_1dd
    "a long number": r"\d{9,}|\d\.\d{5,}",
    "a raw abbreviation": r"\b\d+dd\b",
}
# Every word under the app's root, hidden ones too (a collapsed expander, a closed sidebar),
# one text node per line; <style> and <script> hold no words for people, and an icon's text is
# its name in the icon font (keyboard_arrow_right).
PAGE_TEXT = """() => {
    const walker = document.createTreeWalker(document.querySelector("[data-testid='stApp']"), NodeFilter.SHOW_TEXT);
    const parts = [];
    while (walker.nextNode()) {
        const parent = walker.currentNode.parentElement;
        if (parent && !parent.closest("style, script, [data-testid='stIconMaterial']")) parts.push(walker.currentNode.textContent.trim());
    }
    return parts.filter(Boolean).join('\\n');
}"""
# Tables wider than their element (st.table's box) that no scrolling box inside that element
# holds: their right side is cut off. The page's own scrolling does not count.
CUT_TABLES = """() => {
    const cut = [];
    for (const table of document.querySelectorAll("[data-testid='stMain'] table")) {
        const element = table.closest("[data-testid='stTable'], [data-testid='stDataFrame']") || table.parentElement;
        const right = table.getBoundingClientRect().right;
        if (right <= Math.min(element.getBoundingClientRect().right, window.innerWidth) + 1) continue;
        let box = table.parentElement, scrolls = false;
        while (box && !scrolls) {
            scrolls = ['auto', 'scroll'].includes(getComputedStyle(box).overflowX) && box.scrollWidth > box.clientWidth;
            box = box === element ? null : box.parentElement;
        }
        if (!scrolls) cut.push(table.innerText.split('\\n')[0] + ` (right edge ${Math.round(right)} px)`);
    }
    return cut;
}"""


def page_problems(page) -> list[str]:
    """What the page shows that it should not, one line each (empty: a clean page)."""
    problems = [f"{what}: {page.locator(css).count()} x {css}" for what, css in FORBIDDEN_ELEMENTS.items()]
    problems = [p for p in problems if not p.split(": ")[1].startswith("0 x")]
    text = page.evaluate(PAGE_TEXT)
    for what, pattern in FORBIDDEN_TEXT.items():
        for match in re.finditer(pattern, text):
            line_start = text.rfind("\n", 0, match.start()) + 1
            line_end = text.find("\n", match.end())
            problems.append(f"{what}: {match[0]!r} in {text[line_start : line_end if line_end >= 0 else None]!r}")
    return problems


def assert_clean(page, state: str) -> None:
    wait_idle(page)
    problems = page_problems(page)
    assert not problems, f"{state}: the page shows\n" + "\n".join(problems[:20])


def shot(page, name: str, size: dict) -> Path:
    """A whole-page screenshot; the window goes back to ``size`` afterwards."""
    path = snap(page, name, width=size["width"], folder=SCREENSHOTS)
    page.set_viewport_size(size)
    return path


def upload(page, *paths: Path) -> None:
    page.get_by_test_id("stFileUploaderDropzoneInput").set_input_files([str(p) for p in paths])


def wait_result(page, width: int, height: int) -> None:
    """Until the page shows the results of a ``width x height`` photo, drawn and idle."""
    expect(page.get_by_text(f"Original ({width} x {height})")).to_be_visible(timeout=MODEL_TIMEOUT_MS)
    wait_idle(page)
    expect(page.get_by_text(f"Original ({width} x {height})")).to_be_visible(timeout=UI_TIMEOUT_MS)


@pytest.fixture(scope="module")
def bundled_server(chromium, workdir: Path):
    with streamlit_server(workdir, "page", None) as url:
        yield url


@pytest.fixture(scope="module")
def photos(workdir: Path, retina: np.ndarray, camera_photo: Path) -> dict[str, Path]:
    """A 4288 x 2848 camera frame and a 1024 px photo made from the CC0 sample, a DICOM file of
    it (800 x 800, left eye) and a corrupt JPEG."""
    from training.dicom_check import make_dicom

    folder = workdir / "page_photos"
    folder.mkdir(exist_ok=True)
    paths = {"camera": camera_photo, "small": folder / "second_1024.png"}
    small = cv2.resize(retina, (1024, 1024), interpolation=cv2.INTER_AREA)[:, ::-1]
    cv2.imwrite(str(paths["small"]), cv2.cvtColor(small, cv2.COLOR_RGB2BGR))
    paths["dicom"] = folder / "eye.dcm"
    dicom = cv2.resize(retina, (800, 800), interpolation=cv2.INTER_AREA)
    paths["dicom"].write_bytes(make_dicom(dicom, "explicit", ImageLaterality="L"))
    paths["corrupt"] = folder / "corrupt.jpg"
    paths["corrupt"].write_bytes(b"\xff\xd8\xff\xe0" + bytes(range(256)) * 16)
    return paths


def test_page_reads_clean_in_every_state_on_a_laptop(browser, bundled_server: str, photos: dict) -> None:
    with open_page(browser, bundled_server) as page:
        page.set_viewport_size(LAPTOP)
        expect(page.get_by_text("Upload one or more fundus photos")).to_be_visible(timeout=UI_TIMEOUT_MS)
        wait_idle(page)
        uploader = page.get_by_test_id("stFileUploader").bounding_box()
        assert uploader["y"] < LAPTOP["height"], (
            f"the uploader starts at {uploader['y']:.0f} px, below the first screen"
        )
        assert_clean(page, "before an upload")
        shot(page, "laptop_1_before_upload", LAPTOP)

        page.get_by_role("button", name="Try a sample").click()
        wait_result(page, 1411, 1411)
        assert_clean(page, "the sample")
        shot(page, "laptop_2_sample", LAPTOP)

        upload(page, photos["camera"])
        wait_result(page, 4288, 2848)
        assert_clean(page, "a 4288 x 2848 photo")
        shot(page, "laptop_3_camera_photo", LAPTOP)

        upload(page, photos["small"])
        wait_result(page, 1024, 1024)
        assert_clean(page, "several photos")
        shot(page, "laptop_4_several_photos", LAPTOP)
        # A click on the overview's first row (the sample) shows it: the table is drawn on a
        # canvas, rows 35 px high under a 35 px header, the selection boxes in the first column.
        expect(page.get_by_text("3 photos loaded")).to_be_visible()
        table = page.get_by_test_id("stDataFrame").bounding_box()
        page.mouse.click(table["x"] + 15, table["y"] + 35 + 17)
        wait_result(page, 1411, 1411)
        expect(page.get_by_role("combobox", name="Photo shown")).to_have_value("retina_sample.png")

        upload(page, photos["dicom"])
        wait_result(page, 800, 800)
        expect(page.get_by_text("left eye", exact=False).first).to_be_visible()
        assert_clean(page, "a DICOM file")
        shot(page, "laptop_5_dicom", LAPTOP)

        upload(page, photos["corrupt"])
        alert = page.get_by_test_id("stAlertContentError")
        expect(alert).to_contain_text("corrupt.jpg: ", timeout=MODEL_TIMEOUT_MS)
        message = alert.first.get_by_test_id("stMarkdownContainer").inner_text().strip()
        assert message.startswith("corrupt.jpg: ") and "\n" not in message
        assert_clean(page, "a corrupt file")
        shot(page, "laptop_6_bad_file", LAPTOP)


def test_page_reads_clean_and_fits_on_a_phone(browser, bundled_server: str) -> None:
    with open_page(browser, bundled_server) as page:
        page.set_viewport_size(PHONE)
        expect(page.get_by_text("Upload one or more fundus photos")).to_be_visible(timeout=UI_TIMEOUT_MS)
        wait_idle(page)
        uploader = page.get_by_test_id("stFileUploader").bounding_box()
        assert uploader["y"] < PHONE["height"], f"the uploader starts at {uploader['y']:.0f} px on a phone"
        assert_clean(page, "before an upload (phone)")
        shot(page, "phone_1_before_upload", PHONE)

        page.get_by_role("button", name="Try a sample").click()
        wait_result(page, 1411, 1411)
        assert_clean(page, "the sample (phone)")
        assert page.locator("[data-testid='stMain'] table").count() > 0
        assert page.evaluate(CUT_TABLES) == []
        shot(page, "phone_2_sample", PHONE)


def lesion_numbers(page, lesion: str) -> tuple[int, int]:
    """(lesions, pixels) from a lesion's caption, e.g. "MA microaneurysms: 12 lesions, 96 px"."""
    text = lesion_caption(page, lesion).inner_text()
    match = re.search(r": ([\d,]+) lesions?, ([\d,]+) px", text)
    return int(match[1].replace(",", "")), int(match[2].replace(",", ""))


def test_bundled_ma_slider_moves_by_one_stop_around_its_default(browser, bundled_server: str, workdir: Path) -> None:
    """With the bundled (calibrated) model on a photo with planted microaneurysms: the MA slider
    shows its default exactly, and one stop either side changes the result a little, in the
    right direction (a higher threshold never finds more)."""
    from hydralanet import load_model
    from hydralanet.config import threshold_stops
    from training.synthetic import write_dataset
    from webapp.sidebar import threshold_label

    write_dataset(workdir / "planted", n=1, seed=4243, size=1024, splits={"test": 1.0})
    photo = next((workdir / "planted").rglob("image/*.jpg"))
    default = load_model(device="cpu").config.thresholds["MA"]
    stops = threshold_stops(default)
    i = stops.index(default)
    labels = [threshold_label(v, default) for v in (stops[i - 1], default, stops[i + 1])]

    with open_page(browser, bundled_server) as page:
        page.get_by_test_id("stFileUploaderDropzoneInput").set_input_files(str(photo))
        expect(page.get_by_text("Lesion overlay", exact=True)).to_be_visible(timeout=MODEL_TIMEOUT_MS)
        slider = page.get_by_role("slider", name=re.compile(r"^MA"))
        expect(slider).to_have_attribute("aria-valuetext", labels[1], timeout=UI_TIMEOUT_MS)
        wait_idle(page)
        seen = {labels[1]: lesion_numbers(page, "MA")}
        slider.focus()
        for key, label in (("ArrowRight", labels[2]), ("ArrowLeft", labels[1]), ("ArrowLeft", labels[0])):
            page.evaluate(COUNT_RUNS)
            page.keyboard.press(key)
            expect(slider).to_have_attribute("aria-valuetext", label, timeout=UI_TIMEOUT_MS)
            page.wait_for_function(RERUN_DONE, polling="raf", timeout=MODEL_TIMEOUT_MS)
            seen[label] = lesion_numbers(page, "MA")
        # The reading: the disc, fovea and ETDRS grid on the overlay (on by default), and its section.
        expect(page.get_by_role("switch", name="Optic disc, fovea and ETDRS grid")).to_be_checked()
        expect(page.get_by_test_id("stMarkdown").filter(has_text="Landmarks:")).to_contain_text(" eye.")
        expect(page.get_by_text(re.compile(r"^DME risk"))).to_be_visible()
        snap(page, "06_bundled_ma_slider_and_grid")
    (BROWSER_SCREENSHOTS / "ma_slider.json").write_text(
        json.dumps({"stops": labels, "lesions_px": seen}, indent=2) + "\n"
    )
    lower, at_default, higher = (seen[label] for label in labels)
    assert at_default[0] > 0, "the planted microaneurysms are found at the default threshold"
    assert lower[1] >= at_default[1] >= higher[1]  # pixels: monotone in the threshold
    assert lower[1] > higher[1]  # one stop either side moves something
    # Sensibly: a step of 0.01 changes the lesion count by a fraction, not wholesale.
    assert higher[0] >= 0.5 * at_default[0] and lower[0] <= 2 * at_default[0] + 2


def test_an_operator_error_is_one_clean_line(browser, workdir: Path) -> None:
    """A bad setting of the operator's (not a number) is one line on the page, nothing else."""
    with (
        streamlit_server(workdir, "operator", None, {"HYDRALANET_MAX_INFERENCES": "many"}) as url,
        open_page(browser, url) as page,
    ):
        page.set_viewport_size(LAPTOP)
        alert = page.get_by_test_id("stAlertContentError")
        expect(alert).to_contain_text("HYDRALANET_MAX_INFERENCES", timeout=MODEL_TIMEOUT_MS)
        message = alert.first.get_by_test_id("stMarkdownContainer").inner_text().strip()
        assert "many" in message and "\n" not in message
        expect(page.get_by_test_id("stFileUploader")).to_have_count(0)  # nothing is served on a bad setting
        assert_clean(page, "an operator error")
        shot(page, "laptop_7_operator_error", LAPTOP)


def test_a_real_photo_shows_its_lesions_and_the_reading(browser, bundled_server: str) -> None:
    """A real IDRiD test photo (CC BY 4.0, downscaled) on the bundled model: every lesion its
    graders drew is found at least once, the reading grades it, and the overlay with the reading
    is kept as the picture the README shows (``artifacts/page/readme_overlay_and_reading.png``)."""
    photo = ROOT / "tests" / "fixtures" / "idrid" / "IDRiD_59.jpg"
    with open_page(browser, bundled_server) as page:
        page.set_viewport_size(LAPTOP)
        expect(page.get_by_text("Upload one or more fundus photos")).to_be_visible(timeout=UI_TIMEOUT_MS)
        upload(page, photo)
        wait_result(page, 1536, 1020)
        assert_clean(page, "a real photo")
        for lesion in ("EX", "HE", "MA", "SE"):
            assert lesion_numbers(page, lesion)[0] > 0, f"no {lesion} found on IDRiD_59, where the graders drew it"
        expect(page.get_by_text("DME risk estimate")).to_be_visible()
        snap(page, "laptop_8_real_photo", width=LAPTOP["width"], folder=SCREENSHOTS)
        uploader = page.get_by_test_id("stFileUploader").bounding_box()
        top = uploader["y"] + uploader["height"] + 8
        end = page.get_by_text("Lesions by ETDRS subfield").bounding_box()["y"] - 8
        main = page.get_by_test_id("stMain").bounding_box()
        page.screenshot(
            path=str(SCREENSHOTS / "readme_overlay_and_reading.png"),
            clip={"x": main["x"], "y": top, "width": main["width"], "height": end - top},
        )
