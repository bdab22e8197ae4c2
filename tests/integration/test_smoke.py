#!/usr/bin/env python3
# Smoke test: a first sync of a populated account lands every message once with its flags,
# and a second sync has nothing to do. Also the harness's own self-test.
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "harness"))
import ofstest as T  # noqa: E402

SPEC = {"INBOX": 40, "Archive": 10, "Archive/2022": 15, "Lists/dev": 12, "Sent": 8}
SEED = 7


def check(cond, what):
    if not cond:
        raise AssertionError(what)


@T.test
def harness_selftest(ctx):
    ids = ctx.populate(SPEC, seed=SEED)
    snap = ctx.snap_server()
    # Parents are created as real (empty) mailboxes, never left \Noselect.
    want = dict(SPEC, Lists=0)
    check(T.snapshot_counts(snap) == dict(sorted(want.items())),
          f"server counts {T.snapshot_counts(snap)} != {want}")
    check(T.snapshot_duplicates(snap) == [], "fresh population has duplicates")
    n = 1
    attachments = 0
    for folder, mids in ids.items():
        for mid in mids:
            msg = T.make_message(n, SEED)
            check(mid == f"<{n}.{SEED}@ofsync.test>", f"unexpected Message-ID {mid}")
            check(snap[folder][mid] == [(T.message_flags(n, SEED, folder), T.message_hash(msg))],
                  f"{folder} {mid}: {snap[folder][mid]}")
            attachments += b"Content-Disposition: attachment" in msg
            n += 1
    check(attachments > 0, "no message with an attachment")
    flagged = sum("\\Flagged" in e[0] for f in snap.values() for v in f.values() for e in v)
    check(flagged > 0, "no flagged message")
    check(T.make_message(3, SEED) == T.make_message(3, SEED), "messages are not deterministic")

    s = ctx.server()
    caps = {c.upper() for c in s.imap.capabilities}
    _, data = s.imap.capability()
    caps |= {c.decode().upper() for c in data[-1].split()}
    if ctx.caps == "plain":
        for ext in ("UIDPLUS", "CONDSTORE", "QRESYNC", "LITERAL+", "ENABLE", "MOVE",
                    "SPECIAL-USE", "LIST-STATUS", "ESEARCH"):
            check(ext not in caps, f"plain server offers {ext}")
    else:
        for ext in ("UIDPLUS", "CONDSTORE", "QRESYNC", "IDLE"):
            check(ext in caps, f"full server lacks {ext}: {sorted(caps)}")

    # Server helpers change exactly what they say.
    first = ids["INBOX"][0]
    s.set_flags("INBOX", first, ["\\Flagged", "\\Answered"])
    s.clear_flags("INBOX", first, ["\\Answered"])
    s.delete("Archive", ids["Archive"][0])
    s.append("Sent", T.make_message(1, SEED), ["\\Seen"])
    moved = ids["Lists/dev"][1]
    s.move("Lists/dev", moved, "Archive")
    after = ctx.snap_server()
    check(moved in after["Archive"] and moved not in after["Lists/dev"], "move")
    check(after["INBOX"][first][0][0] == {"\\Flagged"}, f"flags {after['INBOX'][first]}")
    check(ids["Archive"][0] not in after["Archive"], "deleted message still there")
    check(T.snapshot_duplicates(after) == [], "append into another folder is no duplicate")
    s.append("Sent", T.make_message(1, SEED), [])
    dupes = T.snapshot_duplicates(ctx.snap_server())
    check(dupes == [("Sent", ids["INBOX"][0], 2)], f"duplicate not detected: {dupes}")
    s.create("Ünïcode/Sub")
    check("Ünïcode/Sub" in s.folders(), f"unicode folder missing: {s.folders()}")

    # Local helpers mirror the server snapshot exactly, in both layouts.
    server = ctx.snap_server()
    msgs = {f: s.fetch_messages(f) for f in server}
    flags = {f: s.fetch_flags(f) for f in server}
    for layout in T.LAYOUTS:
        root = os.path.join(ctx.tmp, layout)
        for folder, by_uid in msgs.items():
            os.makedirs(os.path.join(T.local_folder_dir(root, layout, folder), "cur"),
                        exist_ok=True)
            os.makedirs(os.path.join(T.local_folder_dir(root, layout, folder), "new"),
                        exist_ok=True)
            for uid, data in by_uid.items():
                fl = [f for f in flags[folder][uid] if f in T.SYSTEM_FLAGS]
                T.local_add(root, layout, folder, data.replace(b"\r\n", b"\n"), fl)
        local = T.snapshot_local(root, layout)
        T.assert_snapshots_equal(server, local)
        mid = ids["Lists/dev"][0]
        T.local_set_flags(root, layout, "Lists/dev", mid, "FS")
        check(T.local_flags(root, layout, "Lists/dev", mid) == [{"\\Flagged", "\\Seen"}],
              "local_set_flags")
        names = os.listdir(os.path.dirname(T.local_find(root, layout, "Lists/dev", mid)[0]))
        check(any(n.endswith(":2,FS") for n in names), f"flag letters not in order: {names}")
        T.local_delete(root, layout, "Sent", ids["Sent"][0])
        diff = T.snapshot_diff(server, T.snapshot_local(root, layout))
        check(len(diff) == 2, f"expected 2 differences, got {diff}")
    check(T.local_folders(os.path.join(ctx.tmp, "maildir++"), "maildir++")
          == sorted(server), "maildir++ folder names")
    check(os.path.isdir(os.path.join(ctx.tmp, "maildir++", ".Archive.2022", "cur")),
          "maildir++ layout")
    check(os.path.isdir(os.path.join(ctx.tmp, "verbatim", "Archive", "2022", "cur")),
          "verbatim layout")
    check(T.mutf7_decode(T.mutf7_encode("Entwürfe & Co/日本")) == "Entwürfe & Co/日本",
          "modified UTF-7 round trip")
    check(T.mutf7_encode("Entwürfe & Co") == "Entw&APw-rfe &- Co", "modified UTF-7 encoding")


@T.test
def sync_initial_then_nothing_to_do(ctx):
    ctx.populate(300, seed=11)
    check(T.snapshot_count(ctx.snap_server()) == 300, "populate did not give 300 messages")
    ctx.sync()
    ctx.assert_synced()
    rc, out, err = ctx.sync()
    check("nothing to do" in out.lower(), f"second sync did something:\n{out}\n{err}")
    ctx.assert_synced()


if __name__ == "__main__":
    sys.exit(T.main())
