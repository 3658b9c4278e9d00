#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Renders the example Deployment (deploy/examples/fastapi) into the pod that
`podman kube play` runs in the real-pod test.

The pod is the Deployment's pod template, changed only where podman 4.3 or
the test needs it:

- the native sidecar (an initContainers entry with restartPolicy: Always)
  becomes a plain container, because podman runs initContainers to
  completion before the app starts (the plain-container variant of the
  same pod; the native form is checked by schema validation);
- containers publish their ports on 127.0.0.1 host ports, so the test can
  reach the probes and the app;
- env overrides given with --env NAME=VALUE are set in the app container;
- an env value from the downward API's status.hostIP (the sidecar's
  LOOPWATCH_PROBE_PEERS), which podman 4.3 refuses to play, becomes a
  literal address (HOST_IP_STANDIN: podman has no node);
- a pod with init containers left (the Python payload's) gets
  restartPolicy: OnFailure, since podman 4.3 restarts completed init
  containers under Always;
- the pod's volumes and the ConfigMap get the pod's name as a prefix,
  since kube play makes podman volumes of them, so the test can remove
  exactly its own.

The ConfigMap the pod mounts is emitted in the same file, as kube play
expects.

    render_pod.py --name NAME --sidecar-port N --app-port N [--env K=V] > pod.yaml
    render_pod.py --deployment FILE [--app-command CMD] ...   another Deployment
                                (an injected one), its ConfigMaps from FILE
    render_pod.py --images      the sidecar's image, then the app's, a line each
"""

import argparse
import copy
import pathlib
import sys

import yaml

ROOT = pathlib.Path(__file__).resolve().parents[2]
# What status.hostIP becomes in the pod podman plays.
HOST_IP_STANDIN = "127.0.0.1"
EXAMPLE = ROOT / "deploy" / "examples" / "fastapi"


def load(name):
    with open(EXAMPLE / name, encoding="utf-8") as f:
        return [d for d in yaml.safe_load_all(f) if d]


def render(name, sidecar_port, app_port, env, deployment_file=None, app_command=None):
    if deployment_file:
        with open(deployment_file, encoding="utf-8") as f:
            docs = [d for d in yaml.safe_load_all(f) if d]
    else:
        docs = load("deployment.yaml") + load("configmap.yaml")
    (deployment,) = [d for d in docs if d["kind"] == "Deployment"]
    configmaps = [d for d in docs if d["kind"] == "ConfigMap"]
    template = copy.deepcopy(deployment["spec"]["template"])
    spec = template["spec"]

    sidecars = [c for c in spec.get("initContainers", []) if c.get("restartPolicy") == "Always"]
    if not sidecars:
        sys.exit("render_pod: the Deployment has no native sidecar (initContainers with restartPolicy: Always)")
    spec["initContainers"] = [c for c in spec["initContainers"] if c not in sidecars]
    if not spec["initContainers"]:
        del spec["initContainers"]
    elif spec.get("restartPolicy", "Always") == "Always":
        # podman 4.3 applies restartPolicy: Always to init containers too: it
        # starts a completed one again (the kubelet never does), then fails
        # to remove it. OnFailure plays them once, as the kubelet does.
        spec["restartPolicy"] = "OnFailure"
    for c in sidecars:
        del c["restartPolicy"]
    spec["containers"] = spec["containers"] + sidecars

    renamed = {cm["metadata"]["name"]: "%s-%s" % (name, cm["metadata"]["name"]) for cm in configmaps}
    for cm in configmaps:
        cm["metadata"]["name"] = renamed[cm["metadata"]["name"]]
    volumes = {v["name"]: "%s-%s" % (name, v["name"]) for v in spec.get("volumes", [])}
    for v in spec.get("volumes", []):
        v["name"] = volumes[v["name"]]
        if "configMap" in v:
            v["configMap"]["name"] = renamed[v["configMap"]["name"]]
    for c in spec["containers"] + spec.get("initContainers", []):
        for m in c.get("volumeMounts", []):
            m["name"] = volumes[m["name"]]

    host_ports = {9321: sidecar_port, 8000: app_port}
    for c in spec["containers"]:
        for p in c.get("ports", []):
            if p["containerPort"] in host_ports:
                p["hostPort"] = host_ports[p["containerPort"]]
                p["hostIP"] = "127.0.0.1"
    for c in spec["containers"]:
        for e in c.get("env", []):
            if (e.get("valueFrom") or {}).get("fieldRef", {}).get("fieldPath") == "status.hostIP":
                del e["valueFrom"]
                e["value"] = HOST_IP_STANDIN
    (app,) = [c for c in spec["containers"] if c["name"] == "app"]
    if app_command:
        app["command"] = app_command.split()
    for item in env:
        key, _, value = item.partition("=")
        app["env"] = [e for e in app.get("env", []) if e["name"] != key]
        app["env"].append({"name": key, "value": value})

    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": template["metadata"]["labels"]},
        "spec": spec,
    }
    return configmaps + [pod]


def images():
    (deployment,) = [d for d in load("deployment.yaml") if d["kind"] == "Deployment"]
    spec = deployment["spec"]["template"]["spec"]
    containers = spec.get("initContainers", []) + spec["containers"]
    by_name = {c["name"]: c["image"] for c in containers}
    return [by_name["loopwatch"], by_name["app"]]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", action="store_true", help="print the two images and exit")
    ap.add_argument("--name", help="pod name")
    ap.add_argument("--sidecar-port", type=int, help="host port for the sidecar's 9321")
    ap.add_argument("--app-port", type=int, help="host port for the app's 8000")
    ap.add_argument("--env", action="append", default=[], metavar="NAME=VALUE",
                    help="set an environment variable in the app container")
    ap.add_argument("--deployment", help="render this Deployment file instead of the example's")
    ap.add_argument("--app-command", help="the app container's command, space-separated")
    args = ap.parse_args()
    if args.images:
        print("\n".join(images()))
        return
    if not (args.name and args.sidecar_port and args.app_port):
        ap.error("--name, --sidecar-port and --app-port are required")
    yaml.safe_dump_all(render(args.name, args.sidecar_port, args.app_port, args.env,
                              args.deployment, args.app_command),
                       sys.stdout, sort_keys=False)


if __name__ == "__main__":
    main()
