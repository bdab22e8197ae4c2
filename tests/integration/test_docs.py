#!/usr/bin/env python3
# The documentation keeps up with the code: the man page renders with `man -l` and names every
# command, option, config key and exit status the sources define; the README's first screen
# shows install, a config and a sync, and links the rules. No server needed.
import os
import re
import subprocess
import sys

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")


def read(path):
    with open(os.path.join(ROOT, path), encoding="utf-8") as f:
        return f.read()


def rendered_man():
    p = subprocess.run(["man", "--warnings", "-l", os.path.join(ROOT, "docs", "ofsync.1")],
                       capture_output=True, env=dict(os.environ, MANWIDTH="100",
                                                     MAN_KEEP_FORMATTING="0"), timeout=60)
    if p.returncode != 0:
        raise AssertionError(f"man -l failed: {p.stderr.decode(errors='replace')}")
    warn = p.stderr.decode(errors="replace").strip()
    if warn:
        raise AssertionError(f"man -l warnings:\n{warn}")
    text = p.stdout.decode("utf-8", "replace")
    return re.sub(r".\x08", "", text).replace("\u2010", "-").replace("\u2212", "-")


def test_man_page_covers_the_code():
    man = rendered_man()
    keys = re.findall(r'\[K_[A-Z_]+\] = "([a-z-]+)"', read("src/sync/config.c"))
    assert len(keys) >= 20, f"config keys not found in config.c: {keys}"
    missing = [k for k in keys if not re.search(rf"^\s+{re.escape(k)} = ", man, re.M)]
    assert not missing, f"config keys without an entry in the man page: {missing}"
    commands = re.findall(r'^\s+\{"([a-z]+)", cmd_', read("src/cli/main.c"), re.M)
    assert "sync" in commands and "status" in commands and "init" in commands, commands
    missing = [c for c in commands if not re.search(rf"^\s+{c}\b", man, re.M)]
    assert not missing, f"commands missing from the man page: {missing}"
    opts = re.findall(r'\{"([a-z-]+)", (?:no|required)_argument', read("src/cli/cli.h") +
                      read("src/cli/main.c") + read("src/cli/cmd_init.c"))
    missing = [o for o in set(opts) if f"--{o}" not in man]
    assert not missing, f"options missing from the man page: {missing}"
    codes = re.findall(r"OFS_E_[A-Z]+ = (\d+),", read("include/ofsync.h"))
    section = man.split("EXIT STATUS", 1)[1].split("FILES", 1)[0]
    missing = [c for c in ["0", "1"] + codes if not re.search(rf"^\s+{c}\s", section, re.M)]
    assert not missing, f"exit statuses missing from the man page: {missing}"


def test_readme_first_screen():
    first = "\n".join(read("README.md").splitlines()[:45])
    for what in ("install", "[account ", "ofsync sync", "docs/sync-rules.md", "ofsync init"):
        assert what in first, f"README's first screen lacks {what!r}"


def test_json_events_documented():
    doc = read("docs/json-events.md")
    src = read("src/ui/json.c")
    types = set(re.findall(r'begin\(b, "([a-z-]+)"', src))
    assert {"pass-start", "folder-start", "progress", "waiting", "folder-done", "error",
            "pass-done", "summary"} <= types, types
    missing = [t for t in types if f"## `{t}`" not in doc]
    assert not missing, f"event types not documented: {missing}"
    fields = set(re.findall(r'key_(?:str|u64)\(b, "([a-z_]+)"', src))
    fields |= set(re.findall(r'\\"([a-z_]+)\\":', src))
    missing = [f for f in fields if f"`{f}`" not in doc]
    assert not missing, f"JSON fields not documented: {missing}"


def main():
    failed = 0
    tests = [v for k, v in sorted(globals().items()) if k.startswith("test_")]
    for t in tests:
        try:
            t()
            print(f"PASS {t.__name__}")
        except Exception as e:  # noqa: BLE001 - report every failure
            failed += 1
            print(f"FAIL {t.__name__}: {e}")
    print(f"{len(tests) - failed}/{len(tests)} passed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
