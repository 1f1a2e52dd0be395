#include "common/kill_point.h"

#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <random>
#include <string>

namespace whorl::kill_point_internal {
namespace {

constexpr char kRandomPrefix[] = "random:";

// What WHORL_KILL_POINT* asked for, parsed once before main().
struct Config {
  bool armed = false;
  bool random = false;
  std::string name;        // the point to die at (not random)
  uint64_t skip = 0;       // hits of `name` to survive first
  double probability = 0;  // random: per hit
  uint64_t seed = 0;       // random: generator seed
};

Config ReadConfig() {
  Config c;
  const char* point = std::getenv("WHORL_KILL_POINT");
  if (point == nullptr || *point == '\0') return c;
  c.armed = true;
  if (std::strncmp(point, kRandomPrefix, sizeof(kRandomPrefix) - 1) == 0) {
    c.random = true;
    c.probability = std::strtod(point + sizeof(kRandomPrefix) - 1, nullptr);
    const char* seed = std::getenv("WHORL_KILL_SEED");
    c.seed = seed != nullptr && *seed != '\0'
                 ? std::strtoull(seed, nullptr, 10)
                 : static_cast<uint64_t>(::getpid()) * 1000003u +
                       static_cast<uint64_t>(
                           std::chrono::steady_clock::now().time_since_epoch().count());
  } else {
    c.name = point;
  }
  if (const char* skip = std::getenv("WHORL_KILL_POINT_SKIP"); skip != nullptr) {
    c.skip = std::strtoull(skip, nullptr, 10);
  }
  return c;
}

Config& GetConfig() {
  static Config config = ReadConfig();
  return config;
}

// Writes with write(2) only: no allocation or locks that a dying process might hold.
void Say(const char* name) {
  const char* parts[] = {"whorl: kill point ", name, ": SIGKILL\n"};
  for (const char* p : parts) {
    const ssize_t n = ::write(STDERR_FILENO, p, std::strlen(p));
    (void)n;  // nothing to do if stderr is gone: we die either way
  }
}

[[noreturn]] void Die(const char* name) {
  Say(name);
  ::raise(SIGKILL);
  std::abort();  // not reached: SIGKILL cannot be caught
}

std::atomic<uint64_t> g_hits{0};
std::mutex g_random_mu;

}  // namespace

bool g_armed = GetConfig().armed;

void Hit(const char* name) {
  const Config& c = GetConfig();
  if (c.random) {
    static std::mt19937_64 rng(c.seed);
    std::lock_guard<std::mutex> lock(g_random_mu);
    if (std::uniform_real_distribution<double>(0.0, 1.0)(rng) < c.probability) Die(name);
    return;
  }
  if (c.name != name) return;
  if (g_hits.fetch_add(1) >= c.skip) Die(name);
}

}  // namespace whorl::kill_point_internal
