#!/usr/bin/env python3
# Link emulator for ofsync's slow/flaky-link tests: an unprivileged userspace TCP proxy on
# loopback adding latency, bandwidth caps, jitter, stalls, cuts and seeded chaos per direction.
"""linkem: a userspace TCP proxy that makes a loopback link look like a bad real one.

    linkem.py --listen 127.0.0.1:0 --target 127.0.0.1:1143 --rate 56k --latency 150 \
              --down-cut-after 20000 --faults first --port-file /tmp/port

"up" is client -> server, "down" is server -> client. Per-direction options take a
plain (both), up- or down- prefix. From Python:

    with LinkEm(("127.0.0.1", 1143), latency_ms=150, rate_bps=56000,
                down_cut_after=20000, faults="first") as em:
        connect_to(em.port)
        em.stats()

Latency, jitter and bandwidth are properties of the link and apply to every connection;
stalls, cuts and chaos are faults and apply to the connections selected by `faults`
("all", "first", a count N meaning the first N, or "#N" meaning connection N alone), because ofsync reconnects and must
succeed eventually. Byte offsets count the bytes delivered in that direction.
"""

import argparse
import collections
import fcntl
import json
import math
import os
import random
import select
import signal
import socket
import struct
import sys
import termios
import threading
import time

DIRS = ("up", "down")
CHAOS_KINDS = ("none", "stall", "cut", "spike")
CUT_MODES = ("rst", "fin")
RECV_SIZE = 65536
STOP_BUDGET = 0.9  # seconds; stop() promises to be done within a second
RST_DRAIN = 0.5  # how long a cut waits for the kernel to hand over the bytes already sent

# Per-direction options; each also exists as up_<name> and down_<name>.
DIR_DEFAULTS = {
    "latency_ms": 0.0,  # one-way, per chunk
    "jitter_ms": 0.0,  # extra 0..jitter per chunk, never reordering
    "rate_bps": 0,  # bits/s, 0 = unlimited
    "stall_after": None,  # bytes
    "stall_random": None,  # (lo, hi) bytes, offset drawn from the seed
    "cut_after": None,  # bytes
    "max_buffer": None,  # bytes held by the proxy before the sender feels backpressure
}
GLOBAL_DEFAULTS = {
    "listen": ("127.0.0.1", 0),
    "stall_for": None,  # seconds; None = until either end closes
    "cut_mode": "rst",
    "chaos": None,  # seed
    "chaos_range": (0, 65536),  # byte offsets chaos picks from
    "spike_ms": 3000.0,
    "faults": "all",
    "seed": 0,
    "log": None,  # callable(str)
}


def parse_addr(value, default_host="127.0.0.1"):
    """Accept (host, port), "host:port" or a bare port."""
    if isinstance(value, tuple):
        return (value[0], int(value[1]))
    if isinstance(value, int):
        return (default_host, value)
    host, _, port = str(value).rpartition(":")
    return (host or default_host, int(port))


def chaos_plan(seed, index, lo, hi):
    """The fault chaos injects into connection `index`: a pure function of its arguments,
    so a failing run can be replayed from the seed whatever the timing was."""
    rng = random.Random(f"linkem-chaos:{seed}:{index}")
    return {
        "kind": rng.choice(CHAOS_KINDS),
        "dir": rng.choice(DIRS),
        "offset": rng.randint(lo, hi),
        "mode": rng.choice(CUT_MODES),
    }


class _Fault:
    def __init__(self, kind, offset, duration=None, mode=None, origin="fixed"):
        self.kind, self.offset, self.duration = kind, offset, duration
        self.mode, self.origin = mode, origin


class _Bucket:
    """Token bucket in bytes. Its capacity is one quantum, so an idle link cannot later
    burst past the cap; the quantum keeps writes from dribbling out byte by byte."""

    def __init__(self, rate_bps):
        self.rate = rate_bps / 8.0
        self.quantum = int(min(16384, max(64, self.rate / 50)))
        self.tokens = float(self.quantum)
        self.last = time.monotonic()

    def allowance(self, now, want):
        self.tokens = min(self.quantum, self.tokens + (now - self.last) * self.rate)
        self.last = now
        return int(self.tokens) if self.tokens >= min(want, self.quantum) else 0

    def delay(self, want):
        return max(0.001, (min(want, self.quantum) - self.tokens) / self.rate)


