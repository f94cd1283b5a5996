"""Publish a checkpoint folder to the Hugging Face Hub.

    python -m training.push_to_hub --model RUN/best --repo-id owner/name [--private]
        [--revision BRANCH] [--commit-message TEXT]

The folder is loaded with :func:`hydralanet.load_model` first, so only a checkpoint that the
app and the CLI can load gets published. Only the checkpoint files are uploaded
(``config.json``, ``model.safetensors``, ``README.md``), not a run's training state.
``HF_TOKEN`` is the token, ``HF_ENDPOINT`` another server (both read at call time).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from hydralanet.checkpoints.format import CARD_NAME, CONFIG_NAME, WEIGHTS_NAME, CheckpointError
from hydralanet.inference.loaded import load_model

UPLOADED = [CONFIG_NAME, WEIGHTS_NAME, CARD_NAME]


class PushError(RuntimeError):
    """The push did not happen; the message is one line saying why."""


def check_checkpoint(folder: Path) -> None:
    """Raise :class:`PushError` unless ``folder`` is a complete, loadable checkpoint."""
    if not folder.is_dir():
        raise PushError(f"{folder}: not a folder (expected a checkpoint folder such as RUN/best)")
    missing = [name for name in UPLOADED if not (folder / name).is_file()]
    if missing:
        raise PushError(f"{folder}: not a complete checkpoint folder ({', '.join(missing)} missing)")
    try:
        load_model(folder, device="cpu")
    except CheckpointError as exc:
        raise PushError(f"refusing to publish a checkpoint that does not load: {exc}") from None


def push(
    folder: str | os.PathLike,
    repo_id: str,
    *,
    private: bool = False,
    revision: str | None = None,
    commit_message: str | None = None,
) -> str:
    """Upload ``folder`` to ``repo_id`` (created if missing); returns the commit URL."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError

    folder = Path(folder)
    check_checkpoint(folder)
    api = HfApi(endpoint=os.environ.get("HF_ENDPOINT") or None, token=os.environ.get("HF_TOKEN") or None)
    try:
        api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
        if revision and revision not in {b.name for b in api.list_repo_refs(repo_id).branches}:
            api.create_branch(repo_id, branch=revision, exist_ok=True)
        info = api.upload_folder(
            repo_id=repo_id,
            folder_path=folder,
            allow_patterns=UPLOADED,
            revision=revision,
            commit_message=commit_message or f"Upload {folder.name} checkpoint",
        )
    except HfHubHTTPError as exc:
        hint = " (is HF_TOKEN set to a token with write access?)" if _status(exc) in (401, 403) else ""
        raise PushError(f"push to {repo_id} failed: {_first_line(exc)}{hint}") from None
    except (OSError, ValueError) as exc:  # connection errors, invalid repo id (HFValidationError)
        raise PushError(f"push to {repo_id} failed: {type(exc).__name__}: {_first_line(exc)}") from None
    return str(getattr(info, "commit_url", info))


def _status(exc: Exception) -> int | None:
    response = getattr(exc, "response", None)
    return getattr(response, "status_code", None)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.push_to_hub", description=__doc__.split("\n")[0])
    parser.add_argument("--model", required=True, type=Path, help="checkpoint folder, e.g. RUN/best")
    parser.add_argument("--repo-id", required=True, help="owner/name on the Hub")
    parser.add_argument("--private", action="store_true", help="create the repo as private (if it is new)")
    parser.add_argument("--revision", default=None, help="branch to push to (created if missing; default main)")
    parser.add_argument("--commit-message", default=None)
    args = parser.parse_args(argv)
    try:
        url = push(
            args.model, args.repo_id, private=args.private, revision=args.revision, commit_message=args.commit_message
        )
    except PushError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(url)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
