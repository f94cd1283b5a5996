"""The Streamlit page, driven through ``streamlit.testing.v1.AppTest`` (the real script, no browser).

A tiny untrained checkpoint (conftest's ``tiny_checkpoint``) keeps this fast. Its probabilities
all sit near sigmoid(-2) ~ 0.12 (the head bias), so a threshold of 0.05 marks the whole field of
view as a lesion and the default 0.35 marks nothing: the statistics have known values without a
trained model.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from streamlit.testing.v1 import AppTest

from hydralanet import CLASSES, HydraLANet

APP = Path(__file__).resolve().parent.parent / "app.py"
TIMEOUT = 60  # seconds per script run: the first one imports torch and loads the model


@pytest.fixture
def app(tiny_checkpoint: Path, monkeypatch: pytest.MonkeyPatch) -> AppTest:
    monkeypatch.setenv("HYDRALANET_MODEL", str(tiny_checkpoint))
    return AppTest.from_file(str(APP), default_timeout=TIMEOUT)


@pytest.fixture
def forward_calls() -> list[int]:
    """Counts forward passes of any HydraLANet through torch's global hook, independently of
    the app's own counter: the proof that a control did or did not re-run the network."""
    calls: list[int] = []

    def hook(module, args, output):
        if isinstance(module, HydraLANet):
            calls.append(1)

    handle = torch.nn.modules.module.register_module_forward_hook(hook)
    yield calls
    handle.remove()


def png_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def huge_png() -> bytes:
    """A 56-Mpixel PNG that is small to make: 1 bit per pixel (the limit is 50 Mpixel)."""
    buf = io.BytesIO()
    Image.new("1", (8000, 7000)).save(buf, format="PNG")
    return buf.getvalue()


def synthetic_fundus(side: int = 200) -> np.ndarray:
    """A red disc on black: enough of a field of view for the model to run."""
    yy, xx = np.mgrid[:side, :side]
    image = np.zeros((side, side, 3), np.uint8)
    image[(yy - side / 2) ** 2 + (xx - side / 2) ** 2 < (0.45 * side) ** 2] = (180, 70, 40)
    return image


def click(at: AppTest, label: str) -> AppTest:
    next(b for b in at.button if b.label == label).click()
    return at.run()


def statistics(at: AppTest) -> dict[str, dict]:
    table = at.table[0].value
    return {row["lesion"].split()[0]: row for row in table.to_dict("records")}


def assert_clean(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]


def test_no_input_shows_a_hint_and_the_research_note(app: AppTest) -> None:
    app.run()
    assert_clean(app)
    assert any("Upload one or more fundus photos" in i.value for i in app.info)
    assert any("not a medical device" in m.value for m in app.markdown)
    assert len(app.image) == 0
    assert "model_runs" not in app.session_state  # nothing to segment, so the model never ran


def test_sample_shows_overlay_statistics_and_downloads(app: AppTest, forward_calls: list[int]) -> None:
    click(app.run(), "Try a sample")
    assert_clean(app)
    assert not app.error
    captions = [c for image in app.image for c in image.captions]
    assert "Lesion overlay" in captions
    assert any(c.startswith("Original (1411 x 1411)") for c in captions)
    stats = statistics(app)
    assert list(stats) == list(CLASSES)
    # Default thresholds 0.35 are above every probability of an untrained model: nothing found.
    assert all(row["pixels"] == 0 and row["threshold"] == pytest.approx(0.35) for row in stats.values())
    assert {d.label for d in app.get("download_button")} == {
        "Overlay (PNG)",
        "Masks (ZIP)",
        "Summary (CSV)",
        "Summary (JSON)",
        "Report (PDF)",  # one click: made when clicked
    }
    assert app.session_state["model_runs"] == 1
    assert len(forward_calls) == 1

    click(app, "Remove the sample")  # the sample leaves as it came: one click
    assert_clean(app)
    assert any("Upload one or more fundus photos" in i.value for i in app.info)
    assert len(app.image) == 0 and [b.label for b in app.button if "sample" in b.label] == ["Try a sample"]


