"""The chat page in headless Chromium against the real serving process and broker: an answer streams
in, and a thumb with a comment, a better answer and a duel vote reach Kafka naming the answers the page showed."""

from __future__ import annotations

import pytest
from selenium import webdriver
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webelement import WebElement

from feedback.broker import EmbeddedBroker
from tests.helpers import ServingServer, read_topic
from tests.ui.conftest import no_page_errors, screenshot, wait

pytestmark = pytest.mark.slow

INTERACTIONS, FEEDBACK = "rlhf.interactions", "rlhf.feedback"
USER = "ui-tester"


def open_chat(browser: webdriver.Chrome, serving: ServingServer, *, max_tokens: int = 12) -> None:
    browser.get(serving.base_url + "/")
    for selector, value in (("#user", USER), ("#max-tokens", str(max_tokens))):
        field = browser.find_element(By.CSS_SELECTOR, selector)
        field.clear()
        field.send_keys(value)


def ask(browser: webdriver.Chrome, prompt: str) -> None:
    browser.find_element(By.CSS_SELECTOR, "#prompt").send_keys(prompt, Keys.ENTER)  # Enter sends


def finished_answers(browser: webdriver.Chrome, count: int) -> list[WebElement] | None:
    answers = browser.find_elements(By.CSS_SELECTOR, '.answer[data-state="done"]')
    return answers if len(answers) >= count else None


def text_of(answer: WebElement) -> str:
    return answer.find_element(By.CSS_SELECTOR, ".text").get_property("textContent")


def record(broker: EmbeddedBroker, topic: str, **fields: str) -> dict:
    """The one record of `topic` whose fields have these values (waiting for it to arrive)."""
    def matches(record: dict) -> bool:
        return all(record.get(key) == value for key, value in fields.items())
    found = [r for r in read_topic(broker, topic, lambda records: any(map(matches, records))) if matches(r)]
    assert len(found) == 1, (topic, fields, found)
    return found[0]


def aborted_streams(serving: ServingServer) -> int:
    """Streams whose client left before the end, as serving logs them."""
    return serving.log_path.read_text().count("chat.stream_aborted")


def test_answer_streams_in_and_a_thumb_with_comment_reaches_kafka(
    browser: webdriver.Chrome, serving: ServingServer, broker: EmbeddedBroker
) -> None:
    open_chat(browser, serving)
    ask(browser, "Name a colour.")
    [answer] = wait(browser, lambda d: finished_answers(d, 1), message="no streamed answer")
    assert int(answer.get_attribute("data-chunks")) > 2  # it arrived in pieces, not as one reply
    response_id, shown = answer.get_attribute("data-response-id"), text_of(answer)
    assert shown.strip()

    answer.find_element(By.CSS_SELECTOR, ".comment").send_keys("short and right")
    answer.find_element(By.CSS_SELECTOR, '.thumb[data-rating="up"]').click()
    wait(browser, lambda d: answer.get_attribute("data-rated") == "up", message="thumb not acknowledged")
    screenshot(browser, "chat-thumb")
    no_page_errors(browser)

    interaction = record(broker, INTERACTIONS, response_id=response_id)
    assert interaction["response"] == shown and interaction["user_id"] == USER  # the page showed what was logged
    thumb = record(broker, FEEDBACK, event_type="thumb", response_id=response_id)
    assert (thumb["rating"], thumb["comment"], thumb["user_id"]) == ("up", "short and right", USER)
    assert thumb["conversation_id"] == interaction["conversation_id"]

    # "suggest a better answer": the user's own answer to the same response
    answer.find_element(By.CSS_SELECTOR, ".correct summary").click()
    answer.find_element(By.CSS_SELECTOR, ".send-correction").click()  # empty: the page asks for text, sends nothing
    assert "Write the answer" in answer.find_element(By.CSS_SELECTOR, ".corrected").text
    answer.find_element(By.CSS_SELECTOR, ".correction").send_keys("Blue, the colour of a clear sky.")
    answer.find_element(By.CSS_SELECTOR, ".send-correction").click()
    wait(browser, lambda d: answer.get_attribute("data-corrected") == "true", message="correction not acknowledged")
    no_page_errors(browser)
    correction = record(broker, FEEDBACK, event_type="correction", response_id=response_id)
    assert (correction["correction"], correction["user_id"]) == ("Blue, the colour of a clear sky.", USER)


