# SPDX-License-Identifier: Apache-2.0
"""Static checks of deploy/monitoring/, one per ctest test:

  check_monitoring.py rules      promtool check rules on the PrometheusRule's
                                 groups; every alert has a severity, a
                                 summary, a description and a runbook_url whose
                                 anchor is a heading of docs/kubernetes.md
  check_monitoring.py config     promtool check config on a prometheus.yml
                                 made of prometheus-scrape.yaml (and the rule
                                 groups); the scrape job, the PodMonitor and
                                 the alerts agree on job, pod label and port
  check_monitoring.py test-rules promtool test rules alerts_test.yaml: each
                                 alert fires on synthetic series, with its
                                 labels and annotations, and not on healthy ones
  check_monitoring.py dashboard  grafana-dashboard.json: valid JSON, unique
                                 panel ids, every panel on ${datasource} with
                                 a target; promtool parses every query

Options: --source-dir DIR (default: three levels up), --work-dir DIR (scratch
files; default: a temporary directory), --promtool PATH (default: promtool
on PATH). A missing promtool is a failure (Debian: apt-get install
prometheus), not a skip. Needs PyYAML (Debian: python3-yaml).
"""

import argparse
import json
import pathlib
import re
import shutil
import subprocess
import sys
import tempfile

try:
    import yaml
except ImportError:
    print("FAIL: %s has no PyYAML (Debian: apt-get install python3-yaml)" % sys.executable,
          file=sys.stderr)
    sys.exit(1)

HERE = pathlib.Path(__file__).resolve().parent

JOB = "loopwatch"
POD_LABEL = ("loopwatch.io/sidecar", "true")
PORT_NAME = "loopwatch"
ALERTS = ["LoopwatchLoopStalled", "LoopwatchLoopDead", "LoopwatchStallsTooFrequent",
          "LoopwatchLoopLagHigh", "LoopwatchSegmentLost", "LoopwatchSidecarDown"]
PER_LOOP = {"LoopwatchLoopStalled", "LoopwatchLoopDead", "LoopwatchLoopLagHigh"}
SEVERITIES = {"critical", "warning", "info"}


class Failure(Exception):
    pass


def load_yaml(path):
    with open(path, encoding="utf-8") as f:
        return yaml.safe_load(f)


def promtool(args, *cmd, cwd=None):
    exe = args.promtool or shutil.which("promtool")
    if not exe or not pathlib.Path(exe).exists():
        raise Failure("promtool not found (%s): install the Debian package `prometheus` "
                      "(scripts/test does), or pass --promtool PATH"
                      % (args.promtool or "not on PATH"))
    r = subprocess.run([exe, *cmd], cwd=cwd, stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, text=True, timeout=120)
    print("$ promtool %s\n%s" % (" ".join(cmd), r.stdout.rstrip()))
    if r.returncode != 0:
        raise Failure("promtool %s failed (exit %d)" % (cmd[0] + " " + cmd[1], r.returncode))
    return r.stdout


def rule_groups(args):
    """The PrometheusRule's spec as a plain rule file, in the work dir."""
    rule = load_yaml(args.monitoring / "prometheusrule.yaml")
    if rule.get("apiVersion") != "monitoring.coreos.com/v1" or rule.get("kind") != "PrometheusRule":
        raise Failure("prometheusrule.yaml is not a monitoring.coreos.com/v1 PrometheusRule")
    path = args.work_dir / "loopwatch-rules.yaml"
    with open(path, "w", encoding="utf-8") as f:
        yaml.safe_dump({"groups": rule["spec"]["groups"]}, f, sort_keys=False)
    return rule, path


def markdown_anchors(path):
    """GitHub-style anchors of the headings of a Markdown file."""
    anchors = set()
    in_code = False
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("```"):
            in_code = not in_code
        if in_code:
            continue
        m = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if m:
            text = re.sub(r"[^\w\- ]", "", m.group(1).lower())
            anchors.add(text.replace(" ", "-"))
    return anchors