def test_display_controls_change_statistics_without_rerunning_the_model(app: AppTest, forward_calls: list[int]) -> None:
    click(app.run(), "Try a sample")
    assert len(forward_calls) == 1

    app.select_slider(key="threshold_EX").set_value(0.05).run()
    stats = statistics(app)
    assert stats["EX"]["% of FOV"] == pytest.approx(100.0)  # every FOV pixel is above 0.05
    assert stats["EX"]["lesions"] == 1 and stats["EX"]["largest (px)"] == stats["EX"]["pixels"] > 100_000
    assert all(stats[c]["pixels"] == 0 for c in ("HE", "MA", "SE"))
    captions = [c for image in app.image for c in image.captions]
    assert any(c.startswith("EX hard exudates: 1 lesion,") for c in captions), captions

    app.slider(key="opacity").set_value(0.8).run()
    app.pills(key="visible").set_value(["EX", "MA"]).run()  # hide HE and SE
    legend = next(m.value for m in app.markdown if "optic disc (circle)" in m.value)  # lists what is drawn
    assert "EX hard exudates" in legend and "MA microaneurysms" in legend and "ETDRS grid" in legend
    assert "haemorrhages" not in legend and "soft exudates" not in legend
    app.number_input(key="zoom_x").set_value(30).run()
    click(app, "Reset to the model's thresholds")
    assert statistics(app)["EX"]["pixels"] == 0
    assert_clean(app)
    assert app.session_state["model_runs"] == 1
    assert len(forward_calls) == 1

    # A preprocessing change does run the model (so the counters above can count) ...
    app.toggle(key="clahe_on").set_value(False).run()
    assert app.session_state["model_runs"] == 2 and len(forward_calls) == 2
    assert any("no CLAHE" in c for image in app.image for c in image.captions)
    # ... and going back to a setting seen before comes from the session's cache.
    app.toggle(key="clahe_on").set_value(True).run()
    assert app.session_state["model_runs"] == 2 and len(forward_calls) == 2


@pytest.mark.parametrize(
    ("name", "data", "message"),
    [
        ("broken.jpg", b"this is not an image", "not a recognised image"),
        ("truncated.png", png_bytes(synthetic_fundus())[:300], "truncated or corrupt"),
        ("empty.png", b"", "empty"),
        ("tiny.png", png_bytes(np.full((32, 32, 3), 128, np.uint8)), "too small"),
        ("black.png", png_bytes(np.zeros((128, 128, 3), np.uint8)), "field of view"),
        ("huge.png", huge_png(), "too large"),
    ],
    ids=["not-an-image", "truncated", "empty", "tiny", "all-black", "over-50-mpixel"],
)
def test_bad_upload_gets_one_line_error_and_the_app_keeps_serving(
    app: AppTest, name: str, data: bytes, message: str
) -> None:
    app.run()
    app.file_uploader(key="uploads").set_value((name, data, "application/octet-stream")).run()
    assert_clean(app)
    assert len(app.error) == 1
    error = app.error[0].value
    assert name in error and message in error.lower() and "\n" not in error
    assert len(app.image) == 0

    click(app, "Try a sample")  # the same session goes on working
    assert_clean(app)
    assert not app.error
    assert app.selectbox(key="image_choice").options == ["retina_sample.png", name]
    assert len(statistics(app)) == 4


def test_several_uploads_get_an_overview_and_a_selector(app: AppTest) -> None:
    app.run()
    app.file_uploader(key="uploads").set_value(
        [
            ("left.png", png_bytes(synthetic_fundus(200)), "image/png"),
            ("right.png", png_bytes(synthetic_fundus(256)), "image/png"),
        ]
    ).run()
    assert_clean(app)
    selector = app.selectbox(key="image_choice")
    assert selector.options == ["left.png", "right.png"]
    assert any(c.startswith("Original (256 x 256)") for image in app.image for c in image.captions)
    # Every photo is read for the overview, the one shown first (the last added: ▶).
    overview = app.dataframe[0].value
    assert overview["photo"].tolist() == ["left.png", "right.png"] and overview[""].tolist() == ["", "▶"]
    assert overview["size"].tolist() == ["200 x 200", "256 x 256"]
    assert overview[list(CLASSES)].to_numpy().tolist() == [["0"] * 4] * 2  # nothing above 0.35
    # A flat red disc is no fundus photo: its quality is poor, said in words, no measure names or values.
    quality = overview["quality"].tolist()
    assert all(q.startswith(("usable: ", "ungradable: ")) for q in quality), quality
    assert not [q for q in quality if "_" in q or any(ch.isdigit() for ch in q)], quality
    banner = [a.value for a in [*app.warning, *app.error] if "Image quality" in a.value]
    assert len(banner) == 1 and "_" not in banner[0] and not any(ch.isdigit() for ch in banner[0]), banner
    assert app.session_state["model_runs"] == 2
    selector.set_value("left.png").run()
    assert any(c.startswith("Original (200 x 200)") for image in app.image for c in image.captions)
    assert app.dataframe[0].value[""].tolist() == ["▶", ""]
    assert app.session_state["model_runs"] == 2  # read once, for the overview
    app.select_slider(key="threshold_EX").set_value(0.05).run()  # the counts follow the thresholds
    assert app.dataframe[0].value["EX"].tolist() == ["1", "1"]
    assert app.session_state["model_runs"] == 2


