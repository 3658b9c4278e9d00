#!/usr/bin/env node
// Checks every file under deploy/ (see tests/deploy/README.md):
//
//   node tests/deploy/validate.mjs [PATH ...]        default: deploy/
//   node tests/deploy/validate.mjs --expect-fail DIR  each entry of DIR must be
//                                                    rejected as its comments say
//
// Needs the repository's node_modules (`npm ci` at the repository root).
// Exit status: 0 all good, 1 a check failed, 2 the tooling is missing.

import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { execFileSync } from "node:child_process";
import { fileURLToPath } from "node:url";

const HERE = path.dirname(fileURLToPath(import.meta.url));
const REPO = path.resolve(HERE, "..", "..");

let YAML;
let fieldChecker;
let layerTool;
let policy;

async function loadDeps() {
  try {
    YAML = await import("yaml");
    await import("kubernetes-models/v1/Pod");
    await import("@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/PodMonitor");
    const sf = await import("./lib/strict-fields.mjs");
    fieldChecker = new sf.FieldChecker();
    ({ layerTool } = await import("./lib/layer-tool.mjs"));
    policy = await import("./lib/policy.mjs");
  } catch (e) {
    if (e && (e.code === "ERR_MODULE_NOT_FOUND" || e.code === "MODULE_NOT_FOUND")) {
      console.error(`validate.mjs: the npm packages are not installed (${e.message.split("\n")[0]}).`);
      console.error(`Run \`npm ci\` in the repository root (${REPO}) first.`);
      process.exit(2);
    }
    throw e;
  }
}

// apiVersion -> module prefix holding one model class per kind.
const API = {
  v1: "kubernetes-models/v1",
  "apps/v1": "kubernetes-models/apps/v1",
  "batch/v1": "kubernetes-models/batch/v1",
  "policy/v1": "kubernetes-models/policy/v1",
  "rbac.authorization.k8s.io/v1": "kubernetes-models/rbac.authorization.k8s.io/v1",
  "admissionregistration.k8s.io/v1": "kubernetes-models/admissionregistration.k8s.io/v1",
  "networking.k8s.io/v1": "kubernetes-models/networking.k8s.io/v1",
  "autoscaling/v2": "kubernetes-models/autoscaling/v2",
  "monitoring.coreos.com/v1": "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1",
  "cert-manager.io/v1": "@kubernetes-models/cert-manager/cert-manager.io/v1",
};

const KUSTOMIZATION_NAMES = new Set(["kustomization.yaml", "kustomization.yml", "Kustomization"]);

// Files under deploy/ that are not Kubernetes objects, each with its check.
const NON_KUBERNETES = [
  { test: (b) => b === "prometheus-scrape.yaml", what: "Prometheus scrape config", check: checkScrapeConfig },
  { test: (b, f) => b.endsWith(".json") && !isKubernetesJson(f), what: "Grafana dashboard", check: checkDashboard },
  { test: (b) => b.endsWith(".md"), what: "documentation", check: null },
  { test: (b) => b === "Dockerfile" || b.startsWith("Dockerfile.") || b.endsWith(".Dockerfile") || b === ".dockerignore", what: "image build file", check: null },
];

// A .json file holding a Kubernetes object (`kubectl get -o json`, a
// kind: List), not a dashboard: read as YAML, of which JSON is a part.
function isKubernetesJson(f) {
  try {
    const v = JSON.parse(fs.readFileSync(f, "utf8"));
    return v !== null && typeof v === "object" && typeof v.apiVersion === "string" && typeof v.kind === "string";
  } catch {
    return false;
  }
}

const POD_SPEC_AT = {
  Pod: ["spec"],
  PodTemplate: ["template", "spec"],
  Deployment: ["spec", "template", "spec"],
  ReplicaSet: ["spec", "template", "spec"],
  StatefulSet: ["spec", "template", "spec"],
  DaemonSet: ["spec", "template", "spec"],
  Job: ["spec", "template", "spec"],
  ReplicationController: ["spec", "template", "spec"],
  CronJob: ["spec", "jobTemplate", "spec", "template", "spec"],
};

