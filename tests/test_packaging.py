"""The package as installed: ``pip install .`` gives the ``hydralanet`` command, which finds the
bundled model and the report fonts away from the repository; pyproject's pins are requirements'."""

from __future__ import annotations

import csv
import os
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import cv2

ROOT = Path(__file__).resolve().parent.parent


def _pins(lines: list[str]) -> dict[str, str]:
    pins = {}
    for line in lines:
        line = line.split("#")[0].strip()
        if line and not line.startswith("-r"):
            name, version = re.fullmatch(r"([A-Za-z0-9_.\-\[\],]+)==(\S+)", line).groups()
            pins[name.lower().replace("_", "-")] = version
    return pins


def test_pyproject_pins_are_the_requirements_pins() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    runtime = _pins((ROOT / "requirements.txt").read_text().splitlines())
    dev = _pins((ROOT / "requirements-dev.txt").read_text().splitlines())
    declared = _pins(project["dependencies"] + extras["app"] + extras["train"] + extras["onnx"] + extras["openvino"])
    declared.update(_pins([d for d in extras["dev"] if "==" in d]))
    assert declared == {**runtime, **dev}
    assert extras["dev"][0] == "hydralanet[app,train,onnx,openvino]"


def test_installed_package_runs_predict_away_from_the_repository(tmp_path: Path, retina) -> None:
    # Built from a copy of what the package is made of: an in-tree build leaves build/ behind,
    # whose stale files a later build would pack.
    src, wheels = tmp_path / "src", tmp_path / "wheels"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, src / name)
    for name in ("hydralanet", "weights"):
        shutil.copytree(ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", str(src), "-w", str(wheels)],
        check=True,
        cwd=tmp_path,
    )
    (wheel,) = wheels.glob("hydralanet-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert {"hydralanet/bundled/model.safetensors", "hydralanet/bundled/config.json"} <= set(names)
    assert {"hydralanet/bundled/landmarks.safetensors", "hydralanet/bundled/landmarks.json"} <= set(names)
    assert "hydralanet/fonts/DejaVuSans.ttf" in names and not any(n.startswith(("tests/", "training/")) for n in names)
    site = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(site), str(wheel)], check=True
    )
    work = tmp_path / "elsewhere"
    work.mkdir()
    cv2.imwrite(str(work / "sample.jpg"), cv2.cvtColor(cv2.resize(retina, (512, 512)), cv2.COLOR_RGB2BGR))
    env = {**os.environ, "PYTHONPATH": str(site), "HF_HUB_OFFLINE": "1"}
    script = site / "bin" / "hydralanet"
    # The installed command run as ``python hydralanet predict ...`` would run it; then, in the
    # same interpreter (one start-up of torch, not two), where the code and model it used lie.
    run_then_tell = (
        "import runpy, sys\n"
        "code = 'the command did not exit'\n"
        "sys.argv = [sys.argv[1], 'predict', 'sample.jpg', '--out', 'o']\n"
        "try:\n"
        "    runpy.run_path(sys.argv[0], run_name='__main__')\n"
        "except SystemExit as end:\n"
        "    code = end.code\n"
        "import hydralanet.checkpoints.sources as c\n"
        "print(c.__file__); print(c.BUNDLED_DIR)\n"
        "sys.exit(code)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", run_then_tell, str(script)],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "bundled" in done.stdout + done.stderr
    where = done.stdout.splitlines()[-2:]
    assert where == [str(site / "hydralanet" / "checkpoints" / "sources.py"), str(site / "hydralanet" / "bundled")]
    rows = list(csv.DictReader((work / "o" / "summary.csv").read_text().splitlines()))
    assert [r["lesion"] for r in rows] == ["EX", "HE", "MA", "SE"] and rows[0]["image"] == "sample"
    assert (work / "o" / "sample" / "EX.png").exists()
