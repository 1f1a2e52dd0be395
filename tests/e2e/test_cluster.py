"""The cluster through the CLI: `whorl ... --repo whorl://HOST:PORT` against real whorl-metad and
whorl-chunkd processes on 127.0.0.1 (ephemeral ports, RocksDB in temp dirs), started and stopped
by deploy/local-cluster.sh exactly as an operator would."""

import glob
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import time

import whorl_e2e as w

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCRIPT = os.path.join(ROOT, "deploy", "local-cluster.sh")
BIN_DIR = os.path.dirname(os.path.abspath(w.BIN))


def mkdir(path):
    return w.fss(w.makedirs(path))


class Cluster:
    """A local cluster in DIR, via deploy/local-cluster.sh."""

    def __init__(self, test, directory, meta=3, chunk=2):
        self.dir = directory
        env = dict(os.environ, WHORL_BIN_DIR=BIN_DIR)
        self.env = env
        r = subprocess.run(["bash", SCRIPT, "start", directory, "--meta", str(meta), "--chunk",
                            str(chunk)], capture_output=True, text=True, env=env, timeout=120)
        test.assertEqual(r.returncode, 0, f"local-cluster.sh start failed:\n{r.stdout}\n{r.stderr}")
        with open(os.path.join(directory, "repo-url")) as f:
            self.url = f.read().strip()
        test.assertTrue(self.url.startswith("whorl://"), self.url)
        test.assertIn(self.url, r.stdout)
        with open(self.map_path()) as f:
            self.map = json.load(f)

    def map_path(self):
        return os.path.join(self.dir, "cluster.json")

    def pid(self, node_id):
        with open(os.path.join(self.dir, "pids", node_id + ".pid")) as f:
            return int(f.read().strip())

    def signal(self, node_id, sig):
        os.kill(self.pid(node_id), sig)

    def stop(self):
        subprocess.run(["bash", SCRIPT, "stop", self.dir], capture_output=True, env=self.env,
                       timeout=120)


class ClusterTestCase(w.WhorlTestCase):

    def setUp(self):
        super().setUp()
        self.cluster = Cluster(self, self.path("cluster"))
        self.addCleanup(self.cluster.stop)
        self.url = self.cluster.url

    def admin_stats(self):
        r = self.whorl("admin", "stats", "--repo", self.url, "--json", expect=0)
        try:
            return json.loads(r.stdout)
        except ValueError:
            self.fail(f"admin stats --json is not JSON{r.describe()}")


