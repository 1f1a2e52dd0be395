// AckLog: a hook for the crash harness (tests/crash/), which keeps a ledger of what the
// repository acknowledged. When the environment variable WHORL_ACK_LOG names a file, the
// uploader appends to it the fingerprints of every batch of chunks whose PutChunks returned OK,
// one lowercase hex fingerprint and a newline per chunk, all of a batch in one write(2) on a
// descriptor opened with O_APPEND. A kill can tear only the last line; a reader counts whole
// lines only. Unset (the normal case), it costs one pointer test per batch.
//
// Thread-safe: Append opens the file for each batch, and with O_APPEND each write lands at the
// end of the file.
#ifndef WHORL_AGENT_ACK_LOG_H_
#define WHORL_AGENT_ACK_LOG_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "common/fingerprint.h"

namespace whorl::agent {

inline constexpr char kAckLogEnv[] = "WHORL_ACK_LOG";

class AckLog {
 public:
  // The log WHORL_ACK_LOG names, or nullptr when it is unset or empty.
  static std::unique_ptr<AckLog> FromEnvironment();

  explicit AckLog(std::string path) : path_(std::move(path)) {}

  // Appends "HEX\n" per fingerprint in one write, creating the file if needed. Errors name the
  // file.
  absl::Status Append(const std::vector<Fingerprint>& fps) const;

 private:
  std::string path_;
};

}  // namespace whorl::agent

#endif  // WHORL_AGENT_ACK_LOG_H_
