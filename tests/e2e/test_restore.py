"""restore: full fidelity (bytes, modes, ns mtimes, symlinks, hard links, owners, odd names),
targets, --include, snapshot selection, and never writing outside the target."""

import json
import os
import shutil

import whorl_e2e as w

IS_ROOT = os.geteuid() == 0


class RestoreFidelityTest(w.WhorlTestCase):

    def build_tree(self, src):
        """A tree with every kind of node restore must give back."""
        src = w.makedirs(src)
        j = lambda *p: os.path.join(src, *[w.fsb(x) for x in p])  # noqa: E731
        w.write_file(j("plain.txt"), os.urandom(10_000), 0o644)
        w.write_file(j("exec.sh"), b"#!/bin/sh\necho hi\n", 0o755)
        w.write_file(j("private"), b"secret", 0o600)
        w.write_file(j("readonly"), b"ro", 0o444)
        w.write_file(j("odd-mode"), b"odd", 0o571)
        w.write_file(j("empty"), b"", 0o640)
        w.write_file(j("big.bin"), os.urandom(700_000), 0o644)
        w.makedirs(j("dir_750"), 0o750)
        w.write_file(j("dir_750", "inner"), b"inner")
        w.makedirs(j("empty_dir"), 0o700)
        # Many files in one read-only directory: restore writes them on several threads and
        # sets the directory's mode and mtime only after the last one.
        w.makedirs(j("ro_dir"))
        for i in range(40):
            w.write_file(j("ro_dir", f"f{i:02d}"), os.urandom(i * 997), 0o644)
        os.chmod(j("ro_dir"), 0o555)
        w.makedirs(j("deep", "a", "b", "c"))
        w.write_file(j("deep", "a", "b", "c", "leaf"), b"leaf\n")
        w.makedirs(j("links"))
        w.symlink(b"../plain.txt", j("links", "rel"))
        w.symlink(b"/etc/hostname", j("links", "abs"))
        w.symlink(b"does/not/exist", j("links", "dangling"))
        w.symlink(b"\xff\xfe odd target//..//x ", j("links", "weird"))
        w.symlink(b"../deep", j("links", "todir"))
        w.makedirs(j("hard"))
        w.write_file(j("hard", "h1"), os.urandom(3000))
        os.link(j("hard", "h1"), j("hard", "h2"))
        os.link(j("hard", "h1"), j("deep", "h3"))
        # A group with one link outside the backed-up tree.
        w.write_file(j("hard", "p1"), b"partly linked")
        os.link(j("hard", "p1"), j("hard", "p2"))
        w.makedirs(self.path("outside"))
        os.link(j("hard", "p1"), self.bpath("outside", "p3"))
        w.makedirs(j(b"names"))
        for name in (b"sp ace", b"new\nline", b"\xff\xfe", b"tab\there", b"\xe2\x98\x83",
                     b"-dash", b"*?[glob]", b"back\\slash", b"\x01ctl", b"..."):
            w.write_file(j(b"names", name), b"name:" + name)
        w.makedirs(j(b"names", b"d\xff ir"))
        w.write_file(j(b"names", b"d\xff ir", b"x y"), b"in odd dir")
        w.symlink(b"\xff\xfe", j(b"names", b"link \xfe"))
        w.stamp_times(src)
        return src

    def test_restore_gives_back_bytes_modes_mtimes_symlinks_and_hard_links(self):
        repo = self.init_repo()
        src = self.build_tree(self.bpath("src"))
        self.assertEqual(os.stat(os.path.join(src, b"hard", b"h1")).st_nlink, 3)
        self.assertEqual(os.stat(os.path.join(src, b"hard", b"p1")).st_nlink, 3)
        self.backup(repo, src)
        target = self.path("t")
        r = self.restore(repo, "latest", target)
        self.assertEqual(r.err, b"", r.describe())
        restored = w.restored_path(target, src)
        self.assert_trees_equal(src, restored)
        # Spelled out for the cases most likely to go wrong.
        st = os.lstat(os.path.join(restored, b"links", b"weird"))
        self.assertEqual(os.readlink(os.path.join(restored, b"links", b"weird")),
                         b"\xff\xfe odd target//..//x ")
        self.assertEqual(st.st_mtime_ns, os.lstat(os.path.join(src, b"links", b"weird")).st_mtime_ns)
        h1 = os.stat(os.path.join(restored, b"hard", b"h1"))
        self.assertEqual(h1.st_nlink, 3)
        self.assertEqual(h1.st_ino, os.stat(os.path.join(restored, b"deep", b"h3")).st_ino)
        p1 = os.stat(os.path.join(restored, b"hard", b"p1"))
        self.assertEqual(p1.st_ino, os.stat(os.path.join(restored, b"hard", b"p2")).st_ino)
        self.assertEqual(p1.st_nlink, 2)
        self.assertEqual(os.stat(os.path.join(restored, b"empty_dir")).st_mtime_ns,
                         os.stat(os.path.join(src, b"empty_dir")).st_mtime_ns)
        self.assertEqual(os.listdir(os.path.join(restored, b"empty_dir")), [])
        self.assertTrue(os.path.islink(os.path.join(restored, b"links", b"todir")))

    def test_restore_of_names_with_any_bytes(self):
        repo = self.init_repo()
        src = w.makedirs(self.bpath("src"))
        names = [b"sp ace", b"new\nline", b"\xff\xfe", b"\xfe", b"tab\t", b"\xe2\x98\x83",
                 b"\x7f", b"a" * 255, b"-", b" lead", b"trail ", b"%s%n"]
        for i, name in enumerate(names):
            w.write_file(os.path.join(src, name), b"%d" % i)
        w.stamp_times(src)
        self.backup(repo, src)
        target = self.path("t")
        self.restore(repo, "latest", target)
        restored = w.restored_path(target, src)
        self.assertEqual(sorted(os.listdir(restored)), sorted(names))
        for i, name in enumerate(names):
            self.assertEqual(w.read_bytes(os.path.join(restored, name)), b"%d" % i, name)
        self.assert_trees_equal(src, restored)

    def test_modes_and_owners_are_exact_under_any_umask_and_in_a_setgid_target(self):
        """Restore creates a file with its mode where the umask leaves that mode whole, and skips
        chown where the new entry already has the owner: neither shortcut may change what comes
        back, whatever the umask, special bits, or group a setgid target hands down."""
        repo = self.init_repo()
        src = w.makedirs(self.bpath("src"))
        j = lambda *p: os.path.join(src, *[w.fsb(x) for x in p])  # noqa: E731
        for mode in (0o644, 0o755, 0o600, 0o777, 0o640, 0o4755, 0o2755, 0o1644, 0o000):
            w.write_file(j(f"m{mode:04o}"), b"%o" % mode, mode)
        # Directories: made with their own mode where that is safe (owner rwx, no group or
        # other write, the umask leaves it whole), else 0700 until their entries are done.
        for mode in (0o755, 0o700, 0o750, 0o775, 0o777, 0o555):
            w.makedirs(j(f"d{mode:04o}"), 0o700)
            w.write_file(j(f"d{mode:04o}", "f"), b"in %o" % mode, 0o644)
            w.makedirs(j(f"d{mode:04o}", "sub"), 0o755)
            os.chmod(j(f"d{mode:04o}"), mode)
        w.makedirs(j("sticky"), 0o1777)
        w.write_file(j("sticky", "f"), b"in sticky", 0o664)
        w.makedirs(j("sgid"), 0o2775)
        w.write_file(j("sgid", "f"), b"in setgid", 0o644)
        w.makedirs(j("sgid", "sub"), 0o755)
        w.write_file(j("sgid", "sub", "g"), b"below setgid", 0o644)
        if IS_ROOT:
            os.chown(j("m0644"), 0, 4242)
            os.chown(j("m0755"), 4242, 0)
            os.chown(j("m4755"), 4242, 4242)  # chown clears setuid: it must come before chmod
            os.chmod(j("m4755"), 0o4755)
            for path in (src, j("sticky"), j("sgid"), j("sgid", "f"), j("sgid", "sub"),
                         j("sgid", "sub", "g")):
                os.chown(path, 0, 0)
            os.chmod(j("sgid"), 0o2775)
        w.stamp_times(src)
        self.backup(repo, src)
        for mask in (0o022, 0o077, 0o000):
            for setgid_target in ((False, True) if IS_ROOT else (False,)):
                with self.subTest(umask=oct(mask), setgid_target=setgid_target):
                    target = w.makedirs(self.bpath(f"t{mask:03o}{int(setgid_target)}"), 0o755)
                    if setgid_target:
                        os.chown(target, 0, 4343)
                        os.chmod(target, 0o2775)
                    old = os.umask(mask)
                    try:
                        r = self.restore(repo, "latest", target)
                    finally:
                        os.umask(old)
                    self.assertEqual(r.err, b"", r.describe())
                    restored = w.restored_path(target, src)
                    self.assert_trees_equal(src, restored)
                    st = os.stat(os.path.join(restored, b"m4755"))
                    self.assertEqual(st.st_mode & 0o7777, 0o4755)
                    for mode in (0o755, 0o775, 0o555):
                        d = os.path.join(restored, b"d%04o" % mode)
                        self.assertEqual(os.stat(d).st_mode & 0o7777, mode)
                        self.assertEqual(w.read_bytes(os.path.join(d, b"f")), b"in %o" % mode)
                    if IS_ROOT:
                        self.assertEqual((st.st_uid, st.st_gid), (4242, 4242))
                        st = os.stat(os.path.join(restored, b"sgid", b"sub", b"g"))
                        self.assertEqual((st.st_uid, st.st_gid), (0, 0))

    def test_restore_as_root_gives_back_owner_and_group(self):
        if not IS_ROOT:
            self.skipTest("only root can chown files to other owners")
        repo = self.init_repo()
        src = w.makedirs(self.bpath("src"))
        f = w.write_file(os.path.join(src, b"f"), b"owned")
        d = w.makedirs(os.path.join(src, b"d"), 0o750)
        g = w.write_file(os.path.join(d, b"g"), b"group", 0o640)
        ln = w.symlink(b"f", os.path.join(src, b"ln"))
        os.chown(f, 1234, 5678)
        os.chown(d, 4321, 8765)
        os.chown(g, 0, 5678)
        os.lchown(ln, 2222, 3333)
        os.chown(src, 1111, 2222)
        w.stamp_times(src)
        self.backup(repo, src)
        target = self.path("t")
        self.restore(repo, "latest", target)
        restored = w.restored_path(target, src)
        self.assert_trees_equal(src, restored)
        st = os.lstat(os.path.join(restored, b"f"))
        self.assertEqual((st.st_uid, st.st_gid), (1234, 5678))
        st = os.lstat(os.path.join(restored, b"ln"))
        self.assertEqual((st.st_uid, st.st_gid), (2222, 3333))
        st = os.lstat(restored)
        self.assertEqual((st.st_uid, st.st_gid), (1111, 2222))

    def test_restore_of_two_paths_places_each_at_its_absolute_path(self):
        repo = self.init_repo()
        one = w.makedirs(self.bpath("one"))
        two = w.makedirs(self.bpath("nested", "two"))
        w.write_file(os.path.join(one, b"a"), b"A")
        w.write_file(os.path.join(two, b"b"), b"B")
        single = w.write_file(self.bpath("single-file"), b"S", 0o604)
        w.stamp_times(one)
        w.stamp_times(two)
        w.set_mtime(single, w.distinct_mtime_ns())
        self.backup(repo, one, two, single)
        target = self.path("t")
        self.restore(repo, "latest", target)
        self.assert_trees_equal(one, w.restored_path(target, one))
        self.assert_trees_equal(two, w.restored_path(target, two))
        self.assert_trees_equal(single, w.restored_path(target, single))
        # Nothing else appears under the temp dir's copy.
        self.assertEqual(sorted(os.listdir(w.restored_path(target, self.tmp))),
                         [b"nested", b"one", b"single-file"])


