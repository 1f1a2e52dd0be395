"""Damage to an embedded repository's index, catalog and config files (not the packs: those are
agent/corruption_test.cc). Each RocksDB file that holds data or says where it is (CURRENT,
MANIFEST-*, *.sst) of the metadata store (index + catalog, REPO/meta) and the chunk locator
(REPO/chunks/locator), and REPO/config, is truncated to half, overwritten with garbage of the
same size, or emptied; `snapshots`, `check --read-data` and `restore` must then each exit 1 with
one clear `whorl: ` line naming the damaged store, never crash, and restore must write nothing.

Not covered here, a known gap: damage to the newest RocksDB write-ahead log (*.log) is not
detected; RocksDB's default recovery treats it like a write torn by a crash.
"""

import os
import random
import shutil

import whorl_e2e as w


class IndexAndCatalogDamageTest(w.WhorlTestCase):

    def setUp(self):
        super().setUp()
        self.src = self.path("src")
        w.makedirs(os.path.join(self.src, "sub"))
        rng = random.Random(5)
        w.write_file(os.path.join(self.src, "a"), rng.randbytes(200_000))
        w.write_file(os.path.join(self.src, "sub", "b"), rng.randbytes(50_000))
        self.pristine = self.init_repo("pristine")
        self.backup(self.pristine, self.src)
        w.write_file(os.path.join(self.src, "c"), rng.randbytes(30_000))
        self.backup(self.pristine, self.src)
        # Each open replays the write-ahead log into a table file: after this, both stores
        # hold *.sst files.
        self.assertEqual(len(self.snapshots(self.pristine)), 2)
        self.rng = random.Random(11)

    def data_files(self, store):
        d = os.path.join(self.pristine, store)
        names = sorted(n for n in os.listdir(d)
                       if n == "CURRENT" or n.startswith("MANIFEST-") or n.endswith(".sst"))
        self.assertTrue(any(n.endswith(".sst") for n in names), f"no table file in {d}: {names}")
        return [os.path.join(store, n) for n in names]

    def damaged_copy(self, rel, how):
        repo = self.path("copy")
        w.rmtree_force(repo)
        shutil.copytree(self.pristine, repo)
        f = os.path.join(repo, rel)
        data = w.read_bytes(f)
        if how == "truncated":
            data = data[:len(data) // 2]
        elif how == "garbage":
            data = self.rng.randbytes(len(data))
        else:
            data = b""
        with open(f, "wb") as out:
            out.write(data)
        return repo

    def assert_clear_failure(self, repo, needle, what, restore=True):
        target = self.path("target")
        w.rmtree_force(target)
        os.makedirs(target)
        commands = [["snapshots", "--repo", repo], ["check", "--repo", repo, "--read-data"]]
        if restore:
            commands.append(["restore", "--repo", repo, "latest", "--target", target])
        for args in commands:
            r = self.whorl(*args)
            self.assertEqual(r.code, 1, f"{what}: {args[0]}{r.describe()}")  # not 0, no signal
            lines = r.stderr.splitlines()
            self.assertEqual(len(lines), 1, f"{what}: {args[0]}: one error line{r.describe()}")
            self.assertTrue(lines[0].startswith("whorl: " + needle),
                            f"{what}: {args[0]}: want 'whorl: {needle}...'{r.describe()}")
            self.assertNotIn("used by", r.stdout, f"{what}: {args[0]}{r.describe()}")
        self.assertEqual(os.listdir(target), [], f"{what}: restore wrote into the target")

    def test_damaged_metadata_store_files_fail_at_open(self):
        cases = 0
        for rel in self.data_files("meta"):
            for how in ("truncated", "garbage", "emptied"):
                with self.subTest(file=rel, damage=how):
                    repo = self.damaged_copy(rel, how)
                    self.assert_clear_failure(
                        repo, f"metadata {repo}/meta: Corruption: ", f"{rel} {how}",
                        restore=how == "garbage")
                    cases += 1
        self.assertGreaterEqual(cases, 9)

    def test_damaged_chunk_locator_files_fail_at_open(self):
        cases = 0
        for rel in self.data_files(os.path.join("chunks", "locator")):
            for how in ("truncated", "garbage", "emptied"):
                with self.subTest(file=rel, damage=how):
                    repo = self.damaged_copy(rel, how)
                    self.assert_clear_failure(
                        repo, f"locator: open {repo}/chunks: Corruption: ", f"{rel} {how}",
                        restore=how == "garbage")
                    cases += 1
        self.assertGreaterEqual(cases, 9)

    def test_a_flipped_byte_inside_a_wal_fails_at_open(self):
        # The replay stops at damage before a WAL's last record with an error instead of opening
        # without the acknowledged writes after it (RocksDB's default, kPointInTimeRecovery).
        # A backup leaves its writes in the WALs (each open replays them into table files): the
        # index's registrations and the snapshot, the locator's data and tree batches.
        cases = 0
        w.write_file(os.path.join(self.src, "d"), self.rng.randbytes(40_000))
        for store, needle in (("meta", "metadata {repo}/meta: Corruption: "),
                              (os.path.join("chunks", "locator"),
                               "locator: open {repo}/chunks: Corruption: ")):
            with self.subTest(store=store):
                repo = self.path("copy")
                w.rmtree_force(repo)
                shutil.copytree(self.pristine, repo)
                self.backup(repo, self.src)
                d = os.path.join(repo, store)
                wals = [n for n in sorted(os.listdir(d))
                        if n.endswith(".log") and os.path.getsize(os.path.join(d, n)) > 0]
                self.assertEqual(len(wals), 1, f"{d}: {sorted(os.listdir(d))}")
                f = os.path.join(d, wals[0])
                with open(f, "r+b") as out:
                    out.seek(12)  # inside the first record, which others follow
                    b = out.read(1)
                    out.seek(12)
                    out.write(bytes([b[0] ^ 0x20]))
                self.assert_clear_failure(repo, needle.format(repo=repo), f"{store} WAL flipped")
                cases += 1
        self.assertEqual(cases, 2)

    def test_damaged_or_missing_config_fails_at_open(self):
        for how in ("truncated", "garbage", "emptied"):
            with self.subTest(damage=how):
                repo = self.damaged_copy("config", how)
                self.assert_clear_failure(repo, f"{repo}/config: ", f"config {how}")
        repo = self.damaged_copy("config", "emptied")
        os.remove(os.path.join(repo, "config"))
        self.assert_clear_failure(repo, f"{repo} is not a whorl repository", "config removed")

    def test_pristine_copy_is_sound(self):
        """The copies start sound: the failures above come from the damage alone."""
        repo = self.path("copy")
        shutil.copytree(self.pristine, repo)
        r = self.whorl("check", "--repo", repo, "--read-data", expect=0)
        self.assertEqual(r.stdout, "no errors were found\n")
        target = self.path("target")
        self.restore(repo, "latest", target, expect=0)
        self.assertEqual(w.read_bytes(w.restored_path(target, os.path.join(self.src, "c"))),
                         w.read_bytes(os.path.join(self.src, "c")))


if __name__ == "__main__":
    w.main()
