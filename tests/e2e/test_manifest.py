"""backup --manifest-out and restore --manifest: exact restores, damaged or foreign manifests.

Manifest files here are named *.bin, so that `manifest` in an error message comes from whorl,
not from an echoed file name."""

import os

import whorl_e2e as w


class ManifestTest(w.WhorlTestCase):

    def setUp(self):
        super().setUp()
        self.repo = self.init_repo()
        self.src = w.makedirs(self.bpath("src"))
        w.write_file(os.path.join(self.src, b"data"), os.urandom(200_000), 0o640)
        w.makedirs(os.path.join(self.src, b"d"), 0o700)
        w.write_file(os.path.join(self.src, b"d", b"small"), b"first version")
        w.symlink(b"d/small", os.path.join(self.src, b"ln"))
        w.stamp_times(self.src)
        self.mf = self.path("snap1.bin")
        r, self.summary = self.backup(self.repo, self.src, args=("--manifest-out", self.mf))
        self.assertTrue(os.path.isfile(self.mf), r.describe())
        self.good = w.read_bytes(self.mf)
        self.assertGreater(len(self.good), 0)

    def restore_manifest(self, repo, mf, target, expect=0):
        return self.whorl("restore", "--repo", repo, "--manifest", mf, "--target", target,
                          expect=expect)

    def assert_nothing_restored(self, target):
        if os.path.isdir(target):
            self.assertEqual(w.all_files(target), [], "files restored from a bad manifest")

    def test_restore_from_manifest_is_byte_exact(self):
        target = self.path("t")
        r = self.restore_manifest(self.repo, self.mf, target)
        self.assertEqual(r.out, b"", r.describe())
        self.assert_trees_equal(self.src, w.restored_path(target, self.src))

    def test_restore_from_manifest_restores_that_snapshot_not_latest(self):
        small = os.path.join(self.src, b"d", b"small")
        w.write_file(small, b"second version, longer")
        mf2 = self.path("snap2.bin")
        _, s2 = self.backup(self.repo, self.src, args=("--manifest-out", mf2))
        self.assertNotEqual(w.read_bytes(mf2), self.good)
        t1, t2 = self.path("t1"), self.path("t2")
        self.restore_manifest(self.repo, self.mf, t1)
        self.restore_manifest(self.repo, mf2, t2)
        self.assertEqual(w.read_bytes(w.restored_path(t1, small)), b"first version")
        self.assertEqual(w.read_bytes(w.restored_path(t2, small)), b"second version, longer")
        self.assert_trees_equal(self.src, w.restored_path(t2, self.src))

    def test_truncated_manifest_is_refused(self):
        bad = self.path("cut.bin")
        with open(bad, "wb") as f:
            f.write(self.good[: len(self.good) // 2])
        target = self.path("t")
        r = self.restore_manifest(self.repo, bad, target, expect=None)
        self.assert_fails(r, 1, "manifest")
        self.assert_nothing_restored(target)
        # One byte short, too.
        with open(bad, "wb") as f:
            f.write(self.good[:-1])
        r = self.restore_manifest(self.repo, bad, target, expect=None)
        self.assert_fails(r, 1, "manifest")
        self.assert_nothing_restored(target)

    def test_garbage_manifest_is_refused(self):
        bad = self.path("junk.bin")
        with open(bad, "wb") as f:
            f.write(os.urandom(4096))
        target = self.path("t")
        r = self.restore_manifest(self.repo, bad, target, expect=None)
        self.assert_fails(r, 1, "manifest")
        self.assert_nothing_restored(target)

    def test_manifest_with_a_flipped_byte_is_refused(self):
        bad = self.path("flip.bin")
        data = bytearray(self.good)
        data[len(data) - 10] ^= 0x40
        with open(bad, "wb") as f:
            f.write(bytes(data))
        target = self.path("t")
        r = self.restore_manifest(self.repo, bad, target, expect=None)
        self.assertEqual(r.code, 1, r.describe())
        self.assertTrue(r.stderr.startswith("whorl: "), r.describe())
        self.assert_nothing_restored(target)

    def test_empty_manifest_is_refused(self):
        bad = self.path("empty.bin")
        open(bad, "wb").close()
        target = self.path("t")
        r = self.restore_manifest(self.repo, bad, target, expect=None)
        self.assert_fails(r, 1, "manifest")
        self.assert_nothing_restored(target)

    def test_manifest_of_another_repository_is_refused(self):
        repo2 = self.init_repo("repo2")
        mf2 = self.path("other.bin")
        self.backup(repo2, self.src, args=("--manifest-out", mf2))
        target = self.path("t")
        r = self.restore_manifest(self.repo, mf2, target, expect=None)
        self.assert_fails(r, 1, "another repository")
        self.assert_nothing_restored(target)
        # ... while it restores from its own repository.
        self.restore_manifest(repo2, mf2, target)
        self.assert_trees_equal(self.src, w.restored_path(target, self.src))


if __name__ == "__main__":
    w.main()