// What a placeholder app container of a PodSpec fragment gets: the user's
// own container brings its image and its security context.
const PLACEHOLDER_IMAGE = "placeholder/app:1";
const RESTRICTED_SC = {
  runAsNonRoot: true,
  allowPrivilegeEscalation: false,
  readOnlyRootFilesystem: true,
  capabilities: { drop: ["ALL"] },
  seccompProfile: { type: "RuntimeDefault" },
};

// ------------------------------------------------------------------ helpers

function fmtPath(p) {
  let s = "";
  for (const k of p || []) s += typeof k === "number" ? `[${k}]` : s ? `.${k}` : k;
  return s;
}

function getIn(obj, p) {
  let v = obj;
  for (const k of p) {
    if (v === null || typeof v !== "object") return undefined;
    v = v[k];
  }
  return v;
}

function rel(abs) {
  const r = path.relative(REPO, abs);
  return r.startsWith("..") ? abs : r;
}

// The form of sidecar a manifest is meant to show, from its path.
function expectedForm(relPath) {
  if (/plain|podman/i.test(relPath)) return "plain";
  return "native";
}

// Every workload of an example runs its app with the sidecar.
function sidecarRequired(relPath) {
  return /(^|\/)examples\//.test(relPath);
}

function walkFiles(dir) {
  const out = [];
  for (const ent of fs.readdirSync(dir, { withFileTypes: true }).sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0))) {
    if (ent.name === "node_modules" || ent.name === ".git") continue;
    const p = path.join(dir, ent.name);
    if (ent.isDirectory()) out.push(...walkFiles(p));
    else out.push(p);
  }
  return out;
}

// A function mapping a path inside a YAML document to "line:col".
function locator(doc, lc, prefix = []) {
  return (p) => {
    if (!doc || !p) return null;
    for (let i = 0; i < prefix.length; i++) if (p[i] !== prefix[i]) return null;
    let node = doc.contents;
    let pos = node?.range?.[0];
    for (const k of p.slice(prefix.length)) {
      if (YAML.isMap(node)) {
        const pair = node.items.find((it) => (YAML.isScalar(it.key) ? it.key.value : it.key) === k);
        if (!pair) break;
        pos = pair.key?.range?.[0] ?? pos;
        node = pair.value;
      } else if (YAML.isSeq(node) && typeof k === "number" && node.items[k]) {
        node = node.items[k];
        pos = node.range?.[0] ?? pos;
      } else break;
    }
    if (pos === undefined) return null;
    const lp = lc.linePos(pos);
    return `${lp.line}:${lp.col}`;
  };
}

function parseYamlFile(abs) {
  const src = fs.readFileSync(abs, "utf8");
  const lc = new YAML.LineCounter();
  // Kubernetes reads YAML 1.1 (yes/no/on/off are booleans there).
  const docs = YAML.parseAllDocuments(src, { lineCounter: lc, version: "1.1", merge: true, uniqueKeys: true });
  const errors = [];
  const list = Array.isArray(docs) ? docs : [docs];
  for (const d of list) {
    for (const e of d.errors) {
      const lp = e.linePos?.[0];
      errors.push({ where: lp ? `${lp.line}:${lp.col}` : null, msg: `YAML: ${e.message.split("\n")[0].replace(/ at line \d+, column \d+:?$/, "")}` });
    }
  }
  return { docs: list, lc, errors };
}

// ------------------------------------------------------------------ records

class Run {
  constructor() {
    this.records = [];
    this.podMonitors = [];
    this.loopwatchPods = []; // {labels, portNames, label}
    this.objects = 0;
  }
  record(abs) {
    const r = { file: rel(abs), notes: [], errors: [], skipped: false };
    this.records.push(r);
    return r;
  }
  get errorCount() {
    return this.records.reduce((n, r) => n + r.errors.length, 0);
  }
}

function addError(rec, where, label, msg) {
  rec.errors.push(`${rec.file}${where ? ":" + where : ""}: ${label ? label + ": " : ""}${msg}`);
}

