// Formatting shared by the CLI commands: JSON forms of snapshots and summaries, times, sizes.
#ifndef WHORL_AGENT_CLI_OUTPUT_H_
#define WHORL_AGENT_CLI_OUTPUT_H_

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>

#include "metadata-service/metadata_store.h"

namespace whorl::agent {

// RFC 3339 in UTC with nanoseconds: 2026-11-24T10:00:00.123456789Z.
std::string FormatTime(int64_t ns);
// 1536 -> "1.50 KiB".
std::string FormatBytes(uint64_t bytes);
nlohmann::ordered_json SummaryJson(const v1::SnapshotSummary& s);
nlohmann::ordered_json SnapshotJson(const metadata::SnapshotRecord& rec);

}  // namespace whorl::agent

#endif  // WHORL_AGENT_CLI_OUTPUT_H_
