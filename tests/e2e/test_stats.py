"""stats --json: logical and stored bytes, unique chunks, dedup ratio; dedup of equal files."""

import glob
import json
import os
import struct

import whorl_e2e as w

STATS_FIELDS = ("snapshots", "logical_bytes", "stored_bytes", "unique_chunks", "dedup_ratio")


class StatsTest(w.WhorlTestCase):

    def assert_stats_shape(self, st):
        for k in STATS_FIELDS:
            self.assertIn(k, st, st)
        for k in STATS_FIELDS[:-1]:
            self.assertIs(type(st[k]), int, f"{k} is not an integer: {st}")
            self.assertGreaterEqual(st[k], 0, st)
        self.assertIn(type(st["dedup_ratio"]), (int, float), st)

    def test_stats_of_an_empty_repository(self):
        repo = self.init_repo()
        st = self.stats(repo)
        self.assert_stats_shape(st)
        self.assertEqual(st["snapshots"], 0, st)
        self.assertEqual(st["logical_bytes"], 0, st)
        self.assertEqual(st["unique_chunks"], 0, st)

    def test_stats_of_two_snapshots_of_the_same_tree(self):
        src = w.makedirs(self.path("src"))
        for name in ("a", "b", "c"):
            w.write_file(os.path.join(src, name.encode()), os.urandom(w.MIB))
        w.makedirs(os.path.join(src, b"sub"))
        w.write_file(os.path.join(src, b"sub", b"empty"), b"")
        w.makedirs(self.path("repos"))
        tries = [0]

        def scenario():
            tries[0] += 1
            repo = self.init_repo(f"repos/r{tries[0]}", "--compression", "none")
            self.backup(repo, src)
            one = self.stats(repo)
            self.backup(repo, src, args=("--tag", "again"))
            return repo, one, self.stats(repo)

        repo, one, two = self.with_stable_ancestors([src], scenario)
        self.assert_stats_shape(one)
        self.assertEqual(one["snapshots"], 1, one)
        self.assertEqual(one["logical_bytes"], 3 * w.MIB, one)
        self.assertGreaterEqual(one["stored_bytes"], 3 * w.MIB, one)
        self.assertLess(one["stored_bytes"], int(3.2 * w.MIB), one)
        self.assertGreaterEqual(one["unique_chunks"], 3 + 2, one)  # data, plus 2 trees at least

        self.assert_stats_shape(two)
        self.assertEqual(two["snapshots"], 2, two)
        self.assertEqual(two["logical_bytes"], 2 * 3 * w.MIB, two)
        self.assertGreaterEqual(two["stored_bytes"], 3 * w.MIB, two)
        self.assertLess(two["stored_bytes"], int(3.2 * w.MIB), two)
        self.assertEqual(two["unique_chunks"], one["unique_chunks"], (one, two))
        self.assertGreaterEqual(two["dedup_ratio"], 1.9, two)
        self.assertLessEqual(two["dedup_ratio"], 2.0 + 1e-9, two)

        r = self.whorl("stats", "--repo", repo, expect=0)
        self.assertNotEqual(r.stdout.strip(), "", r.describe())


