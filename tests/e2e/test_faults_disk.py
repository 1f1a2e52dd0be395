"""A full disk under whorl-chunkd: its data directory is a 32 MiB tmpfs, nearly filled by a filler
file. The backup fails with exit 1 naming the node and "No space left on device", commits
nothing, leaves the store sound; once the filler is deleted the next backup succeeds, and so
does one after the chunk store restarts. The same for an embedded repository on the tmpfs.

Needs root and tmpfs mounts. Where `mount -t tmpfs` is refused (an unprivileged CI container),
the script says why and exits 77, which ctest reports as skipped (SKIP_RETURN_CODE)."""

import json
import os
import subprocess
import sys
import tempfile

import whorl_e2e as w
from test_cluster import SCRIPT, Cluster, mkdir

SKIP = 77
TMPFS_MIB = 32


def mount_tmpfs(path, mib=TMPFS_MIB):
    """Mounts a MIB MiB tmpfs on PATH; returns '' or why it could not."""
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={mib}m", "tmpfs", path],
                       capture_output=True, text=True)
    return "" if r.returncode == 0 else (r.stderr.strip() or f"mount exited {r.returncode}")


def umount(path):
    if subprocess.run(["umount", path], capture_output=True).returncode != 0:
        subprocess.run(["umount", "-l", path], capture_output=True)


