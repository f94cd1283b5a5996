"""The real ``huggingface_hub`` client against the local HubServer stand-in (tests/hub_server.py)."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

try:  # tests/ may become a package later
    from .conftest_hub import HUB_TOKEN, hub, point_hf_client_at  # noqa: F401 - `hub` is the fixture
    from .hub_server import HubServer
except ImportError:
    from conftest_hub import HUB_TOKEN, hub, point_hf_client_at  # noqa: F401
    from hub_server import HubServer

import huggingface_hub  # imported BEFORE the fixture sets HF_ENDPOINT: the fixture must cope with that
from huggingface_hub import HfApi, hf_hub_download, snapshot_download
from huggingface_hub.errors import (
    EntryNotFoundError,
    HfHubHTTPError,
    RemoteEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

REPO = "hydra/lesions"


def _read(path: str | Path) -> bytes:
    return Path(path).read_bytes()


def test_fixture_points_client_at_server(hub: HubServer, tmp_path: Path):
    from huggingface_hub import constants

    assert constants.ENDPOINT == hub.url == os.environ["HF_ENDPOINT"]
    assert constants.HF_HUB_CACHE.startswith(str(tmp_path))
    assert huggingface_hub.hf_api.api.endpoint == hub.url  # module-level functions use this singleton
    assert not constants.is_offline_mode()


def test_download_main_and_pinned_older_sha(hub: HubServer):
    old = hub.add_commit(REPO, {"config.json": b'{"v": 1}'})
    new = hub.add_commit(REPO, {"config.json": b'{"v": 2}', "extra.txt": b"x"})
    assert old != new and len(new) == 40

    assert _read(hf_hub_download(REPO, "config.json")) == b'{"v": 2}'
    pinned = hf_hub_download(REPO, "config.json", revision=old)
    assert _read(pinned) == b'{"v": 1}'
    assert f"/snapshots/{old}/" in pinned
    assert ("HEAD", f"/{REPO}/resolve/{old}/config.json") in hub.requests

    # A pinned sha already in the cache is served without any request.
    n = len(hub.requests)
    assert hf_hub_download(REPO, "config.json", revision=old) == pinned
    assert len(hub.requests) == n


def test_branches(hub: HubServer):
    hub.add_commit(REPO, {"a.txt": b"main"})
    dev = hub.add_commit(REPO, {"a.txt": b"dev"}, branch="dev")
    assert _read(hf_hub_download(REPO, "a.txt", revision="dev")) == b"dev"
    assert _read(hf_hub_download(REPO, "a.txt")) == b"main"
    assert hub.head(REPO, "dev") == dev


def test_snapshot_download(hub: HubServer):
    old = hub.add_commit(REPO, {"config.json": b"{}", "weights/model.safetensors": b"\x00" * 100})
    hub.add_commit(REPO, {"config.json": b'{"new": true}', "README.md": b"# card"})

    folder = Path(snapshot_download(REPO))
    assert sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()) == [
        "README.md",
        "config.json",
    ]
    assert (folder / "config.json").read_bytes() == b'{"new": true}'

    pinned = Path(snapshot_download(REPO, revision=old, allow_patterns=["*.json", "weights/*"]))
    assert pinned.name == old
    assert (pinned / "weights" / "model.safetensors").read_bytes() == b"\x00" * 100
    assert any(path.startswith(f"/api/models/{REPO}/tree/{old}") for _, path in hub.requests)


def test_missing_repo(hub: HubServer):
    with pytest.raises(RepositoryNotFoundError):
        hf_hub_download("nobody/nothing", "config.json")
    with pytest.raises(RepositoryNotFoundError):
        snapshot_download("nobody/nothing")


def test_missing_file(hub: HubServer):
    hub.add_commit(REPO, {"config.json": b"{}"})
    with pytest.raises(RemoteEntryNotFoundError) as info:
        hf_hub_download(REPO, "missing.bin")
    assert isinstance(info.value, EntryNotFoundError)


def test_missing_revision(hub: HubServer):
    hub.add_commit(REPO, {"config.json": b"{}"})
    with pytest.raises(RevisionNotFoundError):
        hf_hub_download(REPO, "config.json", revision="no-such-branch")
    with pytest.raises(RevisionNotFoundError):
        hf_hub_download(REPO, "config.json", revision="0" * 40)
    with pytest.raises(RevisionNotFoundError):
        snapshot_download(REPO, revision="no-such-branch")


def test_private_repo_needs_token(hub: HubServer, monkeypatch: pytest.MonkeyPatch):
    hub.add_commit("hydra/private", {"config.json": b"secret"}, private=True)

    with pytest.raises(RepositoryNotFoundError):  # no token: indistinguishable from a missing repo
        hf_hub_download("hydra/private", "config.json")
    with pytest.raises(RepositoryNotFoundError):
        snapshot_download("hydra/private")

    monkeypatch.setenv("HF_TOKEN", "hf_wrong")
    with pytest.raises(HfHubHTTPError) as info:  # the Hub's "Invalid credentials" 401
        hf_hub_download("hydra/private", "config.json")
    assert info.value.response.status_code == 401

    monkeypatch.setenv("HF_TOKEN", hub.token)  # read at call time by the client
    assert _read(hf_hub_download("hydra/private", "config.json")) == b"secret"
    assert (Path(snapshot_download("hydra/private")) / "config.json").read_bytes() == b"secret"
    assert any(r.token == HUB_TOKEN for r in hub.request_log)


def test_create_repo_and_upload_folder(hub: HubServer, tmp_path: Path):
    src = tmp_path / "ckpt"
    (src / "sub").mkdir(parents=True)
    payload = {
        "config.json": b'{"arch": "hydra"}',
        "README.md": b"---\nlicense: mit\n---\n# HydraLA-Net\n",
        "sub/notes.txt": "ünïcode".encode(),
    }
    for name, content in payload.items():
        (src / name).write_bytes(content)

    api = HfApi(token=hub.token)
    url = api.create_repo("hydra/uploaded", exist_ok=True)
    assert url.repo_id == "hydra/uploaded"
    api.create_repo("hydra/uploaded", exist_ok=True)  # 409 swallowed
    info = api.upload_folder(folder_path=src, repo_id="hydra/uploaded", commit_message="first upload")
    assert info.oid == hub.head("hydra/uploaded")
    assert hub.files("hydra/uploaded") == payload

    folder = Path(snapshot_download("hydra/uploaded", revision=info.oid))
    for name, content in payload.items():
        assert (folder / name).read_bytes() == content

    # A second upload moves the branch; the first commit stays downloadable by sha.
    (src / "config.json").write_bytes(b'{"arch": "hydra", "v": 2}')
    info2 = api.upload_folder(folder_path=src, repo_id="hydra/uploaded", commit_message="second")
    assert info2.oid != info.oid
    assert _read(hf_hub_download("hydra/uploaded", "config.json")) == b'{"arch": "hydra", "v": 2}'
    assert _read(hf_hub_download("hydra/uploaded", "config.json", revision=info.oid)) == b'{"arch": "hydra"}'


def test_upload_requires_token(hub: HubServer, tmp_path: Path):
    with pytest.raises(HfHubHTTPError) as info:
        HfApi(token=False).create_repo("hydra/anon")
    assert info.value.response.status_code == 401


def test_large_binary_round_trip(hub: HubServer, tmp_path: Path):
    blob = os.urandom(5 * 1024 * 1024)
    src = tmp_path / "big"
    src.mkdir()
    (src / "model.safetensors").write_bytes(blob)
    api = HfApi(token=hub.token)
    api.create_repo("hydra/big")
    api.upload_folder(folder_path=src, repo_id="hydra/big")
    assert hub.files("hydra/big")["model.safetensors"] == blob
    assert _read(hf_hub_download("hydra/big", "model.safetensors")) == blob


def test_lfs_style_redirect_to_cdn(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Big files as on the real Hub: 302 to another origin, metadata in X-Linked-*, no auth sent there."""
    from huggingface_hub.utils import close_session

    blob = os.urandom(3 * 1024 * 1024)
    with HubServer(token=HUB_TOKEN, lfs_threshold=1024 * 1024) as server:
        point_hf_client_at(monkeypatch, server.url, tmp_path / "hf_home")
        monkeypatch.setenv("HF_TOKEN", HUB_TOKEN)
        server.add_commit("hydra/lfs", {"model.safetensors": blob, "config.json": b"{}"}, private=True)
        try:
            assert _read(hf_hub_download("hydra/lfs", "model.safetensors")) == blob
            folder = Path(snapshot_download("hydra/lfs"))
            assert (folder / "model.safetensors").read_bytes() == blob
        finally:
            close_session()
        cdn = [r for r in server.request_log if r.cdn]
        assert cdn and all(r.token is None for r in cdn)  # the client strips auth for the CDN


def test_renamed_repo_redirect(hub: HubServer):
    hub.add_commit("hydra/old-name", {"config.json": b"{}"})
    hub.rename_repo("hydra/old-name", "hydra/new-name")
    assert _read(hf_hub_download("hydra/old-name", "config.json")) == b"{}"
    assert ("HEAD", "/hydra/new-name/resolve/main/config.json") in hub.requests


def test_server_stops_cleanly():
    before = set(threading.enumerate())
    with HubServer() as server:
        server.add_commit(REPO, {"a": b"1"})
        import httpx2

        with httpx2.Client() as client:  # keep-alive connection left open on purpose
            assert client.get(f"{server.url}/{REPO}/resolve/main/a").content == b"1"
            server.stop()
    assert set(threading.enumerate()) <= before
