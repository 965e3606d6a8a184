#include "pooler/gateway_client.h"

#include <algorithm>
#include <cstring>
#include <memory>

#include "engine/str_cat.h"
#include "pooler/pool.h"
#include "pooler/protocol.h"
#include "pooler/server_login.h"

namespace pgflow::pooler {

namespace asio = asio_support::asio;
using asio_support::kUseTask;

namespace {

// A session's message at most (a DataRow of a 1 GB value, PostgreSQL's own limit, and its
// header).
constexpr size_t kMaxBackendMessage = (size_t{1} << 30) + 1024;
constexpr size_t kReadSize = 65536;

}  // namespace

PgError PgError::Parse(std::string_view body) {
  PgError error;
  size_t pos = 0;
  while (pos < body.size() && body[pos] != '\0') {
    const char code = body[pos++];
    const size_t end = body.find('\0', pos);
    if (end == std::string_view::npos) break;
    error.fields.emplace_back(code, std::string(body.substr(pos, end - pos)));
    pos = end + 1;
  }
  return error;
}

PgError PgError::Make(std::string_view code, std::string_view message) {
  PgError error;
  error.fields = {{'S', "ERROR"}, {'V', "ERROR"}, {'C', std::string(code)},
                  {'M', std::string(message)}};
  return error;
}

std::string_view PgError::Get(char code) const {
  for (const auto& [c, value] : fields) {
    if (c == code) return value;
  }
  return {};
}

std::string GatewayLogin::Get(std::string_view name) const {
  for (const auto& [key, value] : parameters) {
    if (key == name) return value;
  }
  return {};
}

PGFLOW_ASIO_COROUTINE_BEGIN
Task<bool> GatewayClient::Write(std::string_view bytes) {
  boost::system::error_code ec;
  co_await asio::async_write(socket_, asio::buffer(bytes.data(), bytes.size()),
                             asio::redirect_error(kUseTask, ec));
  co_return !ec;
}

Task<absl::StatusOr<BackendMessage>> GatewayClient::Next() {
  while (true) {
    const std::string_view pending(in_.get() + pos_, end_ - pos_);
    absl::StatusOr<std::optional<MessageHeader>> header =
        ReadMessageHeader(pending, kMaxBackendMessage);
    if (!header.ok()) co_return header.status();
    if (header->has_value() && pending.size() >= (*header)->size) {
      BackendMessage message{(*header)->type, pending.substr(5, (*header)->body_size())};
      pos_ += (*header)->size;
      co_return message;
    }
    // Room for more: what was returned goes first (the views it gave are no longer used),
    // and the buffer grows to hold the whole message when it is larger.
    const size_t need = std::max(kReadSize, header->has_value() ? (*header)->size : size_t{0});
    if (pos_ > 0) {
      std::memmove(in_.get(), in_.get() + pos_, end_ - pos_);
      end_ -= pos_;
      pos_ = 0;
    }
    if (capacity_ < need) {
      auto grown = std::make_unique_for_overwrite<char[]>(need);
      if (end_ > 0) std::memcpy(grown.get(), in_.get(), end_);
      in_ = std::move(grown);
      capacity_ = need;
    }
    boost::system::error_code ec;
    const size_t n = co_await socket_.async_read_some(
        asio::buffer(in_.get() + end_, capacity_ - end_), asio::redirect_error(kUseTask, ec));
    end_ += n;
    if (ec) {
      co_return absl::UnavailableError(ec == asio::error::eof ? "the session closed"
                                                              : ec.message());
    }
  }
}

Task<std::optional<PgError>> GatewayClient::Login(const GatewayLogin& login,
                                                  std::string* passthrough) {
  std::string out;
  AppendStartup(&out, login.parameters);
  if (!co_await Write(out)) co_return PgError::Make("08006", "the pooler's session closed");
  LoginCredentials credentials;
  credentials.user = login.Get("user");
  credentials.password = login.password;
  std::optional<ScramClient> scram;
  while (true) {
    absl::StatusOr<BackendMessage> message = co_await Next();
    if (!message.ok()) {
      co_return PgError::Make("08006", Cat("the pooler's session ended during the login: ",
                                           message.status().message()));
    }
    BodyReader body(message->body);
    const bool request = message->type == 'R' && body.Int32().value_or(-1) != kAuthenticationOk;
    if (!request && passthrough != nullptr) {
      AppendMessage(passthrough, message->type, message->body);
    }
    switch (message->type) {
      case 'R': {
        if (!request) break;
        BodyReader again(message->body);
        out.clear();
        if (absl::Status s = AnswerAuthentication(&again, credentials, &scram, &out); !s.ok()) {
          auto [sqlstate, text] = SqlstateOf(s);
          co_return PgError::Make(sqlstate.empty() ? "28000" : sqlstate, text);
        }
        // (The co_await in a statement of its own: see gateway_websocket.cc's Send.)
        if (!out.empty()) {
          const bool written = co_await Write(out);
          if (!written) {
            co_return PgError::Make("08006", "the pooler's session closed during the login");
          }
        }
        break;
      }
      case 'E':
        co_return PgError::Parse(message->body);
      case 'K':
        backend_pid_ = body.Int32().value_or(0);
        backend_key_ = body.Int32().value_or(0);
        break;
      case 'Z':
        co_return std::nullopt;
      default:
        break;  // ParameterStatus, NoticeResponse
    }
  }
}
PGFLOW_ASIO_COROUTINE_END

std::string GatewayClient::TakeBuffered() {
  std::string rest(in_.get() + pos_, end_ - pos_);
  pos_ = end_ = 0;
  return rest;
}

}  // namespace pgflow::pooler
