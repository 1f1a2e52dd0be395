#!/usr/bin/env python3
"""Measures what the chunk-size parameters cost and buy: for each (min, avg, max) it backs up an
image-like file, then a copy with small scattered edits (byte-shifting inserts and deletes of up
to 512 bytes, and 4 KiB overwrites), and reports the bytes the edited version added, the index
entries (unique chunks) and the first backup's throughput. Deterministic corpus (seeded), built
from files Debian ships, so nothing is downloaded.

usage: tests/bench/chunk_sizes.py [--whorl build/bin/whorl] [--mib 128] [--edits 40]
"""
import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time

SIZES = [  # (min, avg, max) in KiB
    (4, 16, 64),
    (8, 32, 128),
    (16, 64, 256),
    (64, 256, 1024),
    (256, 1024, 4096),
]


def corpus(mib, seed):
    rng = random.Random(seed)
    pool = []
    for root in ("/usr/lib/x86_64-linux-gnu", "/usr/share/doc", "/usr/bin"):
        for dirpath, _, names in os.walk(root):
            for n in sorted(names):
                p = os.path.join(dirpath, n)
                if os.path.isfile(p) and not os.path.islink(p):
                    pool.append(p)
    pool.sort()
    rng.shuffle(pool)
    out = bytearray()
    target = mib << 20
    i = 0
    while len(out) < target:
        kind = rng.random()
        if kind < 0.1:
            out += bytes(rng.randrange(4096, 1 << 20))  # zero run
        elif kind < 0.2:
            out += rng.randbytes(rng.randrange(4096, 1 << 20))  # incompressible
        else:
            with open(pool[i % len(pool)], "rb") as f:
                out += f.read(4 << 20)
            i += 1
    return bytes(out[:target])


def edit(data, edits, seed):
    rng = random.Random(seed)
    b = bytearray(data)
    for _ in range(edits):
        at = rng.randrange(len(b))
        k = rng.random()
        if k < 0.4:
            b[at:at] = rng.randbytes(rng.randrange(1, 513))
        elif k < 0.8:
            del b[at:at + rng.randrange(1, 513)]
        else:
            at -= at % 4096
            b[at:at + 4096] = rng.randbytes(4096)
    return bytes(b)


def whorl(binary, *args):
    r = subprocess.run([binary, *args], capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"whorl {' '.join(args)} failed ({r.returncode}): {r.stderr}")
    return r.stdout


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--whorl", default="build/bin/whorl")
    ap.add_argument("--mib", type=int, default=128)
    ap.add_argument("--edits", type=int, default=40)
    a = ap.parse_args()
    work = tempfile.mkdtemp(prefix="whorl-chunk-sizes-")
    try:
        v1 = corpus(a.mib, 1)
        v2 = edit(v1, a.edits, 2)
        src = os.path.join(work, "src")
        os.mkdir(src)
        print(f"corpus {a.mib} MiB, {a.edits} edits; whorl {a.whorl}")
        print("| min/avg/max KiB | chunks v1 | v2 added KiB | v2 added / edit KiB | first backup MiB/s |")
        print("|---|---|---|---|---|")
        for mn, avg, mx in SIZES:
            repo = os.path.join(work, f"repo-{avg}")
            whorl(a.whorl, "init", "--repo", repo, "--chunk-min", str(mn << 10),
                  "--chunk-avg", str(avg << 10), "--chunk-max", str(mx << 10))
            with open(os.path.join(src, "image"), "wb") as f:
                f.write(v1)
            subprocess.run(["sync"])
            t = time.monotonic()
            s1 = json.loads(whorl(a.whorl, "backup", "--repo", repo, "--json", src).splitlines()[-1])
            secs = time.monotonic() - t
            chunks1 = json.loads(whorl(a.whorl, "stats", "--repo", repo, "--json"))["unique_chunks"]
            with open(os.path.join(src, "image"), "wb") as f:
                f.write(v2)
            s2 = json.loads(whorl(a.whorl, "backup", "--repo", repo, "--json", src).splitlines()[-1])
            added = s2["data_added"] / 1024
            print(f"| {mn}/{avg}/{mx} | {chunks1} | {added:.0f} | {added / a.edits:.1f} | "
                  f"{a.mib / secs:.0f} |")
            shutil.rmtree(repo)
    finally:
        shutil.rmtree(work)


if __name__ == "__main__":
    main()
