"""The widget in a real browser (Debian's headless chromium): the demo page embeds it,
a visitor writes with the keyboard, an agent's reply appears and is reported delivered,
and a reload shows the whole conversation once, in order.

Selenium is synchronous and the service runs in this test's event loop, so every
browser step runs in a thread.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import pytest
from selenium import webdriver
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import WebDriverWait

from switchboard_common.contract import INBOUND, OUTBOUND, DeliveryStatus, DeliveryUpdated
from switchboard_devkit.testing.kafka_probe import TopicProbe
from switchboard_devtools.testing.browser import chromium

from .conftest import RunningChat, start_chat
from .test_webchat_replies import order, reply

pytestmark = pytest.mark.integration

T = TypeVar("T")
LOG = "#switchboard-chat-log li"


@pytest.fixture
def browser() -> Iterator[webdriver.Chrome]:
    with chromium() as driver:
        yield driver


async def step(action: Callable[[], T]) -> T:
    return await asyncio.to_thread(action)


def wait(driver: webdriver.Chrome, condition: Callable[[webdriver.Chrome], Any]) -> Any:
    return WebDriverWait(driver, 30).until(condition)


def log_items(driver: webdriver.Chrome) -> list[tuple[str | None, ...]]:
    return [
        (
            li.get_attribute("data-from"),
            li.get_attribute("data-state"),
            li.get_attribute("data-seq"),
            li.text,
        )
        for li in driver.find_elements(By.CSS_SELECTOR, LOG)
    ]


def status(driver: webdriver.Chrome) -> str:
    return driver.find_element(By.ID, "switchboard-chat-status").text


async def test_a_visitor_chats_through_the_widget_and_a_reload_loses_nothing(
    chat: RunningChat, probe: TopicProbe, browser: webdriver.Chrome
) -> None:
    await step(lambda: browser.get(chat.url + "/chat/demo"))
    await step(lambda: wait(browser, lambda d: status(d) == "connected"))
    textarea = await step(lambda: browser.find_element(By.ID, "switchboard-chat-input"))
    assert (await step(lambda: textarea.get_attribute("maxlength"))) == "10000"
    # Shift+Enter starts a new line; Enter sends.
    await step(lambda: textarea.send_keys("Hello", Keys.SHIFT, Keys.ENTER, Keys.SHIFT, "there"))
    assert (await step(lambda: textarea.get_attribute("value"))) == "Hello\nthere"
    await step(lambda: textarea.send_keys(Keys.ENTER))
    await step(
        lambda: wait(browser, lambda d: log_items(d) == [("visitor", "sent", "1", "Hello\nthere")])
    )
    token = await step(
        lambda: browser.execute_script(
            "for (var i = 0; i < localStorage.length; i++) {"
            "  var key = localStorage.key(i);"
            "  if (key.indexOf('switchboard-chat:') === 0)"
            "    return JSON.parse(localStorage.getItem(key));"
            "}"
        )
    )
    assert token["pending"] == []
    visitor = token["token"].split(".")[0]

    await reply(probe, order(visitor, "r-1", "Hi! How can I help?"))
    await step(lambda: wait(browser, lambda d: len(log_items(d)) == 2))
    assert (await step(lambda: log_items(browser)))[1] == (
        "agent",
        None,
        "2",
        "Hi! How can I help?",
    )
    # The panel is open and the page visible: the widget says it has shown the reply.
    events = await probe.read_events(OUTBOUND, count=2)
    delivered = [
        e
        for _, e in events
        if isinstance(e, DeliveryUpdated) and e.status is DeliveryStatus.DELIVERED
    ]
    assert [d.reply_id for d in delivered] == ["r-1"]

    await step(browser.refresh)
    await step(lambda: wait(browser, lambda d: status(d) == "connected"))
    await step(lambda: wait(browser, lambda d: len(log_items(d)) >= 2))
    assert await step(lambda: log_items(browser)) == [
        ("visitor", "sent", "1", "Hello\nthere"),
        ("agent", None, "2", "Hi! How can I help?"),
    ]
    accessible = await step(
        lambda: browser.execute_script(
            "var log = document.getElementById('switchboard-chat-log');"
            "var input = document.getElementById('switchboard-chat-input');"
            "return [log.getAttribute('role'), log.getAttribute('aria-live'),"
            " document.querySelector('label[for=switchboard-chat-input]') !== null,"
            " document.activeElement === input];"
        )
    )
    assert accessible == ["log", "polite", True, True]


# One message, then one every 4 s: typing the second (and the first's ack) never takes
# that long, so it is told to wait, and the widget's resend after retry_after goes through.
@pytest.mark.parametrize(
    "chat_env",
    [{"WEBCHAT_VISITOR_BURST": "1", "WEBCHAT_VISITOR_PER_SECOND": "0.25"}],
    indirect=True,
)
async def test_a_message_told_to_wait_is_sent_again_by_the_widget_and_shown_once(
    chat: RunningChat, browser: webdriver.Chrome
) -> None:
    await step(lambda: browser.get(chat.url + "/chat/demo"))
    await step(lambda: wait(browser, lambda d: status(d) == "connected"))
    textarea = await step(lambda: browser.find_element(By.ID, "switchboard-chat-input"))
    await step(lambda: textarea.send_keys("one", Keys.ENTER, "two", Keys.ENTER))
    await step(
        lambda: wait(
            browser,
            lambda d: (
                log_items(d) == [("visitor", "sent", "1", "one"), ("visitor", "sent", "2", "two")]
            ),
        )
    )
    refused = chat.parts.registry.get_sample_value(
        "switchboard_webchat_messages_refused_total", {"reason": "rate_limited"}
    )
    assert refused is not None
    assert refused >= 1


@pytest.mark.parametrize(
    "chat_env", [{"WEBCHAT_VISITOR_BURST": "1", "WEBCHAT_VISITOR_PER_SECOND": "0.5"}], indirect=True
)
async def test_a_reload_before_the_ack_loses_nothing(
    chat: RunningChat, probe: TopicProbe, browser: webdriver.Chrome
) -> None:
    await step(lambda: browser.get(chat.url + "/chat/demo"))
    await step(lambda: wait(browser, lambda d: status(d) == "connected"))
    textarea = await step(lambda: browser.find_element(By.ID, "switchboard-chat-input"))
    await step(lambda: textarea.send_keys("one", Keys.ENTER))
    await step(lambda: wait(browser, lambda d: log_items(d) == [("visitor", "sent", "1", "one")]))
    # Told to wait (the burst is spent): not acknowledged when the page goes away.
    await step(lambda: textarea.send_keys("two", Keys.ENTER))
    await step(
        lambda: wait(
            browser,
            lambda _: chat.parts.registry.get_sample_value(
                "switchboard_webchat_messages_refused_total", {"reason": "rate_limited"}
            ),
        )
    )
    await step(browser.refresh)
    await step(
        lambda: wait(
            browser,
            lambda d: (
                log_items(d) == [("visitor", "sent", "1", "one"), ("visitor", "sent", "2", "two")]
            ),
        )
    )
    records = await probe.read(INBOUND, count=2, settle=1.0)
    assert len(records) == 2


async def test_a_visitor_whose_token_no_longer_holds_sees_the_new_conversation(
    chat_env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    probe: TopicProbe,
    browser: webdriver.Chrome,
) -> None:
    """The token secret is rotated while the page is open: the widget is told bad_token,
    starts afresh as a new visitor, and the new conversation's replies show although
    their seqs were the old one's."""
    async with start_chat(chat_env, monkeypatch) as first:
        await step(lambda: browser.get(first.url + "/chat/demo"))
        await step(lambda: wait(browser, lambda d: status(d) == "connected"))
        textarea = await step(lambda: browser.find_element(By.ID, "switchboard-chat-input"))
        await step(lambda: textarea.send_keys("one", Keys.ENTER))
        await step(lambda: textarea.send_keys("two", Keys.ENTER))
        await step(lambda: wait(browser, lambda d: [i[2] for i in log_items(d)] == ["1", "2"]))
        old = await step(lambda: browser.execute_script(READ_VISITOR_KEY))
    port = int(first.url.rsplit(":", 1)[1])
    rotated = {**chat_env, "WEBCHAT_TOKEN_SECRET": "rotated-token-secret"}
    async with start_chat(rotated, monkeypatch, port=port):
        new = await step(
            lambda: wait(
                browser,
                lambda d: (
                    status(d) == "connected"
                    and (d.execute_script(READ_VISITOR_KEY) or old) != old
                    and d.execute_script(READ_VISITOR_KEY)
                ),
            )
        )
        await reply(probe, order(str(new).split(".")[0], "r-new", "Welcome back"))
        await step(
            lambda: wait(browser, lambda d: ("agent", None, "1", "Welcome back") in log_items(d))
        )


#: The widget's visitor token as it keeps it in the page's storage.
READ_VISITOR_KEY = (
    "for (var i = 0; i < localStorage.length; i++) {"
    "  var key = localStorage.key(i);"
    "  if (key.indexOf('switchboard-chat:') === 0)"
    "    return JSON.parse(localStorage.getItem(key)).token;"
    "}"
)
