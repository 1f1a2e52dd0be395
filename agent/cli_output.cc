#include "agent/cli_output.h"

#include <ctime>

namespace whorl::agent {

std::string FormatTime(int64_t ns) {
  const time_t secs = static_cast<time_t>(ns / 1000000000);
  struct tm tm;
  gmtime_r(&secs, &tm);
  char buf[64];
  const size_t n = std::strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%S", &tm);
  char frac[16];
  std::snprintf(frac, sizeof(frac), ".%09lldZ", static_cast<long long>(ns % 1000000000));
  return std::string(buf, n) + frac;
}

std::string FormatBytes(uint64_t bytes) {
  static const char* kUnits[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB"};
  double v = static_cast<double>(bytes);
  int u = 0;
  while (v >= 1024 && u < 5) {
    v /= 1024;
    ++u;
  }
  char buf[32];
  if (u == 0) {
    std::snprintf(buf, sizeof(buf), "%llu B", static_cast<unsigned long long>(bytes));
  } else {
    std::snprintf(buf, sizeof(buf), "%.2f %s", v, kUnits[u]);
  }
  return buf;
}

nlohmann::ordered_json SummaryJson(const v1::SnapshotSummary& s) {
  nlohmann::ordered_json j;
  j["files_new"] = s.files_new();
  j["files_changed"] = s.files_changed();
  j["files_unmodified"] = s.files_unmodified();
  j["dirs_new"] = s.dirs_new();
  j["total_files_processed"] = s.total_files_processed();
  j["total_bytes_processed"] = s.total_bytes_processed();
  j["data_added"] = s.data_added();
  j["total_duration"] = s.total_duration();
  return j;
}

nlohmann::ordered_json SnapshotJson(const metadata::SnapshotRecord& rec) {
  nlohmann::ordered_json j;
  const std::string id = rec.id.ToHex();
  j["id"] = id;
  j["short_id"] = id.substr(0, 8);
  j["time"] = FormatTime(rec.snapshot.time_ns());
  j["host"] = rec.snapshot.host();
  j["paths"] = std::vector<std::string>(rec.snapshot.paths().begin(), rec.snapshot.paths().end());
  j["tags"] = std::vector<std::string>(rec.snapshot.tags().begin(), rec.snapshot.tags().end());
  j["summary"] = SummaryJson(rec.snapshot.summary());
  return j;
}

}  // namespace whorl::agent