// ------------------------------------------------------------------ models

const modelCache = new Map();

async function modelFor(apiVersion, kind) {
  const key = `${apiVersion} ${kind}`;
  if (modelCache.has(key)) return modelCache.get(key);
  let res;
  const base = API[apiVersion];
  if (typeof apiVersion !== "string" || typeof kind !== "string") {
    res = { error: "apiVersion and kind must be strings" };
  } else if (!base) {
    res = { error: `unknown apiVersion ${apiVersion} (this check knows ${Object.keys(API).join(", ")})` };
  } else if (!/^[A-Z][A-Za-z0-9]*$/.test(kind)) {
    res = { error: `unknown kind ${kind} in ${apiVersion}` };
  } else {
    let mod = null;
    try {
      mod = await import(`${base}/${kind}`);
    } catch {
      mod = null;
    }
    const cls = mod?.[kind];
    if (!cls || cls.kind !== kind || cls.apiVersion !== apiVersion) {
      res = { error: `unknown kind ${kind} in ${apiVersion}` };
    } else {
      res = { cls, fields: fieldChecker.rootFor(`${base}/${kind}`, kind) };
    }
  }
  modelCache.set(key, res);
  return res;
}

function schemaErrors(cls, obj) {
  try {
    new cls(obj).validate();
    return [];
  } catch (e) {
    if (!Array.isArray(e?.errors)) return [{ path: null, msg: String(e?.message ?? e) }];
    const out = [];
    const seen = new Set();
    for (const a of e.errors) {
      const p = a.instancePath.split("/").slice(1).map((s) => s.replace(/~1/g, "/").replace(/~0/g, "~")).map((s) => (/^[0-9]+$/.test(s) ? Number(s) : s));
      let msg = a.message;
      if (a.keyword === "enum" && a.params?.allowedValues) msg += ` (${a.params.allowedValues.join(", ")})`;
      if (a.keyword === "required") p.push(a.params.missingProperty);
      const text = `${fmtPath(p) || "(document)"}: ${msg}`;
      if (seen.has(text)) continue;
      seen.add(text);
      out.push({ path: p, msg: text });
    }
    return out;
  }
}

// Validates one Kubernetes object. opts: {rec, label, locate, form, run, partial}
async function checkObject(obj, opts) {
  const { rec, label, locate, run } = opts;
  const err = (p, msg) => addError(rec, p ? locate?.(p) : null, label, msg);
  const m = await modelFor(obj.apiVersion, obj.kind);
  if (m.error) {
    err(["kind"], m.error);
    return;
  }
  run.objects++;
  if (!opts.partial) {
    for (const e of schemaErrors(m.cls, obj)) err(e.path, `schema: ${e.msg}`);
    if (!obj.metadata?.name && !obj.metadata?.generateName) err(["metadata"], "metadata.name is missing");
  }
  if (m.fields) for (const e of fieldChecker.check(obj, m.fields)) err(e.path, `schema: ${fmtPath(e.path)}: ${e.msg}`);
  if (opts.partial) return;

  const at = POD_SPEC_AT[obj.kind];
  const ps = at ? getIn(obj, at) : undefined;
  if (ps && typeof ps === "object") checkPodSpec(ps, at, obj, opts);

  if (obj.kind === "PodMonitor") run.podMonitors.push({ obj, rec, label, locate });
}

