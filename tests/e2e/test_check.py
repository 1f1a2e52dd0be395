"""check and check --read-data; a flipped byte in a pack: check names the chunk, snapshots and
files, restore names the damaged file and restores the rest. repair: forgets what cannot be read,
and the next backup reads every file and stores it again, which heals the older snapshots too
(a lost pack: test_check_packs.py)."""

import hashlib
import os

import whorl_e2e as w

# Chunks of at least 2 MiB: each 1 MiB file below is exactly one chunk, whose fingerprint is
# the SHA-256 of the whole file.
ONE_CHUNK_PER_FILE = ("--compression", "none", "--chunk-min", str(2 * w.MIB),
                      "--chunk-avg", str(4 * w.MIB), "--chunk-max", str(8 * w.MIB))


def pack_files(repo):
    out = []
    for dirpath, _, filenames in os.walk(repo):
        out += [os.path.join(dirpath, n) for n in filenames if n.endswith(".pack")]
    return sorted(out)


class CheckCleanTest(w.WhorlTestCase):

    def test_check_of_a_healthy_repository_finds_no_errors(self):
        repo = self.init_repo()
        r = self.whorl("check", "--repo", repo, expect=0)
        self.assertIn("no errors were found", r.stdout, r.describe())
        src = w.makedirs(self.path("src"))
        w.write_file(os.path.join(src, b"a"), os.urandom(300_000))
        w.write_file(os.path.join(src, b"b"), b"b" * 100_000)
        self.backup(repo, src)
        self.backup(repo, src, args=("--host", "other"))
        for args in ((), ("--read-data",)):
            r = self.whorl("check", "--repo", repo, *args, expect=0)
            self.assertIn("no errors were found", r.stdout, r.describe())


