// whorl-metad: serves one metadata shard (fingerprint index, snapshot catalog, admin) over gRPC.
//   whorl-metad --node-id ID --listen HOST:PORT --data DIR --cluster FILE
//               [--metrics-listen HOST:PORT] [--log-format text|json] [--log-level info]
// SIGHUP re-reads the cluster map; SIGTERM/SIGINT shut down cleanly (in-flight calls finish,
// then RocksDB is closed). Exit 2 on bad flags or a node id not in the map, 1 on other errors.
#include <iostream>

#include "common/daemon/daemon.h"
#include "common/mutex_mode.h"
#include "metadata-service/metadata_server.h"
#include "metadata-service/metadata_store.h"

namespace wd = whorl::daemon;

int main(int argc, char** argv) {
  whorl::UseReleaseMutexChecks();
  wd::BlockSignals();
  wd::TuneAllocator();
  wd::DaemonFlags flags;
  if (int rc =
          wd::ParseFlags("whorl-metad: one metadata shard of a Whorl cluster", argc, argv, &flags);
      rc >= 0) {
    return rc;
  }
  wd::SetUpLogging(flags.log_format, flags.log_level);
  auto cluster = wd::ClusterState::Load(flags.cluster, flags.node_id, wd::Role::kMetadata);
  if (!cluster.ok()) {
    std::cerr << "whorl-metad: " << cluster.status().message() << "\n";
    return 2;
  }
  const wd::RocksDbLog rocks_log = wd::RocksDbLogFor(flags.data);
  auto store = whorl::metadata::MetadataStore::Open(
      flags.data, whorl::metadata::MetadataStoreOptions{
                      .block_cache_bytes = whorl::metadata::kDaemonBlockCacheBytes,
                      .write_buffer_bytes = whorl::metadata::kDaemonWriteBufferBytes,
                      .daemon = true,
                      .log = rocks_log.sink,
                      .log_level = rocks_log.level});
  if (!store.ok()) {
    std::cerr << "whorl-metad: " << store.status().message() << "\n";
    return 1;
  }
  auto metrics = wd::Metrics::Create(flags.metrics_listen);
  if (!metrics.ok()) {
    std::cerr << "whorl-metad: " << metrics.status().message() << "\n";
    return 1;
  }
  auto server =
      whorl::metadata::MetadataServer::Create(store->get(), cluster->get(), metrics->get());
  if (!server.ok()) {
    std::cerr << "whorl-metad: " << server.status().message() << "\n";
    return 1;
  }
  const int rc = wd::Serve("whorl-metad", flags, cluster->get(), (*server)->services());
  server->reset();
  store->reset();  // closes RocksDB: every acknowledged write was synced
  return rc;
}
