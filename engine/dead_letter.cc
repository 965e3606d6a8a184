#include "engine/dead_letter.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "engine/event_id.h"
#include "engine/str_cat.h"
#include "nlohmann/json.hpp"
#include "schemas/json_encoding.h"
#include "schemas/json_text.h"
#include "schemas/table_schema_json.h"

namespace pgflow {
namespace {

using ojson = nlohmann::ordered_json;

TableDeadLetterStoreMaker& TableMaker() {
  static auto* maker = new TableDeadLetterStoreMaker();
  return *maker;
}

absl::Status Errno(std::string_view what, const std::string& path) {
  return absl::UnavailableError(Cat(what, " ", path, ": ", std::strerror(errno)));
}

std::string Identity(const DeadLetter& l) {
  return Cat(l.pipeline, std::string(1, '\0'), l.sink, std::string(1, '\0'), l.event_id,
             std::string(1, '\0'), l.key);
}

// An open descriptor holding the file's exclusive lock until it goes out of scope.
class LockedFile {
 public:
  ~LockedFile() {
    if (fd_ >= 0) ::close(fd_);  // releases the flock
  }
  absl::Status Open(const std::string& path, int flags) {
    fd_ = ::open(path.c_str(), flags | O_CLOEXEC, 0640);
    if (fd_ < 0) return Errno("opening the dead-letter file", path);
    if (::flock(fd_, LOCK_EX) != 0) return Errno("locking the dead-letter file", path);
    return absl::OkStatus();
  }
  int fd() const { return fd_; }

 private:
  int fd_ = -1;
};

absl::Status WriteAll(int fd, std::string_view data, const std::string& path) {
  while (!data.empty()) {
    ssize_t n = ::write(fd, data.data(), data.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      return Errno("writing the dead-letter file", path);
    }
    data.remove_prefix(static_cast<size_t>(n));
  }
  return absl::OkStatus();
}

// Reads every record of the file; a line that is not a record is an error naming its line.
absl::StatusOr<std::vector<DeadLetter>> ReadAll(int fd, const std::string& path) {
  std::string text;
  char buf[1 << 16];
  if (::lseek(fd, 0, SEEK_SET) < 0) return Errno("reading the dead-letter file", path);
  while (true) {
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0) {
      if (errno == EINTR) continue;
      return Errno("reading the dead-letter file", path);
    }
    if (n == 0) break;
    text.append(buf, static_cast<size_t>(n));
  }
  std::vector<DeadLetter> out;
  size_t line_no = 0;
  for (size_t at = 0; at < text.size();) {
    size_t end = text.find('\n', at);
    if (end == std::string::npos) end = text.size();
    ++line_no;
    std::string_view line(text.data() + at, end - at);
    at = end + 1;
    if (line.empty()) continue;
    absl::StatusOr<DeadLetter> letter = ParseDeadLetterJson(line);
    if (!letter.ok()) {
      // A torn last line (a crash during the append, before its fdatasync) was never
      // acknowledged: the event comes again and is recorded again. Anything else is damage.
      if (end >= text.size()) break;
      return absl::DataLossError(
          Cat(path, ":", line_no, ": not a dead-letter record: ", letter.status().message()));
    }
    out.push_back(*std::move(letter));
  }
  return out;
}

class FileDeadLetterStore : public DeadLetterStore {
 public:
  explicit FileDeadLetterStore(std::string path) : path_(std::move(path)) {}

  std::string Describe() const override { return Cat("file ", path_); }

