"""backup: the JSON summary, change detection against the parent snapshot, excludes, host and
tags, missing and unreadable paths, --one-file-system."""

import os
import shutil
import subprocess

import whorl_e2e as w


def make_files(root, spec):
    """spec: {relative name: bytes}; directories are made as needed. Returns total bytes."""
    total = 0
    for rel, data in spec.items():
        p = os.path.join(w.fsb(root), w.fsb(rel))
        os.makedirs(os.path.dirname(p), exist_ok=True)
        w.write_file(p, data)
        total += len(data)
    return total


class BackupSummaryTest(w.WhorlTestCase):

    def setUp(self):
        super().setUp()
        self.repo = self.init_repo("repo", "--compression", "none")
        self.src = self.path("src")
        self.files = {
            "a.bin": os.urandom(70_000),
            "b.txt": b"hello whorl\n",
            "empty": b"",
            "sub/c.bin": os.urandom(300_000),
            "sub/deeper/d.bin": os.urandom(1000),
        }
        self.total = make_files(self.src, self.files)
        self.src_dirs = 3  # src, src/sub, src/sub/deeper

    def test_backup_json_summary_counts_a_new_tree(self):
        r, s = self.backup(self.repo, self.src)
        self.assert_summary_shape(s)
        self.assertEqual(s["files_new"], 5, s)
        self.assertEqual(s["files_changed"], 0, s)
        self.assertEqual(s["files_unmodified"], 0, s)
        self.assertEqual(s["total_files_processed"], 5, s)
        self.assertEqual(s["total_bytes_processed"], self.total, s)
        self.assertIn(s["dirs_new"], (self.src_dirs, self.src_dirs + len(w.ancestors(self.src))),
                      s)
        # compression none, random data: at least every file byte is stored, plus small trees.
        self.assertGreaterEqual(s["data_added"], self.total, s)
        self.assertLess(s["data_added"], self.total + 64 * w.KIB, s)
        snaps = self.snapshots(self.repo)
        self.assertEqual([x["id"] for x in snaps], [s["snapshot_id"]])
        self.assertEqual(r.err, b"", r.describe())

    def test_second_backup_of_unchanged_tree_reads_nothing(self):
        first, s = self.with_stable_ancestors(
            [self.src], lambda: (self.backup(self.repo, self.src)[1],
                                 self.backup(self.repo, self.src)[1]))
        self.assert_summary_shape(s)
        self.assertEqual(s["files_unmodified"], 5, s)
        self.assertEqual(s["files_new"], 0, s)
        self.assertEqual(s["files_changed"], 0, s)
        self.assertEqual(s["data_added"], 0, s)
        self.assertEqual(s["dirs_new"], 0, s)
        self.assertEqual(s["total_files_processed"], 5, s)
        self.assertEqual(s["total_bytes_processed"], self.total, s)
        self.assertNotEqual(s["snapshot_id"], first["snapshot_id"])
        self.assertEqual([x["id"] for x in self.snapshots(self.repo)][-2:],
                         [first["snapshot_id"], s["snapshot_id"]])

    def test_modified_and_new_files_count_as_changed_and_new(self):
        self.backup(self.repo, self.src)
        src = w.fsb(self.src)
        # Appended to: size changes.
        with open(os.path.join(src, b"b.txt"), "ab") as f:
            f.write(b"more\n")
        # Same size, same mtime, new bytes: only the ctime tells.
        c = os.path.join(src, b"sub", b"c.bin")
        st = os.stat(c)
        with open(c, "r+b") as f:
            f.seek(1000)
            f.write(b"\x00" * 8 if self.files["sub/c.bin"][1000:1008] != b"\x00" * 8
                    else b"\x01" * 8)
        os.utime(c, ns=(st.st_atime_ns, st.st_mtime_ns))
        self.assertEqual(os.stat(c).st_mtime_ns, st.st_mtime_ns)
        self.assertEqual(os.stat(c).st_size, st.st_size)
        w.write_file(os.path.join(src, b"sub", b"new.bin"), os.urandom(2000))
        _, s = self.backup(self.repo, self.src)
        self.assertEqual(s["files_changed"], 2, s)
        self.assertEqual(s["files_new"], 1, s)
        self.assertEqual(s["files_unmodified"], 3, s)
        self.assertEqual(s["total_files_processed"], 6, s)
        self.assertEqual(s["total_bytes_processed"], self.total + 5 + 2000, s)
        self.assertGreaterEqual(s["data_added"], 2000, s)
        target = self.path("t")
        self.restore(self.repo, "latest", target)
        self.assert_trees_equal(self.src, w.restored_path(target, self.src))

    def test_parent_is_latest_snapshot_of_same_host_and_paths(self):
        other = self.path("other")
        make_files(other, {"o1": b"one", "o2": b"two"})
        _, s = self.backup(self.repo, self.src, args=("--host", "h1"))
        self.assertEqual(s["files_new"], 5, s)
        # Another host: no parent.
        _, s = self.backup(self.repo, self.src, args=("--host", "h2"))
        self.assertEqual((s["files_new"], s["files_unmodified"]), (5, 0), s)
        # Same host, another set of paths: no parent.
        _, s = self.backup(self.repo, self.src, other, args=("--host", "h1"))
        self.assertEqual((s["files_new"], s["files_unmodified"]), (7, 0), s)
        # The same set in another order: the previous snapshot is the parent.
        _, s = self.backup(self.repo, other, self.src, args=("--host", "h1"))
        self.assertEqual((s["files_new"], s["files_changed"], s["files_unmodified"]),
                         (0, 0, 7), s)
        # Back to [src] on h1: parent is the first snapshot, still unmodified.
        _, s = self.backup(self.repo, self.src, args=("--host", "h1"))
        self.assertEqual((s["files_new"], s["files_changed"], s["files_unmodified"]),
                         (0, 0, 5), s)

    def test_relative_paths_are_made_absolute(self):
        _, s = self.backup(self.repo, "src", cwd=self.tmp)
        self.assertEqual(s["files_new"], 5, s)
        snaps = self.snapshots(self.repo)
        self.assertEqual(snaps[0]["paths"], [self.src])
        _, lines = self.ls(self.repo, "latest")
        self.assertIn(w.fsb(self.src), lines)
        self.assertIn(w.fsb(os.path.join(self.src, "sub", "c.bin")), lines)
        for ln in lines:
            self.assertTrue(ln.startswith(b"/"), lines)


