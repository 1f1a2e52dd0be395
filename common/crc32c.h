// CRC32C (Castagnoli, as in iSCSI, RFC 3720), computed by libisal's crc32_iscsi, which uses
// SSE4.2/PCLMUL where the CPU has them. Debian 12 ships no libcrc32c.
#ifndef WHORL_COMMON_CRC32C_H_
#define WHORL_COMMON_CRC32C_H_

#include <cstdint>
#include <string_view>

namespace whorl::crc32c {

// CRC32C of `data` continuing from the CRC32C `init` of the bytes before it (0 to start).
uint32_t Extend(uint32_t init, std::string_view data);
inline uint32_t Value(std::string_view data) { return Extend(0, data); }

}  // namespace whorl::crc32c

#endif  // WHORL_COMMON_CRC32C_H_
