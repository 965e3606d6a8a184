#include "tests/integration/support/pooler_support.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/wait.h>

#include <cstdio>

namespace pgflow::testing {

std::string PgBin() {
  static const std::string bin = [] {
    FILE* pipe = popen("ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1", "r");
    char buffer[256] = {};
    if (pipe != nullptr && fgets(buffer, sizeof buffer, pipe) != nullptr) {
      std::string s(buffer);
      while (!s.empty() && s.back() == '\n') s.pop_back();
      pclose(pipe);
      return s;
    }
    return std::string("/usr/bin");
  }();
  return bin;
}

int Shell(const std::string& command, std::string* output) {
  FILE* pipe = popen((command + " 2>&1").c_str(), "r");
  if (pipe == nullptr) return -1;
  char buffer[4096];
  output->clear();
  while (size_t n = fread(buffer, 1, sizeof buffer, pipe)) output->append(buffer, n);
  int status = pclose(pipe);
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128;
}

std::string Console(const PoolerProcess& pooler, const std::string& sql) {
  std::string output;
  Shell(absl::StrCat(PgBin(), "/psql -X -At -h 127.0.0.1 -p ", pooler.port(),
                     " -U postgres -d pgflow -c \"", sql, "\""),
        &output);
  return output;
}

std::string Database(const std::string& name, const std::string& mode, int pool_size,
                     const std::string& db, const std::string& user, const std::string& extra) {
  return absl::StrCat("  ", name, ": {url: 'postgres://", user,
                      "@127.0.0.1:", SharedCluster().port(), "/", db, "', pool_mode: ", mode,
                      ", pool_size: ", pool_size, extra.empty() ? "" : ", ", extra, "}\n");
}

int ConnectLoopback(int port) {
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    close(fd);
    return -1;
  }
  return fd;
}

std::string RawExchange(int port, const std::string& bytes, size_t enough) {
  const int fd = ConnectLoopback(port);
  if (fd < 0) return "<no connection>";
  timeval timeout{.tv_sec = 5, .tv_usec = 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout);
  (void)!write(fd, bytes.data(), bytes.size());
  std::string answer;
  char buffer[4096];
  while (answer.size() < enough) {
    ssize_t n = read(fd, buffer, sizeof buffer);
    if (n <= 0) break;
    answer.append(buffer, n);
  }
  close(fd);
  return answer;
}

std::string Int32(int32_t v) {
  std::string s(4, '\0');
  s[0] = static_cast<char>(v >> 24);
  s[1] = static_cast<char>(v >> 16);
  s[2] = static_cast<char>(v >> 8);
  s[3] = static_cast<char>(v);
  return s;
}

void CopyToServer(const std::string& from, const std::string& to) {
  std::string copy = absl::StrCat("cp ", from, " ", to, " && chmod 600 ", to,
                                  getuid() == 0 ? absl::StrCat(" && chown postgres: ", to) : "");
  ASSERT_EQ(std::system(copy.c_str()), 0) << copy;
}

void MakeCertificate(const std::string& dir, const std::string& file, const std::string& names) {
  std::string command =
      absl::StrCat("openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=", file,
                   " -addext subjectAltName=", names, " -keyout ", dir, "/", file, ".key -out ",
                   dir, "/", file, ".crt >/dev/null 2>&1");
  ASSERT_EQ(std::system(command.c_str()), 0) << command;
}

void MakeAuthority(const std::string& dir) {
  const std::string d = dir + "/";
  std::string command = absl::StrCat(
      "set -e; cd ", dir, "; ",
      "openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=pgflow-test-ca -keyout ca.key "
      "-out ca.crt; ",
      "printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\\n' > san.ext; ",
      "for name in server dana mallory; do ", "  cn=$name; [ $name = server ] && cn=localhost; ",
      "  openssl req -newkey rsa:2048 -nodes -subj /CN=$cn -keyout $name.key -out $name.csr; ",
      "  ext=; [ $name = server ] && ext='-extfile san.ext'; ",
      "  openssl x509 -req -in $name.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 2 "
      "-out $name.crt $ext; ",
      "done; ",
      "openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=dana -keyout stranger.key "
      "-out stranger.crt; ",
      "chmod 600 *.key");
  std::string output;
  ASSERT_EQ(Shell(command, &output), 0) << output;
}

std::string Normalized(const std::vector<std::string>& messages) {
  std::string out;
  for (std::string m : messages) {
    if (m[0] == 'A' && m.size() >= 5) m.replace(1, 4, "PID!");
    out += m;
    out.push_back('\n');
  }
  return out;
}

std::string Message(char type, const std::string& body) {
  std::string out;
  pooler::AppendMessage(&out, type, body);
  return out;
}

std::string Parse(const std::string& name, const std::string& sql) {
  std::string rest = sql;
  rest.push_back('\0');
  pooler::AppendInt16(&rest, 0);
  std::string out;
  pooler::AppendParse(&out, name, rest);
  return out;
}

std::string Bind(const std::string& portal, const std::string& statement,
                 const std::vector<std::string>& values) {
  std::string rest;
  pooler::AppendInt16(&rest, 0);
  pooler::AppendInt16(&rest, static_cast<int16_t>(values.size()));
  for (const std::string& v : values) {
    pooler::AppendInt32(&rest, static_cast<int32_t>(v.size()));
    rest += v;
  }
  pooler::AppendInt16(&rest, 0);
  std::string out;
  pooler::AppendBind(&out, portal, statement, rest);
  return out;
}

std::string Execute(const std::string& portal, int32_t max_rows) {
  std::string body = portal;
  body.push_back('\0');
  pooler::AppendInt32(&body, max_rows);
  return Message('E', body);
}

std::string Describe(char kind, const std::string& name) {
  std::string out;
  pooler::AppendTarget(&out, 'D', kind, name);
  return out;
}

std::string Sync() { return Message('S', ""); }

std::string Query(const std::string& sql) {
  std::string out;
  pooler::AppendQuery(&out, sql);
  return out;
}

std::string Replay(int port, const std::string& database, const std::vector<Step>& steps) {
  WireClient client(port, database);
  if (!client.ok()) return "<no session>";
  std::string out;
  for (const Step& step : steps) {
    client.Send(step.send);
    std::vector<std::string> answer = client.Until(step.until, step.count);
    if (answer.empty()) return out + "<connection ended>";
    out += Normalized(answer) + "--\n";
  }
  return out;
}

}  // namespace pgflow::testing