class ClusterBackupTest(ClusterTestCase):

    def test_two_hosts_overlapping_data_restore_and_exact_stats(self):
        r = self.whorl("init", "--repo", self.url, "--chunk-min", str(1 * w.MIB), "--chunk-avg",
                       str(2 * w.MIB), "--chunk-max", str(4 * w.MIB), expect=0)
        self.assertRegex(r.stdout, r"^created whorl repository \S+ at whorl://")
        again = self.whorl("init", "--repo", self.url)
        self.assert_fails(again, 1, "already exists")

        # Files below the minimum chunk size are one chunk each: exact counts follow.
        shared = [os.urandom(1000 + i) for i in range(40)]
        only_a = [os.urandom(500 + i) for i in range(10)]
        only_b = [os.urandom(700 + i) for i in range(15)]
        a = mkdir(self.path("hosta"))
        b = mkdir(self.path("hostb"))
        for i, data in enumerate(shared):
            w.write_file(os.path.join(a, f"s{i}"), data)
            w.write_file(os.path.join(b, f"s{i}"), data)
        for i, data in enumerate(only_a):
            w.write_file(os.path.join(a, f"a{i}"), data)
        for i, data in enumerate(only_b):
            w.write_file(os.path.join(b, f"b{i}"), data)

        _, sa = self.backup(self.url, a, args=("--host", "alpha"))
        _, sb = self.backup(self.url, b, args=("--host", "beta"))
        self.assertEqual(sa["files_new"], 50, sa)
        self.assertEqual(sb["files_new"], 55, sb)

        snaps = self.snapshots(self.url)
        self.assertEqual(sorted(s["host"] for s in snaps), ["alpha", "beta"])
        self.assertEqual(len(self.snapshots(self.url, "--host", "beta")), 1)

        for host, src in (("alpha", a), ("beta", b)):
            target = self.path("restore-" + host)
            self.whorl("restore", "--repo", self.url, "latest", "--host", host, "--target",
                       target, expect=0)
            self.assert_trees_equal(src, w.restored_path(target, src))

        # Trees: per snapshot, the root's and one per directory on the path down to the
        # backed-up directory (all distinct between the two snapshots).
        depth = len([p for p in a.split("/") if p])
        trees = 2 * (depth + 1)
        logical = sum(map(len, shared)) * 2 + sum(map(len, only_a)) + sum(map(len, only_b))
        st = self.admin_stats()
        self.assertEqual(st["snapshots"], 2, st)
        self.assertEqual(st["logical_bytes"], logical, st)
        self.assertEqual(st["unique_chunks"], 40 + 10 + 15 + trees, st)
        self.assertEqual(sum(s["unique_chunks"] for s in st["shards"]), st["unique_chunks"], st)
        self.assertEqual(sum(c["chunks"] for c in st["chunk_stores"]), st["unique_chunks"], st)
        self.assertEqual(sum(c["stored_bytes"] for c in st["chunk_stores"]),
                         st["stored_bytes"], st)
        self.assertEqual(len(st["shards"]), 3, st)
        self.assertEqual(len(st["chunk_stores"]), 2, st)
        # 91 keys over 3 shards and 2 stores: every node holds some.
        for s in st["shards"]:
            self.assertGreater(s["unique_chunks"], 0, st)
        for c in st["chunk_stores"]:
            self.assertGreater(c["chunks"], 0, st)
        tenants = {t["tenant"]: t for t in st["tenants"]}
        self.assertEqual(tenants["alpha"]["logical_bytes"],
                         sum(map(len, shared)) + sum(map(len, only_a)), st)
        self.assertEqual(tenants["beta"]["snapshots"], 1, st)
        self.assertGreater(st["dedup_ratio"], 1.0, st)
        # `whorl stats` gives the same totals.
        plain = self.stats(self.url)
        for k in ("snapshots", "logical_bytes", "stored_bytes", "unique_chunks"):
            self.assertEqual(plain[k], st[k], (plain, st))
        # Nothing is damaged: repair forgets nothing.
        r = self.whorl("repair", "--repo", self.url, "--read-data", expect=0)
        self.assertIn("nothing to repair", r.stdout, r.describe())
        self.assertEqual(self.stats(self.url)["unique_chunks"], st["unique_chunks"])

        # A second backup of unchanged files reads none of them and adds no file data (only
        # the trees above, whose directories' mtimes the restores above changed).
        _, again = self.backup(self.url, a, args=("--host", "alpha"))
        self.assertEqual(again["files_unmodified"], 50, again)
        self.assertLess(again["data_added"], 2048, again)

        r = self.whorl("check", "--repo", self.url, "--read-data", expect=0)
        self.assertIn("no errors were found", r.stdout)

    def test_every_rpc_is_logged_with_the_agents_request_id_and_metrics_are_served(self):
        self.whorl("init", "--repo", self.url, expect=0)
        src = mkdir(self.path("src"))
        for i in range(10):
            w.write_file(os.path.join(src, f"f{i}"), os.urandom(5000))
        cache = self.path("cache")
        env = {"XDG_CACHE_HOME": cache}
        self.backup(self.url, src, env=env)
        # Each shard's filter is cached for the next run (which asks "unchanged?" only).
        cached = os.listdir(cache + "/whorl/filters")
        self.assertEqual(len(cached), 1, cached)
        self.assertEqual(sorted(os.listdir(os.path.join(cache, "whorl/filters", cached[0]))),
                         sorted(n["id"] + ".bloom" for n in self.cluster.map["metadata"]))
        with open(os.path.join(self.cluster.dir, "metrics")) as f:
            urls = dict(line.split() for line in f if line.strip())
        import urllib.request

        def scrape():
            return "".join(urllib.request.urlopen(urls[n["id"]], timeout=10).read().decode()
                           for n in self.cluster.map["metadata"])

        def asked(body):
            return sum(float(line.split()[-1]) for line in body.splitlines()
                       if line.startswith("whorl_findmissing_fingerprints_total"))
        # A first backup of new data asks (almost) nothing: the empty shards' Bloom filters
        # rule every fingerprint out.
        self.assertLessEqual(asked(scrape()), 1)
        # A file of the second run has the bytes of one stored by the first: its chunk is in
        # its shard's filter, so that question is asked. (Not the unchanged files' chunks, nor
        # an unchanged directory's tree; the trees above src change only when other processes
        # touch those directories, so they cannot be relied on to be asked about.)
        with open(os.path.join(src, "f0"), "rb") as f:
            w.write_file(os.path.join(src, "copy-of-f0"), f.read())
        self.backup(self.url, src, env=env)
        events = {}
        for n in self.cluster.map["metadata"] + self.cluster.map["chunkstores"]:
            with open(os.path.join(self.cluster.dir, "logs", n["id"] + ".log")) as f:
                events[n["id"]] = [json.loads(line) for line in f if line.startswith("{")]
        puts = [e for n in self.cluster.map["chunkstores"] for e in events[n["id"]]
                if e.get("msg") == "rpc" and e.get("method") == "PutChunks"]
        self.assertTrue(puts, events)
        for e in puts:
            self.assertEqual(e["code"], "0", e)
            self.assertEqual(e["tenant"], os.uname().nodename, e)
        # The chunk store passed each put's request id on to the shards it registered with.
        registers = {e["request_id"] for n in self.cluster.map["metadata"]
                     for e in events[n["id"]] if e.get("method") == "Register"}
        for e in puts:
            self.assertIn(e["request_id"], registers, e)
        body = scrape()
        # The copy's chunk was asked about, of whichever shard owns it.
        self.assertIn('whorl_rpc_requests_total{code="0",method="FindMissing"}', body)
        self.assertIn("whorl_rpc_duration_seconds_bucket", body)
        self.assertIn("whorl_findmissing_fingerprints_total", body)
        self.assertIn("whorl_rocksdb_estimate_num_keys", body)
        # A run with nothing changed asks about none of its trees either: each has the bytes
        # of the parent's tree, just read back. Only the trees above the backed-up directory
        # may be asked about (other processes change the mtimes of /tmp and the like).
        deep = mkdir(self.path("deep"))
        for i in range(6):
            w.write_file(os.path.join(mkdir(os.path.join(deep, f"d{i}")), "f"), b"x" * i)
        self.backup(self.url, deep, env=env)
        before = asked(scrape())
        _, again = self.backup(self.url, deep, env=env)
        self.assertEqual(again["files_unmodified"], 6, again)
        above = len(os.path.abspath(deep).split("/")) - 1  # "/" and each directory down to deep
        self.assertLessEqual(asked(scrape()) - before, above)

    def test_restore_and_check_read_trees_together(self):
        # 121 directories on three levels below src, each tree different (a symlink names its
        # place), no file data: a restore that fetched each directory's subtrees on entering
        # it would open a GetChunks stream per directory; loading them a level at a time
        # opens about one per level and chunk-store node.
        self.whorl("init", "--repo", self.url, expect=0)
        src = mkdir(self.path("wide"))
        for i in range(40):
            for j in range(2):
                d = mkdir(os.path.join(src, f"d{i}", f"e{j}"))
                os.symlink(f"t-{i}-{j}", os.path.join(d, "link"))
        _, s = self.backup(self.url, src)

        def get_chunks_streams():
            n = 0
            for node in self.cluster.map["chunkstores"]:
                with open(os.path.join(self.cluster.dir, "logs", node["id"] + ".log")) as f:
                    n += sum(1 for line in f if '"method":"GetChunks"' in line)
            return n
        before = get_chunks_streams()
        target = self.path("t")
        self.whorl("restore", "--repo", self.url, s["snapshot_id"], "--target", target, expect=0)
        streams = get_chunks_streams() - before
        for i in range(40):
            for j in range(2):
                link = w.restored_path(target, os.path.join(src, f"d{i}", f"e{j}", "link"))
                self.assertEqual(os.readlink(link), os.fsencode(f"t-{i}-{j}"))
        # The snapshot's root and the directories down to src, then src's three levels.
        levels = len(os.path.abspath(src).split("/")) + 3
        chunk_stores = len(self.cluster.map["chunkstores"])
        self.assertLessEqual(streams, levels * chunk_stores, streams)
        # check --read-data walks the trees fetching each directory's subtrees together, and
        # reads the data a slice of 1024 chunks at a time: not a stream per tree and per chunk
        # (~250 here).
        before = get_chunks_streams()
        self.whorl("check", "--repo", self.url, "--read-data", expect=0)
        streams = get_chunks_streams() - before
        with_subdirs = len(os.path.abspath(src).split("/")) + 40
        self.assertLessEqual(streams, (with_subdirs + 2) * chunk_stores, streams)

    def test_nights_of_tree_deltas_restore_exactly_reading_bases_a_level_at_a_time(self):
        # 20 directories of 40 files; each night changes one file in each, so each directory's
        # tree is stored as a delta against the first night's. The third night's backup reads
        # the second's deltas (and their bases) as its parent; each restore reads a level's
        # deltas, then their bases, together.
        self.whorl("init", "--repo", self.url, expect=0)
        src = mkdir(self.path("nights"))
        for i in range(20):
            d = mkdir(os.path.join(src, f"d{i:02}"))
            for j in range(40):  # the same bytes: the restores read trees, and two chunks
                w.write_file(os.path.join(d, f"a-file-with-a-long-name-{j:02}"), b"same")
        snaps = []
        for night in range(3):
            if night > 0:
                for i in range(20):
                    w.write_file(os.path.join(src, f"d{i:02}", f"a-file-with-a-long-name-{night:02}"),
                                 b"night")
            _, s = self.backup(self.url, src)
            if night > 0:
                # 20 deltas of a node each (whole, the 20 trees are ~55 KB of names, ids and
                # times), src's tree of 20 directories, the trees above it, one chunk.
                self.assertLess(s["data_added"], 12000, s)
            copy = self.path(f"copy{night}")
            shutil.copytree(src, copy, symlinks=True)
            snaps.append((s["snapshot_id"], copy))
        for night, (snap, copy) in enumerate(snaps):
            target = self.path(f"t{night}")
            before = self.get_chunks_streams()
            self.whorl("restore", "--repo", self.url, snap, "--target", target, expect=0)
            streams = self.get_chunks_streams() - before
            self.assert_trees_equal(copy, w.restored_path(target, src), check_owner=False)
            # The root and the directories down to src, src's level, the deltas' level, then
            # their bases: a round per level (and a few for the files' two chunks, more when
            # the read-ahead races them, as under ASan: 4-9 here, 15 there, 24 once on a slow VM), where a read of
            # each base on its own would add 20.
            levels = len(os.path.abspath(src).split("/")) + 3
            self.assertLessEqual(streams, levels * len(self.cluster.map["chunkstores"]) + 10,
                                 streams)
        before = self.get_chunks_streams()
        self.whorl("check", "--repo", self.url, "--read-data", expect=0)
        streams = self.get_chunks_streams() - before
        # Three snapshots walked, then every chunk read by slices: each directory's subtrees,
        # then their deltas' bases, announced together (11 streams here); a base read on its
        # own per delta made it 51.
        self.assertLessEqual(streams, 24, streams)

    def get_chunks_streams(self):
        n = 0
        for node in self.cluster.map["chunkstores"]:
            with open(os.path.join(self.cluster.dir, "logs", node["id"] + ".log")) as f:
                n += sum(1 for line in f if '"method":"GetChunks"' in line)
        return n

    def test_manifest_restore_and_ls_work_remotely(self):
        self.whorl("init", "--repo", self.url, expect=0)
        src = mkdir(self.path("src"))
        data = os.urandom(3 * w.MIB)  # several chunks at the default sizes
        w.write_file(os.path.join(src, "big"), data)
        w.write_file(os.path.join(src, "empty"), b"")
        manifest = self.path("snap.manifest")
        _, s = self.backup(self.url, src, args=("--manifest-out", manifest))
        _, lines = self.ls(self.url, s["snapshot_id"][:12])
        self.assertIn(w.fsb(os.path.join(src, "big")), lines)
        target = self.path("t")
        self.whorl("restore", "--repo", self.url, "--manifest", manifest, "--target", target,
                   expect=0)
        self.assertEqual(w.read_bytes(w.restored_path(target, os.path.join(src, "big"))), data)


