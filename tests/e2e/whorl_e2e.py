"""Shared helpers for Whorl's end-to-end tests: they run the real `whorl` binary.

The binary is taken from $WHORL_BIN (ctest sets it), else /work/main/build/bin/whorl.
Each test gets its own temporary directory under $TMPDIR, removed afterwards. Paths that reach
the filesystem are handled as bytes where names may hold arbitrary bytes.
"""

import hashlib
import json
import os
import shutil
import stat
import subprocess
import tempfile
import unittest

BIN = os.environ.get("WHORL_BIN", "/work/main/build/bin/whorl")
TIMEOUT = 60  # seconds per whorl invocation
NOBODY = 65534  # uid/gid used for the unprivileged runs

KIB = 1024
MIB = 1024 * 1024

SUMMARY_FIELDS = (
    "files_new", "files_changed", "files_unmodified", "dirs_new", "total_files_processed",
    "total_bytes_processed", "data_added", "total_duration",
)


def fsb(path):
    """Path as bytes."""
    return os.fsencode(path)


def fss(path):
    """Path as str (surrogate-escaped where not UTF-8), for messages and str APIs."""
    return os.fsdecode(path)


class Result:
    """The outcome of one whorl run."""

    def __init__(self, argv, code, out, err):
        self.argv = argv
        self.code = code
        self.out = out  # bytes
        self.err = err  # bytes

    @property
    def stdout(self):
        return self.out.decode("utf-8", "surrogateescape")

    @property
    def stderr(self):
        return self.err.decode("utf-8", "surrogateescape")

    def describe(self):
        argv = " ".join(repr(fss(a)) if isinstance(a, bytes) else repr(a) for a in self.argv)
        return (f"\n$ {argv}\nexit code: {self.code}\n--- stdout ---\n{self.stdout[-4000:]}"
                f"\n--- stderr ---\n{self.stderr[-4000:]}\n")


def command(args, user=None):
    argv = [BIN] + [a if isinstance(a, bytes) else str(a) for a in args]
    if user is not None:
        argv = ["setpriv", f"--reuid={user}", f"--regid={user}", "--clear-groups"] + argv
    return argv


def child_env(env=None):
    e = dict(os.environ)
    e.pop("WHORL_REPO", None)  # only where a test sets it
    if env:
        e.update(env)
    return e


def run(args, env=None, cwd=None, user=None, timeout=TIMEOUT):
    """Runs whorl with ARGS; stdin is /dev/null, stdout and stderr are pipes."""
    argv = command(args, user)
    try:
        p = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, env=child_env(env), cwd=cwd, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        raise AssertionError(f"whorl timed out after {timeout}s: {argv}\n"
                             f"stderr so far: {e.stderr!r}") from None
    return Result(argv, p.returncode, p.stdout, p.stderr)


def start(args, env=None, user=None):
    """Starts whorl without waiting; returns (argv, Popen)."""
    argv = command(args, user)
    return argv, subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, env=child_env(env))


def finish(argv, proc, timeout=TIMEOUT):
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        raise AssertionError(f"whorl timed out after {timeout}s: {argv}\nstderr: {err!r}")
    return Result(argv, proc.returncode, out, err)


# ---------------------------------------------------------------------------------------------
# Building trees.

_mtime_counter = [0]


def distinct_mtime_ns():
    """A new mtime (around 2004) with non-zero nanoseconds, different on every call."""
    _mtime_counter[0] += 1
    return 1_100_000_000 * 10**9 + _mtime_counter[0] * 1_000_003_917


def set_mtime(path, ns):
    os.utime(path, ns=(ns, ns), follow_symlinks=False)


def write_file(path, data=b"", mode=0o644, mtime_ns=None):
    path = fsb(path)
    with open(path, "wb") as f:
        f.write(data)
    os.chmod(path, mode)
    if mtime_ns is not None:
        set_mtime(path, mtime_ns)
    return path


def makedirs(path, mode=0o755):
    path = fsb(path)
    os.makedirs(path, exist_ok=True)
    os.chmod(path, mode)
    return path


def symlink(target, path):
    path = fsb(path)
    os.symlink(fsb(target), path)
    return path


def stamp_times(root):
    """Gives every entry under ROOT (ROOT included) its own mtime with nanoseconds, children
    first so that directory times stick."""
    root = fsb(root)
    for dirpath, dirnames, filenames in os.walk(root, topdown=False):
        for name in filenames + [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]:
            set_mtime(os.path.join(dirpath, name), distinct_mtime_ns())
        for name in dirnames:
            p = os.path.join(dirpath, name)
            if not os.path.islink(p):
                set_mtime(p, distinct_mtime_ns())
    set_mtime(root, distinct_mtime_ns())


def set_config_version(repo, version):
    """Rewrites REPO/config with VERSION (as a test makes an older repository); returns the
    config as it was."""
    path = os.path.join(repo, "config")
    with open(path) as f:
        config = json.load(f)
    with open(path, "w") as f:
        json.dump(dict(config, version=version), f)
    return config


