"""The shipped Grafana dashboard and Prometheus rules: promtool-clean, unit-tested, and naming
only metrics a real `somsd run` exports, so they cannot silently rot when a metric is renamed."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.harness import running_daemon
from tests.orders.shop import accept, order_body, webhook_config

ROOT = Path(__file__).resolve().parent.parent
DASHBOARD = ROOT / "monitoring" / "grafana" / "somsd.json"
RULES = ROOT / "monitoring" / "prometheus" / "somsd-rules.yml"
RULE_TESTS = sorted((ROOT / "monitoring" / "prometheus" / "tests").glob("*.yml"))

# Metrics the dashboard and rules use that somsd does not export: Prometheus' own scrape health
# and node_exporter's file systems (for "disk filling").
EXTERNAL_METRICS = {"up", "node_filesystem_avail_bytes"}
# A PromQL identifier that is a metric name (not a function, keyword or label).
_NAME = re.compile(r"\b(somsd_[a-z0-9_]+|up|node_[a-z0-9_]+)\b(?!\s*\()")
_HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")

STORE = """
[[location]]
name = "store-essen"
kind = "store"
adapter = "manual"
country = "DE"
lat = 51.46
lon = 7.01
ships_to = ["DE"]
capabilities = ["ship", "pickup"]
"""


def rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def dashboard_expressions() -> list[str]:
    found: list[str] = []

    def walk(node: object) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key in ("expr", "definition") and isinstance(value, str):
                    found.append(value)
                else:
                    walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(json.loads(DASHBOARD.read_text()))
    return found


def referenced_metrics(expressions: list[str]) -> set[str]:
    names: set[str] = set()
    for expr in expressions:
        # label matchers and legend strings hold no metric names
        stripped = re.sub(r'"[^"]*"', '""', expr)
        stripped = re.sub(r"\{[^}]*\}", "{}", stripped)
        names |= set(_NAME.findall(stripped))
    return names


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["promtool", *args], capture_output=True, text=True, timeout=60, check=False
    )


def test_promtool_check_rules_is_clean() -> None:
    result = promtool("check", "rules", str(RULES))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_promtool_rule_unit_tests_pass() -> None:
    assert RULE_TESTS
    result = promtool("test", "rules", *map(str, RULE_TESTS))
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_has_a_firing_unit_test() -> None:
    alerts = {rule["alert"] for rule in rules() if "alert" in rule}
    fired: set[str] = set()
    for path in RULE_TESTS:
        for case in yaml.safe_load(path.read_text())["tests"]:
            for check in case.get("alert_rule_test", []):
                if check.get("exp_alerts"):
                    fired.add(check["alertname"])
    assert alerts - fired == set(), "alerts without a test in which they fire"
    assert len(alerts) >= 10


def test_the_dashboard_is_grafana_json_with_the_required_panels() -> None:
    board = json.loads(DASHBOARD.read_text())
    assert board["uid"] == "somsd"
    titles = " | ".join(p["title"].lower() for p in board["panels"])
    for topic in (
        "orders received",
        "intake latency",
        "orders by status",
        "routing decisions",
        "fulfilment backlog per location",
        "stock sync lag",
        "outbox backlog",
        "dead letters",
        "upstream errors",
        "upstream latency",
        "actor restarts",
        "event-log append latency",
        "event-log batch size",
    ):
        assert topic in titles, topic
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids))


def test_metric_name_extraction_ignores_labels_and_functions() -> None:
    expr = 'sum by (le) (rate(somsd_x_bucket{job=~"somsd_y", up="1"}[5m])) and on() up == 0'
    assert referenced_metrics([expr]) == {"somsd_x_bucket", "up"}


@pytest.mark.slow
async def test_dashboard_and_rules_name_only_metrics_a_real_daemon_exports(
    tmp_path: Path,
) -> None:
    referenced = referenced_metrics(dashboard_expressions() + [rule["expr"] for rule in rules()])
    async with running_daemon(webhook_config(tmp_path, STORE)) as daemon:
        async with httpx.AsyncClient(base_url=daemon.api) as client:
            await accept(client, order_body("monitoring-1"))
        async with httpx.AsyncClient() as client:
            scrape = (await client.get(daemon.metrics + "/metrics")).text
    types = dict(re.findall(r"^# TYPE (\S+) (\S+)$", scrape, re.MULTILINE))

    def exported(name: str) -> bool:
        if name in types:
            return True
        base, _, _ = name.rpartition("_")
        return name.endswith(_HISTOGRAM_SUFFIXES) and types.get(base) == "histogram"

    # the "what stands now" gauges count the projection: the one order waits in pending
    assert re.search(r'^somsd_orders\{status="pending"\} 1\.0$', scrape, re.MULTILINE)
    missing = {name for name in referenced - EXTERNAL_METRICS if not exported(name)}
    assert missing == set(), "named in monitoring/ but not exported by somsd"
    # and the check has teeth: the dashboard really covers the daemon's families
    assert len(referenced) > 30
    recorded = {rule["record"] for rule in rules() if "record" in rule}
    used = set(re.findall(r"somsd:[a-z0-9_:]+", " ".join(r["expr"] for r in rules())))
    assert used <= recorded
