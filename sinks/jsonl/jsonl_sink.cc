#include "sinks/jsonl/jsonl_sink.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <array>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "engine/log.h"

namespace pgflow {
namespace {

constexpr size_t kWriteThreshold = 1 << 20;

absl::Status ErrnoError(const char* what, const std::string& path) {
  return absl::UnavailableError(absl::StrCat(what, " ", path, ": ", std::strerror(errno)));
}

constexpr std::array<OptionSpec, 3> kOptions = {{
    {"path", "string", true, "", "file to append to; \"-\" writes to stdout"},
    {"fsync", "bool", false, "true",
     "fsync the file before acknowledging (off: faster, "
     "but a machine crash can lose acknowledged changes)"},
    {"numeric_as_number", "bool", false, "false",
     "write numeric columns as JSON numbers instead of strings"},
}};

class JsonlSinkFactory : public SinkFactory {
 public:
  std::string_view type() const override { return "jsonl"; }
  std::span<const OptionSpec> options() const override { return kOptions; }

  absl::StatusOr<std::shared_ptr<const SinkOptions>> Parse(const ConfigNode& node) const override {
    if (!node.IsMap()) return node.Error("expected a mapping like {path: out.jsonl}");
    if (absl::Status s = node.CheckKeys(kOptions); !s.ok()) return s;
    auto options = std::make_shared<JsonlSinkOptions>();
    absl::StatusOr<std::string> path = node.Get("path")->AsString();
    if (!path.ok()) return path.status();
    if (path->empty()) return node.Get("path")->Error("path is empty");
    options->path = *path;
    if (auto v = node.Get("fsync")) {
      absl::StatusOr<bool> b = v->AsBool();
      if (!b.ok()) return b.status();
      options->fsync = *b;
    }
    if (auto v = node.Get("numeric_as_number")) {
      absl::StatusOr<bool> b = v->AsBool();
      if (!b.ok()) return b.status();
      options->json.numeric_as_number = *b;
    }
    return options;
  }

  std::unique_ptr<Sink> Build(const PipelineConfig&, const SinkConfig& sink) const override {
    return std::make_unique<JsonlSink>(
        std::static_pointer_cast<const JsonlSinkOptions>(sink.options));
  }
};

}  // namespace

void AppendJsonlLine(const Change& change, const JsonOptions& options, std::string* out) {
  AppendChangeObject(change, options, out);
  out->push_back('\n');
}

JsonlSink::JsonlSink(std::shared_ptr<const JsonlSinkOptions> options)
    : options_(std::move(options)) {}

JsonlSink::~JsonlSink() {
  if (fd_ > STDERR_FILENO) ::close(fd_);
}

absl::Status JsonlSink::Open() {
  if (options_->path == "-") {
    fd_ = STDOUT_FILENO;
    return absl::OkStatus();
  }
  fd_ = ::open(options_->path.c_str(), O_RDWR | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (fd_ < 0) return ErrnoError("cannot open", options_->path);
  struct stat st;
  if (::fstat(fd_, &st) != 0) return ErrnoError("cannot stat", options_->path);
  is_regular_file_ = S_ISREG(st.st_mode);
  written_bytes_ = is_regular_file_ ? static_cast<uint64_t>(st.st_size) : 0;
  if (is_regular_file_ && st.st_size == 0 && options_->fsync) {
    // A new file: make its directory entry durable too, or a machine crash could lose the
    // file with every acknowledged line in it.
    std::string dir = options_->path;
    size_t slash = dir.rfind('/');
    dir = slash == std::string::npos ? "." : slash == 0 ? "/" : dir.substr(0, slash);
    int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
      ::fsync(dfd);
      ::close(dfd);
    }
  }
  if (!is_regular_file_ || st.st_size == 0) return absl::OkStatus();
  // A crash can leave a partial last line. It belongs to an unacknowledged position, so it
  // will be written again in full: cut it off so the file stays one object per line.
  char last = 0;
  if (::pread(fd_, &last, 1, st.st_size - 1) != 1) return ErrnoError("cannot read", options_->path);
  if (last == '\n') return absl::OkStatus();
  off_t keep = st.st_size - 1;
  char buf[4096];
  while (keep > 0) {
    off_t from = keep > static_cast<off_t>(sizeof(buf)) ? keep - sizeof(buf) : 0;
    ssize_t n = ::pread(fd_, buf, keep - from, from);
    if (n <= 0) return ErrnoError("cannot read", options_->path);
    const void* nl = memrchr(buf, '\n', n);
    if (nl != nullptr) {
      keep = from + (static_cast<const char*>(nl) - buf) + 1;
      break;
    }
    keep = from;
  }
  if (::ftruncate(fd_, keep) != 0) return ErrnoError("cannot truncate", options_->path);
  written_bytes_ = static_cast<uint64_t>(keep);
  LogWarning("sink jsonl %s: removed a partial last line (%d bytes) left by an earlier crash",
             options_->path, st.st_size - keep);
  return absl::OkStatus();
}

absl::Status JsonlSink::Write(const Event& event) {
  switch (event.kind) {
    case EventKind::kBegin:
      txn_start_ = written_bytes_ + buffer_.size();
      return absl::OkStatus();
    case EventKind::kCommit:
      txn_start_.reset();
      return absl::OkStatus();
    case EventKind::kRollback:
      return Rollback();
    case EventKind::kChange:
      break;
    default:
      return absl::OkStatus();
  }
  AppendJsonlLine(event.change, options_->json, &buffer_);
  if (buffer_.size() >= kWriteThreshold) return WriteBuffer();
  return absl::OkStatus();
}

absl::Status JsonlSink::Rollback() {
  if (!txn_start_) return absl::OkStatus();
  const uint64_t start = *txn_start_;
  txn_start_.reset();
  // The transaction will be sent again in full; nothing of it was acknowledged, so its lines
  // can go. Lines already written to a pipe cannot be taken back: they will appear twice.
  if (start >= written_bytes_) {
    buffer_.resize(start - written_bytes_);
    return absl::OkStatus();
  }
  buffer_.clear();
  if (!is_regular_file_) return absl::OkStatus();
  if (::ftruncate(fd_, static_cast<off_t>(start)) != 0) {
    return ErrnoError("cannot truncate", options_->path);
  }
  LogInfo("sink jsonl %s: took back %d bytes of a transaction that was cut off; it comes again",
          options_->path, written_bytes_ - start);
  written_bytes_ = start;
  return absl::OkStatus();
}

absl::Status JsonlSink::WriteBuffer() {
  const char* p = buffer_.data();
  size_t left = buffer_.size();
  while (left > 0) {
    ssize_t n = ::write(fd_, p, left);
    if (n < 0) {
      if (errno == EINTR) continue;
      return ErrnoError("cannot write", options_->path);
    }
    p += n;
    left -= static_cast<size_t>(n);
    written_bytes_ += static_cast<uint64_t>(n);
  }
  buffer_.clear();
  return absl::OkStatus();
}

absl::Status JsonlSink::Flush() {
  if (absl::Status s = WriteBuffer(); !s.ok()) return s;
  if (is_regular_file_ && options_->fsync && ::fdatasync(fd_) != 0) {
    return ErrnoError("cannot fsync", options_->path);
  }
  return absl::OkStatus();
}

absl::Status JsonlSink::Close() {
  absl::Status s = Flush();
  if (fd_ > STDERR_FILENO) ::close(fd_);
  fd_ = -1;
  return s;
}

void RegisterJsonlSink() { RegisterSinkFactory(std::make_unique<JsonlSinkFactory>()); }

}  // namespace pgflow