  absl::Status Record(DeadLetter& letter) override {
    LockedFile file;
    if (absl::Status s = file.Open(path_, O_RDWR | O_CREAT | O_APPEND); !s.ok()) return s;
    // What is known of the file is good while it is the same file, as long as it was: another
    // process (`pgflow dlq purge`) may have rewritten it.
    struct stat st;
    if (::fstat(file.fd(), &st) != 0) return Errno("reading the dead-letter file", path_);
    if (st.st_ino != inode_ || static_cast<uint64_t>(st.st_size) != size_) {
      absl::StatusOr<std::vector<DeadLetter>> all = ReadAll(file.fd(), path_);
      if (!all.ok()) return all.status();
      known_.clear();
      last_id_ = 0;
      for (const DeadLetter& l : *all) {
        known_.emplace(Identity(l), l.id);
        last_id_ = std::max(last_id_, l.id);
      }
    }
    if (auto it = known_.find(Identity(letter)); it != known_.end()) {
      letter.id = it->second;
      return absl::OkStatus();
    }
    letter.id = last_id_ + 1;
    if (letter.recorded_at.empty()) {
      letter.recorded_at = absl::FormatTime("%Y-%m-%dT%H:%M:%E3SZ", absl::Now(), absl::UTCTimeZone());
    }
    std::string line = DeadLetterJson(letter);
    line.push_back('\n');
    if (absl::Status s = WriteAll(file.fd(), line, path_); !s.ok()) return s;
    if (::fdatasync(file.fd()) != 0) return Errno("syncing the dead-letter file", path_);
    last_id_ = letter.id;
    known_.emplace(Identity(letter), letter.id);
    inode_ = st.st_ino;
    size_ = static_cast<uint64_t>(st.st_size) + line.size();
    return absl::OkStatus();
  }

  absl::StatusOr<std::vector<DeadLetter>> List(std::string_view pipeline,
                                               std::string_view sink) override {
    if (::access(path_.c_str(), F_OK) != 0) return std::vector<DeadLetter>{};
    LockedFile file;
    if (absl::Status s = file.Open(path_, O_RDONLY); !s.ok()) return s;
    absl::StatusOr<std::vector<DeadLetter>> all = ReadAll(file.fd(), path_);
    if (!all.ok()) return all.status();
    std::vector<DeadLetter> out;
    for (DeadLetter& l : *all) {
      if (l.pipeline == pipeline && (sink.empty() || l.sink == sink)) out.push_back(std::move(l));
    }
    return out;
  }

  absl::StatusOr<size_t> Remove(std::string_view pipeline,
                                const std::vector<uint64_t>& ids) override {
    if (::access(path_.c_str(), F_OK) != 0) return 0;
    LockedFile file;
    if (absl::Status s = file.Open(path_, O_RDWR); !s.ok()) return s;
    absl::StatusOr<std::vector<DeadLetter>> all = ReadAll(file.fd(), path_);
    if (!all.ok()) return all.status();
    const absl::flat_hash_set<uint64_t> gone(ids.begin(), ids.end());
    std::string kept;
    size_t removed = 0;
    for (const DeadLetter& l : *all) {
      if (l.pipeline == pipeline && gone.contains(l.id)) {
        ++removed;
        continue;
      }
      kept += DeadLetterJson(l);
      kept.push_back('\n');
    }
    if (removed == 0) return 0;
    // Written beside the file and renamed over it, under the old file's lock: a writer that
    // waits for the lock finds a different inode when it gets it, and reads the file again.
    const std::string temp = path_ + ".tmp";
    int fd = ::open(temp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0640);
    if (fd < 0) return Errno("writing", temp);
    absl::Status s = WriteAll(fd, kept, temp);
    if (s.ok() && ::fsync(fd) != 0) s = Errno("syncing", temp);
    ::close(fd);
    if (s.ok() && ::rename(temp.c_str(), path_.c_str()) != 0) s = Errno("replacing", path_);
    if (!s.ok()) return s;
    return removed;
  }

 private:
  const std::string path_;
  ino_t inode_ = 0;
  uint64_t size_ = 0;
  uint64_t last_id_ = 0;
  absl::flat_hash_map<std::string, uint64_t> known_;
};

}  // namespace

const OptionTable<DeadLetterConfig>& DeadLetterTable() {
  static const auto* table = new OptionTable<DeadLetterConfig>({
      StringOption("path", &DeadLetterConfig::path)
          .NoDefault()
          .NonEmpty()
          .Help("A JSON-lines file the sink's refused events are appended to (fdatasynced "
                "before their position is acknowledged)."),
      StringOption("table", &DeadLetterConfig::table)
          .NoDefault()
          .NonEmpty()
          .Help("A PostgreSQL table (schema.name, created when missing) for the refused "
                "events; a postgres sink writes it in the target, in the data's transaction."),
      StringOption("url", &DeadLetterConfig::url)
          .NoDefault()
          .DefaultText("the postgres sink's target, else the source")
          .Help("The database of `table`."),
  });
  return *table;
}

