// Policy checks on a pod spec: the "restricted" Pod Security Standard and
// loopwatch's own invariants. Each check returns a list of {path, msg} with
// `path` relative to the pod spec (an array of keys and indices), so the
// caller can point at the line of the manifest.

export const PROBE_PORT = 9321;
export const SEGMENT_DIR = "/run/loopwatch";
export const SEGMENT_PATH = "/run/loopwatch/segment";
export const SIDECAR_NAME = "loopwatch";
export const PORT_NAME = "loopwatch";

// https://kubernetes.io/docs/concepts/security/pod-security-standards/ ("Restricted": Volume Types)
const RESTRICTED_VOLUME_TYPES = new Set([
  "configMap",
  "csi",
  "downwardAPI",
  "emptyDir",
  "ephemeral",
  "persistentVolumeClaim",
  "projected",
  "secret",
]);

// "Baseline": SELinux
const SELINUX_TYPES = new Set(["", "container_t", "container_init_t", "container_kvm_t", "container_engine_t"]);

// "Baseline": Sysctls
const SAFE_SYSCTLS = new Set([
  "kernel.shm_rmid_forced",
  "net.ipv4.ip_local_port_range",
  "net.ipv4.ip_unprivileged_port_start",
  "net.ipv4.tcp_syncookies",
  "net.ipv4.ping_group_range",
  "net.ipv4.ip_local_reserved_ports",
  "net.ipv4.tcp_keepalive_time",
  "net.ipv4.tcp_fin_timeout",
  "net.ipv4.tcp_keepalive_intvl",
  "net.ipv4.tcp_keepalive_probes",
]);

// Every container of the pod spec with its kind and path.
export function allContainers(ps) {
  const out = [];
  for (const field of ["initContainers", "containers", "ephemeralContainers"]) {
    const list = ps[field];
    if (!Array.isArray(list)) continue;
    list.forEach((c, i) => {
      if (c && typeof c === "object") out.push({ c, field, path: [field, i], label: `${field}[${i}] '${c.name}'` });
    });
  }
  return out;
}