def cmd_rules(args):
    rule, path = rule_groups(args)
    promtool(args, "check", "rules", str(path))
    docs = args.source_dir / "docs" / "kubernetes.md"
    anchors = markdown_anchors(docs)
    problems = []
    found = []
    for group in rule["spec"]["groups"]:
        for r in group["rules"]:
            name = r.get("alert")
            if not name:
                continue
            found.append(name)
            sev = (r.get("labels") or {}).get("severity")
            if sev not in SEVERITIES:
                problems.append("%s: labels.severity is %r, not one of %s"
                                % (name, sev, sorted(SEVERITIES)))
            ann = r.get("annotations") or {}
            for key in ("summary", "description", "runbook_url"):
                if not str(ann.get(key, "")).strip():
                    problems.append("%s: no annotations.%s" % (name, key))
            url = ann.get("runbook_url", "")
            want = "docs/kubernetes.md#" + name.lower()
            if url != want:
                problems.append("%s: runbook_url is %r, expected %r" % (name, url, want))
            if name.lower() not in anchors:
                problems.append("%s: docs/kubernetes.md has no heading with anchor #%s"
                                % (name, name.lower()))
            # Per-loop alerts name the loop; all name the pod.
            labels = ["namespace", "pod"] + (["loop"] if name in PER_LOOP else [])
            for label in labels:
                if "$labels.%s" % label not in str(ann.get("description", "")):
                    problems.append("%s: the description does not name the %s" % (name, label))
    if sorted(found) != sorted(ALERTS):
        problems.append("alerts are %s, expected %s" % (sorted(found), sorted(ALERTS)))
    if problems:
        raise Failure("prometheusrule.yaml:\n  " + "\n  ".join(problems))


def cmd_config(args):
    _, rules_path = rule_groups(args)
    scrape = load_yaml(args.monitoring / "prometheus-scrape.yaml")
    jobs = scrape.get("scrape_configs") or []
    if len(jobs) != 1:
        raise Failure("prometheus-scrape.yaml: expected one job under scrape_configs")
    sd = jobs[0].get("kubernetes_sd_configs")
    if sd != [{"role": "pod"}]:
        raise Failure("prometheus-scrape.yaml: kubernetes_sd_configs is %r, expected one "
                      "entry with role: pod" % (sd,))
    # Debian's Prometheus is built without Kubernetes discovery (promtool
    # rejects the key): promtool checks the job with a static target in its
    # place, which leaves everything else (relabelling, intervals) checked.
    checked = dict(jobs[0])
    del checked["kubernetes_sd_configs"]
    checked["static_configs"] = [{"targets": ["127.0.0.1:9321"]}]
    config = {
        "global": {"scrape_interval": "15s", "evaluation_interval": "15s"},
        "rule_files": [rules_path.name],
        "scrape_configs": [checked],
    }
    path = args.work_dir / "prometheus.yml"
    with open(path, "w", encoding="utf-8") as f:
        yaml.safe_dump(config, f, sort_keys=False)
    promtool(args, "check", "config", str(path))

    # The two ways of scraping agree with each other and with the alerts.
    problems = []
    job = jobs[0]
    if job.get("job_name") != JOB:
        problems.append("prometheus-scrape.yaml: job_name is %r, not %r"
                        % (job.get("job_name"), JOB))
    relabel = job.get("relabel_configs") or []
    keeps = {tuple(r.get("source_labels", [])): r.get("regex") for r in relabel
             if r.get("action") == "keep"}
    label_meta = "__meta_kubernetes_pod_label_" + re.sub(r"[^a-zA-Z0-9_]", "_", POD_LABEL[0])
    if keeps.get((label_meta,)) != POD_LABEL[1]:
        problems.append("prometheus-scrape.yaml: does not keep pods labelled %s=%s"
                        % POD_LABEL)
    if keeps.get(("__meta_kubernetes_pod_container_port_name",)) != PORT_NAME:
        problems.append("prometheus-scrape.yaml: does not keep the port named %s" % PORT_NAME)
    targets = {r.get("target_label") for r in relabel}
    for label in ("namespace", "pod", "container", "node"):
        if label not in targets:
            problems.append("prometheus-scrape.yaml: sets no %s label" % label)

    pm = load_yaml(args.monitoring / "podmonitor.yaml")
    if pm.get("apiVersion") != "monitoring.coreos.com/v1" or pm.get("kind") != "PodMonitor":
        problems.append("podmonitor.yaml is not a monitoring.coreos.com/v1 PodMonitor")
    spec = pm.get("spec", {})
    if spec.get("selector", {}).get("matchLabels") != {POD_LABEL[0]: POD_LABEL[1]}:
        problems.append("podmonitor.yaml: selector is not %s=%s" % POD_LABEL)
    if spec.get("namespaceSelector") != {"any": True}:
        problems.append("podmonitor.yaml: not all namespaces (namespaceSelector.any)")
    eps = spec.get("podMetricsEndpoints") or []
    if len(eps) != 1:
        problems.append("podmonitor.yaml: expected one podMetricsEndpoints entry")
    else:
        ep = eps[0]
        if ep.get("port") != PORT_NAME or ep.get("path") != "/metrics":
            problems.append("podmonitor.yaml: endpoint is not port %s, path /metrics" % PORT_NAME)
        if ep.get("interval") != job.get("scrape_interval"):
            problems.append("podmonitor.yaml: interval %s differs from the scrape config's %s"
                            % (ep.get("interval"), job.get("scrape_interval")))
        rl = ep.get("relabelings") or []
        if not any(r.get("targetLabel") == "job" and r.get("replacement") == JOB
                   and not r.get("sourceLabels") for r in rl):
            problems.append("podmonitor.yaml: does not set job=%s (the operator's default is "
                            "<namespace>/<name>, which the alerts do not match)" % JOB)
        if not any(r.get("targetLabel") == "node" for r in rl):
            problems.append("podmonitor.yaml: sets no node label")

    rule = load_yaml(args.monitoring / "prometheusrule.yaml")
    down = [r for g in rule["spec"]["groups"] for r in g["rules"]
            if r.get("alert") == "LoopwatchSidecarDown"]
    if not down or 'job="%s"' % JOB not in down[0]["expr"]:
        problems.append("prometheusrule.yaml: LoopwatchSidecarDown does not select job=%s" % JOB)
    if problems:
        raise Failure("\n  ".join(["deploy/monitoring disagrees with itself:"] + problems))