class CorruptPackTest(w.WhorlTestCase):

    def setUp(self):
        super().setUp()
        self.repo = self.init_repo("repo", *ONE_CHUNK_PER_FILE)
        self.src = self.path("src")
        w.makedirs(self.src)
        self.a_data = os.urandom(w.MIB)
        self.b_data = os.urandom(w.MIB)
        self.a = w.write_file(os.path.join(self.src, "A"), self.a_data)
        self.a_copy = w.write_file(os.path.join(self.src, "A-copy"), self.a_data)
        self.b = w.write_file(os.path.join(self.src, "B"), self.b_data)
        self.fp_a = hashlib.sha256(self.a_data).hexdigest()
        _, s1 = self.backup(self.repo, self.src)
        _, s2 = self.backup(self.repo, self.src)
        _, s3 = self.backup(self.repo, self.b)  # does not use A's chunk
        self.s1, self.s2, self.s3 = s1["snapshot_id"], s2["snapshot_id"], s3["snapshot_id"]
        self.flip_byte_of_a()

    def flip_byte_of_a(self):
        packs = pack_files(self.repo)
        self.assertTrue(packs, f"no *.pack file under {self.repo}")
        run = self.a_data[500_000:500_064]
        hits = []
        for p in packs:
            data = w.read_bytes(p)
            at = data.find(run)
            while at >= 0:
                hits.append((p, at))
                at = data.find(run, at + 1)
        self.assertEqual(len(hits), 1, f"A's bytes should be stored once uncompressed: {hits}")
        path, at = hits[0]
        with open(path, "r+b") as f:
            f.seek(at + 32)
            byte = f.read(1)
            f.seek(at + 32)
            f.write(bytes([byte[0] ^ 0x01]))

    def test_check_read_data_names_damaged_chunk_snapshots_and_files(self):
        r = self.whorl("check", "--repo", self.repo, "--read-data")
        self.assertEqual(r.code, 1, r.describe())
        text = r.stdout + r.stderr
        self.assertIn(self.fp_a, text, f"damaged chunk not named{r.describe()}")
        self.assertIn(self.s1[:8], text, f"snapshot 1 not named{r.describe()}")
        self.assertIn(self.s2[:8], text, f"snapshot 2 not named{r.describe()}")
        self.assertNotIn(self.s3[:8], text, f"snapshot 3 does not use the chunk{r.describe()}")
        self.assertIn(w.fss(self.a), text, f"file A not named{r.describe()}")
        self.assertIn(w.fss(self.a_copy), text, f"file A-copy not named{r.describe()}")
        self.assertNotIn(w.fss(self.b), text, f"file B is intact{r.describe()}")
        self.assertNotIn(hashlib.sha256(self.b_data).hexdigest(), text, r.describe())
        self.assertNotIn("no errors were found", text, r.describe())

    def test_restore_of_flipped_byte_names_the_file(self):
        target = self.path("t")
        r = self.restore(self.repo, self.s2, target, expect=None)
        self.assertEqual(r.code, 1, r.describe())
        self.assertIn(w.fss(self.a), r.stderr, r.describe())
        self.assertIn(w.fss(self.a_copy), r.stderr, r.describe())
        self.assertTrue(r.stderr.startswith("whorl: "), r.describe())
        self.assertEqual(w.read_bytes(w.restored_path(target, self.b)), self.b_data)
        damaged = bytearray(self.a_data)
        damaged[500_032] ^= 0x01
        for f in (self.a, self.a_copy):
            p = w.restored_path(target, f)
            if os.path.lexists(p):
                self.assertNotEqual(w.read_bytes(p), bytes(damaged),
                                    f"{p!r}: damaged bytes written as if good{r.describe()}")

    def test_restore_of_snapshot_without_damaged_chunk_succeeds(self):
        target = self.path("t")
        self.restore(self.repo, self.s3, target)
        self.assertEqual(w.read_bytes(w.restored_path(target, self.b)), self.b_data)

    def test_repair_forgets_the_damaged_chunk_and_the_next_backup_heals_the_snapshots(self):
        # Without --read-data only packs are checked: a byte flipped inside a record is not seen.
        r = self.whorl("repair", "--repo", self.repo, expect=0)
        self.assertIn("nothing to repair", r.stdout, r.describe())
        self.assertIn("without --read-data", r.stdout, r.describe())
        r = self.whorl("repair", "--repo", self.repo, "--read-data", expect=0)
        self.assertIn(f"found: chunk {self.fp_a} is damaged", r.stdout, r.describe())
        self.assertIn("forgot 1 chunk that could not be read", r.stdout, r.describe())
        self.assertIn("the next backup of each host's paths reads every file", r.stdout,
                      r.describe())
        # Forgotten and not stored again yet: check names it as gone from the index and the store.
        r = self.whorl("check", "--repo", self.repo, expect=1)
        self.assertIn(f"chunk {self.fp_a} is not in the index", r.stdout, r.describe())
        self.assertIn("missing from the chunk store", r.stdout, r.describe())
        # The next backup reads every file, its parent being older than the repair, and stores
        # A's chunk again: 1 MiB and trees...
        _, healing = self.backup(self.repo, self.src)
        self.assertEqual(healing["files_new"], 3, healing)
        self.assertGreaterEqual(healing["data_added"], w.MIB, healing)
        self.assertLess(healing["data_added"], w.MIB + 64 * 1024, healing)
        # ...once: the one after it reads nothing, unless forced.
        _, after = self.backup(self.repo, self.src)
        self.assertEqual(after["files_unmodified"], 3, after)
        _, forced = self.backup(self.repo, self.src, args=("--force",))
        self.assertEqual(forced["files_new"], 3, forced)
        self.assertLess(forced["data_added"], 64 * 1024, forced)
        r = self.whorl("check", "--repo", self.repo, "--read-data", expect=0)
        self.assertIn("no errors were found", r.stdout, r.describe())
        # The older snapshots use the same fingerprint: they are whole again.
        for snap in (self.s1, self.s2):
            target = self.path("t-" + snap[:8])
            self.restore(self.repo, snap, target)
            for f, data in ((self.a, self.a_data), (self.a_copy, self.a_data), (self.b, self.b_data)):
                self.assertEqual(w.read_bytes(w.restored_path(target, f)), data, f)
        r = self.whorl("repair", "--repo", self.repo, "--read-data", expect=0)
        self.assertIn("nothing to repair", r.stdout, r.describe())


if __name__ == "__main__":
    w.main()
