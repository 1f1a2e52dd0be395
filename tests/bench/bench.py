#!/usr/bin/env python3
"""Whorl side by side with restic and borg (issue 5). Python 3.11 standard library only.

Generates two corpora deterministically (seeded, from files Debian installs under /usr, nothing
downloaded) in a temporary directory, applies their versions in place to ONE live directory, and
after every version backs the same live state up with every tool (tools interleaved, their order
rotated per step and repetition, `sync` and, when permitted, a page-cache drop before each timed
step). Then it restores the last version with every tool (timed, verified with `diff -r`), and
measures the machine's primitives (openssl sha256, zstd -3, and whorl's own when a whorl-bench
binary exists). Writes results.md, results.json and backup_times.png to --out.

Usually started by tests/bench/run.sh, which installs the tools and builds whorl:
    tests/bench/bench.py --whorl build-bench/bin/whorl [--quick] [--reps N] [--out DIR]
"""
import argparse
import datetime
import json
import os
import platform
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
MIB = 1 << 20
SEED = 5  # issue 5; change it and every corpus changes, keep it and every run sees the same bytes


class BenchError(Exception):
    pass


def log(msg):
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def tail(text, n=25):
    lines = (text or "").strip().splitlines()
    return "\n".join(lines[-n:])


def run(cmd, what, env=None, cwd=None, timeout=None):
    """Runs cmd; on failure raises BenchError naming `what`, the command and its stderr."""
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=cwd,
                           timeout=timeout)
    except FileNotFoundError as e:
        raise BenchError(f"{what}: cannot run {cmd[0]}: {e}") from None
    except subprocess.TimeoutExpired:
        raise BenchError(f"{what}: timed out after {timeout}s: {' '.join(cmd)}") from None
    if r.returncode != 0:
        raise BenchError(f"{what} failed (exit {r.returncode}): {' '.join(cmd)}\n"
                         f"--- stderr ---\n{tail(r.stderr)}\n--- stdout ---\n{tail(r.stdout, 10)}")
    return r


def du_bytes(*paths):
    paths = [p for p in paths if os.path.exists(p)]
    if not paths:
        return 0
    r = run(["du", "-sbc", *paths], "du")
    return int(r.stdout.strip().splitlines()[-1].split()[0])


def tree_bytes(path):
    """Logical bytes under path (regular files), and the number of files."""
    total = files = 0
    for dirpath, _, names in os.walk(path):
        for n in names:
            st = os.lstat(os.path.join(dirpath, n))
            total += st.st_size
            files += 1
    return total, files


class Settler:
    """`sync`, then drop the page cache if this machine lets us."""

    def __init__(self):
        self.can_drop = True
        self.note = "page cache dropped (echo 3 > /proc/sys/vm/drop_caches) before each timed step"
        try:
            with open("/proc/sys/vm/drop_caches", "w") as f:
                f.write("3\n")
        except OSError as e:
            self.can_drop = False
            self.note = (f"page cache NOT dropped ({e.strerror} on /proc/sys/vm/drop_caches): "
                         "every timed step reads a warm cache; `sync` only")

    def __call__(self):
        subprocess.run(["sync"], check=True)
        if self.can_drop:
            try:
                with open("/proc/sys/vm/drop_caches", "w") as f:
                    f.write("3\n")
            except OSError:
                pass


def timed(cmd, what, tmp, env=None, cwd=None):
    """Runs cmd under GNU time: wall (monotonic), user, sys (s), peak RSS (KiB)."""
    tf = os.path.join(tmp, "time.out")
    full = ["/usr/bin/time", "-f", "%e %U %S %M", "-o", tf, *cmd]
    t0 = time.monotonic()
    r = subprocess.run(full, capture_output=True, text=True, env=env, cwd=cwd)
    wall = time.monotonic() - t0
    if r.returncode != 0:
        raise BenchError(f"{what} failed (exit {r.returncode}): {' '.join(cmd)}\n"
                         f"--- stderr ---\n{tail(r.stderr)}\n--- stdout ---\n{tail(r.stdout, 10)}")
    with open(tf) as f:
        fields = f.read().split()[-4:]
    _, user, sys_, rss = fields
    return {"wall": wall, "user": float(user), "sys": float(sys_), "rss_kib": int(rss)}, r


# ---------------------------------------------------------------------------------------------
# The pool of Debian's files
# ---------------------------------------------------------------------------------------------

def list_pool(roots, max_size):
    """Sorted (path, size) of the regular, readable files under roots (no symlinks)."""
    out = []
    for root in roots:
        for dirpath, dirnames, names in os.walk(root):
            dirnames.sort()
            for n in sorted(names):
                p = os.path.join(dirpath, n)
                try:
                    st = os.lstat(p)
                except OSError:
                    continue
                if not (st.st_mode & 0o170000 == 0o100000) or st.st_size == 0:
                    continue
                if st.st_size > max_size or not os.access(p, os.R_OK):
                    continue
                out.append((p, st.st_size))
    out.sort()
    return out


WORDS = ("static int return const void struct buffer value index count size offset data the of "
         "and to in is for if else while next error result config option file path name line "
         "TODO FIXME self assert update default version release debian package install").split()


def text_snippet(rng, n):
    out = []
    size = 0
    while size < n:
        w = rng.choice(WORDS)
        out.append(w)
        size += len(w) + 1
        if rng.random() < 0.12:
            out.append("\n")
    return " ".join(out).encode()[:n]


def is_text(head):
    return b"\0" not in head[:1024]


# ---------------------------------------------------------------------------------------------
# Corpus (a): a source tree, nightly versions
# ---------------------------------------------------------------------------------------------

