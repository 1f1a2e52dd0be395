"""Helpers shared by the crash tests: the real `whorl`, `whorl-metad` and `whorl-chunkd`
binaries, a cluster from deploy/local-cluster.sh whose nodes can be killed and restarted one at
a time, trees that grow every cycle, and a ledger of acknowledged snapshots and chunks.

Binaries come from $WHORL_BIN_DIR (ctest sets it), else <repo>/build/bin.
"""

import datetime
import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN_DIR = os.environ.get("WHORL_BIN_DIR", os.path.join(ROOT, "build", "bin"))
WHORL = os.path.join(BIN_DIR, "whorl")
PROBE = os.path.join(BIN_DIR, "whorl-probe")
LOCAL_CLUSTER = os.path.join(ROOT, "deploy", "local-cluster.sh")
KILL_ENV = ("WHORL_KILL_POINT", "WHORL_KILL_POINT_SKIP", "WHORL_KILL_SEED")
ACK_LOG_ENV = "WHORL_ACK_LOG"  # agent/ack_log.h: where an agent logs the chunks acknowledged


class CrashTestError(AssertionError):
    pass


def work_base():
    """Where crash tests put repositories and clusters: $WHORL_CRASH_TMPDIR if set, else
    /dev/shm when it has room (>= 2 GiB free), else the usual temp dir. A tmpfs is as good as a
    disk for kill -9 (a killed process's writes stay in the page cache; only power loss needs
    the fsyncs to reach a disk) and it spares the shared machine thousands of fsyncs."""
    if os.environ.get("WHORL_CRASH_TMPDIR"):
        return os.environ["WHORL_CRASH_TMPDIR"]
    try:
        st = os.statvfs("/dev/shm")
        if st.f_bavail * st.f_frsize >= (2 << 30) and os.access("/dev/shm", os.W_OK):
            return "/dev/shm"
    except OSError:
        pass
    return None  # tempfile's default


def clean_env(extra=None):
    """The environment for a child: no inherited kill point, plus EXTRA."""
    env = {k: v for k, v in os.environ.items()
           if k not in KILL_ENV and k not in ("WHORL_REPO", ACK_LOG_ENV)}
    if extra:
        env.update(extra)
    return env


def killed_by_sigkill(code):
    return code == -signal.SIGKILL


def kill_message(point):
    return f"whorl: kill point {point}: SIGKILL"


class Run:
    """The outcome of one whorl command."""

    def __init__(self, argv, code, out, err):
        self.argv, self.code, self.out, self.err = argv, code, out, err

    def describe(self):
        return (f"$ {' '.join(self.argv)}\nexit {self.code}\n--- stdout ---\n{self.out[-3000:]}"
                f"\n--- stderr ---\n{self.err[-3000:]}")


def whorl(args, env=None, timeout=120):
    argv = [WHORL] + [str(a) for a in args]
    try:
        p = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                           errors="replace", env=clean_env(env), timeout=timeout)
    except subprocess.TimeoutExpired as e:
        raise CrashTestError(f"timed out after {timeout}s: {' '.join(argv)}\n{e.stderr}")
    return Run(argv, p.returncode, p.stdout, p.stderr)


def start_whorl(args, env=None):
    """Starts whorl without waiting; returns (argv, Popen)."""
    argv = [WHORL] + [str(a) for a in args]
    return argv, subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True, errors="replace",
                                  env=clean_env(env))


def finish(argv, proc, timeout=180):
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        raise CrashTestError(f"timed out after {timeout}s: {' '.join(argv)}\n{err}")
    return Run(argv, proc.returncode, out, err)


def snapshot_id_of(run):
    """The snapshot id a successful `whorl backup --json` printed, else None."""
    if run.code not in (0, 3):
        return None
    for line in reversed(run.out.splitlines()):
        try:
            j = json.loads(line)
        except ValueError:
            continue
        if j.get("message_type") == "summary" and j.get("snapshot_id"):
            return j["snapshot_id"]
    return None