// podMeta: the pod (template) metadata, for the AppArmor annotations.
export function checkRestricted(ps, podMeta) {
  const errs = [];
  const err = (path, msg) => errs.push({ path, msg: `pod security "restricted": ${msg}` });
  if (!ps || typeof ps !== "object") return errs;
  for (const f of ["hostNetwork", "hostPID", "hostIPC"]) {
    if (ps[f] === true) err([f], `${f}: true is not allowed`);
  }
  const vols = Array.isArray(ps.volumes) ? ps.volumes : [];
  vols.forEach((v, i) => {
    const kinds = Object.keys(v || {}).filter((k) => k !== "name");
    for (const k of kinds) {
      if (!RESTRICTED_VOLUME_TYPES.has(k))
        err(["volumes", i, k], `volume '${v.name}' is of type ${k}; allowed: ${[...RESTRICTED_VOLUME_TYPES].join(", ")}`);
    }
  });
  const psc = ps.securityContext || {};
  if (psc.runAsUser === 0) err(["securityContext", "runAsUser"], "the pod's runAsUser must not be 0");
  if (psc.runAsNonRoot === false) err(["securityContext", "runAsNonRoot"], "the pod's runAsNonRoot must not be false");
  const podSeccomp = psc.seccompProfile?.type;
  if (podSeccomp !== undefined && podSeccomp !== "RuntimeDefault" && podSeccomp !== "Localhost")
    err(["securityContext", "seccompProfile", "type"], `the pod's seccompProfile.type is ${podSeccomp}; use RuntimeDefault or Localhost`);
  for (const [i, s] of (psc.sysctls || []).entries()) {
    if (!SAFE_SYSCTLS.has(s?.name)) err(["securityContext", "sysctls", i], `sysctl ${s?.name} is not in the safe set`);
  }
  if (psc.windowsOptions?.hostProcess === true) err(["securityContext", "windowsOptions"], "hostProcess is not allowed");
  const checkAppArmorSELinux = (sc, at, who) => {
    const aa = sc.appArmorProfile?.type;
    if (aa !== undefined && aa !== "RuntimeDefault" && aa !== "Localhost")
      err([...at, "appArmorProfile", "type"], `${who}appArmorProfile.type ${aa} is not allowed`);
    const se = sc.seLinuxOptions;
    if (se) {
      if (se.type !== undefined && !SELINUX_TYPES.has(se.type)) err([...at, "seLinuxOptions", "type"], `${who}seLinuxOptions.type ${se.type} is not allowed`);
      if (se.user !== undefined || se.role !== undefined) err([...at, "seLinuxOptions"], `${who}seLinuxOptions.user and .role must not be set`);
    }
  };
  checkAppArmorSELinux(psc, ["securityContext"], "the pod's ");

  for (const { c, path, label } of allContainers(ps)) {
    const sc = c.securityContext || {};
    const at = (...p) => [...path, "securityContext", ...p];
    const where = sc === c.securityContext ? at() : path;
    const nonRoot = sc.runAsNonRoot ?? psc.runAsNonRoot;
    if (nonRoot !== true)
      err(sc.runAsNonRoot === false ? at("runAsNonRoot") : where,
        `${label}: runAsNonRoot must be true (in the container's or the pod's securityContext)`);
    const uid = sc.runAsUser ?? psc.runAsUser;
    if (uid !== undefined && (typeof uid !== "number" || uid === 0))
      err(sc.runAsUser !== undefined ? at("runAsUser") : ["securityContext", "runAsUser"], `${label}: runAsUser must be a non-zero number, is ${uid}`);
    if (sc.allowPrivilegeEscalation !== false)
      err(sc.allowPrivilegeEscalation !== undefined ? at("allowPrivilegeEscalation") : where,
        `${label}: allowPrivilegeEscalation must be false`);
    const drop = sc.capabilities?.drop;
    if (!Array.isArray(drop) || !drop.includes("ALL"))
      err(sc.capabilities ? at("capabilities") : where, `${label}: capabilities.drop must contain ALL`);
    const add = sc.capabilities?.add;
    if (Array.isArray(add)) {
      for (const cap of add) {
        if (cap !== "NET_BIND_SERVICE")
          err(at("capabilities", "add"), `${label}: capabilities.add may only contain NET_BIND_SERVICE, has ${cap}`);
      }
    }
    const seccomp = sc.seccompProfile?.type ?? podSeccomp;
    if (seccomp !== "RuntimeDefault" && seccomp !== "Localhost")
      err(sc.seccompProfile ? at("seccompProfile") : where,
        `${label}: seccompProfile.type must be RuntimeDefault or Localhost (in the container's or the pod's securityContext), is ${seccomp ?? "unset"}`);
    if (sc.readOnlyRootFilesystem !== true)
      err(sc.readOnlyRootFilesystem !== undefined ? at("readOnlyRootFilesystem") : where, `${label}: readOnlyRootFilesystem must be true (our policy; the "restricted" standard does not ask it)`);
    if (sc.privileged === true) err(at("privileged"), `${label}: privileged is not allowed`);
    if (sc.procMount !== undefined && sc.procMount !== "Default") err(at("procMount"), `${label}: procMount must be Default`);
    if (sc.windowsOptions?.hostProcess === true) err(at("windowsOptions"), `${label}: hostProcess is not allowed`);
    checkAppArmorSELinux(sc, at(), `${label}: `);
    (c.ports || []).forEach((p, i) => {
      if (p && p.hostPort) err([...path, "ports", i, "hostPort"], `${label}: hostPort is not allowed`);
    });
  }
  for (const [k, v] of Object.entries(podMeta?.annotations || {})) {
    if (k.startsWith("container.apparmor.security.beta.kubernetes.io/") && v !== "runtime/default" && !String(v).startsWith("localhost/"))
      errs.push({ path: null, msg: `pod security "restricted": AppArmor annotation ${k}: ${v} is not allowed`, meta: true });
  }
  return errs;
}

