#!/usr/bin/python3
"""Checks docs/prometheus/ with promtool (ctest prometheus_rules): the rule file, the scrape config, the
rules' unit tests; that every alert has a test where it fires and one where it stays quiet; and that the
tests fail for every alert made never to fire and for each wrong expression of MUTATIONS.
  check_rules.py [PROMTOOL]        (default: promtool on PATH; Debian's prometheus package)"""
import pathlib
import subprocess
import sys
import tempfile

import yaml

HERE = pathlib.Path(__file__).resolve().parent
PROMTOOL = sys.argv[1] if len(sys.argv) > 1 else "promtool"

# Wrong rules alerts_test.yml must reject: (alert, field, text, replacement).
MUTATIONS = [
    ("WalstreamDown", "expr", "== 0", "== 1"),
    ("WalstreamDown", "for", "1m", "3m"),
    ("WalstreamDown", "for", "1m", "0m"),
    ("WalstreamNoActiveInstance", "expr", ' unless max by (job) (walstream_active{job="walstream"}) == 1', ""),
    ("WalstreamNoActiveInstance", "expr", "max by (job) (walstream_active", "min by (job) (walstream_active"),
    ("WalstreamNoActiveInstance", "expr", 'count by (job) (up{job="walstream"} == 1)',
     'count by (job) (up{job="walstream"})'),
    ("WalstreamNoActiveInstance", "for", "2m", "1m"),
    ("WalstreamTwoActive", "expr", "> 1", ">= 1"),
    ("WalstreamTwoActive", "expr", "sum by", "max by"),
    ("WalstreamTwoActive", "for", "1m", "0m"),
    ("WalstreamNoStandby", "expr", "< 2", "< 1"),
    ("WalstreamNoStandby", "expr", "< 2", "< 3"),
    ("WalstreamNoStandby", "expr", ' or 0 * absent(up{job="walstream"})', ""),
    ("WalstreamNoStandby", "expr", 'sum by (job) (up{job="walstream"})', "sum by (job) (up)"),
    ("WalstreamNoStandby", "for", "5m", "3m"),
    ("WalstreamLagBytes", "expr", "1073741824", "1000000000"),
    ("WalstreamLagBytes", "expr", "max by (job)", "avg by (job)"),
    ("WalstreamLagBytes", "expr", 'max by (job) (walstream_lag_bytes{job="walstream"})',
     'walstream_lag_bytes{job="walstream"}'),
    ("WalstreamLagBytes", "for", "2m", "1m"),
    ("WalstreamLagSeconds", "expr", "> 300", ">= 300"),
    ("WalstreamLagSeconds", "expr", "max by", "min by"),
    ("WalstreamLagSeconds", "for", "2m", "1m"),
    ("WalstreamSlotUnreserved", "expr", 'wal_status="unreserved"', 'wal_status=~"unreserved|extended"'),
    ("WalstreamSlotUnreserved", "for", "1m", "0m"),
    ("WalstreamSlotLost", "expr", 'max_over_time(walstream_slot_wal_status{job="walstream", wal_status="lost"}[1h])',
     'walstream_slot_wal_status{job="walstream", wal_status="lost"}'),
    ("WalstreamSlotLost", "expr", "[1h]", "[10m]"),
    ("WalstreamSlotLost", "expr", "[1h]", "[2h]"),
    ("WalstreamRestarting", "expr", ">= 3", ">= 2"),
    ("WalstreamRestarting", "expr", "[30m]", "[20m]"),
    ("WalstreamReconnecting", "expr", ">= 3", ">= 2"),
    ("WalstreamReconnecting", "expr", "[10m]", "[5m]"),
    ("WalstreamReconnecting", "expr", 'increase(walstream_reconnects_total{job="walstream"}[10m])',
     'sum by (job, instance) (increase(walstream_reconnects_total{job="walstream"}[10m]))'),
    ("WalstreamReconnecting", "for", "2m", "1m"),
    ("WalstreamRedisWaitShortfall", "expr", "[2m]", "[10m]"),
    ("WalstreamRedisWaitShortfall", "for", "5m", "2m"),
    ("WalstreamRedisSlow", "expr", "0.99", "0.95"),
    ("WalstreamRedisSlow", "expr", "0.99", "0.999"),
    ("WalstreamRedisSlow", "expr", "> 1", "> 2.5"),
    ("WalstreamRedisSlow", "expr", "sum by (job, instance, le)", "sum by (job, le)"),
    ("WalstreamRedisSlow", "for", "5m", "3m"),
]


