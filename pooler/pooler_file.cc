#include "pooler/pooler_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <cstring>
#include <algorithm>
#include <optional>
#include <vector>

#include "engine/str_cat.h"

namespace pgflow::pooler {
namespace {

// The file's lines, without their ends; *crlf: it ends them with "\r\n".
std::vector<std::string> Lines(std::string_view text, bool* crlf) {
  std::vector<std::string> lines;
  *crlf = text.find("\r\n") != std::string_view::npos;
  while (!text.empty()) {
    const size_t end = text.find('\n');
    std::string_view line = text.substr(0, end);
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    lines.emplace_back(line);
    text.remove_prefix(end == std::string_view::npos ? text.size() : end + 1);
  }
  return lines;
}

std::string Join(const std::vector<std::string>& lines, bool crlf) {
  std::string out;
  for (const std::string& line : lines) {
    out += line;
    out += crlf ? "\r\n" : "\n";
  }
  return out;
}

size_t Indent(std::string_view line) {
  size_t n = 0;
  while (n < line.size() && line[n] == ' ') ++n;
  return n;
}

// Blank, or only a comment.
bool IsFiller(std::string_view line) {
  const size_t n = Indent(line);
  return n == line.size() || line[n] == '#';
}

// The key a mapping line starts with ("app" of `  app: {url: ...}`, quotes dropped), or
// nullopt for a line that is not `key:`.
std::optional<std::string> KeyOf(std::string_view line) {
  line.remove_prefix(Indent(line));
  if (line.empty() || line[0] == '#' || line[0] == '-') return std::nullopt;
  if (line[0] == '"' || line[0] == '\'') {
    const size_t close = line.find(line[0], 1);
    if (close == std::string_view::npos || close + 1 >= line.size() || line[close + 1] != ':') {
      return std::nullopt;
    }
    return std::string(line.substr(1, close - 1));
  }
  const size_t colon = line.find(':');
  if (colon == std::string_view::npos) return std::nullopt;
  if (colon + 1 < line.size() && line[colon + 1] != ' ' && line[colon + 1] != '\t') {
    return std::nullopt;
  }
  std::string_view key = line.substr(0, colon);
  while (!key.empty() && (key.back() == ' ' || key.back() == '\t')) key.remove_suffix(1);
  return std::string(key);
}

// Where `databases:` is: its line, the line past its block, and its entries' indentation.
struct Section {
  size_t header = 0;
  size_t end = 0;
  size_t indent = 2;
};

absl::StatusOr<std::optional<Section>> FindDatabases(const std::vector<std::string>& lines) {
  for (size_t i = 0; i < lines.size(); ++i) {
    if (Indent(lines[i]) != 0 || KeyOf(lines[i]) != "databases") continue;
    std::string_view rest(lines[i]);
    rest.remove_prefix(rest.find(':') + 1);
    while (!rest.empty() && (rest.front() == ' ' || rest.front() == '\t')) rest.remove_prefix(1);
    if (!rest.empty() && rest.front() != '#') {
      return absl::FailedPreconditionError(
          Cat("line ", i + 1, ": databases: is written on one line (", std::string(rest),
              "): write it as a block, one database a line, to add or remove one from the "
              "console"));
    }
    Section section{i, lines.size(), 0};
    for (size_t j = i + 1; j < lines.size(); ++j) {
      if (IsFiller(lines[j])) continue;
      if (Indent(lines[j]) == 0) {
        section.end = j;
        break;
      }
      if (section.indent == 0) section.indent = Indent(lines[j]);
    }
    if (section.indent == 0) section.indent = 2;
    // Blank and comment lines before the next key belong to it.
    while (section.end > i + 1 && IsFiller(lines[section.end - 1])) --section.end;
    return std::optional<Section>(section);
  }
  return std::optional<Section>();
}

// The line of `name`'s entry in `section`, if any.
std::optional<size_t> FindEntry(const std::vector<std::string>& lines, const Section& section,
                                const std::string& name) {
  for (size_t j = section.header + 1; j < section.end; ++j) {
    if (!IsFiller(lines[j]) && Indent(lines[j]) == section.indent && KeyOf(lines[j]) == name) {
      return j;
    }
  }
  return std::nullopt;
}

// A YAML double-quoted string that the loader reads back as `text`: '$' doubled, as its
// ${NAME} expansion takes "$$" for a '$' (so that an added url cannot read the pooler's
// environment).
std::string Quoted(std::string_view text) {
  std::string out = "\"";
  for (char c : text) {
    if (c == '"' || c == '\\') out += '\\';
    if (c == '$') out += '$';
    out += c;
  }
  return out + "\"";
}

constexpr std::string_view kNameCharacters =
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-.";

absl::Status CheckNew(const NewDatabase& d) {
  if (d.name.empty() || d.name.size() > 63 ||
      d.name.find_first_not_of(kNameCharacters) != std::string::npos) {
    return absl::InvalidArgumentError(
        Cat("database name \"", d.name, "\": 1 to 63 letters, digits, '_', '-' or '.'"));
  }
  if (d.name == "pgflow" || d.name == "pgbouncer") {
    return absl::InvalidArgumentError(Cat("database name ", d.name, " is the admin console's"));
  }
  if (d.url.empty() || d.url.size() > 4096 ||
      std::any_of(d.url.begin(), d.url.end(),
                  [](char c) { return static_cast<unsigned char>(c) < 0x20 || c == 0x7f; })) {
    return absl::InvalidArgumentError("url: a postgres:// url on one line");
  }
  if (!d.pool_mode.empty() && d.pool_mode != "session" && d.pool_mode != "transaction" &&
      d.pool_mode != "statement") {
    return absl::InvalidArgumentError(
        Cat("pool_mode ", d.pool_mode, ": session, transaction or statement"));
  }
  if (d.pool_size < 0 || d.pool_size > 10000) {
    return absl::InvalidArgumentError(Cat("pool_size ", d.pool_size, ": 1 to 10000"));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::string> AddDatabaseToText(std::string_view text, const NewDatabase& database) {
  if (absl::Status s = CheckNew(database); !s.ok()) return s;
  bool crlf = false;
  std::vector<std::string> lines = Lines(text, &crlf);
  absl::StatusOr<std::optional<Section>> section = FindDatabases(lines);
  if (!section.ok()) return section.status();
  std::string entry = Cat(database.name, ": {url: ", Quoted(database.url));
  if (!database.pool_mode.empty()) entry += Cat(", pool_mode: ", database.pool_mode);
  if (database.pool_size > 0) entry += Cat(", pool_size: ", database.pool_size);
  entry += "}";
  if (!section->has_value()) {
    lines.push_back("databases:");
    lines.push_back("  " + entry);
    return Join(lines, crlf);
  }
  if (FindEntry(lines, **section, database.name)) {
    return absl::AlreadyExistsError(Cat("database ", database.name, " is already in the file"));
  }
  lines.insert(lines.begin() + static_cast<std::ptrdiff_t>((*section)->end),
               std::string((*section)->indent, ' ') + entry);
  return Join(lines, crlf);
}

absl::StatusOr<std::string> RemoveDatabaseFromText(std::string_view text,
                                                   const std::string& name) {
  bool crlf = false;
  std::vector<std::string> lines = Lines(text, &crlf);
  absl::StatusOr<std::optional<Section>> section = FindDatabases(lines);
  if (!section.ok()) return section.status();
  std::optional<size_t> start;
  if (section->has_value()) start = FindEntry(lines, **section, name);
  if (!start) return absl::NotFoundError(Cat("database ", name, " is not in the file"));
  // The entry's line and those under it (more indented), up to the next entry.
  size_t end = *start + 1;
  for (size_t j = end; j < (*section)->end; ++j) {
    if (IsFiller(lines[j])) continue;
    if (Indent(lines[j]) <= (*section)->indent) break;
    end = j + 1;
  }
  lines.erase(lines.begin() + static_cast<std::ptrdiff_t>(*start),
              lines.begin() + static_cast<std::ptrdiff_t>(end));
  return Join(lines, crlf);
}

absl::Status WriteFileAtomically(const std::string& given, std::string_view text) {
  // The file a symbolic link names is the one replaced, not the link.
  char resolved[PATH_MAX];
  const std::string path = realpath(given.c_str(), resolved) != nullptr ? resolved : given;
  struct stat st {};
  const bool existed = stat(path.c_str(), &st) == 0;
  const mode_t mode = existed ? (st.st_mode & 07777) : 0644;
  std::string temp = path + ".XXXXXX";
  const int fd = mkostemp(temp.data(), O_CLOEXEC);
  if (fd < 0) {
    return absl::UnavailableError(Cat("cannot write beside ", path, ": ", strerror(errno)));
  }
  if (existed && fchown(fd, st.st_uid, st.st_gid) != 0) {
    // Not the file's owner: it stays ours, with its permissions.
  }
  size_t done = 0;
  while (done < text.size()) {
    const ssize_t n = write(fd, text.data() + done, text.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      const std::string why = strerror(errno);
      close(fd);
      unlink(temp.c_str());
      return absl::UnavailableError(Cat("cannot write ", temp, ": ", why));
    }
    done += static_cast<size_t>(n);
  }
  fchmod(fd, mode);
  const bool synced = fsync(fd) == 0;
  const bool closed = close(fd) == 0;
  if (!synced || !closed || rename(temp.c_str(), path.c_str()) != 0) {
    const std::string why = strerror(errno);
    unlink(temp.c_str());
    return absl::UnavailableError(Cat("cannot replace ", path, ": ", why));
  }
  // The rename itself made durable.
  const size_t slash = path.rfind('/');
  const std::string dir = slash == std::string::npos ? "." : path.substr(0, slash + 1);
  if (const int dir_fd = open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC); dir_fd >= 0) {
    fsync(dir_fd);
    close(dir_fd);
  }
  return absl::OkStatus();
}

}  // namespace pgflow::pooler
