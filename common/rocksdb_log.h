// RocksDB's info log, sent to a function instead of the LOG file RocksDB writes by default.
//
// Why not the LOG file: Debian's RocksDB 7.8 is built with assertions, and its file logger
// asserts when it appends after an append that failed. On a full disk the first line of an open
// ("RocksDB version: ...") fails, the second aborts the process, so a read-only command such as
// `whorl snapshots` could not even list a full repository. A function sink writes nothing to the
// store's filesystem.
#ifndef WHORL_COMMON_ROCKSDB_LOG_H_
#define WHORL_COMMON_ROCKSDB_LOG_H_

#include <functional>
#include <memory>
#include <string>
#include <string_view>

#include "rocksdb/env.h"

namespace whorl {

// Receives one formatted line of RocksDB's info log (without a trailing newline).
using RocksLogSink = std::function<void(rocksdb::InfoLogLevel level, std::string_view line)>;

// A logger for DBOptions::info_log that formats each line and hands it to `sink`; lines below
// `min_level` are dropped before they are formatted. A null `sink` drops everything. Safe for
// concurrent use if `sink` is.
std::shared_ptr<rocksdb::Logger> NewRocksLogger(RocksLogSink sink, rocksdb::InfoLogLevel min_level);

}  // namespace whorl

#endif  // WHORL_COMMON_ROCKSDB_LOG_H_
