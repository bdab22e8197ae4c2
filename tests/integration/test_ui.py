#!/usr/bin/env python3
# What a user sees: the live display in a real terminal (tmux) over a slowed link with a stall,
# --json parsed line by line, the pass summary, and plain timestamped lines without a terminal.
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "harness"))
sys.path.insert(0, os.path.join(HERE, "..", "tools"))
import ofstest as T  # noqa: E402
from linkem import LinkEm  # noqa: E402

JSON_TYPES = {"pass-start", "folder-start", "progress", "waiting", "folder-done", "error",
              "pass-done", "summary", "notice"}


def check(cond, what):
    if not cond:
        raise AssertionError(what)


class Tmux:
    """A private tmux server (its own socket) running one command in a fixed-size window."""

    def __init__(self, tmp, width=100, height=30):
        self.tmux = shutil.which("tmux")
        if not self.tmux:
            raise AssertionError("tmux not installed (scripts/deps.sh installs it)")
        self.sock = os.path.join(tmp, "tmux.sock")
        self.width, self.height = width, height

    def _run(self, *args, check_rc=True):
        p = subprocess.run([self.tmux, "-S", self.sock] + list(args), capture_output=True,
                           stdin=subprocess.DEVNULL, timeout=20)
        if check_rc and p.returncode != 0:
            raise AssertionError(f"tmux {args[0]}: {p.stderr.decode(errors='replace')}")
        return p.stdout.decode("utf-8", "replace")

    def start(self, cmd):
        # The shell stays after the command (sleep), so its final screen can be inspected;
        # "EXIT=" on the screen says the command is over.
        self._run("-f", "/dev/null", "new-session", "-d", "-x", str(self.width), "-y",
                  str(self.height), "-e", "LANG=C.UTF-8", f"{cmd}; echo EXIT=$?; sleep 300")

    def capture(self, join=True):
        return self._run("capture-pane", "-p", *(["-J"] if join else []))

    def done(self, screen):
        return re.search(r"^EXIT=\d+", screen, re.M) is not None

    def wait(self, timeout=60):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            screen = self.capture()
            if self.done(screen):
                return screen
            time.sleep(0.1)
        raise AssertionError(f"command did not finish in {timeout} s:\n{self.capture()}")

    def resize(self, width):
        self._run("resize-window", "-x", str(width), check_rc=False)

    def stop(self):
        self._run("kill-server", check_rc=False)


BAR = re.compile(r"\[[#-]{10,}\] +\d+/\d+")


@T.test
def tty_bars_waiting_line_and_clean_exit(ctx):
    # Large enough messages that a 400 kbit/s link takes a few seconds, and a 3 s stall of
    # the server's bytes in the middle: the display must say what it waits for.
    s = ctx.server()
    for n in range(1, 13):
        s.append("INBOX", T.make_message(n, 5, size=40000))
    tmp = ctx.tmp
    with LinkEm(("127.0.0.1", ctx.dovecot.port), rate_bps=400000, latency_ms=20,
                down_stall_after=200000, stall_for=3.0, faults="first") as em:
        text = open(ctx.config).read()
        open(ctx.config, "w").write(text.replace(f"port = {ctx.dovecot.port}\n",
                                                 f"port = {em.port}\n"))
        tm = Tmux(tmp)
        tm.start(f"{shlex.quote(T.ofsync_bin())} --config {shlex.quote(ctx.config)} sync")
        screens = []
        try:
            deadline = time.monotonic() + 90
            resized = False
            while time.monotonic() < deadline:
                screen = tm.capture()
                screens.append(screen)
                if tm.done(screen):
                    break
                if not resized and BAR.search(screen):
                    tm.resize(70)  # SIGWINCH mid-sync: lines must fit the new width
                    resized = True
                time.sleep(0.1)
            final = tm.capture()
        finally:
            tm.stop()
    check("EXIT=0" in final, f"sync did not exit 0:\n{final}")
    live = "\n".join(screens)
    check(BAR.search(live), f"no progress bar was ever on screen:\n{screens[-3:]}")
    if os.environ.get("OFS_DEBUG"):
        print([x.split("\n")[0] for x in screens])
    waits = re.findall(r"waiting for server: (\d+) s, (fetching INBOX UID \d+)", live)
    check(waits, f"no waiting line during the stall:\n{[x for x in screens if 'INBOX' in x][-3:]}")
    check(any(int(w[0]) >= 2 for w in waits), f"waiting time never counted up: {waits}")
    check(re.search(r"\d+(\.\d)? (B|KiB|MiB)/s", live), "no transfer rate shown")
    # Clean at exit: the summary stays, no bar, no waiting line, no total line.
    check(not BAR.search(final), f"a bar is left on the final screen:\n{final}")
    check("waiting for server" not in final, f"waiting line left on screen:\n{final}")
    check("total:" not in final, f"total line left on screen:\n{final}")
    check(re.search(r"test: 1 folders; local: \+12 added", final), f"no summary:\n{final}")
    # Live lines never wrap (capture -J joins wrapped lines): they fit the width, also after
    # the resize to 70 columns.
    for screen in screens:
        for line in screen.splitlines():
            if BAR.search(line) or line.startswith("total:"):
                check(len(line) < 100, f"live line wider than the terminal: {line!r}")
    check(any(BAR.search(x) and max(len(ln) for ln in x.splitlines()) < 70 for x in screens),
          "no bar redrawn to the new width after the resize")
    ctx.assert_synced()