class _Pump:
    """One direction of one connection. Reading and delivering are decoupled by a queue
    of (due time, bytes) so latency delays each chunk without limiting throughput."""

    def __init__(self, conn, name, src, dst, spec, faults, rng):
        self.conn, self.name, self.src, self.dst = conn, name, src, dst
        self.latency = spec["latency_ms"] / 1000.0
        self.jitter = spec["jitter_ms"] / 1000.0
        self.faults = faults
        self.rng = rng
        self.bucket = _Bucket(spec["rate_bps"]) if spec["rate_bps"] else None
        self.max_buffer = spec["max_buffer"] or self._default_buffer(spec)
        self.queue = collections.deque()
        self.queued = 0
        self.delivered = 0
        self.eof = False
        self.last_due = 0.0
        self.hold_until = 0.0  # end of a stall or spike; inf while stalled for good

    @staticmethod
    def _default_buffer(spec):
        # A narrow link must push back on the sender like a real one instead of hiding
        # seconds of data in the proxy; an unlimited one needs room for latency * speed.
        if not spec["rate_bps"]:
            return 4 << 20
        secs = (spec["latency_ms"] + spec["jitter_ms"]) / 1000.0 + 0.1
        return max(16384, int(2 * spec["rate_bps"] / 8 * secs))

    def run(self):
        try:
            self._loop()
        except OSError:
            # A reset or broken pipe on one side ends the whole connection, as on a real link.
            self.conn.abort("rst")
        finally:
            self.conn.pump_done()

    def _loop(self):
        while not self.conn.over():
            now = time.monotonic()
            if not self._fire_faults(now):
                return
            if self.eof and self.hold_until == math.inf:
                # The sender gave up on a dead link: let the other end see it too rather
                # than pin a server session (Dovecot limits sessions per user and IP).
                self.conn.abort("fin")
                return
            if self.eof and not self.queue and now >= self.hold_until:
                self._shutdown_dst()  # the FIN is part of the stream: it waits out a stall
                return
            timeout, want_write = self._plan(now)
            rlist = list(self.conn.wake_fds)
            if not self.eof and self.queued < self.max_buffer:
                rlist.append(self.src)
            readable, writable, _ = select.select(rlist, [self.dst] if want_write else [], [],
                                                  timeout)
            if self.src in readable:
                self._read()
            if writable:
                self._write()

    def _fire_faults(self, now):
        while self.faults and self.delivered >= self.faults[0].offset:
            fault = self.faults.pop(0)
            self.conn.record(self.name, fault, self.delivered)
            if fault.kind == "cut":
                self.conn.abort(fault.mode)
                return False
            self.hold_until = now + fault.duration if fault.duration is not None else math.inf
        return True

    def _room(self):
        """Bytes that may go out before the next fault must fire at its exact offset."""
        return self.faults[0].offset - self.delivered if self.faults else math.inf

    def _plan(self, now):
        """(select timeout, whether to wait for dst to become writable)."""
        if now < self.hold_until:
            return (None if self.hold_until == math.inf else self.hold_until - now), False
        if not self.queue:
            return None, False
        due, data = self.queue[0]
        if due > now:
            return due - now, False
        want = min(len(data), self._room())
        if self.bucket and not self.bucket.allowance(now, want):
            return self.bucket.delay(want), False
        return None, True

    def _read(self):
        try:
            data = self.src.recv(min(RECV_SIZE, max(1, self.max_buffer - self.queued)))
        except BlockingIOError:
            return
        if not data:
            self.eof = True
            return
        due = time.monotonic() + self.latency
        if self.jitter:
            due += self.rng.uniform(0, self.jitter)
        # Jitter varies the delay but a TCP stream never reorders, so never overtake.
        due = max(due, self.last_due)
        self.last_due = due
        self.queue.append([due, memoryview(data)])
        self.queued += len(data)

    def _write(self):
        head = self.queue[0]
        n = min(len(head[1]), self._room())
        if self.bucket:
            n = min(n, self.bucket.allowance(time.monotonic(), n))
        if n <= 0:
            return
        try:
            sent = self.dst.send(head[1][:n])
        except BlockingIOError:
            return
        if self.bucket:
            self.bucket.tokens -= sent
        if sent == len(head[1]):
            self.queue.popleft()
        else:
            head[1] = head[1][sent:]
        self.queued -= sent
        self.delivered += sent
        self.conn.em.count_bytes(self.name, sent)

    def _shutdown_dst(self):
        try:
            self.dst.shutdown(socket.SHUT_WR)
        except OSError:
            pass