def test_duel_shows_two_answers_and_the_vote_reaches_kafka(
    browser: webdriver.Chrome, serving: ServingServer, broker: EmbeddedBroker
) -> None:
    open_chat(browser, serving)
    browser.find_element(By.CSS_SELECTOR, "#duel").click()
    ask(browser, "Say hello.")
    duel = wait(browser, lambda d: d.find_element(By.CSS_SELECTOR, ".duel[data-duel-id]"), message="no duel")
    a, b = duel.find_elements(By.CSS_SELECTOR, ".answer")
    assert [side.find_element(By.CSS_SELECTOR, ".side").text for side in (a, b)] == ["A", "B"]
    assert a.location["y"] == b.location["y"] and a.location["x"] < b.location["x"]  # side by side
    duel.find_element(By.CSS_SELECTOR, ".vote .comment").send_keys("B is friendlier")
    duel.find_element(By.XPATH, ".//button[text()='B is better']").click()
    wait(browser, lambda d: duel.get_attribute("data-voted") == "b", message="vote not acknowledged")
    assert all(not button.is_enabled() for button in duel.find_elements(By.CSS_SELECTOR, "[data-choice]"))  # one vote
    screenshot(browser, "chat-duel")

    vote = record(broker, FEEDBACK, event_type="pairwise", duel_id=duel.get_attribute("data-duel-id"))
    assert (vote["choice"], vote["comment"], vote["user_id"]) == ("b", "B is friendlier", USER)
    assert (vote["response_id_a"], vote["response_id_b"]) == (a.get_attribute("data-response-id"), b.get_attribute("data-response-id"))

    # the conversation goes on with the answer that won the vote
    browser.find_element(By.CSS_SELECTOR, "#duel").click()
    ask(browser, "Thanks!")
    follow_up = wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, '#log > .answer[data-state="done"]'))[0]
    messages = record(broker, INTERACTIONS, response_id=follow_up.get_attribute("data-response-id"))["messages"]
    assert [m["role"] for m in messages] == ["user", "assistant", "user"]
    assert messages[1]["content"] == text_of(b) and messages[2]["content"] == "Thanks!"
    no_page_errors(browser)


def test_a_refused_request_says_why_and_can_be_asked_again(browser: webdriver.Chrome, serving: ServingServer) -> None:
    open_chat(browser, serving, max_tokens=100_000)  # beyond the model's context
    ask(browser, "Hello?")
    status = wait(browser, lambda d: d.find_element(By.CSS_SELECTOR, "#status").text, message="no error shown")
    assert status.startswith("Failed:") and "token" in status.lower()
    assert browser.find_element(By.CSS_SELECTOR, ".answer").get_attribute("data-state") == "error"
    assert browser.find_element(By.CSS_SELECTOR, "#send").is_enabled()


def test_new_chat_stops_the_answer_in_flight_and_starts_clean(
    browser: webdriver.Chrome, serving: ServingServer, broker: EmbeddedBroker
) -> None:
    aborted_before = aborted_streams(serving)
    open_chat(browser, serving, max_tokens=400)
    ask(browser, "Write a long story about a lighthouse.")
    wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, '.answer[data-state="streaming"][data-chunks]'))
    browser.find_element(By.CSS_SELECTOR, "#new-chat").click()
    assert browser.find_elements(By.CSS_SELECTOR, "#log > *") == []
    wait(browser, lambda _: aborted_streams(serving) == aborted_before + 1, timeout_s=10, message="serving kept generating")

    field = browser.find_element(By.CSS_SELECTOR, "#max-tokens")
    field.clear()
    field.send_keys("12")
    ask(browser, "Hi!")
    [answer] = wait(browser, lambda d: finished_answers(d, 1))
    assert browser.find_element(By.CSS_SELECTOR, "#status").text == ""
    messages = record(broker, INTERACTIONS, response_id=answer.get_attribute("data-response-id"))["messages"]
    assert messages == [{"role": "user", "content": "Hi!"}]  # nothing of the abandoned thread
