// The gRPC services of one metadata shard (whorl-metad): Index, Catalog and Admin over a
// MetadataStore, with the shard's Bloom filter. Semantics in proto/service_format.md.
//
// Thread-safety: the services are called concurrently by gRPC; all state is guarded.
#ifndef WHORL_METADATA_SERVICE_METADATA_SERVER_H_
#define WHORL_METADATA_SERVICE_METADATA_SERVER_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/daemon/daemon.h"
#include "metadata-service/metadata_store.h"

namespace whorl::metadata {

inline constexpr size_t kMaxFindMissing = 16384;
inline constexpr size_t kMaxRegister = 16384;

class MetadataServer {
 public:
  // Builds the Bloom filter from the index (one scan).
  static absl::StatusOr<std::unique_ptr<MetadataServer>> Create(MetadataStore* store,
                                                                daemon::ClusterState* cluster,
                                                                daemon::Metrics* metrics);
  ~MetadataServer();
  std::vector<grpc::Service*> services();

  struct State;

 private:
  MetadataServer() = default;
  std::unique_ptr<State> state_;
  std::vector<std::unique_ptr<grpc::Service>> services_;
};

}  // namespace whorl::metadata

#endif  // WHORL_METADATA_SERVICE_METADATA_SERVER_H_