// Rules the API server enforces that the OpenAPI schema does not express.
export function checkApiRules(ps, claimNames = []) {
  const errs = [];
  const err = (path, msg) => errs.push({ path, msg: `API validation: ${msg}` });
  if (!ps || typeof ps !== "object") return errs;
  const vols = Array.isArray(ps.volumes) ? ps.volumes : [];
  const volNames = new Set(claimNames);
  vols.forEach((v, i) => {
    if (volNames.has(v?.name)) err(["volumes", i, "name"], `duplicate volume name '${v?.name}'`);
    volNames.add(v?.name);
    const sources = Object.keys(v || {}).filter((k) => k !== "name");
    if (sources.length !== 1) err(["volumes", i], `volume '${v?.name}' must have exactly one source, has ${sources.length}`);
  });
  const names = new Set();
  for (const { c, field, path, label } of allContainers(ps)) {
    if (names.has(c.name)) err([...path, "name"], `duplicate container name '${c.name}'`);
    names.add(c.name);
    (c.volumeMounts || []).forEach((m, i) => {
      if (!volNames.has(m?.name)) err([...path, "volumeMounts", i, "name"], `${label} mounts volume '${m?.name}', which the pod does not define`);
    });
    if (c.restartPolicy !== undefined) {
      if (field !== "initContainers") err([...path, "restartPolicy"], `${label}: restartPolicy may only be set on init containers`);
      else if (c.restartPolicy !== "Always") err([...path, "restartPolicy"], `${label}: restartPolicy must be Always, is ${c.restartPolicy}`);
    }
    for (const f of ["livenessProbe", "readinessProbe", "startupProbe"]) {
      const p = c[f];
      if (!p) continue;
      const handlers = ["httpGet", "tcpSocket", "exec", "grpc"].filter((h) => p[h] !== undefined);
      if (handlers.length !== 1) err([...path, f], `${label}: ${f} must have exactly one handler, has ${handlers.length}`);
      if (f !== "readinessProbe" && p.successThreshold !== undefined && p.successThreshold !== 1)
        err([...path, f, "successThreshold"], `${label}: ${f}.successThreshold must be 1`);
    }
    if (field === "initContainers" && c.restartPolicy !== "Always") {
      for (const f of ["livenessProbe", "readinessProbe", "startupProbe"])
        if (c[f]) err([...path, f], `${label}: an init container without restartPolicy: Always may not have a ${f}`);
    }
    const portNames = new Set();
    (c.ports || []).forEach((p, i) => {
      if (p?.name === undefined) return;
      if (portNames.has(p.name)) err([...path, "ports", i, "name"], `${label}: duplicate port name '${p.name}'`);
      portNames.add(p.name);
      if (!/^[a-z0-9]([a-z0-9-]{0,13}[a-z0-9])?$/.test(p.name) || !/[a-z]/.test(p.name) || p.name.includes("--"))
        err([...path, "ports", i, "name"], `${label}: port name '${p.name}' is not a valid IANA service name (at most 15 lower-case letters, digits, '-')`);
    });
  }
  return errs;
}

// A probe's httpGet port as the kubelet resolves it: a number as it is, a
// name against the ports of the container that owns the probe.
function resolvePort(port, container) {
  if (typeof port === "number") return { port };
  if (typeof port === "string" && /^[0-9]+$/.test(port)) return { port: Number(port) };
  const p = (container.ports || []).find((x) => x && x.name === port);
  if (!p) return { error: `named port '${port}' is not declared by container '${container.name}' (the kubelet resolves a probe's named port against the probed container's own ports)` };
  return { port: p.containerPort };
}

// A watched container's probe path: the sidecar's verdict for the whole
// pod (/livez), or, in a pod with several watched containers, for the
// container's own loops (/livez?container=<its name>).
function pathAllowed(got, wantPath, container) {
  return got === wantPath || (wantPath !== "/healthz" && got === `${wantPath}?container=${container.name}`);
}

