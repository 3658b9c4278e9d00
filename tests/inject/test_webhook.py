# SPDX-License-Identifier: Apache-2.0
"""`loopwatch webhook` over real HTTPS: a test CA and certificates made with
openssl, AdmissionReviews as the API server sends them, and each patch
applied by an independent RFC 6902 implementation (Debian's
python3-jsonpatch). Every golden case goes through the webhook as the pod
the API server would see, and must come out as the CLI makes it.

The API server itself cannot exist here; the reviews are built the way its
admission chain builds them (a Pod object, the request's uid, kind and
namespace), and nothing else stands in for it."""

import base64
import http.client
import json
import os
import shutil
import socket
import ssl
import subprocess
import time
import uuid

import jsonpatch
import pytest
import yaml

from test_golden import BIN, CASES, case_files, load

LOCALHOST = "127.0.0.1"


def openssl(*args, cwd):
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def make_pair(d, name, cn):
    """A key and a certificate for 127.0.0.1 signed by d/ca.*; returns paths."""
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", name + ".key", "-out",
            name + ".csr", "-subj", "/CN=" + cn, cwd=d)
    with open(os.path.join(d, "ext"), "w") as f:
        f.write("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    openssl("x509", "-req", "-in", name + ".csr", "-CA", "ca.crt", "-CAkey", "ca.key",
            "-CAcreateserial", "-out", name + ".crt", "-days", "2", "-extfile", "ext", cwd=d)
    return os.path.join(d, name + ".crt"), os.path.join(d, name + ".key")


class Webhook:
    def __init__(self, tmp):
        self.dir = str(tmp)
        openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out",
                "ca.crt", "-days", "2", "-subj", "/CN=loopwatch test CA", cwd=self.dir)
        crt, key = make_pair(self.dir, "first", "webhook-first")
        self.crt = os.path.join(self.dir, "tls.crt")
        self.key = os.path.join(self.dir, "tls.key")
        shutil.copy(crt, self.crt)
        shutil.copy(key, self.key)
        self.log = os.path.join(self.dir, "webhook.log")
        self.proc = subprocess.Popen(
            [BIN, "webhook", "--tls-cert", self.crt, "--tls-key", self.key, "--listen",
             LOCALHOST + ":0"], stdout=open(self.log, "w"), stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 10
        self.port = None
        while time.monotonic() < deadline and self.port is None:
            for line in open(self.log):
                rec = json.loads(line)
                if rec["msg"] == "loopwatch webhook started":
                    self.port = rec["port"]
            time.sleep(0.05)
        assert self.port, open(self.log).read()
        self.ctx = ssl.create_default_context(cafile=os.path.join(self.dir, "ca.crt"))

    def conn(self):
        return http.client.HTTPSConnection(LOCALHOST, self.port, context=self.ctx, timeout=10)

    def request(self, method, path, body=None, headers=None, conn=None):
        c = conn or self.conn()
        c.request(method, path, body=body, headers=headers or {})
        r = c.getresponse()
        data = r.read()
        if conn is None:
            c.close()
        return r.status, data

    def review(self, obj, conn=None, kind="Pod", operation="CREATE", namespace="shop"):
        uid = str(uuid.uuid4())
        body = json.dumps({
            "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "request": {"uid": uid, "kind": {"group": "", "version": "v1", "kind": kind},
                        "resource": {"group": "", "version": "v1", "resource": "pods"},
                        "namespace": namespace, "operation": operation, "object": obj}})
        status, data = self.request("POST", "/inject", body,
                                    {"Content-Type": "application/json"}, conn)
        assert status == 200, data
        out = json.loads(data)
        assert out["apiVersion"] == "admission.k8s.io/v1" and out["kind"] == "AdmissionReview"
        resp = out["response"]
        assert resp["uid"] == uid and resp["allowed"] is True, resp
        return resp

    def stop(self):
        self.proc.terminate()
        rc = self.proc.wait(10)
        assert rc == 0, open(self.log).read()

    def log_lines(self):
        return [json.loads(l) for l in open(self.log)]


@pytest.fixture(scope="module")
def webhook(tmp_path_factory):
    w = Webhook(tmp_path_factory.mktemp("webhook"))
    yield w
    w.stop()