function checkPodSpec(ps, at, obj, opts) {
  const { rec, label, locate, run } = opts;
  const err = (p, msg) => addError(rec, locate?.([...at, ...p]), label, msg);
  // A StatefulSet's volumeClaimTemplates are volumes of its pods too.
  const claims = obj.kind === "StatefulSet" ? (obj.spec?.volumeClaimTemplates || []).map((t) => t?.metadata?.name) : [];
  for (const e of policy.checkApiRules(ps, claims)) err(e.path, e.msg);
  const meta = at.length >= 2 ? getIn(obj, [...at.slice(0, -1), "metadata"]) : obj.metadata;
  for (const e of policy.checkRestricted(ps, meta)) err(e.path ?? [], e.msg);
  if (!opts.fragment) {
    for (const { c, path: p, label: cl } of policy.allContainers(ps)) {
      if (!c.image) err(p, `${cl} has no image`);
    }
  }
  const { errs, sidecar } = policy.checkLoopwatch(ps, opts.form, meta);
  for (const e of errs) err(e.path, `loopwatch: ${e.msg}`);
  if (!sidecar && opts.sidecarRequired)
    err([], `loopwatch: a workload of an example must run with the sidecar (a container named '${policy.SIDECAR_NAME}'), this one has none`);
  if (sidecar) {
    run.loopwatchPods.push({
      labels: opts.fragment ? null : meta?.labels || {},
      portNames: new Set((sidecar.ports || []).map((p) => p?.name).filter(Boolean)),
      where: `${rec.file} ${label}`,
    });
    opts.sawSidecar = true;
  }
}

// ------------------------------------------------------------------ files

async function checkYamlFile(abs, run, covered) {
  const rec = run.record(abs);
  const { docs, lc, errors } = parseYamlFile(abs);
  if (errors.length) {
    for (const e of errors) addError(rec, e.where, null, e.msg);
    return;
  }
  const form = expectedForm(rec.file);
  let n = 0;
  for (const [i, doc] of docs.entries()) {
    const obj = doc.toJS({ maxAliasCount: 100 });
    if (obj === null || obj === undefined) continue;
    n++;
    const label0 = `doc ${i + 1}`;
    const locate = locator(doc, lc);
    if (typeof obj !== "object" || Array.isArray(obj)) {
      if (covered) {
        rec.notes.push(`${label0} JSON patch`);
        continue;
      }
      addError(rec, locate([]), label0, "cannot classify: not a mapping");
      continue;
    }
    if (obj.apiVersion !== undefined || obj.kind !== undefined) {
      const label = `${label0} ${obj.kind}/${obj.metadata?.name ?? "?"}`;
      if (String(obj.apiVersion).startsWith("kustomize.config.k8s.io/")) {
        addError(rec, locate(["kind"]), label, "a kustomize file must be named kustomization.yaml");
        continue;
      }
      // A strategic-merge patch may carry directives ($patch: replace, ...)
      // that are not fields of the object; the rendered output is checked
      // without them anyway.
      if (covered) stripPatchDirectives(obj);
      // kind: List (what kubectl prints for several objects): each item.
      const items = obj.kind === "List" && Array.isArray(obj.items) ? obj.items.map((it, k) => [it, ["items", k]]) : [[obj, []]];
      for (const [it, at] of items) {
        const itLabel = at.length ? `${label0} items[${at[1]}] ${it?.kind}/${it?.metadata?.name ?? "?"}` : label;
        const itLocate = at.length ? (p) => locate([...at, ...p]) : locate;
        await checkObject(it, { rec, label: itLabel, locate: itLocate, run, form, partial: !!covered, sidecarRequired: sidecarRequired(rec.file) });
        rec.notes.push(`${it?.kind} ${it?.metadata?.name ?? ""}`.trim());
      }
      continue;
    }
    if (!covered && (Array.isArray(obj.containers) || Array.isArray(obj.initContainers))) {
      await checkFragment(obj, { rec, label: `${label0} PodSpec fragment`, locate: locator(doc, lc, ["spec"]), run, form });
      rec.notes.push("PodSpec fragment");
      continue;
    }
    if (covered) {
      rec.notes.push(`${label0} patch`);
      continue;
    }
    addError(rec, locate([]), label0, "cannot classify: no apiVersion/kind and not a PodSpec fragment (containers/initContainers)");
  }
  if (n === 0) addError(rec, null, null, "no YAML documents");
  if (covered) rec.notes.unshift(covered);
}

// Removes strategic-merge patch directives from a patch, in place.
function stripPatchDirectives(v) {
  if (Array.isArray(v)) {
    v.forEach(stripPatchDirectives);
  } else if (v && typeof v === "object") {
    for (const k of Object.keys(v)) {
      if (k === "$patch" || k === "$retainKeys" || k.startsWith("$setElementOrder/") ||
          k.startsWith("$deleteFromPrimitiveList/")) {
        delete v[k];
      } else {
        stripPatchDirectives(v[k]);
      }
    }
  }
}