class RestoreTargetTest(w.WhorlTestCase):

    def setUp(self):
        super().setUp()
        self.repo = self.init_repo()
        self.src = w.makedirs(self.bpath("src"))
        w.makedirs(os.path.join(self.src, b"a", b"x"))
        w.makedirs(os.path.join(self.src, b"b"))
        w.makedirs(os.path.join(self.src, b"c", b"d"))
        w.write_file(os.path.join(self.src, b"top"), b"top")
        w.write_file(os.path.join(self.src, b"a", b"x", b"f1"), os.urandom(2000))
        w.write_file(os.path.join(self.src, b"a", b"f2"), b"f2")
        w.write_file(os.path.join(self.src, b"b", b"f3"), b"f3")
        w.write_file(os.path.join(self.src, b"c", b"d", b"f4"), b"f4")
        w.write_file(os.path.join(self.src, b"c", b"f5"), b"f5")
        w.stamp_times(self.src)
        _, self.summary = self.backup(self.repo, self.src)
        self.snap = self.summary["snapshot_id"]

    def test_restore_creates_an_absent_target(self):
        target = self.path("fresh")
        self.assertFalse(os.path.exists(target))
        self.restore(self.repo, self.snap, target)
        self.assertTrue(os.path.isdir(target))
        self.assert_trees_equal(self.src, w.restored_path(target, self.src))

    def test_restore_into_a_target_that_is_a_regular_file_fails(self):
        target = w.write_file(self.path("afile"), b"keep me")
        r = self.restore(self.repo, self.snap, target, expect=None)
        self.assert_fails(r, 1, "")
        self.assertEqual(w.read_bytes(target), b"keep me")

    def test_include_restores_only_the_chosen_subtrees(self):
        target = self.path("t")
        inc1 = os.path.join(self.src, b"a")
        inc2 = os.path.join(self.src, b"c", b"d")
        self.restore(self.repo, "latest", target, "--include", inc1, "--include", inc2)
        restored = w.restored_path(target, self.src)
        self.assertEqual(w.all_files(restored), [b"a/f2", b"a/x/f1", b"c/d/f4"])
        self.assertEqual(sorted(os.listdir(restored)), [b"a", b"c"])
        self.assertEqual(os.listdir(os.path.join(restored, b"c")), [b"d"])
        self.assert_trees_equal(inc1, w.restored_path(target, inc1))
        self.assert_trees_equal(inc2, w.restored_path(target, inc2))

    def test_include_of_a_single_file(self):
        target = self.path("t")
        inc = os.path.join(self.src, b"c", b"f5")
        self.restore(self.repo, "latest", target, "--include", inc)
        restored = w.restored_path(target, self.src)
        self.assertEqual(w.all_files(restored), [b"c/f5"])
        self.assert_trees_equal(inc, w.restored_path(target, inc))

    def test_snapshot_by_full_id_prefix_and_latest(self):
        w.write_file(os.path.join(self.src, b"top"), b"changed")
        _, s2 = self.backup(self.repo, self.src)
        for snap, want in ((self.snap, b"top"), (self.snap[:8], b"top"),
                           (self.snap[:13], b"top"), (s2["snapshot_id"], b"changed"),
                           (s2["snapshot_id"][:8], b"changed"), ("latest", b"changed")):
            target = self.path("t-" + snap)
            self.restore(self.repo, snap, target)
            self.assertEqual(w.read_bytes(w.restored_path(target, os.path.join(self.src, b"top"))),
                             want, f"restore of {snap}")

    def test_unknown_snapshot_id_fails_with_no_snapshot(self):
        wrong = "0" * 64 if not self.snap.startswith("0") else "f" * 64
        for snap in (wrong, wrong[:8]):
            target = self.path("t")
            r = self.restore(self.repo, snap, target, expect=None)
            self.assert_fails(r, 1, "no snapshot")
            self.assertEqual(w.all_files(target) if os.path.isdir(target) else [], [])

    def test_snapshot_prefix_shorter_than_8_fails(self):
        for n in (7, 4, 1):
            target = self.path(f"t{n}")
            r = self.restore(self.repo, self.snap[:n], target, expect=None)
            self.assertEqual(r.code, 1, r.describe())
            self.assertEqual(w.all_files(target) if os.path.isdir(target) else [], [])


