#!/usr/bin/env python3
# Parallel connections in a sync pass (connections = N): folders spread over several logins,
# the result the same as on one connection, a no-change pass on one connection, and a cut
# link on one of them converging, and the budget of messages in progress at once.
# Connections are counted by a recording proxy (imapspy).
import json
import os
import re
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "harness"))
sys.path.insert(0, os.path.join(HERE, "..", "tools"))
import ofstest as T  # noqa: E402
from imapspy import ImapSpy  # noqa: E402
from linkem import LinkEm  # noqa: E402

# Enough folders and mail that the first connection cannot finish before the others log in.
SPEC = {f"F{i:02d}": 20 + 3 * i for i in range(16)}
SPEC["INBOX"] = 60


def check(cond, what):
    if not cond:
        raise AssertionError(what)


def full():
    return T.test_caps() == "full"


def configure(ctx, port, connections, local=None, state=None, extra=None):
    """The test's account through port, uncompressed so that the proxy reads the commands."""
    T.write_config(ctx.config, ctx.dovecot, ctx.user, local or ctx.local, state or ctx.state,
                   port=port,
                   extra={"connections": connections, "compress": "no", **(extra or {})})


def spied_sync(ctx, connections, expect_rc=0, **kw):
    with ImapSpy(("127.0.0.1", ctx.dovecot.port)) as spy:
        configure(ctx, spy.port, connections, **kw)
        ctx.sync(expect_rc=expect_rc)
        return spy.stats()


def selecting(st):
    """Connections that opened at least one folder."""
    return [c for c in st["per_conn"] if c["commands"].get("SELECT", 0)]


def add_local(ctx, root, count, seed):
    for n in range(1, count + 1):
        T.local_add(root, ctx.layout, f"F{n % 5:02d}", T.make_message(10000 + n, seed))


@T.test
def parallel_pass_matches_one_connection(ctx):
    ctx.populate(SPEC, seed=31)
    add_local(ctx, ctx.local, 25, seed=32)
    st = spied_sync(ctx, 4)
    srv = ctx.assert_synced()
    check(st["connections"] == 4, f"expected 4 connections, got {st['connections']}")
    check(st["max_active"] >= 2, f"connections were never open at once: {st}")
    check(len(selecting(st)) >= 2, f"only one connection synced folders: {st['per_conn']}")
    check(T.snapshot_count(srv) == sum(SPEC.values()) + 25, "messages lost or duplicated")
    # A second replica on one connection ends with the same mail and flags.
    other = os.path.join(ctx.tmp, "Mail1")
    st1 = spied_sync(ctx, 1, local=other, state=os.path.join(ctx.tmp, "state1.db"))
    check(st1["connections"] == 1, f"connections = 1 made {st1['connections']} connections")
    T.assert_snapshots_equal(T.snapshot_local(ctx.local, ctx.layout),
                             T.snapshot_local(other, ctx.layout), ("connections=4", "=1"))


@T.test
def extra_connections_only_for_folders_with_work(ctx):
    ids = ctx.populate(SPEC, seed=33)
    configure(ctx, ctx.dovecot.port, 4)
    ctx.sync()
    time.sleep(0.25)
    ctx.sync()  # records the local marks once the folders settled
    time.sleep(0.25)
    st = spied_sync(ctx, 4)
    if not full():
        # Without CONDSTORE every folder is read, so the pass has work for all connections.
        check(st["connections"] <= 4, f"more than connections = 4: {st['connections']}")
        ctx.assert_synced()
        return
    check(st["connections"] == 1, f"a no-change pass made {st['connections']} connections")
    check(not st["commands"].get("SELECT"), f"a no-change pass opened folders: {st}")
    s = ctx.server()
    s.add_flags("F03", ids["F03"][0], ["\\Flagged"])
    st = spied_sync(ctx, 4)
    check(st["connections"] == 1, f"one changed folder made {st['connections']} connections")
    # That pass changed F03 locally, so the next one reads it again: let it record its mark.
    time.sleep(0.25)
    ctx.sync()
    time.sleep(0.25)
    s.add_flags("F04", ids["F04"][0], ["\\Flagged"])
    s.add_flags("F05", ids["F05"][1], ["\\Seen"])
    st = spied_sync(ctx, 4)
    check(st["connections"] == 2, f"two changed folders made {st['connections']} connections")
    ctx.assert_synced()


@T.test
def cut_connection_converges(ctx):
    ctx.populate(SPEC, seed=35)
    add_local(ctx, ctx.local, 25, seed=36)
    # The second connection (the first extra one) is cut in the middle of its downloads.
    with LinkEm(("127.0.0.1", ctx.dovecot.port), down_cut_after=40000, faults="#2") as em:
        configure(ctx, em.port, 4)
        rc, out, err = ctx.sync(expect_rc=None)
        faults = em.stats()["faults"]
    check(len(faults) == 1, f"the link was not cut (faults: {faults}); output:\n{out}{err}")
    check("goes on on another connection" in out + err, f"the cut was not reported:\n{out}{err}")
    configure(ctx, ctx.dovecot.port, 4)
    ctx.sync()
    srv = ctx.assert_synced()
    check(T.snapshot_count(srv) == sum(SPEC.values()) + 25,
          f"{T.snapshot_count(srv)} messages, expected {sum(SPEC.values()) + 25}")


BIG = {"Big1": 150, "Big2": 140, "Big3": 130}
SMALL = {f"S{i}": 6 for i in range(1, 7)}


def json_sync(ctx, budget):
    configure(ctx, ctx.dovecot.port, 4, extra={"parallel-budget": budget})
    rc, out, err = ctx.ofsync("--json", "sync")
    return [json.loads(line) for line in out.splitlines()]


def most_at_once(events, names):
    """The most folders of names that were in progress at the same time."""
    active, most = set(), 0
    for e in events:
        if e.get("folder") not in names:
            continue
        if e["type"] == "folder-start":
            active.add(e["folder"])
            most = max(most, len(active))
        elif e["type"] in ("folder-done", "error"):
            active.discard(e["folder"])
    return most


def check_pass(events, spec, budget_names, at_once):
    done = {e["folder"] for e in events if e["type"] == "folder-done"}
    check(set(spec) <= done, f"folders not synced: {sorted(set(spec) - done)}")
    most = most_at_once(events, budget_names)
    check(most <= at_once, f"{most} of {sorted(budget_names)} in progress at once")


def add_one_each(ctx, spec, start):
    T.populate(ctx.dovecot, ctx.user, {f: 1 for f in spec}, seed=38, start=start)


@T.test
def budget_keeps_big_folders_apart(ctx):
    spec = {**BIG, **SMALL}
    ctx.populate(spec, seed=37)
    # 200 messages: no two big folders at once, but small ones beside a big one. The first
    # pass knows the sizes only from CONDSTORE's status; later ones from the record.
    events = json_sync(ctx, 200)
    if full():
        check_pass(events, spec, BIG, 1)
        check(most_at_once(events, spec) >= 2, "no small folder ran beside a big one")
    ctx.assert_synced()
    add_one_each(ctx, spec, 10000)
    check_pass(json_sync(ctx, 200), spec, BIG, 1)
    # Every folder over the budget: each runs alone, and none waits for ever.
    add_one_each(ctx, spec, 20000)
    check_pass(json_sync(ctx, 1), spec, spec, 1)
    srv = ctx.assert_synced()
    check(T.snapshot_count(srv) == sum(spec.values()) + 2 * len(spec), "messages lost or doubled")


if __name__ == "__main__":
    sys.exit(T.main())