class ClusterUpgradeTest(ClusterTestCase):

    def test_a_version_2_cluster_upgraded_on_every_shard_keeps_its_snapshots_and_gets_deltas(self):
        self.whorl("init", "--repo", self.url, "--repository-version", "6", expect=2)
        r = self.whorl("init", "--repo", self.url, "--repository-version", "2", expect=1)
        self.assert_fails(r, 1, "lz4 compression needs repository version 3 (--compression-large, "
                          "lz4 by default); give zstd:N or none for --repository-version 2")
        self.whorl("init", "--repo", self.url, "--repository-version", "2",
                   "--compression-large", "zstd:1", expect=0)
        src = mkdir(self.path("src"))
        for i in range(200):
            w.write_file(os.path.join(src, "a-file-with-a-long-name-%03d" % i), b"%d" % i)
        snaps = []

        def night(name, content):
            w.write_file(os.path.join(src, name), content)
            _, s = self.backup(self.url, src)
            copy = self.path("copy%d" % len(snaps))
            shutil.copytree(src, copy)
            snaps.append((s["snapshot_id"], copy))
            return s["data_added"]

        night("a-file-with-a-long-name-000", b"0")
        # Version 2: the directory's tree is stored whole again (200 names, ids and times).
        self.assertGreater(night("a-file-with-a-long-name-007", b"changed"), 4000)
        r = self.whorl("upgrade", "--repo", self.url, expect=0)
        self.assertEqual(r.stdout, f"upgraded repository at {self.url} from version 2 to version "
                         "5; builds before version 5 no longer open it\n")
        r = self.whorl("upgrade", "--repo", self.url, expect=0)
        self.assertEqual(r.stdout, f"repository at {self.url} is already version 5\n")
        # Version 5 on every shard: a delta of one node, the trees above, the file's chunk.
        self.assertLess(night("a-file-with-a-long-name-008", b"changed"), 2000)
        for i, (snap, copy) in enumerate(snaps):
            target = self.path("t%d" % i)
            self.restore(self.url, snap, target)
            self.assert_trees_equal(copy, w.restored_path(target, src), check_owner=False)
        self.whorl("check", "--repo", self.url, "--read-data", expect=0)
        for node in self.cluster.map["metadata"]:
            with open(os.path.join(self.cluster.dir, "logs", node["id"] + ".log")) as f:
                self.assertIn('"msg":"repository upgraded"', f.read())

    def test_an_uninitialized_cluster_is_refused(self):
        r = self.whorl("upgrade", "--repo", self.url, expect=1)
        self.assert_fails(r, 1, f"{self.url} is not a whorl repository (run whorl init): "
                          "metadata shard meta-")