class RestoreEscapeTest(w.WhorlTestCase):
    """A symlink already in the target must never be followed."""

    def setUp(self):
        super().setUp()
        self.repo = self.init_repo()
        self.src = w.makedirs(self.bpath("src"))
        w.makedirs(os.path.join(self.src, b"sub"))
        w.write_file(os.path.join(self.src, b"f"), b"payload")
        w.write_file(os.path.join(self.src, b"sub", b"g"), b"payload2")
        self.backup(self.repo, self.src)
        self.outside = w.makedirs(self.bpath("outside"))

    def outside_meta(self):
        st = os.lstat(self.outside)
        return (st.st_mode, st.st_uid, st.st_gid, st.st_mtime_ns)

    def assert_outside_untouched(self, r, expected, meta):
        self.assertEqual(sorted(w.scan_tree(self.outside)), expected,
                         f"restore wrote outside its target{r.describe()}")
        self.assertEqual(self.outside_meta(), meta,
                         f"restore changed the outside directory's metadata{r.describe()}")
        if r.code != 0:
            self.assertTrue(r.stderr.startswith("whorl: "), f"no explanation{r.describe()}")

    def test_restore_does_not_follow_a_symlink_where_a_directory_goes(self):
        os.chmod(self.outside, 0o711)
        w.set_mtime(self.outside, w.distinct_mtime_ns())
        meta = self.outside_meta()
        parts = self.src.strip(b"/").split(b"/")
        # A symlink at every level of the path: target/<first>, ..., target/.../src, src/sub.
        levels = [parts[:i] for i in range(1, len(parts) + 1)] + [parts + [b"sub"]]
        for n, level in enumerate(levels):
            target = self.bpath(f"t{n}")
            link = os.path.join(target, *level)
            os.makedirs(os.path.dirname(link), exist_ok=True)
            os.symlink(self.outside, link)
            r = self.restore(self.repo, "latest", target, expect=None)
            self.assert_outside_untouched(r, [b"."], meta)

    def test_restore_does_not_write_through_a_symlink_where_a_file_goes(self):
        victim = w.write_file(os.path.join(self.outside, b"victim"), b"untouched", 0o644)
        w.set_mtime(victim, w.distinct_mtime_ns())
        victim_st = os.lstat(victim)
        meta = self.outside_meta()
        target = self.bpath("t")
        dst = w.restored_path(target, self.src)
        os.makedirs(dst)
        os.symlink(victim, os.path.join(dst, b"f"))
        r = self.restore(self.repo, "latest", target, expect=None)
        self.assert_outside_untouched(r, [b".", b"victim"], meta)
        self.assertEqual(w.read_bytes(victim), b"untouched")
        st = os.lstat(victim)
        self.assertEqual((st.st_mode, st.st_uid, st.st_gid, st.st_mtime_ns),
                         (victim_st.st_mode, victim_st.st_uid, victim_st.st_gid,
                          victim_st.st_mtime_ns), r.describe())
        if r.code == 0:
            f = os.path.join(dst, b"f")
            self.assertFalse(os.path.islink(f), r.describe())
            self.assertEqual(w.read_bytes(f), b"payload")