def restored_path(target, source):
    """Where restore puts SOURCE (an absolute path) under TARGET."""
    return os.path.join(fsb(target), fsb(source).lstrip(b"/"))


def ancestors(path):
    """The directories above absolute PATH, outermost first, without '/'."""
    parts = fsb(path).strip(b"/").split(b"/")
    return [b"/" + b"/".join(parts[:i]) for i in range(1, len(parts))]


def ancestor_state(paths):
    """Metadata of the directories above PATHS."""
    out = []
    for p in paths:
        for a in ancestors(p):
            st = os.lstat(a)
            out.append((a, st.st_mode, st.st_uid, st.st_gid, st.st_mtime_ns, st.st_ctime_ns))
    return out


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def read_bytes(path):
    with open(path, "rb") as f:
        return f.read()


# ---------------------------------------------------------------------------------------------
# Reading trees back.

class Entry:
    __slots__ = ("kind", "mode", "uid", "gid", "mtime_ns", "size", "digest", "link", "ino",
                 "nlink")

    def fields(self):
        return {k: getattr(self, k) for k in self.__slots__ if k not in ("ino", "nlink")}


def scan_tree(root):
    """Maps each path under ROOT, relative (bytes; ROOT itself is b'.'), to an Entry."""
    root = fsb(root)
    out = {}

    def add(rel, full):
        st = os.lstat(full)
        e = Entry()
        e.mode = stat.S_IMODE(st.st_mode)
        e.uid, e.gid = st.st_uid, st.st_gid
        e.mtime_ns = st.st_mtime_ns
        e.ino, e.nlink = st.st_ino, st.st_nlink
        e.size, e.digest, e.link = None, None, None
        if stat.S_ISLNK(st.st_mode):
            e.kind = "symlink"
            e.link = os.readlink(full)
        elif stat.S_ISDIR(st.st_mode):
            e.kind = "dir"
        elif stat.S_ISREG(st.st_mode):
            e.kind = "file"
            e.size = st.st_size
            e.digest = sha256_file(full)
        else:
            e.kind = f"special:{stat.S_IFMT(st.st_mode):o}"
        out[rel] = e
        if e.kind == "dir":
            for name in os.listdir(full):
                add(name if rel == b"." else rel + b"/" + name, os.path.join(full, name))

    add(b".", root)
    return out


def link_groups(tree):
    """Sets of relative paths of regular files sharing an inode (groups of 2 or more)."""
    by_ino = {}
    for rel, e in tree.items():
        if e.kind == "file":
            by_ino.setdefault(e.ino, set()).add(rel)
    return {frozenset(g) for g in by_ino.values() if len(g) > 1}


def all_files(root):
    """Every non-directory path under ROOT (bytes, relative)."""
    return sorted(rel for rel, e in scan_tree(root).items() if e.kind != "dir")


# ---------------------------------------------------------------------------------------------
# Test base.

def rmtree_force(path):
    if not os.path.lexists(path):
        return
    # Directories a test made unreadable, or chowned to another user, must not stop cleanup.
    for dirpath, dirnames, _ in os.walk(path):
        for d in dirnames:
            p = os.path.join(dirpath, d)
            if not os.path.islink(p):
                try:
                    os.chmod(p, 0o700)
                except OSError:
                    pass
    shutil.rmtree(path, ignore_errors=True)


