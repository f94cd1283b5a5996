"""Load test of the web app: N browser sessions at once against one ``streamlit run app.py``.

Starts the app (bundled model unless ``--model``), then for each N in ``--visitors``: opens N
headless-chromium sessions, each uploads a photo at the same moment (``--photo``: a 4288 x 2848
JPEG or a 1024 px PNG made from the CC0 sample photo), waits for its result (the overlay
shown, then the whole page with its reading), then moves the EX threshold slider and waits for
the redraw. With ``--bad``, every other session uploads a bad
file instead (corrupt JPEG, zero bytes, 9000 x 9000 px) and must get a one-line error while
the others work. Reports per N: time to first result (median, p95), slider redraw (median,
p95; the overlay alone, which the page shows before its reading), errors, the server's peak RSS, and its RSS once the sessions have closed and the server
has let their results go, against the baseline (the server after one warm-up session).

    .venv/bin/python tools/load_test.py --visitors 1,4,8,16 --photo big
    .venv/bin/python tools/load_test.py --visitors 16 --photo big --bad
    .venv/bin/python tools/load_test.py --visitors 16,16 --photo big --two-step

``--two-step``: every visitor uploads twice, the second upload once the first is answered:
half of them a corrupt file then the photo, the others the photo then a second photo
(3000 x 2000); each must see both answers (the time to the second result is reported).

Needs the test requirements (Playwright) and Debian's chromium. Writes
``artifacts/load_test/<photo>[-bad].json`` and prints a table.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-dev-shm-usage"]
CONNECTED = "[data-testid='stApp'][data-test-connection-state='CONNECTED']"
REDRAWN = """() => document.querySelector("[data-testid='stApp']").dataset.testScriptState === 'notRunning'
    && [...document.images].every(image => image.complete)"""
# Set before a key press: notes when the script starts its rerun, so the redraw wait cannot
# end on the idle state from before the rerun.
WATCH_RUN = """() => {
    window.__ran = false;
    const app = document.querySelector("[data-testid='stApp']");
    new MutationObserver(() => { if (app.dataset.testScriptState === 'running') window.__ran = true; })
        .observe(app, {attributes: true, attributeFilter: ['data-test-script-state']});
}"""
RAN_AND_REDRAWN = "() => window.__ran === true && (" + REDRAWN + ")()"
RESULT_TIMEOUT_S = 600
PAGE_TIMEOUT_S = 180
SESSION_TTL_S = 120  # Streamlit's server.disconnectedSessionTTL: closed sessions kept for a reconnect
SETTLE_S = 25  # after the sessions close: the app's sweeper (10 s) lets their results go


def make_inputs(folder: Path) -> dict[str, Path]:
    from skimage import data

    folder.mkdir(parents=True, exist_ok=True)
    retina = cv2.cvtColor(data.retina(), cv2.COLOR_RGB2BGR)
    big, small = folder / "fundus_4288x2848.jpg", folder / "fundus_1024.png"
    canvas = np.zeros((2848, 4288, 3), np.uint8)  # a 3:2 camera frame, the round field in the middle
    side = 2848
    canvas[:, (4288 - side) // 2 : (4288 + side) // 2] = cv2.resize(retina, (side, side), interpolation=cv2.INTER_CUBIC)
    cv2.imwrite(str(big), canvas, [cv2.IMWRITE_JPEG_QUALITY, 92])
    cv2.imwrite(str(small), cv2.resize(retina, (1024, 1024), interpolation=cv2.INTER_AREA))
    corrupt, empty, huge = folder / "corrupt.jpg", folder / "empty.png", folder / "huge_9000.png"
    corrupt.write_bytes(b"\xff\xd8\xff\xe0" + bytes(range(256)) * 64)
    empty.write_bytes(b"")
    cv2.imwrite(str(huge), np.full((9000, 9000), 40, np.uint8))  # 81 Mpixel, a small file
    second = folder / "fundus_second_3000x2000.jpg"  # another size: its result is told apart by its caption
    cv2.imwrite(str(second), cv2.resize(canvas, (3000, 2000), interpolation=cv2.INTER_AREA)[:, ::-1])
    return {"big": big, "small": small, "second": second, "bad": [corrupt, empty, huge]}


class RssMonitor:
    """Samples a process's resident memory (``/proc/PID/status``) every 0.1 s."""

    def __init__(self, pid: int) -> None:
        self.pid, self.peak, self._stop = pid, 0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def rss(self) -> int:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        return 0

    def _run(self) -> None:
        while not self._stop.wait(0.1):
            try:
                self.peak = max(self.peak, self.rss())
            except OSError:
                return

    def reset(self) -> None:
        self.peak = self.rss()

    def stop(self) -> None:
        self._stop.set()


