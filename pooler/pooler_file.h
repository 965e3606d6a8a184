#pragma once

// Edits of the pooler's file made at run time (the web console's "add a database" and
// "remove"), written back to the file so that the file stays the source of truth. The edit is
// made to the text, line by line: comments, order and formatting of everything else stay as
// they were. `databases:` must be a block mapping at the top level (a flow mapping `{...}` is
// refused, naming the way out). The caller parses the result before writing it.

#include <string>
#include <string_view>

#include "absl/status/statusor.h"

namespace pgflow::pooler {

// A database entry the console adds: `name: {url: "...", pool_mode: ..., pool_size: ...}`.
struct NewDatabase {
  std::string name;  // letters, digits, '_', '-', '.'; not pgflow or pgbouncer
  std::string url;
  std::string pool_mode;  // empty: the file's default
  int pool_size = 0;      // 0: the file's default
};

// `text` with `database` added at the end of `databases:` (the section added at the end when
// the file has none). AlreadyExists when the file has it; InvalidArgument for a name or entry
// the file cannot take.
absl::StatusOr<std::string> AddDatabaseToText(std::string_view text, const NewDatabase& database);

// `text` without the entry of `name` (its line and the lines under it). NotFound when the file
// has none.
absl::StatusOr<std::string> RemoveDatabaseFromText(std::string_view text, const std::string& name);

// Replaces `path`'s contents with `text` atomically (a file beside it, fsynced, renamed over
// it, with its permissions).
absl::Status WriteFileAtomically(const std::string& path, std::string_view text);

}  // namespace pgflow::pooler
