#include "sinks/jsonl/jsonl_sink.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>

#include "absl/strings/str_cat.h"
#include "engine/log.h"

namespace pgflow {
namespace {

constexpr size_t kWriteThreshold = 1 << 20;

absl::Status ErrnoError(const char* what, const std::string& path) {
  return absl::UnavailableError(absl::StrCat(what, " ", path, ": ", std::strerror(errno)));
}

const OptionTable<JsonlSinkOptions>& JsonlSinkTable() {
  static const auto* table = new OptionTable<JsonlSinkOptions>({
      StringOption("path", &JsonlSinkOptions::path)
          .Required()
          .NonEmpty()
          .Help("File to append to; \"-\" is stdout."),
      BoolOption("fsync", &JsonlSinkOptions::fsync)
          .Help("fsync the file before acknowledging; false is faster, but a machine crash can "
                "lose acknowledged lines."),
      BoolOption("numeric_as_number", &JsonlSinkOptions::json, &JsonOptions::numeric_as_number)
          .Help("numeric columns as JSON numbers rather than strings."),
  });
  return *table;
}

class JsonlSinkFactory : public SinkFactoryOf<JsonlSinkOptions> {
 public:
  std::string_view type() const override { return "jsonl"; }
  std::string_view help() const override {
    return "Every event as one JSON object per line, appended to a file or written to stdout.";
  }

 protected:
  const OptionTable<JsonlSinkOptions>& table() const override { return JsonlSinkTable(); }
  std::unique_ptr<Sink> Build(const SinkContext&,
                              std::shared_ptr<const JsonlSinkOptions> options) const override {
    return std::make_unique<JsonlSink>(std::move(options));
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

absl::Status JsonlSink::OnBegin(const TxnInfo&) {
  txn_start_ = written_bytes_ + buffer_.size();
  return absl::OkStatus();
}

absl::Status JsonlSink::OnCommit(const TxnInfo&) {
  txn_start_.reset();
  return absl::OkStatus();
}

absl::Status JsonlSink::OnChange(const Change& change, bool) {
  AppendJsonlLine(change, options_->json, &buffer_);
  if (buffer_.size() >= kWriteThreshold) return WriteBuffer();
  return absl::OkStatus();
}

absl::Status JsonlSink::OnRollback() {
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
