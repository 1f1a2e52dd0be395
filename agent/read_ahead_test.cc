#include "agent/read_ahead.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"

namespace whorl::agent {
namespace {

// Chunk i: its bytes and the fingerprint of those bytes.
std::string Bytes(int i, size_t size = 1000) {
  std::string s(size, static_cast<char>('a' + i % 26));
  s += std::to_string(i);
  return s;
}

// An in-memory source: the test's stand-in for the chunk-store nodes (the real ones are
// exercised by tests/e2e/test_cluster.py through `whorl restore`).
class Source {
 public:
  Fingerprint Add(const std::string& bytes) {
    const Fingerprint fp = Sha256(bytes);
    absl::MutexLock lock(&mu_);
    data_[fp] = bytes;
    return fp;
  }
  void Fail(const Fingerprint& fp) {
    absl::MutexLock lock(&mu_);
    failing_[fp] = true;
  }
  void Fetch(const std::vector<Fingerprint>& fps, const ReadAhead::Deliver& deliver) {
    for (size_t i = 0; i < fps.size(); ++i) {
      std::string bytes;
      {
        absl::MutexLock lock(&mu_);
        asked_.push_back(fps[i]);
        ++times_[fps[i]];
        if (failing_.contains(fps[i]) || !data_.contains(fps[i])) continue;
        bytes = data_[fps[i]];
      }
      if (!deliver(i, std::move(bytes))) return;
    }
  }
  std::vector<Fingerprint> asked() {
    absl::MutexLock lock(&mu_);
    return asked_;
  }
  int times(const Fingerprint& fp) {
    absl::MutexLock lock(&mu_);
    return times_[fp];
  }