class ClusterRaceTest(ClusterTestCase):

    def test_agents_racing_on_the_same_new_chunks_all_succeed_with_one_copy(self):
        self.whorl("init", "--repo", self.url, "--chunk-min", str(1 * w.MIB), "--chunk-avg",
                   str(2 * w.MIB), "--chunk-max", str(4 * w.MIB), expect=0)
        src = mkdir(self.path("same"))
        for i in range(60):
            w.write_file(os.path.join(src, f"f{i}"), os.urandom(3000 + i))
        procs = [w.start(["backup", "--repo", self.url, "--json", "--host", f"racer{k}", src])
                 for k in range(4)]
        for argv, proc in procs:
            r = w.finish(argv, proc)
            self.assertEqual(r.code, 0, r.describe())
        st = self.admin_stats()
        self.assertEqual(st["snapshots"], 4, st)
        depth = len([p for p in src.split("/") if p])
        # 60 file chunks, each stored once, plus the trees (root and one per directory level):
        # the same in all four snapshots unless another process touched a directory above
        # `src` meanwhile (then up to one set per snapshot).
        self.assertGreaterEqual(st["unique_chunks"], 60 + depth + 1, st)
        self.assertLessEqual(st["unique_chunks"], 60 + 4 * (depth + 1), st)
        # One copy each: the stores hold exactly what the shards index.
        self.assertEqual(sum(c["chunks"] for c in st["chunk_stores"]), st["unique_chunks"], st)
        self.assertEqual(sum(s["unique_chunks"] for s in st["shards"]), st["unique_chunks"], st)


