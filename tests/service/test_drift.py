"""Drift alarms: PSI arithmetic, the `drift:` YAML section, and replays of real complaints from
one era then another (the bundled sample's 2019 rows are mostly credit reporting, its 2023 rows
all payday and personal loans): the alarm fires on the shift, and not on a same-era replay.
On SQLite and PostgreSQL (the `database_url` fixture)."""

from __future__ import annotations

import dataclasses
import math
import random
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pandas as pd
import pytest
from _service_support import FakeClassifier
from sqlalchemy import func, select

from ticket_triage.errors import ConfigError
from ticket_triage.service import crud
from ticket_triage.service.db import make_engine, make_sessionmaker
from ticket_triage.service.drift import (
    Distribution,
    Reference,
    check_drift,
    chi_square_p,
    drift_report,
    load_reference,
    psi,
    window_start,
    write_reference,
)
from ticket_triage.service.models import DriftAlarm, Notification
from ticket_triage.service.notify import Deliverer, Job
from ticket_triage.service.routing import DriftRules, load_routing, parse_routing

BUNDLED_CSV = Path(__file__).resolve().parents[2] / "data" / "cfpb_sample.csv.gz"

DAY0 = datetime(2026, 3, 2, tzinfo=timezone.utc)  # a Monday
REFERENCE_DAYS = 7
NOW = DAY0 + timedelta(days=REFERENCE_DAYS + 1, hours=12)  # noon of the day after tomorrow's reference
HOOK = "https://hooks.example.com/drift"


# -- PSI and chi-square --------------------------------------------------------------------------------
def test_psi_of_identical_distributions_is_zero():
    assert psi([10, 20, 30, 40], [10, 20, 30, 40]) == 0.0
    assert psi([1, 2, 3], [100, 200, 300]) == pytest.approx(0.0)  # counts or shares: the same


def test_psi_known_value():
    # 50/50 -> 25/75: (0.25 - 0.5) ln(0.25/0.5) + (0.75 - 0.5) ln(0.75/0.5) = 0.25 ln 2 + 0.25 ln 1.5
    assert psi([50, 50], [25, 75]) == pytest.approx(0.25 * math.log(2) + 0.25 * math.log(1.5))
    assert psi([50, 50], [25, 75]) == pytest.approx(0.2747, abs=1e-4)
    assert psi([25, 75], [50, 50]) == pytest.approx(psi([50, 50], [25, 75]))  # symmetric


def test_psi_floors_empty_bins_instead_of_dividing_by_zero():
    value = psi([100, 0], [50, 50])
    assert math.isfinite(value) and value > 1  # a whole new bin is a big shift, not an error
    with pytest.raises(ValueError, match="same bins"):
        psi([1, 2], [1, 2, 3])


def test_chi_square_p_value():
    assert chi_square_p([100, 100, 100], [100, 100, 100]) == pytest.approx(1.0)
    assert chi_square_p([300, 100, 100], [100, 100, 300]) < 1e-6
    assert chi_square_p([10, 0], [5, 0]) is None  # one non-empty bin: no test


def test_windows_start_at_utc_midnight_or_monday():
    moment = datetime(2026, 3, 5, 15, 30, tzinfo=timezone.utc)  # a Thursday
    assert window_start(moment, "day") == datetime(2026, 3, 5, tzinfo=timezone.utc)
    assert window_start(moment, "week") == datetime(2026, 3, 2, tzinfo=timezone.utc)


# -- the YAML section -------------------------------------------------------------------------------
RULES_HEAD = "routes:\n  Loans: loans\n"


