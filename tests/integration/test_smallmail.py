#!/usr/bin/env python3
# Small messages (fetched whole): the next FETCH is on the wire while one streams, what arrived
# is made durable a batch at a time, and a kill or a cut across batch edges loses nothing.
import os
import re
import shutil
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "harness"))
sys.path.insert(0, os.path.join(HERE, "..", "tools"))
import ofstest as T  # noqa: E402
from imapspy import ImapSpy  # noqa: E402
from linkem import LinkEm  # noqa: E402

ONE_CONNECTION = "connections = 1\n"
BATCH = 4  # messages made durable together, lowered for these tests
BODY_RE = re.compile(r"^\S+ UID FETCH (\S+) \(UID FLAGS BODY\.PEEK\[\]\)")


def check(cond, what):
    if not cond:
        raise AssertionError(what)


class small_batches:
    """OFSYNC_TEST_DOWNLOAD_BATCH for the passes inside the block."""

    def __enter__(self):
        os.environ["OFSYNC_TEST_DOWNLOAD_BATCH"] = str(BATCH)

    def __exit__(self, *exc):
        del os.environ["OFSYNC_TEST_DOWNLOAD_BATCH"]


def body_fetches(lines):
    """The UID sets of the whole-message FETCHes sent."""
    return [m.group(1) for m in map(BODY_RE.match, lines) if m]


def uids(uidset):
    out = []
    for part in uidset.split(","):
        lo, _, hi = part.partition(":")
        out += range(int(lo), int(hi or lo) + 1)
    return out


def uid_count(uidset):
    return len(uids(uidset))


def small_only(ctx, n, seed):
    """n messages under the ranged-download threshold in INBOX."""
    s = ctx.server()
    s.create("INBOX")
    for i in range(1, n + 1):
        s.append("INBOX", T.make_message(i, seed, size=2000 + 97 * i, attachment=False), [])


def fresh(ctx):
    shutil.rmtree(ctx.local, ignore_errors=True)
    for suffix in ("", "-wal", "-shm"):
        if os.path.exists(ctx.state + suffix):
            os.remove(ctx.state + suffix)


@T.test
def batches_share_round_trips(ctx):
    """Each FETCH asks for several batches and the next one leaves while one streams: fewer
    round trips than batches (one FETCH, and one round trip, per batch before)."""
    n = 24 * BATCH
    small_only(ctx, n, 71)
    with small_batches(), ImapSpy(("127.0.0.1", ctx.dovecot.port)) as spy:
        lines = ctx.spied_sync(spy, ONE_CONNECTION)
        st = spy.stats()
    sets = body_fetches(lines)
    batches = n // BATCH
    print(f"  {n} messages, {batches} batches: {len(sets)} FETCHes, "
          f"{st['round_trips']} round trips")
    check(sum(uid_count(x) for x in sets) == n, f"messages fetched: {sets}")
    check(len(sets) < batches // 2, f"{len(sets)} FETCHes for {batches} batches")
    # greeting, login, LIST, SELECT + listing, LOGOUT and about one per FETCH.
    check(st["round_trips"] < 8 + batches // 2,
          f"{st['round_trips']} round trips for {batches} batches: {st}")
    srv = ctx.assert_synced()
    check(T.snapshot_count(srv) == n, f"{T.snapshot_count(srv)} messages, expected {n}")


@T.test
def kills_across_batch_edges_lose_and_duplicate_nothing(ctx):
    """An initial sync of several pipelined batches killed at each of its store steps (each
    message stored, each batch's flush), then a clean pass."""
    n = 5 * BATCH + 2
    small_only(ctx, n, 72)
    kills = 0
    with small_batches():
        for step in range(1, 400):
            fresh(ctx)
            if not ctx.sync_killed_at(step):
                break
            kills += 1
            ctx.sync()
            srv = ctx.assert_synced()
            check(T.snapshot_count(srv) == n, f"kill at step {step}: "
                  f"{T.snapshot_count(srv)} messages, expected {n}")
    print(f"  killed at {kills} steps of an initial sync of {n} small messages, each resumed")
    check(kills >= n, f"only {kills} kill points")


@T.test
def cut_mid_pipeline_keeps_what_arrived(ctx):
    """The link cut while a batch streams and the next FETCH is in flight: what arrived whole
    is kept, and only the rest is fetched again on the new connection."""
    n = 40 * BATCH
    small_only(ctx, n, 73)
    total = sum(2000 + 97 * i for i in range(1, n + 1))
    with small_batches(), LinkEm(("127.0.0.1", ctx.dovecot.port), down_cut_after=total // 2,
                                 faults="first") as em, ImapSpy(("127.0.0.1", em.port)) as spy:
        T.write_config(ctx.config, ctx.dovecot, ctx.user, ctx.local, ctx.state,
                       port=spy.port, extra={"connections": 1, "compress": "no"})
        rc, out, err = ctx.sync("-v", expect_rc=None)
        faults = em.stats()["faults"]
        lines = list(spy.lines)
    ctx.write_config()
    check(len(faults) == 1, f"the link was not cut (faults: {faults}):\n{out}{err}")
    m = re.search(r"while fetching \S+ UID (\d+)", out + err)
    check(m, f"the cut was not reported:\n{out}{err}")
    streaming = int(m.group(1))
    asked = [u for x in body_fetches(lines) for u in uids(x)]
    again = sorted({u for u in asked if asked.count(u) > 1})
    print(f"  cut while UID {streaming} streamed: fetched again {len(again)} of {n}")
    check(again and again[0] >= streaming, f"fetched again after arriving whole: {again}")
    check(len(again) <= 2 * 4 * BATCH, f"{len(again)} in flight at the cut: {again}")
    ctx.sync()
    srv = ctx.assert_synced()
    check(T.snapshot_count(srv) == n, f"{T.snapshot_count(srv)} messages, expected {n}")


if __name__ == "__main__":
    sys.exit(T.main())
