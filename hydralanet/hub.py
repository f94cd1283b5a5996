"""Checkpoints from the Hugging Face Hub through the real ``huggingface_hub`` client.

Standard cache (``HF_HOME``), ``HF_TOKEN`` for private or gated repos, ``HF_ENDPOINT`` for
another server (our tests use a local stand-in). Every failure becomes a one-line
:class:`HubError` naming the repo and what went wrong, so callers can fall back.
"""

from __future__ import annotations

import os
from pathlib import Path

from .checkpoint import CARD_NAME, CONFIG_NAME, WEIGHTS_NAME, CheckpointError

_FILES = [CONFIG_NAME, WEIGHTS_NAME, CARD_NAME]


class HubError(CheckpointError):
    """The Hub could not deliver the checkpoint (unreachable, missing repo/file/revision)."""


def parse_repo_id(source: str) -> tuple[str, str | None]:
    """``"owner/name@rev"`` -> ``("owner/name", "rev")``; no ``@`` -> revision ``None``."""
    repo_id, _, revision = source.partition("@")
    return repo_id, (revision or None)


def download_checkpoint(source: str) -> tuple[Path, str]:
    """Download (or reuse from cache) a checkpoint folder; returns ``(folder, commit sha)``.

    A quick metadata request (``HYDRALANET_HUB_TIMEOUT`` seconds, default 10) resolves the
    revision to a commit first: the client's own download path retries an unreachable
    server for ~23 s and has no timeout against one that never answers. When the Hub cannot
    be reached, a copy already in the local cache is used.
    """
    import huggingface_hub
    from huggingface_hub import errors

    repo_id, revision = parse_repo_id(source)
    where = f"{repo_id}@{revision}" if revision else repo_id
    # Read at call time, not at import: the environment may change after import.
    endpoint = os.environ.get("HF_ENDPOINT") or None
    token = os.environ.get("HF_TOKEN") or None
    timeout = float(os.environ.get("HYDRALANET_HUB_TIMEOUT", "10"))
    offline = os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")
    try:
        if offline:
            folder = _cached(repo_id, revision, endpoint)
            if folder is None:
                raise HubError(f"Hub repo {where}: HF_HUB_OFFLINE is set and there is no cached copy")
        else:
            try:
                huggingface_hub.HfApi(endpoint=endpoint, token=token).model_info(
                    repo_id, revision=revision, timeout=timeout
                )
            except errors.HfHubHTTPError:
                raise  # the Hub answered: a real "not found" must not fall back to a stale cache
            except Exception as exc:  # connection refused, DNS, timeouts (httpx errors are not OSError)
                folder = _cached(repo_id, revision, endpoint)
                if folder is None:
                    raise HubError(
                        f"Hub repo {where}: Hub unreachable ({type(exc).__name__}) and no cached copy "
                        "(check the network, HF_ENDPOINT, HF_HUB_OFFLINE)"
                    ) from None
            else:
                # The branch name (not info.sha) so the cache records the ref for offline reuse.
                folder = huggingface_hub.snapshot_download(
                    repo_id, revision=revision, allow_patterns=_FILES, endpoint=endpoint, token=token,
                    etag_timeout=timeout,
                )
    except HubError:
        raise
    except errors.GatedRepoError:
        raise HubError(f"Hub repo {where}: gated; accept its terms on the Hub and set HF_TOKEN") from None
    except errors.RepositoryNotFoundError:
        raise HubError(f"Hub repo {where}: not found (or private: set HF_TOKEN to a token that can read it)") from None
    except errors.RevisionNotFoundError:
        raise HubError(f"Hub repo {repo_id}: revision {revision!r} not found") from None
    except errors.LocalEntryNotFoundError:  # a subclass of EntryNotFoundError: must come first
        raise HubError(f"Hub repo {where}: download failed and no cached copy (check the network)") from None
    except errors.EntryNotFoundError as exc:
        raise HubError(f"Hub repo {where}: a checkpoint file is missing ({_first_line(exc)})") from None
    except errors.HfHubHTTPError as exc:
        raise HubError(f"Hub repo {where}: {_first_line(exc)}") from None
    except Exception as exc:  # invalid repo id (HFValidationError), interrupted body download, ...
        raise HubError(f"Hub repo {where}: {type(exc).__name__}: {_first_line(exc)}") from None
    folder = Path(folder)
    missing = [name for name in (CONFIG_NAME, WEIGHTS_NAME) if not (folder / name).exists()]
    if missing:
        raise HubError(f"Hub repo {where}: not a hydralanet checkpoint ({', '.join(missing)} missing)")
    return folder, folder.name  # the snapshot folder is named after the resolved commit


def _cached(repo_id: str, revision: str | None, endpoint: str | None) -> str | None:
    """The cached snapshot for ``revision`` (default branch if None), or None."""
    import huggingface_hub
    from huggingface_hub import errors

    try:
        return huggingface_hub.snapshot_download(
            repo_id, revision=revision, allow_patterns=_FILES, endpoint=endpoint, local_files_only=True
        )
    except (errors.LocalEntryNotFoundError, OSError, ValueError):
        return None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
