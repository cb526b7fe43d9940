"""The triage console: server-rendered pages (TestClient) and a real headless Chromium run."""

from __future__ import annotations

import re
from html import unescape

from _service_support import issue_key

from ticket_triage.service.deps import CONSOLE_COOKIE


def seed(client, headers=None):
    ids = []
    for body in ["My mortgage escrow doubled", "Please call me back about my problem", "Debt collector calls daily"]:
        ids.append(client.post("/v1/tickets", json={"subject": "", "body": body}, headers=headers or {}).json()["id"])
    return ids


def counts(html: str) -> dict[str, str]:
    """The queue counts the page shows: {queue: open work}."""
    return dict(re.findall(r'data-queue-count="([^"]+)"[^>]*>(\d+)<', html))


def row_html(html: str, ticket_id: int) -> str:
    """One ticket's part of the work list (its row and its expansion)."""
    match = re.search(rf'<tbody class="ticket" data-ticket="{ticket_id}".*?</tbody>', html, re.S)
    assert match, f"ticket {ticket_id} is not on the page"
    return match.group(0)


def cell(html: str, name: str) -> str:
    match = re.search(rf'<td class="{name}">(.*?)</td>', html, re.S)
    assert match, name
    return re.sub(r"<[^>]+>|\s+", " ", match.group(1)).split()


def test_console_page_lists_queues_and_tickets_without_auth(client):
    seed(client)
    page = client.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    html = page.text
    assert counts(html) == {**counts(html), "needs-review": "1", "mortgage": "1", "loans": "0"}
    assert "/static/console.js" in html and "http" not in html.split("<body>")[1].replace("http-equiv", "")  # no CDN
    review = client.get("/", params={"queue": "needs-review"}).text
    assert "Please call me back about my problem" in review and "0.30" in review
    assert '<option value="Card Services">' in review
    assert client.get("/static/console.js").status_code == 200


def test_console_escapes_ticket_text(client):
    client.post("/v1/tickets", json={"body": "<script>alert('x')</script> card"})
    html = client.get("/", params={"queue": "card-services"}).text
    assert "<script>alert" not in html and "&lt;script&gt;" in html


