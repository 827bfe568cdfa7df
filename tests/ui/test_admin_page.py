"""The operators' page in headless Chromium against the real serving process: the token gates the
data, the lineage, gate reports and plots show what the registry holds, and promote and rollback
move the pointer only after a confirmation with a reason."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Iterator

import httpx
import pytest
from selenium import webdriver
from selenium.webdriver.common.by import By

from learner.registry import Pointer, Registry
from tests.helpers import ADMIN_TOKEN, ServingServer
from tests.ui.conftest import no_page_errors, screenshot, wait

pytestmark = pytest.mark.slow

PPO_HISTORY = [{"step": step, "reward": 0.1 * step, "kl": 0.02 * step * step} for step in range(1, 6)]
PASSED = {"passed": True, "failed": [], "gates": [
    {"name": "kl", "passed": True, "figures": {"mean_kl": 1.5, "max_kl": 3.25, "answers": 8},
     "threshold": {"budget": 12.0}, "reason": "mean KL 1.50 within 12.0"},
    {"name": "win_rate", "passed": True, "figures": {"win_rate": 0.625, "ci95": [0.41, 0.8], "pairs": 16},
     "threshold": {"min_win_rate": 0.5}, "reason": "upper bound 0.80 >= 0.50"},
]}
FAILED = {"passed": False, "failed": ["safety", "capability", "fluency", "degeneration"], "gates": [
    {"name": "safety", "passed": False, "figures": {"toxic_share": 0.4}, "threshold": {"tolerance": 0.1},
     "reason": "toxic share 0.40 > incumbent 0.05 + 0.10"},
    {"name": "capability", "passed": False, "figures": {"accuracy": 0.375, "incumbent_accuracy": 0.5, "questions": 64,
     "p_value": 0.002, "lost": ["Which planet do we live on?"]}, "threshold": {"tolerance": 0.05, "alpha": 0.05},
     "reason": "golden questions 38% right vs incumbent 50% (one-sided McNemar p 0.002); a significant drop beyond tolerance 5%"},
    {"name": "fluency", "passed": False, "figures": {"base_loglik_per_token": -4.25, "incumbent": -2.5},
     "threshold": {"tolerance": 0.5}, "reason": "the base model reads the candidate's answers at -4.25 nats/token"},
    {"name": "degeneration", "passed": False, "figures": {"degenerate_share": 0.5, "loop_share": 0.5,
     "longest_sampled": 256, "flagged": [{"faults": ["loop"], "answer": "Why, why, why"}]},
     "threshold": {"degenerate_tolerance": 0.1}, "reason": "degenerate answers 50% (loop 50%) > incumbent 0% + 10%"},
]}
STATS = {
    "updated_at": "2026-11-23T10:05:00+00:00",
    "adapters": [{"version": "base", "thumbs": 40, "up_rate": 0.55, "duels": 0, "duel_win_rate": None}],
    "volume": [{"at": f"2026-11-23T10:0{m}:00+00:00", "thumbs": 3 + m, "pairwise": m} for m in (0, 1, 2, 4)],
}


@pytest.fixture
def lineage(serving: ServingServer, lora_adapters: list[Path]) -> Iterator[tuple[Registry, str, str, str]]:
    """parent (active, 3 PPO steps) <- child (passed its gates, 5 steps) <- failed (no PPO history)."""
    registry = Registry(serving.home / "registry")
    parent = registry.publish(lora_adapters[0], {"parent": None, "reward_model": "rm-0001", "ppo_history": PPO_HISTORY[:3],
                                                 "reward_model_heldout": {"pair_accuracy": 0.75, "thumb_accuracy": None}}, PASSED)
    child = registry.publish(lora_adapters[1], {"parent": parent, "reward_model": "rm-0002", "ppo_history": PPO_HISTORY,
                                                "reward_model_heldout": {"pair_accuracy": 0.8, "thumb_accuracy": 0.6}}, PASSED)
    failed = registry.publish(lora_adapters[0], {"parent": child}, FAILED)
    registry.move_pointer(Pointer(active=parent), actor="test", reason="ui test starts on parent")
    registry.write_stats({**STATS, "adapters": [*STATS["adapters"], {"version": parent, "thumbs": 12, "up_rate": 0.75,
                                                                     "duels": 6, "duel_win_rate": 0.5}]})
    try:
        yield registry, parent, child, failed
    finally:  # leave serving on the base model with no live figures, as the session found it
        registry.move_pointer(Pointer(), actor="test", reason="ui test done")
        registry.write_stats({"updated_at": None, "adapters": [], "volume": []})


def css(browser: webdriver.Chrome, selector: str):
    return browser.find_element(By.CSS_SELECTOR, selector)


def sign_in(browser: webdriver.Chrome, token: str) -> None:
    css(browser, "#token").send_keys(token)
    css(browser, "#login button[type=submit]").click()


def confirm(browser: webdriver.Chrome, reason: str) -> None:
    """Answer the open confirmation dialog: first without a reason (refused by the form), then with one."""
    wait(browser, lambda d: d.execute_script("return document.querySelector('#confirm').open"), message="no dialog")
    css(browser, "#confirm button[value=confirm]").click()
    assert browser.execute_script("return document.querySelector('#confirm').open"), "confirmed without a reason"
    css(browser, "#confirm textarea[name=reason]").send_keys(reason)
    css(browser, "#confirm button[value=confirm]").click()


def page_active(browser: webdriver.Chrome, version: str) -> bool:
    return css(browser, "#pointer").get_attribute("data-active") == version


def bars(browser: webdriver.Chrome, chart: str, category: str) -> list[str]:
    return [bar.get_attribute("data-series") for bar in
            browser.find_elements(By.CSS_SELECTOR, f"{chart} rect.bar[data-category='{category}']")]


def points(browser: webdriver.Chrome, selector: str) -> int:
    return len(css(browser, selector).get_attribute("points").split())


def test_operator_sees_lineage_and_plots_then_promotes_and_rolls_back(
    browser: webdriver.Chrome, serving: ServingServer, lineage: tuple[Registry, str, str, str]
) -> None:
    registry, parent, child, failed = lineage
    browser.get(serving.base_url + "/admin")
    assert "operator token" in css(browser, "#status").text and not css(browser, "main").is_displayed()

    # a wrong token sees nothing; the operator's token shows the registry
    sign_in(browser, "not-the-operator-token")
    wait(browser, lambda d: "may not use the admin API" in css(d, "#status").text, message="wrong token not refused")
    assert not css(browser, "main").is_displayed()
    browser.get_log("browser")  # the 403s above are expected console errors
    sign_in(browser, ADMIN_TOKEN)
    wait(browser, lambda d: page_active(d, parent), message="pointer not shown")
    assert browser.execute_script("return sessionStorage.getItem('rlhf-admin.token')") == ADMIN_TOKEN

    # lineage by parent links, with roles and gate status
    assert css(browser, f"li[data-version='{parent}'] li[data-version='{child}'] li[data-version='{failed}']")
    assert css(browser, f"li[data-version='{parent}']").get_attribute("data-role") == "active"
    assert "failed" in css(browser, f"li[data-version='{failed}'] > .badge").text

    # the selected version's gate report and PPO plots; a version without history says so
    css(browser, f"button.version[data-version='{child}']").click()
    wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "#detail tr[data-gate='kl']"))
    kl_row = css(browser, "#detail tr[data-gate='kl']").text
    assert "passed" in kl_row and "mean_kl 1.5," in kl_row and "budget 12" in kl_row
    assert "ci95 [0.41, 0.8]" in css(browser, "#detail tr[data-gate='win_rate']").text
    assert points(browser, "[data-plot='reward'] polyline") == points(browser, "[data-plot='kl'] polyline") == 5
    line = css(browser, "[data-plot='kl'] polyline")
    assert browser.execute_script("return getComputedStyle(arguments[0]).fill", line) == "none"  # a line, not an area
    css(browser, f"button.version[data-version='{failed}']").click()
    wait(browser, lambda d: "No PPO history" in css(d, "#detail .ppo").text)
    assert "toxic share 0.40" in css(browser, "#detail tr[data-gate='safety']").text
    # the gates that look where users look, with their figures
    capability = css(browser, "#detail tr[data-gate='capability']").text
    assert "failed" in capability and "accuracy 0.375" in capability and "Which planet do we live on?" in capability
    assert "base_loglik_per_token -4.25" in css(browser, "#detail tr[data-gate='fluency']").text
    degeneration = css(browser, "#detail tr[data-gate='degeneration']").text
    assert "longest_sampled 256" in degeneration and '"faults":["loop"]' in degeneration, degeneration

    # across versions: reward-model accuracy; live figures from the learner's stats
    assert bars(browser, "#rm-chart", parent) == ["pair accuracy"]  # thumb accuracy not measured: no bar
    assert bars(browser, "#rm-chart", child) == ["pair accuracy", "thumb accuracy"]
    assert bars(browser, "#rates-chart", parent) == ["thumb-up rate", "duel win rate"]
    assert bars(browser, "#rates-chart", "base") == ["thumb-up rate"]  # no duels yet
    assert points(browser, "#volume-chart polyline[data-series='thumbs']") == 5  # 10:03 had none: a zero

    no_page_errors(browser)

    # a failed candidate is refused without force, and nothing moves
    css(browser, "#promote").click()
    confirm(browser, "try the failed one")
    wait(browser, lambda d: "Refused" in css(d, "#status").text and "failed gates" in css(d, "#status").text)
    assert registry.read_pointer().active == parent
    browser.get_log("browser")  # the 409 is an expected console error

    # promote the child, then cancel one rollback and confirm another
    css(browser, f"button.version[data-version='{child}']").click()
    css(browser, "#promote").click()
    confirm(browser, "child passed its gates")
    wait(browser, lambda d: page_active(d, child), message="promotion not shown")
    assert (registry.read_pointer().active, registry.read_pointer().previous) == (child, parent)
    assert css(browser, f"li[data-version='{parent}']").get_attribute("data-role") == "previous"

    css(browser, "#rollback").click()
    wait(browser, lambda d: d.execute_script("return document.querySelector('#confirm').open"))
    css(browser, "#confirm button[value=cancel]").click()
    wait(browser, lambda d: "nothing moved" in css(d, "#status").text)
    assert registry.read_pointer().active == child

    css(browser, "#rollback").click()
    confirm(browser, "thumb-downs up")
    wait(browser, lambda d: page_active(d, parent), message="rollback not shown")
    assert registry.read_pointer().active == parent
    assert [(a["action"], a["version"], a["reason"], a["actor"]) for a in registry.audit()[-2:]] == [
        ("promote", child, "child passed its gates", "operator:admin-api"),
        ("rollback", child, "thumb-downs up", "operator:admin-api")]
    newest = css(browser, "#audit tr:nth-child(2)").text  # row 1 is the header
    assert "rollback" in newest and child in newest and "thumb-downs up" in newest
    screenshot(browser, "admin-after-rollback")
    no_page_errors(browser)

    # serving follows the pointer the page moved
    deadline = time.monotonic() + 30
    while httpx.get(f"{serving.base_url}/readyz").json()["active_adapter"] != parent:
        assert time.monotonic() < deadline, "serving did not follow the rollback"
        time.sleep(0.2)
