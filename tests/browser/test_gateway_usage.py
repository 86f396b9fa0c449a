"""The whole key path the way a person walks it: create a key on the page, copy it once, call the
service through the real gateway process with it, and find the call on the Usage page."""

import requests
from playwright.sync_api import expect

from auth.models import UsageHour
from gateway.tasks import rollup_usage
from tests.stack import wait_for

CHAT = {"model": "mock", "messages": [{"role": "user", "content": "hi"}]}


def test_a_key_made_in_the_page_calls_the_gateway_and_the_call_shows_in_usage(
    page, live_server, login, start_gateway, upstream, make_service
):
    gateway = start_gateway()
    make_service("chat", upstream.url)
    page.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=live_server.url)
    login("alice", "alice-password-1")

    page.click("nav >> text=API keys")
    page.click("text=Create API key")
    page.fill("#id_name", "chat-frontend")
    page.select_option("#id_services", label="chat")
    page.click("button[type=submit]")
    expect(page.get_by_test_id("new-key")).to_contain_text("it will not be shown again")
    page.click("[data-testid=new-key] button.copy")
    expect(page.locator("[data-testid=new-key] button.copy")).to_have_text("Copied")
    key = page.evaluate("navigator.clipboard.readText()")
    assert key.startswith("iek_")

    url = f"{gateway.url}/chat/v1/chat/completions"
    refused = requests.post(url, json=CHAT, headers={"Authorization": "Bearer iek_wrong_key"}, timeout=10)
    assert refused.status_code == 401, refused.text
    answered = requests.post(url, json=CHAT, headers={"Authorization": f"Bearer {key}"}, timeout=10)
    assert answered.status_code == 200, answered.text
    assert answered.json()["usage"]["completion_tokens"] == 5
    assert len(upstream.seen) == 1  # the refused call never reached the model

    # What beat does every USAGE_ROLLUP_SECONDS, run here until the gateway's record has arrived.
    wait_for(
        lambda: rollup_usage() is not None and UsageHour.objects.filter(key__name="chat-frontend").exists(),
        timeout=20,
        what="the gateway's usage record to be rolled up",
    )

    page.click("nav >> text=Usage")
    page.select_option("select[name=group]", "key")
    page.click("text=Show")
    row = page.get_by_test_id("usage-table").locator("tr", has_text="chat-frontend")
    expect(row).to_have_count(1)
    # requests, 4xx, 5xx, prompt tokens, completion tokens (the mock upstream's usage: 7 + 5)
    expect(row.locator("td").nth(1)).to_have_text("1")
    expect(row.locator("td").nth(2)).to_have_text("0")
    expect(row.locator("td").nth(4)).to_have_text("7")
    expect(row.locator("td").nth(5)).to_have_text("5")
