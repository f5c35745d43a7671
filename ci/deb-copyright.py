#!/usr/bin/env python3
"""Writes the Debian copyright file (DEP-5) of the `ivm` package: ivm itself, what the V8
archive bundles, the static C library, and every crate linked into the binary (from
`cargo metadata`: normal dependencies of the `ivm` package for x86_64 Linux, proc-macros
left out since their code is not in the binary), each with its license. With `--library`,
the same for libivm's packages (the `ivm-c-api` crate's dependencies; glibc is linked
dynamically there, so it is not listed).

A license this script has no text for stops it: a new dependency's license is read before
it ships.

Usage: ci/deb-copyright.py OUT [GLIBC_VERSION | --library]
"""

import json
import os
import re
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
TEXTS = os.path.join(HERE, "debian", "licenses")
# Licenses whose text Debian keeps in /usr/share/common-licenses.
COMMON = {"Apache-2.0": "Apache-2.0", "LGPL-2.1+": "LGPL-2.1", "MPL-2.0": "MPL-2.0", "CC0-1.0": "CC0-1.0"}

# What the V8 archive holds (the `v8` crate 152.2.0's source, built by v8-build/), by the
# folder of that source each part comes from.
BUNDLED = [
    ("v8/*", "2006-2025 the V8 project authors", "BSD-3-Clause", "V8 15.2.124.1"),
    ("third_party/icu/*", "2016-2025 Unicode, Inc. and others", "Unicode-3.0", "ICU 78 and its data"),
    ("third_party/libc++/* third_party/libc++abi/* third_party/libunwind/* third_party/llvm-libc/*",
     "2003-2025 the LLVM project contributors", "Apache-2.0 with LLVM exception", "libc++, libc++abi"),
    ("third_party/abseil-cpp/*", "2017-2025 The Abseil Authors", "Apache-2.0", "Abseil"),
    ("third_party/highway/*", "2019-2025 Google LLC", "Apache-2.0 or BSD-3-Clause", "Highway"),
    ("third_party/simdutf/*", "2020-2025 The simdutf authors", "Apache-2.0 or MIT", "simdutf"),
    ("third_party/fp16/*", "2017-2025 Facebook Inc., Marat Dukhan", "MIT", "FP16"),
    ("third_party/fast_float/*", "2021-2025 The fast_float authors", "Apache-2.0 or MIT or BSL-1.0", "fast_float"),
    ("third_party/dragonbox/*", "2020-2025 Junekey Jeon", "Apache-2.0 with LLVM exception or BSL-1.0", "Dragonbox"),
    ("build/* buildtools/*", "2006-2025 The Chromium Authors", "BSD-3-Clause", "Chromium's build configuration"),
]


def spdx_to_dep5(expression):
    """An SPDX expression in DEP-5's words: `or`/`and`, `with LLVM exception`."""
    expression = expression.replace("/", " OR ")
    expression = re.sub(r"\s+WITH\s+LLVM-exception", " with LLVM exception", expression)
    expression = re.sub(r"\bOR\b", "or", expression)
    expression = re.sub(r"\bAND\b", "and", expression)
    return re.sub(r"\s+", " ", expression).strip()


def names(expression):
    """The license names a DEP-5 expression uses."""
    found = set()
    for word in re.split(r"[\s()]+", expression.replace(" with LLVM exception", " LLVM-exception")):
        if word and word not in ("or", "and"):
            found.add(word)
    return found


def linked_crates(root_name):
    metadata = json.loads(subprocess.run(
        ["cargo", "metadata", "--locked", "--format-version", "1", "--filter-platform", "x86_64-unknown-linux-gnu"],
        check=True, capture_output=True, text=True, cwd=os.path.dirname(HERE)).stdout)
    packages = {p["id"]: p for p in metadata["packages"]}
    nodes = {n["id"]: n for n in metadata["resolve"]["nodes"]}
    members = set(metadata["workspace_members"])
    root = next(p["id"] for p in metadata["packages"] if p["name"] == root_name and p["id"] in members)
    seen, stack = set(), [root]
    while stack:
        node = stack.pop()
        if node in seen:
            continue
        seen.add(node)
        if is_proc_macro(packages[node]):
            continue  # runs in the compiler; neither it nor its dependencies are linked
        for dep in nodes[node]["deps"]:
            if any(kind["kind"] is None for kind in dep["dep_kinds"]):
                stack.append(dep["pkg"])
    crates = [packages[node] for node in seen - members if not is_proc_macro(packages[node])]
    return sorted(crates, key=lambda p: (p["name"], p["version"]))


