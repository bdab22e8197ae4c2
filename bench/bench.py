#!/usr/bin/env python3
# bench.py: ofsync against mbsync (Debian's isync) on two identical private Dovecot data sets.
# Runs A B A B (>= 3 pairs), prints medians and ofsync/mbsync ratios, writes bench/RESULTS.md.
"""Usage: bench/bench.py [--sizes 10000,100000] [--pairs 3] [--ofsync build/ofsync]

Scenarios, each run by both tools on their own (identical) server user:
  initial     empty local side and state: everything is downloaded
  nochange    a pass right after the previous one (for ofsync: Maildir folders the previous
              pass wrote to within the last moments are read again, src/maildir/mark.c says why)
  settled     a second no-change pass: the steady state of a periodic sync
  server1pct  1 % of the messages change flags on the server, 1 % new server mail
  local1pct   1 % of the local messages change flags, 0.3 % are deleted locally
Figures: wall time, user+sys CPU and peak RSS of the sync process (wait4), bytes on the wire
(Dovecot's imap_logout_format in=%i out=%o, summed over the pass's sessions) and round trips
(tests/tools/imapspy.py, in one extra untimed run per scenario, so the proxy skews no time).
"""
import argparse
import datetime
import hashlib
import imaplib
import json
import os
import platform
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "tests", "harness"))
sys.path.insert(0, os.path.join(ROOT, "tests", "tools"))
import ofstest as T  # noqa: E402
from imapspy import ImapSpy  # noqa: E402

FOLDERS = ["INBOX", "Archive", "Archive/2019", "Archive/2020", "Archive/2021", "Archive/2022",
           "Archive/2023", "Sent", "Drafts", "Trash", "Junk", "Lists", "Lists/dev",
           "Lists/announce", "Lists/users", "Work", "Work/projects", "Work/reports", "Family",
           "Receipts"]
WEIGHTS = [20, 10, 6, 6, 6, 6, 6, 8, 1, 3, 2, 1, 5, 2, 4, 3, 3, 2, 2, 4]
SCENARIOS = ["initial", "nochange", "settled", "server1pct", "local1pct"]
TOOLS = ["ofsync", "mbsync"]
WORDS = ("the quick brown fox jumps over lazy dog offline mail sync folder message server "
         "local flag seen answered draft deleted archive report project meeting").split()


# ---- data sets ----------------------------------------------------------------------