DeadLetter MakeDeadLetter(std::string_view pipeline, std::string_view sink, const Change& change,
                          std::string key, std::string reason, std::string code) {
  DeadLetter l;
  l.pipeline = std::string(pipeline);
  l.sink = std::string(sink);
  AppendEventId(change, &l.event_id);
  l.lsn = change.txn.commit_lsn.ToString();
  if (change.table != nullptr) {
    l.table = change.table->QualifiedName();
    AppendTableSchemaJson(*change.table, &l.schema);
  }
  l.operation = OpName(change.op);
  l.key = std::move(key);
  l.reason = std::move(reason);
  l.code = std::move(code);
  AppendChangeObject(change, JsonOptions{}, &l.change);
  return l;
}

std::string DeadLetterJson(const DeadLetter& l) {
  std::string out = "{\"id\":" + std::to_string(l.id);
  auto field = [&](const char* name, const std::string& value) {
    out += Cat(",\"", name, "\":");
    AppendJsonString(value, &out);
  };
  field("pipeline", l.pipeline);
  field("sink", l.sink);
  field("event_id", l.event_id);
  field("lsn", l.lsn);
  field("table", l.table);
  field("operation", l.operation);
  field("key", l.key);
  field("reason", l.reason);
  field("code", l.code);
  field("recorded_at", l.recorded_at);
  // The event and its table version as JSON, not as strings: the file reads well with jq.
  out += ",\"change\":";
  out += l.change.empty() ? "null" : l.change;
  out += ",\"schema\":";
  out += l.schema.empty() ? "null" : l.schema;
  out += "}";
  return out;
}

absl::StatusOr<DeadLetter> ParseDeadLetterJson(std::string_view line) {
  ojson j = ojson::parse(line, nullptr, false);
  if (!j.is_object()) return absl::InvalidArgumentError("not a JSON object");
  DeadLetter l;
  if (!j.contains("id") || !j["id"].is_number_unsigned()) {
    return absl::InvalidArgumentError("no \"id\"");
  }
  l.id = j["id"].get<uint64_t>();
  auto text = [&](const char* name, std::string* out) {
    if (auto it = j.find(name); it != j.end() && it->is_string()) *out = it->get<std::string>();
  };
  text("pipeline", &l.pipeline);
  text("sink", &l.sink);
  text("event_id", &l.event_id);
  text("lsn", &l.lsn);
  text("table", &l.table);
  text("operation", &l.operation);
  text("key", &l.key);
  text("reason", &l.reason);
  text("code", &l.code);
  text("recorded_at", &l.recorded_at);
  if (auto it = j.find("change"); it != j.end() && !it->is_null()) l.change = it->dump();
  if (auto it = j.find("schema"); it != j.end() && !it->is_null()) l.schema = it->dump();
  if (l.pipeline.empty() || l.sink.empty()) {
    return absl::InvalidArgumentError("no \"pipeline\" or \"sink\"");
  }
  return l;
}

std::unique_ptr<DeadLetterStore> NewFileDeadLetterStore(std::string path) {
  return std::make_unique<FileDeadLetterStore>(std::move(path));
}

void RegisterTableDeadLetterStore(TableDeadLetterStoreMaker maker) {
  if (!TableMaker()) TableMaker() = std::move(maker);
}

absl::StatusOr<std::unique_ptr<DeadLetterStore>> OpenDeadLetterStore(
    const DeadLetterConfig& config, const std::string& fallback_url, std::string_view where) {
  if (!config.path.empty()) return NewFileDeadLetterStore(config.path);
  const std::string& url = config.url.empty() ? fallback_url : config.url;
  if (url.empty()) {
    return absl::InvalidArgumentError(
        Cat(where, ".table: the source is not a PostgreSQL database: say which database holds "
                   "the table with `url`, or use `path`"));
  }
  if (!TableMaker()) {
    return absl::InternalError(Cat(where, ": no PostgreSQL dead-letter store is registered"));
  }
  absl::StatusOr<std::unique_ptr<DeadLetterStore>> store = TableMaker()(url, config.table);
  if (!store.ok()) {
    return absl::Status(store.status().code(), Cat(where, ": ", store.status().message()));
  }
  return store;
}

}  // namespace pgflow
