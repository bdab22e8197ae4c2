# Shared pieces of the slow/flaky-link tests: ofsync through linkem, its output watched line by
# line with arrival times, and the checks every link test makes (convergence, no silent gap).
import json
import os
import random
import re
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "harness"))
sys.path.insert(0, os.path.join(HERE, "..", "tools"))
import ofstest as T  # noqa: E402
from linkem import LinkEm  # noqa: E402

# Seconds of silence ofsync may keep beyond its timeout: one tick, plus scheduling on a
# loaded 2-core CI box.
MARGIN = 1.5


def check(cond, what):
    if not cond:
        raise AssertionError(what)


def configure(ctx, port, timeout=2, attempts=5, **extra):
    """The test's config, pointed at the emulated link on port."""
    keys = {"timeout": timeout, "reconnect-attempts": attempts}
    keys.update({k.replace("_", "-"): v for k, v in extra.items()})
    ctx.write_config(extra=keys)
    with open(ctx.config) as f:
        text = f.read()
    text = re.sub(r"^port = \d+$", f"port = {port}", text, flags=re.M)
    with open(ctx.config, "w") as f:
        f.write(text)


class Watched:
    """One ofsync run: rc, its output lines with arrival times, the longest silence."""

    def __init__(self, rc, lines, gaps, wall):
        self.rc, self.lines, self.gaps, self.wall = rc, lines, gaps, wall
        self.out = "\n".join(text for _, text in lines)
        self.max_gap = max(gaps) if gaps else 0.0

    def has(self, pattern):
        return re.search(pattern, self.out, re.M) is not None


def _text(ev):
    """One JSON event as a line for the tests' patterns."""
    t = ev.get("type")
    if t in ("notice", "error"):
        return f"{t}: {ev.get('folder') or ''}: {ev.get('message')}"
    if t == "waiting":
        return f"waiting {ev.get('waited')} s: {ev.get('doing')}"
    if t == "folder-done":
        return f"{ev.get('folder')}: {ev.get('result')}"
    if t == "summary":
        changed = any(ev[side][k] for side in ("local", "server") for k in ev[side])
        return (f"summary: {'changes' if changed else 'nothing to do'}; "
                f"{ev['round_trips']} round trips, {ev['net_in'] / 1024:.1f} KiB in, "
                f"{ev['net_out'] / 1024:.1f} KiB out, {ev['reconnects']} reconnects, "
                f"{ev['held_back']} held back")
    return t


def run_watched(ctx, *args, limit=180):
    """Runs `ofsync --json --config C sync` and timestamps each event as it arrives. Every
    event is progress or a reported wait; stderr lines (the error line) count too."""
    cmd = [T.ofsync_bin(), "--json", "--config", ctx.config, "sync"] + list(args)
    t0 = time.monotonic()
    p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE)
    lines, lock = [], threading.Lock()

    def reader(stream, err):
        for raw in stream:
            text = raw.decode("utf-8", "replace").rstrip()
            if not err:
                try:
                    text = _text(json.loads(text))
                except ValueError:
                    text = "not JSON: " + text
            with lock:
                lines.append((time.monotonic(), ("E: " if err else "") + text))

    threads = [threading.Thread(target=reader, args=(p.stdout, False), daemon=True),
               threading.Thread(target=reader, args=(p.stderr, True), daemon=True)]
    for t in threads:
        t.start()
    try:
        rc = p.wait(timeout=limit)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()
        raise AssertionError(f"ofsync did not finish within {limit} s:\n" +
                             "\n".join(x for _, x in lines[-30:]))
    end = time.monotonic()
    for t in threads:
        t.join(5)
    lines.sort(key=lambda x: x[0])
    stamps = [t0] + [t for t, _ in lines] + [end]
    gaps = [b - a for a, b in zip(stamps, stamps[1:])]
    w = Watched(rc, lines, gaps, end - t0)
    if os.environ.get("OFS_LINKS_SHOW"):  # for a human looking at what ofsync said
        print(f"--- rc {rc}, {w.wall:.1f} s, longest silence {w.max_gap:.1f} s\n{w.out}")
    return w


def assert_no_silence(w, timeout):
    """No interval longer than the timeout plus a margin without progress or a reported wait."""
    if w.max_gap > timeout + MARGIN:
        i = w.gaps.index(w.max_gap)
        before = w.lines[i - 1][1] if i > 0 else "(start)"
        raise AssertionError(f"{w.max_gap:.1f} s without a line (timeout {timeout} s) after: "
                             f"{before}\n{w.out}")


def expect_rc(w, rc=0):
    check(w.rc == rc, f"ofsync exited {w.rc}, expected {rc}:\n{w.out}")


def assert_converged(ctx, expected_ids=None):
    """Both sides equal, nothing twice, and (if given) exactly the expected Message-IDs in
    each folder: nothing lost."""
    srv = ctx.assert_synced()
    if expected_ids is not None:
        for folder, ids in expected_ids.items():
            got = set(srv.get(folder, {}))
            check(got == set(ids), f"{folder}: lost {sorted(set(ids) - got)[:5]}, "
                                   f"extra {sorted(got - set(ids))[:5]}")
    return srv


def summary(w):
    """(round trips, KiB in, KiB out) from the pass summary line."""
    m = re.search(r"(\d+) round trips, ([\d.]+) KiB in, ([\d.]+) KiB out", w.out)
    check(m, f"no round trips in the summary:\n{w.out}")
    return int(m.group(1)), float(m.group(2)), float(m.group(3))


def big_message(n, seed, size):
    return T.make_message(n, seed, size=size, attachment=False)
