#!/usr/bin/env python3
"""deploy/local-cluster.sh: start, status, stop and restart of a real cluster on 127.0.0.1.
Needs WHORL_BIN_DIR (whorl-metad, whorl-chunkd, whorl-probe); ctest sets it."""

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import unittest
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCRIPT = os.path.join(ROOT, "deploy", "local-cluster.sh")
BIN_DIR = os.environ.get("WHORL_BIN_DIR", os.path.join(ROOT, "build", "bin"))


def alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ")[1][0] != "Z"
    except FileNotFoundError:
        return False


class LocalClusterTest(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="whorl-lc-")
        self.dir = os.path.join(self.tmp, "cluster")
        self.env = dict(os.environ, WHORL_BIN_DIR=BIN_DIR)

    def tearDown(self):
        self.run_script("stop", self.dir)
        shutil.rmtree(self.tmp, ignore_errors=True)

    def run_script(self, *args, env=None):
        return subprocess.run(["bash", SCRIPT, *args], env=env or self.env, capture_output=True,
                              text=True, timeout=120)

    def pids(self):
        out = {}
        for name in os.listdir(os.path.join(self.dir, "pids")):
            with open(os.path.join(self.dir, "pids", name)) as f:
                out[name[:-len(".pid")]] = int(f.read())
        return out

    def test_start_status_stop_and_start_again(self):
        r = self.run_script("start", self.dir, "--meta", "2", "--chunk", "1")
        self.assertEqual(r.returncode, 0, r.stderr)
        with open(os.path.join(self.dir, "repo-url")) as f:
            url = f.read().strip()
        with open(os.path.join(self.dir, "cluster.json")) as f:
            cmap = json.load(f)
        self.assertEqual(r.stdout.strip(), url)
        self.assertEqual(cmap["epoch"], 1)
        self.assertEqual([n["id"] for n in cmap["metadata"]], ["meta-1", "meta-2"])
        self.assertEqual([n["id"] for n in cmap["chunkstores"]], ["chunk-1"])
        self.assertEqual(url, "whorl://" + cmap["metadata"][0]["address"])
        pids = self.pids()
        self.assertEqual(sorted(pids), ["chunk-1", "meta-1", "meta-2"])
        for node, pid in pids.items():
            with open(f"/proc/{pid}/cmdline") as f:
                argv = f.read().split("\0")
            self.assertTrue(argv[0].endswith("whorl-chunkd" if node.startswith("chunk")
                                              else "whorl-metad"), argv)
            self.assertIn(node, argv)
            self.assertTrue(os.path.isdir(os.path.join(self.dir, "data", node)))
            self.assertTrue(os.path.exists(os.path.join(self.dir, "logs", node + ".log")))
        for n in cmap["metadata"] + cmap["chunkstores"]:
            probe = subprocess.run([os.path.join(BIN_DIR, "whorl-probe"), n["address"]])
            self.assertEqual(probe.returncode, 0, n)
        with open(os.path.join(self.dir, "metrics")) as f:
            for line in f:
                node, metrics_url = line.split()
                body = urllib.request.urlopen(metrics_url, timeout=10).read().decode()
                self.assertIn("whorl_", body, node)
        st = self.run_script("status", self.dir)
        self.assertEqual(st.returncode, 0, st.stderr)
        self.assertEqual(len(st.stdout.splitlines()), 3)
        self.assertTrue(all(line.split()[-1] == "up" for line in st.stdout.splitlines()), st.stdout)

        # A second start on a running cluster is refused and changes nothing.
        again = self.run_script("start", self.dir)
        self.assertEqual(again.returncode, 1)
        self.assertIn("already has a running cluster", again.stderr)
        self.assertEqual(self.pids(), pids)

        # stop ends exactly the recorded daemons: a pid file naming another process is left.
        decoy = subprocess.Popen(["sleep", "60"])
        try:
            with open(os.path.join(self.dir, "pids", "decoy.pid"), "w") as f:
                f.write(str(decoy.pid))
            stop = self.run_script("stop", self.dir)
            self.assertEqual(stop.returncode, 0, stop.stderr)
            self.assertIsNone(decoy.poll(), "stop killed a process it did not start")
        finally:
            decoy.kill()
            decoy.wait()
        for pid in pids.values():
            self.assertFalse(alive(pid), pid)
        self.assertEqual(os.listdir(os.path.join(self.dir, "pids")), [])
        for node in pids:
            with open(os.path.join(self.dir, "logs", node + ".log")) as f:
                self.assertIn('"msg":"stopped"', f.read())
        st = self.run_script("status", self.dir)
        self.assertTrue(all(line.split()[-1] == "down" for line in st.stdout.splitlines()), st.stdout)

        # Started again: the same map and URL, nodes up.
        r = self.run_script("start", self.dir)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stdout.strip(), url)
        with open(os.path.join(self.dir, "cluster.json")) as f:
            self.assertEqual(json.load(f), cmap)
        st = self.run_script("status", self.dir)
        self.assertTrue(all(line.split()[-1] == "up" for line in st.stdout.splitlines()), st.stdout)

    def test_start_fails_cleanly(self):
        r = self.run_script("start", self.dir, env=dict(self.env, WHORL_BIN_DIR=self.tmp))
        self.assertEqual(r.returncode, 1)
        self.assertIn("not found", r.stderr)
        r = self.run_script("start", self.dir, "--meta", "zero")
        self.assertEqual(r.returncode, 1)
        self.assertEqual(self.run_script("frobnicate", self.dir).returncode, 2)
        # A daemon that cannot start (its port taken): start fails naming it and leaves
        # nothing running.
        r = self.run_script("start", self.dir, "--meta", "1", "--chunk", "1")
        self.assertEqual(r.returncode, 0, r.stderr)
        pids = self.pids()
        self.assertEqual(self.run_script("stop", self.dir).returncode, 0)
        with open(os.path.join(self.dir, "cluster.json")) as f:
            cmap = json.load(f)
        blocker = socket.socket()
        host, port = cmap["chunkstores"][0]["address"].split(":")
        blocker.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        blocker.bind((host, int(port)))
        blocker.listen()
        try:
            r = self.run_script("start", self.dir)
            self.assertEqual(r.returncode, 1)
            self.assertIn("chunk-1", r.stderr)
        finally:
            blocker.close()
        self.assertEqual(os.listdir(os.path.join(self.dir, "pids")), [])
        self.assertEqual(self.daemons_of_this_dir(), [])

    def daemons_of_this_dir(self):
        found = []
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                with open(f"/proc/{pid}/cmdline") as f:
                    if self.dir in f.read() and alive(int(pid)):
                        found.append(int(pid))
            except OSError:
                pass
        return found


if __name__ == "__main__":
    unittest.main(verbosity=2)
