"""Randomized crash harness (issue 6): kill -9 at random moments, restart, prove nothing
acknowledged is lost.

cluster mode: a deploy/local-cluster.sh cluster (default 2 whorl-metad + 2 whorl-chunkd); two
agents back up overlapping trees (shared files plus new files every cycle) at the same time,
and each cycle one randomly chosen whorl-chunkd, whorl-metad or agent is killed with SIGKILL at
a random moment, then restarted.

embedded mode: two agents on one embedded repository (they take turns on its lock); each cycle
one of them dies, either by SIGKILL from outside at a random moment or at a random durability
step inside (WHORL_KILL_POINT=random:P, so mid-put and mid-commit kills are frequent).

Ledger (Jepsen's set checker): a snapshot is acknowledged only once `whorl backup` exited 0 and
printed its id, and is recorded with the tree state it was taken of. A chunk is acknowledged
once a PutChunks holding it returned OK in an agent, which then appends its fingerprint to the
file WHORL_ACK_LOG names (one file per agent run; a line torn by a kill does not count), whether
the backup goes on to succeed or not. After every cycle: a backup of each agent whose run failed
completes, the snapshots acknowledged in the cycle restore byte-exact, `whorl check --read-data`
is clean (every --check-every cycles), and the chunks acknowledged are stored, indexed and hash
to their fingerprints (`whorl debug chunks`: those of the cycle, and every one acknowledged so
far on the cycles check runs). At the end every acknowledged snapshot restores byte-exact and
every acknowledged chunk reads back. Zero lost, or exit 1.

  tests/crash/run.sh --cycles 200 --seed 5           # both modes, 200 cycles each
  python3 tests/crash/crash.py --mode cluster --cycles 20 --seed 1
"""

import argparse
import os
import random
import shutil
import signal
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import crashlib as c  # noqa: E402


class Agent:
    def __init__(self, name, root, seed):
        self.name = name
        self.src = os.path.join(root, "src-" + name)
        self.tree = c.GrowingTree(self.src, seed=seed, keep=8)
        self.proc = self.argv = self.state = None
        self.ack_log = None  # the WHORL_ACK_LOG file of its current run


