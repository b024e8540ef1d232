"""Public avatars without leaks (issue 20): a signed-out visitor gets alice's public avatars and nothing of bob's
private tune (pages, image links, the app's config); only an owner changes a tune's visibility or hides an avatar;
training photos are never served; an admin can take any public avatar off the showcase for good."""

from __future__ import annotations

import httpx
import pytest
from gradio_client.exceptions import AppError

from tests.security.conftest import Served
from tests.studio.test_showcase import avatars
from ui.showcase import cards_html

SECRET = "Bob's private birthday"


@pytest.fixture(scope="module")
def seeded(served: Served):
    alice, hers = avatars(served.studio, "alice", "Alice on show", visibility="public")
    bob, his = avatars(served.studio, "bob", SECRET)
    return alice, hers, bob, his


def texts_of(served: Served, owner: str) -> list[str]:
    return [p.rendered_text for p in served.studio.list_prompts(owner, limit=50)]


def test_a_signed_out_visitor_sees_public_avatars_only(served: Served, seeded):
    alice, hers, bob, his = seeded
    with httpx.Client(base_url=served.url, timeout=60) as visitor:
        for path in ("/showcase", "/showcase/alice", "/showcase/bob", f"/showcase/bob?tune={bob.id}"):
            page = visitor.get(path)
            assert page.status_code == 200
            assert "birthday" not in page.text and f'data-image="{his["sample"][0]}"' not in page.text
        everyone = visitor.get("/showcase").text
        assert all(f'data-image="{image}"' in everyone for image in hers["sample"] + hers["prompt"])
        assert "/photos/" not in everyone and "gradio_api/file" not in everyone
        for image in his["sample"] + his["prompt"]:  # no link reaches a private avatar, signed or guessed
            for link in (
                served.studio.showcase.link(image, None),
                served.studio.showcase.link(image, alice.publication),
            ):
                assert visitor.get(link).status_code == 404
        assert visitor.get("/showcase/images/..%2F..%2Ftunes.db?v=x").status_code == 404
        assert visitor.get("/").status_code in (200, 401)  # the app itself asks signed-out visitors to sign in
        assert "birthday" not in visitor.get("/config").text


def test_a_signed_in_user_gets_nothing_private_of_another(served: Served, seeded):
    _, hers, bob, his = seeded
    with served.browser("alice") as alice_session:
        config = alice_session.get("/config").text
        assert "birthday" not in config and all(text not in config for text in texts_of(served, "bob"))
    with served.rest("alice") as alice:
        assert alice.patch(f"/tunes/{bob.id}", json={"tune": {"visibility": "public"}}).status_code == 404
        assert alice.patch(f"/images/{his['sample'][0]}", json={"image": {"hidden": False}}).status_code == 404
    with served.rest("bob") as bob_rest:
        assert bob_rest.patch(f"/images/{hers['sample'][0]}", json={"image": {"hidden": True}}).status_code == 404
    client = served.gradio("alice")
    with pytest.raises(AppError, match="not found"):
        client.predict(bob.id, "public", api_name="/set_visibility")
    assert served.studio.get_tune("bob", bob.id).visibility == "private"
    assert served.studio.showcase.items(user="bob") == []


def test_an_admin_takes_any_public_avatar_off_the_showcase_for_good(served: Served, seeded):
    # alice is the admin here; bob shows a second tune and alice blocks one of its avatars
    _, images = avatars(served.studio, "bob", "Bob on show", visibility="public")
    blocked = images["prompt"][0]
    admin = served.gradio("alice")
    *_, status = admin.predict(str(blocked), api_name="/admin_block_image")
    assert status == f"Image {blocked} of bob is off the showcase; its owner cannot put it back."
    served.studio.hide_image("bob", blocked, hidden=False)
    with httpx.Client(base_url=served.url, timeout=60) as visitor:
        page = visitor.get("/showcase/bob").text
        assert f'data-image="{blocked}"' not in page and f'data-image="{images["sample"][0]}"' in page
    with pytest.raises(AppError, match="'bob' is not an admin"):
        served.gradio("bob").predict(str(images["sample"][0]), api_name="/admin_block_image")


def test_the_cards_escape_every_text_and_link_only_public_files():
    from studio.showcase import ShowcaseItem

    item = ShowcaseItem(7, "<b>eve</b>", 3, "<script>x()</script>", 'a "quoted" <img src=x onerror=y>', "prompt",
                        True, None, 32, 32, "2026-01-01T00:00:00+00:00", "/showcase/images/7.png?v=abc")  # fmt: skip
    html = cards_html([item])
    assert "<script>" not in html and "<b>eve</b>" not in html and "onerror=y>" not in html
    assert "&lt;script&gt;" in html and 'src="/showcase/images/7.png?v=abc"' in html
