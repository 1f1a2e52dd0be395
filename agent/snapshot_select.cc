#include "agent/snapshot_select.h"

#include "common/status_macros.h"

namespace whorl::agent {

absl::StatusOr<metadata::SnapshotRecord> SelectSnapshot(Repository* repo, const std::string& spec,
                                                        const std::string& host) {
  WHORL_ASSIGN_OR_RETURN(std::vector<metadata::SnapshotRecord> snaps, repo->ListSnapshots());
  if (spec == "latest") {
    for (auto it = snaps.rbegin(); it != snaps.rend(); ++it) {
      if (host.empty() || it->snapshot.host() == host) return *it;
    }
    return absl::NotFoundError(host.empty() ? "no snapshot in the repository"
                                            : "no snapshot of host " + host);
  }
  if (spec.size() < 8 || spec.size() > 64 ||
      spec.find_first_not_of("0123456789abcdef") != std::string::npos) {
    return absl::InvalidArgumentError("snapshot '" + spec +
                                      "': give 'latest' or at least 8 lowercase hex digits of an id");
  }
  const metadata::SnapshotRecord* match = nullptr;
  for (const auto& rec : snaps) {
    if (rec.id.ToHex().rfind(spec, 0) != 0) continue;
    if (match != nullptr) {
      return absl::FailedPreconditionError("snapshot prefix " + spec + " is ambiguous");
    }
    match = &rec;
  }
  if (match == nullptr) return absl::NotFoundError("no snapshot matches " + spec);
  return *match;
}

}  // namespace whorl::agent