class ExcludeTest(w.WhorlTestCase):

    def setUp(self):
        super().setUp()
        self.repo = self.init_repo()
        self.src = w.fsb(self.path("src"))
        make_files(self.src, {
            "keep.txt": b"k", "a.log": b"l", "sub/b.log": b"l", "sub/x.txt": b"x",
            "sub/y.dat": b"y", "cache/in-cache": b"c", "sub/cache/deep": b"c",
            "dir2/z.txt": b"z", "dir2/inner/q": b"q", "#x.keep": b"hash", "note.tmp": b"t",
            "logs.d/keep-me": b"k",
        })

    def listed(self):
        _, lines = self.ls(self.repo, "latest", self.src)
        return {os.path.relpath(p, self.src) for p in lines}

    def everything(self):
        out = set()
        for dirpath, dirnames, filenames in os.walk(self.src):
            for n in dirnames + filenames:
                out.add(os.path.relpath(os.path.join(dirpath, n), self.src))
        return out | {b"."}

    def test_exclude_glob_without_slash_matches_base_names_anywhere(self):
        self.backup(self.repo, self.src, args=("--exclude", "*.log", "--exclude", "cache"))
        want = self.everything() - {b"a.log", b"sub/b.log", b"cache", b"cache/in-cache",
                                    b"sub/cache", b"sub/cache/deep"}
        self.assertEqual(sorted(self.listed()), sorted(want))

    def test_exclude_glob_with_slash_matches_absolute_path(self):
        self.backup(self.repo, self.src, args=(
            "--exclude", os.path.join(self.src, b"sub", b"*.txt"),
            "--exclude", os.path.join(self.src, b"dir2"),
            "--exclude", "sub/y.dat"))  # relative with a slash: matches no absolute path
        want = self.everything() - {b"sub/x.txt", b"dir2", b"dir2/z.txt", b"dir2/inner",
                                    b"dir2/inner/q"}
        self.assertEqual(sorted(self.listed()), sorted(want))

    def test_exclude_file_ignores_blank_and_comment_lines(self):
        ef = self.path("excludes")
        with open(ef, "w") as f:
            f.write("# a comment\n\n#x.keep\n*.tmp\n\n# cache\n")
        self.backup(self.repo, self.src, args=("--exclude-file", ef, "--exclude", "*.log"))
        want = self.everything() - {b"note.tmp", b"a.log", b"sub/b.log"}
        self.assertEqual(sorted(self.listed()), sorted(want))


