// Internal to chunk-store/: encoding, writing, reading and scanning pack files (layout in
// pack_format.md, constants in pack_format.h), and the locator value encoding. Callers outside
// this folder use chunk_store.h only.
//
// Every check that fails on bytes read from disk returns DATA_LOSS with a message that says
// what is wrong ("bad record magic 0x00000000"); callers add where ("pack 00000003 offset 16").
#ifndef WHORL_CHUNK_STORE_PACK_H_
#define WHORL_CHUNK_STORE_PACK_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "chunk-store/chunk_store.h"
#include "chunk-store/pack_format.h"
#include "common/codec.h"
#include "common/fingerprint.h"

namespace whorl::chunkstore {

// The fields of a record header (pack_format.md, "Record").
struct RecordHeader {
  Codec codec = Codec::kNone;
  uint32_t plain_size = 0;
  uint32_t stored_size = 0;
  Fingerprint fingerprint;
  bool bundle = false;  // flag kRecordFlagBundle: plain_size and fingerprint are the bundle's
};

// A record found by ScanPack.
struct ScannedRecord {
  uint64_t offset = 0;  // of the record header
  RecordHeader header;
  std::vector<BundleSlice> members;  // of a bundle, parsed from its decoded bytes
};

// What ScanPack found: the whole records, in file order, and where the valid prefix ends.
struct PackScan {
  std::vector<ScannedRecord> records;
  uint64_t valid_end = 0;  // end of the last whole record; kPackHeaderSize if there is none
  uint64_t file_size = 0;  // length of the file before any cut
};

// "packs/00000003.pack" style names; "00000003" for messages.
std::string PackFileName(uint32_t pack_id);
std::string PackIdString(uint32_t pack_id);
std::string PackPath(const std::string& packs_dir, uint32_t pack_id);
// The id in a pack file name, or 0 if `name` is not exactly NNNNNNNN.pack with NNNNNNNN >= 1.
uint32_t ParsePackFileName(std::string_view name);
// Ids of the pack files in `packs_dir`, ascending; other names are ignored.
absl::StatusOr<std::vector<uint32_t>> ListPackIds(const std::string& packs_dir);

// The 16-byte header every pack starts with.
std::string EncodePackHeader(uint32_t version);
// The version of `header`; DATA_LOSS unless it is a whole pack header of a version we read.
absl::StatusOr<uint32_t> CheckPackHeader(std::string_view header);

// The 52-byte record header for `data`. Asserts that the sizes fit in 32 bits.
std::string EncodeRecordHeader(const RecordHeader& header, std::string_view data);
// Header followed by data: a whole record.
std::string EncodeRecord(const RecordHeader& header, std::string_view data);
// Parses a 52-byte header, checking magic, codec, flags (0 or kRecordFlagBundle), reserved and
// that both sizes are at
// most `max_chunk_bytes`. Does not check the CRC (that needs the data): see CheckRecordCrc.
absl::StatusOr<RecordHeader> DecodeRecordHeader(std::string_view header, uint64_t max_chunk_bytes);
// DATA_LOSS unless the CRC in `header` (52 bytes) matches header[0, 48) followed by `data`.
absl::Status CheckRecordCrc(std::string_view header, std::string_view data);

// Reads the records of an open pack from offset `start` (a record boundary; by default the end
// of the pack header) on, stopping at the first record that is incomplete or fails any check of
// DecodeRecordHeader or CheckRecordCrc, is a bundle in a version 1 pack or an LZ4 record in a
// pack older than version 3, does not
// decode or whose member table does not parse. DATA_LOSS if the pack header itself is short or bad,
// or if the file is shorter than `start`; I/O errors as ErrnoStatus. Does not modify the file.
absl::StatusOr<PackScan> ScanPack(int fd, const std::string& path, uint64_t max_chunk_bytes,
                                  uint64_t start = kPackHeaderSize);

// Crash recovery of the newest pack at `path`. `indexed_end` is where the records the locator
// indexes end (the store keeps it per pack): bytes before it were acknowledged and are never
// cut or rescanned here (damage there is for Get and `check` to report). From `indexed_end`
// on, whole records are returned for re-indexing and the first bad or torn one, with all after
// it, is cut (ftruncate + fdatasync). A file shorter than the pack header with nothing indexed
// is rewritten as an empty version 1 pack. DATA_LOSS, leaving the file alone, if the file is
// shorter than `indexed_end` (acknowledged bytes are gone). Returns the scan (file_size is the
// length before recovery).
absl::StatusOr<PackScan> RecoverNewestPack(const std::string& path, uint64_t max_chunk_bytes,
                                           uint64_t indexed_end = kPackHeaderSize);

// The whole records of closed pack `path` from `indexed_end` on (records synced before the
// store moved to the next pack, whose locator entries a power loss took: they were not synced,
// ChunkStoreOptions::sync_locator). Like ScanPack it stops at the first record that is not
// valid, but it never modifies the file: bytes past that stay for `check` and GC.
absl::StatusOr<PackScan> ScanClosedPackTail(const std::string& path, uint64_t max_chunk_bytes,
                                            uint64_t indexed_end);

// Checks only the pack header of the file at `path` (a closed pack is scanned at open only past
// its indexed end, when its file is longer: ScanClosedPackTail) and
// returns the file's length. DATA_LOSS naming the file if it is empty or short, has a bad magic,
// an unknown version or a nonzero reserved field; NOT_FOUND (from ErrnoStatus) if it does not
// exist.
absl::StatusOr<uint64_t> CheckPackFile(const std::string& path);

// Appends records to one pack file. Not thread-safe: the store serializes its writers.
class PackWriter {
 public:
  // Creates packs_dir/NNNNNNNN.pack (it must not exist), writes and fdatasyncs its header, then
  // syncs packs_dir so that the file's existence is durable. On error no file is left.
  static absl::StatusOr<std::unique_ptr<PackWriter>> Create(const std::string& packs_dir,
                                                            uint32_t pack_id,
                                                            uint32_t version = kOldestPackVersion);
  // Opens an existing pack to append after its current end (which must be a record boundary).
  static absl::StatusOr<std::unique_ptr<PackWriter>> OpenForAppend(const std::string& packs_dir,
                                                                   uint32_t pack_id);
  ~PackWriter();
  PackWriter(const PackWriter&) = delete;
  PackWriter& operator=(const PackWriter&) = delete;

