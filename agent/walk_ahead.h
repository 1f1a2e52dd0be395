// WalkAhead: threads that walk the backup's directories ahead of it, reading each directory and
// lstat-ing its entries. The listings (names and lstat results) are kept, up to kMaxKeptEntries
// entries, for the backup's walk to Take instead of reading the directory again; the rest at
// least leaves the kernel's dentry and inode caches warm.
//
// Why: a nightly run over an unchanged tree costs a readdir per directory and an lstat per file,
// nothing else; with a cold cache each waits for the disk. Several threads keep several reads in
// flight. They go depth first in name order, as the backup does, so what they read is what the
// backup needs next. Each directory is read once: the walk waits for a listing a thread is
// reading right now; one no thread has started (the walk got there first, or it is over the
// cap) the walk claims, reads itself (ReadListing) and hands back (Walked), so the threads skip
// it and go on below it. A listing may be taken a moment after it was read: the backup sees the
// directory as of that moment.
//
// Never descends into a directory on another device than the root it started from (a network
// mount the backup may skip with --one-file-system must not be walked here either), nor into
// one the caller excludes. Memory stays bounded: at most kMaxPending directories wait and
// kMaxKeptEntries entries are kept. Past that cap the threads go on reading (the caches stay
// warm ahead of a walk held up by a cold disk) without keeping: the walk reads such a directory
// again, and its subdirectories, already pushed, are not handed back twice.
#ifndef WHORL_AGENT_WALK_AHEAD_H_
#define WHORL_AGENT_WALK_AHEAD_H_

#include <sys/stat.h>

#include <atomic>
#include <functional>
#include <optional>
#include <string>
#include <thread>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "absl/synchronization/mutex.h"

namespace whorl::agent {

// A directory's entries in name order ("." and ".." left out), each with its lstat result.
struct DirEntry {
  std::string name;
  struct stat st;
  int err = 0;  // lstat failed with this errno (st is unset)
};

// Reads directory `path` (never following a symlink to it) and, if `dev` is given, the device it
// is on. Returns 0, or the errno of opening it.
int ReadListing(const std::string& path, std::vector<DirEntry>* entries,
                unsigned long* dev = nullptr);

class WalkAhead {
 public:
  static constexpr size_t kMaxPending = 1 << 16;
  // ~6 MB of listings at most (a DirEntry is ~190 bytes). Room for the source tree's 29k
  // entries: with 8k, the walk read 4.4k of its 9k directories a second time (the threads had
  // dropped them at the cap), 20k more lstat calls. Unchanged night side by side, cold cache:
  // 0.57-0.69 s with 8k, 0.57-0.59 s with 32k; first-backup peak RSS the same within the noise.
  static constexpr size_t kMaxKeptEntries = 1 << 15;
  // Reads in flight. An unchanged night over the source tree (9k directories, 20k files, cold
  // cache), side by side: 4 threads 0.50 s, 6 and 8 0.47 s, 12 0.48 s, 16 0.62 s (median of 4-8
  // runs each; the disk takes more requests at once than 4, more threads contend on locks).
  static constexpr size_t kDefaultThreads = 8;
  // The cap for a first backup (no parent snapshot). It reads every file, so its walk goes at
  // the speed of its reads and hashing, and listings kept far ahead of it only take memory:
  // ~29k entries (5.6 MB) at the source tree's peak, the whole cap (6 MB) at twice the tree, so
  // the peak grew with the tree. Past 4k entries (~0.8 MB, most of a second of that walk) the
  // threads read on without keeping, which keeps the caches warm ahead of the walk; the walk
  // reads those directories again from the caches. The tree's first backup and the tree twice
  // the size, ten cold rounds each, alternating with the 32k cap: wall time the same (medians
  // 3.97 and 3.96 s), system CPU +0.08 s, peak RSS 60 -> 56 MiB and 66 -> 60.5 MiB (every round
  // within +10% of its 1x run, against +8-17% with the 32k cap).
  static constexpr size_t kFirstBackupKeptEntries = 1 << 12;

  // `excluded(path, name)` says whether the backup skips a directory entry.
  WalkAhead(const std::vector<std::string>& roots,
            std::function<bool(const std::string&, const std::string&)> excluded,
            size_t threads = kDefaultThreads, size_t max_kept_entries = kMaxKeptEntries);
  // Stops the threads (at their next entry) and joins them.
  ~WalkAhead();
  WalkAhead(const WalkAhead&) = delete;
  WalkAhead& operator=(const WalkAhead&) = delete;

  // The listing of `path` if it was read ahead and kept (handed over once), waiting for it if a
  // thread is reading it now. Else nullopt, and `path` is claimed: the caller reads it itself
  // and should pass the listing to Walked.
  std::optional<std::vector<DirEntry>> Take(const std::string& path);
  // The caller read the claimed directory `path` (on device `dev`): its subdirectories are
  // walked ahead of the caller.
  void Walked(const std::string& path, unsigned long dev, const std::vector<DirEntry>& entries);

  // Directories read so far (for tests).
  size_t dirs_read() const;

 private:
  struct Dir {
    std::string path;
    unsigned long dev;
  };
  void Run();
  void Read(const Dir& dir);
  void PushSubdirs(const Dir& dir, const std::vector<DirEntry>& entries)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  static constexpr size_t kMaxClaimed = 1 << 16;

  const std::function<bool(const std::string&, const std::string&)> excluded_;
  const size_t max_kept_entries_;
  mutable absl::Mutex mu_;
  std::vector<Dir> stack_ ABSL_GUARDED_BY(mu_);  // the next directory is at the back
  size_t dirs_read_ ABSL_GUARDED_BY(mu_) = 0;
  std::unordered_map<std::string, std::vector<DirEntry>> kept_ ABSL_GUARDED_BY(mu_);
  size_t kept_entries_ ABSL_GUARDED_BY(mu_) = 0;
  std::unordered_set<std::string> reading_ ABSL_GUARDED_BY(mu_);  // by a thread, right now
  std::unordered_set<std::string> claimed_ ABSL_GUARDED_BY(mu_);  // read by the caller
  // Read by a thread but not kept (at the cap): its subdirectories are already pushed.
  std::unordered_set<std::string> dropped_ ABSL_GUARDED_BY(mu_);
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  std::atomic<bool> stopping_{false};  // stop_, read without the lock between entries
  std::vector<std::thread> threads_;
};

}  // namespace whorl::agent

#endif  // WHORL_AGENT_WALK_AHEAD_H_