async function checkFragment(frag, opts) {
  const spec = structuredClone(frag);
  for (const field of ["containers", "initContainers"]) {
    for (const c of Array.isArray(spec[field]) ? spec[field] : []) {
      if (c && typeof c === "object" && c.image === undefined) {
        c.image = PLACEHOLDER_IMAGE;
        c.securityContext = { ...RESTRICTED_SC, ...(c.securityContext || {}) };
      }
    }
  }
  const pod = { apiVersion: "v1", kind: "Pod", metadata: { name: "fragment" }, spec };
  const o = { ...opts, fragment: true };
  await checkObject(pod, o);
  if (!o.sawSidecar) addError(opts.rec, null, opts.label, `loopwatch: the fragment has no container named '${policy.SIDECAR_NAME}'`);
}

function kubectl() {
  return layerTool("kubectl/kubectl");
}

function kustomizeBuild(dir) {
  try {
    return { out: execFileSync(kubectl(), ["kustomize", dir], { encoding: "utf8", stdio: ["ignore", "pipe", "pipe"], timeout: 120000 }) };
  } catch (e) {
    const msg = (e.stderr || e.message || String(e)).trim().split("\n").slice(-3).join(" ");
    return { error: msg };
  }
}

// A throwaway base for rendering a Component: one Deployment with an app
// container named `app` that is restricted on its own, and no pod-level
// securityContext, so the sidecar the component adds must bring its own.
const HARNESS_NAME = "loopwatch-test-app";
function harnessDeployment() {
  return {
    apiVersion: "apps/v1",
    kind: "Deployment",
    metadata: { name: HARNESS_NAME, labels: { "app.kubernetes.io/name": HARNESS_NAME } },
    spec: {
      replicas: 1,
      selector: { matchLabels: { "app.kubernetes.io/name": HARNESS_NAME } },
      template: {
        metadata: { labels: { "app.kubernetes.io/name": HARNESS_NAME } },
        spec: {
          containers: [
            {
              name: "app",
              image: "test/app:1",
              ports: [{ name: "http", containerPort: 8000 }],
              // The app's own probes, as most apps have them: a component
              // must replace them, not merge into them (two handlers, or a
              // leftover scheme or host, would break the sidecar's probes).
              livenessProbe: { exec: { command: ["/bin/true"] }, periodSeconds: 30 },
              readinessProbe: { tcpSocket: { port: 8000 } },
              startupProbe: { httpGet: { path: "/health", port: "http", scheme: "HTTPS" } },
              securityContext: structuredClone(RESTRICTED_SC),
            },
          ],
        },
      },
    },
  };
}