class DedupTest(w.WhorlTestCase):

    def setUp(self):
        super().setUp()
        self.data = os.urandom(4 * w.MIB)

    def test_same_file_under_two_names_is_stored_once(self):
        repo = self.init_repo()
        d2 = w.makedirs(self.path("d2"))
        w.write_file(os.path.join(d2, b"f"), self.data)
        w.write_file(os.path.join(d2, b"g"), self.data)
        _, s2 = self.backup(repo, d2)
        st2 = self.stats(repo)
        self.assertEqual(st2["logical_bytes"], 8 * w.MIB, st2)
        # Random bytes do not compress: one copy plus record headers and two small trees.
        self.assertGreaterEqual(st2["stored_bytes"], 4 * w.MIB, st2)
        self.assertLess(st2["stored_bytes"], 4 * w.MIB + 64 * w.KIB, st2)
        self.assertLess(s2["data_added"], 4 * w.MIB + 64 * w.KIB, s2)
        self.assertGreater(st2["dedup_ratio"], 1.95, st2)
        # A third copy under another directory adds no chunk but its trees.
        d1 = w.makedirs(self.path("d1"))
        w.write_file(os.path.join(d1, b"f"), self.data)
        _, s1 = self.backup(repo, d1)
        st1 = self.stats(repo)
        # New chunks: only the trees on the path from / to d1 (a handful).
        self.assertLessEqual(st1["unique_chunks"] - st2["unique_chunks"], 8, (st1, st2))
        # (the trees hold the file's chunk list: ~35 bytes a chunk)
        self.assertLess(s1["data_added"], 16 * w.KIB, s1)
        target = self.path("t")
        self.restore(repo, s2["snapshot_id"], target)
        self.assertEqual(w.read_bytes(w.restored_path(target, os.path.join(d2, b"g"))), self.data)

    def test_second_name_added_later_adds_almost_nothing(self):
        repo = self.init_repo()
        d = w.makedirs(self.path("d"))
        w.write_file(os.path.join(d, b"f"), self.data)
        self.backup(repo, d)
        before = self.stats(repo)
        w.write_file(os.path.join(d, b"g"), self.data)
        _, s = self.backup(repo, d)
        after = self.stats(repo)
        self.assertEqual(s["files_new"], 1, s)
        self.assertEqual(s["files_unmodified"], 1, s)
        self.assertLess(s["data_added"], 64 * w.KIB, s)
        self.assertLess(after["stored_bytes"] - before["stored_bytes"], 64 * w.KIB,
                        (before, after))
        self.assertEqual(after["logical_bytes"], before["logical_bytes"] + 8 * w.MIB)


