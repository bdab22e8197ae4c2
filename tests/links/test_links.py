#!/usr/bin/env python3
# Slow and flaky links through linkem: a stall or cut anywhere becomes a named line, a reconnect
# and a resumed pass that converges with nothing lost or twice, and ofsync is never silent.
import os
import re
import signal
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import faults  # noqa: E402
import linktest as L  # noqa: E402
import linkem  # noqa: E402  (on the path through linktest)

T = L.T
check = L.check
TIMEOUT = 2


def target(ctx):
    return ("127.0.0.1", ctx.dovecot.port)


def partial_files(ctx):
    d = os.path.join(ctx.local, "tmp")
    return sorted(f for f in os.listdir(d) if f.startswith("ofsync-partial.")) \
        if os.path.isdir(d) else []


def resumed_pass(ctx, em, missing, resumed):
    """The pass after a cut that left partial files: it resumes them (the line `resumed`
    matches) and moves little more than the missing bytes (and the small messages)."""
    down_before = em.stats()["counters"]["bytes_down"]
    w = L.run_watched(ctx)
    down = em.stats()["counters"]["bytes_down"] - down_before
    L.expect_rc(w)
    check(w.has(resumed), f"not resumed:\n{w.out}")
    check(down < missing + 60000, f"{down} bytes down for {missing} missing bytes")
    check(partial_files(ctx) == [], f"partial file left behind: {partial_files(ctx)}")
    L.assert_no_silence(w, TIMEOUT)
    return w


@T.test
def stall_mid_literal(ctx):
    ids = ctx.populate({"INBOX": 30}, seed=21)
    with L.LinkEm(target(ctx), down_stall_after=60000, faults="first") as em:
        L.configure(ctx, em.port, timeout=TIMEOUT)
        w = L.run_watched(ctx)
        st = em.stats()
    L.expect_rc(w)
    check(st["faults"] and st["faults"][0]["kind"] == "stall", f"no stall injected: {st}")
    check(w.has(r"no data from 127\.0\.0\.1 for 2 s while fetching INBOX UID \d+; "
                r"reconnecting in [\d.]+ s \(attempt 1 of 5\)"), f"stall not named:\n{w.out}")
    check(w.has(r"1 reconnects"), f"no reconnect in the summary:\n{w.out}")
    L.assert_no_silence(w, TIMEOUT)
    L.assert_converged(ctx, ids)


@T.test
def cut_mid_literal_resumes_from_last_byte(ctx):
    size = 400000
    msg = L.big_message(1, 22, size)
    s = ctx.server()
    s.create("INBOX")
    s.append("INBOX", msg, ["\\Seen"])
    ids = {"INBOX": [T.message_id(msg)]}
    ids["INBOX"] += ctx.populate({"INBOX": 3}, seed=23, start=2)["INBOX"]
    with L.LinkEm(target(ctx), down_cut_after=200000, faults="first") as em:
        # No reconnect: the cut ends the pass, and the next pass picks the bytes up.
        L.configure(ctx, em.port, timeout=TIMEOUT, attempts=0)
        w1 = L.run_watched(ctx)
        L.expect_rc(w1, 4)
        check(w1.has(r"E: .*lost.* while fetching INBOX UID 1"), f"cut not named:\n{w1.out}")
        parts = partial_files(ctx)
        check(len(parts) == 1, f"no partial file kept: {parts}")
        have = os.path.getsize(os.path.join(ctx.local, "tmp", parts[0]))
        check(100000 < have < size, f"partial file holds {have} bytes")
        # The second pass moves the rest of the big message, not all of it again.
        resumed_pass(ctx, em, size - have, rf"resuming UID 1 at {have} of \d+ bytes")
    L.assert_no_silence(w1, TIMEOUT)
    L.assert_converged(ctx, ids)


@T.test
def cut_mid_range_reconnects_within_the_pass(ctx):
    msg = L.big_message(1, 24, 300000)
    s = ctx.server()
    s.create("INBOX")
    s.append("INBOX", msg, [])
    with L.LinkEm(target(ctx), down_cut_after=150000, faults="first", cut_mode="fin") as em:
        L.configure(ctx, em.port, timeout=TIMEOUT)
        w = L.run_watched(ctx)
    L.expect_rc(w)
    check(w.has(r"closed the connection while fetching INBOX UID 1; reconnecting"),
          f"cut not named:\n{w.out}")
    check(w.has(r"resuming UID 1 at \d+ of \d+ bytes"), f"not resumed:\n{w.out}")
    L.assert_no_silence(w, TIMEOUT)
    L.assert_converged(ctx, {"INBOX": [T.message_id(msg)]})