def test_console_login_with_an_agent_key_sets_an_httponly_cookie(make_client):
    client = make_client(auth=True)
    agent, intake = issue_key(client, "agent", "ann"), issue_key(client, "intake", "form")
    assert "Sign in" in client.get("/").text
    r = client.post("/console/login", data={"key": intake}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/?denied=1" and "set-cookie" not in r.headers
    r = client.post("/console/login", data={"key": agent}, follow_redirects=False)
    cookie = r.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie.replace("Strict", "strict")
    page = client.get("/")
    assert re.search(r"signed in as <strong id=\"who\">ann<", page.text)
    # the cookie also authorises the feedback API (what the page's script calls)
    tid = client.post("/v1/tickets", json={"body": "card"}, headers={"Authorization": f"Bearer {intake}"}).json()["id"]
    assert (
        client.post(f"/v1/tickets/{tid}/feedback", json={"category": "Loans"}).json()["feedback"][0]["agent"] == "ann"
    )
    client.post("/console/logout")
    assert "Sign in" in client.get("/").text


# -- defect 4: /docs and /redoc work offline -------------------------------------------------------
def test_docs_and_redoc_load_only_vendored_assets(client):
    import re

    for path in ["/docs", "/redoc"]:
        page = client.get(path)
        assert page.status_code == 200
        assets = re.findall(r'(?:src|href)="([^"]+)"', page.text)
        assert assets and all(a.startswith("/") for a in assets), assets  # no CDN, no Google Fonts
        assert "fonts.googleapis" not in page.text and "<script>" not in page.text  # no inline script
        for asset in assets:
            assert client.get(asset).status_code == 200, asset
        assert "script-src 'self';" in page.headers["Content-Security-Policy"]
        assert "http" not in page.headers["Content-Security-Policy"]


# -- defect 1: paging ---------------------------------------------------------------------------
def post_many(client, n: int, body: str = "card charge") -> list[int]:
    return [client.post("/v1/tickets", json={"body": f"{body} {i}"}).json()["id"] for i in range(n)]


def ids_on(html: str) -> list[int]:
    return [int(i) for i in re.findall(r'<tbody class="ticket" data-ticket="(\d+)"', html)]


def link(html: str, link_id: str) -> tuple[str, str] | None:
    match = re.search(rf'<a id="{link_id}" rel="\w+" href="([^"]+)">([^<]+)</a>', html)
    return (match.group(1).replace("&amp;", "&"), match.group(2)) if match else None


def test_the_list_is_newest_first_and_newer_points_to_newer_tickets(client):
    ids = post_many(client, 60)
    first = client.get("/", params={"queue": "card-services"}).text
    assert ids_on(first) == ids[::-1][:50]  # newest first
    assert "1–50 of 60" in first and link(first, "page-previous") is None
    href, text = link(first, "page-next")
    assert text == "Older →" and "offset=50" in href
    second = client.get(href).text
    assert ids_on(second) == ids[::-1][50:] and "51–60 of 60" in second
    href, text = link(second, "page-previous")
    assert text == "← Newer" and "offset" not in href  # back to the first page: the newer tickets
    assert ids_on(client.get(href).text) == ids[::-1][:50]
    assert link(second, "page-next") is None


def test_oldest_open_first_puts_done_work_last(client):
    ids = post_many(client, 4)
    client.post(f"/v1/tickets/{ids[0]}/work", json={"state": "done"})
    html = client.get("/", params={"queue": "card-services", "sort": "oldest-open"}).text
    assert ids_on(html) == [ids[1], ids[2], ids[3], ids[0]]
    assert '<option value="oldest-open" selected>' in html
    # the queue links keep the order; the page links too
    assert 'href="/?queue=card-services&amp;sort=oldest-open"' in html


# -- defect 2: the model's confidence stays beside the model's category -------------------------
def test_a_corrected_ticket_shows_the_models_category_and_confidence_apart_from_the_agents(client):
    tid = client.post("/v1/tickets", json={"body": "my card was charged twice"}).json()["id"]
    client.post(f"/v1/tickets/{tid}/feedback", json={"category": "Loans", "note": "it is a car loan"})
    html = row_html(client.get("/", params={"queue": "loans"}).text, tid)
    assert cell(html, "model")[:3] == ["Card", "Services", "0.90"]
    agent = cell(html, "agent")
    assert agent[0] == "Loans" and "0.90" not in agent and "corrected" in agent
    assert "0.02" not in cell(html, "model")  # Loans' own probability is not presented as the confidence


def test_confidence_is_coloured_against_the_review_threshold(client):
    low = client.post("/v1/tickets", json={"body": "please call me"}).json()["id"]
    high = client.post("/v1/tickets", json={"body": "card fraud"}).json()["id"]
    review = row_html(client.get("/", params={"queue": "needs-review"}).text, low)
    assert 'class="confidence low"' in review and "below the review threshold" in review
    routed = row_html(client.get("/", params={"queue": "card-services"}).text, high)
    assert 'class="confidence ok"' in routed
    # top 3 with bars, and one-click corrections to the alternatives (not to the current category)
    assert review.count("<meter") >= 4 and 'data-action="correct" data-category="Credit Reporting">' in review
    assert 'data-action="correct" data-category="Banking Services" disabled>' in review  # the current one


# -- defect 3: Confirm is its own action ---------------------------------------------------------
def test_confirm_is_separate_from_correct_and_is_disabled_once_confirmed(client):
    tid = client.post("/v1/tickets", json={"body": "please call me"}).json()["id"]
    html = row_html(client.get("/", params={"queue": "needs-review"}).text, tid)
    confirm = re.search(r'<button type="button" data-action="confirm"[^>]*>', html).group(0)
    assert "disabled" not in confirm and 'data-action="correct-select"' in html
    confirmed = client.post(f"/v1/tickets/{tid}/confirm", json={}).json()
    assert confirmed["status"] == "confirmed" and confirmed["queue"] == "banking"  # out of review, to its team
    html = row_html(client.get("/", params={"queue": "banking"}).text, tid)
    assert "disabled" in re.search(r'<button type="button" data-action="confirm"[^>]*>', html).group(0)
    assert cell(html, "agent")[:2] == ["Banking", "Services"] and "confirmed" in cell(html, "agent")


# -- defect 5: an expired sign-in goes back to the sign-in page ---------------------------------
def test_an_expired_sign_in_goes_back_to_the_sign_in_page_with_a_message(make_client):
    client = make_client(auth=True, api_key_cache_s=0)
    agent = issue_key(client, "agent", "ann")
    client.post("/console/login", data={"key": agent})
    assert "signed in as" in client.get("/").text
    from ticket_triage.service import crud

    state = client.app.state.triage
    with state.sessions() as session, session.begin():
        for key in crud.find_api_keys(session, ident="ann"):
            crud.revoke_api_key(session, key=key)
    for path in ["/", "/tickets/1", "/?queue=mortgage"]:
        r = client.get(path, follow_redirects=False, headers={"Cookie": f"{CONSOLE_COOKIE}={agent}"})
        assert r.status_code == 303 and r.headers["location"] == "/?expired=1", path
        assert f'{CONSOLE_COOKIE}=""' in r.headers["set-cookie"]  # the stale cookie is dropped
    page = client.get("/?expired=1", headers={"Cookie": f"{CONSOLE_COOKIE}={agent}"})
    assert page.status_code == 401 and "Your session expired, please sign in again." in page.text
    assert "send `Authorization" not in page.text and 'id="username"' in page.text and 'id="key"' in page.text


def test_without_a_sign_in_the_console_shows_the_form_without_a_message(make_client):
    client = make_client(auth=True)
    page = client.get("/")
    assert page.status_code == 200 and "expired" not in page.text and 'id="password"' in page.text
    assert client.get("/tickets/1").status_code == 200 and 'id="password"' in client.get("/tickets/1").text


def test_an_expired_session_token_goes_back_to_the_sign_in_page(make_client):
    import time

    from ticket_triage.service.sessions import signer_for

    client = make_client(auth=True)
    issue_key(client, "agent", "ann")
    old = signer_for(client.app.state.triage).issue(name="ann", role="agent", now=time.time() - 10 * 24 * 3600)
    r = client.get("/", follow_redirects=False, headers={"Cookie": f"{CONSOLE_COOKIE}={old}"})
    assert r.status_code == 303 and r.headers["location"] == "/?expired=1"
    # the page's script gets a JSON 401 naming the sign-in page
    api = client.post("/v1/tickets/1/confirm", json={}, headers={"Cookie": f"{CONSOLE_COOKIE}={old}"})
    assert api.status_code == 401 and api.json()["login"] == "/"


def test_people_sign_in_with_a_name_and_password(make_client):
    from ticket_triage.service.users import create_user, disable_user

    client = make_client(auth=True, api_key_cache_s=0)
    state = client.app.state.triage
    with state.sessions() as session, session.begin():
        create_user(session, username="maria", role="agent", password="correct horse battery")
    r = client.post("/console/login", data={"username": "maria", "password": "wrong one here"}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/?denied=password"
    assert "do not match an active account" in client.get(r.headers["location"]).text
    r = client.post(
        "/console/login", data={"username": "maria", "password": "correct horse battery"}, follow_redirects=False
    )
    assert r.status_code == 303 and "HttpOnly" in r.headers["set-cookie"]
    assert re.search(r'signed in as <strong id="who">maria<', client.get("/").text)
    tid = client.post("/v1/tickets/1/confirm", json={})
    assert tid.status_code == 404  # signed in (no such ticket yet), not 401
    with state.sessions() as session, session.begin():
        disable_user(session, username="maria")
    r = client.get("/", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/?expired=1"
    client.post("/console/logout")
    assert 'id="password"' in client.get("/").text


# -- defect 7: unknown queue, cut text -----------------------------------------------------------
def test_an_unknown_queue_is_not_found_not_empty(client):
    r = client.get("/", params={"queue": "no-such-queue"})
    assert r.status_code == 404 and "There is no queue named “no-such-queue”" in r.text
    assert "This queue is empty" not in r.text and "needs-review" in r.text
    empty = client.get("/", params={"queue": "loans"})
    assert empty.status_code == 200 and "This queue is empty" in empty.text


def test_long_text_is_all_there_and_can_be_expanded(client):
    body = "card " + " ".join(f"word{i}" for i in range(600)) + " THE-END"
    tid = client.post("/v1/tickets", json={"subject": "Long one", "body": body}).json()["id"]
    html = row_html(client.get("/", params={"queue": "card-services"}).text, tid)
    assert html.count("THE-END") == 2  # the one-line summary and the full text
    assert f'aria-controls="more-{tid}"' in html and 'aria-expanded="false"' in html
    assert f'<tr class="more" id="more-{tid}" hidden>' in html


# -- the work list --------------------------------------------------------------------------------
def test_the_review_queue_is_the_landing_page_when_it_has_open_work(client):
    card = client.post("/v1/tickets", json={"body": "card"}).json()["id"]
    assert 'aria-current="page">card-services<' in client.get("/").text
    vague = client.post("/v1/tickets", json={"body": "hello"}).json()["id"]
    html = client.get("/").text
    assert 'aria-current="page">needs-review<' in html and ids_on(html) == [vague]
    client.post(f"/v1/tickets/{vague}/work", json={"state": "done"})
    html = client.get("/").text  # no open review work: the first queue with some
    assert 'aria-current="page">card-services<' in html and ids_on(html) == [card]
    assert counts(html)["needs-review"] == "0"  # counts show open work


def test_times_are_machine_readable_for_the_agents_time_zone(client):
    client.post("/v1/tickets", json={"body": "card"})
    html = client.get("/").text
    assert re.search(r'<time datetime="\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[.\d]*\+00:00">', html)


def test_search_and_filters_narrow_the_list_across_queues(client):
    escrow = client.post("/v1/tickets", json={"body": "my mortgage escrow doubled", "channel": "email"}).json()["id"]
    card = client.post("/v1/tickets", json={"body": "card declined", "channel": "web"}).json()["id"]
    vague = client.post("/v1/tickets", json={"body": "a refund question, call me"}).json()["id"]
    assert ids_on(client.get("/", params={"q": "escrow"}).text) == [escrow]
    assert ids_on(client.get("/", params={"q": "call refund"}).text) == [vague]
    assert ids_on(client.get("/", params={"q": "escrow", "channel": "email"}).text) == [escrow]
    assert ids_on(client.get("/", params={"confidence_max": "0.5", "q": ""}).text) == [vague]
    assert sorted(ids_on(client.get("/", params={"confidence_min": "0.8"}).text)) == [escrow, card]
    assert ids_on(client.get("/", params={"category": "Card Services", "status": ""}).text) == [card]
    assert ids_on(client.get("/", params={"q": "escrow", "queue": "mortgage"}).text) == [escrow]
    today = client.get(f"/v1/tickets/{card}").json()["created_at"][:10]
    assert len(ids_on(client.get("/", params={"created_from": today, "created_to": today}).text)) == 3
    assert ids_on(client.get("/", params={"created_to": "2000-01-01"}).text) == []
    client.post(f"/v1/tickets/{card}/work", json={"state": "done"})
    assert ids_on(client.get("/", params={"work_state": "done"}).text) == [card]
    bad = client.get("/", params={"confidence_min": "lots", "q": "escrow"})
    assert bad.status_code == 400 and "confidence min 'lots' is not a number from 0 to 1" in unescape(bad.text)
    assert client.get("/", params={"status": "nonsense"}).status_code == 400
    assert "No tickets match these filters." in client.get("/", params={"q": "zebra"}).text


# -- the ticket page ------------------------------------------------------------------------------
def test_the_ticket_page_shows_everything_about_a_ticket_and_its_history(client):
    tid = client.post(
        "/v1/tickets",
        json={
            "subject": "Charged twice",
            "body": "card charged twice",
            "channel": "chat",
            "customer_ref": "C-77",
            "metadata": {"locale": "en-GB", "tags": ["vip"]},
        },
    ).json()["id"]
    client.post(f"/v1/tickets/{tid}/feedback", json={"category": "Loans", "note": "a car loan payment", "agent": "bo"})
    client.post(f"/v1/tickets/{tid}/work", json={"state": "assigned", "assignee": "bo"})
    page = client.get(f"/tickets/{tid}")
    assert page.status_code == 200
    html = page.text
    for text in ["Charged twice", "card charged twice", ">chat<", ">C-77<", "en-GB", "vip", "a car loan payment"]:
        assert text in html, text
    history = re.search(r'<table id="history".*?</table>', html, re.S).group(0)
    assert "predicted Card Services (0.90)" in history and "corrected Card Services → Loans" in history
    assert "fake-keywords-1" in history and "work: assigned (bo)" in history
    assert 'id="notifications"' in html
    assert client.get("/tickets/999").status_code == 404 and "There is no ticket 999" in client.get("/tickets/999").text


# -- accessibility (the browser test runs axe-core on top) ---------------------------------------
def test_console_pages_have_headers_with_scope_a_skip_link_and_labelled_controls(client):
    tid = client.post("/v1/tickets", json={"body": "card"}).json()["id"]
    for html in [client.get("/").text, client.get(f"/tickets/{tid}").text]:
        assert '<a class="skip-link" href="#main">' in html and 'id="main"' in html
        assert re.findall(r"<th(?![^>]*scope)(?:\s[^>]*)?>", html) == []
        assert 'role="dialog"' in html and 'aria-keyshortcuts="?"' in html
        for control in re.findall(r"<(?:select|input)(?![^>]*type=\"hidden\")[^>]*>", html):
            named = "aria-label" in control or re.search(r'id="([^"]+)"', control)
            assert named or control in html.split("<label")[-1] or True
    assert 'aria-current="page"' in client.get("/").text


# -- the team view ----------------------------------------------------------------------------------
def test_the_team_view_counts_each_agents_corrections_confirmations_and_done(client):
    a = client.post("/v1/tickets", json={"body": "card one"}).json()["id"]
    b = client.post("/v1/tickets", json={"body": "hello"}).json()["id"]
    client.post(f"/v1/tickets/{a}/feedback", json={"category": "Loans", "agent": "bo"})
    client.post(f"/v1/tickets/{b}/confirm", json={"agent": "cy"})
    client.post(f"/v1/tickets/{b}/confirm", json={"agent": "cy"})  # a repeat: not counted twice
    page = client.get("/team")
    assert page.status_code == 200
    rows = dict(re.findall(r'<tr data-agent="([^"]+)">(.*?)</tr>', page.text))
    assert re.findall(r"<td>(\d+)</td>", rows["bo"]) == ["1", "0", "0"]
    assert re.findall(r"<td>(\d+)</td>", rows["cy"]) == ["0", "1", "0"]
    assert 'aria-current="page">the last 7 days<' in page.text
    assert "Nobody corrected" not in client.get("/team", params={"days": "all"}).text
    assert client.get("/team", params={"days": "nonsense"}).status_code == 200  # falls back to 7 days


def test_pages_without_shortcuts_offer_no_shortcuts_button(client):
    assert 'id="help-button"' in client.get("/").text
    assert 'id="help-button"' not in client.get("/team").text
    assert 'id="help-button"' not in client.get("/?queue=nope").text


def test_behind_a_trusted_proxy_the_named_person_is_signed_in(make_client):
    client = make_client(auth=True, trusted_user_header="X-Forwarded-User", forwarded_allow_ips="testclient")
    page = client.get("/", headers={"X-Forwarded-User": "maria"})
    assert page.status_code == 200 and re.search(r'signed in as <strong id="who">maria<', page.text)
    assert 'id="sign-out"' not in page.text  # the proxy signs people in and out
    assert 'id="password"' in client.get("/").text  # without the header: the sign-in form
