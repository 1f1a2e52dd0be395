"""Two backups into one repository at the same time."""

import os

import whorl_e2e as w


class ConcurrentBackupTest(w.WhorlTestCase):

    def test_two_simultaneous_backups_both_commit(self):
        repo = self.init_repo()
        shared = os.urandom(w.MIB)
        srcs = []
        for name in ("src1", "src2"):
            src = w.makedirs(self.bpath(name))
            w.write_file(os.path.join(src, b"shared"), shared)
            for i in range(3):
                w.write_file(os.path.join(src, b"own%d" % i), os.urandom(w.MIB))
            w.stamp_times(src)
            srcs.append(src)
        procs = [w.start(["backup", "--repo", repo, "--json", src]) for src in srcs]
        results = [w.finish(argv, p) for argv, p in procs]
        for r in results:
            self.assertEqual(r.code, 0, r.describe())
        snaps = self.snapshots(repo)
        self.assertEqual(len(snaps), 2, snaps)
        self.assertEqual(sorted(tuple(s["paths"]) for s in snaps),
                         [(w.fss(srcs[0]),), (w.fss(srcs[1]),)])
        r = self.whorl("check", "--repo", repo, "--read-data", expect=0)
        self.assertIn("no errors were found", r.stdout, r.describe())
        for snap, src in ((s["id"], w.fsb(s["paths"][0])) for s in snaps):
            target = self.path("t-" + snap[:8])
            self.restore(repo, snap, target)
            self.assert_trees_equal(src, w.restored_path(target, src))
        self.assertEqual(self.stats(repo)["logical_bytes"], 8 * w.MIB)


if __name__ == "__main__":
    w.main()