 private:
  absl::Mutex mu_;
  std::map<Fingerprint, std::string> data_;
  std::map<Fingerprint, bool> failing_;
  std::map<Fingerprint, int> times_;
  std::vector<Fingerprint> asked_;
};

ReadAhead::BatchFetch FetchFrom(Source* src) {
  return [src](const std::vector<Fingerprint>& fps, const ReadAhead::Deliver& d) {
    src->Fetch(fps, d);
  };
}

// Waits until the read-ahead stops fetching (its count is unchanged for 100 ms).
void Settle(const ReadAhead& ra) {
  uint64_t last = ~uint64_t{0};
  while (ra.fetched() != last) {
    last = ra.fetched();
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
}

TEST(ReadAheadTest, FetchesEachAnnouncedChunkOnceAndHandsItOver) {
  Source src;
  std::vector<Fingerprint> fps;
  for (int i = 0; i < 50; ++i) fps.push_back(src.Add(Bytes(i)));
  ReadAhead ra(FetchFrom(&src), {.threads = 3, .batch = 4, .max_bytes = 1 << 20});
  ra.Announce(fps);
  Settle(ra);
  EXPECT_EQ(ra.fetched(), 50u);
  for (int i = 0; i < 50; ++i) {
    std::optional<std::string> got = ra.Take(fps[i]);
    ASSERT_TRUE(got.has_value()) << i;
    EXPECT_EQ(*got, Bytes(i));
    EXPECT_EQ(src.times(fps[i]), 1);
  }
  EXPECT_EQ(ra.held_bytes(), 0u);
  EXPECT_FALSE(ra.Take(fps[0]).has_value());  // each announcement is taken once
}

TEST(ReadAheadTest, DuplicateIsFetchedOnceAndTakenAsOftenAsAnnounced) {
  Source src;
  const Fingerprint a = src.Add(Bytes(1)), b = src.Add(Bytes(2));
  ReadAhead ra(FetchFrom(&src), {.threads = 1, .batch = 8, .max_bytes = 1 << 20});
  ra.Announce({a, b, a});
  Settle(ra);
  ra.Announce({a});  // again while it is held
  EXPECT_EQ(src.times(a), 1);
  for (int k = 0; k < 3; ++k) EXPECT_EQ(ra.Take(a).value_or("missing"), Bytes(1)) << k;
  EXPECT_FALSE(ra.Take(a).has_value());
  EXPECT_EQ(ra.Take(b).value_or("missing"), Bytes(2));
  EXPECT_EQ(src.times(a), 1);
}

TEST(ReadAheadTest, ForgetDropsHeldAndPlannedChunks) {
  Source src;
  std::vector<Fingerprint> fps;
  for (int i = 0; i < 20; ++i) fps.push_back(src.Add(Bytes(i)));
  ReadAhead ra(FetchFrom(&src), {.threads = 2, .batch = 2, .max_bytes = 1 << 20});
  ra.Announce(fps);
  Settle(ra);
  ASSERT_EQ(ra.fetched(), 20u);
  ASSERT_GT(ra.held_bytes(), 0u);
  ra.Forget();
  EXPECT_EQ(ra.held_bytes(), 0u);
  for (const Fingerprint& fp : fps) EXPECT_FALSE(ra.Take(fp).has_value());
  // Announced again, each is fetched afresh.
  ra.Announce({fps[3]});
  Settle(ra);
  EXPECT_EQ(ra.Take(fps[3]).value_or("missing"), Bytes(3));
  EXPECT_EQ(src.times(fps[3]), 2);
}

TEST(ReadAheadTest, StaysUnderItsCapAndResumesAsChunksAreTaken) {
  Source src;
  std::vector<Fingerprint> fps;
  for (int i = 0; i < 100; ++i) fps.push_back(src.Add(Bytes(i)));  // ~1003 bytes each
  ReadAhead ra(FetchFrom(&src), {.threads = 2, .batch = 2, .max_bytes = 8000});
  ra.Announce(fps);
  Settle(ra);
  // Admission counts held bytes plus the batches on the way: at most 8 KB held plus one batch
  // per worker admitted just under the cap.
  EXPECT_GE(ra.fetched(), 2u);
  EXPECT_LE(ra.fetched(), 12u);
  EXPECT_LE(ra.held_bytes(), 8000u + 2 * 2 * 1010);
  // Taking frees room, so the read-ahead goes on where it stopped, in announcement order.
  const uint64_t first_round = ra.fetched();
  for (uint64_t i = 0; i < first_round; ++i) {
    EXPECT_EQ(ra.Take(fps[i]).value_or("missing"), Bytes(static_cast<int>(i))) << i;
  }
  Settle(ra);
  EXPECT_GT(ra.fetched(), first_round);
  EXPECT_LE(ra.fetched(), 2 * first_round + 4);
  for (uint64_t i = first_round; i < ra.fetched(); ++i) {
    EXPECT_EQ(ra.Take(fps[i]).value_or("missing"), Bytes(static_cast<int>(i))) << i;
  }
}

TEST(ReadAheadTest, FailedFetchLeavesTheChunkToTheReader) {
  Source src;
  const Fingerprint good = src.Add(Bytes(1)), bad = src.Add(Bytes(2));
  src.Fail(bad);
  ReadAhead ra(FetchFrom(&src), {.threads = 2, .batch = 1, .max_bytes = 1 << 20});
  ra.Announce({bad, good});
  Settle(ra);
  EXPECT_FALSE(ra.Take(bad).has_value());
  EXPECT_EQ(ra.Take(good).value_or("missing"), Bytes(1));
}

TEST(ReadAheadTest, NewestAnnouncementIsFetchedFirst) {
  Source src;
  const Fingerprint a1 = src.Add(Bytes(1)), a2 = src.Add(Bytes(2)), b1 = src.Add(Bytes(3));
  absl::Notification entered, announced_b;
  std::atomic<int> calls{0};
  ReadAhead ra(
      [&](const std::vector<Fingerprint>& fps, const ReadAhead::Deliver& d) {
        if (calls++ == 0) {
          entered.Notify();
          announced_b.WaitForNotification();
        }
        src.Fetch(fps, d);
      },
      {.threads = 1, .batch = 1, .max_bytes = 1 << 20});
  ra.Announce({a1, a2});
  entered.WaitForNotification();  // the worker took a1 and waits in the fetch
  ra.Announce({b1});
  announced_b.Notify();
  Settle(ra);
  EXPECT_EQ(src.asked(), (std::vector<Fingerprint>{a1, b1, a2}));
}

// A gate in front of the source: the first fetch signals `entered` and every fetch waits for
// `release`.
struct Gate {
  absl::Notification entered, release;
  std::atomic<int> calls{0};
  ReadAhead::BatchFetch Fetch(Source* src) {
    return [this, src](const std::vector<Fingerprint>& fps, const ReadAhead::Deliver& d) {
      if (calls++ == 0) entered.Notify();
      release.WaitForNotification();
      src->Fetch(fps, d);
    };
  }
};

TEST(ReadAheadTest, ReaderWaitsForAPlannedChunkWhileThereIsRoom) {
  Source src;
  const Fingerprint a = src.Add(Bytes(1)), b = src.Add(Bytes(2));
  Gate gate;
  ReadAhead ra(gate.Fetch(&src), {.threads = 1, .batch = 1, .max_bytes = 1 << 20});
  ra.Announce({a, b});
  gate.entered.WaitForNotification();  // a is in flight (held at the gate), b planned
  std::thread opener([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    gate.release.Notify();
  });
  EXPECT_EQ(ra.Take(b).value_or("missing"), Bytes(2));  // waited for the worker
  EXPECT_EQ(ra.Take(a).value_or("missing"), Bytes(1));
  opener.join();
  EXPECT_EQ(src.times(a), 1);
  EXPECT_EQ(src.times(b), 1);
}

TEST(ReadAheadTest, ReaderGetsNothingForAPlannedChunkWhenTheCapIsReached) {
  Source src;
  const Fingerprint a = src.Add(Bytes(1)), b = src.Add(Bytes(2));
  Gate gate;
  // 1000 bytes: the one batch on the way (counted at 64 KiB until sizes are known) fills it.
  ReadAhead ra(gate.Fetch(&src), {.threads = 1, .batch = 1, .max_bytes = 1000});
  ra.Announce({a, b});
  gate.entered.WaitForNotification();
  EXPECT_FALSE(ra.Take(b).has_value());  // the reader fetches it itself
  gate.release.Notify();
  EXPECT_EQ(ra.Take(a).value_or("missing"), Bytes(1));  // in flight: waits for it
  Settle(ra);
  EXPECT_EQ(src.times(b), 0);  // dropped from the plan, never fetched
}

TEST(ReadAheadTest, DestructionWithWorkPendingReturns) {
  Source src;
  std::vector<Fingerprint> fps;
  for (int i = 0; i < 1000; ++i) fps.push_back(src.Add(Bytes(i, 100)));
  {
    ReadAhead ra(FetchFrom(&src), {.threads = 4, .batch = 16, .max_bytes = 1 << 20});
    ra.Announce(fps);
  }
  SUCCEED();
}

}  // namespace
}  // namespace whorl::agent
