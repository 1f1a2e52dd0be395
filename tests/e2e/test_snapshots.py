"""snapshots: the JSON list (fields, order, summaries), --host, the table; `latest` per host."""

import datetime
import os
import re
import time

import whorl_e2e as w

RFC3339 = re.compile(
    r"^(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2})(\.\d{1,9})?(Z|[+-]\d{2}:\d{2})$")


def parse_rfc3339(text):
    """Seconds since the epoch (float), or None if TEXT is not RFC 3339."""
    m = RFC3339.match(text)
    if not m:
        return None
    zone = "+00:00" if m.group(3) == "Z" else m.group(3)
    dt = datetime.datetime.fromisoformat(m.group(1) + zone)
    return dt.timestamp() + (float("0" + m.group(2)) if m.group(2) else 0.0)


class SnapshotsTest(w.WhorlTestCase):

    def setUp(self):
        super().setUp()
        self.repo = self.init_repo()
        self.src = self.path("src")
        self.other = self.path("other")
        w.makedirs(self.src)
        w.makedirs(self.other)
        w.write_file(os.path.join(self.src, "f"), os.urandom(5000))
        w.write_file(os.path.join(self.other, "g"), b"g")
        self.runs = []  # (summary, before, after)
        for args, paths in ((("--host", "h1", "--tag", "daily", "--tag", "x"), [self.src]),
                            (("--host", "h2"), [self.src]),
                            (("--host", "h1"), [self.other, self.src])):
            before = time.time()
            _, s = self.backup(self.repo, *paths, args=args)
            self.runs.append((s, before, time.time()))

    def test_snapshots_json_lists_oldest_first_with_all_fields(self):
        snaps = self.snapshots(self.repo)
        self.assertEqual([x["id"] for x in snaps], [s["snapshot_id"] for s, _, _ in self.runs])
        expected = [("h1", [self.src], ["daily", "x"]), ("h2", [self.src], []),
                    ("h1", sorted([self.other, self.src]), [])]
        for snap, (s, before, after), (host, paths, tags) in zip(snaps, self.runs, expected):
            for k in ("id", "short_id", "time", "host", "paths", "tags", "summary"):
                self.assertIn(k, snap, snap)
            self.assertRegex(snap["id"], r"^[0-9a-f]{64}$")
            self.assertEqual(snap["short_id"], snap["id"][:8])
            t = parse_rfc3339(snap["time"])
            self.assertIsNotNone(t, f"time is not RFC 3339: {snap['time']!r}")
            self.assertGreaterEqual(t, before - 1.0, snap["time"])
            self.assertLessEqual(t, after + 1.0, snap["time"])
            self.assertEqual(snap["host"], host)
            self.assertEqual(sorted(snap["paths"]), paths)
            self.assertEqual(sorted(snap["tags"]), tags)
            want = {k: v for k, v in s.items() if k not in ("message_type", "snapshot_id")}
            self.assertEqual(snap["summary"], want)
        times = [parse_rfc3339(x["time"]) for x in snaps]
        self.assertEqual(times, sorted(times))

    def test_snapshots_host_filter(self):
        ids = [s["snapshot_id"] for s, _, _ in self.runs]
        self.assertEqual([x["id"] for x in self.snapshots(self.repo, "--host", "h1")],
                         [ids[0], ids[2]])
        self.assertEqual([x["id"] for x in self.snapshots(self.repo, "--host", "h2")], [ids[1]])
        self.assertEqual(self.snapshots(self.repo, "--host", "nobody"), [])

    def test_snapshots_table_has_one_line_per_snapshot_with_short_id(self):
        r = self.whorl("snapshots", "--repo", self.repo, expect=0)
        lines = r.stdout.splitlines()
        shorts = [s["snapshot_id"][:8] for s, _, _ in self.runs]
        for short in shorts:
            self.assertEqual(len([ln for ln in lines if short in ln]), 1,
                             f"{short} should be on exactly one line{r.describe()}")
        with_ids = [i for i, ln in enumerate(lines) if any(s in ln for s in shorts)]
        self.assertEqual(len(with_ids), 3, r.describe())
        order = [next(s for s in shorts if s in lines[i]) for i in with_ids]
        self.assertEqual(order, shorts, f"not oldest first{r.describe()}")
        r = self.whorl("snapshots", "--repo", self.repo, "--host", "h2", expect=0)
        self.assertIn(shorts[1], r.stdout, r.describe())
        self.assertNotIn(shorts[0], r.stdout, r.describe())
        self.assertNotIn(shorts[2], r.stdout, r.describe())

    def test_empty_repository_lists_no_snapshots(self):
        repo = self.init_repo("empty-repo")
        self.assertEqual(self.snapshots(repo), [])

    def test_latest_is_newest_of_all_hosts_or_of_host(self):
        ids = [s["snapshot_id"] for s, _, _ in self.runs]
        _, lines = self.ls(self.repo, "latest")
        self.assertIn(w.fsb(os.path.join(self.other, "g")), lines)  # the third, h1
        r, lines = self.ls(self.repo, "latest", "--host", "h2")
        self.assertNotIn(w.fsb(self.other), lines, r.describe())
        self.assertIn(w.fsb(os.path.join(self.src, "f")), lines)
        # A fourth snapshot, on h2 only, becomes `latest` of all and of h2, not of h1.
        w.write_file(os.path.join(self.src, "new-on-h2"), b"n")
        _, s4 = self.backup(self.repo, self.src, args=("--host", "h2"))
        new = w.fsb(os.path.join(self.src, "new-on-h2"))
        self.assertIn(new, self.ls(self.repo, "latest")[1])
        self.assertIn(new, self.ls(self.repo, "latest", "--host", "h2")[1])
        r, lines = self.ls(self.repo, "latest", "--host", "h1")
        self.assertNotIn(new, lines, r.describe())
        self.assertIn(w.fsb(os.path.join(self.other, "g")), lines)
        # The same through restore.
        target = self.path("t")
        self.restore(self.repo, "latest", target, "--host", "h1")
        self.assertFalse(os.path.lexists(w.restored_path(target, new)))
        self.assertTrue(os.path.isfile(w.restored_path(target, os.path.join(self.other, "g"))))
        self.assertNotIn(s4["snapshot_id"], ids)


if __name__ == "__main__":
    w.main()
