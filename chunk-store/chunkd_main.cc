// whorl-chunkd: serves one chunk-store node (packs + RocksDB locator) over gRPC.
//   whorl-chunkd --node-id ID --listen HOST:PORT --data DIR --cluster FILE
//                [--metrics-listen HOST:PORT] [--log-format text|json] [--log-level info]
// SIGHUP re-reads the cluster map; SIGTERM/SIGINT shut down cleanly. Exit 2 on bad flags or a
// node id not in the map, 1 on other errors.
#include <iostream>
#include <string>

#include "chunk-store/chunk_server.h"
#include "chunk-store/chunk_store.h"
#include "common/daemon/daemon.h"
#include "common/mutex_mode.h"

namespace wd = whorl::daemon;

int main(int argc, char** argv) {
  whorl::UseReleaseMutexChecks();
  wd::BlockSignals();
  wd::TuneAllocator();
  wd::DaemonFlags flags;
  if (int rc = wd::ParseFlags("whorl-chunkd: one chunk-store node of a Whorl cluster", argc, argv,
                              &flags);
      rc >= 0) {
    return rc;
  }
  wd::SetUpLogging(flags.log_format, flags.log_level);
  auto cluster = wd::ClusterState::Load(flags.cluster, flags.node_id, wd::Role::kChunkStore);
  if (!cluster.ok()) {
    std::cerr << "whorl-chunkd: " << cluster.status().message() << "\n";
    return 2;
  }
  whorl::chunkstore::ChunkStoreOptions options;
  options.verify_puts = true;  // a store on the network never trusts a fingerprint
  // The agent's embedded locator keeps its memtable at 1 MiB for the agent's peak RSS; a node
  // flushes less often (the cluster's first backup of the source tree shares its two cores).
  options.locator_write_buffer_bytes = 4ull << 20;
  const wd::RocksDbLog rocks_log = wd::RocksDbLogFor(flags.data);
  options.log = rocks_log.sink;
  options.log_level = rocks_log.level;
  auto store = whorl::chunkstore::ChunkStore::Open(flags.data, options);
  if (!store.ok()) {
    std::cerr << "whorl-chunkd: " << store.status().message() << "\n";
    return 1;
  }
  // A damaged pack does not stop the node (its other chunks serve); say so once at start.
  if (auto problems = (*store)->CheckPacks(); problems.ok()) {
    for (const whorl::chunkstore::PackProblem& p : *problems) {
      wd::Log(wd::LogLevel::kWarn, "damaged pack",
              {{"problem", p.problem}, {"lost_chunks", std::to_string(p.lost.size())}});
    }
  } else {
    wd::Log(wd::LogLevel::kWarn, "pack check failed",
            {{"error", std::string(problems.status().message())}});
  }
  auto metrics = wd::Metrics::Create(flags.metrics_listen);
  if (!metrics.ok()) {
    std::cerr << "whorl-chunkd: " << metrics.status().message() << "\n";
    return 1;
  }
  auto service =
      whorl::chunkstore::NewChunkStoreService(store->get(), cluster->get(), metrics->get());
  const int rc = wd::Serve("whorl-chunkd", flags, cluster->get(), {service.get()});
  service.reset();
  store->reset();
  return rc;
}
