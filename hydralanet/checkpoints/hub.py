"""Checkpoints from the Hugging Face Hub through the real ``huggingface_hub`` client.

Standard cache (``HF_HOME``), ``HF_TOKEN`` for private or gated repos, ``HF_ENDPOINT`` for
another server (our tests use a local stand-in). Every failure becomes a one-line
:class:`HubError` naming the repo and what went wrong, so callers can fall back.

A Hub source is ``[spaces/|models/]owner/name[@revision][:path/in/repo]``: a model repo by
default, a Space with ``spaces/`` (the original HydraLA-Net demo is one); ``:path`` names the
weights file when the repo is not a checkpoint folder (e.g. ``:runs/exp1/best_model.pt``).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from .format import (
    CANDIDATES_TEXT,
    CHECKPOINT_FILES,
    CONFIG_NAME,
    WEIGHTS_NAME,
    CheckpointError,
    is_pickle,
    pickle_refusal,
    several_candidates,
    weight_candidates,
)

# Repo ids as the Hub spells them; a revision never contains ':' (git forbids it in ref names).
_HUB_SOURCE = re.compile(
    r"^(?:(?P<kind>spaces|models)/)?(?P<repo>[A-Za-z0-9][\w.-]*/[\w.-]+)"
    r"(?:@(?P<rev>[\w./-]+))?(?::(?P<path>[^:]+))?$"
)


class HubError(CheckpointError):
    """The Hub could not deliver the checkpoint (unreachable, missing repo/file/revision)."""


@dataclass(frozen=True)
class HubSource:
    """A parsed Hub source: ``repo_type`` is ``model`` or ``space``; ``path`` a file in the repo."""

    repo_id: str
    repo_type: str = "model"
    revision: str | None = None
    path: str | None = None

    @property
    def where(self) -> str:
        """How messages name it: the repo (with ``spaces/`` for a Space) and the revision."""
        name = ("spaces/" if self.repo_type == "space" else "") + self.repo_id
        return f"{name}@{self.revision}" if self.revision else name


def parse_hub_source(source: str) -> HubSource | None:
    """``"spaces/owner/name@rev:runs/a/best_model.pt"`` -> :class:`HubSource`; None if ``source``
    is not Hub syntax."""
    match = _HUB_SOURCE.match(source)
    if match is None or source.startswith((".", "/")):
        return None
    return HubSource(
        repo_id=match["repo"],
        repo_type="space" if match["kind"] == "spaces" else "model",
        revision=match["rev"] or None,
        path=match["path"].strip("/") if match["path"] else None,
    )


def download_checkpoint(source: str | HubSource, *, allow_pickle: bool = False) -> tuple[Path, str, str | None]:
    """Download (or reuse from cache) what a Hub source needs; returns ``(snapshot folder,
    commit sha, weights path in the repo or None for a standard checkpoint folder)``.

    A repo with ``config.json`` + ``model.safetensors`` is a checkpoint folder. Otherwise the
    weights file is found by name (:data:`CANDIDATES_TEXT`, any subfolder); several is an error
    listing them. A pickled file is refused before download unless ``allow_pickle``.

    A quick metadata request (``HYDRALANET_HUB_TIMEOUT`` seconds, default 10) resolves the
    revision to a commit and lists the files first: the client's own download path retries an
    unreachable server for ~23 s and has no timeout against one that never answers. When the
    Hub cannot be reached, a copy already in the local cache is used.
    """
    import huggingface_hub
    from huggingface_hub import errors

    src = source if isinstance(source, HubSource) else parse_hub_source(source)
    if src is None:
        raise HubError(f"{source}: not a Hub source (expected [spaces/]owner/name[@revision][:path])")
    where = src.where
    # Read at call time, not at import: the environment may change after import.
    endpoint = os.environ.get("HF_ENDPOINT") or None
    token = os.environ.get("HF_TOKEN") or None
    timeout = float(os.environ.get("HYDRALANET_HUB_TIMEOUT", "10"))
    offline = os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")
    common = {"repo_type": src.repo_type, "revision": src.revision, "endpoint": endpoint}
    chosen = src.path
    try:
        if offline:
            folder = _cached(src, endpoint)
            if folder is None:
                raise HubError(f"Hub repo {where}: HF_HUB_OFFLINE is set and there is no cached copy")
        else:
            try:
                info = huggingface_hub.HfApi(endpoint=endpoint, token=token).repo_info(
                    src.repo_id, repo_type=src.repo_type, revision=src.revision, timeout=timeout
                )
            except errors.HfHubHTTPError:
                raise  # the Hub answered: a real "not found" must not fall back to a stale cache
            except Exception as exc:  # connection refused, DNS, timeouts (httpx errors are not OSError)
                folder = _cached(src, endpoint)
                if folder is None:
                    raise HubError(
                        f"Hub repo {where}: Hub unreachable ({type(exc).__name__}) and no cached copy "
                        "(check the network, HF_ENDPOINT, HF_HUB_OFFLINE)"
                    ) from None
            else:
                files = [s.rfilename for s in (info.siblings or [])]
                patterns, chosen = _choose_files(src, files)
                if chosen is not None and is_pickle(chosen) and not allow_pickle:
                    raise CheckpointError(pickle_refusal(f"{where}:{chosen}", chosen))
                # The branch name (not info.sha) so the cache records the ref for offline reuse.
                folder = huggingface_hub.snapshot_download(
                    src.repo_id, allow_patterns=patterns, token=token, etag_timeout=timeout, **common
                )
    except CheckpointError:
        raise
    except errors.GatedRepoError:
        raise HubError(f"Hub repo {where}: gated; accept its terms on the Hub and set HF_TOKEN") from None
    except errors.RepositoryNotFoundError:
        raise HubError(f"Hub repo {where}: not found (or private: set HF_TOKEN to a token that can read it)") from None
    except errors.RevisionNotFoundError:
        raise HubError(f"Hub repo {src.where.split('@')[0]}: revision {src.revision!r} not found") from None
    except errors.LocalEntryNotFoundError:  # a subclass of EntryNotFoundError: must come first
        raise HubError(f"Hub repo {where}: download failed and no cached copy (check the network)") from None
    except errors.EntryNotFoundError as exc:
        raise HubError(f"Hub repo {where}: a checkpoint file is missing ({_first_line(exc)})") from None
    except errors.HfHubHTTPError as exc:
        raise HubError(f"Hub repo {where}: {_first_line(exc)}") from None
    except Exception as exc:  # invalid repo id (HFValidationError), interrupted body download, ...
        raise HubError(f"Hub repo {where}: {type(exc).__name__}: {_first_line(exc)}") from None
    folder = Path(folder)
    return folder, folder.name, chosen  # the snapshot folder is named after the resolved commit


def _choose_files(src: HubSource, files: list[str]) -> tuple[list[str], str | None]:
    """What to download from a repo listing: ``(allow_patterns, weights path or None)``."""
    where = src.where
    if src.path is not None:
        if src.path not in files:
            raise HubError(f"Hub repo {where}: no file {src.path!r} in the repo")
        return _with_config(src.path, files), src.path
    if CONFIG_NAME in files and WEIGHTS_NAME in files:
        return list(CHECKPOINT_FILES), None
    candidates = weight_candidates(files)
    if len(candidates) == 1:
        return _with_config(candidates[0], files), candidates[0]
    if candidates:
        raise HubError(several_candidates(f"Hub repo {where}", candidates, f"{where.split('@')[0]}[@revision]:PATH"))
    missing = ", ".join(n for n in (CONFIG_NAME, WEIGHTS_NAME) if n not in files)
    raise HubError(
        f"Hub repo {where}: not a hydralanet checkpoint ({missing} missing) and no weights file ({CANDIDATES_TEXT})"
    )


def _with_config(path: str, files: list[str]) -> list[str]:
    """The weights file, and the ``config.json`` beside it if the repo has one."""
    parent = path.rpartition("/")[0]
    config = f"{parent}/{CONFIG_NAME}" if parent else CONFIG_NAME
    return [path] + ([config] if config in files else [])


def _cached(src: HubSource, endpoint: str | None) -> str | None:
    """The cached snapshot folder for the source's revision (default branch if None), or None.

    Without a path, a pattern that matches nothing: the client then checks no file (it refuses
    a snapshot where a file matching the patterns was listed but never downloaded, such as the
    README of a repo whose weights alone were fetched); the caller searches the folder."""
    import huggingface_hub
    from huggingface_hub import errors

    patterns = [src.path] if src.path else ["\x00matches no file"]
    try:
        return huggingface_hub.snapshot_download(
            src.repo_id,
            repo_type=src.repo_type,
            revision=src.revision,
            allow_patterns=patterns,
            endpoint=endpoint,
            local_files_only=True,
        )
    except (errors.LocalEntryNotFoundError, OSError, ValueError):
        return None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
