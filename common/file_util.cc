#include "common/file_util.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstring>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace whorl {

absl::Status ErrnoStatus(std::string_view op, std::string_view path, int err) {
  std::string msg = std::string(op) + " " + std::string(path) + ": " + std::strerror(err);
  switch (err) {
    case ENOENT:
      return absl::NotFoundError(msg);
    case EACCES:
    case EPERM:
      return absl::PermissionDeniedError(msg);
    case ENOSPC:
    case EDQUOT:
      return absl::ResourceExhaustedError(msg);
    default:
      return absl::InternalError(msg);
  }
}

absl::StatusOr<std::string> ReadFile(const std::string& path, size_t max_size) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return ErrnoStatus("open", path, errno);
  struct stat st;
  if (::fstat(fd, &st) != 0) {
    const int err = errno;
    ::close(fd);
    return ErrnoStatus("stat", path, err);
  }
  if (static_cast<uint64_t>(st.st_size) > max_size) {
    ::close(fd);
    return absl::FailedPreconditionError(path + ": larger than " + std::to_string(max_size) +
                                         " bytes");
  }
  std::string data;
  absl::Status s = PreadExact(fd, 0, static_cast<size_t>(st.st_size), &data, path);
  ::close(fd);
  if (!s.ok()) return s;
  return data;
}

absl::Status WriteAll(int fd, std::string_view data, std::string_view path_for_errors) {
  while (!data.empty()) {
    const ssize_t n = ::write(fd, data.data(), data.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      return ErrnoStatus("write", path_for_errors, errno);
    }
    data.remove_prefix(static_cast<size_t>(n));
  }
  return absl::OkStatus();
}

absl::Status WriteAllV(int fd, std::span<const std::string_view> parts,
                       std::string_view path_for_errors) {
  std::vector<struct iovec> iov;
  iov.reserve(std::min<size_t>(parts.size(), IOV_MAX));
  size_t next = 0;  // the first part not yet in `iov`
  while (next < parts.size() || !iov.empty()) {
    while (next < parts.size() && iov.size() < IOV_MAX) {
      const std::string_view p = parts[next++];
      if (!p.empty()) iov.push_back({const_cast<char*>(p.data()), p.size()});
    }
    if (iov.empty()) break;
    ssize_t n = ::writev(fd, iov.data(), static_cast<int>(iov.size()));
    if (n < 0) {
      if (errno == EINTR) continue;
      return ErrnoStatus("write", path_for_errors, errno);
    }
    // Drops what went out: whole buffers, then the written front of a partly written one.
    size_t done = 0;
    while (done < iov.size() && static_cast<size_t>(n) >= iov[done].iov_len) {
      n -= static_cast<ssize_t>(iov[done].iov_len);
      ++done;
    }
    if (done < iov.size()) {
      iov[done].iov_base = static_cast<char*>(iov[done].iov_base) + n;
      iov[done].iov_len -= static_cast<size_t>(n);
    }
    iov.erase(iov.begin(), iov.begin() + static_cast<std::ptrdiff_t>(done));
  }
  return absl::OkStatus();
}

absl::Status PreadExact(int fd, uint64_t offset, size_t n, std::string* out,
                        std::string_view path_for_errors) {
  out->resize(n);
  return PreadExact(fd, offset, n, out->data(), path_for_errors);
}

absl::Status PreadExact(int fd, uint64_t offset, size_t n, char* out,
                        std::string_view path_for_errors) {
  size_t done = 0;
  while (done < n) {
    const ssize_t r = ::pread(fd, out + done, n - done, static_cast<off_t>(offset + done));
    if (r < 0) {
      if (errno == EINTR) continue;
      return ErrnoStatus("read", path_for_errors, errno);
    }
    if (r == 0) {
      return absl::DataLossError(std::string(path_for_errors) + ": unexpected end of file at " +
                                 std::to_string(offset + done));
    }
    done += static_cast<size_t>(r);
  }
  return absl::OkStatus();
}

absl::StatusOr<int> RemoveEmptyWals(const std::string& dir, uint64_t below) {
  DIR* d = ::opendir(dir.c_str());
  if (d == nullptr) return ErrnoStatus("opendir", dir, errno);
  int removed = 0;
  absl::Status status;
  while (const dirent* e = ::readdir(d)) {
    const std::string_view name(e->d_name);
    constexpr std::string_view kSuffix = ".log";
    if (name.size() <= kSuffix.size() || !name.ends_with(kSuffix)) continue;
    const std::string_view number = name.substr(0, name.size() - kSuffix.size());
    if (number.empty() || number.size() > 19 ||
        number.find_first_not_of("0123456789") != number.npos ||
        std::stoull(std::string(number)) >= below) {
      continue;
    }
    const std::string path = dir + "/" + std::string(name);
    struct stat st;
    if (::lstat(path.c_str(), &st) != 0 || !S_ISREG(st.st_mode) || st.st_size != 0) continue;
    if (::unlink(path.c_str()) != 0) {
      status = ErrnoStatus("unlink", path, errno);
      break;
    }
    ++removed;
  }
  ::closedir(d);
  if (!status.ok()) return status;
  return removed;
}

absl::Status SyncDir(const std::string& dir) {
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return ErrnoStatus("open", dir, errno);
  const int rc = ::fsync(fd);
  const int err = errno;
  ::close(fd);
  if (rc != 0) return ErrnoStatus("fsync", dir, err);
  return absl::OkStatus();
}

absl::Status WriteFileAtomic(const std::string& path, std::string_view data) {
  const std::string tmp = path + ".tmp";
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return ErrnoStatus("create", tmp, errno);
  absl::Status s = WriteAll(fd, data, tmp);
  if (s.ok() && ::fsync(fd) != 0) s = ErrnoStatus("fsync", tmp, errno);
  ::close(fd);
  if (s.ok() && ::rename(tmp.c_str(), path.c_str()) != 0) s = ErrnoStatus("rename", tmp, errno);
  if (!s.ok()) {
    ::unlink(tmp.c_str());
    return s;
  }
  const size_t slash = path.rfind('/');
  return SyncDir(slash == std::string::npos ? "." : (slash == 0 ? "/" : path.substr(0, slash)));
}

absl::Status CheckFreeSpace(const std::string& dir, uint64_t need, uint64_t reserve) {
  struct statvfs st;
  if (::statvfs(dir.c_str(), &st) != 0) return ErrnoStatus("statvfs", dir, errno);
  const uint64_t free_bytes = static_cast<uint64_t>(st.f_bavail) * st.f_frsize;
  if (free_bytes >= need && free_bytes - need >= reserve) return absl::OkStatus();
  constexpr double kMiB = 1 << 20;
  return absl::ResourceExhaustedError(absl::StrFormat(
      "No space left on device: %s has %.1f MiB free; this write needs %.1f MiB and %.1f MiB "
      "stay free for the store's database",
      dir, free_bytes / kMiB, need / kMiB, reserve / kMiB));
}

absl::Status WriteLatch::Check() const {
  absl::MutexLock lock(&mu_);
  if (failed_.ok()) return absl::OkStatus();
  return absl::FailedPreconditionError(
      absl::StrCat(store_, ": a write failed earlier (", failed_.message(),
                   "); it takes no more writes until it is reopened (restart the daemon)"));
}

absl::Status WriteLatch::Note(absl::Status s) {
  if (!s.ok()) {
    absl::MutexLock lock(&mu_);
    if (failed_.ok()) failed_ = s;
  }
  return s;
}

}  // namespace whorl
