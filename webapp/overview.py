"""The overview of every loaded photo: one row each (lesion counts, DME risk, quality), and
the row a visitor picks is the photo shown below it."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import streamlit as st

from hydralanet import CLASSES
from webapp.results import quality_reasons


@dataclass(frozen=True)
class PhotoRow:
    """What the overview says about one photo at the thresholds it was read with; ``problem``:
    why it could not be read (then nothing else is known)."""

    name: str
    size: str = ""
    counts: tuple[int, ...] = ()  # lesions per kind, in CLASSES order
    dme_risk: str = ""
    quality: str = ""
    problem: str | None = None


def quality_text(quality: dict) -> str:
    """ "good", or the verdict and what failed ("usable: uneven illumination")."""
    reasons = quality_reasons(quality)
    return quality["verdict"] + (f": {', '.join(reasons)}" if reasons else "")


def photo_row(name: str, shape: tuple[int, ...], rows: list[dict], found: dict) -> PhotoRow:
    """``rows``: :func:`hydralanet.lesion_statistics`; ``found``: :func:`hydralanet.reading.photo.findings`."""
    grade = found["dme_risk"]
    return PhotoRow(
        name=name,
        size=f"{shape[1]} x {shape[0]}",
        counts=tuple(r["count"] for r in rows),
        dme_risk="no grade" if grade is None else f"grade {grade}",
        quality=quality_text(found["quality"]),
    )


def overview_frame(names: list[str], rows: dict[str, PhotoRow], shown: str) -> pd.DataFrame:
    """One line per loaded photo; a photo not read yet says so."""
    lines = []
    for name in names:
        row = rows.get(name)
        line = {"": "▶" if name == shown else "", "photo": name}
        if row is None:
            line.update({"size": "", **dict.fromkeys(CLASSES, ""), "DME risk": "", "quality": "reading…"})
        elif row.problem:
            problem = "not read: " + row.problem.removeprefix(f"{name}: ")
            line.update({"size": "", **dict.fromkeys(CLASSES, ""), "DME risk": "", "quality": problem})
        else:
            counts = {c: str(n) for c, n in zip(CLASSES, row.counts)}
            line.update({"size": row.size, **counts, "DME risk": row.dme_risk, "quality": row.quality})
        lines.append(line)
    return pd.DataFrame(lines)


def choose_from_overview(names: list[str]) -> None:
    """The overview's row selection (a click on a row) picks the photo shown."""
    rows = st.session_state[st.session_state.overview_key].selection.rows
    if rows and rows[0] < len(names):
        st.session_state.image_choice = names[rows[0]]


def show_overview(slot, names: list[str], rows: dict[str, PhotoRow], shown: str, *, selectable: bool) -> None:
    """The table in ``slot`` (an ``st.empty``). ``selectable``: the clickable table (once per
    run: it is a widget), else a plain one to update while photos are read."""
    frame = overview_frame(names, rows, shown)
    with slot.container():
        st.markdown(f"**{len(names)} photos loaded**: click a row to show it. Lesion counts at the current thresholds.")
        if not selectable:
            st.dataframe(frame, hide_index=True, width="stretch")
            return
        st.dataframe(
            frame,
            hide_index=True,
            width="stretch",
            key=st.session_state.overview_key,
            on_select=lambda: choose_from_overview(names),
            selection_mode="single-row",
        )
