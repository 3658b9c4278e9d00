#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""The Helm chart's install, as far as a machine without a Kubernetes API
server allows (tests/pod/run_pod_test.sh, "helm chart" steps). From the
chart as `helm template` renders it:

    play_chart.py injector --rendered R --name NAME --port P > pod.yaml
        the injector's Deployment as the pod podman plays: its pod template,
        the rendered Secret (its certificate) and ConfigMap (its settings)
        mounted where the Deployment mounts them, its HTTPS port published
        on 127.0.0.1:P;
    play_chart.py ca --rendered R > ca.crt
        the CA the API server would trust: the webhook entries' caBundle
        (the same in both entries, or the test fails);
    play_chart.py service --rendered R
        the injector Service's DNS name (NAME.NAMESPACE.svc), which the API
        server connects to and the certificate must name;
    play_chart.py review --deployment D --namespace NS > review.json
        the AdmissionReview the API server sends for a pod of Deployment D,
        the pod labelled loopwatch.io/inject: enabled (what the chart's pod
        entry selects);
    play_chart.py apply --deployment D --review review.json --response out.json > d.yaml
        the Deployment whose pod template is the reviewed pod with the
        response's JSONPatch applied by python3-jsonpatch (an RFC 6902
        implementation independent of loopwatch's), for render_pod.py;
    play_chart.py test-pod --rendered R --name NAME --port P --hosts-file F > pod.yaml
        the chart's `helm test` Pod, changed only so that it reaches the
        injector podman published: the host's network, the URL's port P,
        and the Service's name resolved to 127.0.0.1 by the hosts file F
        mounted at /etc/hosts (podman 4.3's kube play ignores hostAliases
        in the host's network).

What podman 4.3 needs changed is said where it is changed.
"""

import argparse
import base64
import copy
import json
import sys
import uuid

import jsonpatch
import yaml


def load_all(path):
    with open(path, encoding="utf-8") as f:
        return [d for d in yaml.safe_load_all(f) if d]


def one(docs, kind, pred=lambda d: True):
    found = [d for d in docs if d.get("kind") == kind and pred(d)]
    if len(found) != 1:
        sys.exit("play_chart: expected one %s, found %d" % (kind, len(found)))
    return found[0]


def service_dns(docs):
    svc = one(docs, "Service")
    return "%s.%s.svc" % (svc["metadata"]["name"], svc["metadata"]["namespace"])


def injector_pod(docs, name, port):
    dep = one(docs, "Deployment")
    spec = copy.deepcopy(dep["spec"]["template"]["spec"])
    out = []
    for v in spec["volumes"]:
        if "secret" in v:
            secret = one(docs, "Secret", lambda d: d["metadata"]["name"] == v["secret"]["secretName"])
            # podman 4.3's kube play mounts a ConfigMap of the same file as
            # a volume, not a Secret: the Secret's files become a ConfigMap's
            # (same names, same bytes).
            cm_name = "%s-%s" % (name, secret["metadata"]["name"])
            out.append({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": cm_name},
                        "data": {k: base64.b64decode(b).decode() for k, b in secret["data"].items()}})
            del v["secret"]
            v["configMap"] = {"name": cm_name}
        elif "configMap" in v:
            cm = copy.deepcopy(one(docs, "ConfigMap", lambda d: d["metadata"]["name"] == v["configMap"]["name"]))
            cm["metadata"] = {"name": "%s-%s" % (name, cm["metadata"]["name"])}
            out.append(cm)
            v["configMap"]["name"] = cm["metadata"]["name"]
        # kube play makes a podman volume of each; the pod's name in front
        # lets the test remove exactly its own.
        old = v["name"]
        v["name"] = "%s-%s" % (name, old)
        for c in spec["containers"]:
            for m in c.get("volumeMounts", []):
                if m["name"] == old:
                    m["name"] = v["name"]
    (c,) = spec["containers"]
    for p in c["ports"]:
        if p["name"] == "https":
            p["hostPort"] = port
            p["hostIP"] = "127.0.0.1"
    # Scheduling has no meaning for one podman host.
    for k in ("topologySpreadConstraints", "affinity", "nodeSelector", "tolerations",
              "priorityClassName", "serviceAccountName"):
        spec.pop(k, None)
    out.append({"apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": name, "labels": dep["spec"]["template"]["metadata"]["labels"]},
                "spec": spec})
    return out


def ca_bundle(docs):
    hooks = one(docs, "MutatingWebhookConfiguration")["webhooks"]
    bundles = {h["clientConfig"].get("caBundle") for h in hooks}
    if len(bundles) != 1 or None in bundles:
        sys.exit("play_chart: the webhook entries do not carry one caBundle: %r" % bundles)
    return base64.b64decode(bundles.pop()).decode()


def pod_of(deployment, namespace):
    t = copy.deepcopy(deployment["spec"]["template"])
    meta = t.get("metadata") or {}
    meta["generateName"] = deployment["metadata"]["name"] + "-"
    meta["namespace"] = namespace
    meta.setdefault("labels", {})["loopwatch.io/inject"] = "enabled"
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": t["spec"]}


def review(deployment, namespace):
    pod = pod_of(deployment, namespace)
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "request": {"uid": str(uuid.uuid4()),
                        "kind": {"group": "", "version": "v1", "kind": "Pod"},
                        "resource": {"group": "", "version": "v1", "resource": "pods"},
                        "requestKind": {"group": "", "version": "v1", "kind": "Pod"},
                        "requestResource": {"group": "", "version": "v1", "resource": "pods"},
                        "namespace": namespace, "operation": "CREATE",
                        "userInfo": {"username": "system:serviceaccount:kube-system:replicaset-controller"},
                        "object": pod, "oldObject": None, "dryRun": False,
                        "options": {"apiVersion": "meta.k8s.io/v1", "kind": "CreateOptions"}}}


def apply(deployment, rev, resp):
    r = resp["response"]
    if r.get("uid") != rev["request"]["uid"] or r.get("allowed") is not True:
        sys.exit("play_chart: the response is not an admission of this review: %r" % r)
    if r.get("patchType") != "JSONPatch" or "patch" not in r:
        sys.exit("play_chart: the response has no JSONPatch (warnings: %r)" % r.get("warnings"))
    ops = json.loads(base64.b64decode(r["patch"]))
    pod = jsonpatch.apply_patch(rev["request"]["object"], ops)
    print("play_chart: %d patch operations applied by python3-jsonpatch" % len(ops), file=sys.stderr)
    out = copy.deepcopy(deployment)
    meta = {k: v for k, v in pod["metadata"].items() if k not in ("generateName", "namespace")}
    out["spec"]["template"] = {"metadata": meta, "spec": pod["spec"]}
    return out


def test_pod(docs, name, port, hosts_file):
    pod = copy.deepcopy(one(docs, "Pod", lambda d: d["metadata"].get("annotations", {}).get("helm.sh/hook") == "test"))
    host = service_dns(docs)
    pod["metadata"] = {"name": name, "labels": pod["metadata"]["labels"]}
    spec = pod["spec"]
    spec["hostNetwork"] = True
    with open(hosts_file, "w", encoding="utf-8") as f:
        f.write("127.0.0.1 localhost %s\n" % host)
    spec["volumes"].append({"name": "hosts", "hostPath": {"path": hosts_file, "type": "File"}})
    (c,) = spec["containers"]
    c.setdefault("volumeMounts", []).append({"name": "hosts", "mountPath": "/etc/hosts", "readOnly": True})
    c["args"] = [a.replace("%s:443/" % host, "%s:%d/" % (host, port)) for a in c["args"]]
    out = []
    for v in spec["volumes"]:
        if "secret" in v:
            secret = one(docs, "Secret", lambda d: d["metadata"]["name"] == v["secret"]["secretName"])
            items = {i["key"]: i["path"] for i in v["secret"].get("items", [])} or {k: k for k in secret["data"]}
            cm_name = "%s-%s" % (name, secret["metadata"]["name"])
            out.append({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": cm_name},
                        "data": {p: base64.b64decode(secret["data"][k]).decode() for k, p in items.items()}})
            del v["secret"]
            v["configMap"] = {"name": cm_name}
        old = v["name"]
        v["name"] = "%s-%s" % (name, old)
        for m in c.get("volumeMounts", []):
            if m["name"] == old:
                m["name"] = v["name"]
    out.append(pod)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("what", choices=["injector", "ca", "service", "review", "apply", "test-pod"])
    ap.add_argument("--rendered", help="the output of helm template")
    ap.add_argument("--name", help="the pod's name")
    ap.add_argument("--port", type=int, help="the host port")
    ap.add_argument("--deployment", help="the app's Deployment")
    ap.add_argument("--namespace", default="shop")
    ap.add_argument("--review", help="the review sent")
    ap.add_argument("--response", help="the injector's answer")
    ap.add_argument("--hosts-file", help="test-pod: the hosts file to write and mount")
    a = ap.parse_args()
    docs = load_all(a.rendered) if a.rendered else None
    if a.what == "injector":
        yaml.safe_dump_all(injector_pod(docs, a.name, a.port), sys.stdout, sort_keys=False)
    elif a.what == "ca":
        sys.stdout.write(ca_bundle(docs))
    elif a.what == "service":
        print(service_dns(docs))
    elif a.what == "review":
        (dep,) = [d for d in load_all(a.deployment) if d["kind"] == "Deployment"]
        json.dump(review(dep, a.namespace), sys.stdout)
    elif a.what == "apply":
        (dep,) = [d for d in load_all(a.deployment) if d["kind"] == "Deployment"]
        with open(a.review, encoding="utf-8") as f:
            rev = json.load(f)
        with open(a.response, encoding="utf-8") as f:
            resp = json.load(f)
        yaml.safe_dump(apply(dep, rev, resp), sys.stdout, sort_keys=False)
    elif a.what == "test-pod":
        yaml.safe_dump_all(test_pod(docs, a.name, a.port, a.hosts_file), sys.stdout, sort_keys=False)


if __name__ == "__main__":
    main()
