"""Routing rules: the shipped default, and errors that name the line."""

from __future__ import annotations

import pytest
from _service_support import LABELS

from ticket_triage.errors import ConfigError
from ticket_triage.service.routing import load_routing, parse_routing
from ticket_triage.taxonomy import load_taxonomy


def test_shipped_rules_cover_the_cfpb_categories():
    rules = load_routing(None, load_taxonomy("cfpb-6").categories)
    assert set(rules.routes) == set(LABELS)
    assert rules.review_queue == "needs-review" and rules.default_threshold == 0.5
    assert rules.route("Mortgage", 0.59).queue == "needs-review" and rules.routes["Mortgage"].threshold == 0.6
    assert rules.route("Mortgage", 0.61).queue == "mortgage"
    assert rules.route("Loans", 0.5) == rules.route("Loans", 0.99)
    assert rules.routes["Banking Services"].webhook.startswith("https://")


GOOD = "routes:\n" + "".join(f"  {c}: {{queue: q{i}}}\n" for i, c in enumerate(LABELS))


@pytest.mark.parametrize(
    "text, message",
    [
        (GOOD + "  Crypto: {queue: q9}\n", "rules.yaml:8: unknown category 'Crypto'"),
        (
            GOOD.replace("Mortgage: {queue: q2}", "Mortgage: {threshold: 0.5}"),
            "rules.yaml:4: category 'Mortgage' has no queue",
        ),
        (GOOD.replace("Mortgage: {queue: q2}", "Mortgage:"), "rules.yaml:4: category 'Mortgage' has no queue"),
        (
            GOOD.replace("{queue: q4}", "{queue: q4, threshold: 1.5}"),
            "rules.yaml:6: threshold of 'Loans' must be between 0 and 1, got 1.5",
        ),
        (
            GOOD.replace("{queue: q4}", "{queue: q4, threshold: high}"),
            "rules.yaml:6: threshold of 'Loans' must be a number",
        ),
        ("default_threshold: -0.1\n" + GOOD, "rules.yaml:1: default_threshold must be between 0 and 1"),
        (GOOD.replace("{queue: q1}", "{queue: q1, email: nobody}"), "rules.yaml:3: email 'nobody'"),
        (GOOD.replace("{queue: q1}", "{queue: q1, webhook: ftp://x}"), "rules.yaml:3: webhook 'ftp://x'"),
        (GOOD.replace("{queue: q1}", "{queue: q1, colour: red}"), "rules.yaml:3: unknown key 'colour'"),
        (GOOD + "  Loans: {queue: q8}\n", "rules.yaml:8: category 'Loans' is listed twice"),
        ("queues: {}\n", "rules.yaml:1: unknown key 'queues'"),
        ("routes: [a, b]\n", "rules.yaml:1: `routes:` must map"),
        ("routes:\n  Loans: {queue: [a\n", "rules.yaml:"),
        (
            GOOD.replace("\n  Banking Services: {queue: q5}", ""),
            "no route for the model's categories ['Banking Services']",
        ),
    ],
)
def test_invalid_rules_name_the_line(tmp_path, text, message):
    path = tmp_path / "rules.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_routing(path, LABELS)
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_shorthand_queue_and_review_queue_is_reserved():
    rules = parse_routing("routes:\n  Loans: loans-team\n")
    assert rules.route("Loans", 0.9).queue == "loans-team"
    with pytest.raises(ConfigError, match=":2: queue 'needs-review' is the review queue"):
        parse_routing("routes:\n  Loans: needs-review\n", "r.yaml")


def test_missing_rules_file(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_routing(tmp_path / "nope.yaml")