  uint32_t pack_id() const { return pack_id_; }
  uint64_t size() const { return size_; }
  // Of the pack: version 2 and up take bundles, version 3 LZ4 records.
  uint32_t version() const { return version_; }

  // Appends one record and returns its offset. On error part of it may have been written:
  // call TruncateTo(size before the append). Records queued before it are written first.
  absl::StatusOr<uint64_t> Append(const RecordHeader& header, std::string_view data);
  // Queues one record for the next Flush (or Sync) and returns the offset it will have; size()
  // counts it at once. `data` must stay valid and unchanged until then. A store's batch of
  // records then goes out in one writev, not two writes a record (the 1 GiB image's first
  // backup made 40k write calls, ~20k records).
  uint64_t Queue(const RecordHeader& header, std::string_view data);
  // Writes the queued records. On error part of them may have been written: call
  // TruncateTo(size before the first of them).
  absl::Status Flush();
  // Flush, then fdatasync: every record appended or queued so far is durable when this returns
  // OK.
  absl::Status Sync();
  // Cuts the file back to `size` bytes, dropping what is queued (not synced: recovery handles a
  // tail that reappears).
  absl::Status TruncateTo(uint64_t size);

 private:
  PackWriter(int fd, std::string path, uint32_t pack_id, uint32_t version, uint64_t size)
      : fd_(fd), path_(std::move(path)), pack_id_(pack_id), version_(version), size_(size) {}

  const int fd_;
  const std::string path_;
  const uint32_t pack_id_;
  const uint32_t version_;
  uint64_t size_;  // queued records included
  // Queued records: their headers, end to end, and their data.
  std::string queued_headers_;
  std::vector<std::string_view> queued_data_;
};

// A record as PackReader::ReadRecord read it: header and data in one block, allocated without
// zero-filling. A restore's reads of big chunks were 2% of its CPU zero-filling a std::string
// that pread then overwrote, and moving the data over the header after the read.
class RecordBuffer {
 public:
  // The record's stored bytes (after its header), valid until the next read into this buffer.
  std::string_view data() const { return data_; }

 private:
  friend class PackReader;
  char* Reserve(size_t n);

  std::unique_ptr<char[]> bytes_;
  size_t capacity_ = 0;
  std::string_view data_;
};

// Reads records of one pack by offset. Thread-safe (pread only).
class PackReader {
 public:
  // NOT_FOUND (from ErrnoStatus) if the file does not exist.
  static absl::StatusOr<std::unique_ptr<PackReader>> Open(const std::string& packs_dir,
                                                          uint32_t pack_id);
  ~PackReader();
  PackReader(const PackReader&) = delete;
  PackReader& operator=(const PackReader&) = delete;

  // Reads the record at `offset` whose data is `stored_size` bytes, checks its header (as
  // DecodeRecordHeader with no size cap) and CRC, and returns the header; `*data` receives the
  // stored bytes. DATA_LOSS for a short file or a failed check.
  absl::StatusOr<RecordHeader> ReadRecord(uint64_t offset, uint32_t stored_size,
                                          std::string* data) const;
  // The same into `buffer`, whose data() then views the stored bytes (empty after an error).
  absl::StatusOr<RecordHeader> ReadRecord(uint64_t offset, uint32_t stored_size,
                                          RecordBuffer* buffer) const;

 private:
  PackReader(int fd, std::string path) : fd_(fd), path_(std::move(path)) {}
  const int fd_;
  const std::string path_;
};

// DATA_LOSS unless the record header read at `location` is the one the locator describes:
// same fingerprint, sizes and codec; for a chunk in a bundle, a bundle record with the same
// stored size and codec whose plain bytes have room for the chunk (the member itself is checked
// by FindBundleMember once decoded).
absl::Status CheckRecordMatches(const RecordHeader& header, const Fingerprint& fp,
                                const ChunkLocation& location);

// The bytes of chunk `fp` in the decoded `bundle`, checked against its member table and the
// locator's inner offset and size. DATA_LOSS if the table does not parse or does not list the
// chunk where the locator places it.
absl::StatusOr<std::string_view> FindBundleMember(std::string_view bundle, const Fingerprint& fp,
                                                  const ChunkLocation& location);
// The same, with the bundle's table already parsed (ParseBundle of `bundle`): found by the
// locator's inner offset in O(log members), so reading every member of a bundle of n members
// costs n log n, not n^2.
absl::StatusOr<std::string_view> FindBundleMember(std::string_view bundle,
                                                  const std::vector<BundleSlice>& members,
                                                  const Fingerprint& fp,
                                                  const ChunkLocation& location);

// Locator values (pack_format.md, "Locator"): 21 bytes, 29 for a chunk in a bundle. Decode
// refuses a value of another length, naming pack 0 or with an unknown codec with DATA_LOSS.
std::string EncodeLocatorValue(const ChunkLocation& location);
absl::StatusOr<ChunkLocation> DecodeLocatorValue(std::string_view value);

}  // namespace whorl::chunkstore

#endif  // WHORL_CHUNK_STORE_PACK_H_
