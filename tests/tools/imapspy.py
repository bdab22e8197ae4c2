#!/usr/bin/env python3
# imapspy.py: a recording TCP proxy between an IMAP client and server on 127.0.0.1.
# Counts bytes, client command lines by verb, and round trips (client waits for the server).
"""Usage as a library (tests):

    with ImapSpy(("127.0.0.1", port)) as spy:
        run_client(port=spy.port)
    spy.stats()  # {"bytes_up", "bytes_down", "round_trips", "commands": {"SELECT": 3, ...},
                 #  "connections", "max_active", "per_conn": [{"round_trips", "commands"}]}

As a program (bench): imapspy.py --target 127.0.0.1:PORT --port-file F --stats-file S
runs until SIGTERM/SIGINT, then writes the stats as JSON.

A round trip is counted each time the server sends after the client did: the client had to
wait for an answer. Pipelined commands therefore count once per burst, not once per command.
Command lines are the client's lines that look like "tag VERB ..."; with COMPRESS active the
stream is opaque, so verbs after COMPRESS are not counted (bytes and round trips still are).
"""
import argparse
import json
import re
import signal
import socket
import sys
import threading

CMD_RE = re.compile(rb"^[A-Za-z0-9.]+ (UID [A-Za-z]+|[A-Za-z]+)")


class ImapSpy:
    def __init__(self, target, listen=("127.0.0.1", 0)):
        self.target = target
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(listen)
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.lock = threading.Lock()
        self.bytes_up = self.bytes_down = self.round_trips = 0
        self.commands = {}
        self.lines = []  # client command lines, decoded, in order
        self._last_dir = {}
        self._threads = []
        self._stop = False
        self._conns = []
        self.connections = self.active = self.max_active = 0
        self.per_conn = {}  # connection number -> {"round_trips", "commands"}

    def __enter__(self):
        t = threading.Thread(target=self._accept, daemon=True)
        t.start()
        self._threads.append(t)
        return self

    def __exit__(self, *exc):
        self.stop()

    def stop(self):
        self._stop = True
        try:
            self.sock.close()
        except OSError:
            pass
        for c in self._conns:
            for s in c:
                try:
                    s.close()
                except OSError:
                    pass

    def reset(self):
        with self.lock:
            self.bytes_up = self.bytes_down = self.round_trips = 0
            self.commands = {}
            self.lines = []
            self.connections = self.max_active = self.active
            self.per_conn = {}

    def stats(self):
        with self.lock:
            return {"bytes_up": self.bytes_up, "bytes_down": self.bytes_down,
                    "round_trips": self.round_trips, "commands": dict(self.commands),
                    "connections": self.connections, "max_active": self.max_active,
                    "per_conn": [{"round_trips": c["round_trips"],
                                  "commands": dict(c["commands"])}
                                 for _, c in sorted(self.per_conn.items())]}

    def _accept(self):
        n = 0
        while not self._stop:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            try:
                s = socket.create_connection(self.target)
            except OSError:
                c.close()
                continue
            for x in (c, s):
                x.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            n += 1
            self._conns.append((c, s))
            with self.lock:
                self.connections += 1
                self.active += 1
                self.max_active = max(self.max_active, self.active)
            state = {"buf": b"", "compressed": False, "open": 2, "conn": n}
            for args in ((c, s, "up", n, state), (s, c, "down", n, state)):
                t = threading.Thread(target=self._pump, args=args, daemon=True)
                t.start()

    def _conn_stats(self, conn):
        return self.per_conn.setdefault(conn, {"round_trips": 0, "commands": {}})

    def _note_up(self, data, state):
        if state["compressed"]:
            return
        state["buf"] += data
        while b"\n" in state["buf"]:
            line, state["buf"] = state["buf"].split(b"\n", 1)
            m = CMD_RE.match(line)
            if not m:
                continue
            verb = m.group(1).decode("ascii", "replace").upper()
            self.commands[verb] = self.commands.get(verb, 0) + 1
            per = self._conn_stats(state["conn"])["commands"]
            per[verb] = per.get(verb, 0) + 1
            self.lines.append(line.decode("utf-8", "replace").rstrip("\r"))
            if verb == "COMPRESS":
                state["compressed"] = True  # assume it is accepted; the rest is deflated
                state["buf"] = b""
                return

    def _pump(self, src, dst, direction, conn, state):
        while True:
            try:
                data = src.recv(65536)
            except OSError:
                data = b""
            if not data:
                try:
                    dst.shutdown(socket.SHUT_WR)
                except OSError:
                    pass
                with self.lock:
                    state["open"] -= 1
                    if not state["open"]:
                        self.active -= 1
                return
            with self.lock:
                if direction == "up":
                    self.bytes_up += len(data)
                    self._note_up(data, state)
                else:
                    self.bytes_down += len(data)
                    if self._last_dir.get(conn) == "up":
                        self.round_trips += 1
                        self._conn_stats(conn)["round_trips"] += 1
                self._last_dir[conn] = direction
            try:
                dst.sendall(data)
            except OSError:
                return


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--target", required=True, help="HOST:PORT of the server")
    ap.add_argument("--port-file", help="write the listening port here")
    ap.add_argument("--stats-file", help="write the stats here (JSON) on SIGTERM/SIGINT")
    a = ap.parse_args()
    host, port = a.target.rsplit(":", 1)
    spy = ImapSpy((host, int(port)))
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    signal.signal(signal.SIGINT, lambda *_: done.set())
    with spy:
        if a.port_file:
            with open(a.port_file + ".tmp", "w") as f:
                f.write(f"{spy.port}\n")
            import os
            os.rename(a.port_file + ".tmp", a.port_file)
        print(spy.port, flush=True)
        done.wait()
    if a.stats_file:
        with open(a.stats_file, "w") as f:
            json.dump(spy.stats(), f)
    return 0


if __name__ == "__main__":
    sys.exit(main())
