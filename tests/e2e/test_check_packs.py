"""Damaged and extra pack files in an embedded repository (issue 6): a closed pack deleted, a
closed pack cut to zero length, the newest pack cut in the middle of its last acknowledged
record, and an orphan pack the locator does not know. Each case runs on a fresh copy of one
repository of three packs. Plain `check` (which reads no chunk data) and `check --read-data`
must name the damaged pack, the lost chunks and exactly the files that use them, and exit 1;
`restore` must restore every other file byte-exact, name the lost ones and exit 1; nothing is
ever restored with wrong bytes; the orphan changes nothing. `repair` forgets a cut pack's lost
chunks and the next backup stores them again: the first snapshot then restores whole.

No option sets the pack size of an embedded repository (the chunk store's default, 64 MiB), so
the tree is big enough for three packs: 132 files of 1 MiB, one chunk each.
"""

import hashlib
import json
import os
import random
import shutil
import struct
import tempfile

import whorl_e2e as w

# Chunks of at least 2 MiB, no compression: each 1 MiB file is exactly one chunk, stored as is,
# whose fingerprint is the SHA-256 of the whole file.
ONE_CHUNK_PER_FILE = ("--compression", "none", "--chunk-min", str(2 * w.MIB),
                      "--chunk-avg", str(4 * w.MIB), "--chunk-max", str(8 * w.MIB))
# A pack is closed once it reaches 64 MiB (ChunkStoreOptions::max_pack_bytes): 16 + 64 records
# of 52 + 1 MiB bytes reach it, so packs 1 and 2 take 64 files each and pack 3, the newest, the
# other 4 and every tree.
FILES = 132
RECORD_HEADER = 52
PACK_HEADER = b"WHORLPAK\x01\x00\x00\x00\x00\x00\x00\x00"


def pack_path(repo, pack_id):
    return os.path.join(repo, "chunks", "packs", f"{pack_id:08d}.pack")


def pack_ids(repo):
    names = os.listdir(os.path.join(repo, "chunks", "packs"))
    return sorted(int(n[:8]) for n in names if n.endswith(".pack"))


def pack_records(path):
    """[(offset, length, fingerprint hex)] of every record of the pack at PATH, from the record
    headers (chunk-store/pack_format.md)."""
    out = []
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        if f.read(16) != PACK_HEADER:
            raise AssertionError(f"{path}: not a version 1 pack")
        offset = 16
        while offset < size:
            f.seek(offset)
            header = f.read(RECORD_HEADER)
            magic, stored = header[:4], struct.unpack_from("<I", header, 12)[0]
            if magic != b"WRC1" or offset + RECORD_HEADER + stored > size:
                raise AssertionError(f"{path}: no whole record at offset {offset}")
            out.append((offset, RECORD_HEADER + stored, header[16:48].hex()))
            offset += RECORD_HEADER + stored
    return out


def run_ok(*args):
    r = w.run(list(args), timeout=300)
    if r.code != 0:
        raise AssertionError(f"setup step failed{r.describe()}")
    return r


def snapshot_id(backup_result):
    lines = [ln for ln in backup_result.stdout.splitlines() if ln.strip()]
    return json.loads(lines[-1])["snapshot_id"]


class CheckOutput:
    """`whorl check` stdout taken apart: each `error: ` line with its `  used by` lines."""

    def __init__(self, text):
        self.packs = []    # "pack 00000001 is damaged: ..." lines
        self.chunks = {}   # fingerprint -> why, from "chunk FP is damaged: WHY"
        self.users = {}    # fingerprint -> {(short snapshot id, path)}
        self.others = []   # every other error line
        self.last = None   # the closing line
        current = None
        for line in text.splitlines():
            if line.startswith("error: chunk ") and " is damaged: " in line:
                fp, why = line[len("error: chunk "):].split(" is damaged: ", 1)
                self.chunks[fp] = why
                self.users[fp] = set()
                current = fp
            elif line.startswith("  used by snapshot ") and current is not None:
                snap, path = line[len("  used by snapshot "):].split(" file ", 1)
                self.users[current].add((snap, path))
            elif line.startswith("error: pack "):
                self.packs.append(line[len("error: "):])
                current = None
            elif line.startswith("error: "):
                self.others.append(line[len("error: "):])
                current = None
            else:
                self.last = line
                current = None


