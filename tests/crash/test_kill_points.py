"""Whitebox crash test: every named kill point (common/kill_points.md) is hit at least once by a
real process, which must die of SIGKILL right there (exit status -9 and the point's message, so
the test cannot pass without the kill). After a restart, every acknowledged snapshot restores
byte-exact, `whorl check --read-data` is clean and the next backup completes.

Embedded repository points kill the `whorl` agent itself; daemon points kill the one
whorl-chunkd or whorl-metad of a deploy/local-cluster.sh cluster (1 + 1 nodes, so the point is
reached deterministically) while a real agent backs up into it.
"""

import os
import shutil
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import crashlib as c  # noqa: E402

# Points reached by a backup that stores new chunks, in order along the put and commit path.
STORE_POINTS = [
    "pack.append.before", "pack.append.mid_record", "pack.append.after",
    "pack.fdatasync.before", "pack.fdatasync.after", "locator.put.before", "locator.put.after",
]
META_POINTS = ["meta.index_put.before", "meta.index_put.after", "meta.catalog_commit.before",
               "meta.catalog_commit.after"]
# Reached when a store is created (an empty directory) and when a pack is rotated.
CREATE_POINTS = ["pack.create.before_header", "pack.dir_fsync.before", "pack.dir_fsync.after"]
# Reached by recovery at open, after a crash that left (torn, unindexed) tail records: the kill
# that prepares the state, then the point.
RECOVERY_POINTS = [("pack.append.mid_record", "pack.recover.truncated"),
                   ("pack.fdatasync.after", "locator.reindex.before")]
# Points after which the snapshot is committed though never acknowledged.
COMMITTED_POINTS = {"meta.catalog_commit.after", "agent.commit.after"}

ALL_POINTS = set(STORE_POINTS + META_POINTS + CREATE_POINTS + [p for _, p in RECOVERY_POINTS] +
                 ["embedded.register.before", "agent.commit.before", "locator.sync.before",
                  "agent.commit.after",
                  "repair.forget.between",
                  "chunkd.register.before", "chunkd.register.after"])


def kill_env(point, skip=0):
    env = {"WHORL_KILL_POINT": point}
    if skip:
        env["WHORL_KILL_POINT_SKIP"] = str(skip)
    return env


class KillPointCase(unittest.TestCase):
    hit = set()  # points proven hit, over all tests

    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="whorl-kill-", dir=c.work_base())
        self.addCleanup(shutil.rmtree, self.tmp, True)
        self.env = {"XDG_CACHE_HOME": os.path.join(self.tmp, "cache")}
        self.src = os.path.join(self.tmp, "src")
        self.tree = c.GrowingTree(self.src, seed=hash(self.id()) & 0xffff)
        self.ledger = c.Ledger()
        self.scratch = os.path.join(self.tmp, "scratch")
        os.makedirs(self.scratch)

    def tearDown(self):
        if self.ledger.acked and getattr(self, "repo", None):
            self.assertEqual(self.ledger.verify(self.repo, self.scratch, env=self.env), [])

    def assert_killed_at(self, point, code, stderr):
        self.assertEqual(code, -9, f"{point}: not killed by SIGKILL (exit {code})\n{stderr[-2000:]}")
        self.assertIn(c.kill_message(point), stderr, f"{point}: died elsewhere")
        KillPointCase.hit.add(point)

    def backup(self, env=None):
        state = self.tree.grow()
        env = dict(self.env, **(env or {}))
        return state, c.whorl(["backup", "--repo", self.repo, "--json", self.src], env=env)

    def ack(self, run, state):
        snap = c.snapshot_id_of(run)
        self.assertIsNotNone(snap, run.describe())
        self.ledger.ack(snap, self.src, state)
        return snap

    def assert_clean_restart(self, what, attempted_state=None, committed=False):
        """Every acknowledged snapshot restores exactly, check is clean, a backup completes."""
        listed = c.listed_snapshots(self.repo, self.env)
        self.assertTrue(set(self.ledger.acked) <= listed, f"{what}: acknowledged snapshot lost")
        unacked = listed - set(self.ledger.acked)
        if committed:
            self.assertEqual(len(unacked), 1, f"{what}: the commit should be there: {unacked}")
        for snap in unacked:  # committed but never acknowledged: must be whole too
            self.assertEqual(c.restore_matches(self.repo, snap, self.src, attempted_state,
                                               self.scratch, self.env), [], what)
            self.ledger.ack(snap, self.src, attempted_state)
        # Cheap per kill: check --read-data reads every chunk of every snapshot; restores of the
        # oldest and of those not yet restored. tearDown restores every one of them again.
        ids = (set(self.ledger.acked) - self.ledger.verified) | set(list(self.ledger.acked)[:1])
        self.assertEqual(self.ledger.verify(self.repo, self.scratch, ids, self.env), [], what)
        self.assertEqual(c.check_clean(self.repo, self.env), [], what)
        state, run = self.backup()
        self.assertEqual(run.code, 0, f"{what}: next backup\n{run.describe()}")
        snap = self.ack(run, state)
        self.assertEqual(self.ledger.verify(self.repo, self.scratch, [snap], self.env), [], what)

    def repair_through_kill(self, packs_dir):
        """A byte flipped in the first record's data (the first backup's bundle of file chunks,
        in the first pack of PACKS_DIR that holds a record: init may leave an empty one before
        it); `repair --read-data` killed between forgetting the chunks in the store and in the
        index; a second repair finishes, and the next backup heals every snapshot."""
        point = "repair.forget.between"
        pack = next(os.path.join(packs_dir, n) for n in sorted(os.listdir(packs_dir))
                    if os.path.getsize(os.path.join(packs_dir, n)) > 16 + 52 + 8)
        with open(pack, "r+b") as f:
            f.seek(16 + 52 + 8)
            byte = f.read(1)
            f.seek(16 + 52 + 8)
            f.write(bytes([byte[0] ^ 0x01]))
        r = c.whorl(["repair", "--repo", self.repo, "--read-data"],
                    env=dict(self.env, **kill_env(point)))
        self.assert_killed_at(point, r.code, r.err)
        # Unlocated but still indexed: check says so, and a second repair finishes the job.
        r = c.whorl(["check", "--repo", self.repo], env=self.env)
        self.assertEqual(r.code, 1, r.describe())
        self.assertIn("missing from the chunk store", r.out, r.describe())
        r = c.whorl(["repair", "--repo", self.repo, "--read-data"], env=self.env)
        self.assertEqual(r.code, 0, r.describe())
        self.assertIn("forgot ", r.out, r.describe())
        # The next backup of the unchanged tree reads every file and stores the chunks again:
        # the first snapshot (tearDown restores every acknowledged one) is whole again.
        state = c.tree_state(self.src)
        run = c.whorl(["backup", "--repo", self.repo, "--json", self.src], env=self.env)
        self.assertEqual(run.code, 0, run.describe())
        self.ack(run, state)
        self.assertEqual(c.check_clean(self.repo, self.env), [])