class _Conn:
    """A client connection and its server side: two pumps, closed by whichever ends last
    so no thread ever closes a socket another one is still waiting on."""

    def __init__(self, em, index, client):
        self.em, self.index, self.client = em, index, client
        self.server = None
        self.wake_r, self.wake_w = os.pipe()
        self.wake_fds = (em.wake_r, self.wake_r)
        self.cut_mode = None
        self.lock = threading.Lock()
        self.live = 2
        self.threads = []

    def start(self):
        thread = threading.Thread(target=self._run, name=f"linkem-{self.index}-up", daemon=True)
        self.threads.append(thread)
        thread.start()

    def over(self):
        return self.em.stopping.is_set() or self.cut_mode is not None

    def abort(self, mode):
        with self.lock:
            if self.cut_mode is None:
                self.cut_mode = mode
                os.write(self.wake_w, b"x")  # never drained: stays readable for both pumps

    def record(self, dirname, fault, offset):
        self.em.record_fault(self.index, dirname, fault, offset)

    def _run(self):
        try:
            self.server = self._connect()
        except OSError as e:
            self.em.log(f"conn {self.index}: cannot reach {self.em.target}: {e}")
            self.server = None
        if self.server is None:
            self.live = 0
            self._close()
            return
        pumps = {d: self._make_pump(d) for d in DIRS}
        self.pumps = pumps  # tests may add a fault to a live connection
        down = threading.Thread(target=pumps["down"].run, name=f"linkem-{self.index}-down",
                                daemon=True)
        self.threads.append(down)
        down.start()
        pumps["up"].run()

    def _connect(self):
        """Non-blocking connect so stop() is not held up by an unreachable target."""
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        sock.connect_ex(self.em.target)
        _, writable, _ = select.select([self.em.wake_r], [sock], [], 5.0)
        err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) if writable else None
        if not writable or err:
            sock.close()
            if self.em.stopping.is_set():
                return None
            raise OSError(err or 110, os.strerror(err or 110))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock

    def _make_pump(self, dirname):
        em, i = self.em, self.index
        spec = em.specs[dirname]
        faults = em.faults_for(i, dirname)
        rng = random.Random(f"linkem-jitter:{em.opts['seed']}:{i}:{dirname}")
        if dirname == "up":
            return _Pump(self, dirname, self.client, self.server, spec, faults, rng)
        return _Pump(self, dirname, self.server, self.client, spec, faults, rng)

    def pump_done(self):
        with self.lock:
            self.live -= 1
            last = self.live == 0
        if last:
            self._close()

    def _close(self):
        socks = [s for s in (self.client, self.server) if s is not None]
        mode = None if self.em.stopping.is_set() else self.cut_mode
        if mode == "rst":
            _wait_sent(socks, time.monotonic() + RST_DRAIN)
        for sock in socks:
            try:
                if mode == "rst":
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                elif mode == "fin":
                    _close_quietly(sock)
            except OSError:
                pass
            sock.close()
        os.close(self.wake_r)
        os.close(self.wake_w)
        self.em.conn_done(self)


def _wait_sent(socks, deadline):
    """A cut "after N bytes" must let exactly N through: the RST would throw away whatever
    the kernel still holds unsent, so give the receivers a moment to take it."""
    for sock in socks:
        while time.monotonic() < deadline:
            try:
                pending = struct.unpack("i", fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ,
                                                         b"\0\0\0\0"))[0]
            except OSError:
                break
            if pending == 0:
                break
            time.sleep(0.005)


def _close_quietly(sock):
    """Linux answers close() with RST when unread input is pending; a FIN cut must not."""
    sock.shutdown(socket.SHUT_WR)
    try:
        for _ in range(64):  # bounded: a peer that keeps sending gets its RST after all
            if not sock.recv(RECV_SIZE):
                break
    except OSError:
        pass


