# SPDX-License-Identifier: Apache-2.0
"""`loopwatch inject` as a command: pipes, forms, errors and exit codes; and
`loopwatch python-payload`, which the injected init container runs."""

import json
import os
import subprocess
import time

import pytest
import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
BIN = os.environ.get("LOOPWATCH_BIN", os.path.join(HERE, "..", "..", "build", "sidecar",
                                                   "loopwatch"))
POD = os.path.join(HERE, "golden", "pod", "input.yaml")


def run(args, stdin=None, timeout=30):
    return subprocess.run([BIN] + args, input=stdin, capture_output=True, text=True,
                          timeout=timeout)


def test_a_pipe_like_kubectl():
    with open(POD) as f:
        text = f.read()
    by_file = run(["inject", "-f", POD])
    by_stdin = run(["inject"], stdin=text)
    by_dash = run(["inject", "-f", "-"], stdin=text)
    assert by_file.returncode == by_stdin.returncode == by_dash.returncode == 0
    assert by_file.stdout == by_stdin.stdout == by_dash.stdout
    assert by_stdin.stderr == "Pod/orders: injected (containers: orders)\n"
    # And back out through a second process, as in a shell pipeline.
    back = run(["uninject"], stdin=by_stdin.stdout)
    assert back.returncode == 0, back.stderr
    assert yaml.safe_load(back.stdout) == yaml.safe_load(text)


def test_json_in_json_out():
    with open(POD) as f:
        obj = yaml.safe_load(f)
    r = run(["inject"], stdin=json.dumps(obj))
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["spec"]["initContainers"][-1]["name"] == "loopwatch"
    assert out["metadata"]["labels"]["loopwatch.io/injected"] == "true"


def test_strings_that_look_like_other_things_stay_strings():
    doc = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"},
           "data": {"a": "true", "b": "0755", "c": "1.0", "d": "y", "e": "null", "f": "",
                    "g": "12:30", "h": "0x1F", "i": "-.inf", "j": "on", "k": "1e3"}}
    # Every scalar quoted on the way in; only the ambiguous ones on the way out.
    r = run(["inject"], stdin=yaml.safe_dump(doc, default_style='"'))
    assert r.returncode == 0, r.stderr
    assert yaml.safe_load(r.stdout) == doc, r.stdout
    assert "name: c\n" in r.stdout
    again = run(["inject"], stdin=r.stdout)
    assert again.stdout == r.stdout
    assert r.stderr == "ConfigMap/c: passed through: not a workload with a pod template\n"


def test_numbers_and_booleans_stay_what_they_are():
    text = ("apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n"
            "  terminationGracePeriodSeconds: 7\n  enableServiceLinks: false\n"
            "  containers: [{name: a, image: i, resources: {limits: {cpu: 0.5}}}]\n")
    r = run(["inject"], stdin=text)
    assert r.returncode == 0, r.stderr
    assert yaml.safe_load(r.stdout) == yaml.safe_load(text)


def test_bad_yaml_names_the_place():
    r = run(["inject"], stdin="apiVersion: v1\nkind: Pod\nmetadata: {name: [\n")
    assert r.returncode == 1
    assert r.stdout == ""
    assert r.stderr.startswith("loopwatch inject: <stdin>:"), r.stderr
    assert "not valid YAML" in r.stderr


def test_bad_json_names_the_place(tmp_path):
    p = tmp_path / "bad.json"
    p.write_text('{\n  "kind": "Pod",\n  "metadata": {"name": "x",}\n}\n')
    r = run(["inject", "-f", str(p)])
    assert r.returncode == 1
    assert r.stderr.startswith("loopwatch inject: %s:3:" % p), r.stderr
    assert "not valid JSON" in r.stderr


def test_duplicate_keys_are_refused():
    r = run(["inject"], stdin="kind: Pod\nkind: Deployment\n")
    assert r.returncode == 1
    assert "<stdin>:2:1: duplicate key \"kind\"" in r.stderr, r.stderr


