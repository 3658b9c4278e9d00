# SPDX-License-Identifier: Apache-2.0
"""Golden fixtures of `loopwatch inject` (tests/inject/golden/<case>/):

  input.yaml | input.json   the manifests given
  args                      extra arguments, one line (optional)
  output.yaml | output.json what stdout must be, byte for byte; absent when
                            the case is refused (exit 1, nothing written)
  report.txt                what stderr must be

and the properties every case must have: injecting the output again changes
nothing; uninjecting it gives the input back (as data: comments and layout
are not kept), or for an input injected before, what uninjecting the input
gives. LOOPWATCH_UPDATE_GOLDEN=1 rewrites output and report from
what the binary does now: review the diff before committing it.
"""

import json
import os
import subprocess

import pytest
import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
GOLDEN = os.path.join(HERE, "golden")
BIN = os.environ.get("LOOPWATCH_BIN", os.path.join(HERE, "..", "..", "build", "sidecar",
                                                   "loopwatch"))
UPDATE = os.environ.get("LOOPWATCH_UPDATE_GOLDEN") == "1"

CASES = sorted(d for d in os.listdir(GOLDEN) if os.path.isdir(os.path.join(GOLDEN, d)))


def run(args, stdin=None):
    return subprocess.run([BIN] + args, input=stdin, capture_output=True, text=True,
                          timeout=30)


def case_files(case):
    d = os.path.join(GOLDEN, case)
    names = os.listdir(d)
    inp = next(os.path.join(d, n) for n in names if n.startswith("input."))
    ext = os.path.splitext(inp)[1]
    args = []
    if "args" in names:
        with open(os.path.join(d, "args")) as f:
            args = f.read().split()
    return d, inp, ext, args


def load(text, ext):
    if ext == ".json":
        return [json.loads(text)]
    return [doc for doc in yaml.safe_load_all(text) if doc is not None]


@pytest.mark.parametrize("case", CASES)
def test_golden(case):
    d, inp, ext, args = case_files(case)
    out_path = os.path.join(d, "output" + ext)
    report_path = os.path.join(d, "report.txt")
    r = run(["inject"] + args + ["-f", inp])
    if UPDATE:
        if r.returncode == 0:
            with open(out_path, "w") as f:
                f.write(r.stdout)
        elif os.path.exists(out_path):
            os.unlink(out_path)
        with open(report_path, "w") as f:
            f.write(r.stderr.replace(inp, "INPUT"))
    with open(report_path) as f:
        assert r.stderr.replace(inp, "INPUT") == f.read()
    if os.path.exists(out_path):
        assert r.returncode == 0, r.stderr
        with open(out_path) as f:
            assert r.stdout == f.read()
    else:
        assert r.returncode == 1, r.stderr
        assert r.stdout == ""


@pytest.mark.parametrize("case", CASES)
def test_inject_twice_changes_nothing(case):
    d, inp, ext, args = case_files(case)
    out_path = os.path.join(d, "output" + ext)
    if not os.path.exists(out_path):
        pytest.skip("refused: no output")
    again = run(["inject"] + args + ["-f", out_path])
    assert again.returncode == 0, again.stderr
    with open(out_path) as f:
        assert again.stdout == f.read()
    assert "injected (" not in again.stderr, again.stderr


@pytest.mark.parametrize("case", CASES)
def test_uninject_gives_the_input_back(case):
    """uninject(inject(x)) == uninject(x): x itself when x was not injected;
    for an input injected before, the object it was injected from (plus
    what others changed since)."""
    d, inp, ext, args = case_files(case)
    out_path = os.path.join(d, "output" + ext)
    if not os.path.exists(out_path):
        pytest.skip("refused: no output")
    back = run(["uninject", "-f", out_path])
    assert back.returncode == 0, back.stderr
    original = run(["uninject", "-f", inp])
    assert original.returncode == 0, original.stderr
    with open(inp) as f:
        if "uninjected" not in original.stderr:
            assert load(original.stdout, ext) == load(f.read(), ext)
    assert load(back.stdout, ext) == load(original.stdout, ext)


def sidecars(docs):
    """The loopwatch containers of every pod in `docs` (Lists, templates)."""
    for doc in docs:
        if not isinstance(doc, dict):
            continue
        if doc.get("kind") == "List":
            yield from sidecars(doc.get("items") or [])
            continue
        spec = doc.get("spec") or {}
        for path in (["template", "spec"], ["jobTemplate", "spec", "template", "spec"], []):
            s = spec
            for k in path:
                s = (s or {}).get(k)
            if isinstance(s, dict) and "containers" in s:
                for c in (s.get("initContainers") or []) + s["containers"]:
                    if c.get("name") == "loopwatch":
                        yield c
                break


@pytest.mark.parametrize("case", CASES)
def test_the_sidecar_accepts_the_settings_it_is_given(case):
    """Every LOOPWATCH_* value the injector gives the sidecar (annotations'
    settings, the containers' own probes) is one the real sidecar takes."""
    d, inp, ext, args = case_files(case)
    out_path = os.path.join(d, "output" + ext)
    if not os.path.exists(out_path):
        pytest.skip("refused: no output")
    with open(out_path) as f:
        found = list(sidecars(load(f.read(), ext)))
    if "injected" not in open(os.path.join(d, "report.txt")).read():
        assert found == [] or case in ("already-injected",)
    for c in found:
        env = {e["name"]: e["value"] for e in c.get("env", []) if "value" in e}
        assert env["LOOPWATCH_SEGMENT"] == "/run/loopwatch/segment"
        r = subprocess.run([BIN, "run", "--print-config"], capture_output=True, text=True,
                           timeout=30, env=dict(env, PATH=os.environ.get("PATH", "")))
        assert r.returncode == 0, (env, r.stderr)