async function checkKustomization(abs, run) {
  const rec = run.record(abs);
  const dir = path.dirname(abs);
  const { docs, lc, errors } = parseYamlFile(abs);
  if (errors.length) {
    for (const e of errors) addError(rec, e.where, null, e.msg);
    return;
  }
  const k = docs[0]?.toJS() || {};
  const locate = locator(docs[0], lc);
  const kind = k.kind ?? "Kustomization";
  let out;
  let what;
  if (kind === "Kustomization") {
    if (k.apiVersion !== undefined && k.apiVersion !== "kustomize.config.k8s.io/v1beta1")
      addError(rec, locate(["apiVersion"]), null, `a Kustomization's apiVersion is kustomize.config.k8s.io/v1beta1, not ${k.apiVersion}`);
    const r = kustomizeBuild(dir);
    if (r.error) return addError(rec, null, null, `kubectl kustomize ${rec.file.replace(/\/[^/]*$/, "")}: ${r.error}`);
    out = r.out;
    what = "Kustomization, rendered";
  } else if (kind === "Component") {
    if (k.apiVersion !== "kustomize.config.k8s.io/v1alpha1")
      addError(rec, locate(["apiVersion"]), null, `a Component's apiVersion is kustomize.config.k8s.io/v1alpha1, not ${k.apiVersion}`);
    const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "loopwatch-component-"));
    try {
      fs.writeFileSync(path.join(tmp, "deployment.yaml"), YAML.stringify(harnessDeployment()));
      fs.writeFileSync(
        path.join(tmp, "kustomization.yaml"),
        YAML.stringify({
          apiVersion: "kustomize.config.k8s.io/v1beta1",
          kind: "Kustomization",
          resources: ["deployment.yaml"],
          // kustomize refuses absolute paths here.
          components: [path.relative(tmp, dir)],
        }),
      );
      const r = kustomizeBuild(tmp);
      if (r.error) return addError(rec, null, null, `kubectl kustomize (the component over a test Deployment): ${r.error}`);
      out = r.out;
    } finally {
      fs.rmSync(tmp, { recursive: true, force: true });
    }
    what = "Component, rendered onto a test Deployment";
  } else {
    return addError(rec, locate(["kind"]), null, `cannot classify: kind ${kind} in a kustomization file`);
  }
  const lc2 = new YAML.LineCounter();
  const rendered = YAML.parseAllDocuments(out, { lineCounter: lc2, version: "1.1" });
  const form = expectedForm(rec.file);
  const items = [];
  let sawSidecar = false;
  for (const [i, d] of rendered.entries()) {
    const obj = d.toJS();
    if (!obj) continue;
    const label = `rendered doc ${i + 1} ${obj.kind}/${obj.metadata?.name ?? "?"}`;
    const o = { rec, label, locate: null, run, form, sidecarRequired: sidecarRequired(rec.file) };
    await checkObject(obj, o);
    sawSidecar ||= !!o.sawSidecar;
    items.push(`${obj.kind} ${obj.metadata?.name ?? ""}`.trim());
    if (kind === "Component" && obj.kind === "Deployment" && obj.metadata?.name === HARNESS_NAME) {
      const app = obj.spec?.template?.spec?.containers?.find((c) => c.name === "app");
      if (!app || app.image !== "test/app:1")
        addError(rec, null, label, "the component changed the app container's image or removed the app container");
    }
  }
  if (kind === "Component" && !sawSidecar)
    addError(rec, null, null, `loopwatch: the component added no container named '${policy.SIDECAR_NAME}' to a Deployment with an app container named 'app'`);
  rec.notes.push(`${what}: ${items.join(", ") || "nothing"}`);
}

// Files a kustomization uses as patches or generator inputs: checked through
// the rendered output, not as objects of their own.
function kustomizeInputs(abs) {
  const dir = path.dirname(abs);
  const out = new Map();
  let k;
  try {
    k = YAML.parse(fs.readFileSync(abs, "utf8"), { version: "1.1" }) || {};
  } catch {
    return out;
  }
  const add = (p, what) => {
    if (typeof p !== "string" || p.includes("\n")) return;
    out.set(path.resolve(dir, p.replace(/^[^=]*=/, "")), `${what} of ${rel(abs)}`);
  };
  for (const p of k.patches || []) add(p?.path, "patch");
  for (const p of k.patchesStrategicMerge || []) add(p, "patch");
  for (const p of k.patchesJson6902 || []) add(p?.path, "patch");
  for (const g of [...(k.configMapGenerator || []), ...(k.secretGenerator || [])]) {
    for (const f of g?.files || []) add(f, "generator input");
    for (const f of g?.envs || []) add(f, "generator input");
    if (g?.env) add(g.env, "generator input");
  }
  for (const p of k.replacements || []) add(p?.path, "replacement");
  return out;
}

// ------------------------------------------------------------------ non-Kubernetes files

