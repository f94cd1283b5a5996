"""Pytest fixture that points the real ``huggingface_hub`` client at a local :class:`HubServer`.

A plain module (not a conftest) so a conftest can opt in with ``from conftest_hub import hub``.

Why patching the environment is not enough: ``huggingface_hub`` reads most of its environment once, at
import time, into ``huggingface_hub.constants`` (``ENDPOINT``, ``HF_HUB_OFFLINE``, ``HF_HOME`` and every
path derived from it, ``HF_HUB_DISABLE_TELEMETRY``, ...), and a few modules copy those values again into
their own globals (``utils._http._HUB_ORIGINS``, the module-level ``hf_api.api = HfApi()`` whose
``endpoint`` backs ``huggingface_hub.create_repo``/``upload_folder``/..., and ``from ..constants import X``
copies in ``utils._cache_manager``, ``utils._cache_assets``, ``utils._git_credential``). If anything
imported ``huggingface_hub`` before the test set ``HF_ENDPOINT``, the client would still talk to
huggingface.co and use the real cache. So :func:`point_hf_client_at` sets the environment variables (for
code that reads them at call time, e.g. the token lookup, and for subprocesses) *and* monkeypatches all
those import-time copies. Values read at call time (``HF_TOKEN``) need no patching.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

try:  # tests/ may become a package later
    from .hub_server import HubServer
except ImportError:
    from hub_server import HubServer

HUB_TOKEN = "hf_hubserver_test_token"  # the one valid token of the fixture's server (see HubServer)

# Env variables that would override HF_HOME-derived paths, force offline mode, inject a token or change the
# endpoint: removed so every test starts from the same client configuration.
_ENV_TO_UNSET = (
    "HF_HUB_OFFLINE",
    "TRANSFORMERS_OFFLINE",
    "HF_TOKEN",
    "HUGGING_FACE_HUB_TOKEN",
    "HF_TOKEN_PATH",
    "HF_HUB_CACHE",
    "HUGGINGFACE_HUB_CACHE",
    "HF_ASSETS_CACHE",
    "HUGGINGFACE_ASSETS_CACHE",
    "HF_XET_CACHE",
    "HF_HUB_DISABLE_IMPLICIT_TOKEN",
    "HUGGINGFACE_CO_STAGING",
    "HF_OIDC_RESOURCE",
)


def point_hf_client_at(monkeypatch: pytest.MonkeyPatch, endpoint: str, hf_home: Path) -> None:
    """Make ``huggingface_hub`` (imported or not yet) use ``endpoint`` and a fresh cache under ``hf_home``."""
    endpoint = endpoint.rstrip("/")
    hf_home = str(hf_home)

    # 1. Environment: read at import time by huggingface_hub, and at call time by some code (token lookup).
    monkeypatch.setenv("HF_ENDPOINT", endpoint)
    monkeypatch.setenv("HF_HOME", hf_home)
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    for name in _ENV_TO_UNSET:
        monkeypatch.delenv(name, raising=False)

    # 2. Import-time copies in huggingface_hub.constants (mirrors the computations in constants.py).
    import huggingface_hub.constants as c

    hub_cache = f"{hf_home}/hub"
    token_path = f"{hf_home}/token"
    for name, value in {
        "ENDPOINT": endpoint,
        "HUGGINGFACE_CO_URL_TEMPLATE": endpoint + "/{repo_id}/resolve/{revision}/{filename}",
        # Hosts whose URLs/redirects the client treats as the Hub (auth header forwarded).
        "HF_URL_HOSTS": frozenset(
            {"hf.co"}
            | {
                host.lower()
                for host in (
                    urlsplit(c._HF_DEFAULT_ENDPOINT).hostname,
                    urlsplit(c._HF_DEFAULT_STAGING_ENDPOINT).hostname,
                    urlsplit(endpoint).hostname,
                )
                if host
            }
        ),
        "HF_HUB_OFFLINE": False,  # is_offline_mode() returns this
        "HF_HUB_DISABLE_TELEMETRY": True,  # also skips the agent-detection fetch in the user agent
        "HF_HUB_DISABLE_IMPLICIT_TOKEN": False,
        "HF_HOME": hf_home,
        "default_cache_path": hub_cache,
        "default_assets_cache_path": f"{hf_home}/assets",
        "default_xet_cache_path": f"{hf_home}/xet",
        "HUGGINGFACE_HUB_CACHE": hub_cache,
        "HF_HUB_CACHE": hub_cache,
        "HUGGINGFACE_ASSETS_CACHE": f"{hf_home}/assets",
        "HF_ASSETS_CACHE": f"{hf_home}/assets",
        "HF_XET_CACHE": f"{hf_home}/xet",
        "HF_TOKEN_PATH": token_path,  # else a developer's saved login would be sent
        "HF_STORED_TOKENS_PATH": f"{hf_home}/stored_tokens",
        "CHECK_FOR_UPDATE_DONE_PATH": f"{hf_home}/.check_for_update_done",
        "CHECK_FOR_SKILL_UPDATE_DONE_PATH": f"{hf_home}/.check_for_skill_update_done",
        "AGENT_HARNESSES_PATH": f"{hf_home}/.agent_harnesses.json",
    }.items():
        monkeypatch.setattr(c, name, value, raising=False)  # raising=False: tolerate renamed constants

    # 3. Second-hand copies made at import time by other modules.
    import huggingface_hub.hf_api as hf_api
    import huggingface_hub.utils._http as hf_http

    # Origins that keep the auth header on redirects (same origin is always kept; this mirrors the module).
    monkeypatch.setattr(
        hf_http,
        "_HUB_ORIGINS",
        frozenset(
            hf_http._url_origin(e)
            for e in (c._HF_DEFAULT_ENDPOINT, c._HF_DEFAULT_STAGING_ENDPOINT, endpoint, "https://hf.co")
        ),
        raising=False,
    )
    # `huggingface_hub.create_repo`, `.upload_folder`, `.model_info`, ... are bound methods of this
    # singleton, created at import with endpoint=constants.ENDPOINT. (HfApi() instances created later read
    # constants.ENDPOINT themselves.)
    monkeypatch.setattr(hf_api.api, "endpoint", endpoint)
    for module_name, attr, value in (
        ("huggingface_hub.utils._cache_manager", "HF_HUB_CACHE", hub_cache),  # scan_cache_dir() default
        ("huggingface_hub.utils._cache_assets", "HF_ASSETS_CACHE", f"{hf_home}/assets"),
        ("huggingface_hub.utils._git_credential", "ENDPOINT", endpoint),
    ):
        try:
            module = importlib.import_module(module_name)
        except ImportError:  # private module moved in another client version: nothing to patch
            continue
        monkeypatch.setattr(module, attr, value, raising=False)


@pytest.fixture
def hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[HubServer]:
    """A running :class:`HubServer` (valid token: ``hub.token``) with the client pointed at it.

    ``HF_TOKEN`` is unset: tests that need auth (private repos, uploads) set it or pass ``token=hub.token``.
    The HF cache lives under ``tmp_path/hf_home``, fresh for each test.
    """
    from huggingface_hub.utils import close_session

    with HubServer(token=HUB_TOKEN) as server:
        point_hf_client_at(monkeypatch, server.url, tmp_path / "hf_home")
        try:
            yield server
        finally:
            # The client's shared httpx client pools keep-alive connections to this server: drop them so the
            # server's handler threads end now and no later test reuses a connection to a dead port.
            close_session()
    # Handler exceptions were answered with a 501 (which the client may have swallowed): fail loudly.
    assert not server.server_errors, "HubServer internal errors:\n" + "\n".join(server.server_errors)