def test_drift_section_defaults_and_values():
    assert load_routing().drift == DriftRules()  # the shipped file states the defaults
    rules = parse_routing(
        RULES_HEAD
        + "drift:\n  psi_threshold: 0.3\n  window: week\n  min_tickets: 10\n  reference_days: 14\n"
        + f"  webhook: {HOOK}\n  email: ml@example.com\n"
    )
    assert rules.drift == DriftRules(0.3, "week", 10, 14, "ml@example.com", HOOK)
    assert rules.drift.targets() == [("email", "ml@example.com"), ("webhook", HOOK)]
    assert parse_routing(RULES_HEAD).drift == DriftRules()


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ("drift: 3", "must be a mapping"),
        ("drift:\n  window: month", "window must be day or week"),
        ("drift:\n  psi_threshold: high", "psi_threshold must be a number"),
        ("drift:\n  psi_threshold: 0", "must be above 0"),
        ("drift:\n  min_tickets: 0", "between 1 and"),
        ("drift:\n  webhook: ftp://x", "must be an http"),
        ("drift:\n  thresold: 0.2", "unknown key 'thresold' in `drift:`"),
    ],
)
def test_bad_drift_sections_name_the_line(section, message):
    with pytest.raises(ConfigError, match=message) as err:
        parse_routing(RULES_HEAD + section + "\n", "rules.yaml")
    assert str(err.value).startswith(("rules.yaml:3:", "rules.yaml:4:"))  # the line of the bad value


# -- replays of real complaints ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def eras() -> dict[str, list[str]]:
    """Narratives of 2019 and of 2023, shuffled (fixed seed)."""
    frame = pd.read_csv(BUNDLED_CSV, usecols=["Date received", "Consumer complaint narrative"])
    frame = frame.dropna()
    out = {}
    for year in ("2019", "2023"):
        texts = frame[frame["Date received"].str.startswith(year)]["Consumer complaint narrative"].tolist()
        random.Random(7).shuffle(texts)
        out[year] = texts
    return out


@pytest.fixture
def sessions(database_url):
    engine = make_engine(database_url)
    yield make_sessionmaker(engine)
    engine.dispose()


def drift_rules(**changes):
    rules = load_routing()
    drift = DriftRules(reference_days=REFERENCE_DAYS, min_tickets=50, webhook=HOOK, email="ml@example.com")
    return dataclasses.replace(rules, drift=dataclasses.replace(drift, **changes))


def replay(sessions, rules, texts, start: datetime, days: float, model_version="fake-keywords-1"):
    """Store `texts` as tickets classified by the keyword classifier, spread evenly over `days`
    from `start` (the classifier follows the words, so the mix follows the data)."""
    classifier = FakeClassifier(model_version=model_version)
    predictions = classifier.predict(texts)
    step = timedelta(days=days) / max(len(texts), 1)
    with sessions() as session, session.begin():
        for i, (text, prediction) in enumerate(zip(texts, predictions)):
            ticket = crud.create_ticket(
                session,
                data={"body": text[:5000], "channel": "replay"},
                prediction=prediction,
                error=None,
                rules=rules,
                model_version=model_version,
                idempotency_key=None,
            )
            ticket.created_at = start + step * i
    return predictions


def reference_and_window(sessions, rules, eras, later: list[str]):
    replay(sessions, rules, eras["2019"][:350], DAY0, REFERENCE_DAYS)  # the reference week
    replay(sessions, rules, later, NOW.replace(hour=0), 0.5)  # this morning


def test_a_shift_of_era_raises_one_alarm_per_metric_and_queues_notifications(sessions, eras):
    rules = drift_rules()
    reference_and_window(sessions, rules, eras, eras["2023"][:200])
    with sessions() as session, session.begin():
        alarms = check_drift(session, rules, NOW)
    assert [a.metric for a in alarms] == ["category_mix"]  # the fake classifier's confidences barely move
    with sessions() as session:
        alarm = session.scalars(select(DriftAlarm)).one()
        assert alarm.value > 1.0 and alarm.threshold == 0.2 and alarm.window == "day" and alarm.tickets == 200
        assert alarm.window_start == NOW.replace(hour=0) and alarm.p_value < 1e-6
        assert alarm.model_version == "fake-keywords-1" and "2026-03-02 to 2026-03-08" in alarm.reference
        ref, now = alarm.details["reference"]["categories"], alarm.details["window"]["categories"]
        assert now["Loans"] / 200 > 3 * ref.get("Loans", 0) / 350  # the keyword classifier follows the loans
        notes = session.scalars(select(Notification).where(Notification.event == "drift")).all()
        assert sorted((n.kind, n.target, n.ticket_id) for n in notes) == [
            ("email", "ml@example.com", None),
            ("webhook", HOOK, None),
        ]
        assert notes[0].payload["alarm"]["metric"] == "category_mix"
    # checked again (another replica, the next loop): no second alarm for the same window
    with sessions() as session, session.begin():
        assert check_drift(session, rules, NOW + timedelta(hours=1)) == []
    with sessions() as session:
        assert session.scalar(select(func.count()).select_from(DriftAlarm)) == 1


