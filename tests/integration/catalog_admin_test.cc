// Integration tests of the Catalog and Admin services of whorl-metad, and of a cluster with a
// node down: the real daemons on 127.0.0.1 (cluster_fixture.h).
#include <map>
#include <string>
#include <vector>

#include "common/codec.h"
#include "tests/integration/cluster_fixture.h"

namespace whorl::testing {
namespace {

constexpr char kRepoId[] = "0123456789abcdef0123456789abcdef";
constexpr char kConfig[] = R"({"id":"0123456789abcdef0123456789abcdef","version":1})";

class CatalogTest : public ClusterTest {
 protected:
  void Init(const std::string& config = kConfig) {
    v1::InitRepositoryRequest req;
    Header(&req, 0);
    req.set_config(config);
    for (size_t i = 0; i < 3; ++i) {
      v1::InitRepositoryResponse r;
      grpc::ClientContext ctx;
      const grpc::Status s = cluster_.Admin(i)->InitRepository(&ctx, req, &r);
      ASSERT_TRUE(s.ok()) << s.error_message();
    }
  }

  static v1::Snapshot Snap(const std::string& host, int64_t time_ns, const std::string& root,
                           uint64_t bytes) {
    v1::Snapshot snap;
    snap.set_repository_id(kRepoId);
    snap.set_host(host);
    snap.set_time_ns(time_ns);
    snap.set_root(Sha256(root).ToBytes());
    snap.mutable_summary()->set_total_bytes_processed(bytes);
    return snap;
  }

  // The shard owning the snapshot's id (on the metadata ring, by the id's first 8 bytes).
  size_t IdOwner(const v1::Snapshot& snap) {
    std::string bytes;
    snap.SerializeToString(&bytes);  // no maps: deterministic
    return cluster_.MetaOwner(Sha256(bytes));
  }

  grpc::Status Commit(size_t shard, const v1::Snapshot& snap, std::string* id = nullptr) {
    v1::CommitSnapshotRequest req;
    Header(&req, 1, "commit-1");
    *req.mutable_snapshot() = snap;
    v1::CommitSnapshotResponse resp;
    grpc::ClientContext ctx;
    const grpc::Status s = cluster_.Catalog(shard)->CommitSnapshot(&ctx, req, &resp);
    if (id != nullptr) *id = resp.id();
    return s;
  }

