// Small POSIX file helpers with absl::Status errors that name the path and the errno text.
#ifndef WHORL_COMMON_FILE_UTIL_H_
#define WHORL_COMMON_FILE_UTIL_H_

#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace whorl {

// Status for a failed system call: NOT_FOUND for ENOENT, PERMISSION_DENIED for EACCES/EPERM,
// RESOURCE_EXHAUSTED for ENOSPC/EDQUOT, else INTERNAL. Message: "<op> <path>: <strerror>".
absl::Status ErrnoStatus(std::string_view op, std::string_view path, int err);

// Reads a whole file; FAILED_PRECONDITION if it is larger than `max_size`.
absl::StatusOr<std::string> ReadFile(const std::string& path, size_t max_size);

// Writes `data` to `path` so that after return the file has either its old or its new content
// whatever crash follows: write a temporary file, fsync it, rename it over `path`, fsync the dir.
absl::Status WriteFileAtomic(const std::string& path, std::string_view data);

// fsyncs a directory, making renames and creations in it durable.
absl::Status SyncDir(const std::string& dir);

// Writes all of `data` at the fd's current position, retrying short writes and EINTR.
absl::Status WriteAll(int fd, std::string_view data, std::string_view path_for_errors);

// Reads exactly `n` bytes at `offset` into `out`; DATA_LOSS if the file is shorter.
absl::Status PreadExact(int fd, uint64_t offset, size_t n, std::string* out,
                        std::string_view path_for_errors);

}  // namespace whorl

#endif  // WHORL_COMMON_FILE_UTIL_H_
