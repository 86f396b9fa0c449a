"""A person creates an inference key for their service (a wrong limit is shown on its field),
copies it (shown once, gone after a reload) and revokes it after confirming."""

import re

from playwright.sync_api import expect

from auth.models import InferenceKey
from auth.tokens import inference_key_digest
from services.actions import service_create


def test_create_a_key_copy_it_once_and_revoke_it(page, live_server, user, queue, dataset, login):
    service = service_create(owner=user, name="chat", queue=queue, dataset=dataset, model_path="m")
    page.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=live_server.url)
    login("alice", "alice-password-1")

    page.click("nav >> text=API keys")
    page.click("text=Create API key")
    page.fill("#id_name", "chat-frontend")
    page.select_option("#id_services", label="chat")
    page.fill("#id_rpm_limit", "0")
    page.click("button[type=submit]")
    expect(page.locator("#field-rpm_limit .field-errors")).to_contain_text("Give at least 1")
    assert not InferenceKey.objects.exists()

    page.fill("#id_rpm_limit", "60")
    page.click("button[type=submit]")
    shown = page.get_by_test_id("new-key")
    expect(shown).to_contain_text("it will not be shown again")
    plaintext = page.locator("#new-key").inner_text()
    key = InferenceKey.objects.get()
    assert plaintext.startswith(f"iek_{key.prefix}_")
    assert key.digest == inference_key_digest(plaintext) and key.rpm_limit == 60
    assert list(key.services.all()) == [service]

    page.click("[data-testid=new-key] button.copy")
    expect(page.locator("[data-testid=new-key] button.copy")).to_have_text("Copied")
    assert page.evaluate("navigator.clipboard.readText()") == plaintext

    # The address is now the key's page: a reload shows it without the plaintext and creates nothing.
    page.wait_for_url(re.compile(rf"/keys/{key.id}/$"))
    page.reload()
    expect(page.get_by_test_id("key-state")).to_have_text("active")
    expect(page.get_by_test_id("new-key")).to_have_count(0)
    assert plaintext not in page.content()
    assert InferenceKey.objects.count() == 1

    # Revoke asks first: dismissing keeps the key, accepting revokes it.
    page.once("dialog", lambda dialog: dialog.dismiss())
    page.get_by_test_id("revoke").click()
    expect(page.get_by_test_id("key-state")).to_have_text("active")
    assert InferenceKey.objects.get().revoked_at is None
    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_test_id("revoke").click()
    expect(page.get_by_test_id("key-state")).to_have_text("revoked")
    expect(page.get_by_test_id("key-audit")).to_contain_text("revoke")
    assert InferenceKey.objects.get().revoked_at is not None

    page.click("text=All keys")
    expect(page.get_by_test_id(f"key-{key.prefix}")).to_contain_text("revoked")
    assert plaintext not in page.content()