  std::vector<v1::SnapshotEntry> List(size_t shard) {
    v1::ListSnapshotsRequest req;
    Header(&req);
    v1::ListSnapshotsResponse resp;
    grpc::ClientContext ctx;
    EXPECT_TRUE(cluster_.Catalog(shard)->ListSnapshots(&ctx, req, &resp).ok());
    return {resp.snapshots().begin(), resp.snapshots().end()};
  }
};

TEST_F(CatalogTest, CommitNeedsTheRootIndexedOnItsOwningShard) {
  Init();
  // A snapshot whose root tree lives on another shard than the snapshot itself.
  const std::string root = "a root tree";
  v1::Snapshot snap = Snap("h", 1, root, 10);
  while (IdOwner(snap) == cluster_.MetaOwner(Sha256(root))) snap.set_time_ns(snap.time_ns() + 1);
  const size_t owner = IdOwner(snap);
  {
    const grpc::Status s = Commit(owner, snap);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
    EXPECT_EQ(s.error_message(),
              "snapshot root tree " + Sha256(root).ToHex() + " is not in the index");
  }
  for (size_t i = 0; i < 3; ++i) {
    if (i == owner) continue;
    const grpc::Status s = Commit(i, snap);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
    EXPECT_NE(s.error_message().find("belongs to " + cluster_.map_.metadata[owner].id),
              std::string::npos)
        << s.error_message();
  }
  Put({root});
  std::string id;
  ASSERT_TRUE(Commit(owner, snap, &id).ok());
  EXPECT_EQ(id.size(), 32u);
  ASSERT_TRUE(Commit(owner, snap).ok());  // idempotent
  for (size_t i = 0; i < 3; ++i) {
    const auto listed = List(i);
    if (i != owner) {
      EXPECT_TRUE(listed.empty());
      continue;
    }
    ASSERT_EQ(listed.size(), 1u);
    EXPECT_EQ(listed[0].id(), id);
    EXPECT_EQ(listed[0].snapshot().host(), "h");
  }
  // The owner asked the root's shard with the request id passed on.
  const std::string root_shard = cluster_.map_.metadata[cluster_.MetaOwner(Sha256(root))].id;
  EXPECT_NE(cluster_.Log(root_shard).find(R"("method":"FindMissing","request_id":"commit-1")"),
            std::string::npos);
  // Another repository's snapshot, or a root that is not a fingerprint, is refused.
  v1::Snapshot other = snap;
  other.set_repository_id("ffffffffffffffffffffffffffffffff");
  const grpc::Status s = Commit(IdOwner(other), other);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_NE(s.error_message().find("snapshot of repository"), std::string::npos);
  v1::Snapshot short_root = snap;
  short_root.set_root("xyz");
  EXPECT_EQ(Commit(0, short_root).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
}

TEST_F(CatalogTest, AShardWithoutARepositoryConfigAcceptsACommit) {
  // A shard added after `whorl init` holds no config: the repository id is not checked there.
  Put({"r"});
  const v1::Snapshot snap = Snap("h", 1, "r", 1);
  std::string id;
  const grpc::Status s = Commit(IdOwner(snap), snap, &id);
  EXPECT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(List(IdOwner(snap)).size(), 1u);
}

TEST_F(CatalogTest, ListSnapshotsIsOldestFirst) {
  Init();
  Put({"r"});
  std::vector<int64_t> times;
  for (int64_t t : {50, 10, 30, 20, 40, 60, 5, 70, 15}) {
    const v1::Snapshot snap = Snap("h", t, "r", 1);
    if (IdOwner(snap) != 0) continue;
    ASSERT_TRUE(Commit(0, snap).ok());
    times.push_back(t);
  }
  std::sort(times.begin(), times.end());
  std::vector<int64_t> listed;
  for (const auto& e : List(0)) listed.push_back(e.snapshot().time_ns());
  EXPECT_EQ(listed, times);
}

TEST_F(CatalogTest, RepositoryConfigIsStoredOnceAndReturned) {
  v1::GetRepositoryConfigRequest get;
  Header(&get, 0);
  {
    v1::GetRepositoryConfigResponse resp;
    grpc::ClientContext ctx;
    const grpc::Status s = cluster_.Admin(1)->GetRepositoryConfig(&ctx, get, &resp);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::NOT_FOUND);
    EXPECT_EQ(s.error_message(), "no repository: run whorl init");
  }
  Init();
  Init();  // the same config again: OK
  v1::InitRepositoryRequest other;
  Header(&other, 0);
  other.set_config(R"({"id":"ffffffffffffffffffffffffffffffff","version":1})");
  for (size_t i = 0; i < 3; ++i) {
    v1::InitRepositoryResponse r;
    grpc::ClientContext ctx;
    const grpc::Status s = cluster_.Admin(i)->InitRepository(&ctx, other, &r);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::ALREADY_EXISTS);
    EXPECT_EQ(s.error_message(), "repository already exists");
  }
  other.set_config("not json");
  {
    v1::InitRepositoryResponse r;
    grpc::ClientContext ctx;
    EXPECT_EQ(cluster_.Admin(0)->InitRepository(&ctx, other, &r).error_code(),
              grpc::StatusCode::INVALID_ARGUMENT);
  }
  for (size_t i = 0; i < 3; ++i) {
    v1::GetRepositoryConfigResponse resp;
    grpc::ClientContext ctx;
    ASSERT_TRUE(cluster_.Admin(i)->GetRepositoryConfig(&ctx, get, &resp).ok());
    EXPECT_EQ(resp.config(), kConfig);
  }
}

TEST_F(CatalogTest, StatsAreExact) {
  Init();
  // Chunks of known sizes, some compressed (stored != plain).
  std::map<size_t, v1::PutChunksRequest> by_node;
  std::vector<uint64_t> unique(3), stored(3), plain(3);
  uint64_t store_plain = 0;
  for (int i = 0; i < 30; ++i) {
    const std::string p =
        std::string(100 + 37 * i, static_cast<char>('A' + i % 26)) +
        (i % 2 ? std::to_string(i) : std::string(i, '!') + "x" + std::to_string(i));
    v1::Chunk c = MakeChunk(p);
    if (i % 3 == 0) {
      Codec codec;
      c.set_data(Encode(CompressionSpec{}, p, &codec));
      c.set_codec(static_cast<uint32_t>(codec));
    }
    const size_t shard = cluster_.MetaOwner(Sha256(p));
    ++unique[shard];
    stored[shard] += c.data().size();
    plain[shard] += p.size();
    store_plain += p.size();
    *by_node[cluster_.ChunkOwner(Sha256(p))].add_chunks() = c;
  }
  for (auto& [node, req] : by_node) {
    Header(&req);
    v1::PutChunksResponse resp;
    grpc::ClientContext ctx;
    ASSERT_TRUE(cluster_.Store(node)->PutChunks(&ctx, req, &resp).ok());
    EXPECT_EQ(resp.newly_stored(), static_cast<uint64_t>(req.chunks_size()));
  }
  // Snapshots of two tenants, on whichever shard owns each.
  Put({"root"});
  ++unique[cluster_.MetaOwner(Sha256("root"))];
  stored[cluster_.MetaOwner(Sha256("root"))] += 4;
  plain[cluster_.MetaOwner(Sha256("root"))] += 4;
  store_plain += 4;
  std::map<size_t, std::map<std::string, std::pair<uint64_t, uint64_t>>> tenants;
  const std::vector<std::pair<std::string, uint64_t>> snaps = {
      {"alpha", 1000}, {"alpha", 2000}, {"beta", 7}, {"alpha", 30}, {"beta", 5}};
  for (size_t i = 0; i < snaps.size(); ++i) {
    const v1::Snapshot snap =
        Snap(snaps[i].first, static_cast<int64_t>(i + 1), "root", snaps[i].second);
    const size_t owner = IdOwner(snap);
    ASSERT_TRUE(Commit(owner, snap).ok());
    auto& t = tenants[owner][snaps[i].first];
    ++t.first;
    t.second += snaps[i].second;
  }
  for (size_t i = 0; i < 3; ++i) {
    const v1::ShardStatsResponse st = ShardStats(i);
    EXPECT_EQ(st.shard(), cluster_.map_.metadata[i].id);
    EXPECT_EQ(st.unique_chunks(), unique[i]) << i;
    EXPECT_EQ(st.stored_bytes(), stored[i]) << i;
    EXPECT_EQ(st.plain_bytes(), plain[i]) << i;
    uint64_t n = 0, logical = 0;
    std::map<std::string, std::pair<uint64_t, uint64_t>> got;
    for (const auto& t : st.tenants()) got[t.tenant()] = {t.snapshots(), t.logical_bytes()};
    for (const auto& [name, t] : tenants[i]) {
      n += t.first;
      logical += t.second;
    }
    EXPECT_EQ(got, tenants[i]) << i;
    EXPECT_EQ(st.snapshots(), n) << i;
    EXPECT_EQ(st.logical_bytes(), logical) << i;
  }
  uint64_t chunks = 0, plain_sum = 0;
  for (size_t i = 0; i < 2; ++i) {
    const v1::ChunkStoreStatsResponse st = StoreStats(i);
    EXPECT_EQ(st.node(), cluster_.map_.chunkstores[i].id);
    chunks += st.chunks();
    plain_sum += st.plain_bytes();
    if (st.chunks() > 0) {
      EXPECT_GE(st.packs(), 1u);
    }
  }
  EXPECT_EQ(chunks, 31u);
  EXPECT_EQ(plain_sum, store_plain);
}

TEST_F(CatalogTest, AShardThatIsDownFailsPutsAndCommitsNamingItUntilItIsBack) {
  Init();
  // A chunk owned by meta-2: its put is stored but not acknowledged while meta-2 is down.
  std::string plain;
  for (int i = 0; cluster_.MetaOwner(Sha256(plain = "for meta-2 " + std::to_string(i))) != 1; ++i) {
  }
  cluster_.Stop("meta-2");
  v1::PutChunksRequest req;
  Header(&req);
  *req.add_chunks() = MakeChunk(plain);
  const size_t node = cluster_.ChunkOwner(Sha256(plain));
  {
    v1::PutChunksResponse resp;
    grpc::ClientContext ctx;
    const grpc::Status s = cluster_.Store(node)->PutChunks(&ctx, req, &resp);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::UNAVAILABLE);
    EXPECT_EQ(
        s.error_message().rfind("metadata shard meta-2 at " + cluster_.map_.metadata[1].address, 0),
        0u)
        << s.error_message();
  }
  // A commit whose root meta-2 owns cannot be checked.
  v1::Snapshot snap = Snap("h", 1, plain, 1);
  while (IdOwner(snap) == 1) snap.set_time_ns(snap.time_ns() + 1);
  {
    const grpc::Status s = Commit(IdOwner(snap), snap);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::UNAVAILABLE);
    EXPECT_NE(s.error_message().find("metadata shard meta-2"), std::string::npos)
        << s.error_message();
  }
  EXPECT_TRUE(List(IdOwner(snap)).empty());
  // Back: the retried put registers the chunk (already stored: newly_stored 0), then the commit.
  cluster_.Start("meta-2");
  {
    v1::PutChunksResponse resp;
    grpc::ClientContext ctx;
    ASSERT_TRUE(cluster_.Store(node)->PutChunks(&ctx, req, &resp).ok());
    EXPECT_EQ(resp.newly_stored(), 0u);
  }
  EXPECT_FALSE(Missing(plain));
  EXPECT_TRUE(Commit(IdOwner(snap), snap).ok());
}

}  // namespace
}  // namespace whorl::testing
