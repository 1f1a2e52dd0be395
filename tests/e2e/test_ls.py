"""ls: every node, depth first, entries sorted by name bytes, ancestors included; PATH."""

import os

import whorl_e2e as w


def dfs(path):
    """PATH, then its entries sorted by name (bytes), each followed by its own subtree."""
    out = [path]
    if os.path.isdir(path) and not os.path.islink(path):
        for name in sorted(os.listdir(path)):
            out += dfs(os.path.join(path, name))
    return out


class LsTest(w.WhorlTestCase):

    def setUp(self):
        super().setUp()
        self.repo = self.init_repo()
        self.src = w.makedirs(self.bpath("src"))
        # Name order and path order differ: "a/x" sorts after "a.b" as a path, but the
        # entries of "a" come right after "a" in a depth-first listing.
        for name in (b"a b", b"a-", b"a.b", b"ab", b"B", b"\xff", b"a0"):
            w.write_file(os.path.join(self.src, name), name)
        w.makedirs(os.path.join(self.src, b"a", b"y"))
        w.write_file(os.path.join(self.src, b"a", b"x"), b"x")
        w.write_file(os.path.join(self.src, b"a", b"y", b"z"), b"z")
        w.makedirs(os.path.join(self.src, b"empty"))
        w.symlink(b"a", os.path.join(self.src, b"link-to-a"))
        _, s = self.backup(self.repo, self.src)
        self.snap = s["snapshot_id"]

    def test_ls_lists_ancestors_then_tree_depth_first_sorted_by_name(self):
        r, lines = self.ls(self.repo, self.snap)
        want = w.ancestors(self.src) + dfs(self.src)
        self.assertEqual(lines, want, r.describe())
        self.assertEqual(r.out, b"".join(p + b"\n" for p in want))
        # The check above is only meaningful if name order differs from path order here.
        self.assertNotEqual(want, w.ancestors(self.src) + sorted(dfs(self.src)))

    def test_ls_of_two_paths_lists_both_under_shared_ancestors(self):
        other = w.makedirs(self.bpath("0-other"))
        w.write_file(os.path.join(other, b"o"), b"o")
        _, s = self.backup(self.repo, self.src, other)
        r, lines = self.ls(self.repo, s["snapshot_id"][:8])
        want = w.ancestors(self.src) + dfs(other) + dfs(self.src)
        self.assertEqual(lines, want, r.describe())

    def test_ls_with_path_lists_that_subtree_only(self):
        a = os.path.join(self.src, b"a")
        r, lines = self.ls(self.repo, "latest", a)
        self.assertEqual(lines, [a, a + b"/x", a + b"/y", a + b"/y/z"], r.describe())
        f = os.path.join(self.src, b"a b")
        self.assertEqual(self.ls(self.repo, "latest", f)[1], [f])
        e = os.path.join(self.src, b"empty")
        self.assertEqual(self.ls(self.repo, "latest", e)[1], [e])
        link = os.path.join(self.src, b"link-to-a")
        self.assertEqual(self.ls(self.repo, "latest", link)[1], [link])
        # An ancestor above the backed-up path.
        r, lines = self.ls(self.repo, "latest", self.tmp)
        self.assertEqual(lines, [w.fsb(self.tmp)] + dfs(self.src), r.describe())

    def test_ls_of_path_not_in_snapshot_fails(self):
        for p in (os.path.join(self.src, b"nope"), os.path.join(self.src, b"a", b"x", b"under"),
                  os.path.join(self.src, b"a b", b"c"), b"/definitely/not/here"):
            r, _ = self.ls(self.repo, "latest", p, expect=None)
            self.assertEqual(r.code, 1, r.describe())
            self.assertTrue(r.stderr.startswith("whorl: "), r.describe())

    def test_ls_of_unknown_snapshot_fails(self):
        wrong = "0" * 64 if not self.snap.startswith("0") else "f" * 64
        r, _ = self.ls(self.repo, wrong, expect=None)
        self.assert_fails(r, 1, "no snapshot")
        r, _ = self.ls(self.repo, self.snap[:7], expect=None)
        self.assertEqual(r.code, 1, r.describe())


if __name__ == "__main__":
    w.main()