def folder_counts(total):
    s = sum(WEIGHTS)
    counts = [total * w // s for w in WEIGHTS]
    counts[0] += total - sum(counts)
    return dict(zip(FOLDERS, counts))


def make_message(rng, n, folder):
    big = rng.random() < 0.01
    size = rng.randint(200_000, 2_000_000) if big else int(min(20_000, max(2_000, rng.lognormvariate(8.6, 0.5))))
    date = datetime.datetime(2020, 1, 1) + datetime.timedelta(minutes=n * 7)
    head = (f"From: Sender {n % 97} <s{n % 97}@bench.test>\n"
            f"To: user@bench.test\n"
            f"Subject: {folder} message {n} {' '.join(rng.choices(WORDS, k=5))}\n"
            f"Date: {date.strftime('%a, %d %b %Y %H:%M:%S +0000')}\n"
            f"Message-ID: <{n}.bench@ofsync.test>\n"
            f"MIME-Version: 1.0\nContent-Type: text/plain; charset=us-ascii\n\n")
    lines, have = [], len(head)
    while have < size:
        ln = " ".join(rng.choices(WORDS, k=12)) if not big else hashlib.sha256(
            f"{n}.{have}".encode()).hexdigest() + hashlib.sha256(f"{have}.{n}".encode()).hexdigest()[:12]
        lines.append(ln)
        have += len(ln) + 1
    return (head + "\n".join(lines) + "\n").encode()


def flags_for(rng):
    f = ""
    if rng.random() < 0.1:
        f += "F"
    if rng.random() < 0.2:
        f += "R"
    if rng.random() < 0.8:
        f += "S"
    return f


def server_folder_dir(maildir, folder):
    return maildir if folder == "INBOX" else os.path.join(maildir, "." + folder.replace("/", "."))


def build_dataset(dovecot, users, total, seed=42):
    """Writes the same Maildir files straight into each user's server Maildir: far faster than
    APPEND, and Dovecot indexes them on first access (warmed up before timing)."""
    rng = random.Random(seed)
    n = 0
    for folder, count in folder_counts(total).items():
        dirs = []
        for u in users:
            d = server_folder_dir(dovecot.maildir(u), folder)
            for sub in ("cur", "new", "tmp"):
                os.makedirs(os.path.join(d, sub), exist_ok=True)
            dirs.append(d)
        for _ in range(count):
            n += 1
            data = make_message(rng, n, folder)
            vsize = len(data) + data.count(b"\n")
            name = f"{1600000000 + n}.M{n}P1.bench,S={len(data)},W={vsize}:2,{flags_for(rng)}"
            for d in dirs:
                with open(os.path.join(d, "cur", name), "wb") as f:
                    f.write(data)
    if os.geteuid() == 0:
        for u in users:
            subprocess.run(["chown", "-R", f"{dovecot.uid}:{dovecot.gid}",
                            os.path.join(dovecot.dir, "home", u)], check=True)
    for u in users:  # index every folder now, so neither tool pays for it in a timed run
        dovecot.doveadm("mailbox", "status", "-u", u, "messages unseen vsize", "*")
        dovecot.doveadm("fetch", "-u", u, "uid flags size.virtual", "all")


# ---- the two tools ------------------------------------------------------------------

class Tool:
    def __init__(self, name, work, dovecot, user, binary):
        self.name, self.dovecot, self.user, self.binary = name, dovecot, user, binary
        self.dir = os.path.join(work, name)
        self.local = os.path.join(self.dir, "Mail")
        self.state = os.path.join(self.dir, "state")
        os.makedirs(self.dir, exist_ok=True)

    def write_config(self, port):
        pw = self.dovecot.password(self.user)
        pfile = os.path.join(self.dir, "pass")
        with open(pfile, "w") as f:
            f.write(pw + "\n")
        os.chmod(pfile, 0o600)
        if self.name == "ofsync":
            self.config = os.path.join(self.dir, "config")
            with open(self.config, "w") as f:
                f.write(f"[account bench]\nhost = 127.0.0.1\nport = {port}\ntls = none\n"
                        f"user = {self.user}\npassword-file = {pfile}\nlocal = {self.local}\n"
                        f"state = {self.state}/bench.db\nlayout = verbatim\n"
                        # mbsync 1.4 has no COMPRESS; on loopback it only costs CPU
                        "compress = no\n")
            self.cmd = [self.binary, "--config", self.config, "-q", "sync"]
        else:
            self.config = os.path.join(self.dir, "mbsyncrc")
            with open(self.config, "w") as f:
                f.write(f"IMAPAccount bench\nHost 127.0.0.1\nPort {port}\nUser {self.user}\n"
                        f"PassCmd \"cat {pfile}\"\nSSLType None\nAuthMechs PLAIN LOGIN\n\n"
                        f"IMAPStore remote\nAccount bench\n\n"
                        f"MaildirStore local\nPath {self.local}/\nInbox {self.local}/INBOX\n"
                        f"SubFolders Verbatim\n\n"
                        f"Channel bench\nFar :remote:\nNear :local:\nPatterns *\nCreate Near\n"
                        f"Sync All\nExpunge Both\nSyncState *\n")
            self.cmd = ["mbsync", "-q", "-c", self.config, "bench"]

    def reset(self):
        for p in (self.local, self.state):
            shutil.rmtree(p, ignore_errors=True)
        os.makedirs(self.local)
        os.makedirs(self.state)

    def run(self):
        """One pass; returns wall s, cpu s, peak RSS KiB. GNU time measures it: a child forked
        from this Python process would report Python's RSS as its own peak."""
        tf = os.path.join(self.dir, "time")
        t0 = time.monotonic()
        p = subprocess.run(["/usr/bin/time", "-f", "%e %U %S %M", "-o", tf] + self.cmd,
                           stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT)
        wall = time.monotonic() - t0
        if p.returncode != 0:
            raise RuntimeError(f"{self.name} failed (rc {p.returncode}):\n"
                               f"{p.stdout.decode(errors='replace')[-3000:]}")
        with open(tf) as f:
            e, u, s, m = f.read().split()[-4:]
        return wall, float(u) + float(s), int(m)


def dovecot_bytes(log, start, user):
    with open(log, "rb") as f:
        f.seek(start)
        text = f.read().decode(errors="replace")
    tot = 0
    for m in re.finditer(r"imap\(" + re.escape(user) + r"\).*?in=(\d+) out=(\d+)", text):
        tot += int(m.group(1)) + int(m.group(2))
    return tot


# ---- changes ------------------------------------------------------------------------

def server_changes(dovecot, user, total, rep):
    rng = random.Random(1000 + rep)
    imap = imaplib.IMAP4("127.0.0.1", dovecot.port)
    imap.login(user, dovecot.password(user))
    counts = folder_counts(total)
    nflag, nnew = max(1, total // 100), max(1, total // 100)
    for i, folder in enumerate(FOLDERS):
        share = counts[folder] * nflag // total
        imap.select('"' + folder.replace("/", ".") + '"')
        typ, data = imap.uid("SEARCH", None, "ALL")
        uids = data[0].split()
        for u in rng.sample(uids, min(share, len(uids))):
            imap.uid("STORE", u, "+FLAGS.SILENT" if rng.random() < 0.5 else "-FLAGS.SILENT", "(\\Flagged \\Seen)")
    mrng = random.Random(2000 + rep)
    for k in range(nnew):
        folder = rng.choices(FOLDERS, WEIGHTS)[0]
        msg = make_message(mrng, 10_000_000 + rep * 1_000_000 + k, folder)
        imap.append('"' + folder.replace("/", ".") + '"', "(\\Seen)" if k % 2 else "", None, msg)
    imap.logout()


def local_changes(local, total, rep):
    rng = random.Random(3000 + rep)
    files = []
    for dirpath, dirnames, filenames in os.walk(local):
        dirnames.sort()
        if os.path.basename(dirpath) == "cur":
            files += [os.path.join(dirpath, f) for f in sorted(filenames)]
    pick = rng.sample(files, min(len(files), total // 100 + total * 3 // 1000))
    nflag = total // 100
    for i, path in enumerate(pick):
        if i >= nflag:
            os.unlink(path)
            continue
        base, _, fl = path.partition(":2,")
        fl = fl.replace("F", "") if "F" in fl else "".join(sorted(fl + "F"))
        os.rename(path, base + ":2," + fl)


# ---- driver -------------------------------------------------------------------------

def fmt_bytes(n):
    return f"{n / 1e6:.1f} MB" if n >= 1e6 else f"{n / 1e3:.1f} kB"


def run_size(total, pairs, binary, results):
    print(f"== {total} messages: building the data sets", flush=True)
    users = {"ofs": "ofs-secret", "mbs": "mbs-secret"}
    with T.Dovecot(caps="full", users=users) as dovecot:
        t0 = time.monotonic()
        build_dataset(dovecot, list(users), total)
        print(f"   built in {time.monotonic() - t0:.0f} s", flush=True)
        work = tempfile.mkdtemp(prefix="ofs-bench-", dir="/tmp")
        tools = {"ofsync": Tool("ofsync", work, dovecot, "ofs", binary),
                 "mbsync": Tool("mbsync", work, dovecot, "mbs", binary)}
        figs = {s: {t: [] for t in TOOLS} for s in SCENARIOS}
        try:
            for rep in range(pairs + 1):
                spied = rep == pairs  # last round: through the proxy, for round trips only
                for name in (TOOLS if rep % 2 == 0 else TOOLS[::-1]):
                    tool = tools[name]
                    spy = ImapSpy(("127.0.0.1", dovecot.port)).__enter__() if spied else None
                    tool.write_config(spy.port if spy else dovecot.port)
                    tool.reset()
                    for sc in SCENARIOS:
                        if sc == "server1pct":
                            server_changes(dovecot, tool.user, total, rep)
                            # its own session's in/out line must land before the run's offset,
                            # or the APPENDed mail counts as the tool's traffic
                            time.sleep(0.3)
                        elif sc == "local1pct":
                            local_changes(tool.local, total, rep)
                        if spy:
                            spy.reset()
                        start = os.path.getsize(dovecot.log)
                        wall, cpu, rss = tool.run()
                        time.sleep(0.3)  # let the logout line reach the log
                        if spy:
                            figs[sc][name].append({"round_trips": spy.stats()["round_trips"]})
                            print(f"   {name:7} {sc:11} round trips {spy.stats()['round_trips']}", flush=True)
                            continue
                        wire = dovecot_bytes(dovecot.log, start, tool.user)
                        figs[sc][name].append({"wall": wall, "cpu": cpu, "rss": rss, "bytes": wire})
                        print(f"   {name:7} {sc:11} wall {wall:7.3f} s  cpu {cpu:7.3f} s  "
                              f"rss {rss / 1024:6.1f} MiB  wire {fmt_bytes(wire)}", flush=True)
                    if spy:
                        spy.stop()
        finally:
            shutil.rmtree(work, ignore_errors=True)
        results[total] = figs


def median(figs, key):
    vals = [f[key] for f in figs if key in f]
    return statistics.median(vals) if vals else float("nan")


def report(results, pairs):
    rows = []
    head = ("| messages | scenario | figure | ofsync | mbsync | ofsync/mbsync |\n"
            "| ---: | --- | --- | ---: | ---: | ---: |")
    rows.append(head)
    units = {"wall": ("wall time", lambda v: f"{v:.3f} s"),
             "cpu": ("user+sys CPU", lambda v: f"{v:.3f} s"),
             "rss": ("peak RSS", lambda v: f"{v / 1024:.1f} MiB"),
             "bytes": ("bytes on the wire", fmt_bytes),
             "round_trips": ("round trips", lambda v: f"{v:.0f}")}
    for total, figs in results.items():
        for sc in SCENARIOS:
            for key, (label, f) in units.items():
                a, b = median(figs[sc]["ofsync"], key), median(figs[sc]["mbsync"], key)
                ratio = a / b if b else float("nan")
                rows.append(f"| {total} | {sc} | {label} | {f(a)} | {f(b)} | {ratio:.2f} |")
    return "\n".join(rows)


def machine():
    cpu = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name"))
    except (OSError, StopIteration):
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    fs = subprocess.run(["df", "-T", "/tmp"], capture_output=True, text=True).stdout.splitlines()[-1].split()[1]
    mb = subprocess.run(["mbsync", "--version"], capture_output=True, text=True).stdout.strip()
    dv = subprocess.run(["dovecot", "--version"], capture_output=True, text=True).stdout.strip()
    return (f"{platform.node()}: {os.cpu_count()} CPUs ({cpu}), {mem:.1f} GiB RAM, /tmp on {fs}, "
            f"{platform.system()} {platform.release()}; {mb}; Dovecot {dv}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="10000")
    ap.add_argument("--pairs", type=int, default=3)
    ap.add_argument("--ofsync", default=os.path.join(ROOT, "build", "ofsync"))
    ap.add_argument("--out", default=os.path.join(HERE, "RESULTS.md"))
    a = ap.parse_args()
    if a.pairs < 3:
        print("bench: at least 3 pairs (A B A B A B)", file=sys.stderr)
        return 2
    results = {}
    for total in (int(x) for x in a.sizes.split(",")):
        run_size(total, a.pairs, os.path.abspath(a.ofsync), results)
    table = report(results, a.pairs)
    print(table)
    with open(a.out, "w") as f:
        f.write("# ofsync vs mbsync\n\n"
                f"Generated by `make bench` (bench/bench.py) on {datetime.date.today()}.\n\n"
                f"Machine: {machine()}\n\n"
                f"Medians of {a.pairs} alternating pairs (A B A B ...); round trips from one "
                "extra run through tests/tools/imapspy.py. Both tools fsync what they deliver "
                "(mbsync's default FSync yes; ofsync always). Plain IMAP on 127.0.0.1, Dovecot "
                "with `mail_fsync = never`, caps as Debian's Dovecot 2.3 offers them.\n\n"
                + table + "\n")
    print(f"written to {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
