#pragma once

// A parser for the data of `COPY ... TO STDOUT (FORMAT binary)` (PostgreSQL docs, "COPY", "Binary
// Format"). Pure: no I/O, no allocation per row.

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

#include "absl/status/status.h"

namespace pgflow {

// Parses the stream one CopyData message at a time, as libpq's PQgetCopyData hands it over.
// PostgreSQL sends the 19-byte header (signature "PGCOPY\n\377\r\n\0", int32 flags, int32
// header-extension length and the extension) in front of the first row (or of the trailer when
// there are no rows), then one row per message, then the trailer (int16 -1) alone.
//
// Any split is accepted as long as every message holds whole units: the header, tuples, the
// trailer. A message ending inside one of them is an error, which PostgreSQL never produces;
// a message ending right after the header (or an empty message) is fine.
//
// Not thread-safe; one parser per COPY.
class BinaryCopyParser {
 public:
  // One field of a tuple. `bytes` is the value in its type's send format (empty when is_null)
  // and points into the message being parsed: valid during the on_row call only.
  struct Field {
    bool is_null = false;
    std::string_view bytes;
  };

  // Every tuple must have `expected_columns` fields.
  explicit BinaryCopyParser(size_t expected_columns);

  // Parses `message` and calls on_row(std::span<const Field>) once per tuple in it, in order.
  // on_row returns void, or absl::Status: a non-OK status stops parsing and is returned as it
  // is (the rows after it in `message` are not delivered, and the parser counts as failed).
  //
  // Returns InvalidArgument, naming the byte offset in the COPY stream and the problem, on: a
  // wrong signature, header flags with bit 16 (OIDs included) or any other critical bit (0-15)
  // set, a message ending inside the header or a tuple, a field count other than
  // expected_columns, a field length below -1 or past the end of the message, anything after
  // the trailer. Rows before the error have been delivered. Once Parse has returned an error,
  // every later call returns FailedPrecondition.
  template <typename OnRow>
  absl::Status Parse(std::string_view message, OnRow&& on_row) {
    using Result = std::invoke_result_t<OnRow&, std::span<const Field>>;
    static_assert(std::is_void_v<Result> || std::is_same_v<Result, absl::Status>,
                  "on_row must return void or absl::Status");
    size_t pos = 0;
    while (true) {
      bool got_row = false;
      absl::Status status = Next(message, &pos, &got_row);
      if (!status.ok() || !got_row) return status;
      const std::span<const Field> row(fields_);
      if constexpr (std::is_void_v<Result>) {
        on_row(row);
      } else {
        absl::Status row_status = on_row(row);
        if (!row_status.ok()) {
          state_ = State::kFailed;
          return row_status;
        }
      }
    }
  }

  // True once the trailer has been seen: the COPY data is complete.
  bool finished() const { return state_ == State::kFinished; }

  // Bytes parsed so far over all messages.
  uint64_t stream_offset() const { return stream_offset_; }

 private:
  enum class State { kHeader, kTuples, kFinished, kFailed };

  // Parses the next unit of message[*pos...]. Sets *got_row when a tuple is in fields_. Returns
  // OK with *got_row false when `message` is used up.
  absl::Status Next(std::string_view message, size_t* pos, bool* got_row);
  absl::Status ParseHeader(std::string_view message, size_t* pos);
  // Marks the parser failed; `at` is an offset in the current message.
  absl::Status Fail(size_t at, const std::string& problem);

  const size_t expected_columns_;
  std::vector<Field> fields_;  // the current tuple; sized once
  State state_ = State::kHeader;
  uint64_t stream_offset_ = 0;  // bytes of the stream before the current message
};

}  // namespace pgflow