def test_a_same_era_replay_raises_no_alarm(sessions, eras):
    rules = drift_rules()
    reference_and_window(sessions, rules, eras, eras["2019"][350:550])  # other 2019 complaints
    with sessions() as session, session.begin():
        report = drift_report(session, rules, NOW)
        assert report.status == "ok", report.to_dict()
        values = report.windows[-1].values
        assert values["category_mix"]["psi"] < 0.1 and values["confidence"]["psi"] < 0.1
        assert values["category_mix"]["p_value"] > 0.01
        assert check_drift(session, rules, NOW) == []
    with sessions() as session:
        assert session.scalar(select(func.count()).select_from(Notification).where(Notification.event == "drift")) == 0


def test_no_judgement_before_the_reference_is_complete_or_on_too_few_tickets(sessions, eras):
    rules = drift_rules(min_tickets=100)
    replay(sessions, rules, eras["2019"][:350], DAY0, REFERENCE_DAYS)
    with sessions() as session, session.begin():
        assert drift_report(session, rules, DAY0 + timedelta(days=3)).status == "collecting-reference"
    replay(sessions, rules, eras["2023"][:60], NOW.replace(hour=0), 0.5)
    with sessions() as session, session.begin():
        assert drift_report(session, rules, NOW).status == "too-few-tickets"
        assert check_drift(session, rules, NOW) == []


def test_the_reference_is_the_active_model_versions_first_days(sessions, eras):
    """A new model version starts its own reference: an old version's tickets do not count."""
    rules = drift_rules()
    replay(sessions, rules, eras["2023"][:300], DAY0 - timedelta(days=30), 7, model_version="old")
    reference_and_window(sessions, rules, eras, eras["2019"][350:550])
    with sessions() as session, session.begin():
        report = drift_report(session, rules, NOW, model_version="fake-keywords-1")
        assert report.reference.start == DAY0 and report.reference.dist.tickets == 350
        assert report.status == "ok"


def test_drift_can_be_turned_off(sessions, eras):
    rules = drift_rules(enabled=False)
    reference_and_window(sessions, rules, eras, eras["2023"][:200])
    with sessions() as session, session.begin():
        assert drift_report(session, rules, NOW).status == "disabled"
        assert check_drift(session, rules, NOW) == []


def test_a_saved_reference_from_validation_predictions(sessions, eras, tmp_path):
    rules = drift_rules()
    path = tmp_path / "drift_reference.json"
    path.write_text('{"categories": {"Loans": 900, "Mortgage": 100}, "confidence": [0,0,0,0,0,0,0,0,0,1000]}')
    reference = load_reference(path)
    assert reference.dist.tickets == 1000 and reference.end is None
    replay(sessions, rules, eras["2019"][:200], NOW.replace(hour=0), 0.5)  # 2019: few loans
    with sessions() as session, session.begin():
        alarms = check_drift(session, rules, NOW, reference=reference)
        assert {a.metric for a in alarms} == {"category_mix", "confidence"}  # 0.3s are new to it
        assert alarms[0].reference == "validation predictions (drift_reference.json)"
    path.write_text('{"categories": {"Loans": 1}, "confidence": [1, 2]}')
    with pytest.raises(ConfigError, match="10 counts"):
        load_reference(path)


