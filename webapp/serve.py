"""What one server shares between its visitors: the operator's model policy, the model cache,
the memory budget over session results and the gates that queue heavy work."""

from __future__ import annotations

import fnmatch
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path

import streamlit as st

from hydralanet import CheckpointError, LoadedModel
from hydralanet.checkpoints.hub import parse_hub_source
from hydralanet.inference.loaded import load_model
from hydralanet.io.system import keep_heap_small, usable_cores
from webapp.serving import MemoryBudget, SessionCache, WorkGate, env_int

log = logging.getLogger("hydralanet.app")

# Results kept per session (probabilities at the model's square, the photo, the working grid,
# the page's reading: about 100 MB for a 4288 x 2848 photo with the bundled 1536 px model), and
# for all sessions together HYDRALANET_MAX_SESSIONS_MB;
# over it the oldest results of any session are dropped (and recomputed if that session
# comes back to them).
CACHE_ENTRIES = 4
SESSIONS_MB = 1024
SWEEP_S = 10.0  # how often the results of closed sessions are let go
MODEL_CACHE_ENTRIES = 4  # models kept per process (each source a visitor loads is one)
RETRY_FAILED_MODEL_S = 300  # a source that failed is retried after this long: one timeout, not one per rerun


def _switch(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def pickle_allowed() -> bool:
    """The operator's opt-in for pickled state dicts; visitors cannot set it."""
    return _switch("HYDRALANET_ALLOW_PICKLE")


def model_locked() -> bool:
    """``HYDRALANET_LOCK_MODEL=1``: the page offers no way to load another model."""
    return _switch("HYDRALANET_LOCK_MODEL")


def refuse_source(source: str) -> str | None:
    """Why a source typed in the page may not be loaded, or None. The operator's own
    ``HYDRALANET_MODEL`` is never checked; visitors' sources are, against
    ``HYDRALANET_ALLOWED_MODELS`` (comma-separated, ``*`` patterns) and local paths against
    ``HYDRALANET_ALLOW_LOCAL_MODELS=1`` (off by default: a public page must not probe the disk)."""
    if not source:
        return None
    if model_locked():
        return "this server's operator has fixed the model (HYDRALANET_LOCK_MODEL)"
    is_hub = parse_hub_source(source) is not None and not Path(source).expanduser().exists()
    if not is_hub and not _switch("HYDRALANET_ALLOW_LOCAL_MODELS"):
        return f"{source}: local paths are not accepted from the page (the operator can allow them)"
    allowed = [p.strip() for p in os.environ.get("HYDRALANET_ALLOWED_MODELS", "").split(",") if p.strip()]
    if allowed and not any(fnmatch.fnmatchcase(source, pattern) for pattern in allowed):
        return f"{source}: not among the models this server allows ({', '.join(allowed)})"
    return None


def keep_upload_replies() -> None:
    """Work around a Streamlit race that loses uploads (1.67; the file uploader has no retry).

    An upload starts with the browser asking for upload URLs (``file_urls_request``); the reply
    waits in the session's outgoing queue until the next flush. When a script run of that
    session starts before the flush, the queue is cleared of everything but lifecycle messages,
    the reply with it: the browser waits for ever and the file never shows in the uploader.
    Under load (runs start and flushes come late) this lost about one upload in four. Here a
    cleared queue keeps its upload replies. Idempotent; logs each reply it keeps."""
    from streamlit.runtime.forward_msg_queue import ForwardMsgQueue

    clear = ForwardMsgQueue.clear
    if getattr(clear, "keeps_upload_replies", False):
        return

    def clear_keeping_upload_replies(self, retain_lifecycle_msgs: bool = False, fragment_ids_this_run=None) -> None:
        replies = [m for m in self._queue if m.WhichOneof("type") == "file_urls_response"]
        clear(self, retain_lifecycle_msgs, fragment_ids_this_run)
        if replies and retain_lifecycle_msgs:  # a run starting or stopping, not a session's reset
            log.warning("kept %d upload URL replies across the start of a script run", len(replies))
            self._queue.extend(replies)

    clear_keeping_upload_replies.keeps_upload_replies = True
    ForwardMsgQueue.clear = clear_keeping_upload_replies


@st.cache_resource
def memory_budget() -> MemoryBudget:
    keep_heap_small()  # before the sessions' arrays come and go: freed memory goes back to the system
    budget = MemoryBudget(env_int("HYDRALANET_MAX_SESSIONS_MB", SESSIONS_MB) << 20)
    budget.start_sweeper(SWEEP_S)
    return budget


@st.cache_resource
def model_gate() -> WorkGate:
    """Heavy jobs at once in this process (``HYDRALANET_MAX_INFERENCES``): segmentations, the
    page's readings and the downloads' full-resolution readings (up to ~0.4 GB of maps for a
    12-Mpixel photo). By
    default as many as the cores allow when each uses torch's intra-op threads (1 on a 2-vCPU
    Space)."""
    import torch

    cores = usable_cores()
    return WorkGate(env_int("HYDRALANET_MAX_INFERENCES", max(1, cores // max(1, torch.get_num_threads()))))


@st.cache_resource
def render_gate() -> WorkGate:
    """Page redraws at once (masks, statistics, previews on the working grid): one per core."""
    cores = usable_cores()
    return WorkGate(env_int("HYDRALANET_MAX_REDRAWS", cores))


def session_alive() -> Callable[[], bool] | None:
    """Whether this session is still connected (Streamlit keeps a closed tab's session two
    minutes for a reconnect; its results need not wait that long)."""
    from streamlit import runtime
    from streamlit.runtime.scriptrunner import get_script_run_ctx

    ctx = get_script_run_ctx()
    if ctx is None or not runtime.exists():
        return None
    session_id, instance = ctx.session_id, runtime.get_instance()
    return lambda: instance.is_active_session(session_id)


def session_cache() -> SessionCache:
    if "results" not in st.session_state:
        # predictions and their readings: two entries per photo
        st.session_state.results = SessionCache(memory_budget(), CACHE_ENTRIES * 2, alive=session_alive())
    return st.session_state.results


def queued_notice(placeholder, what: str):
    def notice(ahead: int) -> None:
        placeholder.info(
            f"Queued: {ahead} {'job' if ahead == 1 else 'jobs'} ahead of {what} on this server. It starts by itself.",
            icon=":material/hourglass_top:",
        )

    return notice


@st.cache_resource(show_spinner="Loading the model…", max_entries=MODEL_CACHE_ENTRIES)
def shared_model(source: str, allow_pickle: bool) -> tuple[LoadedModel, str | None, float]:
    """One model per source per process, shared by every session ("" = bundled). A source
    that cannot be loaded gives the bundled model and a one-line warning; returns
    ``(model, warning, when loaded)``."""
    if not source:
        return load_model(None), None, time.monotonic()
    try:
        return load_model(source, allow_pickle=allow_pickle), None, time.monotonic()
    except CheckpointError as exc:
        # The bundled model of the "" entry: one copy however many sources fail.
        bundled, _, _ = shared_model("", allow_pickle)
        return bundled, f"{exc} - using the bundled model instead", time.monotonic()


def resolve_model(source: str) -> tuple[LoadedModel, str | None]:
    loaded, warning, when = shared_model(source, pickle_allowed())
    asked_at = st.session_state.pop("load_clicked_at", -float("inf"))
    if warning and (when < asked_at or time.monotonic() - when > RETRY_FAILED_MODEL_S):
        shared_model.clear(source, pickle_allowed())  # the Hub may be back: try again (only failed sources)
        loaded, warning, _ = shared_model(source, pickle_allowed())
    return loaded, warning


def load_requested_model() -> None:
    """Sidebar "Load" button: use the typed source for this session, retrying it now, unless
    the operator's policy refuses it (:func:`refuse_source`)."""
    typed = st.session_state.model_source_input.strip()
    refusal = refuse_source(typed)
    if refusal:
        st.session_state.model_refusal = refusal
        return
    st.session_state.model_source = typed
    st.session_state.load_clicked_at = time.monotonic()  # retries a source whose failure is older