def promtool(args, cwd):
    try:
        return subprocess.run([PROMTOOL, *args], cwd=cwd, capture_output=True, text=True, timeout=120)
    except FileNotFoundError:
        sys.exit(f"{PROMTOOL} not found: install Debian's prometheus package (scripts/deps.sh)")


def tests_of(alert):
    """alerts_test.yml with only the test cases of one alert."""
    suite = yaml.safe_load((HERE / "alerts_test.yml").read_text())
    for test in suite["tests"]:
        test["alert_rule_test"] = [c for c in test.get("alert_rule_test", []) if c["alertname"] == alert]
    suite["tests"] = [t for t in suite["tests"] if t["alert_rule_test"]]
    return suite


def main():
    failures = []
    for args in (["check", "rules", "alerts.yml"], ["check", "config", "prometheus.yml"],
                 ["test", "rules", "alerts_test.yml"]):
        run = promtool(args, HERE)
        print(f"promtool {' '.join(args)}: {'ok' if run.returncode == 0 else 'FAILED'}")
        if run.returncode != 0:
            failures.append(f"promtool {' '.join(args)}:\n{run.stdout}{run.stderr}")
    if failures:
        sys.exit("\n".join(failures))

    rules = yaml.safe_load((HERE / "alerts.yml").read_text())
    alerts = {r["alert"]: r for g in rules["groups"] for r in g["rules"] if "alert" in r}
    firing, quiet = set(), set()
    for test in yaml.safe_load((HERE / "alerts_test.yml").read_text())["tests"]:
        for case in test.get("alert_rule_test", []):
            (firing if case.get("exp_alerts") else quiet).add(case["alertname"])
    for name in sorted(alerts):
        if name not in firing:
            failures.append(f"{name}: no test where it fires")
        if name not in quiet:
            failures.append(f"{name}: no test where it stays quiet")
    failures += [f"{name}: tested but not in alerts.yml" for name in sorted((firing | quiet) - alerts.keys())]

    # A mutant of one alert runs that alert's test cases only: alerting rules do not depend on each other.
    mutants = [(name, "expr", alerts[name]["expr"], "vector(0) > 1") for name in sorted(alerts)] + MUTATIONS
    with tempfile.TemporaryDirectory() as tmp:
        for name, field, text, replacement in mutants:
            (pathlib.Path(tmp) / "alerts_test.yml").write_text(yaml.safe_dump(tests_of(name), width=1000))
            mutated = yaml.safe_load((HERE / "alerts.yml").read_text())
            rule = next(r for g in mutated["groups"] for r in g["rules"] if r.get("alert") == name)
            if text not in str(rule[field]):
                failures.append(f"{name}: mutation {text!r} -> {replacement!r}: {field} does not contain it")
                continue
            rule[field] = str(rule[field]).replace(text, replacement, 1)
            (pathlib.Path(tmp) / "alerts.yml").write_text(yaml.safe_dump(mutated, width=1000, sort_keys=False))
            if promtool(["test", "rules", "alerts_test.yml"], tmp).returncode == 0:
                failures.append(f"{name}: the tests pass with {field} {text!r} -> {replacement!r}")
    print(f"{len(alerts)} alerts, each firing and quiet in some test; {len(mutants)} wrong rules, "
          f"{len(mutants) - sum('the tests pass' in f for f in failures)} rejected")
    if failures:
        sys.exit("FAILED:\n  " + "\n  ".join(failures))
    print("prometheus rules ok")


if __name__ == "__main__":
    main()
