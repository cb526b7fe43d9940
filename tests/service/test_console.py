"""The triage console: server-rendered pages (TestClient) and a real headless Chromium run."""

from __future__ import annotations

import os
import shutil

import httpx
import pytest
from _service_support import issue_key, serving


def seed(client, headers=None):
    ids = []
    for body in ["My mortgage escrow doubled", "Please call me back about my problem", "Debt collector calls daily"]:
        ids.append(client.post("/v1/tickets", json={"subject": "", "body": body}, headers=headers or {}).json()["id"])
    return ids


def test_console_page_lists_queues_and_tickets_without_auth(client):
    seed(client)
    page = client.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    html = page.text
    assert 'data-queue-count="needs-review">1<' in html and 'data-queue-count="mortgage">1<' in html
    assert 'data-queue-count="loans">0<' in html
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
    assert "signed in as ann" in page.text
    # the cookie also authorises the feedback API (what the page's script calls)
    tid = client.post("/v1/tickets", json={"body": "card"}, headers={"Authorization": f"Bearer {intake}"}).json()["id"]
    assert (
        client.post(f"/v1/tickets/{tid}/feedback", json={"category": "Loans"}).json()["feedback"][0]["agent"] == "ann"
    )
    client.post("/console/logout")
    assert "Sign in" in client.get("/").text


# -- headless Chromium -------------------------------------------------------------------------------
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")


@pytest.fixture
def live_server(sqlite_url, fake_classifier):
    """The app with auth on, served by uvicorn on 127.0.0.1 in a thread."""
    from ticket_triage.service import Settings, create_app

    app = create_app(Settings(database_url=sqlite_url, auth=True, max_wait_ms=1), classifier=fake_classifier)
    with serving(app) as base:
        yield app, base


@pytest.fixture
def browser(tmp_path):
    if not (CHROMIUM and CHROMEDRIVER):
        pytest.skip(
            "chromium and chromedriver are not installed (Debian: apt-get install chromium chromium-driver; .ci/run does)"
        )
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (dev extra)")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        "--window-size=1400,900",
        f"--user-data-dir={tmp_path / 'profile'}",
    ]:
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})  # CSP violations are reported there
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


def test_console_in_headless_chromium(live_server, browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as EC
    from selenium.webdriver.support.select import Select
    from selenium.webdriver.support.ui import WebDriverWait

    app, base = live_server
    state = app.state.triage
    from ticket_triage.service.security import issue_api_key

    with state.sessions() as session, session.begin():
        agent = issue_api_key(session, name="ann", role="agent")
        intake = issue_api_key(session, name="form", role="intake")
    api = httpx.Client(base_url=base, timeout=10)
    ids = seed(api, {"Authorization": f"Bearer {intake}"})
    wait = WebDriverWait(browser, 15)

    # sign in: a wrong key is refused, the agent key lets in
    browser.get(base + "/")
    browser.find_element(By.ID, "key").send_keys(intake)
    browser.find_element(By.ID, "sign-in").click()
    assert "not a valid agent key" in wait.until(EC.presence_of_element_located((By.ID, "login-error"))).text
    browser.find_element(By.ID, "key").send_keys(agent)
    browser.find_element(By.ID, "sign-in").click()
    wait.until(EC.presence_of_element_located((By.CSS_SELECTOR, "nav.queues")))
    counts = {
        e.get_attribute("data-queue-count"): e.text
        for e in browser.find_elements(By.CSS_SELECTOR, "[data-queue-count]")
    }
    assert counts["needs-review"] == "1" and counts["mortgage"] == "1" and counts["card-services"] == "0"
    assert browser.execute_script("return document.cookie") == ""  # the key is HttpOnly

    # open the review queue: the vague ticket is there with its category, confidence and text
    browser.find_element(By.CSS_SELECTOR, 'a[data-queue="needs-review"]').click()
    row = wait.until(EC.presence_of_element_located((By.CSS_SELECTOR, f'tr[data-ticket="{ids[1]}"]')))
    assert "Please call me back about my problem" in row.text and "0.30" in row.text and "Banking Services" in row.text

    # correct it to Card Services: the script calls the feedback API
    Select(row.find_element(By.NAME, "category")).select_by_value("Card Services")
    row.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    wait.until(
        EC.text_to_be_present_in_element(
            (By.CSS_SELECTOR, f'tr[data-ticket="{ids[1]}"] .result'), "moved to card-services"
        )
    )
    assert row.find_element(By.CSS_SELECTOR, ".status").text == "corrected"
    browser.save_screenshot(str(tmp_path / "console.png"))
    if os.environ.get("TRIAGE_CONSOLE_SCREENSHOT"):
        browser.save_screenshot(os.environ["TRIAGE_CONSOLE_SCREENSHOT"])

    ticket = api.get(f"/v1/tickets/{ids[1]}", headers={"Authorization": f"Bearer {agent}"}).json()
    assert ticket["category"] == "Card Services" and ticket["queue"] == "card-services"
    assert ticket["feedback"][0]["agent"] == "ann"

    # after a reload the counts follow
    browser.get(base + "/?queue=card-services")
    counts = {
        e.get_attribute("data-queue-count"): e.text
        for e in browser.find_elements(By.CSS_SELECTOR, "[data-queue-count]")
    }
    assert counts["needs-review"] == "0" and counts["card-services"] == "1"
    assert browser.find_elements(By.CSS_SELECTOR, f'tr[data-ticket="{ids[1]}"]')

    # all of it ran under the service's Content-Security-Policy, which blocked nothing
    assert "script-src 'self'" in api.get("/").headers["Content-Security-Policy"]
    blocked = [e["message"] for e in browser.get_log("browser") if "Content Security Policy" in e["message"]]
    assert blocked == []


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
