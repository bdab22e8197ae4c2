#!/usr/bin/env python3
# Big messages (over 64 KiB, fetched in resumable ranges): their ranges are pipelined across
# messages, a new one's first bytes taken with the listing are not fetched again, and a kill
# at any step of their download and commit neither loses nor duplicates one.
import os
import re
import shutil
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "harness"))
sys.path.insert(0, os.path.join(HERE, "..", "tools"))
import ofstest as T  # noqa: E402
from imapspy import ImapSpy  # noqa: E402

ONE_CONNECTION = "connections = 1\n"
RANGE_RE = re.compile(r"^\S+ UID FETCH (\d+) \(UID BODY\.PEEK\[\]<(\d+)\.(\d+)>\)")


def check(cond, what):
    if not cond:
        raise AssertionError(what)


def big(n, seed, size):
    return T.make_message(n, seed, size=size, attachment=False)


def ranges(lines):
    """(uid, offset, length) of every ranged FETCH sent."""
    return [tuple(int(x) for x in m.groups()) for m in map(RANGE_RE.match, lines) if m]


def partial_files(ctx):
    d = os.path.join(ctx.local, "tmp")
    return [f for f in os.listdir(d) if f.startswith("ofsync-partial.")] \
        if os.path.isdir(d) else []


@T.test
def big_messages_share_round_trips(ctx):
    """The next ranges are on the wire while one streams: far fewer round trips than big
    messages (one each before)."""
    n = 30
    s = ctx.server()
    s.create("INBOX")
    msgs = [big(i, 61, 70000 + 9000 * (i % 7)) for i in range(1, n + 1)]
    for m in msgs:
        s.append("INBOX", m, [])
    ctx.populate({"INBOX": 5}, seed=61, start=n + 1)
    with ImapSpy(("127.0.0.1", ctx.dovecot.port)) as spy:
        lines = ctx.spied_sync(spy, ONE_CONNECTION)
        st = spy.stats()
    got = ranges(lines)
    print(f"  {n} big messages: {len(got)} ranges, {st['round_trips']} round trips")
    check(len({r[0] for r in got}) == n, f"{len(got)} ranges for {n} big messages: {got}")
    # greeting, login, LIST, SELECT + listing, the small ones' FETCH, LOGOUT, and the bursts
    # of ranged FETCHes: a few while the measured rate (and so the window) grows.
    check(st["round_trips"] <= 8 + n // 4,
          f"{st['round_trips']} round trips for {n} big messages: {st}")
    srv = ctx.assert_synced()
    check(all(len(srv["INBOX"][T.message_id(m)]) == 1 for m in msgs), "lost or duplicated")
    check(not partial_files(ctx), f"partial files left: {partial_files(ctx)}")


@T.test
def prefetched_prefix_is_not_fetched_again(ctx):
    """A few new messages come with the listing (QRESYNC), bigger ones their first 64 KiB:
    the ranged download of those starts after them."""
    ctx.populate({"INBOX": 5}, seed=62)
    ctx.sync()
    ctx.sync()
    s = ctx.server()
    sizes = [150000, 300000, 70000]
    msgs = [big(100 + i, 62, size) for i, size in enumerate(sizes)]
    for m in msgs:
        s.append("INBOX", m, [])
    with ImapSpy(("127.0.0.1", ctx.dovecot.port)) as spy:
        lines = ctx.spied_sync(spy, ONE_CONNECTION)
        st = spy.stats()
    got = ranges(lines)
    total = sum(len(m) for m in msgs)
    prefetched = any("RFC822.SIZE" in ln and "BODY.PEEK[]<0.65536>" in ln for ln in lines)
    if T.test_caps() == "full":
        check(prefetched, f"no prefix with the listing: {lines}")
    if prefetched:
        check(got and all(off >= 65536 for _, off, _ in got),
              f"a prefix fetched twice: {got}")
        # Every byte of the big messages crossed once (plus the protocol around them).
        check(st["bytes_down"] < total + 30000, f"{st['bytes_down']} bytes down for {total}")
    srv = ctx.assert_synced()
    check(all(len(srv["INBOX"][T.message_id(m)]) == 1 for m in msgs), "lost or duplicated")


@T.test
def kills_during_big_downloads_lose_and_duplicate_nothing(ctx):
    """An initial sync of big messages killed at each of its store steps, then a clean pass."""
    s = ctx.server()
    s.create("INBOX")
    msgs = [big(i, 63, 66000 + 20000 * i) for i in range(1, 7)]
    for m in msgs:
        s.append("INBOX", m, ["\\Seen"] if m is msgs[2] else [])
    ctx.populate({"INBOX": 3}, seed=63, start=10)
    kills = 0
    for n in range(1, 200):
        shutil.rmtree(ctx.local, ignore_errors=True)
        for suffix in ("", "-wal", "-shm"):
            if os.path.exists(ctx.state + suffix):
                os.remove(ctx.state + suffix)
        if not ctx.sync_killed_at(n):
            break
        kills += 1
        ctx.sync()
        srv = ctx.assert_synced()
        check(all(len(srv["INBOX"].get(T.message_id(m), [])) == 1 for m in msgs),
              f"kill at step {n}: a big message lost or duplicated")
        check(not partial_files(ctx), f"kill at step {n}: left {partial_files(ctx)}")
    print(f"  killed at {kills} steps of an initial sync of big messages, each resumed")
    check(kills >= 6, f"only {kills} kill points")


if __name__ == "__main__":
    sys.exit(T.main())
