"""Bundles (several small chunks compressed as one pack record): a new repository is version 2
and stores small files in bundles in version 2 packs; a version 1 repository keeps one chunk per
record in version 1 packs; both restore exactly, and check --read-data names every file of a
damaged bundle."""

import glob
import json
import os
import struct

import whorl_e2e as w


def pack_records(repo):
    """[(pack version, [(flags, stored_size)])] per pack file, parsed per pack_format.md."""
    out = []
    for path in sorted(glob.glob(os.path.join(repo, "chunks", "packs", "*.pack"))):
        data = w.read_bytes(path)
        version = struct.unpack_from("<I", data, 8)[0]
        records, off = [], 16
        while off + 52 <= len(data):
            flags = data[off + 5]
            stored = struct.unpack_from("<I", data, off + 12)[0]
            records.append((off, flags, stored))
            off += 52 + stored
        out.append((path, version, records))
    return out


def text(seed, n):
    line = f"line of file {seed}: the quick brown fox jumps over the lazy dog\n".encode()
    return (line * (n // len(line) + 1))[:n]


class BundleTest(w.WhorlTestCase):

    def setUp(self):
        super().setUp()
        self.src = self.path("src")
        # 60 small compressible files: bundled; one 300 KB random file: chunks of its own.
        for d in range(3):
            os.makedirs(os.path.join(self.src, f"d{d}"))
        for i in range(60):
            w.write_file(os.path.join(self.src, f"d{i % 3}", f"f{i}.txt"), text(i, 2000 + 37 * i))
        w.write_file(os.path.join(self.src, "big.bin"), os.urandom(300_000))

    def config_version(self, repo):
        with open(os.path.join(repo, "config")) as f:
            return json.load(f)["version"]

    def test_a_new_repository_bundles_small_files_in_version_2_packs(self):
        # Version 4 (chunk lists); only an LZ4 record would start a version 3 pack.
        repo = self.init_repo("repo")
        self.assertEqual(self.config_version(repo), 5)
        self.backup(repo, self.src)
        packs = pack_records(repo)
        bundles = [r for _, v, recs in packs if v == 2 for r in recs if r[1] & 1]
        self.assertGreaterEqual(len(bundles), 1, packs)
        for _, version, recs in packs:
            self.assertIn(version, (1, 2))
            if version == 1:
                self.assertFalse([r for r in recs if r[1] & 1], "bundle in a version 1 pack")
        # 60 file chunks in far fewer records: each bundle holds many.
        records = sum(len(recs) for _, _, recs in packs)
        self.assertLess(records, 40, packs)
        self.assertGreaterEqual(self.stats(repo)["unique_chunks"], 61)
        target = self.path("target")
        self.restore(repo, "latest", target)
        self.assert_trees_equal(self.src, w.restored_path(target, self.src))
        self.whorl("check", "--repo", repo, "--read-data", expect=0)

    def test_a_version_1_repository_gets_no_bundles(self):
        repo = self.init_repo("repo", "--compression", "zstd:3")  # no LZ4: version 1 reads it
        cfg = os.path.join(repo, "config")
        with open(cfg) as f:
            text_ = f.read()
        with open(cfg, "w") as f:
            f.write(text_.replace('"version": 5', '"version": 1'))
        self.backup(repo, self.src)
        for _, version, recs in pack_records(repo):
            self.assertEqual(version, 1)
            self.assertFalse([r for r in recs if r[1] & 1])
        target = self.path("target")
        self.restore(repo, "latest", target)
        self.assert_trees_equal(self.src, w.restored_path(target, self.src))

    def test_a_flipped_byte_in_a_bundle_names_every_file_in_it(self):
        repo = self.init_repo("repo")
        self.backup(repo, self.src)
        path, off, stored = next((p, r[0], r[2]) for p, v, recs in pack_records(repo)
                                 for r in recs if r[1] & 1)
        with open(path, "r+b") as f:
            f.seek(off + 52 + stored // 2)
            b = f.read(1)
            f.seek(off + 52 + stored // 2)
            f.write(bytes([b[0] ^ 0x40]))
        r = self.whorl("check", "--repo", repo, "--read-data", expect=1)
        lines = r.stdout.splitlines()
        damaged = [ln for ln in lines if " is damaged: " in ln]
        self.assertGreater(len(damaged), 1, r.describe())
        for ln in damaged:
            self.assertIn(f"pack {os.path.basename(path)[:8]} offset {off}: record CRC mismatch",
                          ln)
        prefix = "  used by snapshot "
        users = {ln.split(" file ", 1)[1] for ln in lines if ln.startswith(prefix)}
        self.assertTrue(users, r.describe())
        # The restore brings back every other file exactly and names exactly those files.
        target = self.path("target")
        res = self.restore(repo, "latest", target, expect=1)
        named = {ln[len("whorl: "):].split(": chunk ", 1)[0]
                 for ln in res.stderr.splitlines() if ": chunk " in ln}
        self.assertEqual(named, users, res.describe())
        restored = w.fss(w.restored_path(target, self.src))
        for root, _, files in os.walk(self.src):
            for name in files:
                src = os.path.join(root, name)
                dst = os.path.join(restored, os.path.relpath(src, self.src))
                if src in users:
                    self.assertFalse(os.path.exists(dst), dst)
                else:
                    self.assertEqual(w.read_bytes(dst), w.read_bytes(src), dst)

if __name__ == "__main__":
    w.main()