class LinkEm:
    """The proxy. Options: see DIR_DEFAULTS (plain, up_ or down_ prefixed) and
    GLOBAL_DEFAULTS. start() returns the listening port; stop() ends everything within a
    second; stats() returns the counters."""

    def __init__(self, target, **opts):
        self.target = parse_addr(target)
        self.opts = dict(GLOBAL_DEFAULTS)
        self.specs = {d: dict(DIR_DEFAULTS) for d in DIRS}
        for key, value in opts.items():
            self._set_option(key, value)
        self.opts["listen"] = parse_addr(self.opts["listen"])
        if self.opts["cut_mode"] not in CUT_MODES:
            raise ValueError(f"cut_mode must be one of {CUT_MODES}")
        self.fault_scope = self._parse_scope(self.opts["faults"])
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.conns = set()
        self.next_index = 0
        self.counters = {"connections": 0, "active": 0, "bytes_up": 0, "bytes_down": 0,
                         "faults": 0}
        self.fault_log = []
        self.lsock = None
        self.acceptor = None
        self.port = None

    def _set_option(self, key, value):
        if key in GLOBAL_DEFAULTS:
            self.opts[key] = value
            return
        if key in DIR_DEFAULTS:
            for d in DIRS:
                self.specs[d][key] = value
            return
        dirname, _, name = key.partition("_")
        if dirname in DIRS and name in DIR_DEFAULTS:
            self.specs[dirname][name] = value
            return
        raise TypeError(f"LinkEm: unknown option {key!r}")

    @staticmethod
    def _parse_scope(value):
        """Which connections (0-based index) get faults: a predicate."""
        if value == "all":
            return lambda i: True
        if value == "first":
            return lambda i: i < 1
        if str(value).startswith("#"):
            only = int(value[1:]) - 1
            return lambda i: i == only
        return lambda i, n=int(value): i < n

    def log(self, msg):
        if self.opts["log"]:
            self.opts["log"](f"linkem: {msg}")

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.stop()

    def start(self):
        self.wake_r, self.wake_w = os.pipe()
        self.lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.lsock.bind(self.opts["listen"])
        self.lsock.listen(128)
        self.lsock.setblocking(False)
        self.port = self.lsock.getsockname()[1]
        self.acceptor = threading.Thread(target=self._accept_loop, name="linkem-accept",
                                         daemon=True)
        self.acceptor.start()
        self.log(f"listening on {self.opts['listen'][0]}:{self.port} -> "
                 f"{self.target[0]}:{self.target[1]}")
        return self.port

    def _accept_loop(self):
        while not self.stopping.is_set():
            select.select([self.lsock, self.wake_r], [], [])
            if self.stopping.is_set():
                return
            try:
                client, _ = self.lsock.accept()
            except (BlockingIOError, ConnectionAbortedError):
                continue
            client.setblocking(False)
            client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self.lock:
                conn = _Conn(self, self.next_index, client)
                self.next_index += 1
                self.conns.add(conn)
                self.counters["connections"] += 1
                self.counters["active"] += 1
            conn.start()

    def stop(self):
        if self.lsock is None or self.stopping.is_set():
            return
        self.stopping.set()
        os.write(self.wake_w, b"x")  # never drained: wakes every thread at once
        deadline = time.monotonic() + STOP_BUDGET
        self.acceptor.join(max(0.0, deadline - time.monotonic()))
        with self.lock:
            conns = list(self.conns)
        for conn in conns:
            i = 0
            while i < len(conn.threads):  # the down pump is appended before up ends
                conn.threads[i].join(max(0.0, deadline - time.monotonic()))
                i += 1
        self.lsock.close()
        stuck = self.acceptor.is_alive() or any(
            t.is_alive() for c in conns for t in c.threads)
        if not stuck:  # a thread still selecting on the pipe must not see its fd reused
            os.close(self.wake_r)
            os.close(self.wake_w)
        self.log(f"stopped: {json.dumps(self.stats()['counters'])}")

    def faults_for(self, index, dirname):
        """The faults connection `index` suffers in one direction, by offset."""
        if not self.fault_scope(index):
            return []
        spec, opts = self.specs[dirname], self.opts
        faults = []
        if spec["stall_after"] is not None:
            faults.append(_Fault("stall", int(spec["stall_after"]), opts["stall_for"]))
        if spec["stall_random"] is not None:
            lo, hi = spec["stall_random"]
            rng = random.Random(f"linkem-stall:{opts['seed']}:{index}:{dirname}")
            faults.append(_Fault("stall", rng.randint(lo, hi), opts["stall_for"],
                                 origin="random"))
        if spec["cut_after"] is not None:
            faults.append(_Fault("cut", int(spec["cut_after"]), mode=opts["cut_mode"]))
        if opts["chaos"] is not None:
            plan = chaos_plan(opts["chaos"], index, *opts["chaos_range"])
            if plan["dir"] == dirname and plan["kind"] != "none":
                duration = opts["spike_ms"] / 1000.0 if plan["kind"] == "spike" else \
                    opts["stall_for"]
                faults.append(_Fault(plan["kind"], plan["offset"], duration, plan["mode"],
                                     origin="chaos"))
        faults.sort(key=lambda f: f.offset)
        return faults

    def record_fault(self, index, dirname, fault, offset):
        entry = {"conn": index, "dir": dirname, "kind": fault.kind, "offset": offset,
                 "origin": fault.origin}
        if fault.kind == "cut":
            entry["mode"] = fault.mode
        elif fault.duration is not None:
            entry["duration"] = fault.duration
        with self.lock:
            self.counters["faults"] += 1
            self.fault_log.append(entry)
        self.log(f"conn {index} {dirname}: {fault.kind} after {offset} bytes "
                 f"({fault.origin}{', ' + fault.mode if fault.kind == 'cut' else ''})")

    def count_bytes(self, dirname, n):
        with self.lock:
            self.counters["bytes_" + dirname] += n

    def conn_done(self, conn):
        with self.lock:
            self.conns.discard(conn)
            self.counters["active"] -= 1

    def stats(self):
        with self.lock:
            return {"counters": dict(self.counters), "faults": list(self.fault_log)}


