#include "agent/read_ahead.h"

#include <utility>

namespace whorl::agent {

ReadAhead::ReadAhead(BatchFetch fetch, Options options)
    : fetch_(std::move(fetch)), options_(options) {}

ReadAhead::~ReadAhead() {
  {
    absl::MutexLock lock(&mu_);
    stop_ = true;
  }
  for (std::thread& t : workers_) t.join();
}

uint64_t ReadAhead::InFlightEstimate() const {
  // Before anything arrived, assume chunks of 64 KiB (twice the default average).
  const uint64_t avg = fetched_ == 0 ? (64 << 10) : fetched_bytes_ / fetched_;
  return in_flight_ * avg;
}

void ReadAhead::Announce(const std::vector<Fingerprint>& fps) {
  if (fps.empty()) return;
  absl::MutexLock lock(&mu_);
  std::deque<Fingerprint> fresh;
  for (const Fingerprint& fp : fps) {
    Entry& e = entries_[fp];
    if (e.uses++ == 0 && e.state == State::kPlanned) fresh.push_back(fp);
  }
  if (!fresh.empty()) plan_.push_front(std::move(fresh));
  if (workers_.empty()) {
    for (size_t i = 0; i < options_.threads; ++i) workers_.emplace_back([this] { Work(); });
  }
}

std::optional<std::string> ReadAhead::Take(const Fingerprint& fp) {
  absl::MutexLock lock(&mu_);
  auto it = entries_.find(fp);
  if (it == entries_.end()) return std::nullopt;
  if (it->second.state != State::kReady) {
    // Wait while it is on the way, or planned with room to fetch it (the workers then get to
    // it soon: they are fetching). Planned with the cap reached, nothing may free room but
    // this reader, so it stops waiting and fetches the chunk itself.
    auto settled = [this, &fp] {
      auto e = entries_.find(fp);
      if (e == entries_.end() || e->second.state == State::kReady || stop_) return true;
      return e->second.state == State::kPlanned &&
             (!options_.wait_for_planned || held_bytes_ + InFlightEstimate() >= options_.max_bytes);
    };
    mu_.Await(absl::Condition(&settled));
    it = entries_.find(fp);
    if (it == entries_.end()) return std::nullopt;
  }
  Entry& e = it->second;
  if (e.state == State::kPlanned) {
    // The reader got here first: it fetches this one itself; the workers skip it.
    if (--e.uses == 0) entries_.erase(it);
    return std::nullopt;
  }
  if (--e.uses > 0) return e.bytes;  // announced again: keep a copy
  std::string bytes = std::move(e.bytes);
  held_bytes_ -= bytes.size();
  entries_.erase(it);
  return bytes;
}

void ReadAhead::Forget() {
  absl::MutexLock lock(&mu_);
  entries_.clear();
  plan_.clear();
  held_bytes_ = 0;
}

void ReadAhead::Work() {
  while (true) {
    std::vector<Fingerprint> batch;
    {
      absl::MutexLock lock(&mu_);
      auto ready = [this] {
        return stop_ || (!plan_.empty() && held_bytes_ + InFlightEstimate() < options_.max_bytes);
      };
      mu_.Await(absl::Condition(&ready));
      if (stop_) return;
      while (!plan_.empty() && batch.size() < options_.batch) {
        std::deque<Fingerprint>& newest = plan_.front();
        const Fingerprint fp = newest.front();
        newest.pop_front();
        if (newest.empty()) plan_.pop_front();
        auto it = entries_.find(fp);
        if (it == entries_.end() || it->second.state != State::kPlanned) continue;
        it->second.state = State::kInFlight;
        batch.push_back(fp);
      }
      in_flight_ += batch.size();
    }
    if (batch.empty()) continue;
    std::vector<bool> got(batch.size(), false);
    fetch_(batch, [&](size_t i, std::string plain) {
      absl::MutexLock lock(&mu_);
      if (i >= batch.size() || got[i]) return !stop_;
      got[i] = true;
      --in_flight_;
      ++fetched_;
      fetched_bytes_ += plain.size();
      auto it = entries_.find(batch[i]);
      if (it != entries_.end() && it->second.state == State::kInFlight) {  // else forgotten
        held_bytes_ += plain.size();
        it->second.bytes = std::move(plain);
        it->second.state = State::kReady;
      }
      return !stop_;
    });
    absl::MutexLock lock(&mu_);
    for (size_t i = 0; i < batch.size(); ++i) {
      if (got[i]) continue;
      --in_flight_;
      // Failed or cut short: its readers fetch it themselves (and meet the error there).
      auto it = entries_.find(batch[i]);
      if (it != entries_.end() && it->second.state == State::kInFlight) entries_.erase(it);
    }
  }
}

uint64_t ReadAhead::fetched() const {
  absl::MutexLock lock(&mu_);
  return fetched_;
}

uint64_t ReadAhead::held_bytes() const {
  absl::MutexLock lock(&mu_);
  return held_bytes_;
}

}  // namespace whorl::agent