def is_proc_macro(package):
    return any("proc-macro" in target["kind"] for target in package["targets"])


def paragraph(fields):
    lines = []
    for key, value in fields:
        first, *rest = value.split("\n")
        lines.append(f"{key}: {first}".rstrip())
        lines.extend(f" {line}" if line.strip() else " ." for line in rest)
    return "\n".join(lines)


def main():
    out = sys.argv[1]
    library = sys.argv[2:] == ["--library"]
    glibc = None if library else sys.argv[2] if len(sys.argv) > 2 else "the build machine's"
    if library:
        comment = ("libivm (libivm.so.0, libivm.a) is ivm's C API. Besides ivm's own code it holds the\n"
                   "V8 archive built from the source of the `v8` crate 152.2.0 (its folders are named\n"
                   "below) and the Rust crates listed below by the folder `cargo vendor\n"
                   "--versioned-dirs` puts them in (those ivm's workspace links; libivm holds a subset).")
    else:
        comment = ("The ivm binary is one static executable. Besides ivm's own code it holds the V8\n"
                   "archive built from the source of the `v8` crate 152.2.0 (its folders are named\n"
                   "below), the GNU C Library (linked statically; its version is named below), and\n"
                   "the Rust crates listed below by the folder `cargo vendor --versioned-dirs` puts\n"
                   "them in.")
    paragraphs = [paragraph([
        ("Format", "https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/"),
        ("Upstream-Name", "ivm"),
        ("Comment", comment),
    ])]
    paragraphs.append(paragraph([("Files", "*"), ("Copyright", "2026 The ivm developers"), ("License", "MIT or Apache-2.0")]))
    used = {"MIT", "Apache-2.0", "LGPL-2.1+"}
    for files, holders, license, what in BUNDLED:
        paragraphs.append(paragraph([("Files", files), ("Copyright", holders), ("License", license), ("Comment", f"{what}, in the V8 archive")]))
        used |= names(license)
    if glibc is not None:
        paragraphs.append(paragraph([
            ("Files", "debian/glibc/*"),
            ("Copyright", "1991-2025 Free Software Foundation, Inc. and others"),
            ("License", "LGPL-2.1+"),
            ("Comment", f"The GNU C Library {glibc}, linked statically; its source is Debian's glibc package."),
        ]))
    else:
        used.discard("LGPL-2.1+")
    for crate in linked_crates("ivm-c-api" if library else "ivm"):
        license = spdx_to_dep5(crate["license"] or "")
        if not license:
            sys.exit(f"deb-copyright: {crate['name']} {crate['version']} states no license")
        holders = "\n".join(a for a in crate.get("authors") or []) or f"the {crate['name']} developers"
        paragraphs.append(paragraph([("Files", f"vendor/{crate['name']}-{crate['version']}/*"), ("Copyright", holders), ("License", license)]))
        used |= names(license)
    for name in sorted(used):
        if name in COMMON:
            text = f"On Debian systems, the complete text of this license is in\n/usr/share/common-licenses/{COMMON[name]}."
        else:
            path = os.path.join(TEXTS, name)
            if not os.path.exists(path):
                sys.exit(f"deb-copyright: no text for the license {name} (add it to ci/debian/licenses/)")
            with open(path, encoding="utf-8") as f:
                text = f.read().strip("\n")
        if name == "LLVM-exception":
            name = "Apache-2.0 with LLVM exception"
            text = "On Debian systems, the complete text of the Apache License 2.0 is in\n" \
                   "/usr/share/common-licenses/Apache-2.0; the exception follows.\n\n" + text
        paragraphs.append(paragraph([("License", f"{name}\n{text}")]))
    with open(out, "w", encoding="utf-8") as f:
        f.write("\n\n".join(paragraphs) + "\n")


if __name__ == "__main__":
    main()