def cmd_test_rules(args):
    _, rules_path = rule_groups(args)
    shutil.copy(HERE / "alerts_test.yaml", args.work_dir / "alerts_test.yaml")
    # alerts_test.yaml names the rule file by its base name: both in work_dir.
    out = promtool(args, "test", "rules", "alerts_test.yaml", cwd=args.work_dir)
    if "SUCCESS" not in out:
        raise Failure("promtool test rules did not report SUCCESS")
    # Each alert is asserted to fire in some test case.
    tests = load_yaml(HERE / "alerts_test.yaml")
    fired = {c["alertname"] for t in tests["tests"] for c in t.get("alert_rule_test", [])
             if c.get("exp_alerts")}
    missing = sorted(set(ALERTS) - fired)
    if missing:
        raise Failure("alerts_test.yaml never expects these to fire: %s" % missing)


def cmd_dashboard(args):
    path = args.monitoring / "grafana-dashboard.json"
    try:
        dash = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as e:
        raise Failure("%s is not valid JSON: %s" % (path.name, e))
    problems = []
    if not isinstance(dash.get("schemaVersion"), int) or dash["schemaVersion"] < 36:
        problems.append("schemaVersion %r (expected 36 or later)" % dash.get("schemaVersion"))
    variables = {v.get("name"): v for v in dash.get("templating", {}).get("list", [])}
    ds = variables.get("datasource")
    if not ds or ds.get("type") != "datasource" or ds.get("query") != "prometheus":
        problems.append("no `datasource` variable of type datasource, query prometheus")
    for name in ("namespace", "pod", "loop"):
        v = variables.get(name)
        q = v and v.get("query")
        q = q.get("query") if isinstance(q, dict) else q
        if not v or v.get("type") != "query" or not str(q).startswith("label_values("):
            problems.append("no `%s` variable with a label_values() query" % name)
        elif v.get("datasource", {}).get("uid") != "${datasource}":
            problems.append("variable %s does not use ${datasource}" % name)

    def all_panels(ps):
        for p in ps:
            yield p
            yield from all_panels(p.get("panels") or [])

    ids = {}
    count = 0
    for p in all_panels(dash.get("panels", [])):
        pid, title = p.get("id"), p.get("title")
        if pid in ids:
            problems.append("panel id %r used by %r and %r" % (pid, ids[pid], title))
        ids[pid] = title
        if p.get("type") == "row":
            continue
        count += 1
        if (p.get("datasource") or {}).get("uid") != "${datasource}":
            problems.append("panel %r: datasource is not ${datasource}" % title)
        if not p.get("gridPos"):
            problems.append("panel %r: no gridPos" % title)
        targets = [t for t in p.get("targets") or [] if str(t.get("expr", "")).strip()]
        if not targets:
            problems.append("panel %r: no target with an expr" % title)
        for t in p.get("targets") or []:
            if (t.get("datasource") or {}).get("uid") not in (None, "${datasource}"):
                problems.append("panel %r target %s: datasource is not ${datasource}"
                                % (title, t.get("refId")))
        refs = [t.get("refId") for t in p.get("targets") or []]
        if len(refs) != len(set(refs)):
            problems.append("panel %r: duplicate refId" % title)
    if count == 0:
        problems.append("no panels")
    if problems:
        raise Failure("%s:\n  %s" % (path.name, "\n  ".join(problems)))

    # Every query is valid PromQL: promtool checks them as recording rules,
    # with Grafana's variables replaced by values of their kind.
    rules = []
    for p in all_panels(dash.get("panels", [])):
        for t in p.get("targets") or []:
            if str(t.get("expr", "")).strip():
                rules.append({"record": "loopwatch_dashboard:panel%s_%s" % (p.get("id"), t.get("refId")),
                              "expr": grafana_to_promql(t["expr"])})
    for name, v in variables.items():
        q = v.get("query")
        q = q.get("query") if isinstance(q, dict) else q
        m = re.fullmatch(r"\s*label_values\((.*),\s*\w+\s*\)\s*", str(q))
        if m:
            rules.append({"record": "loopwatch_dashboard:variable_%s" % name,
                          "expr": grafana_to_promql(m.group(1))})
    rules_path = args.work_dir / "dashboard-queries.yaml"
    with open(rules_path, "w", encoding="utf-8") as f:
        yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}, f, sort_keys=False)
    promtool(args, "check", "rules", str(rules_path))
    print("%s: %d panels, ids unique, all on ${datasource}; %d queries are valid PromQL"
          % (path.name, count, len(rules)))