class HostTagTest(w.WhorlTestCase):

    def test_host_defaults_to_hostname_and_tags_are_recorded(self):
        repo = self.init_repo()
        src = w.makedirs(self.path("src"))
        w.write_file(os.path.join(src, b"f"), b"x")
        self.backup(repo, src, args=("--tag", "alpha", "--tag", "beta"))
        self.backup(repo, src, args=("--host", "box-7"))
        snaps = self.snapshots(repo)
        self.assertEqual(len(snaps), 2)
        self.assertEqual(snaps[0]["host"], os.uname().nodename)
        self.assertEqual(snaps[0]["tags"], ["alpha", "beta"])
        self.assertEqual(snaps[1]["host"], "box-7")
        self.assertEqual(snaps[1]["tags"], [])


class MissingPathTest(w.WhorlTestCase):

    def setUp(self):
        super().setUp()
        self.repo = self.init_repo()
        self.src = self.path("src")
        make_files(self.src, {"f": b"data", "g": os.urandom(3000)})

    def test_backup_of_only_missing_paths_fails_and_commits_nothing(self):
        gone = self.path("no-such-dir")
        r = self.whorl("backup", "--repo", self.repo, gone)
        self.assert_fails(r, 1, gone)
        self.assertEqual(self.snapshots(self.repo), [])
        self.backup(self.repo, self.src)
        gone2 = self.path("also-missing")
        r = self.whorl("backup", "--repo", self.repo, "--json", gone, gone2)
        self.assert_fails(r, 1, gone)
        self.assertIn(gone2, r.stderr, r.describe())
        self.assertEqual(len(self.snapshots(self.repo)), 1)

    def test_backup_with_some_missing_paths_exits_3_and_commits(self):
        gone = self.path("no-such-file")
        r, s = self.backup(self.repo, self.src, gone, expect=3)
        self.assertIn(gone, r.stderr, r.describe())
        self.assertTrue(r.stderr.startswith("whorl: "), r.describe())
        snaps = self.snapshots(self.repo)
        self.assertEqual([x["id"] for x in snaps], [s["snapshot_id"]])
        self.assertEqual(s["files_new"], 2, s)
        target = self.path("t")
        self.restore(self.repo, "latest", target)
        self.assert_trees_equal(self.src, w.restored_path(target, self.src))
        self.assertFalse(os.path.lexists(w.restored_path(target, gone)))