function checkScrapeConfig(abs, rec) {
  const { docs, lc, errors } = parseYamlFile(abs);
  if (errors.length) return errors.forEach((e) => addError(rec, e.where, null, e.msg));
  const v = docs[0]?.toJS();
  const locate = locator(docs[0], lc);
  const jobs = Array.isArray(v) ? v : v?.scrape_configs;
  if (!Array.isArray(jobs) || jobs.length === 0)
    return addError(rec, locate([]), null, "a Prometheus scrape config needs a non-empty scrape_configs list");
  const names = new Set();
  jobs.forEach((j, i) => {
    const at = Array.isArray(v) ? [i] : ["scrape_configs", i];
    if (typeof j?.job_name !== "string" || !j.job_name) addError(rec, locate(at), null, "scrape config without job_name");
    else if (names.has(j.job_name)) addError(rec, locate(at), null, `duplicate job_name ${j.job_name}`);
    else names.add(j.job_name);
    if (j?.metrics_path !== undefined && j.metrics_path !== "/metrics")
      addError(rec, locate([...at, "metrics_path"]), null, `metrics_path is ${j.metrics_path}; the sidecar serves /metrics`);
  });
  rec.notes.push(`jobs: ${[...names].join(", ")}`);
}

function checkDashboard(abs, rec) {
  const src = fs.readFileSync(abs, "utf8");
  let d;
  try {
    d = JSON.parse(src);
  } catch (e) {
    const m = /position (\d+)/.exec(e.message);
    let where = null;
    if (m) {
      const before = src.slice(0, Number(m[1])).split("\n");
      where = `${before.length}:${before[before.length - 1].length + 1}`;
    }
    return addError(rec, where, null, `JSON: ${e.message}`);
  }
  const dash = d?.dashboard ?? d;
  if (!dash || typeof dash !== "object" || !Array.isArray(dash.panels) || typeof dash.title !== "string")
    return addError(rec, null, null, "cannot classify: not a Grafana dashboard (an object with title and panels)");
  const panels = [];
  const walk = (ps) => ps.forEach((p) => (panels.push(p), Array.isArray(p.panels) && walk(p.panels)));
  walk(dash.panels);
  rec.notes.push(`"${dash.title}", ${panels.length} panels`);
}

// ------------------------------------------------------------------ a tree

async function checkTree(root, run) {
  const st = fs.statSync(root, { throwIfNoEntry: false });
  if (!st) {
    const rec = run.record(root);
    addError(rec, null, null, "does not exist");
    return;
  }
  const files = st.isDirectory() ? walkFiles(root) : [root];
  if (files.length === 0) {
    addError(run.record(root), null, null, "no files to check");
    return;
  }
  const covered = new Map();
  for (const f of files) if (KUSTOMIZATION_NAMES.has(path.basename(f))) for (const [p, w] of kustomizeInputs(f)) covered.set(p, w);
  for (const f of files) {
    const base = path.basename(f);
    if (KUSTOMIZATION_NAMES.has(base)) {
      await checkKustomization(f, run);
      continue;
    }
    const nk = NON_KUBERNETES.find((x) => x.test(base, f));
    if (covered.has(f) && !/\.ya?ml$/.test(base)) {
      run.record(f).notes.push(covered.get(f));
      continue;
    }
    if (nk) {
      const rec = run.record(f);
      rec.notes.push(nk.what);
      if (nk.check) nk.check(f, rec);
      else rec.skipped = true;
      continue;
    }
    if (/\.ya?ml$/.test(base) || base.endsWith(".json")) {
      await checkYamlFile(f, run, covered.get(f) ?? null);
      continue;
    }
    const rec = run.record(f);
    addError(rec, null, null, "cannot classify: not YAML, and not on the list of non-Kubernetes files (tests/deploy/validate.mjs, NON_KUBERNETES)");
  }
  crossChecks(run);
}

