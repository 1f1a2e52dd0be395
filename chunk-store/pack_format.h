// Byte layout constants of pack files and locator values. See pack_format.md for more detail.
#ifndef WHORL_CHUNK_STORE_PACK_FORMAT_H_
#define WHORL_CHUNK_STORE_PACK_FORMAT_H_

#include <cstddef>
#include <cstdint>

namespace whorl::chunkstore {

// Pack header is magic (8 bytes), version (4 bytes), reserved (4 bytes, zero).
inline constexpr char kPackMagic[] = "WHORLPAK";  // 8 bytes; the NUL is not written
inline constexpr size_t kPackMagicSize = 8;
// Version 2 adds bundle records, version 3 records of codec 2 (LZ4); a build reads versions
// kOldestPackVersion..kPackVersion. A store's new packs have the lowest version that holds what
// it was given so far (1, then 2 once it holds a bundle, 3 once it holds an LZ4 record), so a
// store stays readable by older builds until it holds what they cannot read.
inline constexpr uint32_t kBundlePackVersion = 2;
inline constexpr uint32_t kLz4PackVersion = 3;
inline constexpr uint32_t kPackVersion = 3;
inline constexpr uint32_t kOldestPackVersion = 1;
inline constexpr size_t kPackHeaderSize = 16;

// Record header is magic (4), codec (1), flags (1), reserved (2), plain_size (4),
// stored_size (4), fingerprint (32), crc (4); then stored_size data bytes.
inline constexpr uint32_t kRecordMagic = 0x31435257;  // "WRC1" in file order
inline constexpr size_t kRecordHeaderSize = 52;
inline constexpr size_t kRecordCodecOffset = 4;
inline constexpr size_t kRecordFlagsOffset = 5;
inline constexpr size_t kRecordReservedOffset = 6;
inline constexpr size_t kRecordPlainSizeOffset = 8;
inline constexpr size_t kRecordStoredSizeOffset = 12;
inline constexpr size_t kRecordFingerprintOffset = 16;
inline constexpr size_t kRecordCrcOffset = 48;  // the CRC covers header bytes [0, 48) + data
// The only record flag (version 2 packs): the record is a bundle of chunks (common/bundle.h).
inline constexpr uint8_t kRecordFlagBundle = 0x01;

// Locator value is pack_id (4), offset (8), stored_size (4), plain_size (4), codec (1); for a
// chunk in a bundle, then inner_offset (4) and share (4).
inline constexpr size_t kLocatorValueSize = 21;
inline constexpr size_t kBundledLocatorValueSize = 29;

// Pack files are DIR/packs/NNNNNNNN.pack: 8-digit zero-padded decimal ids from 1.
inline constexpr uint32_t kFirstPackId = 1;
inline constexpr uint32_t kMaxPackId = 99999999;
inline constexpr char kPacksDirName[] = "packs";
inline constexpr char kLocatorDirName[] = "locator";
// The locator's column family holding, per pack, where its indexed records end: key pack_id
// (4 bytes, big-endian), value end offset (8 bytes, little-endian).
inline constexpr char kPackEndsColumnFamily[] = "pack_ends";
inline constexpr size_t kPackEndValueSize = 8;

}  // namespace whorl::chunkstore

#endif  // WHORL_CHUNK_STORE_PACK_FORMAT_H_
