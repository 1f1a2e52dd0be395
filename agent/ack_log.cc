#include "agent/ack_log.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>

#include "common/file_util.h"

namespace whorl::agent {

std::unique_ptr<AckLog> AckLog::FromEnvironment() {
  const char* path = std::getenv(kAckLogEnv);
  if (path == nullptr || *path == '\0') return nullptr;
  return std::make_unique<AckLog>(path);
}

absl::Status AckLog::Append(const std::vector<Fingerprint>& fps) const {
  if (fps.empty()) return absl::OkStatus();
  std::string lines;
  lines.reserve(fps.size() * (2 * Fingerprint::kSize + 1));
  for (const Fingerprint& fp : fps) {
    lines += fp.ToHex();
    lines += '\n';
  }
  const int fd = ::open(path_.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0) return ErrnoStatus("open", path_, errno);
  // One write: the lines of a batch land together, after everything appended before.
  absl::Status s = WriteAll(fd, lines, path_);
  ::close(fd);
  return s;
}

}  // namespace whorl::agent
