"""The page under the process's memory budget (HYDRALANET_MAX_SESSIONS_MB): results the budget
drops are made again when the session needs them, with the same numbers."""

from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from tests.test_app import APP, TIMEOUT, assert_clean, click, statistics
from webapp.serve import memory_budget


@pytest.fixture
def fresh_budget():
    memory_budget.clear()  # the budget is made once per process from the environment
    yield
    memory_budget.clear()


def sample_at_low_threshold(tiny_checkpoint: Path, monkeypatch: pytest.MonkeyPatch, budget_mb: str) -> AppTest:
    monkeypatch.setenv("HYDRALANET_MODEL", str(tiny_checkpoint))
    monkeypatch.setenv("HYDRALANET_MAX_SESSIONS_MB", budget_mb)
    app = AppTest.from_file(str(APP), default_timeout=TIMEOUT)
    click(app.run(), "Try a sample")
    app.select_slider(key="threshold_EX").set_value(0.05).run()
    assert_clean(app)
    return app


def test_a_result_the_budget_dropped_is_made_again_with_the_same_numbers(
    tiny_checkpoint: Path, monkeypatch: pytest.MonkeyPatch, fresh_budget
) -> None:
    roomy = sample_at_low_threshold(tiny_checkpoint, monkeypatch, "1024")
    assert roomy.session_state["model_runs"] == 1  # the threshold re-used the cached result
    assert memory_budget().evictions == 0
    expected = statistics(roomy)

    memory_budget.clear()
    tight = sample_at_low_threshold(tiny_checkpoint, monkeypatch, "1")  # 1 MB: only the newest entry stays
    # storing the reading dropped the prediction, so the threshold change made it again
    assert tight.session_state["model_runs"] == 2
    assert memory_budget().evictions == 3 and len(tight.session_state["results"]) == 1
    assert statistics(tight) == expected
    assert expected["EX"]["pixels"] > 100_000


def test_bad_budget_setting_is_one_line_on_the_page(
    tiny_checkpoint: Path, monkeypatch: pytest.MonkeyPatch, fresh_budget
) -> None:
    monkeypatch.setenv("HYDRALANET_MODEL", str(tiny_checkpoint))
    monkeypatch.setenv("HYDRALANET_MAX_SESSIONS_MB", "plenty")
    app = AppTest.from_file(str(APP), default_timeout=TIMEOUT).run()
    assert [e.value for e in app.error] == ["HYDRALANET_MAX_SESSIONS_MB='plenty': expected a whole number"]
    assert not app.exception
