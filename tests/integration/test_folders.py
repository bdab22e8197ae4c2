#!/usr/bin/env python3
# Folder rules of docs/sync-rules.md: renames both ways (carried out as renames), deletions
# with remove-folders, the refusal to delete unsynced mail, folder patterns, expunge policy.
import os
import shutil
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "harness"))
import ofstest as T  # noqa: E402

SEEN, FLAGGED = "\\Seen", "\\Flagged"


def check(cond, what):
    if not cond:
        raise AssertionError(what)


def config(ctx, **extra):
    ctx.write_config(extra=extra)


def local_keys(ctx, folder):
    d = T.local_folder_dir(ctx.local, ctx.layout, folder)
    return sorted(n.split(":2,")[0] for sub in ("cur", "new")
                  for n in os.listdir(os.path.join(d, sub)))


def server_uids(ctx, folder):
    return sorted(ctx.server().fetch_flags(folder))


@T.test
def local_rename_is_a_server_rename(ctx):
    ids = ctx.populate({"INBOX": 2, "Archive": 6}, seed=31)
    ctx.sync()
    uids = server_uids(ctx, "Archive")
    os.rename(T.local_folder_dir(ctx.local, ctx.layout, "Archive"),
              T.local_folder_dir(ctx.local, ctx.layout, "Old"))
    _, out, _ = ctx.sync()
    check("renamed to Old" in out, out)
    check("uploaded" not in out and "downloaded" not in out, f"copied instead of renamed:\n{out}")
    folders = ctx.server().folders()
    check("Old" in folders and "Archive" not in folders, f"server folders {folders}")
    check(server_uids(ctx, "Old") == uids, "the server folder was not renamed (new UIDs)")
    snap = ctx.assert_synced()
    check(sorted(snap["Old"]) == sorted(ids["Archive"]), "messages of the renamed folder")
    _, out, _ = ctx.sync()
    check("nothing to do" in out, out)


@T.test
def server_rename_is_a_local_rename(ctx):
    ctx.populate({"INBOX": 1, "Projects": 5, "Projects/a": 2}, seed=32)
    ctx.sync()
    keys = local_keys(ctx, "Projects")
    child = local_keys(ctx, "Projects/a")
    ctx.server().rename_folder("Projects", "Done")  # the child moves along (IMAP RENAME)
    _, out, _ = ctx.sync()
    check("downloaded" not in out and "uploaded" not in out, f"copied instead of renamed:\n{out}")
    local = T.local_folders(ctx.local, ctx.layout)
    check("Done" in local and "Projects" not in local and "Done/a" in local, f"local {local}")
    check(local_keys(ctx, "Done") == keys, "the local folder was re-downloaded, not renamed")
    check(local_keys(ctx, "Done/a") == child, "the child folder was re-downloaded")
    ctx.assert_synced()
    _, out, _ = ctx.sync()
    check("nothing to do" in out, out)


@T.test
def killed_after_rename_resumes(ctx):
    ctx.populate({"INBOX": 1, "Archive": 4}, seed=33)
    ctx.sync()
    os.rename(T.local_folder_dir(ctx.local, ctx.layout, "Archive"),
              T.local_folder_dir(ctx.local, ctx.layout, "Old"))
    # Step 2 is right after the server's RENAME, before the state knows.
    rc, _, _ = T.run(["--config", ctx.config, "sync"], expect_rc=None,
                     env=dict(os.environ, OFSYNC_CRASH_AT="2"))
    check(rc == -9, f"not killed: {rc}")
    check("Old" in ctx.server().folders(), "the rename did not reach the server")
    _, out, _ = ctx.sync()
    check("uploaded" not in out and "downloaded" not in out, f"copied after resume:\n{out}")
    snap = ctx.assert_synced()
    check(len(snap["Old"]) == 4 and "Archive" not in snap, f"{T.snapshot_counts(snap)}")