class ClusterFailureTest(ClusterTestCase):

    def test_uninitialized_cluster_is_not_a_repository(self):
        r = self.whorl("snapshots", "--repo", self.url)
        self.assert_fails(r, 1, "not a whorl repository")

    def test_unreachable_shard_fails_naming_the_node_and_commits_nothing(self):
        self.whorl("init", "--repo", self.url, expect=0)
        src = mkdir(self.path("src"))
        for i in range(30):
            w.write_file(os.path.join(src, f"f{i}"), os.urandom(2000))
        victim = self.cluster.map["metadata"][-1]["id"]  # not the bootstrap node
        self.cluster.signal(victim, signal.SIGKILL)
        time.sleep(0.2)
        r = self.whorl("backup", "--repo", self.url, src, timeout=180)
        self.assert_fails(r, 1, victim)
        # Nothing committed: the snapshots that the live shards hold are none (listing needs
        # every shard, so ask admin-free: restart is not needed to see the failure itself).
        self.assertNotIn("snapshot", r.stdout.lower())

    def test_stale_epoch_client_recovers(self):
        self.whorl("init", "--repo", self.url, expect=0)
        src = mkdir(self.path("src"))
        for i in range(20):
            w.write_file(os.path.join(src, f"f{i}"), os.urandom(3000))
        m = dict(self.cluster.map)
        m["epoch"] = m["epoch"] + 1
        tmp = self.cluster.map_path() + ".new"
        with open(tmp, "w") as f:
            json.dump(m, f)
        os.replace(tmp, self.cluster.map_path())
        # Every node but the bootstrap one (the URL's) takes the new epoch: the agent gets the
        # old map from the bootstrap node, is refused by the others, refetches and goes on.
        bootstrap = self.url[len("whorl://"):]
        for n in m["metadata"] + m["chunkstores"]:
            if n["address"] != bootstrap:
                self.cluster.signal(n["id"], signal.SIGHUP)
        time.sleep(0.5)
        _, s = self.backup(self.url, src)
        self.assertEqual(s["files_new"], 20, s)
        for n in m["metadata"]:
            if n["address"] == bootstrap:
                self.cluster.signal(n["id"], signal.SIGHUP)
        time.sleep(0.5)
        target = self.path("t")
        self.whorl("restore", "--repo", self.url, "latest", "--target", target, expect=0)
        self.assert_trees_equal(src, w.restored_path(target, src))
        self.assertEqual(self.admin_stats()["epoch"], m["epoch"])