def start_server(port: int, model: str | None, log_path: Path, app: Path = ROOT / "app.py") -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k != "HYDRALANET_MODEL"}
    env.update({"PYTHONUNBUFFERED": "1", **({"HYDRALANET_MODEL": model} if model else {})})
    command = [sys.executable, "-m", "streamlit", "run", str(app), "--server.port", str(port)]
    command += ["--server.address", "127.0.0.1", "--server.headless", "true", "--server.fileWatcherType", "none"]
    with open(log_path, "w") as log:
        process = subprocess.Popen(command, cwd=app.parent, env=env, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"streamlit exited with {process.returncode}; see {log_path}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2):
                return process
        except OSError:
            time.sleep(0.25)
    process.kill()
    raise SystemExit(f"streamlit not healthy after 120 s; see {log_path}")


async def session(browser, url: str, upload: Path, bad: bool, start: asyncio.Event) -> dict:
    """One visitor: upload, wait for the result (or the error), move the EX slider once."""
    context = await browser.new_context(viewport={"width": 1280, "height": 900})
    page = await context.new_page()
    out: dict = {"file": upload.name, "bad": bad}
    try:
        await page.goto(url, timeout=PAGE_TIMEOUT_S * 1000)  # 16 browsers and the server share 2 cores
        await page.locator(CONNECTED).wait_for(timeout=PAGE_TIMEOUT_S * 1000)
        await page.get_by_text("Upload one or more fundus photos").wait_for(timeout=60_000)
        await start.wait()
        started = time.perf_counter()
        await page.get_by_test_id("stFileUploaderDropzoneInput").set_input_files(str(upload))
        if bad:
            await page.get_by_test_id("stAlertContentError").wait_for(timeout=RESULT_TIMEOUT_S * 1000)
            out["error_shown_s"] = time.perf_counter() - started
            out["message"] = (await page.get_by_test_id("stAlertContentError").inner_text()).strip()
        else:
            await page.get_by_text("Lesion overlay", exact=True).wait_for(timeout=RESULT_TIMEOUT_S * 1000)
            out["overlay_shown_s"] = time.perf_counter() - started
            await page.wait_for_function(REDRAWN, polling="raf", timeout=RESULT_TIMEOUT_S * 1000)
            out["first_result_s"] = time.perf_counter() - started
            out["queued_seen"] = await page.get_by_text("Queued:").count() > 0
            slider = page.get_by_role("slider", name=re.compile(r"^EX"))
            await slider.focus()
            await page.evaluate(WATCH_RUN)
            started = time.perf_counter()
            await page.keyboard.press("ArrowRight")
            await page.wait_for_function(RAN_AND_REDRAWN, polling="raf", timeout=RESULT_TIMEOUT_S * 1000)
            out["redraw_s"] = time.perf_counter() - started
        out["exceptions"] = await page.get_by_test_id("stException").count()
        if not bad:
            out["errors_shown"] = await page.get_by_test_id("stAlertContentError").count()
    except Exception as exc:  # a session that fails is a result to report, not a crash of the test
        out["failure"] = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    finally:
        await context.close()
    return out


async def wait_photo(page, upload: Path) -> None:
    """Until the page shows ``upload``'s results: the selector names it (several photos) and
    its "Original" caption is drawn, the script idle."""
    h, w = cv2.imread(str(upload), cv2.IMREAD_UNCHANGED).shape[:2]
    await page.get_by_text(f"Original ({w} x {h})").first.wait_for(timeout=RESULT_TIMEOUT_S * 1000)
    await page.wait_for_function(REDRAWN, polling="raf", timeout=RESULT_TIMEOUT_S * 1000)


async def two_step_session(browser, url: str, first: Path, second: Path, bad: bool, start: asyncio.Event) -> dict:
    """A visitor who uploads twice: a corrupt file then a photo (``first`` bad), or a photo then
    another; the second upload is made once the first is answered. Each must be answered."""
    context = await browser.new_context(viewport={"width": 1280, "height": 900})
    page = await context.new_page()
    out: dict = {"file": f"{first.name} then {second.name}", "bad": False, "two_step": True}
    try:
        await page.goto(url, timeout=PAGE_TIMEOUT_S * 1000)
        await page.locator(CONNECTED).wait_for(timeout=PAGE_TIMEOUT_S * 1000)
        await page.get_by_text("Upload one or more fundus photos").wait_for(timeout=60_000)
        await start.wait()
        started = time.perf_counter()
        uploader = page.get_by_test_id("stFileUploaderDropzoneInput")
        await uploader.set_input_files(str(first))
        if bad:
            await page.get_by_test_id("stAlertContentError").wait_for(timeout=RESULT_TIMEOUT_S * 1000)
        else:
            await wait_photo(page, first)
        out["first_answered_s"] = time.perf_counter() - started
        started = time.perf_counter()
        await uploader.set_input_files(str(second))
        await wait_photo(page, second)
        out["first_result_s"] = time.perf_counter() - started  # the second upload's result
        out["exceptions"] = await page.get_by_test_id("stException").count()
    except Exception as exc:  # a visitor who is never answered is a result to report
        out["failure"] = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    finally:
        await context.close()
    return out


async def probe(url: str) -> None:
    """Open one page and close it (a write to Streamlit's session store, which drops the
    sessions whose reconnect window has passed)."""
    from playwright.async_api import async_playwright

    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = await browser.new_page()
        await page.goto(url)
        await page.locator(CONNECTED).wait_for(timeout=60_000)
        await page.close()
        await browser.close()


async def run_round(url: str, n: int, inputs: dict, photo: str, bad: bool, two_step: bool = False) -> list[dict]:
    from playwright.async_api import async_playwright

    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        start = asyncio.Event()
        jobs = []
        for i in range(n):
            if two_step:  # half: a corrupt file then the photo; half: the photo then a second one
                first, second = (inputs["bad"][0], inputs[photo]) if i % 2 else (inputs[photo], inputs["second"])
                task = two_step_session(browser, url, first, second, i % 2 == 1, start)
                jobs.append(asyncio.create_task(task))
                continue
            is_bad = bad and i % 2 == 1
            upload = inputs["bad"][(i // 2) % len(inputs["bad"])] if is_bad else inputs[photo]
            jobs.append(asyncio.create_task(session(browser, url, upload, is_bad, start)))
        await asyncio.sleep(2 + 0.5 * n)  # every page loaded and waiting, then all upload at once
        start.set()
        results = await asyncio.gather(*jobs)
        await browser.close()
    return results


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    return float(np.percentile(values, q))


def summarise(n: int, results: list[dict], peak: int, after: int, baseline: int) -> dict:
    good = [r for r in results if not r["bad"]]
    first = [r["first_result_s"] for r in good if "first_result_s" in r]
    overlay = [r["overlay_shown_s"] for r in good if "overlay_shown_s" in r]
    redraw = [r["redraw_s"] for r in good if "redraw_s" in r]
    problems = [r for r in results if r.get("failure") or r.get("exceptions") or r.get("errors_shown")]
    bad_ok = [r for r in results if r["bad"] and "message" in r and not r.get("exceptions")]
    return {
        "sessions": n,
        "results": len(first),
        "first_result_median_s": statistics.median(first) if first else None,
        "first_result_p95_s": percentile(first, 95),
        "overlay_shown_median_s": statistics.median(overlay) if overlay else None,
        "overlay_shown_p95_s": percentile(overlay, 95),
        "redraw_median_s": statistics.median(redraw) if redraw else None,
        "redraw_p95_s": percentile(redraw, 95),
        "bad_uploads_answered": f"{len(bad_ok)}/{sum(r['bad'] for r in results)}",
        "errors": len(problems),
        "peak_rss_gb": peak / 1e9,
        "rss_after_close_gb": after / 1e9,
        "baseline_rss_gb": baseline / 1e9,
        "sessions_detail": results,
    }


def settle(monitor: RssMonitor, baseline: int) -> int:
    """RSS once the closed sessions' results are let go (at most SETTLE_S seconds)."""
    deadline = time.monotonic() + SETTLE_S
    rss = monitor.rss()
    while time.monotonic() < deadline and rss > baseline * 1.05:
        time.sleep(1)
        rss = monitor.rss()
    return rss


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    visitors = "comma-separated numbers of visitors (browser tabs) at once (default 1,4,8,16)"
    parser.add_argument("--visitors", "--sessions", dest="visitors", default="1,4,8,16", help=visitors)
    parser.add_argument("--photo", choices=("big", "small"), default="big", help="4288x2848 JPEG or 1024 px PNG")
    parser.add_argument("--bad", action="store_true", help="every other session uploads a bad file")
    parser.add_argument(
        "--two-step",
        action="store_true",
        help="every visitor uploads twice: half a corrupt file then the photo, half the photo then a second one",
    )
    parser.add_argument("--model", help="HYDRALANET_MODEL for the server (default: the bundled model)")
    parser.add_argument("--out", type=Path, default=ROOT / "artifacts" / "load_test")
    parser.add_argument(
        "--app", type=Path, default=ROOT / "app.py", help="the Streamlit script to serve (another version, to compare)"
    )
    parser.add_argument(
        "--after-ttl",
        action="store_true",
        help="at the end, wait out Streamlit's reconnect window for closed sessions (server.disconnectedSessionTTL,"
        " 120 s), open and close one page (Streamlit drops expired sessions when its session store is next"
        " written), and measure the RSS again",
    )
    args = parser.parse_args(argv)
    counts = [int(n) for n in args.visitors.split(",")]
    args.out.mkdir(parents=True, exist_ok=True)
    inputs = make_inputs(args.out / "inputs")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    server = start_server(port, args.model, args.out / "streamlit.log", args.app)
    monitor = RssMonitor(server.pid)
    rounds = []
    try:
        asyncio.run(run_round(url, 1, inputs, "small", False))  # warm-up: model loaded, code paths run
        baseline = settle(monitor, 0)
        for n in counts:
            monitor.reset()
            started = time.perf_counter()
            kept_before = replies_kept(args.out / "streamlit.log")
            results = asyncio.run(run_round(url, n, inputs, args.photo, args.bad, args.two_step))
            wall = time.perf_counter() - started
            peak = monitor.peak
            after = settle(monitor, baseline)
            row = summarise(n, results, peak, after, baseline)
            row["wall_s"] = wall
            row["upload_replies_kept"] = replies_kept(args.out / "streamlit.log") - kept_before
            rounds.append(row)
            print(format_row(row), flush=True)
        if args.after_ttl:
            time.sleep(SESSION_TTL_S + 5)
            asyncio.run(probe(url))
            time.sleep(SETTLE_S)
            after_ttl = monitor.rss()
            print(f"after Streamlit's reconnect window: RSS {after_ttl / 1e9:.2f} GB (baseline {baseline / 1e9:.2f})")
            rounds[-1]["rss_after_ttl_gb"] = after_ttl / 1e9
    finally:
        monitor.stop()
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
    report = {
        "photo": {"big": "4288 x 2848 JPEG", "small": "1024 x 1024 PNG"}[args.photo],
        "bad_uploads": args.bad,
        "two_step": args.two_step,
        "model": args.model or "bundled",
        "machine": f"{os.cpu_count()} CPUs",
        "rounds": rounds,
    }
    name = f"{args.photo}{'-bad' if args.bad else ''}{'-two-step' if args.two_step else ''}.json"
    (args.out / name).write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out / name}")
    return 0 if all(r["errors"] == 0 for r in rounds) else 1


def replies_kept(log_path: Path) -> int:
    """How often the server kept an upload's URL reply across the start of a script run (the
    Streamlit race that lost uploads: ``webapp.serve.keep_upload_replies`` logs each time)."""
    text = log_path.read_text(errors="replace") if log_path.exists() else ""
    return sum(int(m[1]) for m in re.finditer(r"kept (\d+) upload URL repl", text))


def format_row(row: dict) -> str:
    def s(v: float | None) -> str:
        return "-" if v is None else f"{v:.1f}"

    return (
        f"N={row['sessions']:>2}  results {row['results']:>2}  first result median {s(row['first_result_median_s'])} s"
        f"  p95 {s(row['first_result_p95_s'])} s  overlay median {s(row.get('overlay_shown_median_s'))} s"
        f"  p95 {s(row.get('overlay_shown_p95_s'))} s  redraw median {s(row['redraw_median_s'])} s"
        f"  p95 {s(row['redraw_p95_s'])} s  bad answered {row['bad_uploads_answered']}  errors {row['errors']}"
        f"  peak RSS {row['peak_rss_gb']:.2f} GB  after close {row['rss_after_close_gb']:.2f} GB"
        f" (baseline {row['baseline_rss_gb']:.2f})  upload replies kept {row.get('upload_replies_kept', 0)}"
    )


if __name__ == "__main__":
    sys.exit(main())