class TreeCorpus:
    """~N files, ~B bytes from /usr/share, /usr/include, /usr/lib at their paths relative to /usr;
    each nightly version modifies ~2% of the files (small inserts, deletes, appends, in place),
    deletes and adds a few files and renames one directory."""

    kind = "tree"

    def __init__(self, name, files, mib, nightly, seed, pool):
        self.name, self.nfiles, self.nbytes, self.nightly = name, files, mib * MIB, nightly
        self.seed = seed
        self.pool = pool
        self.steps = ["v0 first"] + [f"v{i} nightly" for i in range(1, nightly + 1)]
        if nightly:
            self.steps.append(f"v{nightly} unchanged")
        self.spare = []

    def describe(self):
        return (f"source tree: ~{self.nfiles} files, ~{self.nbytes // MIB} MiB from /usr/share, "
                f"/usr/include, /usr/lib; {self.nightly} nightly versions (each ~2% of files "
                f"edited in place, a few deleted and added, one directory renamed), then one run "
                f"with nothing changed")

    def generate(self, live):
        rng = random.Random(f"{self.seed}-{self.name}-select")
        cand = list(self.pool)
        rng.shuffle(cand)
        # A random sample of N files, then random swaps between the sample and the rest, each
        # kept only when it brings the total closer to the target (within 0.5%).
        chosen, rest = cand[: self.nfiles], cand[self.nfiles:]
        total = sum(size for _, size in chosen)
        for _ in range(50 * self.nfiles):
            gap = self.nbytes - total
            if abs(gap) <= self.nbytes // 200 or not rest:
                break
            i, j = rng.randrange(len(chosen)), rng.randrange(len(rest))
            delta = rest[j][1] - chosen[i][1]
            if abs(gap - delta) < abs(gap):
                chosen[i], rest[j] = rest[j], chosen[i]
                total += delta
        chosen = sorted(p for p, _ in chosen)
        spare = sorted(p for p, size in rest if size <= MIB)
        self.spare = spare
        for p in chosen:
            dst = os.path.join(live, os.path.relpath(p, "/usr"))
            os.makedirs(os.path.dirname(dst), exist_ok=True)
            shutil.copyfile(p, dst)

    def files_of(self, live):
        out = []
        for dirpath, dirnames, names in os.walk(live):
            dirnames.sort()
            for n in sorted(names):
                out.append(os.path.relpath(os.path.join(dirpath, n), live))
        return out

    def apply(self, live, step_index):
        if step_index == 0:
            self.generate(live)
            return
        v = step_index
        if v > self.nightly:
            return  # the unchanged run
        rng = random.Random(f"{self.seed}-{self.name}-v{v}")
        files = self.files_of(live)
        nmod = max(1, round(len(files) * 0.02))
        nfew = max(2, len(files) // 2000)
        picked = rng.sample(files, min(len(files), nmod + nfew))
        for rel in picked[:nmod]:
            self.modify(os.path.join(live, rel), rng)
        for rel in picked[nmod:]:
            os.unlink(os.path.join(live, rel))
        for _ in range(nfew):
            if not self.spare:
                break
            src = self.spare.pop(rng.randrange(len(self.spare)))
            dst = os.path.join(live, os.path.relpath(src, "/usr"))
            if os.path.exists(dst):
                continue
            os.makedirs(os.path.dirname(dst), exist_ok=True)
            shutil.copyfile(src, dst)
        # Rename one directory that holds a few files (not a top-level one).
        counts = {}
        for rel in self.files_of(live):
            parts = rel.split(os.sep)[:-1]
            for d in range(2, len(parts) + 1):
                key = os.sep.join(parts[:d])
                counts[key] = counts.get(key, 0) + 1
        dirs = sorted(d for d, c in counts.items() if 3 <= c <= 300)
        if dirs:
            d = rng.choice(dirs)
            os.rename(os.path.join(live, d), os.path.join(live, f"{d}-r{v}"))

    @staticmethod
    def modify(path, rng):
        with open(path, "rb") as f:
            data = f.read()
        text = is_text(data)
        k = rng.random()
        n = rng.randint(1, 200)
        if k < 0.4 or len(data) < 2:  # insert
            at = rng.randrange(len(data) + 1)
            new = data[:at] + (text_snippet(rng, n) if text else rng.randbytes(n)) + data[at:]
        elif k < 0.7:  # delete
            at = rng.randrange(len(data))
            new = data[:at] + data[at + n:]
            at = min(at, len(new))
        else:  # append
            at = len(data)
            n = rng.randint(20, 2000)
            new = data + (text_snippet(rng, n) if text else rng.randbytes(n))
        with open(path, "r+b") as f:  # in place: same inode, as an editor saving over it would not
            f.seek(at)
            f.write(new[at:])
            f.truncate()


# ---------------------------------------------------------------------------------------------
# Corpus (b): a disk image, edited versions
# ---------------------------------------------------------------------------------------------

class ImageCorpus:
    """One file: a tar-like concatenation of /usr files (GNU tar headers, 512-byte padding) with
    zero runs (~15% of the bytes) and random bytes (~8%); each version makes scattered 4 KiB
    overwrites and byte-shifting inserts and deletes of up to 512 bytes, in place."""

    kind = "image"

    def __init__(self, name, mib, versions, seed, pool):
        self.name, self.nbytes, self.versions, self.seed, self.pool = name, mib * MIB, versions, seed, pool
        self.edits = max(8, (self.nbytes // MIB) // 4)  # 256 per GiB
        self.steps = ["v0 first"] + [f"v{i} edited" for i in range(1, versions + 1)]

    def describe(self):
        return (f"disk image: one {self.nbytes // MIB} MiB file (tar-like concatenation of /usr "
                f"files, zero runs, random bytes); {self.versions} edited versions, each "
                f"{self.edits} scattered edits (4 KiB overwrites, inserts and deletes of 1-512 "
                f"bytes) in place")

    def apply(self, live, step_index):
        path = os.path.join(live, "disk.img")
        if step_index == 0:
            self.generate(path)
        else:
            self.edit(path, step_index)

    def generate(self, path):
        rng = random.Random(f"{self.seed}-{self.name}-gen")
        files = list(self.pool)
        rng.shuffle(files)
        written = zeros = rand = 0
        i = 0
        with open(path, "wb") as out:
            while written < self.nbytes:
                if zeros < 0.15 * written:
                    piece = bytes(rng.randrange(16, 2048) * 4096)
                    zeros += len(piece)
                elif rand < 0.08 * written:
                    piece = rng.randbytes(rng.randrange(4096, MIB))
                    rand += len(piece)
                else:
                    p, _ = files[i % len(files)]
                    i += 1
                    with open(p, "rb") as f:
                        body = f.read()
                    ti = tarfile.TarInfo(os.path.relpath(p, "/"))
                    ti.size, ti.mtime, ti.mode = len(body), 1700000000, 0o644
                    pad = (-len(body)) % 512
                    piece = ti.tobuf(format=tarfile.GNU_FORMAT) + body + bytes(pad)
                piece = piece[: self.nbytes - written]
                out.write(piece)
                written += len(piece)

    def edit(self, path, v):
        rng = random.Random(f"{self.seed}-{self.name}-v{v}")
        with open(path, "rb") as f:
            data = f.read()
        size = len(data)
        mv = memoryview(data)
        positions = sorted(rng.randrange(size) for _ in range(self.edits))
        with open(path, "r+b") as f:
            cur = 0
            for at in positions:
                k = rng.random()
                n = rng.randint(1, 512)
                if at < cur:
                    continue
                if k < 0.35:  # insert
                    f.write(mv[cur:at])
                    f.write(rng.randbytes(n))
                    cur = at
                elif k < 0.7:  # delete
                    f.write(mv[cur:at])
                    cur = min(size, at + n)
                else:  # 4 KiB overwrite, aligned
                    a = at - at % 4096
                    if a < cur:
                        continue
                    f.write(mv[cur:a])
                    f.write(rng.randbytes(min(4096, size - a)))
                    cur = min(size, a + 4096)
            f.write(mv[cur:])
            f.truncate()
        del mv


# ---------------------------------------------------------------------------------------------
# Tools
# ---------------------------------------------------------------------------------------------

class Tool:
    name = "?"
    is_whorl = False

    def __init__(self, work):
        self.work = work
        self.env = dict(os.environ)
        self.snaps = 0
        self.repo = None

    def setup(self, tag):
        """A fresh repository for one corpus and repetition."""
        self.repo = os.path.join(self.work, "repos", f"{self.name}-{tag}")
        self.snaps = 0

    def backup_cmd(self, src):
        raise NotImplementedError

    def restore_cmd(self, target):
        raise NotImplementedError

    def restore_cwd(self, target):
        return None

    def repo_bytes(self):
        return du_bytes(self.repo)

    def extra_cpu(self):
        return 0.0

    def teardown(self):
        if self.repo:
            shutil.rmtree(self.repo, ignore_errors=True)


class WhorlEmbedded(Tool):
    name = "whorl"
    is_whorl = True

    def __init__(self, work, binary):
        super().__init__(work)
        self.bin = binary

    def setup(self, tag):
        super().setup(tag)
        run([self.bin, "init", "--repo", self.repo], "whorl init", env=self.env)

    def backup_cmd(self, src):
        return [self.bin, "backup", "--repo", self.repo, "--json", src]

    def restore_cmd(self, target):
        return [self.bin, "restore", "--repo", self.repo, "latest", "--target", target]


class WhorlCluster(WhorlEmbedded):
    """whorl against deploy/local-cluster.sh (3 metadata shards, 2 chunk stores) on loopback.
    Repository bytes: the daemons' data directories; CPU: the agent's plus the daemons'."""

    name = "whorl-cluster"
    # WHORL_LOCAL_CLUSTER_SCRIPT replaces the script (for testing this harness only).
    SCRIPT = os.environ.get("WHORL_LOCAL_CLUSTER_SCRIPT") or os.path.join(ROOT, "deploy",
                                                                          "local-cluster.sh")

    def __init__(self, work, binary):
        super().__init__(work, binary)
        self.env["WHORL_BIN_DIR"] = os.path.dirname(os.path.abspath(binary))
        self.env["PATH"] = self.env["WHORL_BIN_DIR"] + os.pathsep + self.env.get("PATH", "")
        self.dir = None

    def setup(self, tag):
        self.snaps = 0
        self.dir = os.path.join(self.work, "repos", f"{self.name}-{tag}")
        r = run(["bash", self.SCRIPT, "start", self.dir, "--meta", "3", "--chunk", "2"],
                "deploy/local-cluster.sh start", env=self.env, timeout=180)
        url_file = os.path.join(self.dir, "repo-url")
        if os.path.exists(url_file):
            with open(url_file) as f:
                self.repo = f.read().strip()
        else:
            m = re.search(r"whorl://\S+", r.stdout)
            if not m:
                raise BenchError(f"local-cluster.sh start printed no whorl:// URL:\n{r.stdout}")
            self.repo = m.group(0)
        run([self.bin, "init", "--repo", self.repo], "whorl init (cluster)", env=self.env)
        self.cpu0 = self.daemon_cpu()

    def daemon_pids(self):
        """{node id: pid} from the pid files local-cluster.sh writes (DIR/pids/ID.pid)."""
        pids = {}
        d = os.path.join(self.dir, "pids") if self.dir else ""
        if os.path.isdir(d):
            for n in sorted(os.listdir(d)):
                try:
                    with open(os.path.join(d, n)) as f:
                        pids[n.removesuffix(".pid")] = int(f.read().strip())
                except (OSError, ValueError):
                    pass
        return pids

    def daemon_cpu(self):
        tick = os.sysconf("SC_CLK_TCK")
        total = 0.0
        for pid in self.daemon_pids().values():
            try:
                with open(f"/proc/{pid}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
                total += (int(fields[11]) + int(fields[12])) / tick
            except (OSError, IndexError, ValueError):
                pass
        return total

    def daemon_peak_rss_kib(self):
        out = {}
        for node, pid in self.daemon_pids().items():
            try:
                with open(f"/proc/{pid}/status") as f:
                    for line in f:
                        if line.startswith("VmHWM:"):
                            out[node] = int(line.split()[1])
            except OSError:
                pass
        return out

    def extra_cpu(self):
        now = self.daemon_cpu()
        d, self.cpu0 = now - self.cpu0, now
        return d

    def repo_bytes(self):
        """The sum of the daemons' data directories: those cluster.json names, else every
        directory of the cluster dir except pids and logs."""
        dirs = []
        try:
            with open(os.path.join(self.dir, "cluster.json")) as f:
                m = json.load(f)
            for node in m.get("metadata", []) + m.get("chunkstores", []):
                for k, val in node.items():
                    if "dir" in k and isinstance(val, str) and os.path.isdir(val):
                        dirs.append(val)
        except (OSError, ValueError, AttributeError):
            pass
        if not dirs:
            dirs = [os.path.join(self.dir, n) for n in sorted(os.listdir(self.dir))
                    if os.path.isdir(os.path.join(self.dir, n)) and n not in ("pids", "logs")]
        return du_bytes(*dirs)

    def teardown(self):
        if self.dir:
            subprocess.run(["bash", self.SCRIPT, "stop", self.dir], capture_output=True,
                           env=self.env, timeout=180)
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None


class Restic(Tool):
    name = "restic"

    def __init__(self, work):
        super().__init__(work)
        self.env.update(RESTIC_PASSWORD="x", RESTIC_CACHE_DIR=os.path.join(work, "cache", "restic"))

    def setup(self, tag):
        super().setup(tag)
        shutil.rmtree(self.env["RESTIC_CACHE_DIR"], ignore_errors=True)
        run(["restic", "-r", self.repo, "init", "--repository-version", "2"], "restic init",
            env=self.env)
        # --compression needs repository format 2 (restic >= 0.14): check it is what we got.
        cfg = run(["restic", "-r", self.repo, "cat", "config"], "restic cat config", env=self.env)
        if json.loads(cfg.stdout).get("version") != 2:
            raise BenchError(f"restic made a repository of format {cfg.stdout.strip()}, not 2: "
                             "--compression auto would not compress")

    def backup_cmd(self, src):
        return ["restic", "-r", self.repo, "backup", "-q", "--compression", "auto", src]

    def restore_cmd(self, target):
        return ["restic", "-r", self.repo, "restore", "latest", "--target", target]


class Borg(Tool):
    name = "borg"

    def __init__(self, work):
        super().__init__(work)
        self.env.update(BORG_PASSPHRASE="", BORG_BASE_DIR=os.path.join(work, "cache", "borg"),
                        BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK="yes",
                        BORG_RELOCATED_REPO_ACCESS_IS_OK="yes")

    def setup(self, tag):
        super().setup(tag)
        shutil.rmtree(self.env["BORG_BASE_DIR"], ignore_errors=True)
        run(["borg", "init", "-e", "none", self.repo], "borg init", env=self.env)

    def backup_cmd(self, src):
        self.snaps += 1
        return ["borg", "create", "-C", "lz4", f"{self.repo}::s{self.snaps:03d}", src]

    def restore_cmd(self, target):
        return ["borg", "extract", f"{self.repo}::s{self.snaps:03d}"]

    def restore_cwd(self, target):
        return target


# ---------------------------------------------------------------------------------------------
# Primitives
# ---------------------------------------------------------------------------------------------

def openssl_sha256(seconds):
    r = run(["openssl", "speed", "-seconds", str(seconds), "-evp", "sha256"], "openssl speed")
    for line in r.stdout.splitlines():
        if line.startswith("sha256"):
            val = line.split()[-1]  # the 16384-byte column, in 1000s of bytes per second
            return float(val.rstrip("k")) * 1000 / 1e6
    raise BenchError(f"openssl speed: no sha256 line in\n{r.stdout}")


def chunker_vs_sha256(whorl_bin, pairs):
    """The chunker against SHA-256 side by side: `pairs` pairs of a 1 s `openssl speed -evp
    sha256 -bytes 16384` and a `whorl-bench --chunker-only` (256 MiB, best of 3, as the
    primitives pass), run one right after the other, which goes first alternating; each pair's
    own ratio is kept. None without a whorl-bench binary. Runs over 64 MiB (passes of ~45 ms)
    read low one time in two on this VM: 830-950 MB/s against 1400-1440, where 256 MiB runs
    beside them made 1396-1466 every time (five alternations, idle machine, 2026-12-08)."""
    b = os.environ.get("WHORL_BENCH_BIN") or os.path.join(os.path.dirname(whorl_bin), "whorl-bench")
    if not (os.path.isfile(b) and os.access(b, os.X_OK)):
        return None

    def sha():
        r = run(["openssl", "speed", "-seconds", "1", "-bytes", "16384", "-evp", "sha256"],
                "openssl speed -bytes 16384")
        for line in r.stdout.splitlines():
            if line.startswith("sha256"):
                return float(line.split()[-1].rstrip("k")) * 1000 / 1e6
        raise BenchError(f"openssl speed: no sha256 line in\n{r.stdout}")

    def chunker():
        r = run([b, "--json", "--chunker-only", "--mib", "256"], "whorl-bench --chunker-only")
        try:
            return json.loads(r.stdout.strip().splitlines()[-1])["chunker_MBps"]
        except (ValueError, IndexError, KeyError):
            raise BenchError(f"whorl-bench --chunker-only printed no rate:\n{tail(r.stdout)}") from None

    out = []
    for i in range(pairs):
        if i % 2 == 0:
            s_rate = sha()
            c_rate = chunker()
        else:
            c_rate = chunker()
            s_rate = sha()
        out.append({"sha256_MBps": s_rate, "chunker_MBps": c_rate, "ratio": c_rate / s_rate})
    return out


def zstd_bench(sample):
    """zstd -b3 (one thread); with -q it prints one line: `-3  CSIZE (RATIO) C MB/s  D MB/s  NAME`."""
    r = run(["zstd", "-q", "-b3", "-i3", sample], "zstd -b3")
    m = re.search(r"^-?3\s+(\d+)\s+\(([\d.]+)\)\s+([\d.]+)\s*MB/s\s+([\d.]+)\s*MB/s",
                  r.stdout, re.M)
    if not m:
        raise BenchError(f"zstd -b3: cannot parse its output:\n{tail(r.stdout + r.stderr, 5)}")
    return {"ratio": float(m.group(2)), "compress_MBps": float(m.group(3)),
            "decompress_MBps": float(m.group(4))}


def write_zstd_sample(path, pool, mib):
    rng = random.Random(f"{SEED}-zstd-sample")
    files = list(pool)
    rng.shuffle(files)
    left = mib * MIB
    with open(path, "wb") as out:
        for p, _ in files:
            with open(p, "rb") as f:
                b = f.read(left)
            out.write(b)
            left -= len(b)
            if left <= 0:
                break


# ===== HOOK: whorl's own primitives ==========================================================
# When a `whorl-bench` binary exists beside `whorl` (or WHORL_BENCH_BIN names one), it is run as
# `whorl-bench --json` and must print ONE JSON object on stdout. Keys this harness understands
# (each optional; anything else is kept verbatim in results.json):
#   chunker_MBps        Rabin chunker alone, one core, MB/s (1e6 bytes/s)
#   sha256_MBps         whorl's SHA-256 (EVP) on chunk-sized buffers, MB/s
#   findmissing_fps     FindMissing answered per second, one shard, with
#   findmissing_stored  ... this many fingerprints stored (the target wants >= 10M stored)
#   pack_write_MBps     pack writes (records appended and synced), MB/s
# tests/bench/whorl_bench.cc builds it (target whorl-bench).
def whorl_bench(whorl_bin):
    b = os.environ.get("WHORL_BENCH_BIN") or os.path.join(os.path.dirname(whorl_bin), "whorl-bench")
    if not (os.path.isfile(b) and os.access(b, os.X_OK)):
        return None
    cmd = [b, "--json"]
    if os.environ.get("WHORL_BENCH_FPS"):  # fingerprints stored in the shard (default 10M)
        cmd += ["--fps", os.environ["WHORL_BENCH_FPS"]]
    r = run(cmd, "whorl-bench --json", timeout=3600)
    try:
        return json.loads(r.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        raise BenchError(f"whorl-bench --json printed no JSON object:\n{tail(r.stdout)}") from None
# ===== end of HOOK ===========================================================================


# ---------------------------------------------------------------------------------------------
# The run
# ---------------------------------------------------------------------------------------------

def stats(values):
    values = [v for v in values if v is not None]
    if not values:
        return None
    return {"median": statistics.median(values), "min": min(values), "max": max(values),
            "n": len(values)}


class Bench:
    def __init__(self, a):
        self.a = a
        self.settle = Settler()
        self.work = tempfile.mkdtemp(prefix="whorl-bench-", dir=os.environ.get("WHORL_BENCH_TMP"))
        os.makedirs(os.path.join(self.work, "repos"))
        self.results = {"meta": {}, "primitives": [], "corpora": {}, "doubling": {}}
        self.tools = []

    def make_tools(self):
        tools = [WhorlEmbedded(self.work, self.a.whorl)]
        bindir = os.path.dirname(os.path.abspath(self.a.whorl))
        script = WhorlCluster.SCRIPT
        if os.environ.get("WHORL_CLUSTER", "1") == "0":
            self.cluster_note = "cluster runs skipped: WHORL_CLUSTER=0"
        elif not os.path.exists(script):
            self.cluster_note = "cluster runs skipped: deploy/local-cluster.sh does not exist yet"
        elif not all(os.access(os.path.join(bindir, d), os.X_OK)
                     for d in ("whorl-metad", "whorl-chunkd")):
            self.cluster_note = f"cluster runs skipped: no whorl-metad/whorl-chunkd in {bindir}"
        elif not os.access(os.path.join(bindir, "whorl-probe"), os.X_OK):
            self.cluster_note = (f"cluster runs skipped: no whorl-probe in {bindir} "
                                 "(local-cluster.sh health-checks with it)")
        else:
            self.cluster_note = (f"cluster: {os.path.relpath(script, ROOT)} start DIR --meta 3 "
                                 "--chunk 2 (loopback)")
            tools.append(WhorlCluster(self.work, self.a.whorl))
        tools += [Restic(self.work), Borg(self.work)]
        only = [t for t in (self.a.tools or "").split(",") if t]
        if only:
            tools = [t for t in tools if t.name in only]
        return tools

    def meta(self):
        def out(cmd):
            try:
                return subprocess.run(cmd, capture_output=True, text=True).stdout.strip()
            except OSError:
                return ""
        cpu = ""
        try:
            with open("/proc/cpuinfo") as f:
                cpu = next((l.split(":", 1)[1].strip() for l in f if l.startswith("model name")), "")
        except OSError:
            pass
        rev = out(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"])
        dirty = out(["git", "-C", ROOT, "status", "--porcelain", "--untracked-files=no"])
        return {
            "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
            "mode": "quick" if self.a.quick else "full",
            "reps": self.a.reps,
            "whorl_bin": os.path.abspath(self.a.whorl),
            "whorl_version": out([self.a.whorl, "version"]),
            "git": rev + ("-dirty" if dirty else ""),
            "restic": out(["restic", "version"]),
            "borg": out(["borg", "--version"]),
            "openssl": out(["openssl", "version"]),
            "zstd": out(["zstd", "-V"]),
            "cpu": cpu, "nproc": os.cpu_count(), "kernel": platform.release(),
            "mem_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
            "cache": self.settle.note,
            "cluster": self.cluster_note,
            "tool_flags": {
                "whorl": "whorl init --repo R; whorl backup --repo R --json DIR",
                "restic": "restic init --repository-version 2; restic backup -q --compression auto DIR",
                "borg": "borg init -e none; borg create -C lz4 R::sNNN DIR",
            },
        }

    def main(self):
        a = self.a
        self.tools = self.make_tools()
        self.results["meta"] = self.meta()
        log(f"work dir {self.work}; whorl {a.whorl}; mode {'quick' if a.quick else 'full'}, "
            f"{a.reps} rep(s); tools {', '.join(t.name for t in self.tools)}")
        log(self.settle.note)
        log(self.cluster_note)
        log("listing /usr ...")
        tree_pool = list_pool(["/usr/share", "/usr/include", "/usr/lib"], 16 * MIB)
        image_pool = list_pool(["/usr/share", "/usr/include", "/usr/lib", "/usr/bin"], 64 * MIB)
        if a.quick:
            corpora = [TreeCorpus("tree", 2000, 40, 8, SEED, tree_pool),
                       ImageCorpus("image", 100, 5, SEED, image_pool)]
            doubled = [TreeCorpus("tree-2x", 4000, 80, 0, SEED + 1, tree_pool),
                       ImageCorpus("image-2x", 200, 0, SEED + 1, image_pool)]
        else:
            corpora = [TreeCorpus("tree", 20000, 430, 8, SEED, tree_pool),
                       ImageCorpus("image", 1024, 5, SEED, image_pool)]
            doubled = [TreeCorpus("tree-2x", 40000, 860, 0, SEED + 1, tree_pool),
                       ImageCorpus("image-2x", 2048, 0, SEED + 1, image_pool)]
        if a.corpus:
            corpora = [c for c in corpora if c.name in a.corpus.split(",")]
            doubled = [d for d in doubled if d.name.split("-")[0] in a.corpus.split(",")]
        if a.no_doubling:
            doubled = []
        for c in corpora:
            self.results["corpora"][c.name] = {"describe": c.describe(), "steps": c.steps,
                                               "logical_bytes": {}, "files": {},
                                               "backup": {}, "restore": {}}
        sample = os.path.join(self.work, "zstd-sample")
        write_zstd_sample(sample, image_pool, 16 if a.quick else 64)
        for rep in range(a.reps):
            log(f"=== repetition {rep + 1}/{a.reps}")
            self.primitives(rep, sample)
            for c in corpora:
                self.run_corpus(c, rep)
            if rep == a.reps - 1:
                for d in doubled:  # whorl's peak RSS when the corpus doubles, once
                    self.run_doubled(d, rep, corpora)
        return self.results

    def primitives(self, rep, sample):
        log("primitives: openssl speed -evp sha256, zstd -b3")
        p = {"rep": rep, "openssl_sha256_16k_MBps": openssl_sha256(3 if not self.a.quick else 1)}
        p.update({f"zstd3_{k}": v for k, v in zstd_bench(sample).items()})
        p["whorl_bench"] = whorl_bench(self.a.whorl)
        p["chunker_vs_sha256"] = chunker_vs_sha256(self.a.whorl, 2 if self.a.quick else 5)
        self.results["primitives"].append(p)
        log(f"  sha256 {p['openssl_sha256_16k_MBps']:.0f} MB/s; zstd -3 "
            f"{p['zstd3_compress_MBps']:.0f} MB/s (x{p['zstd3_ratio']}), "
            f"unzstd {p['zstd3_decompress_MBps']:.0f} MB/s; whorl-bench "
            f"{'ran' if p['whorl_bench'] is not None else 'absent (hook)'}")

    def backup_step(self, tool, live, cr, step, cum_logical):
        self.settle()
        m, r = timed(tool.backup_cmd(live), f"{tool.name} backup ({step})", self.work,
                     env=tool.env)
        m["agent_cpu"] = m["user"] + m["sys"]
        m["daemon_cpu"] = tool.extra_cpu()
        m["cpu"] = m["agent_cpu"] + m["daemon_cpu"]
        m["repo_bytes"] = tool.repo_bytes()
        m["logical_bytes"] = cr["logical_bytes"][step]
        m["cum_logical_bytes"] = cum_logical
        m["dedup"] = cum_logical / m["repo_bytes"] if m["repo_bytes"] else None
        m["MiBps"] = m["logical_bytes"] / MIB / m["wall"]
        if tool.is_whorl:
            try:
                m["whorl_summary"] = json.loads(r.stdout.strip().splitlines()[-1])
            except (ValueError, IndexError):
                pass
        if isinstance(tool, WhorlCluster):
            m["daemon_peak_rss_kib"] = tool.daemon_peak_rss_kib()
        return m

    def run_corpus(self, c, rep):
        cr = self.results["corpora"][c.name]
        live = os.path.join(self.work, "live", c.name)
        shutil.rmtree(os.path.join(self.work, "live"), ignore_errors=True)
        os.makedirs(live)
        tools = self.tools
        try:
            for t in list(tools):
                try:
                    t.setup(f"{c.name}-{rep}")
                except BenchError as e:
                    if not isinstance(t, WhorlCluster):
                        raise
                    # The cluster is new: one that does not come up is noted, not fatal.
                    t.teardown()
                    self.tools.remove(t)
                    tools = self.tools
                    self.cluster_note = f"cluster runs skipped: it did not start: {e}"
                    self.results["meta"]["cluster"] = self.cluster_note
                    log(self.cluster_note)
            cum = 0
            for si, step in enumerate(c.steps):
                t0 = time.monotonic()
                c.apply(live, si)
                logical, files = tree_bytes(live)
                cr["logical_bytes"][step] = logical
                cr["files"][step] = files
                if "unchanged" not in step:
                    cum += logical
                log(f"{c.name} rep {rep + 1} {step}: {files} files, {logical / MIB:.1f} MiB "
                    f"(made in {time.monotonic() - t0:.1f}s)")
                k = (rep + si) % len(tools)
                for t in tools[k:] + tools[:k]:
                    m = self.backup_step(t, live, cr, step, cum)
                    cr["backup"].setdefault(t.name, {}).setdefault(step, []).append(m)
                    log(f"  {t.name:14} {m['wall']:7.2f}s {m['MiBps']:8.1f} MiB/s cpu "
                        f"{m['cpu']:7.2f}s rss {m['rss_kib'] / 1024:6.0f} MiB repo "
                        f"{m['repo_bytes'] / MIB:8.1f} MiB dedup {m['dedup'] or 0:.2f}")
            last = c.steps[-1]
            k = rep % len(tools)
            for t in tools[k:] + tools[:k]:
                target = os.path.join(self.work, "restore", t.name)
                os.makedirs(target)
                self.settle()
                m, _ = timed(t.restore_cmd(target), f"{t.name} restore", self.work, env=t.env,
                             cwd=t.restore_cwd(target))
                m["cpu"] = m["user"] + m["sys"] + t.extra_cpu()
                m["logical_bytes"] = cr["logical_bytes"][last]
                m["MiBps"] = m["logical_bytes"] / MIB / m["wall"]
                restored = target + live  # every tool restores under the absolute path
                d = subprocess.run(["diff", "-r", "--no-dereference", live, restored],
                                   capture_output=True, text=True)
                if d.returncode != 0:
                    raise BenchError(f"{t.name} restore of {c.name} differs from the live tree "
                                     f"(diff -r {live} {restored}):\n{tail(d.stdout + d.stderr)}")
                m["verified"] = True
                cr["restore"].setdefault(t.name, []).append(m)
                log(f"  restore {t.name:14} {m['wall']:7.2f}s {m['MiBps']:8.1f} MiB/s, "
                    f"diff -r identical")
            # The restored trees are removed only once every tool has restored. Removed after
            # each restore, the next tool's restore created its 20k files right after 20k were
            # deleted: on a journal-less ext4 (this VM's) every new inode then scans past the
            # recently deleted ones of its group (ext4's recently_deleted(), a minute's
            # window), which made each restore but the first of a rep 0.5-0.9 s slower (whorl,
            # measured: 2.06-2.46 s after a removal, 1.57 s without).
            shutil.rmtree(os.path.join(self.work, "restore"))
        finally:
            for t in tools:
                t.teardown()
            shutil.rmtree(os.path.join(self.work, "live"), ignore_errors=True)
            shutil.rmtree(os.path.join(self.work, "restore"), ignore_errors=True)

    def run_doubled(self, c, rep, corpora):
        tool = next(t for t in self.tools if t.name == "whorl")
        live = os.path.join(self.work, "live", c.name)
        shutil.rmtree(os.path.join(self.work, "live"), ignore_errors=True)
        os.makedirs(live)
        try:
            tool.setup(f"{c.name}-{rep}")
            c.apply(live, 0)
            logical, files = tree_bytes(live)
            cr = {"logical_bytes": {"v0 first": logical}}
            m = self.backup_step(tool, live, cr, "v0 first", logical)
            m["files"] = files
            m["rep"] = rep
            self.results["doubling"][c.name] = m
            log(f"{c.name} (whorl only, peak RSS when the corpus doubles): {files} files, "
                f"{logical / MIB:.0f} MiB, {m['wall']:.2f}s, rss {m['rss_kib'] / 1024:.0f} MiB")
        finally:
            tool.teardown()
            shutil.rmtree(os.path.join(self.work, "live"), ignore_errors=True)

    def cleanup(self):
        for t in self.tools:
            try:
                t.teardown()
            except Exception:  # noqa: BLE001 - best effort on the way out
                pass
        shutil.rmtree(self.work, ignore_errors=True)


# ---------------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------------

def fmt(s, digits=1):
    if s is None:
        return "–"
    f = f"{{:.{digits}f}}"
    if s["n"] == 1 or f.format(s["min"]) == f.format(s["max"]):
        return f.format(s["median"])
    return f"{f.format(s['median'])} ({f.format(s['min'])}–{f.format(s['max'])})"


def per_rep(samples, key):
    return [m.get(key) for m in samples]


def summarize(res):
    """Medians/min/max per tool and step, and the ratio rows of issue 5's targets."""
    summary = {}
    for cname, cr in res["corpora"].items():
        summary[cname] = {}
        for tool, steps in cr["backup"].items():
            summary[cname][tool] = {}
            for step, samples in steps.items():
                summary[cname][tool][step] = {
                    k: stats([m[k] / (MIB if k.endswith("bytes") else 1) if m.get(k) is not None
                              else None for m in samples])
                    for k in ("wall", "MiBps", "cpu", "repo_bytes", "dedup")}
                summary[cname][tool][step]["rss_MiB"] = stats([m["rss_kib"] / 1024 for m in samples])
            r = cr["restore"].get(tool, [])
            summary[cname][tool]["restore"] = {
                "wall": stats(per_rep(r, "wall")), "MiBps": stats(per_rep(r, "MiBps")),
                "cpu": stats(per_rep(r, "cpu")),
                "rss_MiB": stats([m["rss_kib"] / 1024 for m in r])}

    ratios = []

    def paired(cname, tool_a, tool_b, fn):
        cr = res["corpora"].get(cname)
        if not cr or tool_a not in cr["backup"] or tool_b not in cr["backup"]:
            return None
        nreps = len(next(iter(cr["backup"][tool_a].values())))
        vals = []
        for i in range(nreps):
            try:
                x, y = fn(cr, tool_a, i), fn(cr, tool_b, i)
            except (KeyError, IndexError, TypeError):
                continue
            if x is not None and y:
                vals.append(x / y)
        return stats(vals)

    def first_mibps(cr, t, i):
        return cr["backup"][t]["v0 first"][i]["MiBps"]

    def nightly_wall(cr, t, i):
        steps = [s for s in cr["steps"] if s.endswith("nightly") or s.endswith("edited")]
        return sum(cr["backup"][t][s][i]["wall"] for s in steps)

    def unchanged_wall(cr, t, i):
        s = next(s for s in cr["steps"] if s.endswith("unchanged"))
        return cr["backup"][t][s][i]["wall"]

    def restore_mibps(cr, t, i):
        return cr["restore"][t][i]["MiBps"]

    def last_dedup(cr, t, i):
        return cr["backup"][t][cr["steps"][-1]][i]["dedup"]

    def peak_rss(cr, t, i):
        return max(cr["backup"][t][s][i]["rss_kib"] for s in cr["steps"])

    def add(what, cname, a, b, fn, target=None, op=">="):
        s = paired(cname, a, b, fn)
        met = None
        if s is not None and target is not None:
            met = s["median"] >= target if op == ">=" else s["median"] <= target
        ratios.append({"what": what, "corpus": cname, "a": a, "b": b, "value": s,
                       "target": f"{op} {target:.3g}" if target is not None else "",
                       "met": met, "is_target": target is not None})

    for other in ("borg", "restic"):
        add(f"first backup MiB/s, whorl / {other}", "tree", "whorl", other, first_mibps,
            3 if other == "borg" else 3.5)
    add("first backup MiB/s, whorl / borg", "image", "whorl", "borg", first_mibps, 1.7)
    add("first backup MiB/s, whorl / restic", "image", "whorl", "restic", first_mibps)
    add("nightly (~2% changed) wall, whorl / restic (sum of v1..v8)", "tree", "whorl", "restic",
        nightly_wall, 1 / 3, "<=")
    add("nightly (~2% changed) wall, whorl / borg (sum of v1..v8)", "tree", "whorl", "borg",
        nightly_wall, None)
    add("nightly unchanged wall, whorl / restic", "tree", "whorl", "restic", unchanged_wall,
        1 / 4, "<=")
    add("nightly unchanged wall, whorl / borg", "tree", "whorl", "borg", unchanged_wall)
    add("edited versions wall, whorl / restic (sum of v1..v5)", "image", "whorl", "restic",
        nightly_wall)
    add("edited versions wall, whorl / borg (sum of v1..v5)", "image", "whorl", "borg",
        nightly_wall)
    for cname, tgt in (("tree", 3), ("image", 2.5)):
        add("restore MiB/s, whorl / restic", cname, "whorl", "restic", restore_mibps, tgt)
        add("restore MiB/s, whorl / borg", cname, "whorl", "borg", restore_mibps)
    for cname, tgt in (("tree", 1.15), ("image", 1.3)):
        add("dedup ratio after all versions, whorl / restic", cname, "whorl", "restic",
            last_dedup, tgt)
        add("dedup ratio after all versions, whorl / borg", cname, "whorl", "borg", last_dedup)
    for cname in ("tree", "image"):
        add("agent peak RSS (max over backups), whorl / restic", cname, "whorl", "restic",
            peak_rss, 0.6, "<=")
        add("agent peak RSS (max over backups), whorl / borg", cname, "whorl", "borg", peak_rss)
        add("first backup MiB/s, whorl-cluster / whorl embedded", cname, "whorl-cluster",
            "whorl", first_mibps, 0.7)

    # Peak RSS when the corpus doubles: whorl's first backup of the 2x corpus against the 1x one
    # of the same (last) repetition; "the same peak" is read as within +10%.
    for cname in ("tree", "image"):
        d = res["doubling"].get(f"{cname}-2x")
        cr = res["corpora"].get(cname)
        s = None
        if d and cr and "whorl" in cr["backup"]:
            base = cr["backup"]["whorl"]["v0 first"][d["rep"]]["rss_kib"]
            s = stats([d["rss_kib"] / base])
        ratios.append({"what": "whorl peak RSS, corpus doubled / corpus (first backup)",
                       "corpus": cname, "a": "whorl", "b": "whorl", "value": s,
                       "target": "<= 1.1 (the same peak)",
                       "met": None if s is None else s["median"] <= 1.1, "is_target": True})

    # Primitives against each other.
    prims = res["primitives"]
    sha = stats([p["openssl_sha256_16k_MBps"] for p in prims])
    paired = [q["ratio"] for p in prims for q in (p.get("chunker_vs_sha256") or [])]
    s = stats(paired)
    ratios.append({"what": "whorl chunker (one core) / openssl sha256 (16 KiB blocks), "
                           "measured in pairs one right after the other",
                   "corpus": "-", "a": "whorl-bench", "b": "openssl", "value": s,
                   "target": ">= 1", "met": None if s is None else s["median"] >= 1,
                   "is_target": True})
    chunk = [p["whorl_bench"]["chunker_MBps"] / p["openssl_sha256_16k_MBps"] for p in prims
             if p.get("whorl_bench") and p["whorl_bench"].get("chunker_MBps")]
    s = stats(chunk)
    ratios.append({"what": "whorl chunker (one core) / openssl sha256 (16 KiB blocks), "
                           "the primitives' figures (measured minutes apart)",
                   "corpus": "-", "a": "whorl-bench", "b": "openssl", "value": s,
                   "target": "", "met": None, "is_target": False})
    fm = [p["whorl_bench"]["findmissing_fps"] for p in prims
          if p.get("whorl_bench") and p["whorl_bench"].get("findmissing_fps")]
    s = stats([v / 1e6 for v in fm])
    ratios.append({"what": "FindMissing, one shard, M fingerprints/s (10M stored)",
                   "corpus": "-", "a": "whorl-bench", "b": "", "value": s,
                   "target": ">= 1", "met": None if s is None else s["median"] >= 1,
                   "is_target": True})
    prim_summary = {
        "openssl_sha256_16k_MBps": sha,
        "zstd3_compress_MBps": stats([p["zstd3_compress_MBps"] for p in prims]),
        "zstd3_decompress_MBps": stats([p["zstd3_decompress_MBps"] for p in prims]),
        "zstd3_ratio": stats([p["zstd3_ratio"] for p in prims]),
    }
    prim_summary["paired_chunker_MBps"] = stats(
        [q["chunker_MBps"] for p in prims for q in (p.get("chunker_vs_sha256") or [])])
    prim_summary["paired_sha256_MBps"] = stats(
        [q["sha256_MBps"] for p in prims for q in (p.get("chunker_vs_sha256") or [])])
    for key in ("chunker_MBps", "sha256_MBps", "findmissing_fps",
                "findmissing_metad_cpu_us_per_fp", "pack_write_MBps"):
        prim_summary[f"whorl_{key}"] = stats([p["whorl_bench"].get(key) for p in prims
                                              if p.get("whorl_bench")])
    return summary, ratios, prim_summary


def write_markdown(res, summary, ratios, prims, path, chart):
    m = res["meta"]
    L = []
    L.append("# Whorl vs restic vs borg (issue 5)\n")
    L.append(f"Run {m['date']}, mode **{m['mode']}**, {m['reps']} repetition(s), interleaved. "
             f"whorl `{m['whorl_bin']}` ({m['whorl_version']}, tree {m['git']}); "
             f"{m['restic']}; {m['borg']}. {m['cpu']}, {m['nproc']} cores, {m['mem_gib']} GiB, "
             f"Linux {m['kernel']}.\n")
    L.append(f"Cells: median (min–max) over the repetitions. MiB/s = logical bytes of the version "
             f"/ wall. CPU = user+sys (GNU time){'; the cluster row adds its daemons’ CPU' if any('cluster' in t for c in summary.values() for t in c) else ''}. "
             f"Peak RSS = the backup/restore process's maxrss. Repo = `du -sb` of the repository. "
             f"Dedup = logical bytes of all versions so far (the unchanged rerun not counted "
             f"again) / repo bytes. {m['cache']}. {m['cluster']}. Restores go to new "
             f"directories, removed only after every tool has restored (since 2026-11-30: a "
             f"restore right after a removal of 20k files paid ext4's recently-deleted inode "
             f"scan).\n")
    L.append("Flags: " + "; ".join(f"`{v}`" for v in m["tool_flags"].values()) + ".\n")
    for cname, cr in res["corpora"].items():
        L.append(f"\n## {cname}\n\n{cr['describe']}.\n")
        L.append("| tool | step | wall s | MiB/s | CPU s | peak RSS MiB | repo MiB | dedup |")
        L.append("|---|---|---|---|---|---|---|---|")
        for tool, steps in summary[cname].items():
            for step in cr["steps"] + ["restore"]:
                s = steps.get(step)
                if not s:
                    continue
                L.append(f"| {tool} | {step} | {fmt(s['wall'], 2)} | {fmt(s['MiBps'])} | "
                         f"{fmt(s['cpu'], 2)} | {fmt(s['rss_MiB'], 0)} | "
                         f"{fmt(s.get('repo_bytes'))} | {fmt(s.get('dedup'), 2)} |")
    if res["doubling"]:
        L.append("\n## whorl, corpus doubled (peak RSS)\n")
        L.append("| corpus | files | MiB | wall s | peak RSS MiB |")
        L.append("|---|---|---|---|---|")
        for name, d in res["doubling"].items():
            L.append(f"| {name} | {d['files']} | {d['logical_bytes'] / MIB:.0f} | "
                     f"{d['wall']:.2f} | {d['rss_kib'] / 1024:.0f} |")
    L.append("\n## Primitives (same run)\n")
    L.append("| primitive | value |")
    L.append("|---|---|")
    L.append(f"| openssl speed -evp sha256, 16 KiB blocks, MB/s | {fmt(prims['openssl_sha256_16k_MBps'], 0)} |")
    L.append(f"| zstd -b3 compress MB/s (one thread) | {fmt(prims['zstd3_compress_MBps'], 0)} |")
    L.append(f"| zstd -b3 decompress MB/s | {fmt(prims['zstd3_decompress_MBps'], 0)} |")
    L.append(f"| zstd -b3 ratio on the sample | {fmt(prims['zstd3_ratio'], 2)} |")
    if prims.get("paired_chunker_MBps"):
        L.append(f"| in pairs: openssl speed -evp sha256 -bytes 16384, MB/s | "
                 f"{fmt(prims['paired_sha256_MBps'], 0)} |")
        L.append(f"| in pairs: whorl chunker, one core, MB/s | "
                 f"{fmt(prims['paired_chunker_MBps'], 0)} |")
    for key, label in (("chunker_MBps", "whorl chunker, one core, MB/s"),
                       ("sha256_MBps", "whorl SHA-256, MB/s"),
                       ("findmissing_fps", "whorl FindMissing, one shard, fingerprints/s"),
                       ("findmissing_metad_cpu_us_per_fp",
                        "whorl-metad CPU per FindMissing fingerprint, us"),
                       ("pack_write_MBps", "whorl pack writes, MB/s")):
        v = prims.get(f"whorl_{key}")
        digits = 2 if key.endswith("_us_per_fp") else 0
        L.append(f"| {label} | {fmt(v, digits) if v else 'not measured (no whorl-bench binary; hook in bench.py)'} |")
    L.append("\n## Ratios and issue 5's targets\n")
    L.append("| ratio | corpus | median (min–max) | target | met |")
    L.append("|---|---|---|---|---|")
    for r in ratios:
        met = {True: "**yes**", False: "no", None: "not measured" if r["is_target"] else ""}[r["met"]]
        L.append(f"| {r['what']} | {r['corpus']} | {fmt(r['value'], 2) if r['value'] else '–'} | "
                 f"{r['target']} | {met} |")
    L.append("\nThe RSS target's second half is read as: whorl's first-backup peak RSS on a corpus "
             "twice the size (different seed, same recipe) within +10% of the 1x corpus's.\n")
    if chart:
        L.append(f"\n![backup wall time per version]({os.path.basename(chart)})\n")
    with open(path, "w") as f:
        f.write("\n".join(L))


def write_chart(res, summary, out_dir):
    """backup_times.png: median backup wall time per version per tool, min–max as error bars."""
    if not shutil.which("gnuplot"):
        return None
    names = [c for c in res["corpora"]]
    if not names:
        return None
    plots, series_all = [], []
    for cname in names:
        cr = res["corpora"][cname]
        series = []
        for tool, steps in summary[cname].items():
            dat = os.path.join(out_dir, f"chart-{cname}-{tool}.dat")
            with open(dat, "w") as f:
                for i, step in enumerate(cr["steps"]):
                    w = steps.get(step, {}).get("wall")
                    if w:
                        f.write(f"{i} {w['median']:.4f} {w['min']:.4f} {w['max']:.4f}\n")
            series.append((tool, dat))
        series_all.append(series)
        xt = ", ".join(f"\"{s.replace(' first', '').replace(' nightly', '').replace(' edited', '').replace(' unchanged', ' same')}\" {i}"
                       for i, s in enumerate(cr["steps"]))
        p = [f"set title '{cname}: backup wall time per version (median, min-max)'",
             f"set xtics ({xt})", "set logscale y", "set ylabel 'seconds (log)'",
             "set grid ytics", "set key top right", "set offsets 0.3, 0.3, 0, 0",
             "plot " + ", ".join(f"'{d}' using 1:2:3:4 with yerrorlines lw 2 title '{t}'"
                                 for t, d in series)]
        plots.append("\n".join(p))
    png = os.path.join(out_dir, "backup_times.png")
    script = [f"set terminal pngcairo size {700 * len(plots)},480 font ',10'",
              f"set output '{png}'", f"set multiplot layout 1,{len(plots)}"] + plots + \
             ["unset multiplot"]
    gp = os.path.join(out_dir, "backup_times.gp")
    with open(gp, "w") as f:
        f.write("\n".join(script) + "\n")
    r = subprocess.run(["gnuplot", gp], capture_output=True, text=True)
    for _, dat in (s for c in series_all for s in c):
        os.unlink(dat)
    os.unlink(gp)
    if r.returncode != 0:
        log(f"gnuplot failed (chart skipped): {tail(r.stderr, 5)}")
        return None
    return png


def report(res, out_dir):
    os.makedirs(out_dir, exist_ok=True)
    summary, ratios, prims = summarize(res)
    res["summary"], res["ratios"], res["primitives_summary"] = summary, ratios, prims
    chart = write_chart(res, summary, out_dir)
    with open(os.path.join(out_dir, "results.json"), "w") as f:
        json.dump(res, f, indent=1, sort_keys=False)
    md = os.path.join(out_dir, "results.md")
    write_markdown(res, summary, ratios, prims, md, chart)
    print()
    with open(md) as f:
        print(f.read())
    print("\nIssue 5 targets:")
    for r in ratios:
        if not r["is_target"]:
            continue
        v = fmt(r["value"], 2) if r["value"] else "–"
        state = {True: "MET   ", False: "MISSED", None: "n/a   "}[r["met"]]
        print(f"  {state} {r['what']} [{r['corpus']}]: {v} (target {r['target']})")
    log(f"wrote {md}, {os.path.join(out_dir, 'results.json')}" + (f", {chart}" if chart else ""))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--whorl", required=True, help="the whorl binary")
    ap.add_argument("--quick", action="store_true", help="small corpora (~40 + 100 MiB), 1 rep")
    ap.add_argument("--reps", type=int, help="repetitions (default 3; --quick 1)")
    ap.add_argument("--out", default=os.path.join(HERE, "results"), help="output directory")
    ap.add_argument("--corpus", help="only these corpora (tree,image)")
    ap.add_argument("--tools", help="only these tools (whorl,whorl-cluster,restic,borg)")
    ap.add_argument("--no-doubling", action="store_true",
                    help="skip whorl's 2x-corpus peak-RSS runs")
    a = ap.parse_args()
    if a.reps is None:
        a.reps = 1 if a.quick else 3
    if a.reps < 1:
        ap.error("--reps must be >= 1")
    if not (os.path.isfile(a.whorl) and os.access(a.whorl, os.X_OK)):
        ap.error(f"no whorl binary at {a.whorl}")
    r = subprocess.run([a.whorl, "version"], capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"bench: `{a.whorl} version` failed (exit {r.returncode}): {tail(r.stderr, 5)}")
    for tool in ("restic", "borg", "openssl", "zstd", "diff", "du"):
        if not shutil.which(tool):
            sys.exit(f"bench: {tool} is not installed (tests/bench/run.sh installs it)")
    if not os.access("/usr/bin/time", os.X_OK):
        sys.exit("bench: GNU time (/usr/bin/time) is not installed (apt-get install time)")

    def on_term(signum, _frame):
        raise KeyboardInterrupt(f"signal {signum}")
    signal.signal(signal.SIGTERM, on_term)

    b = Bench(a)
    t0 = time.monotonic()
    try:
        res = b.main()
        res["meta"]["duration_s"] = round(time.monotonic() - t0)
        report(res, os.path.abspath(a.out))
    except BenchError as e:
        print(f"\nbench: FAILED: {e}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print("\nbench: interrupted", file=sys.stderr)
        sys.exit(130)
    finally:
        b.cleanup()
    log(f"done in {time.monotonic() - t0:.0f}s")


if __name__ == "__main__":
    main()