class EmbeddedKillPointTest(KillPointCase):
    """The agent with an embedded repository: it runs every library point itself."""

    def setUp(self):
        super().setUp()
        self.repo = os.path.join(self.tmp, "repo")
        r = c.whorl(["init", "--repo", self.repo], env=self.env)
        self.assertEqual(r.code, 0, r.describe())
        state, run = self.backup()
        self.assertEqual(run.code, 0, run.describe())
        self.ack(run, state)

    def test_backup_path_points(self):
        for point in STORE_POINTS + ["embedded.register.before"] + META_POINTS + [
                "agent.commit.before", "locator.sync.before", "agent.commit.after"]:
            with self.subTest(point=point):
                state, run = self.backup(kill_env(point))
                self.assert_killed_at(point, run.code, run.err)
                self.assertIsNone(c.snapshot_id_of(run))
                self.assert_clean_restart(point, state, committed=point in COMMITTED_POINTS)

    def test_recovery_points(self):
        for first, point in RECOVERY_POINTS:
            with self.subTest(point=point):
                state, run = self.backup(kill_env(first))
                self.assert_killed_at(first, run.code, run.err)
                # The restart itself dies in recovery; the one after must finish it.
                r = c.whorl(["snapshots", "--repo", self.repo], env=dict(self.env,
                                                                         **kill_env(point)))
                self.assert_killed_at(point, r.code, r.err)
                self.assert_clean_restart(point, state)

    def test_pack_rotation_points(self):
        # A batch that fills the 64 MiB pack rotates to a new one mid-batch.
        for point in ["pack.create.before_header"]:
            with self.subTest(point=point):
                state = self.tree.grow(big=65 << 20)
                run = c.whorl(["backup", "--repo", self.repo, "--json", self.src],
                              env=dict(self.env, **kill_env(point)))
                self.assert_killed_at(point, run.code, run.err)
                self.assert_clean_restart(point, state)
                packs = sorted(os.listdir(os.path.join(self.repo, "chunks", "packs")))
                self.assertGreaterEqual(len(packs), 2, packs)

    def test_repair_point(self):
        self.repair_through_kill(os.path.join(self.repo, "chunks", "packs"))

    def test_init_points(self):
        for point in CREATE_POINTS:
            with self.subTest(point=point):
                repo = os.path.join(self.tmp, "repo-" + point)
                r = c.whorl(["init", "--repo", repo], env=dict(self.env, **kill_env(point)))
                self.assert_killed_at(point, r.code, r.err)
                r = c.whorl(["init", "--repo", repo], env=self.env)
                self.assertEqual(r.code, 0, r.describe())
                self.repo, self.ledger = repo, c.Ledger()
                self.assert_clean_restart(point)


