// Housekeeping of an open RocksDB database's write-ahead logs, shared by the stores.
#ifndef WHORL_COMMON_ROCKSDB_WAL_H_
#define WHORL_COMMON_ROCKSDB_WAL_H_

#include <memory>

#include "common/file_util.h"
#include "rocksdb/db.h"
#include "rocksdb/transaction_log.h"

namespace whorl {

// Removes the empty WALs earlier opens of `db` left behind (see RemoveEmptyWals). Housekeeping
// only: a failure leaves them where they were.
inline void RemoveEarlierEmptyWals(rocksdb::DB* db) {
  std::unique_ptr<rocksdb::LogFile> current;
  if (!db->GetCurrentWalFile(&current).ok() || current == nullptr) return;
  (void)RemoveEmptyWals(db->GetName(), current->LogNumber());
}

}  // namespace whorl

#endif  // WHORL_COMMON_ROCKSDB_WAL_H_