class ChunkListTest(w.WhorlTestCase):
    """A file of more than 2048 chunks names chunk lists, not its chunks (repository version 4);
    a version 3 repository keeps them inline. Both restore every version exactly."""

    SMALL_CHUNKS = ("--chunk-min", "64", "--chunk-avg", "256", "--chunk-max", "1024")

    def test_a_big_file_goes_in_chunk_lists_and_comes_back_exactly(self):
        v4 = self.init_repo("v4", *self.SMALL_CHUNKS)
        # The same chunker (polynomial and sizes) at version 3: the same chunks, inline.
        v3 = self.path("v3")
        shutil.copytree(v4, v3)
        self.assertEqual(w.set_config_version(v3, 3)["version"], 5)
        src = w.makedirs(self.bpath("src"))
        big = os.path.join(src, b"big.img")
        data = os.urandom(8 << 20)  # ~25k chunks of ~330 bytes
        w.write_file(big, data)
        w.write_file(os.path.join(src, b"small"), os.urandom(20_000))  # ~60 chunks: inline
        first = self.backup(v4, src)[1]["snapshot_id"]
        self.backup(v3, src)
        # The lists are the only objects the version 4 repository has more of: about one per
        # 4352 chunks.
        extra = self.stats(v4)["unique_chunks"] - self.stats(v3)["unique_chunks"]
        self.assertGreaterEqual(extra, 2)
        self.assertLessEqual(extra, 20)
        # Edited early and in the middle: the next version shares every list but those around
        # the edits.
        edited = data[:5000] + os.urandom(100) + data[5000:4_000_000] + data[4_000_100:]
        w.write_file(big, edited)
        before = self.stats(v4)["unique_chunks"]
        second = self.backup(v4, src)[1]["snapshot_id"]
        # A few chunks at each edit, a list each, the file's tree and those above it.
        self.assertLess(self.stats(v4)["unique_chunks"] - before, 40)
        for i, (snap, want) in enumerate(((first, data), (second, edited))):
            target = self.path(f"t{i}")
            r = self.restore(v4, snap, target)
            self.assertEqual(r.err, b"", r.describe())
            self.assertEqual(w.read_bytes(w.restored_path(target, big)), want)
        self.whorl("check", "--repo", v4, "--read-data", expect=0)
        target = self.path("t3")
        self.restore(v3, "latest", target)
        self.assertEqual(w.read_bytes(w.restored_path(target, big)), data)