def test_a_fifo_is_refused_not_waited_on(tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    r = run(["inject", "-f", str(fifo)], timeout=10)
    assert r.returncode == 1
    assert "not a regular file" in r.stderr


def test_a_missing_file():
    r = run(["inject", "-f", "/nonexistent/x.yaml"])
    assert r.returncode == 1
    assert r.stderr == "loopwatch inject: /nonexistent/x.yaml: No such file or directory\n"


def test_usage_errors_exit_2():
    for args, msg in [(["inject", "--bogus"], "unknown option --bogus"),
                      (["inject", "-f"], "-f needs a file name"),
                      (["inject", "x.yaml"], "unexpected argument"),
                      (["inject", "-f", "a", "-f", "b"], "one -f FILE only"),
                      (["inject", "--image-pull-policy", "Sometimes"], "is not Always"),
                      (["uninject", "--image", "x"], "unknown option --image")]:
        r = run(args)
        assert r.returncode == 2, (args, r.stderr)
        assert msg in r.stderr, (args, r.stderr)
        assert r.stdout == ""


def test_help_tells_the_options():
    r = run(["inject", "--help"])
    assert r.returncode == 0
    for word in ("-f, --filename", "--image", "--all", "config.loopwatch.io/containers",
                 "Exit codes"):
        assert word in r.stdout
    r = run(["uninject", "-h"])
    assert r.returncode == 0 and "loopwatch.io/status" in r.stdout
    r = run(["help"])
    assert "inject" in r.stdout and "uninject" in r.stdout


def test_image_and_all(tmp_path):
    text = ("apiVersion: v1\nkind: Pod\nmetadata: {name: p}\n"
            "spec: {containers: [{name: a, image: i}]}\n")
    r = run(["inject"], stdin=text)
    assert r.returncode == 0 and yaml.safe_load(r.stdout) == yaml.safe_load(text)
    assert "skipped: not enabled" in r.stderr
    r = run(["inject", "--all", "--image=registry.example/loopwatch:9", "--image-pull-policy",
             "IfNotPresent"], stdin=text)
    assert r.returncode == 0, r.stderr
    side = yaml.safe_load(r.stdout)["spec"]["initContainers"][0]
    assert side["image"] == "registry.example/loopwatch:9"
    assert side["imagePullPolicy"] == "IfNotPresent"


def test_a_refusal_writes_nothing_for_any_document():
    good = open(POD).read()
    bad = good.replace("name: orders\n", "name: bad\n  annotations: {config.loopwatch.io/mode: loud}\n", 1)
    r = run(["inject"], stdin=good + "---\n" + bad)
    assert r.returncode == 1
    assert r.stdout == ""
    assert "Pod/orders: injected" in r.stderr
    assert 'Pod/bad: refused: config.loopwatch.io/mode: "loud" is not' in r.stderr


def test_yaml_aliases_cannot_explode():
    """Ten levels of ten aliases would be 10^10 values: refused at once."""
    lines = ['a0: &a0 ["x", "x", "x", "x", "x", "x", "x", "x", "x", "x"]']
    for k in range(1, 10):
        lines.append("a%d: &a%d [%s]" % (k, k, ", ".join(["*a%d" % (k - 1)] * 10)))
    start = time.monotonic()
    r = run(["inject"], stdin="\n".join(lines) + "\n", timeout=30)
    assert r.returncode == 1
    assert "YAML aliases expanding without end" in r.stderr, r.stderr
    assert time.monotonic() - start < 5
    # A few honest aliases are fine.
    r = run(["inject"], stdin="apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\n"
                               "data: {a: &v x, b: *v}\n")
    assert r.returncode == 0 and "b: x" in r.stdout, r.stderr


def test_invalid_utf8_is_refused_not_mangled():
    text = (b"apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\n  labels: {loopwatch.io/inject: enabled}\n"
            b"spec:\n  containers:\n    - name: app\n      image: \"i\xff\"\n")
    r = subprocess.run([BIN, "inject"], input=text, capture_output=True, timeout=30)
    assert r.returncode == 1, r.stderr
    assert b"Pod/p: refused: the object is not valid UTF-8" in r.stderr, r.stderr


# ---- loopwatch python-payload

def _fake_payload(root):
    """A payload tree as the image lays it out (contents are not read)."""
    boot = root / "loopwatch" / "_bootstrap"
    boot.mkdir(parents=True)
    (boot / "sitecustomize.py").write_text("# hook\n")
    (boot / "__init__.py").write_text("")
    (root / "loopwatch" / "__init__.py").write_text("# package\n")
    (root / "loopwatch" / "_native.so").write_bytes(b"\x7fELF" + b"\0" * 100)
    (root / "loopwatch" / "__pycache__").mkdir()
    (root / "loopwatch" / "__pycache__" / "x.pyc").write_bytes(b"stale")
    return root


def test_python_payload_copies_read_only_and_again(tmp_path):
    src = _fake_payload(tmp_path / "src")
    dest = tmp_path / "dest"
    for _ in range(2):  # an init container run again when the pod restarts
        p = run(["python-payload", "--from", str(src), str(dest)])
        assert p.returncode == 0, p.stderr
        assert p.stdout == ("loopwatch python-payload: copied 4 files (1 KiB) from %s to %s; "
                            "set PYTHONPATH=%s/loopwatch/_bootstrap\n" % (src, dest, dest))
    assert (dest / "loopwatch" / "_bootstrap" / "sitecustomize.py").read_text() == "# hook\n"
    assert not (dest / "loopwatch" / "__pycache__").exists()
    assert oct((dest / "loopwatch" / "__init__.py").stat().st_mode & 0o777) == "0o444"
    assert oct((dest / "loopwatch" / "_native.so").stat().st_mode & 0o777) == "0o555"


@pytest.mark.parametrize("args, code, message", [
    ([], 2, "loopwatch python-payload: no DEST"),
    (["a", "b"], 2, 'one DEST only (got "a" and "b")'),
    (["--bogus", "d"], 2, 'unknown option "--bogus"'),
    (["--from"], 2, "--from needs a directory"),
    (["--from", "/nonexistent", "d"], 2,
     "no payload in /nonexistent (/nonexistent/loopwatch/_bootstrap/sitecustomize.py is missing)"),
])
def test_python_payload_bad_usage(tmp_path, args, code, message):
    p = run(["python-payload"] + args)
    assert p.returncode == code, p.stderr
    assert message in p.stderr
    assert p.stdout == ""


def test_python_payload_into_a_file_fails_clearly(tmp_path):
    src = _fake_payload(tmp_path / "src")
    (tmp_path / "file").write_text("x")
    p = run(["python-payload", "--from", str(src), str(tmp_path / "file")])
    assert p.returncode == 1
    assert p.stderr.startswith("loopwatch python-payload: cannot create %s: " % (tmp_path / "file"))


def test_python_payload_help():
    p = run(["python-payload", "--help"])
    assert p.returncode == 0 and p.stdout.startswith("Usage: loopwatch python-payload")
    assert "PYTHONPATH=DEST/loopwatch/_bootstrap" in p.stdout


def test_python_payload_follows_no_link_out_of_dest(tmp_path):
    src = _fake_payload(tmp_path / "src")
    outside = tmp_path / "outside.txt"
    outside.write_text("keep me")
    (src / "loopwatch" / "link.txt").symlink_to(outside)
    (src / "loopwatch" / "linkdir").symlink_to(tmp_path)
    dest = tmp_path / "dest"
    p = run(["python-payload", "--from", str(src), str(dest)])
    assert p.returncode == 0, p.stderr
    assert not (dest / "loopwatch" / "link.txt").exists()
    assert not (dest / "loopwatch" / "linkdir").exists()
    assert outside.read_text() == "keep me"


def test_config_file_as_the_webhook_reads_it(tmp_path):
    text = ("apiVersion: v1\nkind: Pod\nmetadata: {name: p}\n"
            "spec: {containers: [{name: a, image: i}]}\n")
    conf = tmp_path / "injector.yaml"
    conf.write_text("image: registry.example/loopwatch:7\nimage_pull_policy: Always\n"
                    "native_sidecar: false\nmemory_limit: 48Mi\nrun_as_user: 1234\n"
                    "stall_after: 3s\nmode: observe\n")
    r = run(["inject", "--all", "--config", str(conf)], stdin=text)
    assert r.returncode == 0, r.stderr
    pod = yaml.safe_load(r.stdout)
    assert "initContainers" not in pod["spec"]  # native_sidecar: false
    side = pod["spec"]["containers"][-1]
    assert side["name"] == "loopwatch" and side["image"] == "registry.example/loopwatch:7"
    assert side["imagePullPolicy"] == "Always"
    assert side["resources"]["limits"]["memory"] == "48Mi"
    assert side["securityContext"]["runAsUser"] == 1234
    env = {e["name"]: e.get("value") for e in side["env"]}
    assert env["LOOPWATCH_STALL_AFTER"] == "3s" and env["LOOPWATCH_MODE"] == "observe"
    # A pod's annotation overrides the file's default of the same setting.
    annotated = text.replace("metadata: {name: p}",
                             "metadata: {name: p, annotations: "
                             "{config.loopwatch.io/stall-after: 7s}}")
    r = run(["inject", "--all", "--config", str(conf)], stdin=annotated)
    assert r.returncode == 0, r.stderr
    env = [e for e in yaml.safe_load(r.stdout)["spec"]["containers"][-1]["env"]
           if e["name"] == "LOOPWATCH_STALL_AFTER"]
    assert env == [{"name": "LOOPWATCH_STALL_AFTER", "value": "7s"}]
    # The command line wins over the file.
    r = run(["inject", "--all", "--image", "other/loopwatch:8", "--config", str(conf)], stdin=text)
    assert r.returncode == 0, r.stderr
    assert yaml.safe_load(r.stdout)["spec"]["containers"][-1]["image"] == "other/loopwatch:8"


def test_a_bad_config_file_names_the_place_and_writes_nothing(tmp_path):
    conf = tmp_path / "injector.yaml"
    conf.write_text("image: x\nnative_sidecar: maybe\nimgae: y\nstall_after: 5 minutes\n")
    r = run(["inject", "--all", "--config", str(conf)], stdin=open(POD).read())
    assert r.returncode == 2 and r.stdout == ""
    assert "injector.yaml:2:1: native_sidecar: \"maybe\" is not true or false" in r.stderr
    assert "injector.yaml:3:1: unknown setting \"imgae\"; did you mean image?" in r.stderr
    assert "injector.yaml:4:1: stall_after: \"5 minutes\" " in r.stderr
    r = run(["inject", "--config", str(tmp_path / "missing.yaml")], stdin=open(POD).read())
    assert r.returncode == 2 and "missing.yaml: cannot read" in r.stderr
    # A request above the limit would refuse every pod: refused at once.
    conf.write_text("memory_limit: 32Mi\nmemory_request: 64Mi\n")
    r = run(["inject", "--all", "--config", str(conf)], stdin=open(POD).read())
    assert r.returncode == 2
    assert "injector.yaml:2:1: memory_request 64Mi is above memory_limit 32Mi" in r.stderr
