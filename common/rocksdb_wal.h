// How the stores treat their RocksDB write-ahead logs: the recovery mode, and housekeeping.
#ifndef WHORL_COMMON_ROCKSDB_WAL_H_
#define WHORL_COMMON_ROCKSDB_WAL_H_

#include <memory>

#include "common/file_util.h"
#include "rocksdb/db.h"
#include "rocksdb/transaction_log.h"

namespace whorl {

// How the stores replay their WALs at open. Every write a store acknowledges was synced to its
// WAL first (or, in an embedded repository, is synced before the snapshot that names it is
// committed: the locator's puts and the index's registrations), so only the last record of a WAL
// may be torn (a crash while it was written), and
// RocksDB's default (kPointInTimeRecovery) would also take damage in the middle of a WAL for the
// end of the log: it would open without every write after the damage, acknowledged ones
// included. This mode tolerates a torn last record and refuses to open (Corruption, DATA_LOSS
// to the caller) on damage anywhere else.
inline constexpr rocksdb::WALRecoveryMode kWalRecoveryMode =
    rocksdb::WALRecoveryMode::kTolerateCorruptedTailRecords;

// Removes the empty WALs earlier opens of `db` left behind (see RemoveEmptyWals). Housekeeping
// only: a failure leaves them where they were.
inline void RemoveEarlierEmptyWals(rocksdb::DB* db) {
  std::unique_ptr<rocksdb::LogFile> current;
  if (!db->GetCurrentWalFile(&current).ok() || current == nullptr) return;
  (void)RemoveEmptyWals(db->GetName(), current->LogNumber());
}

}  // namespace whorl

#endif  // WHORL_COMMON_ROCKSDB_WAL_H_