class TreeDeltaTest(w.WhorlTestCase):
    """A night that changes one file of a big directory stores the directory's tree as a delta
    against the night before's (repository version 5); a version 4 repository stores it whole.
    Every snapshot restores exactly, over nights of deltas, renames and deletions, and `ls`
    and `check --read-data` read them."""

    def test_a_changed_directory_costs_its_changes_and_every_night_restores_exactly(self):
        v5 = self.init_repo("v5")
        v4 = self.path("v4")
        shutil.copytree(v5, v4)
        self.assertEqual(w.set_config_version(v4, 4)["version"], 5)
        src = w.makedirs(self.bpath("src"))
        sub = w.makedirs(os.path.join(src, b"sub"))
        for i in range(300):
            w.write_file(os.path.join(src, b"a-file-with-a-long-name-%03d.txt" % i), b"v0 %d" % i)
        w.write_file(os.path.join(sub, b"inner"), b"inner")
        nights = []  # (snapshot id in v5, copy of the source)
        for night in range(5):
            if night == 1:
                w.write_file(os.path.join(src, b"a-file-with-a-long-name-007.txt"), b"changed")
            elif night == 2:
                os.unlink(os.path.join(src, b"a-file-with-a-long-name-008.txt"))
                w.write_file(os.path.join(src, b"new-file"), b"new")
            elif night == 3:
                os.rename(sub, os.path.join(src, b"sub-renamed"))
            elif night == 4:  # half the directory changed: stored whole again
                for i in range(0, 300, 2):
                    w.write_file(os.path.join(src, b"a-file-with-a-long-name-%03d.txt" % i),
                                 b"v4 %d" % i)
            added = {}
            for repo in (v5, v4):
                added[repo] = self.backup(repo, src)[1]["data_added"]
            if night in (1, 2, 3):
                # The delta: a node or two and a base, where the whole tree is 300 nodes.
                self.assertLess(added[v5] * 5, added[v4], (night, added))
            elif night == 4:  # whole in both
                self.assertGreater(added[v5] * 10, added[v4] * 9, added)
            copy = self.bpath(f"copy{night}")
            shutil.copytree(src, copy, symlinks=True)
            nights.append((self.snapshots(v5)[-1]["id"], copy))
        for night, (snap, copy) in enumerate(nights):
            target = self.path(f"t{night}")
            r = self.restore(v5, snap, target)
            self.assertEqual(r.err, b"", r.describe())
            self.assert_trees_equal(copy, w.restored_path(target, src), check_owner=False)
        r, lines = self.ls(v5, nights[2][0])
        self.assertEqual(sum(1 for ln in lines if b"/a-file-with-a-long-name-" in ln), 299, r.describe())
        self.assertTrue([ln for ln in lines if ln.endswith(b"/new-file")], r.describe())
        self.whorl("check", "--repo", v5, "--read-data", expect=0)
        self.whorl("check", "--repo", v4, "--read-data", expect=0)


