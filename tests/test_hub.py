"""load_model() through the real huggingface_hub client against the local Hub stand-in."""

from __future__ import annotations

import socket
import threading
from pathlib import Path

import pytest
import torch

from hydralanet import HydraLANet, load_model, save_checkpoint
from hydralanet.checkpoints.hub import HubError
from hydralanet.config import CheckpointConfig, PreprocessConfig
from hydralanet.inference.loaded import load_model_or_bundled

REPO = "hydra/demo"


def _checkpoint_files(tmp_path: Path, seed: int) -> tuple[dict[str, bytes], HydraLANet]:
    torch.manual_seed(seed)
    model = HydraLANet(encoder="resnet18", decoder_channels=8).eval()
    folder = save_checkpoint(
        model,
        tmp_path / f"ckpt{seed}",
        CheckpointConfig(preprocessing=PreprocessConfig(input_size=64), name=f"v{seed}"),
    )
    return {p.name: p.read_bytes() for p in folder.iterdir()}, model


def _same_outputs(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        return torch.equal(a(x), b(x))


def test_hub_round_trip_and_pinned_revision(hub, tmp_path):
    files1, model1 = _checkpoint_files(tmp_path, 1)
    files2, model2 = _checkpoint_files(tmp_path, 2)
    sha1 = hub.add_commit(REPO, files1)
    sha2 = hub.add_commit(REPO, files2)

    latest = load_model(REPO, device="cpu")
    assert latest.identity["revision"] == sha2 and latest.config.name == "v2"
    assert _same_outputs(latest.model, model2)  # bit-identical through the Hub

    pinned = load_model(f"{REPO}@{sha1}", device="cpu")
    assert pinned.identity["revision"] == sha1 and pinned.identity["source"] == f"{REPO}@{sha1}"
    assert _same_outputs(pinned.model, model1)


def test_private_repo_needs_token(hub, tmp_path, monkeypatch):
    files, model = _checkpoint_files(tmp_path, 3)
    hub.add_commit("lab/private", files, private=True)
    with pytest.raises(HubError, match="lab/private: not found .*HF_TOKEN"):
        load_model("lab/private")
    monkeypatch.setenv("HF_TOKEN", hub.token)
    assert _same_outputs(load_model("lab/private", device="cpu").model, model)


def test_missing_repo_file_and_revision(hub, tmp_path):
    files, _ = _checkpoint_files(tmp_path, 4)
    hub.add_commit(REPO, files)
    hub.add_commit("hydra/no-weights", {"config.json": files["config.json"]})
    cases = [
        ("hydra/nothing-here", "hydra/nothing-here: not found"),
        (f"{REPO}@v9.9", "revision 'v9.9' not found"),
        ("hydra/no-weights", "not a hydralanet checkpoint \\(model.safetensors missing\\)"),
    ]
    for source, message in cases:
        with pytest.raises(HubError, match=message) as err:
            load_model(source)
        assert "\n" not in str(err.value)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_hub_fails_fast_and_falls_back(hub, monkeypatch):
    import huggingface_hub

    downloads, snapshot_download = [], huggingface_hub.snapshot_download

    def no_download(*args, **kwargs):  # the cache lookup (local_files_only) goes through
        if not kwargs.get("local_files_only"):
            downloads.append(args)
            raise AssertionError("a download from an unreachable Hub")
        return snapshot_download(*args, **kwargs)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", no_download)
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{_closed_port()}")
    with pytest.raises(HubError, match="Hub unreachable .*no cached copy"):
        load_model(REPO)
    assert downloads == []  # not the client's download path, which retries for ~23 s
    # A server that drops every connection: one request, no retries.
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(16)
        connections = []

        def drop_all() -> None:
            while True:
                try:
                    connection, _ = server.accept()
                except OSError:  # closed: the test is over
                    return
                connections.append(1)
                connection.close()

        threading.Thread(target=drop_all, daemon=True).start()
        monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{server.getsockname()[1]}")
        with pytest.raises(HubError, match="Hub unreachable .*no cached copy"):
            load_model(REPO)
    assert len(connections) == 1 and downloads == []
    loaded, warning = load_model_or_bundled(REPO, device="cpu")
    assert loaded.identity["source"] == "bundled"
    assert warning.startswith(f"Hub repo {REPO}: Hub unreachable") and "bundled" in warning


def test_unreachable_hub_uses_the_cached_copy(hub, tmp_path, monkeypatch):
    files, model = _checkpoint_files(tmp_path, 5)
    sha = hub.add_commit(REPO, files)
    load_model(REPO)  # fills the cache
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{_closed_port()}")
    cached = load_model(REPO, device="cpu")
    assert cached.identity["revision"] == sha and _same_outputs(cached.model, model)
