#!/usr/bin/env python3
# Command-line wrapper around tests/harness/ofstest.py for shell scripts (demo, benchmarks):
# start/stop a detached private Dovecot, fill it, write an ofsync config, show and compare.
"""Usage:
  dovecot.py start [--caps full|plain|"CAP CAP..."]   prints the instance dir
  dovecot.py stop DIR
  dovecot.py populate DIR USER [--count N | --spec FOLDER=N,...] [--seed S]
  dovecot.py config DIR USER --local PATH --state PATH --out FILE [--layout L] [--auth A]
  dovecot.py counts DIR USER                  per-folder message counts on the server
  dovecot.py tree LOCAL [--layout L]          per-folder message counts of a local Maildir
  dovecot.py compare DIR USER LOCAL [--layout L]   exit 1 if server and local differ
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests",
                                "harness"))
import ofstest  # noqa: E402


def _spec(text):
    out = {}
    for item in text.split(","):
        folder, _, count = item.rpartition("=")
        if not folder or not count.isdigit():
            raise argparse.ArgumentTypeError(f"bad spec item {item!r} (want FOLDER=N)")
        out[folder] = int(count)
    return out


def _print_counts(snap, title, paths=None):
    counts = ofstest.snapshot_counts(snap)
    width = max([len(f) for f in counts] + [6])
    print(title)
    print(f"  {'folder':<{width}}  {'messages':>8}  {'unseen':>6}  {'flagged':>7}"
          + ("  directory" if paths else ""))
    tot = [0, 0, 0]
    for folder, n in counts.items():
        entries = [e for v in snap[folder].values() for e in v]
        unseen = sum("\\Seen" not in e[0] for e in entries)
        flagged = sum("\\Flagged" in e[0] for e in entries)
        tot = [tot[0] + n, tot[1] + unseen, tot[2] + flagged]
        where = f"  {paths[folder]}" if paths else ""
        print(f"  {folder:<{width}}  {n:8d}  {unseen:6d}  {flagged:7d}{where}")
    print(f"  {'total':<{width}}  {tot[0]:8d}  {tot[1]:6d}  {tot[2]:7d}")


def cmd_start(a):
    d = ofstest.Dovecot(caps=a.caps, detach=True, keep=False)
    d.start()
    print(d.dir)


def cmd_stop(a):
    if not os.path.isfile(os.path.join(a.dir, "ofstest.json")):
        sys.exit(f"dovecot.py: {a.dir} is not a harness Dovecot directory")
    ofstest.Dovecot.attach(a.dir).stop()


def cmd_populate(a):
    d = ofstest.Dovecot.attach(a.dir)
    spec = a.spec if a.spec is not None else a.count
    ids = ofstest.populate(d, a.user, spec, seed=a.seed)
    print(f"populated {sum(len(v) for v in ids.values())} messages in {len(ids)} folders")


def cmd_config(a):
    d = ofstest.Dovecot.attach(a.dir)
    ofstest.write_config(os.path.abspath(a.out), d, a.user, os.path.abspath(a.local),
                         os.path.abspath(a.state), layout=a.layout, account=a.account,
                         auth=a.auth)
    print(os.path.abspath(a.out))


def cmd_counts(a):
    d = ofstest.Dovecot.attach(a.dir)
    _print_counts(ofstest.snapshot_server(d, a.user), f"server ({a.user}@127.0.0.1:{d.port}):")


def cmd_tree(a):
    snap = ofstest.snapshot_local(a.local, a.layout)
    paths = None
    if a.paths:
        paths = {f: os.path.relpath(ofstest.local_folder_dir(a.local, a.layout, f), a.local)
                 + "/" for f in snap}
    _print_counts(snap, f"{a.local} ({a.layout}):", paths)


def cmd_compare(a):
    d = ofstest.Dovecot.attach(a.dir)
    server = ofstest.snapshot_server(d, a.user)
    local = ofstest.snapshot_local(a.local, a.layout)
    diff = ofstest.snapshot_diff(server, local)
    dupes = ofstest.snapshot_duplicates(local)
    if diff or dupes:
        print("server and local differ:")
        for line in diff:
            print("  " + line)
        for folder, mid, n in dupes[:20]:
            print(f"  {folder}: {mid}: {n} copies locally")
        sys.exit(1)
    print(f"server and local match: {ofstest.snapshot_count(server)} messages, "
          f"{len(server)} folders, flags equal, no duplicates")


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__)
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("start")
    s.add_argument("--caps", default="full")
    s.set_defaults(fn=cmd_start)
    s = sub.add_parser("stop")
    s.add_argument("dir")
    s.set_defaults(fn=cmd_stop)
    s = sub.add_parser("populate")
    s.add_argument("dir")
    s.add_argument("user")
    s.add_argument("--count", type=int, default=300)
    s.add_argument("--spec", type=_spec)
    s.add_argument("--seed", type=int, default=1)
    s.set_defaults(fn=cmd_populate)
    s = sub.add_parser("config")
    s.add_argument("dir")
    s.add_argument("user")
    s.add_argument("--local", required=True)
    s.add_argument("--state", required=True)
    s.add_argument("--out", required=True)
    s.add_argument("--layout", default="maildir++", choices=ofstest.LAYOUTS)
    s.add_argument("--account", default="demo")
    s.add_argument("--auth", default="pass-cmd", choices=("pass-cmd", "password-file"))
    s.set_defaults(fn=cmd_config)
    s = sub.add_parser("counts")
    s.add_argument("dir")
    s.add_argument("user")
    s.set_defaults(fn=cmd_counts)
    s = sub.add_parser("tree")
    s.add_argument("local")
    s.add_argument("--layout", default="maildir++", choices=ofstest.LAYOUTS)
    s.add_argument("--paths", action="store_true", help="also show each folder's directory")
    s.set_defaults(fn=cmd_tree)
    s = sub.add_parser("compare")
    s.add_argument("dir")
    s.add_argument("user")
    s.add_argument("local")
    s.add_argument("--layout", default="maildir++", choices=ofstest.LAYOUTS)
    s.set_defaults(fn=cmd_compare)
    a = p.parse_args()
    try:
        a.fn(a)
    except (ofstest.HarnessError, OSError) as e:
        sys.exit(f"dovecot.py {a.cmd}: {e}")


if __name__ == "__main__":
    main()
