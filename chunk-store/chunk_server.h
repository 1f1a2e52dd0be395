// The gRPC ChunkStore service of one chunk-store node (whorl-chunkd) over a ChunkStore: puts
// are verified, stored with one group commit, and registered with their owning metadata shards
// before they are acknowledged (design.md, "The chunk store"). Semantics in
// proto/service_format.md.
#ifndef WHORL_CHUNK_STORE_CHUNK_SERVER_H_
#define WHORL_CHUNK_STORE_CHUNK_SERVER_H_

#include <memory>

#include "chunk-store/chunk_store.h"
#include "common/daemon/daemon.h"

namespace whorl::chunkstore {

inline constexpr size_t kMaxPutChunks = 4096;
inline constexpr size_t kMaxGetChunks = 4096;
inline constexpr size_t kListPage = 8192;

std::unique_ptr<grpc::Service> NewChunkStoreService(ChunkStore* store,
                                                    daemon::ClusterState* cluster,
                                                    daemon::Metrics* metrics);

}  // namespace whorl::chunkstore

#endif  // WHORL_CHUNK_STORE_CHUNK_SERVER_H_
