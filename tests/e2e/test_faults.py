"""Faults in a real local cluster (deploy/local-cluster.sh): a daemon hung with SIGSTOP, and eight
agents racing on the same new data. (A full disk is tests/e2e/test_faults_disk.py.)"""

import json
import os
import signal
import struct
import time

import whorl_e2e as w
from test_cluster import Cluster, mkdir

TIMEOUT_S = 2  # the agent's --timeout in these tests: each RPC's deadline


class HungDaemonTest(w.WhorlTestCase):

    def setUp(self):
        super().setUp()
        self.cluster = Cluster(self, self.path("cluster"), meta=2, chunk=1)
        self.addCleanup(self.cluster.stop)
        self.url = self.cluster.url
        self.whorl("init", "--repo", self.url, expect=0)
        self.src = mkdir(self.path("src"))
        for i in range(20):
            w.write_file(os.path.join(self.src, f"f{i}"), os.urandom(5000 + i))

    def hang(self, node_id):
        self.cluster.signal(node_id, signal.SIGSTOP)
        # Runs before cluster.stop (cleanups run last-in first-out), even if the test fails.
        self.addCleanup(self.cluster.signal, node_id, signal.SIGCONT)

    def snapshots(self):
        r = self.whorl("snapshots", "--repo", self.url, "--json", "--timeout", "10", expect=0)
        return json.loads(r.stdout)

    def assert_times_out_naming(self, node_id):
        address = next(n["address"] for n in self.cluster.map["metadata"] +
                       self.cluster.map["chunkstores"] if n["id"] == node_id)
        start = time.monotonic()
        r = self.whorl("backup", "--repo", self.url, "--timeout", str(TIMEOUT_S), self.src,
                       timeout=60)
        elapsed = time.monotonic() - start
        self.assert_fails(r, 1, node_id)
        self.assertIn(address, r.stderr, r.describe())
        self.assertIn("Deadline Exceeded", r.stderr, r.describe())
        # One deadline, not a retry loop: well under 5 deadlines plus start-up.
        self.assertLess(elapsed, 5 * TIMEOUT_S + 5, f"took {elapsed:.1f} s{r.describe()}")
        return elapsed

    def assert_recovers(self, node_id):
        self.cluster.signal(node_id, signal.SIGCONT)
        self.assertEqual(self.snapshots(), [], "a hung node's backup committed something")
        _, s = self.backup(self.url, self.src)
        self.assertEqual(s["files_new"], 20, s)
        snaps = self.snapshots()
        self.assertEqual(len(snaps), 1, snaps)
        r = self.whorl("check", "--repo", self.url, "--read-data", expect=0)
        self.assertEqual(r.stdout, "no errors were found\n", r.describe())
        target = self.path("target")
        self.restore(self.url, "latest", target, expect=0)
        for i in range(20):
            f = os.path.join(self.src, f"f{i}")
            self.assertEqual(w.read_bytes(w.restored_path(target, f)), w.read_bytes(f))

    def test_hung_chunk_store_fails_the_backup_naming_it_then_recovers(self):
        self.hang("chunk-1")
        elapsed = self.assert_times_out_naming("chunk-1")
        print(f"hung chunk-1: the backup failed after {elapsed:.1f} s")
        self.assert_recovers("chunk-1")
        # A restore from a hung chunk store fails as fast, naming it, and writes no file.
        self.cluster.signal("chunk-1", signal.SIGSTOP)
        target = self.path("target2")
        start = time.monotonic()
        r = self.whorl("restore", "--repo", self.url, "latest", "--target", target,
                       "--timeout", str(TIMEOUT_S), timeout=60)
        elapsed = time.monotonic() - start
        self.assert_fails(r, 1, "chunk-1")
        self.assertLess(elapsed, 5 * TIMEOUT_S + 5, f"took {elapsed:.1f} s{r.describe()}")
        self.assertEqual([e for e in w.all_files(target)], [], "restore wrote files")
        print(f"hung chunk-1: the restore failed after {elapsed:.1f} s")

    def test_hung_metadata_shard_fails_the_backup_naming_it_then_recovers(self):
        self.hang("meta-2")  # not the bootstrap node, whose address is the repository URL
        elapsed = self.assert_times_out_naming("meta-2")
        print(f"hung meta-2: the backup failed after {elapsed:.1f} s")
        self.assert_recovers("meta-2")


class EightAgentsTest(w.WhorlTestCase):

    def test_eight_agents_on_the_same_new_data_all_succeed_and_store_each_chunk_once(self):
        cluster = Cluster(self, self.path("cluster"))
        self.addCleanup(cluster.stop)
        url = cluster.url
        # 1 MiB minimum chunks: each file below is exactly one chunk.
        self.whorl("init", "--repo", url, "--chunk-min", str(1 * w.MIB), "--chunk-avg",
                   str(2 * w.MIB), "--chunk-max", str(4 * w.MIB), expect=0)
        src = mkdir(self.path("same"))
        for i in range(80):
            w.write_file(os.path.join(src, f"f{i}"), os.urandom(20000 + i))
        procs = [w.start(["backup", "--repo", url, "--json", "--host", f"agent{k}", src])
                 for k in range(8)]
        results = [w.finish(argv, proc, timeout=180) for argv, proc in procs]
        for r in results:
            self.assertEqual(r.code, 0, r.describe())
        r = self.whorl("admin", "stats", "--repo", url, "--json", expect=0)
        st = json.loads(r.stdout)
        self.assertEqual(st["snapshots"], 8, st)
        depth = len([p for p in src.split("/") if p])
        # 80 file chunks plus the trees (root and one per directory level), the same in every
        # snapshot unless another process touched a directory above `src` meanwhile.
        self.assertGreaterEqual(st["unique_chunks"], 80 + depth + 1, st)
        self.assertLessEqual(st["unique_chunks"], 80 + 8 * (depth + 1), st)
        self.assertEqual(sum(c["chunks"] for c in st["chunk_stores"]), st["unique_chunks"], st)
        self.assertEqual(sum(s["unique_chunks"] for s in st["shards"]), st["unique_chunks"], st)
        # Stored once: the pack files hold their headers and whole records, no record twice
        # (same fingerprint or bundle id), and every indexed chunk's bytes. A bundle in which
        # another agent's bundle had stored some members first is written whole and indexes only
        # its new members, so the packs may hold more than the indexed bytes, never less.
        for node in st["chunk_stores"]:
            packs = os.path.join(cluster.dir, "data", node["id"], "packs")
            on_disk, ids = 0, []
            for p in sorted(os.listdir(packs)):
                if not p.endswith(".pack"):
                    continue
                data = w.read_bytes(os.path.join(packs, p))
                on_disk += len(data)
                off = 16
                while off + 52 <= len(data):
                    ids.append(data[off + 16:off + 48])
                    off += 52 + struct.unpack_from("<I", data, off + 12)[0]
                self.assertEqual(off, len(data), p)
            self.assertEqual(len(ids), len(set(ids)), node)
            self.assertGreaterEqual(on_disk, 16 * node["packs"] + node["stored_bytes"], node)
        # Every agent's snapshot restores.
        target = self.path("target")
        self.restore(url, "latest", target, "--host", "agent7", expect=0)
        self.assertEqual(w.read_bytes(w.restored_path(target, os.path.join(src, "f79"))),
                         w.read_bytes(os.path.join(src, "f79")))


if __name__ == "__main__":
    w.main()
