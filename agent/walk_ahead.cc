#include "agent/walk_ahead.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>

namespace whorl::agent {

WalkAhead::WalkAhead(const std::vector<std::string>& roots,
                     std::function<bool(const std::string&, const std::string&)> excluded,
                     size_t threads)
    : excluded_(std::move(excluded)) {
  {
    absl::MutexLock lock(&mu_);
    // Reverse order: the first root is walked first, as the backup does.
    for (auto it = roots.rbegin(); it != roots.rend(); ++it) {
      struct stat st;
      if (::lstat(it->c_str(), &st) == 0 && S_ISDIR(st.st_mode)) {
        stack_.push_back(Dir{*it, static_cast<unsigned long>(st.st_dev)});
      }
    }
  }
  for (size_t i = 0; i < threads; ++i) threads_.emplace_back([this] { Run(); });
}

WalkAhead::~WalkAhead() {
  {
    absl::MutexLock lock(&mu_);
    stop_ = true;
    stopping_.store(true, std::memory_order_relaxed);
  }
  for (auto& t : threads_) t.join();
}

size_t WalkAhead::dirs_read() const {
  absl::MutexLock lock(&mu_);
  return dirs_read_;
}

void WalkAhead::Run() {
  for (;;) {
    Dir dir;
    {
      absl::MutexLock lock(&mu_);
      // Wait while others may still find work; done when nothing waits and nobody reads.
      mu_.Await(absl::Condition(
          +[](WalkAhead* w) ABSL_EXCLUSIVE_LOCKS_REQUIRED(w->mu_) {
            return w->stop_ || !w->stack_.empty() || w->busy_ == 0;
          },
          this));
      if (stop_ || stack_.empty()) return;
      dir = std::move(stack_.back());
      stack_.pop_back();
      ++busy_;
    }
    Read(dir);
    absl::MutexLock lock(&mu_);
    --busy_;
    ++dirs_read_;
  }
}

void WalkAhead::Read(const Dir& dir) {
  const int fd = ::open(dir.path.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0) return;
  DIR* d = ::fdopendir(fd);
  if (d == nullptr) {
    ::close(fd);
    return;
  }
  const std::string prefix = dir.path == "/" ? "" : dir.path;
  std::vector<std::string> subdirs;
  while (struct dirent* e = ::readdir(d)) {
    const std::string name = e->d_name;
    if (name == "." || name == "..") continue;
    if (stopping_.load(std::memory_order_relaxed)) break;
    struct stat st;
    if (::fstatat(fd, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) continue;
    if (S_ISDIR(st.st_mode) && static_cast<unsigned long>(st.st_dev) == dir.dev &&
        !excluded_(prefix + "/" + name, name)) {
      subdirs.push_back(name);
    }
  }
  ::closedir(d);
  // Pushed in reverse name order: the smallest name is taken next, as the backup goes.
  std::sort(subdirs.rbegin(), subdirs.rend());
  absl::MutexLock lock(&mu_);
  for (const std::string& name : subdirs) {
    if (stack_.size() >= kMaxPending) break;
    stack_.push_back(Dir{prefix + "/" + name, dir.dev});
  }
}

}  // namespace whorl::agent