class UnprivilegedTest(w.WhorlTestCase):
    """Runs whorl as uid/gid 65534 so that files can be unreadable to it."""

    def setUp(self):
        super().setUp()
        if os.geteuid() != 0:
            self.skipTest("needs root to switch to uid 65534 and chown files")
        if shutil.which("setpriv") is None:
            self.skipTest("setpriv (util-linux) is not installed")
        os.chmod(self.tmp, 0o755)
        probe = w.run(["version"], user=w.NOBODY)
        if probe.code != 0:
            self.skipTest(f"uid {w.NOBODY} cannot run {w.BIN}:{probe.describe()}")
        self.repo = self.init_repo()
        self.src = w.fsb(self.path("src"))
        make_files(self.src, {"ok1": os.urandom(4000), "sub/ok2": b"fine\n",
                              "secret": b"top secret", "private/hidden": b"h"})
        for dirpath, dirnames, filenames in os.walk(self.src):
            os.chown(dirpath, w.NOBODY, w.NOBODY)
            for n in filenames:
                os.chown(os.path.join(dirpath, n), w.NOBODY, w.NOBODY)
        for dirpath, dirnames, filenames in os.walk(self.repo):
            os.chown(dirpath, w.NOBODY, w.NOBODY)
            for n in filenames:
                os.lchown(os.path.join(dirpath, n), w.NOBODY, w.NOBODY)
        self.secret = os.path.join(self.src, b"secret")
        os.chown(self.secret, 0, 0)
        os.chmod(self.secret, 0)
        self.private = os.path.join(self.src, b"private")
        os.chown(self.private, 0, 0)
        os.chmod(self.private, 0)

    def test_unreadable_file_is_skipped_named_and_exit_3(self):
        r = self.whorl("backup", "--repo", self.repo, "--exclude", "private", self.src,
                       user=w.NOBODY)
        self.assertEqual(r.code, 3, r.describe())
        self.assertIn(w.fss(self.secret), r.stderr, r.describe())
        self.assertTrue(r.stderr.startswith("whorl: "), r.describe())
        self.assertEqual(r.out, b"", r.describe())
        r = self.whorl("snapshots", "--repo", self.repo, "--json", user=w.NOBODY, expect=0)
        self.assertIn('"id"', r.stdout, r.describe())
        target = self.path("t")
        self.restore(self.repo, "latest", target)  # as root: reads of the repo only
        restored = w.restored_path(target, self.src)
        self.assertEqual(w.all_files(restored), [b"ok1", b"sub/ok2"])
        for rel in (b"ok1", b"sub/ok2"):
            self.assertEqual(w.read_bytes(os.path.join(restored, rel)),
                             w.read_bytes(os.path.join(self.src, rel)))

    def test_unreadable_files_across_many_directories_leave_only_their_own_nodes_out(self):
        # More directories and files than the walk keeps waiting for their reads (1024 each,
        # agent/backup.cc): directory trees are saved while later ones are walked, and a file
        # that fails is dropped from its own directory's tree, whichever directory it is in.
        many = os.path.join(self.src, b"many")
        expected = {}
        secrets = []
        for i in range(1300):
            d = os.path.join(many, b"d%04d" % i)
            os.makedirs(os.path.join(d, b"sub"))
            w.write_file(os.path.join(d, b"f"), b"file %d\n" % i)
            expected[b"many/d%04d/f" % i] = b"file %d\n" % i
            if i % 97 == 5:
                w.write_file(os.path.join(d, b"sub", b"g"), b"g" * i)
                expected[b"many/d%04d/sub/g" % i] = b"g" * i
                secret = os.path.join(d, b"zz-secret")
                w.write_file(secret, b"s")
                os.chmod(secret, 0)
                secrets.append(secret)
        for dirpath, dirnames, filenames in os.walk(many):
            os.chown(dirpath, w.NOBODY, w.NOBODY)
            for n in filenames:
                if os.path.join(dirpath, n) not in secrets:
                    os.chown(os.path.join(dirpath, n), w.NOBODY, w.NOBODY)
        r = self.whorl("backup", "--repo", self.repo, many, user=w.NOBODY)
        self.assertEqual(r.code, 3, r.describe())
        named = [ln for ln in r.stderr.splitlines() if "zz-secret" in ln]
        self.assertEqual(len(named), len(secrets), r.describe())
        for s in secrets:
            self.assertIn(w.fss(s), r.stderr, r.describe())
        target = self.path("t")
        self.restore(self.repo, "latest", target)
        restored = w.restored_path(target, many)
        self.assertEqual(w.all_files(restored),
                         sorted(rel[len(b"many/"):] for rel in expected))
        for rel, data in expected.items():
            self.assertEqual(w.read_bytes(os.path.join(restored, rel[len(b"many/"):])), data, rel)
        empty_subs = [b"d%04d/sub" % i for i in range(1300) if i % 97 != 5]
        for rel in empty_subs[::50]:
            self.assertEqual(os.listdir(os.path.join(restored, rel)), [], rel)

    def test_excluded_unreadable_dir_is_not_entered(self):
        os.chown(self.secret, w.NOBODY, w.NOBODY)
        os.chmod(self.secret, 0o644)
        r = self.whorl("backup", "--repo", self.repo, "--exclude", "private", self.src,
                       user=w.NOBODY)
        self.assertEqual(r.code, 0, f"an excluded directory must not be opened{r.describe()}")
        self.assertEqual(r.err, b"", r.describe())
        # Not excluded, the same directory is an error: the test above is meaningful.
        r = self.whorl("backup", "--repo", self.repo, self.src, user=w.NOBODY)
        self.assertEqual(r.code, 3, r.describe())
        self.assertIn(w.fss(self.private), r.stderr, r.describe())


class OneFileSystemTest(w.WhorlTestCase):

    def test_one_file_system_does_not_cross_mount_points(self):
        repo = self.init_repo()
        src = w.fsb(self.path("src"))
        make_files(src, {"here": b"on the same fs", "sub/also": b"x"})
        mnt = w.makedirs(os.path.join(src, b"mnt"))
        if os.geteuid() != 0:
            self.skipTest("needs root to mount a tmpfs")
        p = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "whorl-e2e", mnt],
                           capture_output=True)
        if p.returncode != 0:
            self.skipTest(f"cannot mount a tmpfs here: {p.stderr.decode(errors='replace')}")
        self.addCleanup(subprocess.run, ["umount", "-l", mnt], capture_output=True)
        w.write_file(os.path.join(mnt, b"elsewhere"), b"on the tmpfs")
        inner = os.path.join(mnt, b"elsewhere")

        self.backup(repo, src, args=("--one-file-system",))
        _, lines = self.ls(repo, "latest", src)
        self.assertIn(os.path.join(src, b"here"), lines)
        self.assertIn(os.path.join(src, b"sub", b"also"), lines)
        self.assertNotIn(inner, lines)

        self.backup(repo, src)
        _, lines = self.ls(repo, "latest", src)
        self.assertIn(inner, lines)
        self.assertIn(os.path.join(src, b"here"), lines)


if __name__ == "__main__":
    w.main()