function checkHttpProbe(errs, container, path, field, wantPath, who) {
  const probe = container[field];
  const at = [...path, field];
  if (!probe) {
    errs.push({ path, msg: `${who}: no ${field}; it must be httpGet ${wantPath} on port ${PROBE_PORT} (the sidecar)` });
    return;
  }
  const hg = probe.httpGet;
  if (!hg) {
    errs.push({ path: at, msg: `${who}: ${field} must be httpGet ${wantPath} on port ${PROBE_PORT} (the sidecar), is ${Object.keys(probe).filter((k) => ["exec", "tcpSocket", "grpc"].includes(k)).join(", ") || "no handler"}` });
    return;
  }
  const r = resolvePort(hg.port, container);
  if (r.error) errs.push({ path: [...at, "httpGet", "port"], msg: `${who}: ${field}: ${r.error}` });
  else if (r.port !== PROBE_PORT)
    errs.push({ path: [...at, "httpGet", "port"], msg: `${who}: ${field} goes to port ${hg.port}${r.port !== hg.port ? ` (${r.port})` : ""}, not to the sidecar's port ${PROBE_PORT}` });
  if (!pathAllowed(hg.path, wantPath, container))
    errs.push({ path: [...at, "httpGet", "path"], msg: `${who}: ${field} path is ${hg.path ?? "unset"}, must be ${wantPath}` });
  if (hg.host !== undefined) errs.push({ path: [...at, "httpGet", "host"], msg: `${who}: ${field} must not set host (the sidecar shares the pod's network)` });
  if (hg.scheme !== undefined && hg.scheme !== "HTTP") errs.push({ path: [...at, "httpGet", "scheme"], msg: `${who}: ${field} scheme must be HTTP` });
}

function envValue(c, name) {
  const e = (c.env || []).find((x) => x && x.name === name);
  return e ? { found: true, value: e.value, from: e.valueFrom } : { found: false };
}

// lib/FORMAT.md: a 256-byte header, then slot_count slots of 8192 bytes;
// the app creates it with LOOPWATCH_SLOTS slots (default 64), the sidecar
// with create_slots.
const SEGMENT_HEADER_BYTES = 256;
const SLOT_BYTES = 8192;
const DEFAULT_SLOTS = 64;

// A resource.Quantity in bytes, or null when it is not one.
export function quantityBytes(q) {
  if (typeof q === "number") return q;
  const m = /^([0-9]+(?:\.[0-9]+)?)(Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E)?$/.exec(String(q ?? ""));
  if (!m) return null;
  const mult = { Ki: 2 ** 10, Mi: 2 ** 20, Gi: 2 ** 30, Ti: 2 ** 40, Pi: 2 ** 50, Ei: 2 ** 60, k: 1e3, M: 1e6, G: 1e9, T: 1e12, P: 1e15, E: 1e18 };
  return Number(m[1]) * (m[2] ? mult[m[2]] : 1);
}

// Value of a `--flag X` or `--flag=X` in a container's args/command.
function flagValue(c, flag) {
  const argv = [...(c.command || []), ...(c.args || [])];
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === flag) return argv[i + 1];
    if (typeof argv[i] === "string" && argv[i].startsWith(flag + "=")) return argv[i].slice(flag.length + 1);
  }
  return undefined;
}

// The probes a watched container must have pointed at the sidecar. By hand:
// all three. Injected (the annotation loopwatch.io/status): the ones the
// injector replaced; config.loopwatch.io/probes and exec or gRPC probes,
// which it leaves in place, decide which.
function probesToCheck(podMeta, name) {
  const all = ["livenessProbe", "readinessProbe", "startupProbe"];
  const raw = podMeta?.annotations?.["loopwatch.io/status"];
  if (typeof raw !== "string") return all;
  try {
    const probes = JSON.parse(raw)?.containers?.[name]?.probes;
    return probes && typeof probes === "object" ? all.filter((f) => f in probes) : all;
  } catch {
    return all;
  }
}

