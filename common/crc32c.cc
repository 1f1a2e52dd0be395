#include "common/crc32c.h"

#include <isa-l/crc.h>

#include <climits>

namespace whorl::crc32c {

uint32_t Extend(uint32_t init, std::string_view data) {
  // crc32_iscsi takes and returns the raw (not inverted) register: invert on the way in and
  // out to get the standard CRC32C, which composes across calls.
  uint32_t crc = ~init;
  auto* p = reinterpret_cast<unsigned char*>(const_cast<char*>(data.data()));
  size_t left = data.size();
  while (left > 0) {
    const int n = left > INT_MAX ? INT_MAX : static_cast<int>(left);
    crc = crc32_iscsi(p, n, crc);
    p += n;
    left -= static_cast<size_t>(n);
  }
  return ~crc;
}

}  // namespace whorl::crc32c