// The PodMonitor must find the sidecars the manifests define.
function crossChecks(run) {
  const pods = run.loopwatchPods;
  if (pods.length === 0) return;
  const names = new Set(pods.flatMap((p) => [...p.portNames]));
  const labelled = pods.filter((p) => p.labels);
  for (const { obj, rec, label, locate } of run.podMonitors) {
    const eps = obj.spec?.podMetricsEndpoints || [];
    eps.forEach((ep, i) => {
      const at = ["spec", "podMetricsEndpoints", i];
      if (ep.port !== undefined && !names.has(ep.port))
        addError(rec, locate?.([...at, "port"]), label, `monitoring: port '${ep.port}' is not a port name of any loopwatch sidecar (${[...names].join(", ") || "none named"})`);
      if (ep.path !== undefined && ep.path !== "/metrics")
        addError(rec, locate?.([...at, "path"]), label, `monitoring: path ${ep.path}; the sidecar serves /metrics`);
    });
    const ml = obj.spec?.selector?.matchLabels || {};
    if (labelled.length && !labelled.some((p) => Object.entries(ml).every(([k, v]) => p.labels[k] === v)))
      addError(rec, locate?.(["spec", "selector"]), label, `monitoring: the selector ${JSON.stringify(ml)} matches none of the pod templates with a loopwatch sidecar`);
  }
}

function printRun(run, { quiet = false } = {}) {
  for (const r of run.records) {
    const tag = r.errors.length ? "FAIL" : r.skipped ? "skip" : "ok  ";
    if (!quiet) console.log(`${tag} ${r.file}${r.notes.length ? ` (${r.notes.join(", ")})` : ""}`);
    for (const e of r.errors) console.log(`     ${e}`);
  }
}

// ------------------------------------------------------------------ fixtures

async function expectFail(dir) {
  const entries = fs.readdirSync(dir).filter((n) => n !== "README.md").sort();
  let passed = 0;
  let failed = 0;
  for (const name of entries) {
    const p = path.join(dir, name);
    const files = fs.statSync(p).isDirectory() ? walkFiles(p) : [p];
    const expectErrors = [];
    let expectPass = false;
    for (const f of files) {
      for (const line of fs.readFileSync(f, "utf8").split("\n")) {
        const m = /#\s*expect-error:\s*(.+?)\s*$/.exec(line);
        if (m) expectErrors.push(m[1]);
        if (/#\s*expect:\s*pass\s*$/.test(line)) expectPass = true;
      }
    }
    const run = new Run();
    await checkTree(p, run);
    const got = run.records.flatMap((r) => r.errors);
    const problems = [];
    if (!expectPass && expectErrors.length === 0) problems.push("the fixture declares neither `# expect-error: TEXT` nor `# expect: pass`");
    if (expectPass && got.length) problems.push("expected to pass, but was rejected");
    if (!expectPass && expectErrors.length && got.length === 0) problems.push("expected to be rejected, but passed");
    for (const want of expectErrors) if (got.length && !got.some((g) => g.includes(want))) problems.push(`no error contains "${want}"`);
    if (problems.length) {
      failed++;
      console.log(`FAIL ${rel(p)}: ${problems.join("; ")}`);
      for (const g of got) console.log(`     got: ${g}`);
    } else {
      passed++;
      console.log(`ok   ${rel(p)}: ${expectPass ? "accepted" : `rejected (${expectErrors.map((e) => JSON.stringify(e)).join(", ")})`}`);
    }
  }
  console.log(`fixtures: ${passed} passed, ${failed} failed`);
  return failed === 0 && passed > 0;
}

// ------------------------------------------------------------------ main

async function main(argv) {
  await loadDeps();
  if (argv[0] === "--expect-fail") {
    if (!argv[1]) {
      console.error("usage: validate.mjs --expect-fail DIR");
      return 2;
    }
    return (await expectFail(path.resolve(argv[1]))) ? 0 : 1;
  }
  if (argv.some((a) => a.startsWith("-"))) {
    console.error("usage: validate.mjs [PATH ...] | --expect-fail DIR");
    return 2;
  }
  const roots = argv.length ? argv.map((a) => path.resolve(a)) : [path.join(REPO, "deploy")];
  const run = new Run();
  for (const r of roots) await checkTree(r, run);
  printRun(run);
  const files = run.records.length;
  const bad = run.records.filter((r) => r.errors.length).length;
  console.log(`deploy manifests: ${files} files, ${run.objects} objects validated, ${bad} files with ${run.errorCount} errors`);
  return run.errorCount ? 1 : 0;
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (e) => {
    console.error(e?.stack || String(e));
    process.exit(2);
  },
);
