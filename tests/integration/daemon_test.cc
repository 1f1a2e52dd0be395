// Integration tests of the Index and ChunkStore services: the real whorl-metad and whorl-chunkd
// on 127.0.0.1 (cluster_fixture.h), spoken to over gRPC with the whorl.v1 stubs.
#include <signal.h>

#include <chrono>
#include <fstream>
#include <iterator>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "common/bloom_filter.h"
#include "common/bundle.h"
#include "common/codec.h"
#include "tests/integration/cluster_fixture.h"

namespace whorl::testing {
namespace {

using DaemonTest = ClusterTest;

// A fingerprint-distinct plain chunk owned by chunk store `node`.
std::string OwnedBy(const Cluster& c, size_t node, const std::string& stem, int* counter) {
  for (;; ++*counter) {
    std::string plain = stem + std::to_string(*counter);
    if (c.ChunkOwner(Sha256(plain)) == node) {
      ++*counter;
      return plain;
    }
  }
}

TEST_F(DaemonTest, PutIsRegisteredWithTheOwningShardOnly) {
  std::vector<std::string> plains;
  for (int i = 0; i < 40; ++i) plains.push_back("chunk number " + std::to_string(i));
  Put(plains);
  for (const auto& p : plains) EXPECT_FALSE(Missing(p)) << p;
  // Asking a shard that does not own a fingerprint is refused, naming the owner.
  const Fingerprint fp = Sha256(plains[0]);
  const size_t owner = cluster_.MetaOwner(fp);
  const size_t other = (owner + 1) % 3;
  v1::FindMissingRequest req;
  Header(&req);
  req.set_fingerprints(fp.ToBytes());
  v1::FindMissingResponse resp;
  grpc::ClientContext ctx;
  const grpc::Status s = cluster_.Index(other)->FindMissing(&ctx, req, &resp);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_EQ(s.error_message(), "fingerprint " + fp.ToHex() + " belongs to " +
                                   cluster_.map_.metadata[owner].id + ", not " +
                                   cluster_.map_.metadata[other].id);
  // Exact counts: every chunk on exactly one store, every entry on exactly one shard, each
  // shard holding exactly the fingerprints the ring gives it.
  uint64_t stored = 0, indexed = 0;
  for (size_t i = 0; i < 2; ++i) stored += StoreStats(i).chunks();
  std::vector<uint64_t> want(3, 0);
  for (const auto& p : plains) ++want[cluster_.MetaOwner(Sha256(p))];
  for (size_t i = 0; i < 3; ++i) {
    EXPECT_EQ(ShardStats(i).unique_chunks(), want[i]) << "shard " << i;
    indexed += ShardStats(i).unique_chunks();
  }
  EXPECT_EQ(stored, 40u);
  EXPECT_EQ(indexed, 40u);
  // A second put of the same chunks stores nothing new.
  Put(plains);
  stored = 0;
  for (size_t i = 0; i < 2; ++i) stored += StoreStats(i).chunks();
  EXPECT_EQ(stored, 40u);
}

TEST_F(DaemonTest, FindMissingAnswersTheMissingIndexesAscending) {
  std::vector<std::string> present, all;
  for (int i = 0; i < 200; ++i) {
    const std::string p = "maybe " + std::to_string(i);
    if (cluster_.MetaOwner(Sha256(p)) != 0) continue;
    all.push_back(p);
    if (all.size() % 3 == 0) present.push_back(p);
  }
  Put(present);
  v1::FindMissingRequest req;
  Header(&req);
  std::vector<uint32_t> want;
  for (size_t i = 0; i < all.size(); ++i) {
    req.mutable_fingerprints()->append(Sha256(all[i]).ToBytes());
    if ((i + 1) % 3 != 0) want.push_back(static_cast<uint32_t>(i));
  }
  v1::FindMissingResponse resp;
  grpc::ClientContext ctx;
  ASSERT_TRUE(cluster_.Index(0)->FindMissing(&ctx, req, &resp).ok());
  EXPECT_EQ(std::vector<uint32_t>(resp.missing().begin(), resp.missing().end()), want);
}

TEST_F(DaemonTest, LyingChunkIsRefusedAndNothingOfTheBatchIsStored) {
  const std::string good = "honest bytes";
  const size_t node = cluster_.ChunkOwner(Sha256(good));
  v1::PutChunksRequest req;
  Header(&req);
  *req.add_chunks() = MakeChunk(good);
  v1::Chunk liar = MakeChunk(good);
  liar.set_data("other bytes!");  // same size, other content
  int counter = 0;
  liar.set_fingerprint(Sha256(OwnedBy(cluster_, node, "claimed ", &counter)).ToBytes());
  *req.add_chunks() = liar;
  v1::PutChunksResponse resp;
  grpc::ClientContext ctx;
  const grpc::Status s = cluster_.Store(node)->PutChunks(&ctx, req, &resp);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(s.error_message().find("hashes to"), std::string::npos) << s.error_message();
  EXPECT_NE(s.error_message().find(Fingerprint::FromBytes(liar.fingerprint())->ToHex()),
            std::string::npos)
      << s.error_message();
  EXPECT_EQ(StoreStats(node).chunks(), 0u);
  EXPECT_TRUE(Missing(good));
  Put({good});  // still serving
  EXPECT_FALSE(Missing(good));
}

TEST_F(DaemonTest, OversizedAndMalformedBatchesAreRefused) {
  v1::FindMissingRequest req;
  Header(&req);
  req.set_fingerprints(std::string(16385 * 32, 'x'));
  v1::FindMissingResponse resp;
  {
    grpc::ClientContext ctx;
    const grpc::Status s = cluster_.Index(0)->FindMissing(&ctx, req, &resp);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
    EXPECT_EQ(s.error_message(), "batch of 16385 fingerprints exceeds 16384");
  }
  req.set_fingerprints(std::string(33, 'x'));
  {
    grpc::ClientContext ctx;
    EXPECT_EQ(cluster_.Index(0)->FindMissing(&ctx, req, &resp).error_code(),
              grpc::StatusCode::INVALID_ARGUMENT);
  }
  v1::RegisterRequest reg;
  Header(&reg);
  for (int i = 0; i < 16385; ++i) reg.add_entries()->set_fingerprint(std::string(32, 'r'));
  {
    v1::RegisterResponse r;
    grpc::ClientContext ctx;
    EXPECT_EQ(cluster_.Index(0)->Register(&ctx, reg, &r).error_code(),
              grpc::StatusCode::RESOURCE_EXHAUSTED);
  }
  v1::PutChunksRequest put;
  Header(&put);
  for (int i = 0; i < 4097; ++i) *put.add_chunks() = MakeChunk("c" + std::to_string(i));
  v1::PutChunksResponse presp;
  {
    grpc::ClientContext ctx;
    EXPECT_EQ(cluster_.Store(0)->PutChunks(&ctx, put, &presp).error_code(),
              grpc::StatusCode::RESOURCE_EXHAUSTED);
  }
  int counter = 0;
  const std::string mine = OwnedBy(cluster_, 0, "item ", &counter);
  auto bad_put = [&](const std::function<void(v1::Chunk*)>& spoil, const std::string& want) {
    v1::PutChunksRequest bad;
    Header(&bad);
    *bad.add_chunks() = MakeChunk(mine);
    spoil(bad.mutable_chunks(0));
    grpc::ClientContext ctx;
    const grpc::Status s = cluster_.Store(0)->PutChunks(&ctx, bad, &presp);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << want;
    EXPECT_NE(s.error_message().find(want), std::string::npos) << s.error_message();
  };
  bad_put([](v1::Chunk* c) { c->set_fingerprint("short"); }, "chunk 0: fingerprint of 5 bytes");
  bad_put([](v1::Chunk* c) { c->set_codec(7); }, "unknown codec 7");
  bad_put([](v1::Chunk* c) { c->set_plain_size(c->plain_size() + 1); }, "!= plain size");
  bad_put([](v1::Chunk* c) { c->set_codec(1); }, "does not decode");
  // A message over the 80 MiB cap.
  v1::PutChunksRequest huge;
  Header(&huge);
  *huge.add_chunks() = MakeChunk(std::string((80 << 20) + 1, 'h'));
  {
    grpc::ClientContext ctx;
    EXPECT_EQ(cluster_.Store(0)->PutChunks(&ctx, huge, &presp).error_code(),
              grpc::StatusCode::RESOURCE_EXHAUSTED);
  }
  EXPECT_EQ(StoreStats(0).chunks(), 0u);
  // One 64 MiB chunk (the largest) fits in one message, and the store keeps serving.
  const std::string big = std::string(64 << 20, 'b');
  Put({big});
  EXPECT_FALSE(Missing(big));
}

TEST_F(DaemonTest, PutToTheWrongNodeOrWithAnotherEpochIsRefused) {
  int counter = 0;
  const std::string theirs = OwnedBy(cluster_, 1, "theirs ", &counter);
  v1::PutChunksRequest req;
  Header(&req);
  *req.add_chunks() = MakeChunk(theirs);
  v1::PutChunksResponse resp;
  {
    grpc::ClientContext ctx;
    const grpc::Status s = cluster_.Store(0)->PutChunks(&ctx, req, &resp);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
    EXPECT_EQ(s.error_message(),
              "fingerprint " + Sha256(theirs).ToHex() + " belongs to chunk-2, not chunk-1");
  }
  // Epochs other than the node's (older, or newer than its map file) are refused with the
  // node's epoch in the trailer; 0 (unrouted) is served.
  for (uint64_t epoch : {7, 2}) {
    Header(&req, epoch);
    grpc::ClientContext ctx;
    const grpc::Status s = cluster_.Store(1)->PutChunks(&ctx, req, &resp);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
    EXPECT_EQ(s.error_message(),
              "stale cluster map epoch " + std::to_string(epoch) + ", current is 1");
    EXPECT_EQ(Trailer(ctx, "whorl-epoch"), "1");
  }
  EXPECT_EQ(StoreStats(1).chunks(), 0u);
  Header(&req, 0);
  grpc::ClientContext ctx;
  EXPECT_TRUE(cluster_.Store(1)->PutChunks(&ctx, req, &resp).ok());
  EXPECT_EQ(resp.newly_stored(), 1u);
}

TEST_F(DaemonTest, StaleEpochIsRefusedWithTheCurrentOneAndSighupReloads) {
  cluster_.map_.epoch = 2;
  cluster_.WriteMap();
  cluster_.Signal("meta-1", SIGHUP);
  cluster_.Signal("chunk-1", SIGHUP);
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  v1::GetFilterRequest req;
  Header(&req, 1);
  v1::GetFilterResponse resp;
  grpc::ClientContext ctx;
  const grpc::Status s = cluster_.Index(0)->GetFilter(&ctx, req, &resp);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_EQ(s.error_message(), "stale cluster map epoch 1, current is 2");
  EXPECT_EQ(Trailer(ctx, "whorl-epoch"), "2");
  {
    v1::ListChunksRequest lreq;
    Header(&lreq, 1);
    grpc::ClientContext c;
    auto reader = cluster_.Store(0)->ListChunks(&c, lreq);
    v1::ListChunksResponse page;
    while (reader->Read(&page)) {
    }
    EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::FAILED_PRECONDITION);
    EXPECT_EQ(Trailer(c, "whorl-epoch"), "2");
  }
  v1::GetClusterMapRequest mreq;
  Header(&mreq, 0);
  v1::GetClusterMapResponse mresp;
  grpc::ClientContext c2;
  ASSERT_TRUE(cluster_.Admin(0)->GetClusterMap(&c2, mreq, &mresp).ok());
  EXPECT_EQ(mresp.epoch(), 2u);
  absl::StatusOr<ClusterMap> served = ParseClusterMap(mresp.cluster_map());
  ASSERT_TRUE(served.ok()) << served.status();
  EXPECT_EQ(*served, cluster_.map_);
  // A node that sees a newer epoch than its own re-reads its map (meta-2 was not signalled).
  Header(&req, 2);
  grpc::ClientContext c3;
  EXPECT_TRUE(cluster_.Index(1)->GetFilter(&c3, req, &resp).ok());
  // Admin calls are unrouted: served whatever the header says.
  Header(&mreq, 1);
  grpc::ClientContext c4;
  EXPECT_TRUE(cluster_.Admin(2)->GetClusterMap(&c4, mreq, &mresp).ok());
  // A broken map file is logged on SIGHUP and the node keeps the map it has.
  std::ofstream(cluster_.MapPath()) << "{ not json";
  cluster_.Signal("meta-1", SIGHUP);
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  Header(&req, 2);
  grpc::ClientContext c5;
  EXPECT_TRUE(cluster_.Index(0)->GetFilter(&c5, req, &resp).ok());
  EXPECT_NE(cluster_.Log("meta-1").find(
                R"("level":"error","msg":"cluster map reload failed; keeping the current map")"),
            std::string::npos);
}

TEST_F(DaemonTest, FilterVersionChangesWithRegistrationsAndNeverMissesAMember) {
  v1::GetFilterRequest req;
  Header(&req);
  v1::GetFilterResponse first;
  {
    grpc::ClientContext ctx;
    ASSERT_TRUE(cluster_.Index(0)->GetFilter(&ctx, req, &first).ok());
  }
  EXPECT_FALSE(first.unchanged());
  req.set_have_version(first.version());
  {
    v1::GetFilterResponse again;
    grpc::ClientContext ctx;
    ASSERT_TRUE(cluster_.Index(0)->GetFilter(&ctx, req, &again).ok());
    EXPECT_TRUE(again.unchanged());
    EXPECT_TRUE(again.filter().empty());
    EXPECT_EQ(again.version(), first.version());
  }
  std::vector<std::string> plains, mine;
  for (int i = 0; i < 60; ++i) plains.push_back("filtered " + std::to_string(i));
  for (const auto& p : plains) {
    if (cluster_.MetaOwner(Sha256(p)) == 0) mine.push_back(p);
  }
  ASSERT_FALSE(mine.empty());
  Put(plains);
  v1::GetFilterResponse after;
  {
    grpc::ClientContext ctx;
    ASSERT_TRUE(cluster_.Index(0)->GetFilter(&ctx, req, &after).ok());
  }
  EXPECT_FALSE(after.unchanged());
  EXPECT_NE(after.version(), first.version());
  uint64_t version = 0;
  absl::StatusOr<BloomFilter> filter = BloomFilter::Parse(after.filter(), &version);
  ASSERT_TRUE(filter.ok()) << filter.status();
  EXPECT_EQ(version, after.version());
  for (const auto& p : mine) EXPECT_TRUE(filter->MayContain(Sha256(p))) << p;
  // Sized for at least 1M keys at 1%: about 1.2 MB.
  EXPECT_GT(after.filter().size(), 1000000u);
  // Registering the same chunks again changes nothing.
  Put(plains);
  req.set_have_version(after.version());
  v1::GetFilterResponse same;
  grpc::ClientContext ctx;
  ASSERT_TRUE(cluster_.Index(0)->GetFilter(&ctx, req, &same).ok());
  EXPECT_TRUE(same.unchanged());
}

TEST_F(DaemonTest, BundleIsStoredOnceRegisteredPerMemberAndServedPerMember) {
  int counter = 0;
  std::vector<std::string> plains;
  for (int i = 0; i < 6; ++i) {
    plains.push_back(OwnedBy(cluster_, 0, "bundled text, compressible, compressible ", &counter));
  }
  const v1::Chunk bundle = MakeBundle(plains);
  ASSERT_EQ(bundle.codec(), 1u);  // zstd
  v1::PutChunksRequest req;
  Header(&req);
  *req.add_chunks() = bundle;
  {
    v1::PutChunksResponse resp;
    grpc::ClientContext ctx;
    ASSERT_TRUE(cluster_.Store(0)->PutChunks(&ctx, req, &resp).ok());
    EXPECT_EQ(resp.newly_stored(), 6u);
  }
  for (const auto& p : plains) EXPECT_FALSE(Missing(p)) << p;
  // One record: the members' shares add up to it, on the node and over the shards.
  EXPECT_EQ(StoreStats(0).chunks(), 6u);
  EXPECT_EQ(StoreStats(0).stored_bytes(), 52 + bundle.data().size());
  uint64_t indexed = 0, indexed_bytes = 0;
  for (size_t i = 0; i < 3; ++i) {
    indexed += ShardStats(i).unique_chunks();
    indexed_bytes += ShardStats(i).stored_bytes();
  }
  EXPECT_EQ(indexed, 6u);
  EXPECT_EQ(indexed_bytes, bundle.data().size());
  // Each member comes back alone, plain.
  v1::GetChunksRequest get;
  Header(&get);
  for (const auto& p : plains) get.add_fingerprints(Sha256(p).ToBytes());
  grpc::ClientContext ctx;
  auto reader = cluster_.Store(0)->GetChunks(&ctx, get);
  v1::GetChunksResponse r;
  for (const auto& p : plains) {
    ASSERT_TRUE(reader->Read(&r));
    EXPECT_EQ(r.chunk().data(), p);
    EXPECT_EQ(r.chunk().codec(), 0u);
  }
  EXPECT_FALSE(reader->Read(&r));
  EXPECT_TRUE(reader->Finish().ok());
  // Again: nothing new.
  v1::PutChunksResponse again;
  grpc::ClientContext ctx2;
  ASSERT_TRUE(cluster_.Store(0)->PutChunks(&ctx2, req, &again).ok());
  EXPECT_EQ(again.newly_stored(), 0u);
  EXPECT_EQ(StoreStats(0).stored_bytes(), 52 + bundle.data().size());
}

// With whole_bundles, a bundle member comes as its whole bundle record, once per stream; later
// members of it refer to that answer, and a chunk not in a bundle comes as before.
TEST_F(DaemonTest, GetChunksWithWholeBundlesSendsEachBundleOncePerStream) {
  int counter = 0;
  std::vector<std::string> plains;
  for (int i = 0; i < 4; ++i) {
    plains.push_back(OwnedBy(cluster_, 0, "bundled text, compressible, compressible ", &counter));
  }
  const std::string alone = OwnedBy(cluster_, 0, "stored alone ", &counter);
  const v1::Chunk bundle = MakeBundle(plains);
  Put({alone});
  {
    v1::PutChunksRequest req;
    Header(&req);
    *req.add_chunks() = bundle;
    v1::PutChunksResponse resp;
    grpc::ClientContext ctx;
    ASSERT_TRUE(cluster_.Store(0)->PutChunks(&ctx, req, &resp).ok());
  }
  v1::GetChunksRequest get;
  Header(&get);
  get.set_whole_bundles(true);
  for (const std::string* p :
       std::vector<const std::string*>{&plains[2], &alone, &plains[0], &plains[3]}) {
    get.add_fingerprints(Sha256(*p).ToBytes());
  }
  get.add_fingerprints(Sha256("never stored").ToBytes());
  grpc::ClientContext ctx;
  auto reader = cluster_.Store(0)->GetChunks(&ctx, get);
  v1::GetChunksResponse r;
  // 1: the bundle, as stored, for the member asked for.
  ASSERT_TRUE(reader->Read(&r));
  EXPECT_TRUE(r.bundle());
  EXPECT_EQ(r.same_bundle_as(), 0u);
  EXPECT_EQ(r.chunk().fingerprint(), Sha256(plains[2]).ToBytes());
  EXPECT_EQ(r.chunk().codec(), bundle.codec());
  EXPECT_EQ(r.chunk().plain_size(), bundle.plain_size());
  EXPECT_EQ(r.chunk().data(), bundle.data());
  absl::StatusOr<std::string> decoded =
      Decode(static_cast<Codec>(r.chunk().codec()), r.chunk().data(), r.chunk().plain_size());
  ASSERT_TRUE(decoded.ok()) << decoded.status();
  absl::StatusOr<std::vector<BundleSlice>> slices = ParseBundle(*decoded);
  ASSERT_TRUE(slices.ok()) << slices.status();
  ASSERT_EQ(slices->size(), 4u);
  EXPECT_EQ(decoded->substr((*slices)[2].offset, (*slices)[2].member.size), plains[2]);
  // 2: a chunk of its own, as before.
  ASSERT_TRUE(reader->Read(&r));
  EXPECT_FALSE(r.bundle());
  EXPECT_EQ(r.same_bundle_as(), 0u);
  EXPECT_EQ(r.chunk().data(), alone);
  // 3 and 4: the bundle of answer 1, not sent again.
  for (int k = 0; k < 2; ++k) {
    ASSERT_TRUE(reader->Read(&r));
    EXPECT_FALSE(r.has_chunk());
    EXPECT_FALSE(r.bundle());
    EXPECT_EQ(r.same_bundle_as(), 1u);
    EXPECT_EQ(r.error_code(), 0);
  }
  // 5: not stored.
  ASSERT_TRUE(reader->Read(&r));
  EXPECT_EQ(r.error_code(), static_cast<int>(grpc::StatusCode::NOT_FOUND));
  EXPECT_EQ(r.same_bundle_as(), 0u);
  EXPECT_FALSE(reader->Read(&r));
  EXPECT_TRUE(reader->Finish().ok());
}

// A chunk stored compressed comes back as stored (the agent decodes and hash-checks it): fewer
// bytes on the wire and no decoding on the node. A damaged record is still refused by the node.
TEST_F(DaemonTest, GetChunksSendsAChunkAsItIsStored) {
  int counter = 0;
  std::string stem;
  while (stem.size() < 20000) stem += "compressible, compressible ";
  const std::string plain = OwnedBy(cluster_, 0, stem, &counter);
  v1::PutChunksRequest req;
  Header(&req);
  v1::Chunk* c = req.add_chunks();
  c->set_fingerprint(Sha256(plain).ToBytes());
  Codec codec = Codec::kNone;
  c->set_data(Encode(CompressionSpec{Codec::kZstd, 3}, plain, &codec));
  ASSERT_EQ(codec, Codec::kZstd);
  c->set_codec(static_cast<uint32_t>(codec));
  c->set_plain_size(static_cast<uint32_t>(plain.size()));
  const std::string stored = c->data();
  {
    v1::PutChunksResponse resp;
    grpc::ClientContext ctx;
    ASSERT_TRUE(cluster_.Store(0)->PutChunks(&ctx, req, &resp).ok());
  }
  v1::GetChunksRequest get;
  Header(&get);
  get.add_fingerprints(Sha256(plain).ToBytes());
  grpc::ClientContext ctx;
  auto reader = cluster_.Store(0)->GetChunks(&ctx, get);
  v1::GetChunksResponse r;
  ASSERT_TRUE(reader->Read(&r));
  EXPECT_EQ(r.chunk().codec(), static_cast<uint32_t>(Codec::kZstd));
  EXPECT_EQ(r.chunk().plain_size(), plain.size());
  EXPECT_EQ(r.chunk().data(), stored);
  EXPECT_EQ(*Decode(Codec::kZstd, r.chunk().data(), plain.size()), plain);
  EXPECT_FALSE(reader->Read(&r));
  EXPECT_TRUE(reader->Finish().ok());
}

TEST_F(DaemonTest, GetChunksAnswersEachFingerprintInOrderAndListChunksPages) {
  int counter = 0;
  std::vector<std::string> plains;
  for (int i = 0; i < 9000; ++i) plains.push_back(OwnedBy(cluster_, 0, "listed ", &counter));
  for (size_t i = 0; i < plains.size(); i += 4096) {
    Put(std::vector<std::string>(plains.begin() + i,
                                 plains.begin() + std::min(plains.size(), i + 4096)));
  }
  v1::GetChunksRequest req;
  Header(&req);
  req.add_fingerprints(Sha256(plains[5]).ToBytes());
  req.add_fingerprints(Sha256("never stored").ToBytes());
  req.add_fingerprints(Sha256(plains[7]).ToBytes());
  {
    grpc::ClientContext ctx;
    auto reader = cluster_.Store(0)->GetChunks(&ctx, req);
    v1::GetChunksResponse r;
    ASSERT_TRUE(reader->Read(&r));
    EXPECT_EQ(r.chunk().data(), plains[5]);
    EXPECT_EQ(r.chunk().fingerprint(), Sha256(plains[5]).ToBytes());
    ASSERT_TRUE(reader->Read(&r));
    EXPECT_EQ(r.error_code(), static_cast<int>(grpc::StatusCode::NOT_FOUND));
    EXPECT_FALSE(r.has_chunk());
    ASSERT_TRUE(reader->Read(&r));
    EXPECT_EQ(r.chunk().data(), plains[7]);
    EXPECT_FALSE(reader->Read(&r));
    EXPECT_TRUE(reader->Finish().ok());
  }
  for (int i = 0; i < 4094; ++i) req.add_fingerprints(Sha256(plains[i]).ToBytes());
  {
    grpc::ClientContext ctx;
    auto reader = cluster_.Store(0)->GetChunks(&ctx, req);
    v1::GetChunksResponse r;
    while (reader->Read(&r)) {
    }
    EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  }
  v1::ListChunksRequest lreq;
  Header(&lreq);
  grpc::ClientContext ctx;
  auto reader = cluster_.Store(0)->ListChunks(&ctx, lreq);
  v1::ListChunksResponse page;
  std::set<std::string> listed;
  int pages = 0;
  while (reader->Read(&page)) {
    ++pages;
    ASSERT_EQ(page.fingerprints().size() % 32, 0u);
    EXPECT_LE(page.fingerprints().size(), 8192u * 32);
    for (size_t i = 0; i < page.fingerprints().size(); i += 32) {
      listed.insert(page.fingerprints().substr(i, 32));
    }
  }
  EXPECT_TRUE(reader->Finish().ok());
  EXPECT_EQ(pages, 2);
  EXPECT_EQ(listed.size(), plains.size());
  for (const auto& p : plains) EXPECT_EQ(listed.count(Sha256(p).ToBytes()), 1u);
}

TEST_F(DaemonTest, DamagedClosedPackStillStartsAndAnswersDataLossAndCheckPacks) {
  int counter = 0;
  const std::vector<std::string> lost = {OwnedBy(cluster_, 0, "in pack 1 ", &counter),
                                         OwnedBy(cluster_, 0, "in pack 1 ", &counter)};
  Put(lost);
  cluster_.Stop("chunk-1");
  // As after a rotation: pack 1 closed, pack 2 the (empty) newest; then pack 1 is cut to zero.
  const std::filesystem::path packs = cluster_.dir() / "chunk-1" / "packs";
  std::ofstream(packs / "00000002.pack", std::ios::binary)
      << std::string("WHORLPAK\x01\0\0\0\0\0\0\0", 16);
  std::filesystem::resize_file(packs / "00000001.pack", 0);
  cluster_.Start("chunk-1");
  EXPECT_NE(cluster_.Log("chunk-1").find("damaged pack"), std::string::npos)
      << cluster_.Log("chunk-1");

  const std::string kept = OwnedBy(cluster_, 0, "after damage ", &counter);
  Put({kept});
  v1::GetChunksRequest req;
  Header(&req);
  req.add_fingerprints(Sha256(lost[0]).ToBytes());
  req.add_fingerprints(Sha256(kept).ToBytes());
  {
    grpc::ClientContext ctx;
    auto reader = cluster_.Store(0)->GetChunks(&ctx, req);
    v1::GetChunksResponse r;
    ASSERT_TRUE(reader->Read(&r));
    EXPECT_EQ(r.error_code(), static_cast<int>(grpc::StatusCode::DATA_LOSS));
    EXPECT_FALSE(r.has_chunk());
    EXPECT_NE(r.error_message().find("00000001.pack"), std::string::npos) << r.error_message();
    ASSERT_TRUE(reader->Read(&r));
    EXPECT_EQ(r.chunk().data(), kept);
    EXPECT_FALSE(reader->Read(&r));
    EXPECT_TRUE(reader->Finish().ok());
  }
  EXPECT_GT(std::filesystem::file_size(packs / "00000002.pack"), 16u);  // the put went there
  EXPECT_EQ(std::filesystem::file_size(packs / "00000001.pack"), 0u);

  for (size_t node : {0, 1}) {
    v1::CheckPacksRequest creq;
    Header(&creq);
    grpc::ClientContext ctx;
    auto reader = cluster_.Store(node)->CheckPacks(&ctx, creq);
    std::vector<v1::CheckPacksResponse> got;
    for (v1::CheckPacksResponse r; reader->Read(&r);) got.push_back(r);
    EXPECT_TRUE(reader->Finish().ok());
    if (node == 1) {
      EXPECT_TRUE(got.empty());  // a sound node streams nothing
      continue;
    }
    ASSERT_EQ(got.size(), 1u);
    EXPECT_EQ(got[0].pack_id(), 1u);
    EXPECT_NE(got[0].problem().find("00000001.pack: empty pack file (0 bytes)"), std::string::npos)
        << got[0].problem();
    std::set<std::string> fps;
    for (size_t i = 0; i < got[0].lost().size(); i += 32) fps.insert(got[0].lost().substr(i, 32));
    EXPECT_EQ(fps, (std::set<std::string>{Sha256(lost[0]).ToBytes(), Sha256(lost[1]).ToBytes()}));
  }
}

// `whorl repair` on a cluster: a chunk-store node forgets only what it cannot read back
// whole, and a shard's Unregister raises its repair generation.
TEST_F(DaemonTest, ForgetChunksForgetsOnlyWhatFailsToReadAndUnregisterRaisesTheGeneration) {
  int counter = 0;
  const std::string good = OwnedBy(cluster_, 0, "good chunk, read whole ", &counter);
  const std::string bad = OwnedBy(cluster_, 0, "bad chunk, a byte flipped on disk ", &counter);
  const std::string absent = OwnedBy(cluster_, 0, "never stored ", &counter);
  Put({good, bad});
  // Flip a byte of `bad` in chunk-1's pack (stored plain: codec 0).
  bool flipped = false;
  for (const auto& e : std::filesystem::directory_iterator(cluster_.dir() / "chunk-1" / "packs")) {
    std::fstream f(e.path(), std::ios::in | std::ios::out | std::ios::binary);
    std::string bytes((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
    const size_t at = bytes.find(bad);
    if (at == std::string::npos) continue;
    f.seekp(static_cast<std::streamoff>(at + 3));
    f.put(static_cast<char>(bytes[at + 3] ^ 0x01));
    flipped = true;
  }
  ASSERT_TRUE(flipped);

  auto forget = [&](const std::string& fps, size_t node, v1::ForgetChunksResponse* resp) {
    v1::ForgetChunksRequest req;
    Header(&req);
    req.set_fingerprints(fps);
    grpc::ClientContext ctx;
    return cluster_.Store(node)->ForgetChunks(&ctx, req, resp);
  };
  const std::string all = Sha256(good).ToBytes() + Sha256(bad).ToBytes() + Sha256(absent).ToBytes();
  // Malformed batches change nothing.
  for (const std::string& fps : {std::string(), all.substr(0, 31)}) {
    v1::ForgetChunksResponse resp;
    EXPECT_EQ(forget(fps, 0, &resp).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  }
  {
    v1::ForgetChunksResponse resp;  // the other node holds none of them: forgets nothing
    ASSERT_TRUE(forget(all, 1, &resp).ok());
    EXPECT_EQ(resp.forgotten(), "");
    EXPECT_EQ(resp.kept(), "");
  }
  v1::ForgetChunksResponse resp;
  ASSERT_TRUE(forget(all, 0, &resp).ok());
  EXPECT_EQ(resp.kept(), Sha256(good).ToBytes());
  EXPECT_EQ(resp.forgotten(), Sha256(bad).ToBytes());
  EXPECT_EQ(StoreStats(0).chunks(), 1u);
  v1::GetChunksRequest get;
  Header(&get);
  get.add_fingerprints(Sha256(bad).ToBytes());
  get.add_fingerprints(Sha256(good).ToBytes());
  {
    grpc::ClientContext ctx;
    auto reader = cluster_.Store(0)->GetChunks(&ctx, get);
    v1::GetChunksResponse r;
    ASSERT_TRUE(reader->Read(&r));
    EXPECT_EQ(r.error_code(), static_cast<int>(grpc::StatusCode::NOT_FOUND));
    ASSERT_TRUE(reader->Read(&r));
    EXPECT_EQ(r.chunk().data(), good);
    EXPECT_FALSE(reader->Read(&r));
    EXPECT_TRUE(reader->Finish().ok());
  }

  auto generation = [&](size_t shard) {
    v1::GetRepairGenerationRequest req;
    Header(&req);
    v1::GetRepairGenerationResponse r;
    grpc::ClientContext ctx;
    EXPECT_TRUE(cluster_.Index(shard)->GetRepairGeneration(&ctx, req, &r).ok());
    return r.repair_generation();
  };
  auto unregister = [&](const Fingerprint& fp, size_t shard, v1::UnregisterResponse* r) {
    v1::UnregisterRequest req;
    Header(&req);
    req.set_fingerprints(fp.ToBytes());
    grpc::ClientContext ctx;
    return cluster_.Index(shard)->Unregister(&ctx, req, r);
  };
  const size_t owner = cluster_.MetaOwner(Sha256(bad));
  const size_t other = (owner + 1) % 3;
  for (size_t i = 0; i < 3; ++i) EXPECT_EQ(generation(i), 0u);
  v1::UnregisterResponse r;
  const grpc::Status refused = unregister(Sha256(bad), other, &r);
  EXPECT_EQ(refused.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_NE(refused.error_message().find("belongs to"), std::string::npos);
  EXPECT_EQ(generation(other), 0u);
  EXPECT_FALSE(Missing(bad));
  ASSERT_TRUE(unregister(Sha256(bad), owner, &r).ok());
  EXPECT_EQ(r.repair_generation(), 1u);
  EXPECT_EQ(generation(owner), 1u);
  EXPECT_EQ(generation(other), 0u);
  EXPECT_TRUE(Missing(bad));  // gone from the shard's set (its Bloom filter still holds it)
  EXPECT_FALSE(Missing(good));
  // Stored again, it is whole and indexed again.
  Put({bad});
  EXPECT_FALSE(Missing(bad));
  {
    grpc::ClientContext ctx;
    auto reader = cluster_.Store(0)->GetChunks(&ctx, get);
    v1::GetChunksResponse got;
    ASSERT_TRUE(reader->Read(&got));
    EXPECT_EQ(got.chunk().data(), bad);
    ASSERT_TRUE(reader->Read(&got));
    EXPECT_EQ(got.chunk().data(), good);
    EXPECT_FALSE(reader->Read(&got));
    EXPECT_TRUE(reader->Finish().ok());
  }
}

TEST_F(DaemonTest, SigtermThenRestartKeepsEverythingAcknowledged) {
  std::vector<std::string> plains;
  for (int i = 0; i < 20; ++i) plains.push_back(std::string(1000 + i, static_cast<char>('a' + i)));
  Put(plains);
  v1::InitRepositoryRequest init;
  Header(&init, 0);
  init.set_config(R"({"id":"0123456789abcdef0123456789abcdef","version":1})");
  for (size_t i = 0; i < 3; ++i) {
    v1::InitRepositoryResponse r;
    grpc::ClientContext ctx;
    ASSERT_TRUE(cluster_.Admin(i)->InitRepository(&ctx, init, &r).ok());
  }
  for (const auto& n : cluster_.map_.chunkstores) cluster_.Restart(n.id);
  for (const auto& n : cluster_.map_.metadata) cluster_.Restart(n.id);
  for (const auto& p : plains) {
    EXPECT_FALSE(Missing(p));
    v1::GetChunksRequest req;
    Header(&req);
    req.add_fingerprints(Sha256(p).ToBytes());
    grpc::ClientContext ctx;
    auto reader = cluster_.Store(cluster_.ChunkOwner(Sha256(p)))->GetChunks(&ctx, req);
    v1::GetChunksResponse resp;
    ASSERT_TRUE(reader->Read(&resp));
    EXPECT_EQ(resp.error_code(), 0) << resp.error_message();
    EXPECT_EQ(resp.chunk().data(), p);
    EXPECT_TRUE(reader->Finish().ok());
  }
  for (size_t i = 0; i < 3; ++i) {
    v1::GetRepositoryConfigRequest req;
    Header(&req, 0);
    v1::GetRepositoryConfigResponse resp;
    grpc::ClientContext ctx;
    ASSERT_TRUE(cluster_.Admin(i)->GetRepositoryConfig(&ctx, req, &resp).ok());
    EXPECT_EQ(resp.config(), init.config());
  }
  // The Bloom filters are rebuilt from the index at start: still no false negatives.
  for (size_t i = 0; i < 3; ++i) {
    v1::GetFilterRequest req;
    Header(&req);
    v1::GetFilterResponse resp;
    grpc::ClientContext ctx;
    ASSERT_TRUE(cluster_.Index(i)->GetFilter(&ctx, req, &resp).ok());
    absl::StatusOr<BloomFilter> filter = BloomFilter::Parse(resp.filter());
    ASSERT_TRUE(filter.ok()) << filter.status();
    for (const auto& p : plains) {
      if (cluster_.MetaOwner(Sha256(p)) == i) {
        EXPECT_TRUE(filter->MayContain(Sha256(p)));
      }
    }
  }
}

TEST_F(DaemonTest, UpgradeRepositoryRaisesTheVersionAloneAndRefusesAnythingElse) {
  auto upgrade = [&](const std::string& config, v1::UpgradeRepositoryResponse* resp) {
    v1::UpgradeRepositoryRequest req;
    Header(&req, 0);
    req.set_config(config);
    grpc::ClientContext ctx;
    return cluster_.Admin(0)->UpgradeRepository(&ctx, req, resp);
  };
  auto config = [&]() {
    v1::GetRepositoryConfigRequest req;
    Header(&req, 0);
    v1::GetRepositoryConfigResponse resp;
    grpc::ClientContext ctx;
    EXPECT_TRUE(cluster_.Admin(0)->GetRepositoryConfig(&ctx, req, &resp).ok());
    return resp.config();
  };
  const std::string v2 =
      R"({"id":"0123456789abcdef0123456789abcdef","version":2,"compression":"zstd:3"})";
  const std::string v5 =
      R"({"compression":"zstd:3","id":"0123456789abcdef0123456789abcdef","version":5})";
  v1::UpgradeRepositoryResponse resp;
  grpc::Status st = upgrade(v5, &resp);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(st.error_message(), "no repository: run whorl init");

  v1::InitRepositoryRequest init;
  Header(&init, 0);
  init.set_config(v2);
  v1::InitRepositoryResponse init_resp;
  grpc::ClientContext init_ctx;
  ASSERT_TRUE(cluster_.Admin(0)->InitRepository(&init_ctx, init, &init_resp).ok());

  struct Refused {
    std::string config;
    grpc::StatusCode code;
    std::string message;
  };
  const std::vector<Refused> refused = {
      {"not json", grpc::StatusCode::INVALID_ARGUMENT,
       "repository config is not a JSON object with an id and a version"},
      {R"({"id":"0123456789abcdef0123456789abcdef"})", grpc::StatusCode::INVALID_ARGUMENT,
       "repository config is not a JSON object with an id and a version"},
      {R"({"id":"ffffffffffffffffffffffffffffffff","version":5,"compression":"zstd:3"})",
       grpc::StatusCode::FAILED_PRECONDITION,
       R"(config of repository "ffffffffffffffffffffffffffffffff", this is )"
       R"("0123456789abcdef0123456789abcdef")"},
      {R"({"id":"0123456789abcdef0123456789abcdef","version":1,"compression":"zstd:3"})",
       grpc::StatusCode::FAILED_PRECONDITION, "repository is version 2 here, newer than 1"},
      {R"({"id":"0123456789abcdef0123456789abcdef","version":5,"compression":"zstd:9"})",
       grpc::StatusCode::INVALID_ARGUMENT, "an upgrade changes the config's version alone"},
      {R"({"id":"0123456789abcdef0123456789abcdef","version":5})",
       grpc::StatusCode::INVALID_ARGUMENT, "an upgrade changes the config's version alone"},
  };
  for (const Refused& r : refused) {
    st = upgrade(r.config, &resp);
    EXPECT_EQ(st.error_code(), r.code) << r.config;
    EXPECT_EQ(st.error_message(), r.message) << r.config;
    EXPECT_EQ(config(), v2) << r.config;
  }

  resp.Clear();
  ASSERT_TRUE(upgrade(v5, &resp).ok());
  EXPECT_EQ(resp.previous_version(), 2u);
  EXPECT_EQ(config(), v5);
  resp.Clear();
  ASSERT_TRUE(upgrade(v5, &resp).ok());  // again: nothing to do
  EXPECT_EQ(resp.previous_version(), 5u);
  cluster_.Restart(cluster_.map_.metadata[0].id);  // synced
  EXPECT_EQ(config(), v5);
}

}  // namespace
}  // namespace whorl::testing