class Harness:
    def __init__(self, args, mode, workdir):
        self.args, self.mode, self.dir = args, mode, workdir
        self.rng = random.Random(f"{args.seed}-{mode}")
        self.ledger = c.Ledger()
        self.kills = {}
        self.failed_backups = 0
        self.unacked = []  # (host, start, end, source, state) of backups that did not succeed
        self.committed = set()  # snapshots committed though never acknowledged, verified
        self.problems = []
        self.env = {"XDG_CACHE_HOME": os.path.join(workdir, "cache")}
        self.scratch = os.path.join(workdir, "scratch")
        os.makedirs(self.scratch)
        self.ack_dir = os.path.join(workdir, "acks")  # one WHORL_ACK_LOG file per agent run
        os.makedirs(self.ack_dir)
        self.runs = 0
        self.agents = [Agent(n, workdir, args.seed * 10 + i) for i, n in enumerate("ab")]
        self.cluster = None
        if mode == "cluster":
            self.cluster = c.Cluster(os.path.join(workdir, "cluster"), args.meta, args.chunk)
            self.repo = self.cluster.url
        else:
            self.repo = os.path.join(workdir, "repo")
        r = c.whorl(["init", "--repo", self.repo], env=self.env)
        if r.code != 0:
            raise c.CrashTestError("init failed\n" + r.describe())
        self.backup_seconds = 0.5  # a clean backup's duration, measured as we go

    def log(self, msg):
        if self.args.verbose:
            print(f"[{self.mode}] {msg}", flush=True)

    def start_backup(self, agent, env=None):
        agent.state = agent.tree.grow()
        agent.started = time.time()
        self.runs += 1
        agent.ack_log = os.path.join(self.ack_dir, f"{self.runs:05d}-{agent.name}.log")
        agent.argv, agent.proc = c.start_whorl(
            ["backup", "--repo", self.repo, "--json", "--host", "host-" + agent.name, agent.src],
            env=dict(self.env, **(env or {}), **{c.ACK_LOG_ENV: agent.ack_log}))

    def finish_backup(self, agent):
        run = c.finish(agent.argv, agent.proc)
        agent.proc = None
        try:
            self.ledger.ack_chunks(c.read_ack_log(agent.ack_log))
        except c.CrashTestError as e:
            self.problems.append(f"{agent.name}: {e}")
        snap = c.snapshot_id_of(run) if run.code == 0 else None
        if snap is not None:
            self.ledger.ack(snap, agent.src, agent.state)
        elif run.code not in (1, -signal.SIGKILL):
            self.problems.append(f"{agent.name}: unexpected exit\n{run.describe()}")
        else:  # it may still have committed: remember what it backed up, and when
            self.unacked.append(("host-" + agent.name, agent.started - 1, time.time() + 1,
                                 agent.src, agent.state))
        return snap, run

    def verify_committed_unacknowledged(self, cycle, listed):
        """A snapshot listed though its backup failed (killed after the commit) must restore
        too, to the tree one of the failed attempts of its host saw around its commit time.
        Consecutive attempts are seconds apart, so a padded time window can hold two of them:
        each candidate is tried, and the snapshot passes if it restores to one of their trees."""
        for s in listed:
            if s["id"] in self.ledger.acked or s["id"] in self.committed:
                continue
            match = [u for u in self.unacked if u[0] == s["host"] and u[1] <= s["time"] <= u[2]]
            if not match:
                self.problems.append(f"cycle {cycle}: snapshot {s['id'][:12]} of {s['host']} "
                                     f"matches no failed backup")
                continue
            match.sort(key=lambda u: abs((u[1] + u[2]) / 2 - s["time"]))
            first = None
            for u in match:
                problems = c.restore_matches(self.repo, s["id"], u[3], u[4], self.scratch,
                                             self.env)
                if not problems:
                    self.committed.add(s["id"])
                    break
                first = first or problems
            else:
                self.problems += [f"cycle {cycle}: snapshot {s['id'][:12]} restores to none of "
                                  f"the {len(match)} failed backups it may be"] + first

    def count_kill(self, kind):
        self.kills[kind] = self.kills.get(kind, 0) + 1

    def chaos(self, cycle):
        """Both agents back up; one process dies at a random moment and is restarted."""
        random_point = self.mode == "embedded" and self.rng.random() < 0.5
        victim_agent = self.rng.choice(self.agents)
        kinds = ["agent", "chunkd", "metad"] if self.cluster else ["agent"]
        kind = self.rng.choice(kinds)
        for a in self.agents:
            env = None
            if random_point and a is victim_agent:
                env = self.random_point_env()
            self.start_backup(a, env)
        delay = self.rng.uniform(0, 1.2 * self.backup_seconds)
        time.sleep(delay)
        if random_point:
            what = f"{victim_agent.name} at a random kill point"
        elif kind == "agent":
            what = f"agent {victim_agent.name} after {delay:.2f}s"
            if victim_agent.proc.poll() is None:
                victim_agent.proc.send_signal(signal.SIGKILL)
            else:
                what += " (already done)"
        else:
            node = self.rng.choice(self.cluster.ids(kind))
            what = f"{node} after {delay:.2f}s"
            self.restart_dead_daemons()  # an armed one that died at a point is not the victim
            self.cluster.kill(node)
            self.count_kill(kind)
            time.sleep(self.rng.uniform(0, 0.3))
            # Half the time it comes back armed: it dies again at a random durability step,
            # maybe cycles later, and is then restarted clean.
            if self.rng.random() < 0.5:
                what += ", restarted armed"
                self.start_armed(node)
            else:
                self.cluster.start_node(node)
        failed = []
        for a in self.agents:
            snap, run = self.finish_backup(a)
            if a is victim_agent and run.code == -signal.SIGKILL:
                self.count_kill("agent_at_kill_point" if random_point else "agent")
            if snap is None:
                failed.append(a)
                self.failed_backups += 1
                why = (run.err.strip().splitlines() or [""])[-1][:300]
                self.log(f"  {a.name} exit {run.code}: {why}")
        for node in self.restart_dead_daemons():
            what += f"; {node} died at a kill point"
        self.log(f"cycle {cycle}: killed {what}; failed: {[a.name for a in failed]}")
        return failed

    def restart_dead_daemons(self):
        """Restarts (clean) every armed daemon that died at a kill point; returns their ids."""
        dead = []
        for node, child in list(self.cluster.children.items() if self.cluster else []):
            if child.poll() is None:
                continue
            if child.returncode != -signal.SIGKILL:
                self.problems.append(f"{node} exited {child.returncode}\n"
                                     f"{self.cluster.log_tail(node)}")
            self.count_kill(self.cluster.nodes[node][0] + "_at_kill_point")
            self.cluster.start_node(node)
            dead.append(node)
        return dead

    def start_armed(self, node):
        """Starts NODE with a random kill point armed; it may die in its own recovery."""
        self.cluster.start_node(node, env=self.random_point_env(), wait_healthy=False)
        try:
            self.cluster.wait_healthy(node)
        except c.CrashTestError:
            if self.cluster.children[node].poll() is None:
                raise
            self.restart_dead_daemons()

    def random_point_env(self):
        return {"WHORL_KILL_POINT": f"random:{self.args.point_probability}",
                "WHORL_KILL_SEED": str(self.rng.randrange(1 << 30))}

    def after_cycle(self, cycle, failed, acked_before, chunks_before):
        # The next backup completes: every agent that failed (at least one agent each cycle).
        for a in failed or [self.agents[cycle % 2]]:
            t0 = time.monotonic()
            for _ in range(3):  # again only if an armed daemon died at a kill point meanwhile
                self.start_backup(a)
                snap, run = self.finish_backup(a)
                if snap is not None or not self.restart_dead_daemons():
                    break
            if snap is None:
                self.problems.append(f"cycle {cycle}: backup after the restart failed\n"
                                     f"{run.describe()}")
            else:
                self.backup_seconds = 0.7 * self.backup_seconds + 0.3 * (time.monotonic() - t0)
        new = set(self.ledger.acked) - acked_before
        self.problems += self.ledger.verify(self.repo, self.scratch, new, self.env)
        if cycle % self.args.check_every == 0 or cycle == self.args.cycles:
            self.problems += c.check_clean(self.repo, self.env)
            new_chunks = None  # all acknowledged so far
        else:
            new_chunks = self.ledger.chunks - chunks_before
        self.problems += self.ledger.verify_chunks(self.repo, self.scratch, new_chunks, self.env)
        snaps = c.snapshot_list(self.repo, self.env)
        self.verify_committed_unacknowledged(cycle, snaps)
        lost = set(self.ledger.acked) - {s["id"] for s in snaps}
        if lost:
            self.problems.append(f"cycle {cycle}: acknowledged snapshots not listed: {lost}")

    def run(self):
        start = time.monotonic()
        for cycle in range(1, self.args.cycles + 1):
            if self.args.max_minutes and time.monotonic() - start > 60 * self.args.max_minutes:
                cycle -= 1
                print(f"crash: [{self.mode}] stopping after {cycle} cycles: --max-minutes "
                      f"{self.args.max_minutes} reached", flush=True)
                break
            acked_before, chunks_before = set(self.ledger.acked), set(self.ledger.chunks)
            t0 = time.monotonic()
            failed = self.chaos(cycle)
            t1 = time.monotonic()
            self.after_cycle(cycle, failed, acked_before, chunks_before)
            self.log(f"  chaos {t1 - t0:.1f}s, checks {time.monotonic() - t1:.1f}s")
            if self.problems:
                break
        # The end: every acknowledged snapshot, from the first, restores byte-exact, and every
        # acknowledged chunk reads back.
        self.ledger.verified.clear()
        self.ledger.chunks_verified.clear()
        self.problems += self.ledger.verify(self.repo, self.scratch, env=self.env)
        self.problems += self.ledger.verify_chunks(self.repo, self.scratch, env=self.env)
        lost = len(self.ledger.acked) - len(self.ledger.verified)
        chunks_lost = len(self.ledger.chunks) - len(self.ledger.chunks_verified)
        kills = " ".join(f"{k}={v}" for k, v in sorted(self.kills.items())) or "none"
        print(f"crash summary: mode={self.mode} seed={self.args.seed} cycles={cycle} "
              f"kills: {kills} failed_backups={self.failed_backups} "
              f"snapshots_acknowledged={len(self.ledger.acked)} "
              f"snapshots_verified={len(self.ledger.verified)} "
              f"committed_unacknowledged={len(self.committed)} lost={lost} "
              f"chunks_acknowledged={len(self.ledger.chunks)} "
              f"chunks_verified={len(self.ledger.chunks_verified)} chunks_lost={chunks_lost} "
              f"seconds={time.monotonic() - start:.0f}", flush=True)
        return lost + chunks_lost

    def close(self):
        for a in self.agents:
            if a.proc is not None:
                a.proc.kill()
                a.proc.wait()
        if self.cluster:
            self.cluster.stop()


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--mode", choices=["cluster", "embedded", "both"], default="both")
    p.add_argument("--cycles", type=int, default=20)
    p.add_argument("--seed", type=int, default=int(time.time()) % 100000)
    p.add_argument("--meta", type=int, default=2)
    p.add_argument("--chunk", type=int, default=2)
    p.add_argument("--check-every", type=int, default=1,
                   help="run check --read-data every N cycles (and after the last)")
    p.add_argument("--point-probability", type=float, default=0.02,
                   help="embedded: chance to die at each kill point hit")
    p.add_argument("--max-minutes", type=float, default=0,
                   help="start no new cycle after this long (per mode); 0: no limit")
    p.add_argument("--dir", help="work directory (kept); default a temp dir (on /dev/shm if it "
                   "has room, see crashlib.work_base), removed if clean")
    p.add_argument("--verbose", "-v", action="store_true")
    args = p.parse_args()
    print(f"crash: seed {args.seed} (rerun with --seed {args.seed})", flush=True)
    base = args.dir or tempfile.mkdtemp(prefix="whorl-crash-", dir=c.work_base())
    modes = ["embedded", "cluster"] if args.mode == "both" else [args.mode]
    total_lost, problems = 0, []
    for mode in modes:
        workdir = os.path.join(base, mode)
        shutil.rmtree(workdir, ignore_errors=True)
        os.makedirs(workdir)
        h = Harness(args, mode, workdir)
        try:
            total_lost += h.run()
            problems += h.problems
        finally:
            h.close()
    for prob in problems:
        print("PROBLEM: " + prob, file=sys.stderr)
    if problems or total_lost:
        print(f"crash: FAILED; work directory kept: {base}", file=sys.stderr)
        return 1
    if not args.dir:
        shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