class FullDiskTest(w.WhorlTestCase):

    def tmpfs(self, path, mib=TMPFS_MIB):
        """PATH made and mounted as a MIB MiB tmpfs (unmounted at cleanup); returns it."""
        mkdir(path)
        self.assertEqual(mount_tmpfs(path, mib), "", "tmpfs mount failed after the probe succeeded")
        self.addCleanup(umount, path)
        return path

    def ten_mib_source(self):
        src = mkdir(self.path("src"))
        for i in range(10):
            w.write_file(os.path.join(src, f"f{i}"), os.urandom(1 * w.MIB))
        return src

    @staticmethod
    def fill_leaving_2_mib(path):
        """Fills PATH's filesystem with a file PATH/filler until about 2 MiB are left free."""
        st = os.statvfs(path)
        filler = os.path.join(path, "filler")
        with open(filler, "wb") as f:
            f.write(b"\0" * (st.f_bavail * st.f_frsize - 2 * w.MIB))
        return filler

    def test_full_disk_fails_the_backup_commits_nothing_and_recovers_once_freed(self):
        cdir = self.path("cluster")
        data = self.tmpfs(os.path.join(cdir, "data", "chunk-1"))  # unmounted after cluster.stop
        cluster = Cluster(self, cdir, meta=1, chunk=1)
        self.addCleanup(cluster.stop)
        url = cluster.url
        self.whorl("init", "--repo", url, expect=0)
        src = self.ten_mib_source()

        # Leave about 2 MiB free for 10 MiB of new chunks.
        filler = self.fill_leaving_2_mib(data)
        r = self.whorl("backup", "--repo", url, "--timeout", "20", src, timeout=120)
        self.assert_fails(r, 1, "No space left on device")
        self.assertIn("chunk-1", r.stderr, r.describe())
        print(r.stderr.strip())
        snaps = json.loads(self.whorl("snapshots", "--repo", url, "--json", expect=0).stdout)
        self.assertEqual(snaps, [], "a backup that failed committed a snapshot")
        r = self.whorl("check", "--repo", url, "--read-data", expect=0)
        self.assertEqual(r.stdout, "no errors were found\n", r.describe())

        os.remove(filler)
        _, s = self.backup(url, src, args=("--timeout", "20"))
        self.assertEqual(s["files_new"], 10, s)
        r = self.whorl("check", "--repo", url, "--read-data", expect=0)
        self.assertEqual(r.stdout, "no errors were found\n", r.describe())

        # The store reopens sound (its recovery reads what the full disk left in the pack).
        subprocess.run(["bash", SCRIPT, "stop", cdir], check=True, capture_output=True,
                       env=cluster.env, timeout=120)
        subprocess.run(["bash", SCRIPT, "start", cdir], check=True, capture_output=True,
                       env=cluster.env, timeout=120)
        r = self.whorl("check", "--repo", url, "--read-data", expect=0)
        self.assertEqual(r.stdout, "no errors were found\n", r.describe())
        w.write_file(os.path.join(src, "after"), os.urandom(100_000))
        _, s = self.backup(url, src)
        self.assertEqual(s["files_new"], 1, s)
        target = self.path("target")
        self.restore(url, "latest", target, expect=0)
        for name in [f"f{i}" for i in range(10)] + ["after"]:
            f = os.path.join(src, name)
            self.assertEqual(w.read_bytes(w.restored_path(target, f)), w.read_bytes(f), name)

    def test_full_disk_under_an_embedded_repository_fails_cleanly_and_recovers(self):
        # Without the free-space reserve, RocksDB met the full disk in its WAL and the next
        # write aborted the agent (Debian's RocksDB 7.8 asserts); now the put is refused first.
        # 64 MiB: both RocksDB databases of the repository preallocate their WAL and MANIFEST
        # (~20 MiB together on a tmpfs).
        repo = self.tmpfs(self.path("repo"), 64)
        self.whorl("init", "--repo", repo, expect=0)
        src = self.ten_mib_source()
        filler = self.fill_leaving_2_mib(repo)
        r = self.whorl("backup", "--repo", repo, src, timeout=120)
        self.assert_fails(r, 1, "No space left on device")
        self.assertNotIn("Assertion", r.stderr, r.describe())
        snaps = json.loads(self.whorl("snapshots", "--repo", repo, "--json", expect=0).stdout)
        self.assertEqual(snaps, [], "a backup that failed committed a snapshot")
        os.remove(filler)
        r = self.whorl("check", "--repo", repo, "--read-data", expect=0)
        self.assertEqual(r.stdout, "no errors were found\n", r.describe())
        _, s = self.backup(repo, src)
        self.assertEqual(s["files_new"], 10, s)
        target = self.path("target")
        self.restore(repo, "latest", target, expect=0)
        for i in range(10):
            f = os.path.join(src, f"f{i}")
            self.assertEqual(w.read_bytes(w.restored_path(target, f)), w.read_bytes(f), f)

    def assert_readable(self, repo, src, snapshot_count, what):
        """REPO lists SNAPSHOT_COUNT snapshots, checks clean and restores SRC's f0..f9 exactly."""
        snaps = json.loads(self.whorl("snapshots", "--repo", repo, "--json", expect=0).stdout)
        self.assertEqual(len(snaps), snapshot_count, what)
        r = self.whorl("check", "--repo", repo, "--read-data", expect=0)
        self.assertEqual(r.stdout, "no errors were found\n", f"{what}{r.describe()}")
        target = self.path(f"target-{what.replace(' ', '-')}")
        self.restore(repo, "latest", target, expect=0)
        for i in range(10):
            f = os.path.join(src, f"f{i}")
            self.assertEqual(w.read_bytes(w.restored_path(target, f)), w.read_bytes(f), f)

    def test_an_embedded_repository_on_a_full_or_read_only_disk_can_still_be_read(self):
        # Reading commands open the repository for writing (that open recovers a crashed
        # backup); where it cannot write they open its stores read-only. Before, the open on a
        # full disk aborted the agent in RocksDB's info log (Debian's 7.8 asserts on an append
        # after a failed one), so not even `snapshots` ran.
        repo = self.tmpfs(self.path("repo"), 64)
        self.whorl("init", "--repo", repo, expect=0)
        src = self.ten_mib_source()
        self.backup(repo, src)

        # Not one byte free.
        filler = os.path.join(repo, "filler")
        with open(filler, "wb") as f:
            try:
                while True:
                    f.write(b"\0" * w.MIB)
                    f.flush()
            except OSError:
                pass
        w.write_file(os.path.join(src, "new"), os.urandom(100_000))
        r = self.whorl("backup", "--repo", repo, src, timeout=120)
        self.assert_fails(r, 1, "No space left on device")
        self.assertNotIn("Assertion", r.stderr, r.describe())
        self.assert_readable(repo, src, 1, "full disk")

        # Read-only: the same, and the reads leave no file behind.
        os.remove(filler)
        ro = subprocess.run(["mount", "-o", "remount,ro", repo], capture_output=True, text=True)
        self.assertEqual(ro.returncode, 0, ro.stderr)
        r = self.whorl("backup", "--repo", repo, src, timeout=120)
        self.assert_fails(r, 1, "Read-only file system")
        self.assert_readable(repo, src, 1, "read-only")
        subprocess.run(["mount", "-o", "remount,rw", repo], check=True)
        self.assertFalse([n for n in os.listdir(os.path.join(repo, "meta")) if n.startswith("LOG")],
                         "RocksDB wrote an info log into the repository")

        _, s = self.backup(repo, src)
        self.assertEqual(s["files_new"], 1, s)


def can_mount():
    probe = tempfile.mkdtemp(prefix="whorl-tmpfs-probe-")
    try:
        why = mount_tmpfs(probe)
        if not why:
            umount(probe)
        return why
    finally:
        os.rmdir(probe)


if __name__ == "__main__":
    why = can_mount()
    if why:
        print(f"SKIP: cannot mount a tmpfs here ({why}); the full-disk test needs root and "
              "tmpfs mounts", flush=True)
        sys.exit(SKIP)
    w.main()
