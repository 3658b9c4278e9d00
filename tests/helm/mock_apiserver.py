#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""A MOCK of the Kubernetes API server, for one test: that the chart's helm
TLS mode keeps the certificate it finds in the cluster (Helm's `lookup`) on
upgrade. No API server can run on the test machine, so this stands in for
one: just enough of its HTTP API for `helm template --dry-run=server` to
discover the cluster (/version, /api, /api/v1, /apis) and to read Secrets
(GET /api/v1/namespaces/NS/secrets/NAME) from the files it is given. Every
other path is a 404 Status, as the API server answers for a missing object.

    mock_apiserver.py [--secret FILE ...]   serves until killed; prints
                                            "listening on PORT" once ready

Each FILE is a Secret (YAML or JSON). Requests are logged on stderr, a line
each ("GET /api/v1/namespaces/loopwatch/secrets/x 200").
"""

import argparse
import http.server
import json
import sys

import yaml

VERSION = {"major": "1", "minor": "31", "gitVersion": "v1.31.0", "platform": "linux/amd64"}
API_VERSIONS = {"kind": "APIVersions", "versions": ["v1"],
                "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1"}]}
GROUPS = {"kind": "APIGroupList", "apiVersion": "v1", "groups": []}
CORE_RESOURCES = {
    "kind": "APIResourceList", "groupVersion": "v1",
    "resources": [
        {"name": "secrets", "singularName": "secret", "namespaced": True, "kind": "Secret",
         "verbs": ["get", "list"]},
        {"name": "namespaces", "singularName": "namespace", "namespaced": False, "kind": "Namespace",
         "verbs": ["get", "list"]},
    ],
}


def not_found(path):
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": "%s not found" % path, "reason": "NotFound", "code": 404}


class Handler(http.server.BaseHTTPRequestHandler):
    secrets = {}  # (namespace, name) -> Secret

    def answer(self, code, body):
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
        print("%s %s %d" % (self.command, self.path, code), file=sys.stderr, flush=True)

    def do_GET(self):
        path = self.path.split("?", 1)[0]
        fixed = {"/version": VERSION, "/api": API_VERSIONS, "/apis": GROUPS, "/api/v1": CORE_RESOURCES}
        if path in fixed:
            return self.answer(200, fixed[path])
        parts = path.strip("/").split("/")
        if len(parts) == 6 and parts[:3] == ["api", "v1", "namespaces"] and parts[4] == "secrets":
            secret = self.secrets.get((parts[3], parts[5]))
            if secret is not None:
                return self.answer(200, secret)
        return self.answer(404, not_found(path))

    def log_message(self, fmt, *args):
        pass


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--secret", action="append", default=[], help="a Secret to serve")
    ap.add_argument("--port", type=int, default=0)
    a = ap.parse_args()
    for f in a.secret:
        with open(f, encoding="utf-8") as fh:
            s = yaml.safe_load(fh)
        Handler.secrets[(s["metadata"]["namespace"], s["metadata"]["name"])] = s
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", a.port), Handler)
    print("listening on %d" % srv.server_address[1], flush=True)
    srv.serve_forever()


if __name__ == "__main__":
    main()