class ClusterKillPointTest(KillPointCase):
    """whorl-chunkd and whorl-metad killed at their points while a real agent backs up."""

    def setUp(self):
        super().setUp()
        self.cluster = c.Cluster(os.path.join(self.tmp, "cluster"), meta=1, chunk=1)
        self.addCleanup(self.cluster.stop)
        self.repo = self.cluster.url
        r = c.whorl(["init", "--repo", self.repo], env=self.env)
        self.assertEqual(r.code, 0, r.describe())

    def first_backup(self):
        state, run = self.backup()
        self.assertEqual(run.code, 0, run.describe())
        self.ack(run, state)

    def rearm(self, node, point):
        """Restarts NODE with the kill point armed."""
        self.cluster.stop_node(node)
        self.cluster.start_node(node, env=kill_env(point))

    def assert_node_killed_at(self, node, point):
        code = self.cluster.wait_gone(node)
        self.assert_killed_at(point, code, self.cluster.log_tail(node))

    def backup_through_kill(self, node, point):
        """A backup during which NODE dies at POINT; NODE is restarted as soon as it died. The
        backup may still succeed through the agent's retries: then it is acknowledged."""
        self.rearm(node, point)
        state = self.tree.grow()
        argv, proc = c.start_whorl(["backup", "--repo", self.repo, "--json", self.src],
                                   env=self.env)
        self.assert_node_killed_at(node, point)
        self.cluster.start_node(node)
        run = c.finish(argv, proc)
        if c.snapshot_id_of(run) is not None:
            self.ack(run, state)
        else:
            self.assertEqual(run.code, 1, run.describe())
        return state

    def test_repair_point(self):
        # The agent dies between the chunk-store nodes' ForgetChunks and the shards' Unregister.
        self.first_backup()
        self.repair_through_kill(os.path.join(self.cluster.dir, "data", "chunk-1", "packs"))

    def test_chunkd_points(self):
        self.first_backup()
        for point in STORE_POINTS + ["chunkd.register.before", "chunkd.register.after"]:
            with self.subTest(point=point):
                state = self.backup_through_kill("chunk-1", point)
                self.assert_clean_restart(point, state)

    def test_chunkd_recovery_points(self):
        self.first_backup()
        for first, point in RECOVERY_POINTS:
            with self.subTest(point=point):
                # A kill at FIRST leaves a torn or unindexed tail; the restart with POINT armed
                # dies in its recovery, and the one after that must finish it.
                self.rearm("chunk-1", first)
                state, run = self.backup()
                self.assert_node_killed_at("chunk-1", first)
                self.assertIsNone(c.snapshot_id_of(run), run.describe())
                self.cluster.start_node("chunk-1", env=kill_env(point), wait_healthy=False)
                self.assert_node_killed_at("chunk-1", point)
                self.cluster.start_node("chunk-1")
                self.assert_clean_restart(point, state)

    def test_chunkd_create_points(self):
        # An empty store creates its first pack when whorl-chunkd starts.
        for point in CREATE_POINTS:
            with self.subTest(point=point):
                self.cluster.stop_node("chunk-1")
                shutil.rmtree(os.path.join(self.cluster.dir, "data", "chunk-1"))
                self.cluster.start_node("chunk-1", env=kill_env(point), wait_healthy=False)
                self.assert_node_killed_at("chunk-1", point)
                self.cluster.start_node("chunk-1")
                self.first_backup()
                self.assert_clean_restart(point)
                # The next round wipes this store: forget what it held (the metadata shard
                # too, so that its index does not promise chunks the new store lacks).
                self.cluster.stop_node("meta-1")
                shutil.rmtree(os.path.join(self.cluster.dir, "data", "meta-1"))
                self.cluster.start_node("meta-1")
                r = c.whorl(["init", "--repo", self.repo], env=self.env)
                self.assertEqual(r.code, 0, r.describe())
                self.ledger = c.Ledger()
                shutil.rmtree(os.path.join(self.tmp, "cache"), ignore_errors=True)

    def test_metad_points(self):
        self.first_backup()
        for point in META_POINTS:
            with self.subTest(point=point):
                state = self.backup_through_kill("meta-1", point)
                self.assert_clean_restart(point, state)

    def test_agent_points(self):
        self.first_backup()
        for point in ["agent.commit.before", "agent.commit.after"]:
            with self.subTest(point=point):
                state, run = self.backup(kill_env(point))
                self.assert_killed_at(point, run.code, run.err)
                self.assert_clean_restart(point, state, committed=point in COMMITTED_POINTS)


class ZEveryPointHit(unittest.TestCase):
    """Runs last (unittest sorts classes by name): every documented point was proven hit."""

    def test_every_point_was_hit(self):
        if len(KillPointCase.hit) == 0:
            self.skipTest("run with the other tests of this file")
        with open(os.path.join(c.ROOT, "common", "kill_points.md")) as f:
            doc = f.read()
        documented = {line.split("`")[1] for line in doc.splitlines()
                      if line.startswith("| `")}
        self.assertEqual(documented, ALL_POINTS)
        self.assertEqual(ALL_POINTS - KillPointCase.hit, set())


if __name__ == "__main__":
    unittest.main(verbosity=2)
