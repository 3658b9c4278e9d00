# SPDX-License-Identifier: Apache-2.0
"""A bad configuration: exit 2 at once, with the file, line and column (or
the flag, or the variable) and the expected form."""

import subprocess

from sidecar_harness import clean_env


def run(sidecar_bin, args, env=None, cwd=None):
    return subprocess.run([sidecar_bin, "run", *args], capture_output=True, text=True,
                          timeout=10, env=clean_env(env), cwd=cwd)


def test_bad_config_file(sidecar_bin, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("segment: /tmp/nowhere\n"
                   "stall_aftr: 5s\n"
                   "poll_interval: fast\n"
                   "expect_loops: [1, 2]\n")
    r = run(sidecar_bin, ["--config", str(bad), "--listen", "127.0.0.1:0",
                          "--admin-listen", "off"])
    assert r.returncode == 2, r
    err = r.stderr
    assert "%s:2:1" % bad in err and "stall_aftr" in err, err
    assert "stall_after" in err, err  # the suggestion
    assert "%s:3:16" % bad in err and "fast" in err, err
    assert "250ms" in err or "5s" in err, err  # the expected form
    assert "%s:4:" % bad in err and "expect_loops" in err, err
    assert "loopwatch started" not in err and r.stdout == "", r


def test_unknown_key_only(sidecar_bin, tmp_path):
    (tmp_path / "bad.yaml").write_text("# comment\nmode: enforce\n  \nbogus_key: 1\n")
    r = run(sidecar_bin, ["--config", "bad.yaml"], cwd=tmp_path)
    assert r.returncode == 2, r
    assert "bad.yaml:4:1" in r.stderr and "bogus_key" in r.stderr, r.stderr


def test_bad_yaml_syntax(sidecar_bin, tmp_path):
    (tmp_path / "bad.yaml").write_text("stall_after: 5s\nmode: [enforce\n")
    r = run(sidecar_bin, ["--config", "bad.yaml"], cwd=tmp_path)
    assert r.returncode == 2, r
    assert "bad.yaml:" in r.stderr, r.stderr


def test_missing_config_file(sidecar_bin, tmp_path):
    r = run(sidecar_bin, ["--config", str(tmp_path / "absent.yaml")])
    assert r.returncode == 2, r
    assert "absent.yaml" in r.stderr, r.stderr


def test_bad_flag_and_environment(sidecar_bin):
    r = run(sidecar_bin, ["--mode", "maybe", "--listen", "127.0.0.1:0"],
            env={"LOOPWATCH_STALL_AFTER": "soon"})
    assert r.returncode == 2, r
    assert "--mode" in r.stderr and "maybe" in r.stderr and "observe" in r.stderr, r.stderr
    assert "LOOPWATCH_STALL_AFTER" in r.stderr and "soon" in r.stderr, r.stderr
    r = run(sidecar_bin, ["--no-such-flag", "1"])
    assert r.returncode == 2 and "--no-such-flag" in r.stderr, r


def test_print_config_precedence(sidecar_bin, tmp_path):
    (tmp_path / "c.yaml").write_text("stall_after: 7s\npoll_interval: 250ms\nmode: observe\n")
    r = run(sidecar_bin, ["--config", "c.yaml", "--print-config", "--mode", "enforce"],
            env={"LOOPWATCH_POLL_INTERVAL": "50ms"}, cwd=tmp_path)
    assert r.returncode == 0, r
    conf = dict(l.split(": ", 1) for l in r.stdout.splitlines() if ": " in l and not l.startswith("#"))
    assert conf["stall_after"] == "7s", r.stdout        # file
    assert conf["poll_interval"] == "50ms", r.stdout    # environment over file
    assert conf["mode"] == "enforce", r.stdout          # flag over file


def test_config_that_is_a_fifo_or_leaves_its_directory(sidecar_bin, tmp_path):
    """A FIFO used to hang `loopwatch run` at start (killed after 20 s): it is
    refused at once. A symbolic link out of the config's directory is
    refused too; one inside it (a ConfigMap mount) is taken."""
    import os
    fifo = tmp_path / "fifo.yaml"
    os.mkfifo(fifo)
    r = run(sidecar_bin, ["--config", str(fifo)])  # timeout=10 in run()
    assert r.returncode == 2, r
    assert "%s: is not a regular file; expected a YAML file" % fifo in r.stderr, r.stderr

    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "real.yaml").write_text("mode: observe\n")
    mount = tmp_path / "mount"
    mount.mkdir()
    (mount / "escape.yaml").symlink_to(tmp_path / "elsewhere" / "real.yaml")
    r = run(sidecar_bin, ["--config", str(mount / "escape.yaml"), "--print-config"])
    assert r.returncode == 2, r
    assert "is a symbolic link out of its directory" in r.stderr, r.stderr

    (mount / "..data").symlink_to(tmp_path / "elsewhere")  # absolute, but...
    (mount / "inside.yaml").symlink_to("..data/real.yaml")
    r = run(sidecar_bin, ["--config", str(mount / "inside.yaml"), "--print-config"])
    assert r.returncode == 2 and "out of its directory" in r.stderr, r.stderr
    (mount / "..data").unlink()
    (mount / "..2026_12_06").mkdir()
    (mount / "..2026_12_06" / "real.yaml").write_text("mode: observe\n")
    (mount / "..data").symlink_to("..2026_12_06")
    r = run(sidecar_bin, ["--config", str(mount / "inside.yaml"), "--print-config"])
    assert r.returncode == 0, r.stderr
    assert "mode: observe" in r.stdout, r.stdout