class InitOptionsTest(w.WhorlTestCase):

    def test_compression_zstd_shrinks_text_and_none_stores_it_whole(self):
        text = b"".join(b"%08d whorl line with some words in it\n" % i for i in range(26_000))
        self.assertGreater(len(text), w.MIB)
        src = w.makedirs(self.path("src"))
        w.write_file(os.path.join(src, b"text"), text)
        stored = {}
        for comp in ("zstd:3", "none"):
            repo = self.init_repo("repo-" + comp.replace(":", ""), "--compression", comp)
            _, s = self.backup(repo, src)
            st = self.stats(repo)
            self.assertEqual(st["logical_bytes"], len(text), st)
            stored[comp] = st["stored_bytes"]
            target = self.path("t-" + comp.replace(":", ""))
            self.restore(repo, "latest", target)
            self.assertEqual(w.read_bytes(w.restored_path(target, os.path.join(src, b"text"))),
                             text)
        self.assertLess(stored["zstd:3"], len(text) // 2, stored)
        self.assertGreaterEqual(stored["none"], len(text), stored)

    def test_files_of_16_mib_and_more_use_the_large_files_compression(self):
        line = b"%08d whorl line with some words in it\n"
        text = b"".join(line % i for i in range(16 * w.MIB // len(line % 0) + 1))[:16 * w.MIB]
        stored = {}
        for name, size in (("large", len(text)), ("small", len(text) - 1)):
            src = w.makedirs(self.path("src-" + name))
            w.write_file(os.path.join(src, b"f"), text[:size])
            # Nothing compressed but files of 16 MiB and more.
            repo = self.init_repo("repo-" + name, "--compression", "none",
                                  "--compression-large", "zstd:3")
            with open(os.path.join(repo, "config")) as f:
                config = json.load(f)
            self.assertEqual((config["compression"], config["compression_large"]),
                             ("none", "zstd:3"))
            self.backup(repo, src)
            stored[name] = self.stats(repo)["stored_bytes"]
            target = self.path("t-" + name)
            self.restore(repo, "latest", target)
            self.assertEqual(w.read_bytes(w.restored_path(target, os.path.join(src, b"f"))),
                             text[:size])
        self.assertLess(stored["large"], len(text) // 4, stored)
        self.assertGreaterEqual(stored["small"], len(text) - 1, stored)

    def test_init_chooses_zstd_3_and_lz4_for_large_files_unless_told(self):
        # (flags, (compression, compression_large), config version): always 5 (tree deltas).
        cases = [((), ("zstd:3", "lz4"), 5),
                 (("--compression", "none"), ("none", "none"), 5),
                 (("--compression", "zstd:3"), ("zstd:3", "zstd:3"), 5),
                 (("--compression", "lz4"), ("lz4", "lz4"), 5),
                 (("--compression-large", "zstd:7"), ("zstd:3", "zstd:7"), 5)]
        for i, (args, want, version) in enumerate(cases):
            repo = self.init_repo(f"repo{i}", *args)
            with open(os.path.join(repo, "config")) as f:
                config = json.load(f)
            self.assertEqual((config["compression"], config["compression_large"]), want, args)
            self.assertEqual(config["version"], version, args)
        r = self.whorl("init", "--repo", self.path("bad"), "--compression-large", "zstd:20")
        self.assert_fails(r, 1, "compression must be 'none', 'zstd:N' with N in 1..19 or 'lz4', "
                          "got 'zstd:20'")
        self.assertFalse(os.path.exists(os.path.join(self.path("bad"), "config")))

    def test_large_files_go_in_lz4_records_of_version_3_packs_small_ones_in_zstd_bundles(self):
        line = b"%08d whorl line with some words in it\n"
        big = b"".join(line % i for i in range(17 * w.MIB // len(line % 0) + 1))[:17 * w.MIB]
        src = w.makedirs(self.path("src"))
        w.write_file(os.path.join(src, b"big"), big)
        for i in range(8):
            w.write_file(os.path.join(src, b"small%d" % i), line % i * 300)
        repo = self.init_repo("repo")
        self.backup(repo, src)
        codecs = {}  # (pack version, codec, is bundle) -> records
        for path in sorted(glob.glob(os.path.join(repo, "chunks", "packs", "*.pack"))):
            data = w.read_bytes(path)
            version, off = struct.unpack_from("<I", data, 8)[0], 16
            while off + 52 <= len(data):
                key = (version, data[off + 4], data[off + 5] & 1)
                codecs[key] = codecs.get(key, 0) + 1
                off += 52 + struct.unpack_from("<I", data, off + 12)[0]
            self.assertEqual(off, len(data), path)
        lz4 = {k: n for k, n in codecs.items() if k[1] == 2}
        # 17 MiB of text in chunks of at most 128 KiB: at least 136 LZ4 records, all in version 3
        # packs, none a bundle; the small files went into zstd (codec 1) bundles.
        self.assertEqual(set(lz4), {(3, 2, 0)}, codecs)
        self.assertGreaterEqual(lz4[(3, 2, 0)], 17 * 8, codecs)
        self.assertTrue(any(k[1] == 1 and k[2] == 1 for k in codecs), codecs)
        self.assertLess(self.stats(repo)["stored_bytes"], len(big) // 3)
        target = self.path("t")
        self.restore(repo, "latest", target)
        self.assertEqual(w.read_bytes(w.restored_path(target, os.path.join(src, b"big"))), big)
        self.assertEqual(w.read_bytes(w.restored_path(target, os.path.join(src, b"small7"))),
                         line % 7 * 300)
        r = self.whorl("check", "--repo", repo, "--read-data")
        self.assertEqual(r.code, 0, r.describe())

    def test_chunk_size_options_set_the_chunk_count(self):
        data = os.urandom(w.MIB)
        src = w.makedirs(self.path("src"))
        w.write_file(os.path.join(src, b"f"), data)
        repo = self.init_repo("repo", "--chunk-min", "4096", "--chunk-avg", "8192",
                              "--chunk-max", "32768")
        self.backup(repo, src)
        st = self.stats(repo)
        trees = 1 + len(w.ancestors(src)) + 1  # src, its ancestors, and perhaps a root
        # 1 MiB of chunks between 4 KiB and 32 KiB: 32..256 of them, plus the trees.
        self.assertGreaterEqual(st["unique_chunks"], w.MIB // 32768, st)
        self.assertLessEqual(st["unique_chunks"], w.MIB // 4096 + trees, st)
        target = self.path("t")
        self.restore(repo, "latest", target)
        self.assertEqual(w.read_bytes(w.restored_path(target, os.path.join(src, b"f"))), data)


if __name__ == "__main__":
    w.main()