def test_the_drift_webhook_and_email_describe_the_alarm():
    from ticket_triage.service import Settings

    deliverer = Deliverer(settings=Settings(public_url="https://triage.example.com"), sessions=None, metrics=None)
    alarm = {"metric": "category_mix", "value": 1.234, "threshold": 0.2, "window": "day", "tickets": 200}
    alarm |= {"window_start": "2026-03-10T00:00:00+00:00", "reference": "model v1", "model_version": "v1"}
    job = Job(5, None, "webhook", HOOK, "drift", "drift", 1, {"alarm": alarm | {"p_value": 1e-9}})
    message = deliverer.message(job)
    assert message["event"] == "drift" and message["alarm"]["value"] == 1.234
    assert message["link"] == "https://triage.example.com/monitoring"
    email = deliverer.email(job)
    assert email["Subject"] == "[ticket-triage] drift: the category mix moved (PSI 1.23 > 0.20)"
    assert "2026-03-10" in email.get_content() and "p = 1e-09" in email.get_content()


def test_alarm_notifications_show_in_the_outbox_api(make_client, eras, tmp_path):
    """Through the app: an alarm's notification (no ticket) is listed by GET /v1/notifications."""
    client = make_client(notify=False)
    state = client.app.state.triage
    rules = drift_rules()
    reference_and_window(state.sessions, rules, eras, eras["2023"][:200])
    with state.sessions() as session, session.begin():
        assert check_drift(session, rules, NOW)
    count = client.get("/v1/notifications").json()["count"]  # the replayed tickets' own come first
    items = client.get("/v1/notifications", params={"offset": count - 5}).json()["items"]
    drift_items = [n for n in items if n["event"] == "drift"]
    assert len(drift_items) == 2 and all(n["ticket_id"] is None and n["queue"] == "drift" for n in drift_items)


def test_distribution_helpers():
    d = Distribution(3, {"Loans": 2, "Mortgage": 1})
    assert d.category_counts(["Mortgage", "Loans", "Card Services"]) == [1, 2, 0]
    assert Reference("x", d).end is None


def test_the_background_checker_raises_the_alarm_from_the_routing_file(make_client, eras, tmp_path):
    """The service's own loop (every TRIAGE_DRIFT_CHECK_INTERVAL_S), with the YAML's drift: section."""
    import time
    from importlib import resources

    from ticket_triage.service.models import utcnow

    shipped = resources.files("ticket_triage.service").joinpath("routing.yaml").read_text()
    rules_file = tmp_path / "rules.yaml"
    rules_file.write_text(shipped.split("\ndrift:")[0] + f"\ndrift:\n  reference_days: 7\n  webhook: {HOOK}\n")
    client = make_client(routing_file=rules_file, notify=False, drift_check_interval_s=0.05)
    state = client.app.state.triage
    assert state.rules.drift.webhook == HOOK
    now = utcnow()
    replay(state.sessions, state.rules, eras["2019"][:350], window_start(now, "day") - timedelta(days=10), 7)
    replay(state.sessions, state.rules, eras["2023"][:200], now - timedelta(seconds=60), 0.0005)
    deadline = time.monotonic() + 20
    while True:
        with state.sessions() as session:
            alarms = session.scalars(select(DriftAlarm)).all()
        if alarms or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert [a.metric for a in alarms] == ["category_mix"]
    with state.sessions() as session:
        notes = session.scalars(select(Notification).where(Notification.event == "drift")).all()
        assert [(n.kind, n.target) for n in notes] == [("webhook", HOOK)]
    stats = client.get("/v1/stats").json()
    assert stats["alarms"][0]["metric"] == "category_mix"
    assert "drift" in [w["status"] for w in stats["drift"]["windows"]]  # today (or yesterday, just after midnight)


def test_a_reference_written_from_validation_predictions_reads_back(tmp_path):
    predictions = FakeClassifier().predict(["my mortgage", "a loan", "a loan", "hello"])
    path = write_reference(tmp_path, predictions)
    ref = load_reference(path)
    assert ref.dist.categories == {"Mortgage": 1, "Loans": 2, "Banking Services": 1}
    assert ref.dist.confidence == [0, 0, 0, 1, 0, 0, 0, 0, 0, 3] and ref.dist.tickets == 4
    with pytest.raises(ConfigError, match="no predictions"):
        write_reference(tmp_path, [])
