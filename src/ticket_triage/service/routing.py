"""Routing rules: each category goes to a team's queue; low confidence goes to review.

The rules are a small YAML file (the shipped default is `routing.yaml` beside this module).
Every mistake is reported as a `ConfigError` naming the file and line, before the service
starts taking tickets.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Iterable

import yaml

from ..errors import ConfigError

DEFAULT_REVIEW_QUEUE = "needs-review"
DEFAULT_THRESHOLD = 0.5
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_QUEUE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 ._-]{0,99}$")


@dataclass(frozen=True)
class Route:
    category: str
    queue: str
    threshold: float
    email: str | None = None
    webhook: str | None = None


@dataclass(frozen=True)
class RoutingDecision:
    queue: str
    needs_review: bool


DRIFT_WINDOWS = ("day", "week")


@dataclass(frozen=True)
class DriftRules:
    """When drift alarms fire (service/drift.py): the PSI above which a metric alarms, the window
    compared with the reference (the first `reference_days` of the active model's tickets), the
    fewest tickets a window needs before it is judged, and who hears of an alarm."""

    psi_threshold: float = 0.2  # the usual rule of thumb: < 0.1 stable, 0.1-0.2 watch, > 0.2 shifted
    window: str = "day"
    min_tickets: int = 50
    reference_days: int = 7
    email: str | None = None
    webhook: str | None = None
    enabled: bool = True

    def targets(self) -> list[tuple[str, str]]:
        return [(kind, target) for kind, target in (("email", self.email), ("webhook", self.webhook)) if target]


@dataclass
class RoutingRules:
    routes: dict[str, Route]
    review_queue: str = DEFAULT_REVIEW_QUEUE
    default_threshold: float = DEFAULT_THRESHOLD
    source: str = "<rules>"
    lines: dict[str, int] = field(default_factory=dict)
    review_email: str | None = None  # who hears of tickets sent to the review queue (none by default)
    review_webhook: str | None = None
    drift: DriftRules = field(default_factory=DriftRules)  # the `drift:` section (drift alarms)

    def route(self, category: str, confidence: float) -> RoutingDecision:
        """The queue for a prediction: its team's queue, or review when below the threshold."""
        rule = self.routes.get(category)
        if rule is None:  # the model knows a category the rules do not (checked at start)
            return RoutingDecision(self.review_queue, True)
        if confidence < rule.threshold:
            return RoutingDecision(self.review_queue, True)
        return RoutingDecision(rule.queue, False)

    def queue_of(self, category: str) -> str:
        """The team queue of a category, whatever the confidence (used for agent corrections)."""
        return self.routes[category].queue

    def targets(self, queue: str, category: str | None) -> list[tuple[str, str]]:
        """Where a ticket in `queue` (with `category`) is announced: [("email"|"webhook", address)].
        A team queue uses its category's rule; the review queue uses review_email/review_webhook."""
        if queue == self.review_queue:
            email, webhook = self.review_email, self.review_webhook
        else:
            rule = self.routes.get(category or "")
            if rule is None or rule.queue != queue:
                return []
            email, webhook = rule.email, rule.webhook
        return [(kind, target) for kind, target in (("email", email), ("webhook", webhook)) if target]

    @property
    def queues(self) -> list[str]:
        return list(dict.fromkeys([r.queue for r in self.routes.values()] + [self.review_queue]))

    def check_labels(self, labels: Iterable[str]) -> None:
        """Every rule must name a model category, and every model category needs a rule."""
        labels = list(labels)
        for category in self.routes:
            if category not in labels:
                raise ConfigError(
                    f"{self.source}:{self.lines.get(category, '?')}: unknown category {category!r}; "
                    f"the model's categories are {labels}"
                )
        missing = [label for label in labels if label not in self.routes]
        if missing:
            raise ConfigError(f"{self.source}: no route for the model's categories {missing}; add them under `routes:`")


def _err(source: str, node: yaml.Node | None, message: str) -> ConfigError:
    line = node.start_mark.line + 1 if node is not None else "?"
    return ConfigError(f"{source}:{line}: {message}")


def _scalar(source: str, node: yaml.Node, what: str) -> str:
    if not isinstance(node, yaml.ScalarNode):
        raise _err(source, node, f"{what} must be a single value")
    return str(node.value)


def _threshold(source: str, node: yaml.Node, what: str) -> float:
    raw = _scalar(source, node, what)
    try:
        value = float(raw)
    except ValueError:
        raise _err(source, node, f"{what} must be a number between 0 and 1, got {raw!r}") from None
    if not 0.0 <= value <= 1.0:
        raise _err(source, node, f"{what} must be between 0 and 1, got {value}")
    return value


def parse_routing(text: str, source: str = "<routing>") -> RoutingRules:
    """Parse routing YAML, with line numbers in every error."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{source}:{mark.line + 1}" if mark else source
        raise ConfigError(f"{where}: not valid YAML: {getattr(exc, 'problem', exc)}") from None
    if not isinstance(root, yaml.MappingNode):
        raise _err(source, root, "routing rules must be a mapping with `routes:` (see the shipped routing.yaml)")
    review_queue, default_threshold, routes_node = DEFAULT_REVIEW_QUEUE, DEFAULT_THRESHOLD, None
    review_email = review_webhook = None
    drift = DriftRules()
    for key_node, value_node in root.value:
        key = _scalar(source, key_node, "a top-level key")
        if key == "review_queue":
            review_queue = _scalar(source, value_node, "review_queue")
            if not _QUEUE_NAME.match(review_queue):
                raise _err(
                    source,
                    value_node,
                    f"review_queue {review_queue!r} is not a valid queue name (letters, digits, . _ - and spaces)",
                )
        elif key == "default_threshold":
            default_threshold = _threshold(source, value_node, "default_threshold")
        elif key == "routes":
            routes_node = value_node
        elif key == "review_email":
            review_email = _email(source, value_node, "review_email")
        elif key == "review_webhook":
            review_webhook = _webhook(source, value_node, "review_webhook")
        elif key == "drift":
            drift = _drift(source, value_node)
        else:
            raise _err(
                source,
                key_node,
                f"unknown key {key!r}: use review_queue, default_threshold, review_email, review_webhook, routes and drift",
            )
    if routes_node is None:
        raise ConfigError(f"{source}: no `routes:` mapping of category -> queue")
    if not isinstance(routes_node, yaml.MappingNode) or not routes_node.value:
        raise _err(source, routes_node, "`routes:` must map each category to {queue: ..., threshold: ...}")

    routes: dict[str, Route] = {}
    lines: dict[str, int] = {}
    for cat_node, rule_node in routes_node.value:
        category = _scalar(source, cat_node, "a category name")
        if category in routes:
            raise _err(source, cat_node, f"category {category!r} is listed twice")
        lines[category] = cat_node.start_mark.line + 1
        if isinstance(rule_node, yaml.ScalarNode) and rule_node.value:
            rule: dict[str, yaml.Node] = {"queue": rule_node}  # shorthand: `Mortgage: mortgage-team`
        elif isinstance(rule_node, yaml.MappingNode):
            rule = {}
            for k, v in rule_node.value:
                name = _scalar(source, k, "a rule key")
                if name not in {"queue", "threshold", "email", "webhook"}:
                    raise _err(
                        source,
                        k,
                        f"unknown key {name!r} in the rule for {category!r}: use queue, threshold, email, webhook",
                    )
                rule[name] = v
        else:
            raise _err(source, cat_node, f"category {category!r} has no queue: give `queue: <team name>`")
        if (
            "queue" not in rule
            or not _scalar(source, rule["queue"], "queue").strip()
            or rule["queue"].tag.endswith(":null")
        ):
            raise _err(source, cat_node, f"category {category!r} has no queue: give `queue: <team name>`")
        queue = _scalar(source, rule["queue"], "queue").strip()
        if not _QUEUE_NAME.match(queue):
            raise _err(
                source,
                rule["queue"],
                f"queue {queue!r} is not a valid queue name (letters, digits, . _ - and spaces, at most 100)",
            )
        if queue == review_queue:
            raise _err(source, rule["queue"], f"queue {queue!r} is the review queue; give the team's own queue")
        threshold = (
            _threshold(source, rule["threshold"], f"threshold of {category!r}")
            if "threshold" in rule
            else default_threshold
        )
        email = _email(source, rule["email"], "email", f" of {category!r}") if "email" in rule else None
        webhook = _webhook(source, rule["webhook"], "webhook", f" of {category!r}") if "webhook" in rule else None
        routes[category] = Route(category, queue, threshold, email, webhook)
    return RoutingRules(routes, review_queue, default_threshold, source, lines, review_email, review_webhook, drift)


def _positive_int(source: str, node: yaml.Node, what: str, most: int) -> int:
    raw = _scalar(source, node, what)
    try:
        value = int(raw)
    except ValueError:
        raise _err(source, node, f"{what} must be a whole number, got {raw!r}") from None
    if not 1 <= value <= most:
        raise _err(source, node, f"{what} must be between 1 and {most}, got {value}")
    return value


def _drift(source: str, node: yaml.Node) -> DriftRules:
    """The `drift:` section: psi_threshold, window (day|week), min_tickets, reference_days, email,
    webhook, enabled. Every key is optional; `drift: {enabled: false}` turns the alarms off."""
    if not isinstance(node, yaml.MappingNode):
        raise _err(source, node, "`drift:` must be a mapping, e.g. {psi_threshold: 0.2, window: day}")
    values: dict = {}
    for k, v in node.value:
        name = _scalar(source, k, "a drift key")
        if name == "psi_threshold":
            raw = _scalar(source, v, name)
            try:
                values[name] = float(raw)
            except ValueError:
                raise _err(source, v, f"drift psi_threshold must be a number, got {raw!r}") from None
            if not 0 < values[name] <= 10:
                raise _err(source, v, f"drift psi_threshold must be above 0 (0.2 is usual), got {raw}")
        elif name == "window":
            values[name] = _scalar(source, v, name)
            if values[name] not in DRIFT_WINDOWS:
                raise _err(source, v, f"drift window must be day or week, got {values[name]!r}")
        elif name == "min_tickets":
            values[name] = _positive_int(source, v, "drift min_tickets", 10_000_000)
        elif name == "reference_days":
            values[name] = _positive_int(source, v, "drift reference_days", 3660)
        elif name == "email":
            values[name] = _email(source, v, "drift email")
        elif name == "webhook":
            values[name] = _webhook(source, v, "drift webhook")
        elif name == "enabled":
            raw = _scalar(source, v, name).lower()
            if raw not in ("true", "false"):
                raise _err(source, v, f"drift enabled must be true or false, got {raw!r}")
            values[name] = raw == "true"
        else:
            raise _err(
                source,
                k,
                f"unknown key {name!r} in `drift:`: use psi_threshold, window, min_tickets, reference_days, email, webhook, enabled",
            )
    return DriftRules(**values)


def _email(source: str, node: yaml.Node, what: str, owner: str = "") -> str:
    email = _scalar(source, node, what)
    if not _EMAIL.match(email):
        raise _err(source, node, f"{what} {email!r}{owner} is not an e-mail address")
    return email


def _webhook(source: str, node: yaml.Node, what: str, owner: str = "") -> str:
    url = _scalar(source, node, what)
    if not url.startswith(("http://", "https://")):
        raise _err(source, node, f"{what} {url!r}{owner} must be an http(s) URL")
    return url


def load_routing(path: str | Path | None = None, labels: Iterable[str] | None = None) -> RoutingRules:
    """Rules from `path` (or the shipped default), checked against the model's labels if given."""
    if path is None:
        text = resources.files("ticket_triage.service").joinpath("routing.yaml").read_text()
        source = "routing.yaml (shipped default)"
    else:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"routing file {path} does not exist")
        text, source = path.read_text(), str(path)
    rules = parse_routing(text, source)
    if labels is not None:
        rules.check_labels(labels)
    return rules