@pytest.mark.parametrize(
    "source", ["/nonexistent/hydralanet-checkpoint", "hydralanet-tests/no-such-model"], ids=["folder", "hub"]
)
def test_unusable_configured_model_warns_and_falls_back_to_bundled(
    source: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HYDRALANET_MODEL", source)
    # Nothing listens on port 9 (discard): the Hub is unreachable, quickly.
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.setenv("HYDRALANET_HUB_TIMEOUT", "2")
    app = AppTest.from_file(str(APP), default_timeout=TIMEOUT).run()
    assert_clean(app)
    warnings = [w.value for w in app.warning if source in w.value]
    assert len(warnings) == 1 and "bundled model" in warnings[0] and "\n" not in warnings[0]
    bundled_name = json.loads((APP.parent / "weights" / "config.json").read_text())["name"]
    assert any(bundled_name in m.value for m in app.sidebar.markdown)
    assert any("From: bundled with the app" in c.value for c in app.sidebar.caption)

    click(app, "Try a sample")  # and the bundled model serves
    assert_clean(app)
    assert len(statistics(app)) == 4


# Each class's probability, the same over the whole photo, between two stops of its slider.
GRADED = {"EX": 0.205, "HE": 0.405, "MA": 0.605, "SE": 0.805}


@pytest.fixture(scope="module")
def graded_checkpoint(tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny checkpoint with each class's last layer set to a constant: probability GRADED[c]."""
    from hydralanet import load_model, save_checkpoint

    loaded = load_model(tiny_checkpoint, device="cpu")
    with torch.no_grad():
        for c, p in GRADED.items():
            last = loaded.model.head.branches[c][-1]
            last.weight.zero_()
            last.bias.fill_(float(np.log(p / (1 - p))))
    return save_checkpoint(loaded.model, tmp_path_factory.mktemp("graded") / "graded", loaded.config)


def test_each_slider_sets_its_own_class_threshold_one_stop_either_side(
    graded_checkpoint: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A model whose four classes have four different probabilities: each slider, moved alone to
    the stop below its class's probability, marks the whole field of view for that class only;
    one stop higher marks nothing. A slider wired to another class, or off by one stop, fails."""
    from hydralanet.config import threshold_stops

    monkeypatch.setenv("HYDRALANET_MODEL", str(graded_checkpoint))
    app = AppTest.from_file(str(APP), default_timeout=TIMEOUT)
    click(app.run(), "Try a sample")
    stops = threshold_stops(0.35)
    below = {c: max(s for s in stops if s < p) for c, p in GRADED.items()}
    above = {c: min(s for s in stops if s > p) for c, p in GRADED.items()}
    assert below == {"EX": 0.2, "HE": 0.4, "MA": 0.6, "SE": 0.8} and above == {
        "EX": 0.21,
        "HE": 0.41,
        "MA": 0.61,
        "SE": 0.81,
    }

    def found() -> dict[str, float]:
        assert_clean(app)
        return {c: row["% of FOV"] for c, row in statistics(app).items()}

    # Several sliders set before one rerun, as a visitor's changes between two reruns: each
    # state asserted below is the one a rerun per slider would have ended in.
    for c in CLASSES:  # every slider above every class's probability: nothing found
        app.select_slider(key=f"threshold_{c}").set_value(0.95)
    app.run()
    assert found() == dict.fromkeys(CLASSES, 0.0)
    for c in CLASSES:
        app.select_slider(key=f"threshold_{c}").set_value(below[c]).run()
        assert found() == {k: 100.0 if k == c else 0.0 for k in CLASSES}, c
        assert statistics(app)[c]["threshold"] == pytest.approx(below[c])
        app.select_slider(key=f"threshold_{c}").set_value(above[c]).run()
        assert found() == dict.fromkeys(CLASSES, 0.0), c
        app.select_slider(key=f"threshold_{c}").set_value(0.95)  # with the next slider's rerun
    for c in CLASSES:  # all four at once, then each raised one stop in turn
        app.select_slider(key=f"threshold_{c}").set_value(below[c])
    app.run()
    assert found() == dict.fromkeys(CLASSES, 100.0)
    for i, c in enumerate(CLASSES):
        app.select_slider(key=f"threshold_{c}").set_value(above[c]).run()
        assert found() == {k: 0.0 if j <= i else 100.0 for j, k in enumerate(CLASSES)}, c
    assert app.session_state["model_runs"] == 1  # the sliders never re-run the model


def test_sidebar_loads_another_model_and_resets_its_thresholds(
    app: AppTest, tiny_checkpoint: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HYDRALANET_ALLOW_LOCAL_MODELS", "1")  # the operator allows typed local paths
    app.run()
    assert any(f"From: {tiny_checkpoint}" in c.value for c in app.sidebar.caption)
    app.select_slider(key="threshold_MA").set_value(0.9).run()

    app.text_input(key="model_source_input").input("").run()  # empty: the bundled model
    click(app, "Load")
    assert_clean(app)
    assert not [w for w in app.warning if "bundled model instead" in w.value]
    assert any("From: bundled with the app" in c.value for c in app.sidebar.caption)
    bundled = json.loads((APP.parent / "weights" / "config.json").read_text())["thresholds"]
    assert app.select_slider(key="threshold_MA").value == pytest.approx(bundled["MA"])  # the new model's default

    app.text_input(key="model_source_input").input("/no/such/checkpoint").run()
    click(app, "Load")
    assert_clean(app)
    assert any("/no/such/checkpoint" in w.value and "bundled model" in w.value for w in app.warning)


def test_operator_controls_which_models_the_page_may_load(app: AppTest, monkeypatch: pytest.MonkeyPatch) -> None:
    """Typed local paths are refused unless allowed; an allow-list refuses everything else; a
    locked server offers no loader at all. Refusals are one line and nothing is loaded."""
    app.run()
    app.text_input(key="model_source_input").input("/etc").run()
    click(app, "Load")
    assert_clean(app)
    assert [e.value for e in app.sidebar.error] == [
        "/etc: local paths are not accepted from the page (the operator can allow them)"
    ]
    assert "model_source" not in app.session_state

    monkeypatch.setenv("HYDRALANET_ALLOWED_MODELS", "hydra/*, lab/model@v1")
    app.text_input(key="model_source_input").input("someone/else").run()
    click(app, "Load")
    assert [e.value for e in app.sidebar.error] == [
        "someone/else: not among the models this server allows (hydra/*, lab/model@v1)"
    ]
    assert "model_source" not in app.session_state

    monkeypatch.setenv("HYDRALANET_LOCK_MODEL", "1")
    app.run()
    assert not [t for t in app.text_input if t.key == "model_source_input"]
    assert not [b for b in app.button if b.label == "Load"]
    assert any("operator has fixed the model" in c.value for c in app.sidebar.caption)


def test_dicom_upload_gives_one_entry_per_frame_and_a_pdf_report(app: AppTest, monkeypatch: pytest.MonkeyPatch) -> None:
    """A two-frame DICOM upload is two photos (named as the CLI names them); the PDF report is
    one download for each; a broken .dcm is one line, no traceback."""
    import subprocess

    from streamlit.runtime.media_file_manager import MediaFileManager

    from training.dicom_check import make_dicom

    deferred: dict[str, object] = {}  # file name -> the download's data callable (run on a click)
    add_deferred = MediaFileManager.add_deferred

    def keep(self, data_callable, mimetype, coordinates, file_name=None, **kwargs):
        deferred[file_name] = data_callable
        return add_deferred(self, data_callable, mimetype, coordinates, file_name, **kwargs)

    monkeypatch.setattr(MediaFileManager, "add_deferred", keep)

    frames = [synthetic_fundus(200), synthetic_fundus(200)[::-1].copy()]
    app.run()
    app.file_uploader(key="uploads").set_value(
        [
            ("pair.dcm", make_dicom(frames, "rle", ImageLaterality="L"), "application/dicom"),
            ("broken.dcm", make_dicom(frames[0])[:-3000], "application/dicom"),
        ]
    ).run()
    assert_clean(app)
    selector = app.selectbox(key="image_choice")
    assert selector.options == ["pair_f1.dcm", "pair_f2.dcm", "broken.dcm"]
    assert len(app.error) == 1 and app.error[0].value.startswith("broken.dcm: cannot decode DICOM pixel data")

    selector.set_value("pair_f2.dcm").run()
    assert_clean(app)
    assert not [e for e in app.error if "pair" in e.value] and len(statistics(app)) == 4  # (a quality banner may show)
    assert [d.proto.label for d in app.get("download_button") if d.label == "Report (PDF)"] == ["Report (PDF)"]
    pdf = deferred["pair_f2.pdf"]()  # what a click downloads
    text = subprocess.run(["pdftotext", "-", "-"], input=pdf, capture_output=True, check=True).stdout.decode()
    assert pdf.startswith(b"%PDF") and "HydraLA-Net reading: pair_f2" in text and "not a medical device" in text
    assert "Eye left (from the DICOM header (ImageLaterality))" in " ".join(text.split())
    first_page = " ".join(text.split("\f")[0].split())
    assert "Training data none (untrained placeholder weights" in first_page  # what the model learnt from
    app.selectbox(key="image_choice").set_value("pair_f1.dcm").run()  # still offered for the next photo
    assert [d for d in app.get("download_button") if d.label == "Report (PDF)"]
    assert app.session_state["model_runs"] == 2  # one per frame


def test_dicom_identifiers_stay_off_the_page_and_out_of_every_download(
    app: AppTest, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every identifying header field planted (tests/deidentification.py) is searched for, in
    every form it could be printed in, on the page and in each download (PDF text included)."""
    from streamlit.runtime.media_file_manager import MediaFileManager

    from training.dicom_check import make_dicom

    from .deidentification import PLANTED, leaks, planted_in_file, readable

    files: dict[str, object] = {}  # file name -> its data, or the callable a click runs
    add, add_deferred = MediaFileManager.add, MediaFileManager.add_deferred

    def keep(self, data, mimetype, coordinates, file_name=None, **kwargs):
        files[file_name] = data
        return add(self, data, mimetype, coordinates, file_name, **kwargs)

    def keep_deferred(self, data_callable, mimetype, coordinates, file_name=None, **kwargs):
        files[file_name] = data_callable
        return add_deferred(self, data_callable, mimetype, coordinates, file_name, **kwargs)

    monkeypatch.setattr(MediaFileManager, "add", keep)
    monkeypatch.setattr(MediaFileManager, "add_deferred", keep_deferred)
    data = make_dicom(synthetic_fundus(200), "rle", ImageLaterality="L", **PLANTED)
    held = planted_in_file(data)
    assert held.keys() >= PLANTED.keys()
    app.run()
    app.file_uploader(key="uploads").set_value([("visit.dcm", data, "application/dicom")]).run()
    assert_clean(app)
    assert app.session_state["model_runs"] == 1
    downloads = {n: f() if callable(f) else f for n, f in files.items() if n}
    assert {"visit.pdf", "visit_summary.csv", "visit_summary.json", "visit_masks.zip"} <= downloads.keys()
    texts = {n: readable(n, d if isinstance(d, bytes) else str(d).encode()) for n, d in downloads.items()}
    texts["page"] = "\n".join(str(getattr(node, "proto", "")) for node in app._tree)
    assert "Identifiers withheld" in " ".join(texts["visit.pdf"].split())  # the PDF's text is read
    assert "Original (200 x 200)" in texts["page"] and "visit.dcm" in texts["visit_summary.csv"]
    assert leaks(texts, held) == []


def test_upload_replies_survive_the_start_of_a_script_run() -> None:
    """Streamlit clears a session's outgoing queue when a script run starts, keeping only its
    lifecycle messages; a queued reply to the browser's upload-URL request went with them and
    that upload was lost. With the app's workaround the reply stays, once, and the rest goes."""
    from streamlit.proto.ForwardMsg_pb2 import ForwardMsg
    from streamlit.runtime.forward_msg_queue import ForwardMsgQueue

    from webapp.serve import keep_upload_replies

    def queue() -> ForwardMsgQueue:
        q = ForwardMsgQueue()
        reply = ForwardMsg()
        reply.file_urls_response.response_id = "upload-1"
        delta = ForwardMsg()
        delta.metadata.delta_path[:] = [0, 0]
        delta.delta.new_element.markdown.body = "old"
        q.enqueue(reply)
        q.enqueue(delta)
        return q

    keep_upload_replies()
    keep_upload_replies()  # idempotent: the reply is kept once, not twice
    q = queue()
    q.clear(retain_lifecycle_msgs=True)  # what a starting script run does
    assert [m.file_urls_response.response_id for m in q.flush()] == ["upload-1"]
    q = queue()
    q.clear()  # a session's full reset keeps nothing
    assert q.flush() == []