class WhorlTestCase(unittest.TestCase):
    maxDiff = 8000

    def setUp(self):
        if not (os.path.isfile(BIN) and os.access(BIN, os.X_OK)):
            self.fail(f"whorl binary not found or not executable: {BIN} (set WHORL_BIN)")
        self.tmp = os.path.realpath(tempfile.mkdtemp(prefix="whorl-e2e-"))
        self.addCleanup(rmtree_force, self.tmp)

    # -- paths -----------------------------------------------------------------------------------
    def path(self, *parts):
        return os.path.join(self.tmp, *parts)

    def bpath(self, *parts):
        return os.path.join(fsb(self.tmp), *[fsb(p) for p in parts])

    # -- running whorl ---------------------------------------------------------------------------
    def whorl(self, *args, expect=None, **kw):
        r = run(list(args), **kw)
        if expect is not None:
            self.assertEqual(r.code, expect, f"unexpected exit code{r.describe()}")
        return r

    def assert_fails(self, r, code, needle):
        """R exited with CODE and says NEEDLE on stderr in a `whorl: ` line."""
        self.assertEqual(r.code, code, f"unexpected exit code{r.describe()}")
        self.assertIn(needle, r.stderr, f"stderr lacks {needle!r}{r.describe()}")
        self.assertTrue(r.stderr.startswith("whorl: "),
                        f"stderr is not prefixed 'whorl: '{r.describe()}")

    def init_repo(self, name="repo", *extra):
        repo = self.path(name)
        r = self.whorl("init", "--repo", repo, *extra, expect=0)
        self.assertRegex(r.stdout, r"^created whorl repository \S+ at ", r.describe())
        return repo

    def backup(self, repo, *paths, args=(), expect=0, **kw):
        """`backup --json`; returns (Result, summary dict)."""
        r = self.whorl("backup", "--repo", repo, "--json", *args, *paths, expect=expect, **kw)
        lines = [ln for ln in r.stdout.splitlines() if ln.strip()]
        self.assertTrue(lines, f"backup --json printed nothing{r.describe()}")
        objs = []
        for ln in lines:
            try:
                obj = json.loads(ln)
            except ValueError:
                self.fail(f"backup --json printed a line that is not JSON: {ln!r}{r.describe()}")
            self.assertIsInstance(obj, dict, r.describe())
            objs.append(obj)
        summary = objs[-1]
        self.assertEqual(summary.get("message_type"), "summary", r.describe())
        return r, summary

    def snapshots(self, repo, *args):
        r = self.whorl("snapshots", "--repo", repo, "--json", *args, expect=0)
        try:
            snaps = json.loads(r.stdout)
        except ValueError:
            self.fail(f"snapshots --json is not JSON{r.describe()}")
        self.assertIsInstance(snaps, list, r.describe())
        return snaps

    def stats(self, repo):
        r = self.whorl("stats", "--repo", repo, "--json", expect=0)
        try:
            return json.loads(r.stdout)
        except ValueError:
            self.fail(f"stats --json is not JSON{r.describe()}")

    def ls(self, repo, snap, *path, expect=0):
        r = self.whorl("ls", "--repo", repo, snap, *path, expect=expect)
        return r, [ln for ln in r.out.split(b"\n") if ln]

    def restore(self, repo, snap, target, *args, expect=0, **kw):
        return self.whorl("restore", "--repo", repo, snap, "--target", target, *args,
                          expect=expect, **kw)

    # -- comparing trees -------------------------------------------------------------------------
    def assert_trees_equal(self, src, dst, check_times=True, check_owner=True):
        """DST is an exact copy of SRC: same names, kinds, bytes, permission bits, mtimes (ns),
        symlink targets, owners, and hard-link groups; every restored file's link count is the
        size of its group."""
        a, b = scan_tree(src), scan_tree(dst)
        self.assertEqual(sorted(b), sorted(a),
                         f"different sets of paths under {fss(src)!r} and {fss(dst)!r}")
        problems = []
        for rel in sorted(a):
            fa, fb = a[rel].fields(), b[rel].fields()
            if not check_times:
                fa.pop("mtime_ns"), fb.pop("mtime_ns")
            if not check_owner:
                for k in ("uid", "gid"):
                    fa.pop(k), fb.pop(k)
            for k in fa:
                if fa[k] != fb[k]:
                    got, want = (oct(fb[k]), oct(fa[k])) if k == "mode" else (fb[k], fa[k])
                    problems.append(f"{fss(rel)!r}: {k} is {got!r}, want {want!r}")
        ga, gb = link_groups(a), link_groups(b)
        if ga != gb:
            problems.append(f"hard-link groups are {sorted(map(sorted, gb))}, "
                            f"want {sorted(map(sorted, ga))}")
        group_size = {}
        for g in gb:
            for rel in g:
                group_size[rel] = len(g)
        for rel, e in b.items():
            if e.kind == "file" and e.nlink != group_size.get(rel, 1):
                problems.append(f"{fss(rel)!r}: st_nlink is {e.nlink}, "
                                f"want {group_size.get(rel, 1)}")
        if problems:
            self.fail("restored tree differs:\n  " + "\n  ".join(problems))

    def with_stable_ancestors(self, paths, scenario, tries=5):
        """Runs SCENARIO() until the directories above PATHS (which a snapshot records, and
        which other processes may touch: $TMPDIR is shared) did not change while it ran;
        returns its result. SCENARIO must not itself create entries in those directories."""
        for _ in range(tries):
            before = ancestor_state(paths)
            result = scenario()
            if ancestor_state(paths) == before:
                return result
        self.skipTest(f"the directories above {paths} kept changing during {tries} tries")

    def assert_summary_shape(self, summary):
        for k in ("message_type", "snapshot_id") + SUMMARY_FIELDS:
            self.assertIn(k, summary, f"summary lacks {k}: {summary}")
        self.assertRegex(summary["snapshot_id"], r"^[0-9a-f]{64}$")
        for k in SUMMARY_FIELDS[:-1]:
            self.assertIs(type(summary[k]), int, f"{k} is not an integer: {summary}")
            self.assertGreaterEqual(summary[k], 0, summary)
        self.assertIs(type(summary["total_duration"]), float, f"duration: {summary}")
        self.assertGreaterEqual(summary["total_duration"], 0.0)


def main():
    unittest.main(verbosity=2)
