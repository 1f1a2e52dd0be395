// ReadAhead: a bounded, asynchronous read-ahead buffer of chunks, for a repository whose reads
// cost a round trip (the remote one).
//
// A reader (restore, or the backup's walk of the parent snapshot) announces what it will read;
// worker threads fetch the announced chunks in batches, ahead of the reader, while the bytes
// held (fetched and not yet taken, plus an estimate of those on the way) stay under a cap. Take
// hands a chunk over, waiting for it if it is on the way.
//
// Order: the newest announcement is fetched first. A depth-first walk announces a directory's
// contents when it enters it, and reads them before going back to the rest of its parent, so
// "newest first" is the order the walk consumes.
//
// A chunk announced k times is fetched once and can be taken k times. Take waits for a chunk on
// the way, and for one still planned while there is room to fetch it; a planned chunk with the
// cap reached (held chunks nobody takes) is dropped from the plan and Take returns nothing: the
// caller fetches it directly, as it does after a failed fetch, so errors are reported where
// they happen, not here. Thread-safe.
#ifndef WHORL_AGENT_READ_AHEAD_H_
#define WHORL_AGENT_READ_AHEAD_H_

#include <cstdint>
#include <deque>
#include <functional>
#include <optional>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "common/fingerprint.h"

namespace whorl::agent {

class ReadAhead {
 public:
  // Fetches one batch: calls deliver(i, plain bytes of fps[i]) for each chunk it got, in any
  // order, on the calling thread, and stops early when deliver returns false (shutting down).
  // Chunks it does not deliver count as failed (their readers fetch them directly).
  using Deliver = std::function<bool(size_t i, std::string plain)>;
  using BatchFetch = std::function<void(const std::vector<Fingerprint>& fps, const Deliver&)>;

  struct Options {
    size_t threads = 4;             // batches fetched at once
    size_t batch = 256;             // chunks per batch
    uint64_t max_bytes = 64 << 20;  // cap on bytes held, fetched or on the way
    // Whether Take waits for a chunk still planned (not yet on the way) while there is room to
    // fetch it. Worth it where a direct read costs a round trip (remote); where it costs what a
    // worker's read costs (embedded), the reader reads it itself instead of sleeping and waking.
    bool wait_for_planned = true;
  };

  ReadAhead(BatchFetch fetch, Options options);
  ~ReadAhead();  // stops the workers (cutting their batches short) and waits for them
  ReadAhead(const ReadAhead&) = delete;
  ReadAhead& operator=(const ReadAhead&) = delete;

  // Each fingerprint will be taken once more (a duplicate counts twice).
  void Announce(const std::vector<Fingerprint>& fps);
  // The chunk's bytes if fetched, on the way or due (waits); nullopt if it was not announced,
  // its fetch failed, or the cap stops it being fetched. Uses up one announcement.
  std::optional<std::string> Take(const Fingerprint& fp);
  // Drops every announcement and every chunk held (those on the way are dropped on arrival):
  // a reader that stops early calls it, so nothing it announced is served to a later reader
  // from before it.
  void Forget();

  // Counters, for tests and metrics.
  uint64_t fetched() const;     // chunks delivered by fetches
  uint64_t held_bytes() const;  // bytes fetched and not taken yet

 private:
  enum class State { kPlanned, kInFlight, kReady };
  struct Entry {
    State state = State::kPlanned;
    uint32_t uses = 0;
    std::string bytes;
  };

  void Work();
  // Chunks on the way, counted at the average size seen so far.
  uint64_t InFlightEstimate() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const BatchFetch fetch_;
  const Options options_;
  mutable absl::Mutex mu_;
  std::unordered_map<Fingerprint, Entry, FingerprintHash> entries_ ABSL_GUARDED_BY(mu_);
  // Announcements, newest first; each in the order given. Holds stale fingerprints (taken or
  // re-announced meanwhile) that the workers skip.
  std::deque<std::deque<Fingerprint>> plan_ ABSL_GUARDED_BY(mu_);
  uint64_t held_bytes_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t in_flight_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t fetched_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t fetched_bytes_ ABSL_GUARDED_BY(mu_) = 0;
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  std::vector<std::thread> workers_;  // started by the first Announce
};

}  // namespace whorl::agent

#endif  // WHORL_AGENT_READ_AHEAD_H_