@T.test
def tty_quiet_prints_nothing(ctx):
    ctx.populate({"INBOX": 5}, seed=3)
    tm = Tmux(ctx.tmp)
    tm.start(f"{shlex.quote(T.ofsync_bin())} -q --config {shlex.quote(ctx.config)} sync")
    try:
        final = tm.wait()
    finally:
        tm.stop()
    lines = [ln for ln in final.splitlines() if ln.strip()]
    check(lines == ["EXIT=0"], f"-q printed something:\n{final}")
    check(len(ctx.snap_local()["INBOX"]) == 5, "-q did not sync")


def parse_json_lines(out):
    events = []
    for i, line in enumerate(out.splitlines(), 1):
        try:
            ev = json.loads(line)
        except ValueError as e:
            raise AssertionError(f"--json line {i} is not JSON ({e}): {line!r}")
        check(isinstance(ev, dict) and ev.get("type") in JSON_TYPES,
              f"line {i}: no known type: {line!r}")
        check("time" in ev and "account" in ev, f"line {i}: no time/account: {line!r}")
        events.append(ev)
    return events


@T.test
def json_events_parse_and_add_up(ctx):
    ids = ctx.populate({"INBOX": 20, "Archive": 5}, seed=9)
    s = ctx.server()
    s.create("Dépôt/日本")
    s.append("Dépôt/日本", T.make_message(100, 9))
    s.create('Say "hi" \\ there')  # quotes and a backslash need escaping in JSON
    rc, out, err = ctx.ofsync("--json", "sync")
    events = parse_json_lines(out)
    types = [e["type"] for e in events]
    check(types[0] == "pass-start", f"first event {types[:3]}")
    check(types[-2:] == ["pass-done", "summary"], f"last events {types[-3:]}")
    for t in ("folder-start", "progress", "folder-done"):
        check(t in types, f"no {t} event: {sorted(set(types))}")
    folders = {e["folder"] for e in events if e["type"] == "folder-done"}
    check({"INBOX", "Archive", "Dépôt/日本", 'Say "hi" \\ there'} <= folders,
          f"folder-done for {folders}")
    summ = events[-1]
    check(summ["local"]["added"] == 26, f"summary local added {summ['local']}")
    check(summ["server"]["added"] == 0, f"summary server added {summ['server']}")
    check(summ["net_in"] > 0 and summ["round_trips"] > 0, f"no wire counters: {summ}")
    check(summ["local"]["folders_created"] >= 3, f"folders created {summ['local']}")
    last = [e for e in events if e["type"] == "progress" and e["folder"] == "INBOX"][-1]
    check(last["done"] == last["total"] == 20 and last["bytes_done"] == last["bytes_total"] > 0,
          f"last INBOX progress {last}")
    pd = events[-2]
    check(pd["ok"] is True and pd["status"] == 0, f"pass-done {pd}")
    del ids


@T.test
def json_error_when_server_unreachable(ctx):
    import socket
    with socket.socket() as sk:
        sk.bind(("127.0.0.1", 0))
        port = sk.getsockname()[1]
    text = open(ctx.config).read().replace(f"port = {ctx.dovecot.port}", f"port = {port}")
    open(ctx.config, "w").write(text)
    rc, out, err = ctx.ofsync("--json", "sync", expect_rc=4)
    events = parse_json_lines(out)
    check(events and events[-1]["type"] == "error" and events[-1]["code"] == 4,
          f"no error event: {events}")
    check(events[-1]["folder"] is None and "connect" in events[-1]["message"], str(events[-1]))
    check(len(err.strip().splitlines()) == 1, f"stderr: {err!r}")


@T.test
def plain_lines_are_timestamped_with_summary(ctx):
    ctx.populate({"INBOX": 4, "Sent": 2}, seed=4)
    rc, out, err = ctx.sync()
    lines = out.strip().splitlines()
    stamp = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d ")
    check(all(stamp.match(ln) for ln in lines), f"untimestamped lines:\n{out}")
    check(any("INBOX: 4 downloaded" in ln for ln in lines), f"no folder line:\n{out}")
    summary = lines[-1]
    check(re.search(r"local: \+6 added, 0 flags changed, -0 expunged", summary), summary)
    check(re.search(r"server: \+0 added", summary), summary)
    check(re.search(r"\d+ round trips, \d+\.\d s$", summary), summary)
    T.local_set_flags(ctx.local, ctx.layout, "INBOX", T.message_id(
        T.make_message(1, 4)), "FS")
    rc, out, err = ctx.sync()
    check(re.search(r"server: \+0 added, 1 flags changed", out), f"flag change summary:\n{out}")


if __name__ == "__main__":
    sys.exit(T.main())
