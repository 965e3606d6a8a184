#include "engine/dead_letter.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
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
  const std::string sep(1, '\0');
  return Cat(l.pipeline, sep, l.sink, sep, l.event_id, sep, l.table, sep, l.key, sep,
             l.destination);
}

// An open descriptor of the file at `path` holding its exclusive lock until it goes out of
// scope; the file locked is the one the path names (one renamed over while this waited for
// the lock is let go, and the new one taken).
class LockedFile {
 public:
  ~LockedFile() {
    if (fd_ >= 0) ::close(fd_);  // releases the flock
  }
  absl::Status Open(const std::string& path, int flags) {
    for (int attempt = 0; attempt < 100; ++attempt) {
      fd_ = ::open(path.c_str(), flags | O_CLOEXEC, 0640);
      if (fd_ < 0) return Errno("opening the dead-letter file", path);
      if (::flock(fd_, LOCK_EX) != 0) return Errno("locking the dead-letter file", path);
      struct stat held, named;
      if (::fstat(fd_, &held) == 0 && ::stat(path.c_str(), &named) == 0 &&
          held.st_ino == named.st_ino && held.st_dev == named.st_dev) {
        return absl::OkStatus();
      }
      ::close(fd_);
      fd_ = -1;
    }
    return absl::UnavailableError(Cat("the dead-letter file ", path, " keeps being replaced"));
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

// The file's first line after a removal: the ids given so far, so that none is given twice.
constexpr std::string_view kLastIdLine = "{\"last_id\":";

struct FileContents {
  std::vector<DeadLetter> letters;
  uint64_t last_id = 0;     // the highest id ever given in the file
  uint64_t complete = 0;    // bytes up to the end of the last complete line
  uint64_t size = 0;        // bytes in all
};

// Reads every record of the file. A torn last line (a crash during an append, before its
// fdatasync: never acknowledged, so the event comes again) ends the records; a line that is
// not a record anywhere else is damage, an error naming the line.
absl::StatusOr<FileContents> ReadAll(int fd, const std::string& path) {
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
  FileContents out;
  out.size = text.size();
  size_t line_no = 0;
  for (size_t at = 0; at < text.size();) {
    const size_t newline = text.find('\n', at);
    if (newline == std::string::npos) break;  // torn: not a record
    ++line_no;
    std::string_view line(text.data() + at, newline - at);
    at = newline + 1;
    out.complete = at;
    if (line.empty()) continue;
    if (line.substr(0, kLastIdLine.size()) == kLastIdLine) {
      out.last_id = std::max<uint64_t>(out.last_id, std::strtoull(line.data() + kLastIdLine.size(), nullptr, 10));
      continue;
    }
    absl::StatusOr<DeadLetter> letter = ParseDeadLetterJson(line);
    if (!letter.ok()) {
      return absl::DataLossError(
          Cat(path, ":", line_no, ": not a dead-letter record: ", letter.status().message()));
    }
    out.last_id = std::max(out.last_id, letter->id);
    out.letters.push_back(*std::move(letter));
  }
  return out;
}

absl::Status SyncDirectoryOf(const std::string& path) {
  const size_t slash = path.rfind('/');
  const std::string dir = slash == std::string::npos ? "." : slash == 0 ? "/" : path.substr(0, slash);
  int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return Errno("opening the directory of", path);
  const int rc = ::fsync(fd);
  ::close(fd);
  return rc == 0 ? absl::OkStatus() : Errno("syncing the directory of", path);
}

class FileDeadLetterStore : public DeadLetterStore {
 public:
  explicit FileDeadLetterStore(std::string path) : path_(std::move(path)) {}

  std::string Describe() const override { return Cat("file ", path_); }

  absl::Status Record(DeadLetter& letter) override {
    LockedFile file;
    if (absl::Status s = file.Open(path_, O_RDWR | O_CREAT | O_APPEND); !s.ok()) return s;
    // What is known of the file is good while it is the same file, as long as it was: another
    // process (`pgflow dlq purge`, another sink) may have written it.
    struct stat st;
    if (::fstat(file.fd(), &st) != 0) return Errno("reading the dead-letter file", path_);
    if (st.st_ino != inode_ || static_cast<uint64_t>(st.st_size) != size_) {
      absl::StatusOr<FileContents> all = ReadAll(file.fd(), path_);
      if (!all.ok()) return all.status();
      known_.clear();
      for (const DeadLetter& l : all->letters) known_.emplace(Identity(l), l.id);
      last_id_ = all->last_id;
      size_ = all->complete;
      if (all->complete < all->size && ::ftruncate(file.fd(), static_cast<off_t>(all->complete)) != 0) {
        return Errno("cutting a torn line off the dead-letter file", path_);
      }
    }
    inode_ = st.st_ino;
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
    const bool created = size_ == 0;
    if (absl::Status s = WriteAll(file.fd(), line, path_); !s.ok()) return s;
    if (::fdatasync(file.fd()) != 0) return Errno("syncing the dead-letter file", path_);
    if (created) {
      if (absl::Status s = SyncDirectoryOf(path_); !s.ok()) return s;
    }
    last_id_ = letter.id;
    known_.emplace(Identity(letter), letter.id);
    size_ += line.size();
    return absl::OkStatus();
  }

  absl::StatusOr<std::vector<DeadLetter>> List(std::string_view pipeline,
                                               std::string_view sink) override {
    if (::access(path_.c_str(), F_OK) != 0) return std::vector<DeadLetter>{};
    LockedFile file;
    if (absl::Status s = file.Open(path_, O_RDONLY); !s.ok()) return s;
    absl::StatusOr<FileContents> all = ReadAll(file.fd(), path_);
    if (!all.ok()) return all.status();
    std::vector<DeadLetter> out;
    for (DeadLetter& l : all->letters) {
      if (l.pipeline == pipeline && (sink.empty() || l.sink == sink)) out.push_back(std::move(l));
    }
    return out;
  }

  absl::StatusOr<size_t> Remove(std::string_view pipeline,
                                const std::vector<uint64_t>& ids) override {
    if (::access(path_.c_str(), F_OK) != 0) return 0;
    LockedFile file;
    if (absl::Status s = file.Open(path_, O_RDWR); !s.ok()) return s;
    absl::StatusOr<FileContents> all = ReadAll(file.fd(), path_);
    if (!all.ok()) return all.status();
    const absl::flat_hash_set<uint64_t> gone(ids.begin(), ids.end());
    std::string kept = Cat(kLastIdLine, all->last_id, "}\n");
    size_t removed = 0;
    for (const DeadLetter& l : all->letters) {
      if (l.pipeline == pipeline && gone.contains(l.id)) {
        ++removed;
        continue;
      }
      kept += DeadLetterJson(l);
      kept.push_back('\n');
    }
    if (removed == 0) return 0;
    // Written beside the file and renamed over it while holding the old file's lock: a writer
    // waiting for the lock then finds the path names another file, and takes that one.
    const std::string temp = path_ + ".tmp";
    int fd = ::open(temp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0640);
    if (fd < 0) return Errno("writing", temp);
    absl::Status s = WriteAll(fd, kept, temp);
    if (s.ok() && ::fsync(fd) != 0) s = Errno("syncing", temp);
    ::close(fd);
    if (s.ok() && ::rename(temp.c_str(), path_.c_str()) != 0) s = Errno("replacing", path_);
    if (s.ok()) s = SyncDirectoryOf(path_);
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
  l.destination = change.destination;
  AppendChangeObject(change, JsonOptions{}, &l.change);
  return l;
}

namespace {

// The record's text fields, in the order the file writes them. The event and its table version
// are kept as they were written, in strings: parsed into a JSON reader's numbers and written
// back, a value could change (jq: .change | fromjson).
constexpr std::pair<const char*, std::string DeadLetter::*> kTextFields[] = {
    {"pipeline", &DeadLetter::pipeline},       {"sink", &DeadLetter::sink},
    {"event_id", &DeadLetter::event_id},       {"lsn", &DeadLetter::lsn},
    {"table", &DeadLetter::table},             {"operation", &DeadLetter::operation},
    {"key", &DeadLetter::key},                 {"reason", &DeadLetter::reason},
    {"code", &DeadLetter::code},               {"destination", &DeadLetter::destination},
    {"recorded_at", &DeadLetter::recorded_at}, {"change", &DeadLetter::change},
    {"schema", &DeadLetter::schema},
};

}  // namespace

std::string DeadLetterJson(const DeadLetter& l) {
  std::string out = "{\"id\":" + std::to_string(l.id);
  for (const auto& [name, field] : kTextFields) {
    out += Cat(",\"", name, "\":");
    AppendJsonString(l.*field, &out);
  }
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
  for (const auto& [name, field] : kTextFields) {
    if (auto it = j.find(name); it != j.end() && it->is_string()) l.*field = it->get<std::string>();
  }
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
