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
                     size_t threads, size_t max_kept_entries)
    : excluded_(std::move(excluded)), max_kept_entries_(max_kept_entries) {
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
      // Idle until there is work or the walk is over: the caller may still hand back the
      // subdirectories of a directory it read itself (Walked).
      mu_.Await(absl::Condition(
          +[](WalkAhead* w)
               ABSL_EXCLUSIVE_LOCKS_REQUIRED(w->mu_) { return w->stop_ || !w->stack_.empty(); },
          this));
      if (stop_) return;
      dir = std::move(stack_.back());
      stack_.pop_back();
      if (claimed_.erase(dir.path) > 0) continue;  // the caller read it; its subdirs come back
      reading_.insert(dir.path);
    }
    Read(dir);
    absl::MutexLock lock(&mu_);
    reading_.erase(dir.path);
    ++dirs_read_;
  }
}

std::optional<std::vector<DirEntry>> WalkAhead::Take(const std::string& path) {
  absl::MutexLock lock(&mu_);
  if (reading_.contains(path)) {
    struct Args {
      WalkAhead* w;
      const std::string* path;
    } args{this, &path};
    mu_.Await(absl::Condition(
        +[](Args* a) ABSL_NO_THREAD_SAFETY_ANALYSIS { return !a->w->reading_.contains(*a->path); },
        &args));
  }
  auto it = kept_.find(path);
  if (it == kept_.end()) {
    // A listing dropped at the cap is read again by the caller; one no thread has read yet is
    // claimed. Past kMaxClaimed a directory may be read twice.
    if (!dropped_.contains(path) && claimed_.size() < kMaxClaimed) claimed_.insert(path);
    return std::nullopt;
  }
  std::vector<DirEntry> entries = std::move(it->second);
  kept_.erase(it);
  kept_entries_ -= entries.size();
  return entries;
}

void WalkAhead::Read(const Dir& dir) {
  std::vector<DirEntry> entries;
  if (ReadListing(dir.path, &entries) != 0) return;
  absl::MutexLock lock(&mu_);
  PushSubdirs(dir, entries);
  if (kept_entries_ + entries.size() <= max_kept_entries_) {
    kept_entries_ += entries.size();
    kept_[dir.path] = std::move(entries);
  } else if (dropped_.size() < kMaxClaimed) {
    // Read (so the caches are warm) but not kept: the walk reads it again, and its
    // subdirectories, pushed just now, must not be handed back a second time.
    dropped_.insert(dir.path);
  }
}

void WalkAhead::Walked(const std::string& path, unsigned long dev,
                       const std::vector<DirEntry>& entries) {
  absl::MutexLock lock(&mu_);
  // The subdirectories of a listing dropped at the cap were pushed when a thread read it.
  if (dropped_.erase(path) > 0) return;
  if (!stop_) PushSubdirs(Dir{path, dev}, entries);
}

void WalkAhead::PushSubdirs(const Dir& dir, const std::vector<DirEntry>& entries) {
  const std::string prefix = dir.path == "/" ? "" : dir.path;
  // Pushed in reverse name order: the smallest name is taken next, as the backup goes.
  for (auto it = entries.rbegin(); it != entries.rend(); ++it) {
    if (stack_.size() >= kMaxPending) break;
    const DirEntry& e = *it;
    if (e.err == 0 && S_ISDIR(e.st.st_mode) && static_cast<unsigned long>(e.st.st_dev) == dir.dev &&
        !excluded_(prefix + "/" + e.name, e.name)) {
      stack_.push_back(Dir{prefix + "/" + e.name, dir.dev});
    }
  }
}

int ReadListing(const std::string& path, std::vector<DirEntry>* entries, unsigned long* dev) {
  entries->clear();
  const int fd = ::open(path.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0) return errno;
  int err = 0;
  struct stat dir_st;
  if (dev != nullptr) {
    if (::fstat(fd, &dir_st) == 0) {
      *dev = static_cast<unsigned long>(dir_st.st_dev);
    } else {
      err = errno;
    }
  }
  // getdents64 straight into a buffer: opendir would add an fstat and two fcntl calls per
  // directory, which an unchanged night of 9k directories pays for on every one.
  alignas(8) char buf[32 << 10];
  while (err == 0) {
    const ssize_t n = ::getdents64(fd, buf, sizeof(buf));
    if (n < 0) {
      if (errno == EINTR) continue;
      err = errno;
      break;
    }
    if (n == 0) break;
    for (ssize_t off = 0; off < n;) {
      const auto* e = reinterpret_cast<const struct dirent64*>(buf + off);
      off += e->d_reclen;
      if (std::strcmp(e->d_name, ".") == 0 || std::strcmp(e->d_name, "..") == 0) continue;
      DirEntry& entry = entries->emplace_back();
      entry.name = e->d_name;
      if (::fstatat(fd, e->d_name, &entry.st, AT_SYMLINK_NOFOLLOW) != 0) entry.err = errno;
    }
  }
  ::close(fd);
  if (err != 0) {
    entries->clear();
    return err;
  }
  std::sort(entries->begin(), entries->end(),
            [](const DirEntry& a, const DirEntry& b) { return a.name < b.name; });
  return 0;
}

}  // namespace whorl::agent