// form: "native" | "plain" | "any"
export function checkLoopwatch(ps, form, podMeta) {
  const errs = [];
  const err = (path, msg) => errs.push({ path, msg });
  if (!ps || typeof ps !== "object") return { errs, sidecar: null };
  const inits = Array.isArray(ps.initContainers) ? ps.initContainers : [];
  const mains = Array.isArray(ps.containers) ? ps.containers : [];
  const sideInit = inits.map((c, i) => [c, i]).filter(([c]) => c?.name === SIDECAR_NAME);
  const sideMain = mains.map((c, i) => [c, i]).filter(([c]) => c?.name === SIDECAR_NAME);
  const usesSegment = (c) =>
    envValue(c, "LOOPWATCH_SEGMENT").found || (c.volumeMounts || []).some((m) => m?.mountPath === SEGMENT_DIR);
  if (sideInit.length + sideMain.length === 0) {
    mains.forEach((c, i) => {
      if (c && usesSegment(c))
        err(["containers", i], `container '${c.name}' uses the loopwatch segment, but the pod has no container named '${SIDECAR_NAME}'`);
    });
    return { errs, sidecar: null };
  }
  if (sideInit.length + sideMain.length > 1) {
    err([], `the pod has ${sideInit.length + sideMain.length} containers named '${SIDECAR_NAME}'`);
    return { errs, sidecar: null };
  }
  const native = sideInit.length === 1;
  const [side, idx] = native ? sideInit[0] : sideMain[0];
  const sp = [native ? "initContainers" : "containers", idx];
  const who = `sidecar '${SIDECAR_NAME}'`;
  if (native && side.restartPolicy !== "Always")
    err(sp, `${who} is in initContainers without restartPolicy: Always; as a plain init container it would never finish and the app would never start`);
  if (form === "native" && !native)
    err(sp, `${who} must be a native sidecar here (initContainers with restartPolicy: Always), it is in containers`);
  if (form === "plain" && native)
    err(sp, `${who} must be a plain container here (containers), it is in initContainers`);

  // The segment volume.
  const mounts = side.volumeMounts || [];
  const mi = mounts.findIndex((m) => m?.mountPath === SEGMENT_DIR);
  let volName = null;
  if (mi < 0) {
    err(sp, `${who} does not mount the segment volume at ${SEGMENT_DIR}`);
  } else {
    volName = mounts[mi].name;
    if (mounts[mi].subPath !== undefined || mounts[mi].subPathExpr !== undefined)
      err([...sp, "volumeMounts", mi], `${who}: the segment mount must not use subPath`);
    const vols = Array.isArray(ps.volumes) ? ps.volumes : [];
    const vi = vols.findIndex((v) => v?.name === volName);
    if (vi < 0) err([...sp, "volumeMounts", mi], `${who} mounts volume '${volName}' at ${SEGMENT_DIR}, but the pod has no volume of that name`);
    else if (!vols[vi].emptyDir || vols[vi].emptyDir.medium !== "Memory")
      err(["volumes", vi], `the segment volume '${volName}' must be an emptyDir with medium: Memory`);
    else if (vols[vi].emptyDir.sizeLimit !== undefined) {
      // A memory emptyDir is a tmpfs of sizeLimit bytes: a segment larger
      // than that cannot be created, or faults (SIGBUS) when mapped.
      const limit = quantityBytes(vols[vi].emptyDir.sizeLimit);
      const counts = [];
      for (const c of mains) {
        if (!c || c.name === SIDECAR_NAME || !(c.volumeMounts || []).some((m) => m?.name === volName)) continue;
        const e = envValue(c, "LOOPWATCH_SLOTS");
        counts.push({ n: e.found ? Number(e.value) : DEFAULT_SLOTS, who: `app container '${c.name}'${e.found ? " (LOOPWATCH_SLOTS)" : " (default)"}` });
      }
      const cs = flagValue(side, "--create-slots") ?? envValue(side, "LOOPWATCH_CREATE_SLOTS").value;
      if (cs !== undefined) counts.push({ n: Number(cs), who: "the sidecar (create_slots)" });
      const big = counts.filter((x) => Number.isFinite(x.n)).sort((a, b) => b.n - a.n)[0];
      if (limit === null) err(["volumes", vi, "emptyDir", "sizeLimit"], `the segment volume's sizeLimit ${vols[vi].emptyDir.sizeLimit} is not a quantity`);
      else if (big && SEGMENT_HEADER_BYTES + big.n * SLOT_BYTES > limit)
        err(["volumes", vi, "emptyDir", "sizeLimit"],
          `the segment volume's sizeLimit ${vols[vi].emptyDir.sizeLimit} (${limit} bytes) is smaller than the segment of ${big.n} slots that ${big.who} creates (${SEGMENT_HEADER_BYTES + big.n * SLOT_BYTES} bytes)`);
    }
  }
  const segEnv = envValue(side, "LOOPWATCH_SEGMENT");
  if (segEnv.found && segEnv.value !== SEGMENT_PATH)
    err([...sp, "env"], `${who}: LOOPWATCH_SEGMENT is ${segEnv.value ?? "not a plain value"}, must be ${SEGMENT_PATH}`);
  const segFlag = flagValue(side, "--segment");
  if (segFlag !== undefined && segFlag !== SEGMENT_PATH) err([...sp, "args"], `${who}: --segment is ${segFlag}, must be ${SEGMENT_PATH}`);
  for (const listen of [flagValue(side, "--listen"), envValue(side, "LOOPWATCH_LISTEN").value]) {
    if (listen !== undefined && !String(listen).endsWith(`:${PROBE_PORT}`))
      err(sp, `${who}: listen address ${listen} is not on port ${PROBE_PORT}, where the probes and the PodMonitor go`);
  }

  // The kubelet's address gets a lane of its own on the probe port
  // (docs/kubernetes.md, "Probes under a flood"): the node's address, from
  // the downward API.
  const peers = envValue(side, "LOOPWATCH_PROBE_PEERS");
  if (flagValue(side, "--probe-peers") === undefined &&
      !(peers.found && peers.from?.fieldRef?.fieldPath === "status.hostIP"))
    err(sp, `${who} does not set LOOPWATCH_PROBE_PEERS from the downward API (valueFrom.fieldRef.fieldPath: status.hostIP), so any pod's connection flood can delay the kubelet's probes`);

  // The sidecar's port, own probes and resources.
  const ports = side.ports || [];
  if (!ports.some((p) => p?.containerPort === PROBE_PORT))
    err(sp, `${who} does not declare containerPort ${PROBE_PORT}`);
  if (!side.livenessProbe) err(sp, `${who} has no livenessProbe (httpGet /healthz)`);
  for (const f of ["livenessProbe", "readinessProbe", "startupProbe"]) {
    if (side[f]) checkHttpProbe(errs, side, sp, f, "/healthz", who);
  }
  const res = side.resources || {};
  if (!res.requests || Object.keys(res.requests).length === 0) err(sp, `${who} has no resources.requests`);
  if (!res.limits || Object.keys(res.limits).length === 0) err(sp, `${who} has no resources.limits`);
  else if (res.limits.memory === undefined) err([...sp, "resources", "limits"], `${who} has no memory limit`);

  // The app containers.
  const apps = mains.map((c, i) => [c, i]).filter(([c]) => c && c.name !== SIDECAR_NAME);
  let sharing = 0;
  for (const [c, i] of apps) {
    const ap = ["containers", i];
    const aw = `app container '${c.name}'`;
    const m = (c.volumeMounts || []).findIndex((x) => x?.mountPath === SEGMENT_DIR);
    if (m < 0) {
      if (envValue(c, "LOOPWATCH_SEGMENT").found)
        err(ap, `${aw} sets LOOPWATCH_SEGMENT but does not mount the segment volume at ${SEGMENT_DIR}`);
      continue;
    }
    if (volName !== null && c.volumeMounts[m].name !== volName) {
      err([...ap, "volumeMounts", m], `${aw} mounts volume '${c.volumeMounts[m].name}' at ${SEGMENT_DIR}, the sidecar mounts '${volName}'`);
      continue;
    }
    if (c.volumeMounts[m].subPath !== undefined) err([...ap, "volumeMounts", m], `${aw}: the segment mount must not use subPath`);
    if (c.volumeMounts[m].readOnly === true) err([...ap, "volumeMounts", m], `${aw}: the segment mount must be writable (the app writes the heartbeats)`);
    sharing++;
    const e = envValue(c, "LOOPWATCH_SEGMENT");
    if (!e.found) err(ap, `${aw} has no env LOOPWATCH_SEGMENT=${SEGMENT_PATH}`);
    else if (e.value !== SEGMENT_PATH) err([...ap, "env"], `${aw}: LOOPWATCH_SEGMENT is ${e.value ?? "not a plain value"}, must be ${SEGMENT_PATH}`);
    const wanted = probesToCheck(podMeta, c.name);
    for (const [field, p] of [["livenessProbe", "/livez"], ["readinessProbe", "/readyz"], ["startupProbe", "/startupz"]])
      if (wanted.includes(field)) checkHttpProbe(errs, c, ap, field, p, aw);
  }
  if (volName !== null && sharing === 0)
    err(["containers"], `no app container mounts the segment volume '${volName}' at ${SEGMENT_DIR}`);
  return { errs, sidecar: side };
}
