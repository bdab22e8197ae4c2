#!/usr/bin/env python3
# The embedding API through examples/poll_loop.c: a host's own poll() loop on ofs_fd() and
# ofs_dispatch() gets every event of a sync and of a watch, and the DONE event always arrives.
import os
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "harness"))
import ofstest as T  # noqa: E402


def check(cond, what):
    if not cond:
        raise AssertionError(what)


def poll_loop():
    exe = os.environ.get("OFS_POLL_LOOP") or os.path.join(
        os.path.dirname(T.ofsync_bin()), "poll_loop")
    if not os.access(exe, os.X_OK):
        raise AssertionError(f"example binary missing: {exe}")
    return exe


def summary(out):
    line = [ln for ln in out.splitlines() if ln.startswith("summary:")]
    check(line, f"no summary line:\n{out}")
    return dict(kv.split("=") for kv in line[-1].split()[1:])


@T.test
def embedded_sync_delivers_every_event(ctx):
    ctx.populate({"INBOX": 30, "Archive": 10}, seed=21)
    p = subprocess.run([poll_loop(), ctx.config, "test", "sync"], capture_output=True,
                       timeout=120, stdin=subprocess.DEVNULL)
    out = p.stdout.decode()
    check(p.returncode == 0, f"exit {p.returncode}:\n{out}\n{p.stderr.decode()}")
    s = summary(out)
    check(s["done"] == "1" and s["result"] == "0", f"summary {s}")
    check("event folder-done test/INBOX: 30 downloaded" in out, f"folder event missing:\n{out}")
    check("event pass-done test" in out, "pass-done missing")
    ctx.assert_synced()


@T.test
def embedded_watch_sees_changes_and_stops(ctx):
    ctx.write_config(extra={"poll-interval": 5, "timeout": 10})
    ctx.populate({"INBOX": 5}, seed=22)
    p = subprocess.Popen([poll_loop(), ctx.config, "test", "watch", "60"],
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                         stdin=subprocess.DEVNULL)
    lines = []
    try:
        def read_until(text, timeout=30):
            end = time.monotonic() + timeout
            while time.monotonic() < end:
                ln = p.stdout.readline().decode()
                if not ln:
                    break
                lines.append(ln)
                if text in ln:
                    return
            raise AssertionError(f"no {text!r}:\n{''.join(lines)}")
        read_until("event waiting")
        msg = T.make_message(300, 22)
        ctx.server().append("INBOX", msg, [])
        read_until("1 downloaded")
        check(T.local_find(ctx.local, ctx.layout, "INBOX", T.message_id(msg)), "not downloaded")
        p.send_signal(signal.SIGTERM)
        rest, _ = p.communicate(timeout=30)
        out = "".join(lines) + rest.decode()
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    check(p.returncode == 0, f"exit {p.returncode}:\n{out}")
    s = summary(out)
    check(s["done"] == "1" and s["result"] == "0", f"summary {s}")
    check(int(s["changes"]) >= 1, f"no change event: {s}")
    ctx.assert_synced()


if __name__ == "__main__":
    sys.exit(T.main())