class ClusterRepairTest(ClusterTestCase):

    def test_repair_forgets_a_damaged_chunk_on_its_node_and_the_next_backup_heals_it(self):
        # Uncompressed chunks of at least 2 MiB: each 1 MiB file is one chunk, stored whole (not
        # bundled), whose fingerprint is the file's SHA-256.
        self.whorl("init", "--repo", self.url, "--compression", "none", "--chunk-min",
                   str(2 * w.MIB), "--chunk-avg", str(4 * w.MIB), "--chunk-max", str(8 * w.MIB),
                   expect=0)
        src = mkdir(self.path("src"))
        a_data, b_data = os.urandom(w.MIB), os.urandom(w.MIB)
        a = w.write_file(os.path.join(src, "A"), a_data)
        a_copy = w.write_file(os.path.join(src, "A-copy"), a_data)
        b = w.write_file(os.path.join(src, "B"), b_data)
        fp_a = hashlib.sha256(a_data).hexdigest()
        _, s1 = self.backup(self.url, src)
        _, s2 = self.backup(self.url, src)
        chunks_before = self.stats(self.url)["unique_chunks"]

        # A byte of A's record flipped on the disk of the node that holds it.
        run = a_data[500_000:500_064]
        hits = []
        for pack in glob.glob(os.path.join(self.cluster.dir, "data", "chunk-*", "packs", "*.pack")):
            at = w.read_bytes(pack).find(run)
            if at >= 0:
                hits.append((pack, at))
        self.assertEqual(len(hits), 1, hits)
        pack, at = hits[0]
        with open(pack, "r+b") as f:
            f.seek(at + 32)
            byte = f.read(1)
            f.seek(at + 32)
            f.write(bytes([byte[0] ^ 0x01]))

        r = self.whorl("repair", "--repo", self.url, expect=0)
        self.assertIn("nothing to repair", r.stdout, r.describe())  # packs only: not seen
        r = self.whorl("repair", "--repo", self.url, "--read-data", expect=0)
        self.assertIn(f"found: chunk {fp_a} is damaged", r.stdout, r.describe())
        self.assertIn("forgot 1 chunk that could not be read", r.stdout, r.describe())
        self.assertNotIn("kept:", r.stdout, r.describe())
        self.assertEqual(self.stats(self.url)["unique_chunks"], chunks_before - 1)
        node = os.path.basename(os.path.dirname(os.path.dirname(pack)))
        with open(os.path.join(self.cluster.dir, "logs", node + ".log")) as f:
            self.assertIn("unreadable chunks forgotten by a repair", f.read())
        # Forgotten, not stored again yet: check names it; restore names the files.
        r = self.whorl("check", "--repo", self.url, expect=1)
        self.assertIn(f"chunk {fp_a} is not in the index", r.stdout, r.describe())
        r = self.whorl("restore", "--repo", self.url, s2["snapshot_id"], "--target",
                       self.path("broken"))
        self.assert_fails(r, 1, w.fss(a))
        self.assertEqual(w.read_bytes(w.restored_path(self.path("broken"), b)), b_data)

        # The next backup reads every file (its parent is older than the repair: the shards'
        # repair generations went up) and stores A's chunk again, once.
        _, healing = self.backup(self.url, src)
        self.assertEqual(healing["files_new"], 3, healing)
        self.assertGreaterEqual(healing["data_added"], w.MIB, healing)
        self.assertLess(healing["data_added"], w.MIB + 64 * 1024, healing)
        _, after = self.backup(self.url, src)
        self.assertEqual(after["files_unmodified"], 3, after)
        r = self.whorl("check", "--repo", self.url, "--read-data", expect=0)
        self.assertIn("no errors were found", r.stdout, r.describe())
        for snap in (s1, s2):  # the same fingerprint: the older snapshots are whole again
            target = self.path("t-" + snap["snapshot_id"][:8])
            self.restore(self.url, snap["snapshot_id"], target)
            for f, data in ((a, a_data), (a_copy, a_data), (b, b_data)):
                self.assertEqual(w.read_bytes(w.restored_path(target, f)), data, f)
        r = self.whorl("repair", "--repo", self.url, "--read-data", expect=0)
        self.assertIn("nothing to repair", r.stdout, r.describe())


