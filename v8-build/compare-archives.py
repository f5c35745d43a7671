#!/usr/bin/env python3
"""Compare two V8 archives member by member, to find why two builds differ.

Usage: v8-build/compare-archives.py A B [--strings N]
  A, B         a librusty_v8 archive (.a or .a.gz) or a folder holding
               librusty_v8_release_x86_64-unknown-linux-gnu.a.gz (build-from-source.sh's --out,
               or ../shared/v8)
  --strings N  for each of the first N differing members, print the printable strings (8 or
               more characters) found in one member and not in the other (default 5)

Prints each archive's SHA-256 (uncompressed), its member count, and the members that differ
(in their contents or in their headers' time, owner and mode) or occur in only one of them, in
archive order; the symbol table and the table of long names count as members. Members are
matched by position among those of the same name, so an archive holding two `utils.o` compares
each with its counterpart. Exits 0 when the archives are identical, 1 when they differ, 2 on
bad input.
"""

import collections
import gzip
import hashlib
import os
import re
import signal
import sys

ARCHIVE_NAME = "librusty_v8_release_x86_64-unknown-linux-gnu.a.gz"
PRINTABLE_RUN = re.compile(rb"[\x20-\x7e]{8,}")


def fail(message):
    print(f"compare-archives: {message}", file=sys.stderr)
    sys.exit(2)


def read_archive(path):
    """The uncompressed bytes of the archive at `path` (a file or a folder holding one)."""
    if os.path.isdir(path):
        path = os.path.join(path, ARCHIVE_NAME)
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        fail(f"cannot read {path}: {e.strerror}")
    if data[:2] == b"\x1f\x8b":
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError) as e:
            fail(f"{path} is not a valid gzip file: {e}")
    return path, data


# Where ar's 60-byte member header keeps the fields that may make two archives differ.
HEADER_FIELDS = (("time", 16, 28), ("owner", 28, 34), ("group", 34, 40), ("mode", 40, 48))


def members(path, data):
    """(name, header fields, bytes) of each member of a System V / GNU `ar` archive, in order."""
    if data.startswith(b"!<thin>\n"):
        fail(f"{path} is a thin archive (it lists object files instead of holding them)")
    if not data.startswith(b"!<arch>\n"):
        fail(f"{path} is not an ar archive")
    pos, long_names, out = 8, b"", []
    while pos < len(data):
        header = data[pos:pos + 60]
        if len(header) < 60 or header[58:60] != b"`\n":
            fail(f"{path}: malformed member header at offset {pos}")
        raw_name = header[:16].rstrip(b" ")
        try:
            size = int(header[48:58])
        except ValueError:
            fail(f"{path}: malformed member size at offset {pos}")
        if pos + 60 + size > len(data):
            fail(f"{path}: the member at offset {pos} is cut short")
        body = data[pos + 60:pos + 60 + size]
        fields = {field: header[start:end].strip().decode("ascii", "replace")
                  for field, start, end in HEADER_FIELDS}
        pos += 60 + size + (size & 1)
        if raw_name == b"//":
            long_names = body
            name = "<table of long names>"
        elif raw_name in (b"/", b"/SYM64/"):
            name = "<symbol table>"
        elif raw_name.startswith(b"/") and raw_name[1:].isdigit():
            start = int(raw_name[1:])
            end = long_names.find(b"/\n", start)
            if end < 0:
                fail(f"{path}: member name /{start} points outside the table of long names")
            name = long_names[start:end].decode("utf-8", "replace")
        else:
            name = raw_name.rstrip(b"/").decode("utf-8", "replace")
        out.append((name, fields, body))
    return out


def keyed(member_list):
    """Members keyed by (name, occurrence of that name), in archive order."""
    seen = collections.Counter()
    result = {}
    for name, fields, body in member_list:
        result[(name, seen[name])] = (fields, body)
        seen[name] += 1
    return result


def main(argv):
    args, strings_limit = [], 5
    i = 0
    while i < len(argv):
        if argv[i] in ("-h", "--help"):
            print(__doc__.strip())
            return 0
        if argv[i] == "--strings":
            if i + 1 >= len(argv) or not argv[i + 1].isdigit():
                fail("--strings needs a number")
            strings_limit = int(argv[i + 1])
            i += 2
            continue
        args.append(argv[i])
        i += 1
    if len(args) != 2:
        fail("usage: compare-archives.py A B [--strings N]")

    loaded = [read_archive(p) for p in args]
    for label, (path, data) in zip("AB", loaded):
        print(f"{label}: {path}: sha256 {hashlib.sha256(data).hexdigest()}, {len(data)} bytes")
    if loaded[0][1] == loaded[1][1]:
        print("identical")
        return 0

    a_list, b_list = (members(path, data) for path, data in loaded)
    a, b = keyed(a_list), keyed(b_list)
    print(f"members: A {len(a_list)}, B {len(b_list)}")
    order = list(a) + [key for key in b if key not in a]
    differing = [key for key in order if a.get(key) != b.get(key)]
    if not differing and [m[0] for m in a_list] != [m[0] for m in b_list]:
        print("the same members with the same bytes, in a different order")
    shown = 0
    for key in differing:
        name = key[0] + (f" (#{key[1] + 1})" if key[1] else "")
        if key not in b:
            print(f"only in A: {name}")
            continue
        if key not in a:
            print(f"only in B: {name}")
            continue
        (a_fields, a_body), (b_fields, b_body) = a[key], b[key]
        if a_fields != b_fields:
            changed = ", ".join(f"{field} {a_fields[field]} / {b_fields[field]}"
                                for field, _, _ in HEADER_FIELDS if a_fields[field] != b_fields[field])
            print(f"header differs: {name} ({changed})")
        if a_body != b_body:
            print(f"differs: {name} ({len(a_body)} / {len(b_body)} bytes)")
            if shown < strings_limit:
                shown += 1
                a_strings = set(PRINTABLE_RUN.findall(a_body))
                b_strings = set(PRINTABLE_RUN.findall(b_body))
                for label, only in (("A", a_strings - b_strings), ("B", b_strings - a_strings)):
                    for s in sorted(only)[:10]:
                        print(f"    only in {label}: {s.decode('ascii')[:160]}")
    print(f"{len(differing)} of {len(order)} members differ")
    return 1


if __name__ == "__main__":
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)  # quietly, when piped into `head`
    sys.exit(main(sys.argv[1:]))