class UpgradeTest(w.WhorlTestCase):
    """`whorl upgrade` raises an older repository's version in its config alone: what is stored
    stays readable, and the next backups write what the new version adds (here tree deltas)."""

    def test_a_version_2_repository_upgraded_keeps_its_snapshots_and_gets_tree_deltas(self):
        repo = self.init_repo("repo", "--compression", "zstd:3")
        cfg = os.path.join(repo, "config")
        config = w.set_config_version(repo, 2)
        src = w.makedirs(self.bpath("src"))
        for i in range(200):
            w.write_file(os.path.join(src, b"a-file-with-a-long-name-%03d" % i), b"%d" % i)
        first = self.backup(repo, src)[1]["snapshot_id"]
        copy = self.bpath("copy")
        shutil.copytree(src, copy)
        r = self.whorl("upgrade", "--repo", repo, expect=0)
        self.assertEqual(r.stdout, f"upgraded repository at {repo} from version 2 to version 5; "
                         "builds before version 5 no longer open it\n")
        with open(cfg) as f:
            upgraded = json.load(f)
        self.assertEqual(upgraded.pop("version"), 5)
        config.pop("version")
        self.assertEqual(upgraded, config)
        r = self.whorl("upgrade", "--repo", repo, expect=0)
        self.assertEqual(r.stdout, f"repository at {repo} is already version 5\n")
        w.write_file(os.path.join(src, b"a-file-with-a-long-name-007"), b"changed")
        added = self.backup(repo, src)[1]["data_added"]
        # The file's chunk, a delta of one node against the version 2 tree, the trees above.
        self.assertLess(added, 2000)
        for snap, want in ((first, copy), ("latest", src)):
            target = self.path("t-" + snap)
            self.restore(repo, snap, target)
            self.assert_trees_equal(want, w.restored_path(target, src), check_owner=False)
        self.whorl("check", "--repo", repo, "--read-data", expect=0)

    def test_init_makes_an_older_version_on_request_and_upgrade_raises_it(self):
        repo = self.path("v3")
        self.whorl("init", "--repo", repo, "--repository-version", "3", expect=0)
        with open(os.path.join(repo, "config")) as f:
            self.assertEqual(json.load(f)["version"], 3)
        src = w.makedirs(self.bpath("src"))
        w.write_file(os.path.join(src, b"f"), b"x" * 1000)
        snap = self.backup(repo, src)[1]["snapshot_id"]
        r = self.whorl("upgrade", "--repo", repo, expect=0)
        self.assertEqual(r.stdout, f"upgraded repository at {repo} from version 3 to version 5; "
                         "builds before version 5 no longer open it\n")
        self.restore(repo, snap, self.path("t"))
        self.assertEqual(w.read_bytes(w.restored_path(self.path("t"), os.path.join(src, b"f"))),
                         b"x" * 1000)
        for version, code in (("0", 2), ("6", 2), ("1", 1), ("2", 1)):
            target = self.path("v" + version)
            r = self.whorl("init", "--repo", target, "--repository-version", version, expect=code)
            self.assertFalse(os.path.exists(target), version)
        self.assert_fails(r, 1, "lz4 compression needs repository version 3")
        self.whorl("init", "--repo", self.path("v1"), "--repository-version", "1",
                   "--compression-large", "none", expect=0)
        with open(os.path.join(self.path("v1"), "config")) as f:
            self.assertEqual(json.load(f)["version"], 1)

    def test_what_is_not_an_embedded_repository_is_refused_and_left_alone(self):
        r = self.whorl("upgrade", "--repo", self.path("nothing"))
        self.assert_fails(r, 1, "is not a whorl repository (no config)")
        self.assertFalse(os.path.exists(self.path("nothing")))
        r = self.whorl("upgrade", "--repo", "whorl://127.0.0.1:1")
        self.assert_fails(r, 1, "metadata shard (bootstrap) at 127.0.0.1:1: failed to connect")
        repo = self.init_repo("future")
        cfg = os.path.join(repo, "config")
        w.set_config_version(repo, 99)
        with open(cfg, "rb") as f:
            before = f.read()
        r = self.whorl("upgrade", "--repo", repo)
        self.assert_fails(r, 1, "unsupported repository version 99")
        with open(cfg, "rb") as f:
            self.assertEqual(f.read(), before)

if __name__ == "__main__":
    w.main()