class ClusterPackDamageTest(w.WhorlTestCase):

    def test_plain_check_reports_a_chunk_nodes_missing_packs(self):
        # One shard and one chunk store: every chunk, trees too, is in chunk-1's packs (a version
        # 1 pack made at start, empty, and the version 2 pack the first bundle started).
        cluster_dir = self.path("cluster")
        cluster = Cluster(self, cluster_dir, meta=1, chunk=1)
        self.addCleanup(cluster.stop)
        url = cluster.url
        self.whorl("init", "--repo", url, expect=0)
        src = mkdir(self.path("src"))
        for i in range(5):
            w.write_file(os.path.join(src, f"f{i}"), os.urandom(3000))
        _, s = self.backup(url, src)
        chunks = self.whorl("stats", "--repo", url, "--json", expect=0)
        lost = json.loads(chunks.stdout)["unique_chunks"]
        r = self.whorl("check", "--repo", url, expect=0)
        self.assertEqual(r.stdout, "no errors were found\n", r.describe())

        cluster.stop()
        packs = sorted(glob.glob(os.path.join(cluster_dir, "data", "chunk-1", "packs", "*.pack")))
        held = [p for p in packs if os.path.getsize(p) > 16]  # more than a pack header
        self.assertGreaterEqual(len(held), 1, packs)
        for pack in packs:
            os.remove(pack)
        cluster = Cluster(self, cluster_dir, meta=1, chunk=1)  # the same nodes again
        node = cluster.map["chunkstores"][0]
        for args in ((), ("--read-data",)):
            r = self.whorl("check", "--repo", url, *args, expect=1)
            lines = r.stdout.splitlines()
            pack_lines = [ln for ln in lines if " is damaged: " in ln and "pack 0" in ln
                          and not ln.startswith("error: chunk ")]
            self.assertEqual(len(pack_lines), len(held), r.describe())
            counted = 0
            for pack, ln in zip(held, pack_lines):
                want = (f"error: chunk-store node chunk-1 at {node['address']}: pack "
                        f"{os.path.basename(pack)[:8]} is damaged: {pack}: pack file missing (")
                self.assertTrue(ln.startswith(want), (ln, want))
                counted += int(re.search(r"\((\d+) chunks? lost\)$", ln).group(1))
            self.assertEqual(counted, lost, r.describe())
            self.assertEqual(len([ln for ln in lines if ln.startswith("error: chunk ")]), lost,
                             r.describe())
            self.assertIn(f"  used by snapshot {s['snapshot_id'][:8]} file /", lines,
                          r.describe())
            # The lost chunks, the packs, and the root tree that cannot be walked.
            self.assertEqual(lines[-1], f"{lost + len(held) + 1} errors found", r.describe())
        r = self.whorl("restore", "--repo", url, "latest", "--target", self.path("t"))
        self.assert_fails(r, 1, f"pack {os.path.basename(held[-1])[:8]}")

if __name__ == "__main__":
    w.main()