@T.test
def cut_mid_pipelined_big_downloads_resumes(ctx):
    """The ranges of several big messages in flight when the link is cut: the complete ones
    are kept, what arrived of the others stays in their partial files, and the next pass asks
    only for the rest."""
    msgs = [L.big_message(n, 30, 150000) for n in range(1, 7)]
    s = ctx.server()
    s.create("INBOX")
    for m in msgs:
        s.append("INBOX", m, [])
    total, cut = sum(len(m) for m in msgs), 500000
    with L.LinkEm(target(ctx), down_cut_after=cut, faults="first") as em:
        L.configure(ctx, em.port, timeout=TIMEOUT, attempts=0, connections=1)
        w1 = L.run_watched(ctx)
        L.expect_rc(w1, 4)
        check(w1.has(r"E: .*lost.* while fetching INBOX UID \d+"), f"cut not named:\n{w1.out}")
        kept = len(ctx.snap_local().get("INBOX", {}))
        check(kept >= 2, f"the messages complete before the cut were not kept: {kept}")
        check(partial_files(ctx), "no partial file kept")
        # Only what had not arrived crosses again (the first pass's protocol cost a few KB).
        resumed_pass(ctx, em, total - cut, r"resuming UID \d+ at \d+ of \d+ bytes")
    L.assert_no_silence(w1, TIMEOUT)
    L.assert_converged(ctx, {"INBOX": [T.message_id(m) for m in msgs]})


@T.test
def cut_during_append(ctx):
    s = ctx.server()
    s.create("INBOX")
    ids = {"INBOX": []}
    for n in range(1, 7):
        msg = L.big_message(n, 25, 30000)
        T.local_add(ctx.local, ctx.layout, "INBOX", msg.replace(b"\r\n", b"\n"), ["\\Seen"])
        ids["INBOX"].append(T.message_id(msg))
    with L.LinkEm(target(ctx), up_cut_after=50000, faults="first") as em:
        L.configure(ctx, em.port, timeout=TIMEOUT)
        w = L.run_watched(ctx)
        st = em.stats()
    L.expect_rc(w)
    check(st["faults"] and st["faults"][0]["kind"] == "cut", f"no cut: {st}")
    check(w.has(r"while uploading to INBOX; reconnecting"), f"cut not named:\n{w.out}")
    L.assert_no_silence(w, TIMEOUT)
    L.assert_converged(ctx, ids)


@T.test
def cut_during_keepalive_noop(ctx):
    """ofsync works locally longer than the timeout (a local message that is a FIFO holds it
    in read()); before its next command it checks the idle link with NOOP, and the link is
    cut exactly then: the NOOP's answer never arrives."""
    ids = ctx.populate({"INBOX": 2}, seed=28)
    msg = L.big_message(9, 28, 3000)
    ids["INBOX"].append(T.message_id(msg))
    d = T.local_folder_dir(ctx.local, ctx.layout, "INBOX")
    for sub in ("cur", "new", "tmp"):
        os.makedirs(os.path.join(d, sub), exist_ok=True)
    fifo = os.path.join(d, "cur", "1700000000.M1P1Q1.fifo:2,S")
    os.mkfifo(fifo)
    with L.LinkEm(target(ctx)) as em:
        L.configure(ctx, em.port, timeout=TIMEOUT)
        result = {}
        runner = threading.Thread(target=lambda: result.update(w=L.run_watched(ctx)))
        runner.start()
        with open(fifo, "wb") as f:  # returns once ofsync opened the FIFO to upload it
            time.sleep(TIMEOUT + 0.5)
            conn = next(iter(em.conns))
            down = conn.pumps["down"]
            down.faults.insert(0, linkem._Fault("cut", down.delivered, mode="rst"))
            f.write(msg.replace(b"\r\n", b"\n"))
        regular = fifo + ".tmp"
        with open(regular, "wb") as f:
            f.write(msg.replace(b"\r\n", b"\n"))
        os.replace(regular, fifo)  # later reads see a plain file with the same key
        runner.join(120)
        st = em.stats()
    w = result["w"]
    L.expect_rc(w)
    check(st["faults"] and st["faults"][0]["kind"] == "cut", f"no cut: {st}")
    check(w.has(r"lost.* while checking the connection; reconnecting"),
          f"cut during NOOP not named:\n{w.out}")
    L.assert_converged(ctx, ids)