def _parse_rate(text):
    """Bits per second with an optional k/M/G suffix (decimal, as link speeds are quoted)."""
    mult = {"k": 1e3, "m": 1e6, "g": 1e9}.get(text[-1:].lower())
    return int(float(text[:-1]) * mult) if mult else int(text)


def _parse_range(text):
    lo, _, hi = text.partition(":")
    return (int(lo), int(hi or lo))


def _build_parser():
    p = argparse.ArgumentParser(description="Userspace TCP link emulator for ofsync tests.")
    p.add_argument("--listen", default="127.0.0.1:0", help="HOST:PORT (port 0 = any)")
    p.add_argument("--target", required=True, help="HOST:PORT of the real server")
    p.add_argument("--port-file", help="write the chosen listen port here (atomically)")
    p.add_argument("--stats-file", help="write the counters and fault log here as JSON on exit")
    p.add_argument("-v", "--verbose", action="store_true", help="log connections and faults")
    per_dir = (("latency", "latency_ms", float, "MS", "one-way latency"),
               ("jitter", "jitter_ms", float, "MS", "extra random delay, never reordering"),
               ("rate", "rate_bps", _parse_rate, "BITS", "bandwidth cap in bits/s (56k, 1M)"),
               ("stall-after", "stall_after", int, "N", "stall after N bytes"),
               ("stall-random", "stall_random", _parse_range, "LO:HI",
                "stall at a seeded offset"),
               ("cut-after", "cut_after", int, "N", "cut the connection after N bytes"),
               ("max-buffer", "max_buffer", int, "N", "bytes held before backpressure"))
    for flag, dest, conv, metavar, help_text in per_dir:
        for prefix in ("", "up-", "down-"):
            where = {"": "both directions", "up-": "client->server",
                     "down-": "server->client"}[prefix]
            p.add_argument(f"--{prefix}{flag}", dest=prefix.replace("-", "_") + dest,
                           type=conv, metavar=metavar, help=f"{help_text} ({where})")
    p.add_argument("--stall-for", type=float, metavar="S",
                   help="stall length in s (default: until either end closes)")
    p.add_argument("--cut-mode", choices=CUT_MODES, default="rst")
    p.add_argument("--chaos", type=int, metavar="SEED",
                   help="per connection, pick none/stall/cut/spike at a seeded offset")
    p.add_argument("--chaos-range", type=_parse_range, default=(0, 65536), metavar="LO:HI")
    p.add_argument("--spike-ms", type=float, default=3000.0, metavar="MS",
                   help="length of a chaos latency spike")
    p.add_argument("--faults", default="all", metavar="all|first|N|#N",
                   help="which connections get stalls, cuts and chaos")
    p.add_argument("--seed", type=int, default=0, metavar="N",
                   help="seed for jitter and random stalls")
    return p


def main(argv=None):
    args = _build_parser().parse_args(argv)
    opts = {"listen": args.listen, "stall_for": args.stall_for, "cut_mode": args.cut_mode,
            "chaos": args.chaos, "chaos_range": args.chaos_range, "spike_ms": args.spike_ms,
            "faults": args.faults, "seed": args.seed}
    if args.verbose:
        opts["log"] = lambda msg: print(msg, file=sys.stderr, flush=True)
    for name in DIR_DEFAULTS:
        for prefix in ("", "up_", "down_"):
            value = getattr(args, prefix + name)
            if value is not None:
                opts[prefix + name] = value
    em = LinkEm(args.target, **opts)
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    signal.signal(signal.SIGINT, lambda *_: done.set())
    port = em.start()
    print(port, flush=True)
    if args.port_file:
        tmp = f"{args.port_file}.tmp{os.getpid()}"
        with open(tmp, "w") as f:
            f.write(f"{port}\n")
        os.rename(tmp, args.port_file)  # a waiting reader never sees a half-written file
    while not done.wait(3600):
        pass
    em.stop()
    if args.stats_file:
        with open(args.stats_file, "w") as f:
            json.dump(em.stats(), f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
