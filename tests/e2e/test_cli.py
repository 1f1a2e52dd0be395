"""CLI basics: version, usage errors, init, repository detection, WHORL_REPO, quiet stdout."""

import json
import os
import re

import whorl_e2e as w


class CliTest(w.WhorlTestCase):

    def test_version_prints_whorl_line_and_exits_0(self):
        r = self.whorl("version", expect=0)
        self.assertTrue(r.stdout.startswith("whorl "), r.describe())
        self.assertEqual(len(r.stdout.splitlines()), 1, r.describe())
        self.assertGreater(len(r.stdout.strip()), len("whorl"), r.describe())

    def test_unknown_flag_exits_2(self):
        repo = self.init_repo()
        src = w.makedirs(self.path("src"))
        r = self.whorl("backup", "--repo", repo, "--no-such-flag", src)
        self.assertEqual(r.code, 2, r.describe())
        self.assertEqual(self.snapshots(repo), [], "a usage error must not commit a snapshot")
        r = self.whorl("snapshots", "--repo", repo, "--bogus")
        self.assertEqual(r.code, 2, r.describe())
        r = self.whorl("version", "--bogus")
        self.assertEqual(r.code, 2, r.describe())

    def test_unknown_command_exits_2(self):
        r = self.whorl("frobnicate", "--repo", self.path("repo"))
        self.assertEqual(r.code, 2, r.describe())
        self.assertFalse(os.path.exists(self.path("repo")))

    def test_flag_missing_its_argument_exits_2(self):
        r = self.whorl("init", "--repo")
        self.assertEqual(r.code, 2, r.describe())
        repo = self.init_repo()
        src = w.makedirs(self.path("src"))
        r = self.whorl("backup", "--repo", repo, src, "--tag")
        self.assertEqual(r.code, 2, r.describe())
        self.assertEqual(self.snapshots(repo), [])

    def test_restore_without_target_exits_2(self):
        repo = self.init_repo()
        src = w.makedirs(self.path("src"))
        self.backup(repo, src)
        r = self.whorl("restore", "--repo", repo, "latest")
        self.assertEqual(r.code, 2, r.describe())

    def test_init_prints_created_line_and_writes_config_version_5(self):
        repo = self.path("repo")
        r = self.whorl("init", "--repo", repo, expect=0)
        m = re.fullmatch(r"created whorl repository (\S+) at (.+)\n", r.stdout)
        self.assertIsNotNone(m, r.describe())
        self.assertEqual(m.group(2), repo, r.describe())
        with open(os.path.join(repo, "config")) as f:
            config = json.load(f)
        self.assertIsInstance(config, dict)
        self.assertIs(type(config.get("version")), int, config)
        self.assertEqual(config["version"], 5)  # tree deltas, since 2026-12-01
        if "id" in config:
            self.assertEqual(m.group(1), config["id"])
        self.assertEqual(r.err, b"", r.describe())

    def test_init_twice_fails_with_already_exists_and_keeps_config(self):
        repo = self.init_repo()
        before = w.read_bytes(os.path.join(repo, "config"))
        r = self.whorl("init", "--repo", repo)
        self.assert_fails(r, 1, "already exists")
        self.assertEqual(r.out, b"", r.describe())
        self.assertEqual(w.read_bytes(os.path.join(repo, "config")), before)
        self.whorl("check", "--repo", repo, expect=0)

    def test_directory_without_config_is_not_a_whorl_repository(self):
        empty = w.makedirs(self.path("empty"))
        src = w.makedirs(self.path("src"))
        w.write_file(os.path.join(src, b"f"), b"data")
        for args in (("snapshots",), ("backup", src), ("check",), ("stats",),
                     ("ls", "latest"), ("restore", "latest", "--target", self.path("t"))):
            r = self.whorl(args[0], "--repo", empty, *args[1:])
            self.assert_fails(r, 1, "not a whorl repository")
        self.assertEqual(os.listdir(empty), [], "commands must not write into a non-repository")

    def test_config_version_99_is_unsupported(self):
        repo = self.init_repo()
        src = w.makedirs(self.path("src"))
        self.backup(repo, src)
        w.set_config_version(repo, 99)
        for args in (("snapshots",), ("backup", src), ("check",), ("ls", "latest")):
            r = self.whorl(args[0], "--repo", repo, *args[1:])
            self.assert_fails(r, 1, "unsupported repository version")

    def test_repo_taken_from_whorl_repo_env(self):
        repo = self.path("repo")
        env = {"WHORL_REPO": repo}
        r = self.whorl("init", env=env, expect=0)
        self.assertTrue(os.path.isfile(os.path.join(repo, "config")), r.describe())
        src = w.makedirs(self.path("src"))
        w.write_file(os.path.join(src, b"f"), b"hello")
        self.whorl("backup", src, env=env, expect=0)
        r = self.whorl("snapshots", "--json", env=env, expect=0)
        snaps = json.loads(r.stdout)
        self.assertEqual(len(snaps), 1, r.describe())
        self.assertEqual(snaps[0]["paths"], [src.decode()])
        self.assertEqual(len(self.snapshots(repo)), 1)
        target = self.path("t")
        self.whorl("restore", "latest", "--target", target, env=env, expect=0)
        self.assertEqual(w.read_bytes(w.restored_path(target, os.path.join(src, b"f"))),
                         b"hello")
        self.whorl("check", env=env, expect=0)

    def test_backup_and_restore_are_quiet_on_stdout_when_not_a_terminal(self):
        repo = self.init_repo()
        src = w.makedirs(self.path("src"))
        w.write_file(os.path.join(src, b"f"), os.urandom(5000))
        r = self.whorl("backup", "--repo", repo, src, expect=0)
        self.assertEqual(r.out, b"", r.describe())
        self.assertEqual(r.err, b"", r.describe())
        r = self.restore(repo, "latest", self.path("t"))
        self.assertEqual(r.out, b"", r.describe())
        self.assertEqual(r.err, b"", r.describe())


if __name__ == "__main__":
    w.main()