def grafana_to_promql(expr):
    """A dashboard query with Grafana's variables replaced: intervals by a
    duration, template variables (inside label matchers) by a regex."""
    expr = re.sub(r"\$\{?__(rate_interval|interval|range)\}?", "5m", expr)
    return re.sub(r"\$\{?\w+\}?", ".*", expr)


COMMANDS = {"rules": cmd_rules, "config": cmd_config, "test-rules": cmd_test_rules,
            "dashboard": cmd_dashboard}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("command", choices=sorted(COMMANDS))
    ap.add_argument("--source-dir", type=pathlib.Path, default=HERE.parents[2])
    ap.add_argument("--work-dir", type=pathlib.Path)
    ap.add_argument("--promtool")
    args = ap.parse_args()
    args.monitoring = args.source_dir / "deploy" / "monitoring"
    tmp = None
    if args.work_dir is None:
        tmp = tempfile.TemporaryDirectory(prefix="lw-monitoring-")
        args.work_dir = pathlib.Path(tmp.name)
    args.work_dir.mkdir(parents=True, exist_ok=True)
    try:
        COMMANDS[args.command](args)
    except Failure as e:
        print("FAIL: %s" % e, file=sys.stderr)
        return 1
    finally:
        if tmp:
            tmp.cleanup()
    print("ok: %s" % args.command)
    return 0


if __name__ == "__main__":
    sys.exit(main())
