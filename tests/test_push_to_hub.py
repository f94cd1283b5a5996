"""training.push_to_hub through the real huggingface_hub client against the local Hub stand-in."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from hydralanet import load_model
from training.push_to_hub import UPLOADED, main

from .conftest_hub import hub  # noqa: F401 - the fixture

REPO = "hydra/pushed"


def _outputs(model: torch.nn.Module) -> torch.Tensor:
    x = torch.randn(2, 3, 128, 128, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        return model(x)


@pytest.fixture
def run_folder(tiny_checkpoint, tmp_path) -> Path:
    """A checkpoint folder as training leaves `last`: the checkpoint plus training state."""
    folder = tmp_path / "last"
    shutil.copytree(tiny_checkpoint, folder)
    (folder / "training_state.json").write_text("{}\n")
    return folder


def test_push_uploads_checkpoint_that_loads_back_identically(hub, run_folder, monkeypatch, capsys):
    monkeypatch.setenv("HF_TOKEN", hub.token)
    assert main(["--model", str(run_folder), "--repo-id", REPO, "--commit-message", "first model"]) == 0
    files = hub.files(REPO)
    for name in UPLOADED:
        assert files[name] == (run_folder / name).read_bytes()
    assert "training_state.json" not in files  # training state stays local
    assert REPO in capsys.readouterr().out  # the commit URL

    pulled = load_model(REPO, device="cpu")
    local = load_model(run_folder, device="cpu")
    assert pulled.identity["sha256"] == local.identity["sha256"]
    assert torch.equal(_outputs(pulled.model), _outputs(local.model))  # bit-identical through the Hub


def test_push_to_existing_branch_and_private_repo(hub, run_folder, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", hub.token)
    assert main(["--model", str(run_folder), "--repo-id", "lab/secret", "--private"]) == 0
    main_sha = hub.head("lab/secret")
    hub.add_commit("lab/secret", {"notes.txt": b"branch"}, branch="dev")
    (run_folder / "README.md").write_text("# changed card\n")
    assert main(["--model", str(run_folder), "--repo-id", "lab/secret", "--revision", "dev"]) == 0
    assert hub.files("lab/secret", "dev")["README.md"] == b"# changed card\n"
    assert hub.head("lab/secret") == main_sha  # main untouched
    monkeypatch.delenv("HF_TOKEN")
    with pytest.raises(Exception, match="not found"):  # private: invisible without the token
        load_model("lab/secret")


def test_push_refuses_what_does_not_load(hub, run_folder, monkeypatch, capsys, tmp_path):
    monkeypatch.setenv("HF_TOKEN", hub.token)
    (run_folder / "model.safetensors").write_bytes(b"not safetensors")
    assert main(["--model", str(run_folder), "--repo-id", REPO]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: refusing to publish") and "model.safetensors" in err and "\n" not in err
    assert not any(method == "POST" for method, _ in hub.requests)  # nothing was created or committed

    assert main(["--model", str(tmp_path / "nowhere"), "--repo-id", REPO]) == 1
    assert "not a folder" in capsys.readouterr().err


def test_push_without_token_is_one_clear_line(hub, run_folder, capsys):
    assert main(["--model", str(run_folder), "--repo-id", REPO]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: push to {REPO} failed") and "HF_TOKEN" in err and "\n" not in err