def pods_of(docs):
    """The pods the API server would see for the objects of a golden input."""
    for doc in docs:
        if doc.get("kind") == "List":
            yield from pods_of(doc["items"])
        elif doc.get("kind") == "Pod":
            yield doc, doc
        elif doc.get("kind") in ("Deployment", "StatefulSet", "DaemonSet", "ReplicaSet",
                                 "ReplicationController", "Job", "CronJob"):
            t = doc["spec"]
            if doc["kind"] == "CronJob":
                t = t["jobTemplate"]["spec"]
            t = t["template"]
            meta = dict(t.get("metadata") or {})
            meta["generateName"] = doc["metadata"]["name"] + "-"
            yield doc, {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": t["spec"]}


@pytest.mark.parametrize("case", CASES)
def test_the_webhook_patches_as_the_cli_injects(webhook, case):
    d, inp, ext, args = case_files(case)
    with open(inp) as f:
        docs = load(f.read(), ext)
    seen = 0
    for _, pod in pods_of(docs):
        seen += 1
        resp = webhook.review(pod)
        # The CLI on the same pod, as a namespace-labelled webhook sees it.
        cli = subprocess.run([BIN, "inject", "--all"], input=json.dumps(pod), text=True,
                             capture_output=True, timeout=30)
        if cli.returncode == 1:  # refused: admitted unchanged, the reason as a warning
            assert "patch" not in resp, resp
            reason = cli.stderr.splitlines()[0].split(": refused: ", 1)[1]
            assert "loopwatch: not injected: " + reason in resp.get("warnings", []), resp
            continue
        assert cli.returncode == 0, cli.stderr
        want = json.loads(cli.stdout)
        if "injected (" in cli.stderr:
            assert resp["patchType"] == "JSONPatch", resp
            patch = json.loads(base64.b64decode(resp["patch"]))
            got = jsonpatch.JsonPatch(patch).apply(pod)
        else:
            assert "patch" not in resp, resp
            got = pod
        assert got == want
        for note in cli.stderr.split("; ")[1:]:
            assert "loopwatch: " + note.strip() in resp.get("warnings", []), resp
    if case not in ("bad-annotations", "host-network", "disabled", "not-enabled",
                    "list-json", "already-injected", "reinvoked", "pod", "named-ports",
                    "exec-and-tcp"):
        assert seen == 1


def test_a_pod_from_an_injected_template_is_left_alone(webhook):
    """A Deployment injected by the CLI (GitOps) makes pods that already have
    loopwatch: the webhook finds them injected and sends no patch."""
    d, inp, ext, args = case_files("deployment")
    with open(os.path.join(d, "output.yaml")) as f:
        docs = load(f.read(), ".yaml")
    (_, pod), = list(pods_of(docs))
    resp = webhook.review(pod)
    assert "patch" not in resp and "warnings" not in resp, resp


def test_other_kinds_and_operations_pass(webhook):
    with open(case_files("pod")[1]) as f:
        pod = yaml.safe_load(f)
    assert "patch" not in webhook.review(pod, operation="UPDATE")
    assert "patch" not in webhook.review({"apiVersion": "v1", "kind": "ConfigMap"},
                                         kind="ConfigMap")


@pytest.mark.parametrize("body, status, message", [
    (b"not json", 400, "the body is not a JSON object"),
    (b'{"kind": "AdmissionReview"', 400, "not valid JSON"),
    (b'{"kind": "Pod", "apiVersion": "v1"}', 400, "not an AdmissionReview of admission.k8s.io/v1"),
    (b'{"kind": "AdmissionReview", "apiVersion": "admission.k8s.io/v1"}', 400, "has no request"),
    (b'{"kind": "AdmissionReview", "apiVersion": "admission.k8s.io/v1", "request": {}}', 400,
     "request has no uid"),
    (b"[" * 100000, 400, "not a JSON object"),
    (b'{"a":' * 300 + b"1" + b"}" * 300, 400, "nested more than 256 levels"),
])
def test_bad_bodies_get_a_4xx_that_says_why(webhook, body, status, message):
    got, data = webhook.request("POST", "/inject", body, {"Content-Type": "application/json"})
    assert got == status, data
    assert message in data.decode(), data


def test_wrong_method_type_size_and_path(webhook):
    status, data = webhook.request("GET", "/inject")
    assert status == 405 and b"POST" in data
    status, data = webhook.request("POST", "/inject", b"{}", {"Content-Type": "text/plain"})
    assert status == 415, data
    status, data = webhook.request("POST", "/inject", b" " * (10 * 1024 * 1024),
                                   {"Content-Type": "application/json"})
    assert status == 413 and b"too large" in data, data
    status, data = webhook.request("GET", "/nowhere")
    assert status == 404 and b"POST /inject" in data
    status, data = webhook.request("GET", "/healthz")
    assert status == 200 and data.startswith(b"ok: certificate valid until "), data


def test_slow_clients_do_not_hold_up_reviews(webhook):
    """Clients that connect and send nothing, or stop in the middle of a
    handshake or a body, each hold at most one of the 16 threads for at most
    3 s; reviews go on being answered meanwhile."""
    with open(case_files("pod")[1]) as f:
        pod = yaml.safe_load(f)
    slow = []
    for k in range(8):
        s = socket.create_connection((LOCALHOST, webhook.port))
        if k % 2:  # a TLS session, then half a request
            t = webhook.ctx.wrap_socket(s, server_hostname=LOCALHOST)
            t.sendall(b"POST /inject HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                      b"Content-Length: 1000\r\n\r\n{")
            slow.append(t)
        else:  # nothing at all, not even a ClientHello
            slow.append(s)
    try:
        for _ in range(5):
            start = time.monotonic()
            resp = webhook.review(pod)
            assert resp["patchType"] == "JSONPatch"
            assert time.monotonic() - start < 1.0
    finally:
        for s in slow:
            s.close()


def serial_of(webhook):
    with socket.create_connection((LOCALHOST, webhook.port)) as s:
        with webhook.ctx.wrap_socket(s, server_hostname=LOCALHOST) as t:
            return t.getpeercert()["serialNumber"]


def test_a_rotated_certificate_is_served_without_a_restart(webhook):
    with open(case_files("pod")[1]) as f:
        pod = yaml.safe_load(f)
    before = serial_of(webhook)
    kept = webhook.conn()  # a kept-alive connection across the rotation
    webhook.review(pod, conn=kept)
    # A pair that does not match is refused; the old one goes on serving.
    crt2, key2 = make_pair(webhook.dir, "second", "webhook-second")
    crt3, key3 = make_pair(webhook.dir, "third", "webhook-third")
    shutil.copy(crt2, webhook.crt + ".new")
    os.rename(webhook.crt + ".new", webhook.crt)
    time.sleep(1.2)
    assert serial_of(webhook) == before
    assert any(l["msg"].startswith("certificate not reloaded") for l in webhook.log_lines())
    # Now the matching key: the next connection gets the new certificate.
    shutil.copy(key2, webhook.key + ".new")
    os.rename(webhook.key + ".new", webhook.key)
    time.sleep(1.2)
    after = serial_of(webhook)
    assert after != before
    # Rotated again, as cert-manager does on renewal.
    shutil.copy(crt3, webhook.crt + ".new")
    shutil.copy(key3, webhook.key + ".new")
    os.rename(webhook.key + ".new", webhook.key)
    os.rename(webhook.crt + ".new", webhook.crt)
    time.sleep(1.2)
    assert serial_of(webhook) not in (before, after)
    # The connection opened before the rotations still works.
    assert webhook.review(pod, conn=kept)["patchType"] == "JSONPatch"
    kept.close()
    assert sum(l["msg"].startswith("certificate reloaded") for l in webhook.log_lines()) >= 2
    status, data = webhook.request("GET", "/metrics")
    text = data.decode()
    assert 'loopwatch_webhook_certificate_reloads_total{result="ok"}' in text
    assert 'loopwatch_webhook_certificate_reloads_total{result="error"}' in text


def test_metrics_count_reviews_by_result(webhook):
    status, data = webhook.request("GET", "/metrics")
    assert status == 200
    text = data.decode()
    for needle in ('loopwatch_webhook_reviews_total{reason="",result="injected"}',
                   'loopwatch_webhook_reviews_total{reason="",result="refused"}',
                   'loopwatch_webhook_reviews_total{reason="disabled",result="skipped"}',
                   'loopwatch_webhook_reviews_total{reason="",result="bad_request"}',
                   "loopwatch_webhook_review_seconds_bucket",
                   "loopwatch_webhook_certificate_expiry_timestamp_seconds"):
        assert needle in text, (needle, text)


def test_usage_and_bad_certificates(tmp_path):
    r = subprocess.run([BIN, "webhook"], capture_output=True, text=True, timeout=10)
    assert r.returncode == 2 and "--tls-cert and --tls-key are required" in r.stderr
    r = subprocess.run([BIN, "webhook", "--help"], capture_output=True, text=True, timeout=10)
    assert r.returncode == 0 and "POST /inject" in r.stdout
    bad = tmp_path / "bad.pem"
    bad.write_text("not a certificate\n")
    r = subprocess.run([BIN, "webhook", "--tls-cert", str(bad), "--tls-key", str(bad)],
                       capture_output=True, text=True, timeout=10)
    assert r.returncode == 1 and "no PEM certificate" in r.stderr, r.stderr
    cfg = tmp_path / "injector.yaml"
    cfg.write_text("image: registry.example/loopwatch:1\nmemory_limt: 64Mi\ncpu_request: lots\n")
    r = subprocess.run([BIN, "webhook", "--tls-cert", str(bad), "--tls-key", str(bad),
                        "--config", str(cfg)], capture_output=True, text=True, timeout=10)
    assert r.returncode == 2, r.stderr
    assert "%s:2:1: unknown setting \"memory_limt\"; did you mean memory_limit?" % cfg in r.stderr
    assert '%s:3:1: cpu_request: "lots" is not a resource quantity' % cfg in r.stderr


def test_check_webhook_sends_a_labelled_pod_and_checks_the_patch(webhook, tmp_path):
    url = "https://%s:%d/inject" % (LOCALHOST, webhook.port)
    r = subprocess.run([BIN, "check-webhook", "--ca-file", os.path.join(webhook.dir, "ca.crt"),
                        url], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("ok: " + url + " injected a labelled pod (") and " ms" in r.stdout
    # Another CA: the injector's certificate is not trusted.
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "other.key", "-out",
            "other.crt", "-days", "2", "-subj", "/CN=another CA", cwd=str(tmp_path))
    r = subprocess.run([BIN, "check-webhook", "--ca-file", str(tmp_path / "other.crt"), url],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 1 and "certificate not trusted" in r.stderr, r.stderr
    # Not the injector: a path that answers 404.
    r = subprocess.run([BIN, "check-webhook", "--ca-file", os.path.join(webhook.dir, "ca.crt"),
                        url.replace("/inject", "/nothing")], capture_output=True, text=True,
                       timeout=30)
    assert r.returncode == 1 and "HTTP 404" in r.stderr, r.stderr


@pytest.mark.parametrize("args,message", [
    ([], "the injector's URL is missing"),
    (["http://127.0.0.1:1/inject"], "must start with https://"),
    (["https://127.0.0.1:99999/inject"], "port is not a number from 1 to 65535"),
    (["--timeout", "0", "https://127.0.0.1:1/inject"], "--timeout: 0 is not a number"),
    (["--ca-file", "/nonexistent/ca.crt", "https://127.0.0.1:1/inject"], "cannot be read"),
    (["--bogus"], "unknown option --bogus"),
])
def test_check_webhook_usage(args, message):
    r = subprocess.run([BIN, "check-webhook"] + args, capture_output=True, text=True, timeout=30)
    assert r.returncode == 2 and message in r.stderr, r.stderr


def test_check_webhook_nobody_listening(tmp_path):
    s = socket.socket()
    s.bind((LOCALHOST, 0))
    port = s.getsockname()[1]
    s.close()
    r = subprocess.run([BIN, "check-webhook", "--timeout", "2",
                        "https://%s:%d/inject" % (LOCALHOST, port)],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 1 and "check-webhook: https://" in r.stderr, r.stderr
