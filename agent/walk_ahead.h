// WalkAhead: threads that walk the backup's directories ahead of it, reading each directory and
// lstat-ing its entries, so that the backup's own walk finds the kernel's dentry and inode
// caches warm instead of waiting for one disk read per directory block and inode in turn.
//
// Why: a nightly run over an unchanged tree costs a readdir per directory and an lstat per file,
// nothing else; with a cold cache each waits for the disk. Several threads keep several reads in
// flight. They go depth first in name order, as the backup does, so what they warm is what the
// backup needs next. Results are not used: only the caches are (a hint; failures are ignored).
//
// Never descends into a directory on another device than the root it started from (a network
// mount the backup may skip with --one-file-system must not be walked here either), nor into
// one the caller excludes. Memory stays bounded: at most kMaxPending directories wait; beyond
// that subtrees are not warmed.
#ifndef WHORL_AGENT_WALK_AHEAD_H_
#define WHORL_AGENT_WALK_AHEAD_H_

#include <atomic>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include "absl/synchronization/mutex.h"

namespace whorl::agent {

class WalkAhead {
 public:
  static constexpr size_t kMaxPending = 1 << 16;

  // `excluded(path, name)` says whether the backup skips a directory entry.
  WalkAhead(const std::vector<std::string>& roots,
            std::function<bool(const std::string&, const std::string&)> excluded,
            size_t threads = 4);
  // Stops the threads (at their next entry) and joins them.
  ~WalkAhead();
  WalkAhead(const WalkAhead&) = delete;
  WalkAhead& operator=(const WalkAhead&) = delete;

  // Directories read so far (for tests).
  size_t dirs_read() const;

 private:
  struct Dir {
    std::string path;
    unsigned long dev;
  };
  void Run();
  void Read(const Dir& dir);

  const std::function<bool(const std::string&, const std::string&)> excluded_;
  mutable absl::Mutex mu_;
  std::vector<Dir> stack_ ABSL_GUARDED_BY(mu_);  // the next directory is at the back
  size_t busy_ ABSL_GUARDED_BY(mu_) = 0;
  size_t dirs_read_ ABSL_GUARDED_BY(mu_) = 0;
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  std::atomic<bool> stopping_{false};  // stop_, read without the lock between entries
  std::vector<std::thread> threads_;
};

}  // namespace whorl::agent

#endif  // WHORL_AGENT_WALK_AHEAD_H_
