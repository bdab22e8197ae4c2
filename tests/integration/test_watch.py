#!/usr/bin/env python3
# `ofsync watch` against a private Dovecot: convergence under continuous changes on both sides
# at random moments, clean ends on SIGTERM/SIGINT, replaced push connections, and the
# change-to-arrival latency (printed, not asserted). full caps push through NOTIFY, plain
# through IDLE on INBOX plus status polls.
import os
import random
import signal
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "harness"))
import ofstest as T  # noqa: E402

SEEN, FLAGGED, ANSWERED = "\\Seen", "\\Flagged", "\\Answered"
SPEC = {"INBOX": 20, "Archive": 8, "Lists/dev": 8}


def check(cond, what):
    if not cond:
        raise AssertionError(what)


class Watch:
    """ofsync watch as a child process; its output goes to a file for post-mortems."""

    def __init__(self, ctx, *args, renew=4):
        self.log = os.path.join(ctx.tmp, "watch.log")
        env = dict(os.environ, OFSYNC_IDLE_RENEW=str(renew))
        self.f = open(self.log, "wb")
        self.p = subprocess.Popen([T.ofsync_bin(), "--config", ctx.config, "-v", "watch", *args],
                                  stdin=subprocess.DEVNULL, stdout=self.f, stderr=subprocess.STDOUT,
                                  env=env)

    def output(self):
        with open(self.log, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def wait_for(self, text, timeout=60):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if text in self.output():
                return
            check(self.p.poll() is None, f"watch exited ({self.p.returncode}):\n{self.output()}")
            time.sleep(0.05)
        raise AssertionError(f"no {text!r} from watch in {timeout} s:\n{self.output()[-3000:]}")

    def stop(self, sig=signal.SIGTERM, timeout=30):
        self.p.send_signal(sig)
        try:
            rc = self.p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.p.kill()
            self.p.wait()
            raise AssertionError(f"watch did not end within {timeout} s of {sig!r}:\n"
                                 f"{self.output()[-3000:]}")
        self.f.close()
        return rc

    def kill(self):
        if self.p.poll() is None:
            self.p.kill()
            self.p.wait()
        self.f.close()


def configure(ctx, poll=5, timeout=10):
    ctx.write_config(extra={"poll-interval": poll, "timeout": timeout,
                            "watch-folders": "INBOX Lists/*"})


def wait_synced(ctx, timeout=45):
    end = time.monotonic() + timeout
    last = None
    while time.monotonic() < end:
        try:
            return ctx.assert_synced()
        except AssertionError as e:
            last = e
        time.sleep(0.5)
    raise AssertionError(f"not converged within {timeout} s: {last}")


def random_change(ctx, s, rnd, state):
    """One change on one side; races with ofsync renaming the same file are skipped."""
    folder = rnd.choice(list(SPEC) + ["Sent"])
    side = rnd.choice(("server", "local"))
    op = rnd.choices(("add", "flag", "delete"), weights=(4, 4, 2))[0]
    state["n"] += 1
    msg = T.make_message(5000 + state["n"], 77)
    try:
        if side == "server":
            if folder not in s.folders():
                s.create(folder)
            mids = list(s.snapshot().get(folder, {}))
            if op == "add" or not mids:
                s.append(folder, msg, rnd.choice(([], [SEEN], [SEEN, FLAGGED])))
            elif op == "flag":
                s.set_flags(folder, rnd.choice(mids), rnd.choice(([SEEN], [FLAGGED], [ANSWERED])))
            else:
                s.delete(folder, rnd.choice(mids))
        else:
            mids = list(T.snapshot_local(ctx.local, ctx.layout).get(folder, {}))
            if op == "add" or not mids:
                T.local_add(ctx.local, ctx.layout, folder, msg.replace(b"\r\n", b"\n"),
                            rnd.choice(((), "S", "FS")))
            elif op == "flag":
                T.local_set_flags(ctx.local, ctx.layout, folder, rnd.choice(mids),
                                  rnd.choice(("S", "F", "RS")))
            else:
                T.local_delete(ctx.local, ctx.layout, folder, rnd.choice(mids))
    except (OSError, T.HarnessError) as e:
        state["skipped"] += 1
        if os.environ.get("OFS_VERBOSE"):
            print(f"  skipped {side} {op} {folder}: {e}")


@T.test
def watch_converges_under_random_changes(ctx):
    configure(ctx)
    ctx.populate(SPEC, seed=77)
    w = Watch(ctx)
    try:
        w.wait_for("waiting for changes")
        wait_synced(ctx)
        rnd = random.Random(int(os.environ.get("OFS_WATCH_SEED", "7")))
        state = {"n": 0, "skipped": 0}
        s = ctx.server()
        end = time.monotonic() + 8
        while time.monotonic() < end:
            random_change(ctx, s, rnd, state)
            time.sleep(rnd.choice((0, 0, 0.01, 0.05, 0.2, 0.5)))
        # A folder born on each side while watching.
        T.local_add(ctx.local, ctx.layout, "Projects/new", T.make_message(9001, 77), "S")
        s.create("Server/made")
        s.append("Server/made", T.make_message(9002, 77), [FLAGGED])
        srv = wait_synced(ctx)
        check("Projects/new" in srv and "Server/made" in srv, f"new folders: {sorted(srv)}")
        print(f"  {state['n']} random changes ({state['skipped']} skipped as racing), "
              f"{T.snapshot_count(srv)} messages converged")
        rc = w.stop()
        check(rc == 0, f"watch exit {rc}:\n{w.output()[-3000:]}")
    finally:
        w.kill()
    _, out, _ = ctx.sync()
    check("nothing to do" in out, f"a sync after watch still had work:\n{out}")
    ctx.assert_synced()


@T.test
def sigterm_and_sigint_end_watch_cleanly(ctx):
    # The default timeout: an exit that waits for a server answer to come would take 60 s.
    configure(ctx, timeout=60)
    ctx.populate({"INBOX": 5}, seed=3)
    for sig in (signal.SIGTERM, signal.SIGINT):
        w = Watch(ctx)
        try:
            w.wait_for("waiting for changes")
            rc = w.stop(sig, timeout=15)
            check(rc == 0, f"exit {rc} after {sig!r}:\n{w.output()[-2000:]}")
        finally:
            w.kill()
    ctx.assert_synced()


@T.test
def sigterm_during_initial_sync_loses_nothing(ctx):
    configure(ctx)
    ctx.populate({"INBOX": 600, "Archive": 600}, seed=5)
    w = Watch(ctx)
    try:
        # Stop once the first folder's first batch is on disk: mid-folder, mid-pass.
        end = time.monotonic() + 60
        while not T.snapshot_count(T.snapshot_local(ctx.local, ctx.layout)):
            check(time.monotonic() < end, f"nothing downloaded in 60 s:\n{w.output()[-3000:]}")
            check(w.p.poll() is None, f"watch exited:\n{w.output()[-3000:]}")
            time.sleep(0.02)
        rc = w.stop(signal.SIGTERM, timeout=60)
        check(rc == 0, f"exit {rc}:\n{w.output()[-2000:]}")
    finally:
        w.kill()
    local = T.snapshot_local(ctx.local, ctx.layout)
    check(T.snapshot_duplicates(local) == [], "duplicates after a stop")
    # The stop came during the first folder: it was finished, the second one not begun.
    check(T.snapshot_count(local) < 1200, f"the pass did not stop: {T.snapshot_counts(local)}")
    ctx.sync(timeout=300)
    ctx.assert_synced()


@T.test
def dead_push_connection_is_replaced(ctx):
    # A long poll interval: only push (or the catch-up after a replaced connection) can bring
    # the message in time.
    configure(ctx, poll=300)
    ctx.populate({"INBOX": 3}, seed=9)
    w = Watch(ctx)
    try:
        w.wait_for("connections up" if ctx.caps == "plain" else "(up)")
        ctx.dovecot.doveadm("kick", ctx.user)
        w.wait_for("lost, replacing it", timeout=30)
        msg = T.make_message(700, 9)
        ctx.server().append("INBOX", msg, [SEEN])
        mid = T.message_id(msg)
        end = time.monotonic() + 30
        while not T.local_find(ctx.local, ctx.layout, "INBOX", mid):
            check(time.monotonic() < end, f"message not pushed after the kick:\n{w.output()[-3000:]}")
            time.sleep(0.05)
        check(w.stop() == 0, "exit status")
    finally:
        w.kill()
    ctx.assert_synced()


def _wait(pred, timeout=20):
    end = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > end:
            return None
        time.sleep(0.005)
    return True


@T.test
def push_latency(ctx):
    configure(ctx, poll=300)
    ctx.populate({"INBOX": 3}, seed=13)
    w = Watch(ctx, renew=1500)
    down, up = [], []
    try:
        w.wait_for("waiting for changes")
        w.wait_for("connections up" if ctx.caps == "plain" else "(up)")
        s = ctx.server()
        for i in range(8):
            msg = T.make_message(800 + i, 13)
            mid = T.message_id(msg)
            t0 = time.monotonic()
            s.append("INBOX", msg, [])
            check(_wait(lambda: T.local_find(ctx.local, ctx.layout, "INBOX", mid)),
                  f"server message {mid} never arrived:\n{w.output()[-3000:]}")
            down.append(time.monotonic() - t0)
            msg = T.make_message(900 + i, 13)
            mid = T.message_id(msg)
            t0 = time.monotonic()
            T.local_add(ctx.local, ctx.layout, "INBOX", msg.replace(b"\r\n", b"\n"), "S")
            check(_wait(lambda: s.uids_by_message_id("INBOX", mid)),
                  f"local message {mid} never arrived:\n{w.output()[-3000:]}")
            up.append(time.monotonic() - t0)
            time.sleep(0.3)
        check(w.stop() == 0, "exit status")
    finally:
        w.kill()
    print(f"  latency server->local median {statistics.median(down) * 1000:.0f} ms "
          f"(max {max(down) * 1000:.0f}), local->server median "
          f"{statistics.median(up) * 1000:.0f} ms (max {max(up) * 1000:.0f}), caps={ctx.caps}")
    ctx.assert_synced()


if __name__ == "__main__":
    sys.exit(T.main())
