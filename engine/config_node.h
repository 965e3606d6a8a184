#pragma once

// The tree of a pgflow configuration file (a pipeline file, later the pooler's): YAML read
// into nodes that remember where they came from, so that every error names the file, line,
// column and dotted key path:
//   shop.yaml:7:5: sinks.out.jsonl: unknown key 'pth' (did you mean 'path'? ...)
// Scalars read as strings have `${VAR}` and `${VAR:-default}` replaced from the environment.
// Nothing here touches the network; only ReadConfigFile reads a file.

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace YAML {
class Node;
}

namespace pgflow {

// Every error of a file in one run: while a ConfigErrors lives on this thread, readers that
// can go on past an error (the next key, the next sink) hand it to Note, which keeps it and
// answers OK; without one, Note answers the error itself, and the first error ends the read.
// Each error is a "<file>:<line>:<column>: <path>: <message>" line.
class ConfigErrors {
 public:
  static constexpr size_t kMaxKept = 20;

  ConfigErrors();
  ~ConfigErrors();
  ConfigErrors(const ConfigErrors&) = delete;
  ConfigErrors& operator=(const ConfigErrors&) = delete;

  // `error` kept (OK returned) while a ConfigErrors is active; else `error`.
  static absl::Status Note(absl::Status error);
  // How many errors the active collector holds (0 without one).
  static size_t Count();
  // OK when none was noted; else one InvalidArgument holding them all, a line each (the first
  // kMaxKept, and how many more), or `result`'s error first when it is one.
  absl::Status Finish(const absl::Status& result = absl::OkStatus());

 private:
  ConfigErrors* previous_;
  std::vector<std::string> errors_;
  size_t dropped_ = 0;
};

// A node of a configuration file with its position, for typed reads with good errors.
// Cheap to copy (the YAML tree is shared). Thread-compatible.
class ConfigNode {
 public:
  ConfigNode(std::shared_ptr<const YAML::Node> node, std::string file, std::string path);

  const std::string& path() const { return path_; }
  const std::string& file() const { return file_; }
  // "<file>:<line>:<column>", 1-based.
  std::string Position() const;
  // "<file>:<line>:<column>: <path>: <message>" as an InvalidArgument status.
  absl::Status Error(std::string_view message) const;

  bool IsMap() const;
  bool IsSequence() const;
  bool IsScalar() const;
  bool IsNull() const;
  // "a mapping", "a sequence", "a string", "null": for "expected X, got Y".
  std::string_view KindName() const;

  // The mapping accessors treat a null node (`jsonl:` with nothing after it) as an empty
  // mapping, and return nothing for any other non-mapping.
  //
  // The value under `key`, if present and not null.
  std::optional<ConfigNode> Get(std::string_view key) const;
  // The key node itself (not its value), for errors about the key: it has the key's position
  // and this mapping's path. nullopt if absent.
  std::optional<ConfigNode> KeyNode(std::string_view key) const;
  // The keys in file order, each with its value (which may be null; a null value reports the
  // position of its key).
  std::vector<std::pair<std::string, ConfigNode>> Entries() const;
  // The items of a sequence; empty for anything but a sequence.
  std::vector<ConfigNode> Items() const;

  absl::StatusOr<std::string> AsString() const;
  // true/false, yes/no, on/off (any case).
  absl::StatusOr<bool> AsBool() const;
  // "must be between <min> and <max>, got <n>" outside the range.
  absl::StatusOr<int64_t> AsInt(int64_t min, int64_t max) const;
  // 1048576, "64MiB", "64MB" (=MiB), "1GiB", "512KiB", "512kB".
  absl::StatusOr<uint64_t> AsBytes() const;
  // "250ms", "5s", "2m", "1h"; a bare integer is seconds.
  absl::StatusOr<std::chrono::milliseconds> AsDuration() const;
  // A string or a list of strings.
  absl::StatusOr<std::vector<std::string>> AsStringList() const;
  // A string naming a file or directory: a relative path is resolved against the directory of
  // this node's file (ResolveConfigPath), so that a file means the same from any directory.
  absl::StatusOr<std::string> AsPath() const;

 private:
  std::shared_ptr<const YAML::Node> node_;
  std::string file_;
  std::string path_;
  // 0-based position to report instead of the node's own mark, set for null values: yaml-cpp
  // places an empty value's mark at the next token, so errors point at its key instead.
  int line_ = -1;
  int column_ = -1;
};

// Parses `yaml_text`, a whole file (`file_name` is only used in messages), into its root node,
// rejecting what yaml-cpp accepts but a configuration file must not have: several documents,
// an empty file, duplicate keys, keys that are not strings, trees made huge or cyclic by
// aliases. `expected` describes the root for messages ("a mapping with the keys pipeline,
// source and sinks"). InvalidArgument with the position on error.
absl::StatusOr<ConfigNode> ParseConfigDocument(std::string_view yaml_text,
                                               std::string_view file_name,
                                               std::string_view expected);

// `path` as a configuration file named `file` means it: relative to the directory holding
// `file` (as `file` itself is named: relative to the current directory when `file` is), an
// absolute path as it is, an empty one empty.
std::string ResolveConfigPath(std::string_view file, std::string_view path);

// Reads `path` (a regular file or a pipe, at most 16 MiB). NotFound / PermissionDenied /
// InvalidArgument naming the path when it cannot be read.
absl::StatusOr<std::string> ReadConfigFile(const std::string& path);

// "(did you mean 'path'? expected one of: path, fsync)": what follows "unknown key 'pth'".
// The suggestion is the candidate within an edit distance of 2, if any; `label` introduces
// the list ("expected one of", "known types").
std::string DidYouMean(std::string_view word, std::span<const std::string_view> candidates,
                       std::string_view label);

// OK when `name` is 1 to `max_length` characters of a-z, 0-9 and '_' (a pipeline, slot or
// publication name); else "invalid <what> '<name>': use a-z, 0-9 and '_', at most N characters".
absl::Status CheckPlainName(std::string_view name, size_t max_length, std::string_view what);

// Sizes and durations as a user writes them: 64MiB, 1536KiB, 100 (bytes); 250ms, 5s, 2m, 1h.
std::string FormatBytes(uint64_t bytes);
std::string FormatDuration(std::chrono::milliseconds duration);

}  // namespace pgflow
