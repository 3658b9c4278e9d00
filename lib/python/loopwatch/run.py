# SPDX-License-Identifier: Apache-2.0
"""python -m loopwatch.run [OPTIONS] -- COMMAND [ARG]...

Runs COMMAND with every asyncio and uvloop event loop of every Python process
it starts watched by loopwatch, with no change to the app:

  python -m loopwatch.run -- uvicorn app:app --workers 4
  python -m loopwatch.run -- gunicorn -k uvicorn.workers.UvicornWorker app:app -w 4

Each loop gets a slot named by role and pid (uvicorn-7, uvicorn-worker-12,
gunicorn-worker-13); workers that are restarted register again, and killed
ones show up dead in the sidecar until their slot is reclaimed. uvicorn's app
(also under gunicorn's UvicornWorker) is wrapped in
loopwatch.asgi.LoopwatchMiddleware, and every aiohttp Application (also
under gunicorn's GunicornWebWorker) gets loopwatch.aiohttp.middleware, so
stall reports list the requests in flight.

How: COMMAND is exec'd (same pid) with a sitecustomize of loopwatch's first
on PYTHONPATH; Python processes below it import it at start-up. A Python
started with -I, -E or -S skips it.

Options (each also read from the environment, as the library does):
  --segment PATH    the segment file (LOOPWATCH_SEGMENT); without it
                    loopwatch is off and COMMAND runs unwatched
  --interval DUR    heartbeat period, e.g. 100ms (LOOPWATCH_INTERVAL)
  --role NAME       first part of slot names (LOOPWATCH_ROLE; default:
                    COMMAND's name)
  --no-middleware   record no requests: neither uvicorn's app nor aiohttp's
                    gets the middleware
  -q, --quiet       no "loopwatch:" lines on stderr (LOOPWATCH_QUIET=1)
  -h, --help        print this help and exit

Exit status: COMMAND's; 2 for bad options, 126/127 when COMMAND cannot run.
"""

from __future__ import annotations

import os
import sys
from typing import List, Optional

from ._heartbeat import parse_duration


def _usage_error(msg: str) -> int:
    sys.stderr.write("loopwatch.run: %s\n" % msg)
    sys.stderr.write("usage: python -m loopwatch.run [OPTIONS] -- COMMAND [ARG]...  (--help)\n")
    return 2


def _role_of(command: List[str]) -> str:
    """uvicorn for `uvicorn ...` and for `python3 -m uvicorn ...`."""
    prog = os.path.basename(command[0])
    if prog.startswith("python"):
        # Python's own options come first; the first other word ends them.
        for i, word in enumerate(command[1:-1], 1):
            if word == "-m":
                return command[i + 1].split(".")[0]
            if not word.startswith("-"):
                break
    return prog or "python"


def main(argv: Optional[List[str]] = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    env = dict(os.environ)
    command: List[str] = []
    quiet = env.get("LOOPWATCH_QUIET", "") not in ("", "0")
    middleware = True
    i = 0
    while i < len(args):
        a = args[i]
        if a == "--":
            command = args[i + 1:]
            break
        if a in ("-h", "--help"):
            sys.stdout.write(__doc__.lstrip())
            return 0
        if a in ("-q", "--quiet"):
            quiet = True
            i += 1
            continue
        if a == "--no-middleware":
            middleware = False
            i += 1
            continue
        key, _, value = a.partition("=")
        if key in ("--segment", "--interval", "--role"):
            if not _:
                if i + 1 >= len(args):
                    return _usage_error("%s needs a value" % key)
                value = args[i + 1]
                i += 1
            if key == "--segment":
                if not value:
                    return _usage_error("--segment: expected a file path")
                env["LOOPWATCH_SEGMENT"] = os.path.abspath(value)
            elif key == "--interval":
                try:
                    seconds = parse_duration(value)
                except ValueError as e:
                    return _usage_error("--interval %s" % e)
                if not 0.001 <= seconds <= 60:
                    return _usage_error("--interval %r: expected a duration from 1ms to 60s" % value)
                env["LOOPWATCH_INTERVAL"] = value
            else:
                if not value or len(value) > 40:
                    return _usage_error("--role: expected a name of 1 to 40 characters")
                env["LOOPWATCH_ROLE"] = value
            i += 1
            continue
        if a.startswith("-"):
            return _usage_error("unknown option %r" % a)
        # No "--": the command starts at the first word that is not an option.
        command = args[i:]
        break
    if not command:
        return _usage_error("no command to run")

    package_parent = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    bootstrap = os.path.join(package_parent, "loopwatch", "_bootstrap")
    # The bootstrap first, then the app's path as it was: the bootstrap adds
    # package_parent at the end of sys.path where loopwatch is not importable
    # (the bootstrap of `loopwatch python-payload`, the same file).
    path = [bootstrap] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    env["PYTHONPATH"] = os.pathsep.join(path)
    env["LOOPWATCH_AUTO"] = "1"
    env.setdefault("LOOPWATCH_ROLE", _role_of(command))
    env["LOOPWATCH_ROOT_PID"] = str(os.getpid())  # exec keeps the pid
    if not middleware:
        env["LOOPWATCH_MIDDLEWARE"] = "0"
    if quiet:
        env["LOOPWATCH_QUIET"] = "1"
    else:
        segment = env.get("LOOPWATCH_SEGMENT")
        if segment:
            sys.stderr.write("loopwatch.run: watching every event loop of `%s` (segment %s, "
                             "interval %s)\n" % (" ".join(command), segment,
                                                 env.get("LOOPWATCH_INTERVAL", "100ms")))
        else:
            sys.stderr.write("loopwatch.run: LOOPWATCH_SEGMENT is not set (nor --segment): "
                             "`%s` runs unwatched\n" % " ".join(command))
    sys.stderr.flush()
    try:
        os.execvpe(command[0], command, env)
    except FileNotFoundError:
        sys.stderr.write("loopwatch.run: %s: command not found\n" % command[0])
        sys.stderr.flush()
        return 127
    except OSError as e:
        sys.stderr.write("loopwatch.run: %s: cannot run: %s\n" % (command[0], e.strerror))
        return 126
    return 0  # not reached


if __name__ == "__main__":
    sys.exit(main())