class PackDamageTest(w.WhorlTestCase):

    @classmethod
    def setUpClass(cls):
        cls.base = os.path.realpath(tempfile.mkdtemp(prefix="whorl-e2e-packs-"))
        try:
            cls.build_pristine()
        except BaseException:
            w.rmtree_force(cls.base)
            raise

    @classmethod
    def tearDownClass(cls):
        w.rmtree_force(cls.base)

    @classmethod
    def build_pristine(cls):
        rng = random.Random(6)
        src = w.makedirs(os.path.join(cls.base, "src"))
        cls.src_files = {}  # path (str) -> SHA-256 hex, which is also its chunk's fingerprint
        for i in range(FILES):
            path = os.path.join(w.fss(src), f"f{i:03d}")
            data = rng.randbytes(w.MIB)
            w.write_file(path, data)
            cls.src_files[path] = hashlib.sha256(data).hexdigest()
        cls.extra = os.path.join(cls.base, "late", "extra")
        w.makedirs(os.path.dirname(cls.extra))
        extra_data = rng.randbytes(100 * w.KIB)
        w.write_file(cls.extra, extra_data)
        cls.extra_fp = hashlib.sha256(extra_data).hexdigest()

        cls.pristine = os.path.join(cls.base, "pristine")
        run_ok("init", "--repo", cls.pristine, *ONE_CHUNK_PER_FILE)
        # A version 1 repository: no bundles, so every chunk and every tree is a record of its own
        # in a version 1 pack (the layout the cases rely on; bundles have their own cases in
        # agent/corruption_test.cc).
        config_path = os.path.join(cls.pristine, "config")
        with open(config_path) as f:
            config = json.load(f)
        config["version"] = 1
        with open(config_path, "w") as f:
            json.dump(config, f)
        cls.s1 = snapshot_id(run_ok("backup", "--repo", cls.pristine, "--json", w.fss(src)))
        s1_end = os.path.getsize(pack_path(cls.pristine, 3))
        cls.s2 = snapshot_id(run_ok("backup", "--repo", cls.pristine, "--json",
                                    os.path.dirname(cls.extra)))

        # Where every chunk went; the layout the cases rely on.
        if pack_ids(cls.pristine) != [1, 2, 3]:
            raise AssertionError(f"want packs 1, 2, 3: {pack_ids(cls.pristine)}")
        cls.records = {p: pack_records(pack_path(cls.pristine, p)) for p in (1, 2, 3)}
        pack_of = {fp: p for p, recs in cls.records.items() for _, _, fp in recs}
        cls.files_in = {1: set(), 2: set(), 3: set()}
        for path, fp in cls.src_files.items():
            cls.files_in[pack_of[fp]].add(path)
        if [len(cls.files_in[p]) for p in (1, 2, 3)] != [64, 64, FILES - 128]:
            raise AssertionError(f"files per pack: {[len(cls.files_in[p]) for p in (1, 2, 3)]}")
        file_fps = set(cls.src_files.values()) | {cls.extra_fp}
        for p in (1, 2):
            if any(fp not in file_fps for _, _, fp in cls.records[p]):
                raise AssertionError(f"pack {p} holds a tree: the trees should be in pack 3")
        # The last record of the newest pack is the second snapshot's root tree (trees are
        # saved after their contents, the root last).
        cls.last = cls.records[3][-1]
        if cls.last[0] < s1_end or cls.last[2] in file_fps:
            raise AssertionError(f"last record of pack 3 is not the second snapshot's: {cls.last}")

    # -- helpers ---------------------------------------------------------------------------------

    def fresh_copy(self):
        repo = self.path("repo")
        shutil.copytree(self.pristine, repo)
        return repo

    def check(self, repo, *args, expect):
        r = self.whorl("check", "--repo", repo, *args, expect=expect)
        return r, CheckOutput(r.stdout)

    def assert_restored_exactly(self, target, files):
        """Each of FILES (path -> SHA-256) restored under TARGET with its bytes."""
        for path, digest in sorted(files.items()):
            got = w.restored_path(target, path)
            self.assertTrue(os.path.isfile(got), f"{path} not restored")
            self.assertEqual(w.sha256_file(got), digest, f"{path} restored with wrong bytes")

    def assert_closed_pack_lost(self, repo, pack_id, problem):
        """Check, check --read-data and restore of a repository whose closed pack PACK_ID is
        lost, PROBLEM being what the store says of it."""
        name = f"{pack_id:08d}.pack"
        lost_files = self.files_in[pack_id]
        lost = {self.src_files[p]: p for p in lost_files}
        for args in ((), ("--read-data",)):
            r, out = self.check(repo, *args, expect=1)
            self.assertEqual(out.packs, [f"pack {pack_id:08d} is damaged: {problem} "
                                         f"({len(lost)} chunks lost)"], r.describe())
            self.assertEqual(set(out.chunks), set(lost), r.describe())
            for fp, why in out.chunks.items():
                if args:  # the read error: where, and what is wrong with the file
                    self.assertIn(f"pack {pack_id:08d} offset ", why, r.describe())
                    self.assertIn(name, why, r.describe())
                else:
                    self.assertEqual(why, f"in damaged pack {pack_id:08d}", r.describe())
            self.assertEqual(out.users, {fp: {(self.s1[:8], p)} for fp, p in lost.items()},
                             r.describe())
            self.assertEqual(out.others, [], r.describe())
            self.assertEqual(out.last, f"{len(lost) + 1} errors found", r.describe())

        target = self.path("restored")
        r = self.restore(repo, self.s1, target, expect=1)
        named = {}
        for line in r.stderr.splitlines():
            self.assertTrue(line.startswith("whorl: /"), r.describe())
            path, why = line[len("whorl: "):].split(": ", 1)
            named[path] = why
        self.assertEqual(set(named), lost_files, r.describe())
        for why in named.values():
            self.assertIn(name, why, r.describe())
        for path in lost_files:
            self.assertFalse(os.path.lexists(w.restored_path(target, path)),
                             f"{path}: its chunk is lost, yet a file was left{r.describe()}")
        self.assert_restored_exactly(
            target, {p: d for p, d in self.src_files.items() if p not in lost_files})
        target2 = self.path("restored2")
        self.restore(repo, self.s2, target2, expect=0)
        self.assert_restored_exactly(target2, {self.extra: self.extra_fp})

    def backup_new_file(self, repo):
        """Backs up a new small file; returns (its path, SHA-256, snapshot id)."""
        d = w.makedirs(self.path("after"))
        data = os.urandom(30 * w.KIB)
        path = w.fss(w.write_file(os.path.join(d, b"new"), data))
        r, summary = self.backup(repo, w.fss(d))
        return path, hashlib.sha256(data).hexdigest(), summary["snapshot_id"]

    # -- the cases -------------------------------------------------------------------------------

    def test_deleted_closed_pack_is_reported_and_the_rest_restores(self):
        repo = self.fresh_copy()
        os.remove(pack_path(repo, 1))
        self.assert_closed_pack_lost(repo, 1, f"{pack_path(repo, 1)}: pack file missing")

    def test_repair_and_the_next_backup_bring_back_every_file_of_a_cut_closed_pack(self):
        repo = self.fresh_copy()
        # Cut inside pack 2's eleventh record: its first ten stay readable, 54 chunks are lost.
        records = self.records[2]
        os.truncate(pack_path(repo, 2), records[10][0] + 1000)
        lost = {fp for offset, _, fp in records[10:]}
        self.assertEqual(len(lost), 54)
        r = self.whorl("repair", "--repo", repo, expect=0)
        self.assertIn("found: pack 00000002 is damaged", r.stdout, r.describe())
        self.assertIn("forgot 54 chunks that could not be read", r.stdout, r.describe())
        r, out = self.check(repo, expect=1)
        self.assertEqual(set(out.chunks), lost, r.describe())
        self.assertEqual(out.packs, [], r.describe())
        self.assertIn("note: pack 00000002 is damaged", r.stdout, r.describe())
        # The next backup of the same path reads every file (a repair came after its parent).
        _, healing = self.backup(repo, os.path.join(self.base, "src"))
        self.assertEqual(healing["files_new"], FILES, healing)
        self.assertGreaterEqual(healing["data_added"], 54 * w.MIB, healing)
        self.assertLess(healing["data_added"], 55 * w.MIB, healing)
        r, out = self.check(repo, "--read-data", expect=0)
        self.assertEqual(out.last, "no errors were found", r.describe())
        self.assertIn("no chunk the store locates is lost with it", r.stdout, r.describe())
        target = self.path("restored")
        self.restore(repo, self.s1, target, expect=0)
        self.assert_restored_exactly(target, self.src_files)

    def test_closed_pack_cut_to_zero_is_reported_and_never_reused(self):
        repo = self.fresh_copy()
        os.truncate(pack_path(repo, 1), 0)
        problem = f"{pack_path(repo, 1)}: empty pack file (0 bytes)"
        self.assert_closed_pack_lost(repo, 1, problem)
        # The store still takes backups; nothing goes into the damaged pack.
        path, digest, s3 = self.backup_new_file(repo)
        self.assertEqual(os.path.getsize(pack_path(repo, 1)), 0)
        self.assertEqual(pack_ids(repo), [1, 2, 3])
        target = self.path("restored3")
        self.restore(repo, s3, target, expect=0)
        self.assert_restored_exactly(target, {path: digest})
        r, out = self.check(repo, expect=1)
        self.assertEqual(out.packs, [f"pack 00000001 is damaged: {problem} (64 chunks lost)"],
                         r.describe())

    def test_newest_pack_cut_inside_its_last_record_loses_that_record_only(self):
        repo = self.fresh_copy()
        offset, length, root_fp = self.last
        cut = offset + length // 2
        newest = pack_path(repo, 3)
        os.truncate(newest, cut)
        problem = f"{newest}: {cut} bytes, but its indexed records end at {offset + length}"
        for args in ((), ("--read-data",)):
            r, out = self.check(repo, *args, expect=1)
            self.assertEqual(out.packs, [f"pack 00000003 is damaged: {problem} (1 chunk lost)"],
                             r.describe())
            self.assertEqual(set(out.chunks), {root_fp}, r.describe())
            why = out.chunks[root_fp]
            if args:
                self.assertTrue(why.startswith(f"pack 00000003 offset {offset}: "), r.describe())
            else:
                self.assertEqual(why, "in damaged pack 00000003", r.describe())
            # The lost record is the second snapshot's root tree: nothing of it can be walked.
            self.assertEqual(out.users, {root_fp: {(self.s2[:8], "/")}}, r.describe())
            self.assertEqual(len(out.others), 1, r.describe())
            self.assertTrue(out.others[0].startswith(
                f"snapshot {self.s2[:8]}: tree of /: pack 00000003 offset {offset}: "),
                r.describe())
            self.assertEqual(out.last, "3 errors found", r.describe())
        self.assertEqual(os.path.getsize(newest), cut, "the damaged pack was changed")

        target = self.path("restored")
        self.restore(repo, self.s1, target, expect=0)
        self.assert_restored_exactly(target, self.src_files)
        target2 = self.path("restored2")
        r = self.restore(repo, self.s2, target2, expect=1)
        self.assertTrue(r.stderr.startswith("whorl: "), r.describe())
        self.assertIn("pack 00000003", r.stderr, r.describe())
        self.assertFalse(os.path.lexists(w.restored_path(target2, self.extra)), r.describe())

        # The next backup starts pack 4: no new record at an offset the locator gives to a lost one.
        path, digest, s3 = self.backup_new_file(repo)
        self.assertEqual(pack_ids(repo), [1, 2, 3, 4])
        self.assertEqual(os.path.getsize(newest), cut)
        target3 = self.path("restored3")
        self.restore(repo, s3, target3, expect=0)
        self.assert_restored_exactly(target3, {path: digest})

    def test_orphan_pack_unknown_to_the_locator_changes_nothing(self):
        # A whole, valid pack under a new id, with records the locator places elsewhere.
        repo = self.fresh_copy()
        shutil.copyfile(pack_path(repo, 2), pack_path(repo, 4))
        size = os.path.getsize(pack_path(repo, 4))
        for args in ((), ("--read-data",)):
            r = self.whorl("check", "--repo", repo, *args, expect=0)
            self.assertEqual(r.stdout, "no errors were found\n", r.describe())
        self.assertEqual(os.path.getsize(pack_path(repo, 4)), size)
        target = self.path("restored")
        self.restore(repo, self.s1, target, expect=0)
        self.assert_restored_exactly(target, self.src_files)
        target2 = self.path("restored2")
        self.restore(repo, self.s2, target2, expect=0)
        self.assert_restored_exactly(target2, {self.extra: self.extra_fp})
        # It is now the newest pack, and full (64 MiB): the next backup starts pack 5, and
        # everything still checks.
        path, digest, s3 = self.backup_new_file(repo)
        self.assertEqual(pack_ids(repo), [1, 2, 3, 4, 5])
        self.assertEqual(os.path.getsize(pack_path(repo, 4)), size)
        r = self.whorl("check", "--repo", repo, "--read-data", expect=0)
        self.assertEqual(r.stdout, "no errors were found\n", r.describe())
        target3 = self.path("restored3")
        self.restore(repo, s3, target3, expect=0)
        self.assert_restored_exactly(target3, {path: digest})


if __name__ == "__main__":
    w.main()