def snapshot_list(repo, env=None):
    """[{id, host, time (seconds since the epoch, float)}] from `whorl snapshots --json`."""
    r = whorl(["snapshots", "--repo", repo, "--json"], env=env)
    if r.code != 0:
        raise CrashTestError("snapshots failed\n" + r.describe())
    out = []
    for s in json.loads(r.out):
        whole, _, frac = s["time"].rstrip("Z").partition(".")
        t = datetime.datetime.strptime(whole, "%Y-%m-%dT%H:%M:%S").replace(
            tzinfo=datetime.timezone.utc).timestamp() + float("0." + (frac or "0"))
        out.append({"id": s["id"], "host": s["host"], "time": t})
    return out


def listed_snapshots(repo, env=None):
    return {s["id"] for s in snapshot_list(repo, env)}


# ---------------------------------------------------------------------------------------------
# Trees.

def tree_state(root):
    """{relative path: sha256 hex of a file, or "dir"} of everything under ROOT."""
    state = {}
    for dirpath, dirnames, filenames in os.walk(root):
        rel = os.path.relpath(dirpath, root)
        for d in dirnames:
            state[os.path.normpath(os.path.join(rel, d))] = "dir"
        for f in filenames:
            h = hashlib.sha256()
            with open(os.path.join(dirpath, f), "rb") as fh:
                h.update(fh.read())
            state[os.path.normpath(os.path.join(rel, f))] = h.hexdigest()
    return state


class GrowingTree:
    """A directory that changes before every backup: new files each time (so every backup
    stores new chunks), some edited, shared files common to all trees of the same SHARED_SEED
    (so two agents dedup against each other)."""

    def __init__(self, root, seed, shared_seed=7, files=6, max_size=96 * 1024, keep=None):
        self.root, self.rng, self.files, self.max_size = root, random.Random(seed), files, max_size
        self.keep = keep  # generations kept (older ones are deleted), None for all
        self.generation = 0
        os.makedirs(os.path.join(root, "shared"), exist_ok=True)
        shared = random.Random(shared_seed)
        for i in range(4):
            with open(os.path.join(root, "shared", f"s{i}"), "wb") as f:
                f.write(shared.randbytes(shared.randrange(1, 64 * 1024)))

    def grow(self, big=0):
        """Adds a directory of new files (plus one of BIG bytes if asked), edits an old file."""
        self.generation += 1
        d = os.path.join(self.root, f"gen{self.generation:04d}")
        os.makedirs(d)
        for i in range(self.files):
            size = self.rng.choice([0, 1, 100, 5000, self.rng.randrange(self.max_size)])
            with open(os.path.join(d, f"f{i}"), "wb") as f:
                f.write(self.rng.randbytes(size))
        if big:
            with open(os.path.join(d, "big"), "wb") as f:
                f.write(self.rng.randbytes(big))
        first = 1
        if self.keep is not None and self.generation > self.keep:
            first = self.generation - self.keep + 1
            shutil.rmtree(os.path.join(self.root, f"gen{first - 1:04d}"))
        if self.generation > first:
            old = os.path.join(self.root, f"gen{self.rng.randrange(first, self.generation):04d}",
                               "f0")
            with open(old, "ab") as f:
                f.write(self.rng.randbytes(300))
        return tree_state(self.root)


# ---------------------------------------------------------------------------------------------
# The ledger.