@T.test
def cut_during_idle(ctx):
    """`ofsync watch` waits for pushes in IDLE (or NOTIFY, which waits in IDLE too); every
    connection is cut while it waits. watch must notice, reconnect, and still bring in mail
    that arrives afterwards, without a poll (the poll interval is far away)."""
    ids = ctx.populate({"INBOX": 3}, seed=29)
    with L.LinkEm(target(ctx)) as em:
        L.configure(ctx, em.port, timeout=5, **{"poll-interval": 300, "watch-folders": "INBOX"})
        log = os.path.join(ctx.tmp, "watch.log")
        with open(log, "wb") as f:
            p = subprocess.Popen([T.ofsync_bin(), "--config", ctx.config, "-v", "watch"],
                                 stdin=subprocess.DEVNULL, stdout=f, stderr=subprocess.STDOUT)

        def output():
            with open(log, "rb") as f:
                return f.read().decode("utf-8", "replace")

        def wait(pred, what, timeout=30):
            end = time.monotonic() + timeout
            while not pred():
                check(p.poll() is None, f"watch exited ({p.returncode}):\n{output()}")
                check(time.monotonic() < end, f"{what} within {timeout} s:\n{output()[-3000:]}")
                time.sleep(0.05)

        try:
            wait(lambda: "connections up" in output() or "(up)" in output(), "push not up")
            time.sleep(1.0)  # the push connection is in IDLE now
            before = em.stats()["counters"]["connections"]
            for conn in list(em.conns):
                conn.abort("rst")
            msg = L.big_message(50, 29, 2000)
            ctx.server().append("INBOX", msg, ["\\Seen"])
            ids["INBOX"].append(T.message_id(msg))
            wait(lambda: T.local_find(ctx.local, ctx.layout, "INBOX", T.message_id(msg)),
                 "message not brought in after the cut")
            check(em.stats()["counters"]["connections"] > before, "watch did not reconnect")
            check(re.search(r"lost: .* while waiting for pushed changes \(IDLE\)", output()),
                  f"the cut during IDLE was not named:\n{output()[-2000:]}")
            p.send_signal(signal.SIGTERM)
            check(p.wait(timeout=30) == 0, f"watch exit status:\n{output()[-2000:]}")
        finally:
            if p.poll() is None:
                p.kill()
                p.wait()
    L.assert_converged(ctx, ids)


@T.test
def dialup_small_mailbox(ctx):
    """56 kbit/s, 300 ms round trip: first sync and a no-change resync."""
    ids = {"INBOX": [], "Sent": []}
    s = ctx.server()
    n = 1
    for folder in ids:
        s.create(folder)
        for _ in range(4):
            msg = L.big_message(n, 26, 1500)
            s.append(folder, msg, ["\\Seen"])
            ids[folder].append(T.message_id(msg))
            n += 1
    timeout = 3
    with L.LinkEm(target(ctx), rate_bps=56000, latency_ms=150) as em:
        L.configure(ctx, em.port, timeout=timeout)
        w1 = L.run_watched(ctx)
        w2 = L.run_watched(ctx)
    L.expect_rc(w1)
    L.expect_rc(w2)
    check(w2.has(r"nothing to do"), f"resync did something:\n{w2.out}")
    rt, kin, kout = L.summary(w2)
    print(f"  dial-up no-change resync: {w2.wall:.1f} s, {rt} round trips, "
          f"{kin:.1f} KiB in, {kout:.1f} KiB out")
    L.assert_no_silence(w1, timeout)
    L.assert_no_silence(w2, timeout)
    L.assert_converged(ctx, ids)


@T.test
def max_size_holds_big_messages_back(ctx):
    s = ctx.server()
    s.create("INBOX")
    small = [L.big_message(n, 27, 2000) for n in range(1, 4)]
    big = [L.big_message(n, 27, 120000) for n in range(4, 6)]
    for m in small + big:
        s.append("INBOX", m, [])
    ctx.write_config(extra={"max-size": 100000})
    _, out, _ = ctx.sync()
    check("2 held back on the server, larger than max-size" in out, f"not listed:\n{out}")
    check("; 2 held back on the server (" in out, f"not in the pass summary:\n{out}")
    loc = ctx.snap_local()
    check(set(loc["INBOX"]) == {T.message_id(m) for m in small}, f"local: {sorted(loc['INBOX'])}")
    _, out, _ = ctx.sync()
    check("nothing to do" in out, f"held-back messages made a no-change pass do something:\n{out}")
    T.local_delete(ctx.local, ctx.layout, "INBOX", T.message_id(small[0]))
    ctx.sync()
    srv = ctx.snap_server()
    check(set(srv["INBOX"]) == {T.message_id(m) for m in small[1:] + big},
          f"server: {sorted(srv['INBOX'])}")


@T.test
def random_fault_mix(ctx):
    """CI's short mode of `make faults`."""
    f, s, lost, dup = faults.run_faults(ctx, want=6, seed=5, timeout=TIMEOUT)
    print(f"  faults: {f}, survived: {s}, lost: {lost}, duplicated: {dup}")
    check(f >= 6 and f == s and lost == 0 and dup == 0, "faults not all survived")


if __name__ == "__main__":
    sys.exit(T.main())
