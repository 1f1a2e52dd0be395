#include "agent/walk_ahead.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

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

std::optional<std::vector<DirEntry>> WalkAhead::Take(const std::string& path) {
  absl::MutexLock lock(&mu_);
  auto it = kept_.find(path);
  if (it == kept_.end()) return std::nullopt;
  std::vector<DirEntry> entries = std::move(it->second);
  kept_.erase(it);
  kept_entries_ -= entries.size();
  return entries;
}

void WalkAhead::Read(const Dir& dir) {
  std::vector<DirEntry> entries;
  if (ReadListing(dir.path, &entries) != 0) return;
  const std::string prefix = dir.path == "/" ? "" : dir.path;
  std::vector<std::string> subdirs;
  for (const DirEntry& e : entries) {
    if (stopping_.load(std::memory_order_relaxed)) return;
    if (e.err == 0 && S_ISDIR(e.st.st_mode) && static_cast<unsigned long>(e.st.st_dev) == dir.dev &&
        !excluded_(prefix + "/" + e.name, e.name)) {
      subdirs.push_back(e.name);
    }
  }
  absl::MutexLock lock(&mu_);
  // Pushed in reverse name order: the smallest name is taken next, as the backup goes.
  for (auto it = subdirs.rbegin(); it != subdirs.rend(); ++it) {
    if (stack_.size() >= kMaxPending) break;
    stack_.push_back(Dir{prefix + "/" + *it, dir.dev});
  }
  if (kept_entries_ + entries.size() <= kMaxKeptEntries) {
    kept_entries_ += entries.size();
    kept_[dir.path] = std::move(entries);
  }
}

int ReadListing(const std::string& path, std::vector<DirEntry>* entries) {
  entries->clear();
  const int fd = ::open(path.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0) return errno;
  DIR* d = ::fdopendir(fd);
  if (d == nullptr) {
    const int err = errno;
    ::close(fd);
    return err;
  }
  while (struct dirent* e = ::readdir(d)) {
    if (std::strcmp(e->d_name, ".") == 0 || std::strcmp(e->d_name, "..") == 0) continue;
    DirEntry& entry = entries->emplace_back();
    entry.name = e->d_name;
    if (::fstatat(fd, e->d_name, &entry.st, AT_SYMLINK_NOFOLLOW) != 0) entry.err = errno;
  }
  ::closedir(d);
  std::sort(entries->begin(), entries->end(),
            [](const DirEntry& a, const DirEntry& b) { return a.name < b.name; });
  return 0;
}

}  // namespace whorl::agent
