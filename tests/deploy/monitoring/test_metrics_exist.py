# SPDX-License-Identifier: Apache-2.0
"""Every loopwatch_ sample name and label that the alerts
(deploy/monitoring/prometheusrule.yaml) and the dashboard
(grafana-dashboard.json) use is in the real sidecar's /metrics, scraped
while the real asio app's loop is stalled and again after the stall ended."""

import os
import pathlib

import yaml

from sidecar_harness import metric

import promql_uses

HERE = pathlib.Path(__file__).resolve().parent
SOURCE_DIR = pathlib.Path(os.environ.get("LOOPWATCH_SOURCE_DIR") or HERE.parents[2])
MONITORING = SOURCE_DIR / "deploy" / "monitoring"
RULES = MONITORING / "prometheusrule.yaml"
PODMONITOR = MONITORING / "podmonitor.yaml"
SCRAPE = MONITORING / "prometheus-scrape.yaml"

# What the Prometheus Operator sets on every target of a PodMonitor (or a
# ServiceMonitor: service) besides the relabelings of its own spec, and what
# Prometheus sets itself. A sample label of the same name is renamed to
# exported_<name> (honor_labels: false), which breaks every query of it.
OPERATOR_TARGET_LABELS = {"namespace", "pod", "container", "endpoint", "service", "job",
                          "instance"}
DASHBOARD = MONITORING / "grafana-dashboard.json"

# The app's watchdog writes its report after 600 ms of silence (its 100 ms
# interval + LOOPWATCH_REPORT_AFTER, 500 ms): with stall_after above that,
# the stall is counted with the report's class.
STALL_AFTER = "700ms"
POLL_INTERVAL = "20ms"
STALL_MS = 1200


def scrape_with_a_stall(world):
    """Two scrapes of the real sidecar: during a real stall of the app's
    loop and after it ended. Returns the union of their samples."""
    sc = world.sidecar(stall_after=STALL_AFTER, poll_interval=POLL_INTERVAL)
    app = world.app()
    sc.wait_loop_state(app.pid, "live", timeout=5)
    req = app.request_async("/sleep?ms=%d" % STALL_MS)
    sc.wait_log("stall report", timeout=5, pid=app.pid)
    during = sc.metrics()
    assert req.result(timeout=10).status == 200
    sc.wait_log("stall ended", timeout=5, pid=app.pid)
    after = sc.metrics()

    loop = {"pid": app.pid}
    assert metric(during, "loopwatch_loop_state", state="stalled", **loop) == 1
    assert metric(during, "loopwatch_loop_stall_seconds", **loop) >= 0.7
    assert metric(after, "loopwatch_loop_state", state="stalled", **loop) == 0
    assert metric(after, "loopwatch_stalls_total", **{"class": "blocked"}) == 1
    assert metric(after, "loopwatch_loop_stalls_total", **{"class": "blocked"}, **loop) == 1
    assert metric(after, "loopwatch_stall_duration_seconds_count", **{"class": "blocked"}) == 1
    assert metric(after, "loopwatch_loop_lag_seconds_count", **loop) > 0
    return {**during, **after}


def target_labels():
    """Every label either way of scraping (deploy/monitoring) sets on a
    target: the operator's own, the PodMonitor's relabelings and the plain
    scrape config's."""
    labels = set(OPERATOR_TARGET_LABELS)
    pm = yaml.safe_load(PODMONITOR.read_text())
    for ep in pm["spec"]["podMetricsEndpoints"]:
        labels.update(r["targetLabel"] for r in ep.get("relabelings", []) if "targetLabel" in r)
    for doc in yaml.safe_load_all(SCRAPE.read_text()):
        for job in (doc or {}).get("scrape_configs", []) if isinstance(doc, dict) else []:
            labels.update(r["target_label"] for r in job.get("relabel_configs", [])
                          if "target_label" in r)
    return labels


def problems_text(problems):
    return "\n".join("  " + p for p in problems)


def test_alerts_and_dashboard_use_real_metrics(world):
    index = promql_uses.sample_index(scrape_with_a_stall(world))

    # No label of the sidecar's is renamed by the scrape: none is a target
    # label of the operator's or of our relabelings.
    targets = target_labels()
    assert {"endpoint", "node", "job", "namespace"} <= targets, targets
    clashes = sorted("%s{%s}" % (name, label) for name, labels in index.items()
                     for label in labels & targets)
    assert not clashes, "sample labels that the scrape renames to exported_*: %s" % clashes

    rule_uses = promql_uses.uses_of_rules(RULES)
    problems = promql_uses.check(rule_uses, index)
    assert not problems, "%s asks for what the sidecar does not export:\n%s" % (
        RULES.name, problems_text(problems))

    dash_uses = promql_uses.uses_of_dashboard(DASHBOARD)
    problems = promql_uses.check(dash_uses, index)
    assert not problems, "%s asks for what the sidecar does not export:\n%s" % (
        DASHBOARD.name, problems_text(problems))

    # The same check, on made-up uses, against the same scrape: it fails.
    bad = promql_uses.uses_of_expr(
        'sum by (namespace, made_up_label) (rate(loopwatch_made_up_total[5m]))'
        ' / on (namespace, pod, loop) group_left () loopwatch_loop_up{kind="asio", colour="x"}'
        ' + loopwatch_loop_lag_seconds + sum by (state) (loopwatch_loop_lag_seconds_sum)',
        "negative check")
    problems = promql_uses.check(bad, index)
    joined = "\n".join(problems)
    assert "loopwatch_made_up_total is not in the sidecar's /metrics" in joined, joined
    # A histogram is its _bucket, _sum and _count samples, not its family name.
    assert "loopwatch_loop_lag_seconds is not in the sidecar's /metrics" in joined, joined
    assert "label 'colour' (selector) is not on loopwatch_loop_up" in joined, joined
    assert "label 'state' (by) is not on loopwatch_loop_lag_seconds_sum" in joined, joined
    assert "label 'loop' (on)" not in joined, joined       # it is on loopwatch_loop_up
    assert "'kind'" not in joined and "'namespace'" not in joined, joined
    assert len(problems) == 4, joined


def test_the_files_are_read_whole():
    """The check covers every rule and panel: the parser finds each alert's
    metrics and clauses (so an empty result cannot pass for a clean one)."""
    rule_uses = promql_uses.uses_of_rules(RULES)
    wheres = {u.where.split(" expr")[0] for u in rule_uses if u.where.endswith(" expr")}
    for alert in ("LoopwatchLoopStalled", "LoopwatchLoopDead", "LoopwatchStallsTooFrequent",
                  "LoopwatchLoopLagHigh"):
        assert "prometheusrule.yaml: %s" % alert in wheres, wheres
    kinds = {(u.kind, tuple(u.metrics), tuple(u.labels)) for u in rule_uses}
    assert ("selector", ("loopwatch_loop_state",), ("state",)) in kinds, kinds
    assert ("by", ("loopwatch_loop_lag_seconds_bucket",),
            ("le", "loop", "namespace", "pod")) in kinds, kinds
    assert any(u.where.endswith("annotation description") for u in rule_uses), rule_uses

    dash_uses = promql_uses.uses_of_dashboard(DASHBOARD)
    panels = {u.where.split(" target")[0] for u in dash_uses if " target " in u.where}
    assert len(panels) >= 14, panels
    assert any(u.kind == "label_values" and u.labels == ["loop"] for u in dash_uses), dash_uses
    assert any(u.kind == "legend" for u in dash_uses), dash_uses