@T.test
def folder_deletion_propagates_with_remove_folders(ctx):
    config(ctx, **{"remove-folders": "yes"})
    ctx.populate({"INBOX": 1, "Trash": 3, "Junk": 2}, seed=34)
    ctx.sync()
    shutil.rmtree(T.local_folder_dir(ctx.local, ctx.layout, "Trash"))
    ctx.server().delete_folder("Junk")
    _, out, _ = ctx.sync()
    check("deleting it on the server side" in out, out)
    check("Trash" not in ctx.server().folders(), "server folder kept")
    check("Junk" not in T.local_folders(ctx.local, ctx.layout), "local folder kept")
    ctx.assert_synced()
    _, out, _ = ctx.sync()
    check("nothing to do" in out, out)


@T.test
def folder_deletion_refused_when_it_holds_unsynced_mail(ctx):
    config(ctx, **{"remove-folders": "yes"})
    ids = ctx.populate({"INBOX": 1, "Work": 3}, seed=35)
    ctx.sync()
    late = T.make_message(50, 35)
    ctx.server().append("Work", late, [FLAGGED])  # never synced to the local side
    shutil.rmtree(T.local_folder_dir(ctx.local, ctx.layout, "Work"))
    _, out, _ = ctx.sync()
    check("never synced" in out and "not deleting" in out, out)
    snap = ctx.assert_synced()
    check(sorted(snap["Work"]) == sorted(ids["Work"] + [T.message_id(late)]),
          "messages lost from the folder")


@T.test
def folder_deletion_not_propagated_by_default(ctx):
    ctx.populate({"INBOX": 1, "Work": 3}, seed=36)
    ctx.sync()
    ctx.server().delete_folder("Work")
    _, out, _ = ctx.sync()
    check("remove-folders = no" in out, out)
    snap = ctx.assert_synced()
    check(len(snap["Work"]) == 3, "the local copy was not restored to the server")


@T.test
def folder_patterns_include_and_exclude(ctx):
    config(ctx, folders="* !Spam !Lists/*")
    ctx.populate({"INBOX": 2, "Spam": 3, "Lists/dev": 2, "Work": 1}, seed=37)
    T.local_add(ctx.local, ctx.layout, "Spam", T.make_message(60, 37), "S")
    ctx.sync()
    local = T.local_folders(ctx.local, ctx.layout)
    check("Work" in local and "Lists/dev" not in local, f"local folders {local}")
    snap = ctx.snap_server()
    check(len(snap["Spam"]) == 3, "a local Spam message was uploaded despite !Spam")
    check(len(T.snapshot_local(ctx.local, ctx.layout)["Spam"]) == 1, "server Spam came down")


@T.test
def expunge_server_keeps_local_copies(ctx):
    config(ctx, expunge="server")
    ids = ctx.populate({"INBOX": 4}, seed=38)
    ctx.sync()
    a, b = ids["INBOX"][0], ids["INBOX"][1]
    ctx.server().delete("INBOX", a)                   # not carried to the local side
    T.local_delete(ctx.local, ctx.layout, "INBOX", b)  # carried to the server
    _, out, _ = ctx.sync()
    check("1 removed from the server" in out and "removed locally" not in out, out)
    check(T.local_find(ctx.local, ctx.layout, "INBOX", a), "local copy removed")
    check(b not in ctx.snap_server()["INBOX"], "local deletion not carried to the server")
    _, out, _ = ctx.sync()
    check("nothing to do" in out, f"the kept copy is offered back:\n{out}")
    check(a not in ctx.snap_server()["INBOX"], "the kept local copy was uploaded again")


@T.test
def expunge_none_keeps_both(ctx):
    config(ctx, expunge="none")
    ids = ctx.populate({"INBOX": 3}, seed=39)
    ctx.sync()
    ctx.server().delete("INBOX", ids["INBOX"][0])
    T.local_delete(ctx.local, ctx.layout, "INBOX", ids["INBOX"][1])
    _, out, _ = ctx.sync()
    check("removed" not in out, out)
    check(ids["INBOX"][1] in ctx.snap_server()["INBOX"], "server copy removed")
    check(T.local_find(ctx.local, ctx.layout, "INBOX", ids["INBOX"][0]), "local copy removed")
    _, out, _ = ctx.sync()
    check("nothing to do" in out, out)


if __name__ == "__main__":
    sys.exit(T.main())