def read_ack_log(path):
    """The fingerprints (hex) an agent run logged as acknowledged (ACK_LOG_ENV): whole lines
    only, since a kill can tear the last one. Raises CrashTestError on a whole line that is not
    a fingerprint."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return []  # the run stored nothing new (or died before its first put returned)
    lines = data.split(b"\n")
    lines.pop()  # what follows the last newline: nothing, or a line torn by a kill
    for line in lines:
        if len(line) != 64 or line.strip(b"0123456789abcdef"):
            raise CrashTestError(f"{path}: not a fingerprint: {line[:80]!r}")
    return [line.decode() for line in lines]


class Ledger:
    """What the store acknowledged, Jepsen set-checker style: snapshots (backup exited 0 and
    printed the id, with the tree state they were taken of) and chunks (a PutChunks returned OK
    in an agent, which logged them; whether its backup then succeeded or not). After the run
    every snapshot must restore and every chunk must be stored and read back."""

    def __init__(self):
        self.acked = {}  # snapshot id -> (source path, state)
        self.verified = set()
        self.chunks = set()  # hex fingerprints
        self.chunks_verified = set()

    def ack(self, snap_id, source, state):
        self.acked[snap_id] = (source, state)

    def ack_chunks(self, fps):
        self.chunks.update(fps)

    def verify_chunks(self, repo, scratch, fps=None, env=None):
        """Reads each chunk of FPS (default: all acknowledged) with `whorl debug chunks`: each
        must be in the index and hash to its fingerprint. Returns a list of problems."""
        fps = sorted(self.chunks if fps is None else fps)
        if not fps:
            return []
        path = os.path.join(scratch, "chunks-to-verify")
        with open(path, "w") as f:
            f.write("".join(fp + "\n" for fp in fps))
        r = whorl(["debug", "chunks", "--repo", repo, path], env=env, timeout=300)
        bad = {}
        for line in r.out.splitlines():
            if line.startswith("chunk "):
                fp, _, why = line[len("chunk "):].partition(": ")
                bad[fp] = why
        if r.code not in (0, 1) or (r.code == 1) != bool(bad) or not set(bad) <= set(fps):
            return ["debug chunks failed\n" + r.describe()]
        self.chunks_verified.update(set(fps) - set(bad))
        return [f"acknowledged chunk {fp} lost: {why}" for fp, why in sorted(bad.items())]

    def verify(self, repo, scratch, ids=None, env=None):
        """Restores each snapshot of IDS (default: all acknowledged) into SCRATCH and compares;
        returns a list of problems (empty when all match byte for byte)."""
        problems = []
        for snap_id in sorted(ids if ids is not None else self.acked):
            source, state = self.acked[snap_id]
            problems += restore_matches(repo, snap_id, source, state, scratch, env)
            if not problems:
                self.verified.add(snap_id)
        return problems


def restore_matches(repo, snap_id, source, state, scratch, env=None):
    target = os.path.join(scratch, "restore-" + snap_id[:12])
    shutil.rmtree(target, ignore_errors=True)
    r = whorl(["restore", "--repo", repo, snap_id, "--target", target], env=env)
    try:
        if r.code != 0:
            return [f"snapshot {snap_id[:12]}: restore failed\n{r.describe()}"]
        got = tree_state(os.path.join(target, source.lstrip("/")))
        if got != state:
            missing = sorted(set(state) - set(got))[:5]
            extra = sorted(set(got) - set(state))[:5]
            differ = sorted(k for k in set(got) & set(state) if got[k] != state[k])[:5]
            return [f"snapshot {snap_id[:12]}: restored tree differs: missing {missing}, "
                    f"extra {extra}, different {differ}"]
        return []
    finally:
        shutil.rmtree(target, ignore_errors=True)


def check_clean(repo, env=None, read_data=True):
    args = ["check", "--repo", repo] + (["--read-data"] if read_data else [])
    r = whorl(args, env=env, timeout=300)
    return [] if r.code == 0 else ["check failed\n" + r.describe()]


# ---------------------------------------------------------------------------------------------
# A local cluster whose nodes can be killed and restarted one by one.

def _alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


class Cluster:
    """deploy/local-cluster.sh's cluster in DIR. Nodes it started are not our children; a node
    restarted here is (self.children), so its exit status can be read."""

    def __init__(self, directory, meta, chunk):
        self.dir = os.path.abspath(directory)
        self.env = clean_env({"WHORL_BIN_DIR": BIN_DIR})
        r = subprocess.run(["bash", LOCAL_CLUSTER, "start", self.dir, "--meta", str(meta),
                            "--chunk", str(chunk)], capture_output=True, text=True, env=self.env,
                           timeout=120)
        if r.returncode != 0:
            raise CrashTestError(f"local-cluster.sh start failed:\n{r.stdout}\n{r.stderr}")
        with open(os.path.join(self.dir, "repo-url")) as f:
            self.url = f.read().strip()
        with open(os.path.join(self.dir, "cluster.json")) as f:
            m = json.load(f)
        self.nodes = {}  # id -> (kind, address)
        for n in m["metadata"]:
            self.nodes[n["id"]] = ("metad", n["address"])
        for n in m["chunkstores"]:
            self.nodes[n["id"]] = ("chunkd", n["address"])
        self.metrics = {}
        with open(os.path.join(self.dir, "metrics")) as f:
            for line in f:
                node_id, url = line.split()
                self.metrics[node_id] = url.split("//")[1].split("/")[0]
        self.children = {}  # id -> Popen, for nodes (re)started by this object

    def ids(self, kind=None):
        return sorted(i for i, (k, _) in self.nodes.items() if kind in (None, k))

    def pid(self, node_id):
        with open(os.path.join(self.dir, "pids", node_id + ".pid")) as f:
            return int(f.read().strip())

    def wait_gone(self, node_id, timeout=30):
        """Waits for the node's process to end; returns its exit status if it is our child."""
        child = self.children.get(node_id)
        if child is not None:
            try:
                return child.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                raise CrashTestError(f"{node_id} did not exit in {timeout}s")
        pid = self.pid(node_id)
        deadline = time.monotonic() + timeout
        while _alive(pid):
            if time.monotonic() > deadline:
                raise CrashTestError(f"{node_id} (pid {pid}) did not exit in {timeout}s")
            time.sleep(0.01)
        return None

    def signal(self, node_id, sig):
        child = self.children.get(node_id)
        if child is not None and child.poll() is not None:
            return  # already dead (a kill point)
        try:
            os.kill(self.pid(node_id), sig)
        except ProcessLookupError:
            pass

    def kill(self, node_id):
        """kill -9 the node and wait until it is gone."""
        self.signal(node_id, signal.SIGKILL)
        return self.wait_gone(node_id)

    def stop_node(self, node_id):
        self.signal(node_id, signal.SIGTERM)
        return self.wait_gone(node_id)

    def start_node(self, node_id, env=None, wait_healthy=True):
        """Starts the node as local-cluster.sh does (same flags, data, log), with ENV added."""
        kind, address = self.nodes[node_id]
        argv = [os.path.join(BIN_DIR, "whorl-" + kind), "--node-id", node_id, "--listen",
                address, "--data", os.path.join(self.dir, "data", node_id), "--cluster",
                os.path.join(self.dir, "cluster.json"), "--metrics-listen",
                self.metrics[node_id], "--log-format", "json"]
        log = open(os.path.join(self.dir, "logs", node_id + ".log"), "ab")
        p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                             env=clean_env(env))
        log.close()
        self.children[node_id] = p
        with open(os.path.join(self.dir, "pids", node_id + ".pid"), "w") as f:
            f.write(f"{p.pid}\n")
        if wait_healthy:
            self.wait_healthy(node_id)
        return p

    def wait_healthy(self, node_id, timeout=30):
        _, address = self.nodes[node_id]
        deadline = time.monotonic() + timeout
        while True:
            r = subprocess.run([PROBE, address], capture_output=True)
            if r.returncode == 0:
                return
            child = self.children.get(node_id)
            if child is not None and child.poll() is not None:
                raise CrashTestError(f"{node_id} exited with {child.returncode} at start; "
                                     f"see {self.log_path(node_id)}:\n{self.log_tail(node_id)}")
            if time.monotonic() > deadline:
                raise CrashTestError(f"{node_id} not healthy in {timeout}s")
            time.sleep(0.05)

    def log_path(self, node_id):
        return os.path.join(self.dir, "logs", node_id + ".log")

    def log_tail(self, node_id, n=4000):
        with open(self.log_path(node_id), "rb") as f:
            return f.read()[-n:].decode("utf-8", "replace")

    def stop(self):
        subprocess.run(["bash", LOCAL_CLUSTER, "stop", self.dir], capture_output=True,
                       env=self.env, timeout=120)
        for p in self.children.values():
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
