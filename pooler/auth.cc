#include "pooler/auth.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#include <algorithm>
#include <charconv>
#include <climits>
#include <utility>

#include "common/digest.h"
#include "engine/config_node.h"
#include "engine/str_cat.h"
#include "schemas/ascii.h"
#include "schemas/base64.h"

namespace pgflow::pooler {
namespace {

constexpr size_t kScramKeyLength = 32;  // SHA-256
constexpr std::string_view kScramPrefix = "SCRAM-SHA-256$";

// ---- Digests ----

// The digests below are empty when OpenSSL fails (no provider offers SHA-256): an empty
// digest equals nothing (ConstantTimeEqual), so a login fails closed.
std::string Sha256(std::string_view data) { return Digest(Sha256Method(), data); }

std::string Md5Hex(std::string_view data) { return HexDigest(EVP_md5(), data); }

std::string Xor(std::string_view a, std::string_view b) {
  std::string out(a);
  for (size_t i = 0; i < out.size() && i < b.size(); ++i) out[i] ^= b[i];
  return out;
}

bool ConstantTimeEqual(std::string_view a, std::string_view b) {
  return !a.empty() && a.size() == b.size() && CRYPTO_memcmp(a.data(), b.data(), a.size()) == 0;
}

// ---- Encodings ----

std::string Base64(std::string_view bytes) {
  std::string out;
  AppendBase64(bytes, &out);
  return out;
}

std::optional<std::string> Unbase64(std::string_view text) {
  std::string out;
  if (!AppendBase64Decoded(text, &out)) return std::nullopt;
  return out;
}

// RFC 5802's `printable`, what a nonce is made of: '!' to '~' except ','.
bool IsPrintableNonce(std::string_view s) {
  if (s.empty()) return false;
  for (char c : s) {
    if (c < 0x21 || c > 0x7e || c == ',') return false;
  }
  return true;
}

std::string PrintableNonce(std::string_view bytes) {
  return IsPrintableNonce(bytes) ? std::string(bytes) : Base64(bytes);
}

// RFC 5802's saslname: ',' and '=' escaped.
std::string SaslName(std::string_view user) {
  std::string out;
  for (char c : user) {
    if (c == ',') {
      out += "=2C";
    } else if (c == '=') {
      out += "=3D";
    } else {
      out.push_back(c);
    }
  }
  return out;
}

// A positive decimal integer of at most `max`, digits only.
std::optional<int> ParsePositive(std::string_view text, int max) {
  if (text.empty() || !IsAsciiDigit(text[0])) return std::nullopt;
  int value = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc() || end != text.data() + text.size() || value < 1 || value > max) {
    return std::nullopt;
  }
  return value;
}

// ---- SCRAM messages ----

// A message's attributes, split at the commas.
std::vector<std::string_view> SplitAttributes(std::string_view message) {
  std::vector<std::string_view> parts;
  size_t start = 0;
  while (true) {
    const size_t comma = message.find(',', start);
    if (comma == std::string_view::npos) {
      parts.push_back(message.substr(start));
      return parts;
    }
    parts.push_back(message.substr(start, comma - start));
    start = comma + 1;
  }
}

// The value of `part` when it is attribute `name` ("r=abc" is r's "abc").
std::optional<std::string_view> AttributeValue(std::string_view part, char name) {
  if (part.size() < 2 || part[0] != name || part[1] != '=') return std::nullopt;
  return part.substr(2);
}

// An extension attribute: a letter, '=', a value.
bool IsAttribute(std::string_view part) {
  return part.size() >= 2 &&
         ((part[0] >= 'a' && part[0] <= 'z') || (part[0] >= 'A' && part[0] <= 'Z')) &&
         part[1] == '=';
}

absl::Status Malformed(std::string_view message_name, std::string_view problem) {
  return absl::InvalidArgumentError(Cat("malformed SCRAM ", message_name, ": ", problem));
}

absl::Status CheckLength(std::string_view message_name, std::string_view message) {
  if (message.size() > kMaxScramMessage) {
    return Malformed(message_name, Cat(message.size(), " bytes, more than the ", kMaxScramMessage,
                                       " a SCRAM message may have"));
  }
  return absl::OkStatus();
}

absl::Status OutOfTurn(std::string_view what) {
  return absl::FailedPreconditionError(
      Cat("SCRAM exchange: ", what, " out of turn or after the exchange ended"));
}

// The ClientKey and ServerKey of a password (RFC 5802, section 3).
struct ScramKeys {
  std::string client_key;
  std::string server_key;
};
ScramKeys KeysOfPassword(std::string_view password, std::string_view salt, int iterations) {
  unsigned char salted[kScramKeyLength];
  const EVP_MD* method = Sha256Method();
  if (method == nullptr ||
      PKCS5_PBKDF2_HMAC(password.data(), static_cast<int>(password.size()),
                        reinterpret_cast<const unsigned char*>(salt.data()),
                        static_cast<int>(salt.size()), iterations, method,
                        sizeof(salted), salted) != 1) {
    return {};  // (empty keys: they match nothing)
  }
  const std::string_view salted_password(reinterpret_cast<const char*>(salted), sizeof(salted));
  ScramKeys keys{HmacSha256(salted_password, {"Client Key"}),
                 HmacSha256(salted_password, {"Server Key"})};
  OPENSSL_cleanse(salted, sizeof(salted));
  return keys;
}

// ---- Users file ----


bool IsBlank(char c) { return c == ' ' || c == '\t'; }

// Reads a quoted string at (*line)[*pos], a doubled quote standing for one; leaves *pos after
// the closing quote. nullopt when the closing quote is missing.
std::optional<std::string> ReadQuoted(std::string_view line, size_t* pos) {
  std::string out;
  size_t i = *pos + 1;  // past the opening quote
  while (i < line.size()) {
    if (line[i] == '"') {
      if (i + 1 < line.size() && line[i + 1] == '"') {
        out.push_back('"');
        i += 2;
        continue;
      }
      *pos = i + 1;
      return out;
    }
    out.push_back(line[i]);
    ++i;
  }
  return std::nullopt;
}

bool IsMd5Hash(std::string_view text) {
  if (text.size() != 35 || text.substr(0, 3) != "md5") return false;
  for (char c : text.substr(3)) {
    if (!IsAsciiDigit(c) && !(c >= 'a' && c <= 'f')) return false;
  }
  return true;
}

}  // namespace

// ---- Secrets ----

std::optional<ScramSecret> ParseScramSecret(std::string_view text) {
  if (text.substr(0, kScramPrefix.size()) != kScramPrefix) return std::nullopt;
  text.remove_prefix(kScramPrefix.size());
  // <iterations>:<salt>$<StoredKey>:<ServerKey>
  const size_t dollar = text.find('$');
  if (dollar == std::string_view::npos) return std::nullopt;
  const std::string_view params = text.substr(0, dollar);
  const std::string_view keys = text.substr(dollar + 1);
  const size_t colon1 = params.find(':');
  const size_t colon2 = keys.find(':');
  if (colon1 == std::string_view::npos || colon2 == std::string_view::npos) return std::nullopt;

  std::optional<int> iterations = ParsePositive(params.substr(0, colon1), INT_MAX);
  std::optional<std::string> salt = Unbase64(params.substr(colon1 + 1));
  std::optional<std::string> stored_key = Unbase64(keys.substr(0, colon2));
  std::optional<std::string> server_key = Unbase64(keys.substr(colon2 + 1));
  if (!iterations || !salt || salt->empty() || !stored_key ||
      stored_key->size() != kScramKeyLength || !server_key ||
      server_key->size() != kScramKeyLength) {
    return std::nullopt;
  }
  return ScramSecret{*iterations, std::move(*salt), std::move(*stored_key), std::move(*server_key)};
}

ScramSecret MakeScramSecret(std::string_view password, std::string_view salt, int iterations) {
  ScramKeys keys = KeysOfPassword(password, salt, iterations);
  // (No keys, no secret: an empty StoredKey matches no proof.)
  return ScramSecret{iterations, std::string(salt),
                     keys.client_key.empty() ? std::string() : Sha256(keys.client_key),
                     std::move(keys.server_key)};
}

std::string FormatScramSecret(const ScramSecret& secret) {
  return Cat(kScramPrefix, secret.iterations, ":", Base64(secret.salt), "$",
             Base64(secret.stored_key), ":", Base64(secret.server_key));
}

// ---- Users file ----

std::optional<UserSecret> SecretFromText(std::string text) {
  UserSecret secret;
  if (text.starts_with(kScramPrefix)) {
    std::optional<ScramSecret> scram = ParseScramSecret(text);
    if (!scram) return std::nullopt;
    secret.kind = UserSecret::Kind::kScram;
    secret.scram = std::move(*scram);
  } else if (IsMd5Hash(text)) {
    secret.kind = UserSecret::Kind::kMd5;
  } else {
    secret.kind = UserSecret::Kind::kPlain;
  }
  secret.text = std::move(text);
  return secret;
}

absl::StatusOr<UserList> ParseUserList(std::string_view text, std::string_view file_name) {
  ConfigErrors errors;
  UserList users;
  absl::flat_hash_map<std::string, int> line_of;  // user -> where first named
  int line_number = 0;
  size_t start = 0;
  while (start < text.size()) {
    size_t end = text.find('\n', start);
    if (end == std::string_view::npos) end = text.size();
    std::string_view line = text.substr(start, end - start);
    start = end + 1;
    ++line_number;
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);

    // Each problem at its line and column (1-based).
    auto error = [&](size_t column, std::string_view problem) {
      (void)ConfigErrors::Note(absl::InvalidArgumentError(
          Cat(file_name, ":", line_number, ":", column + 1, ": ", problem)));
    };

    size_t pos = 0;
    while (pos < line.size() && IsBlank(line[pos])) ++pos;
    if (pos == line.size() || line[pos] == ';' || line[pos] == '#') continue;
    if (line[pos] != '"') {
      error(pos, "expected a quoted user name: each line is \"user\" \"secret\"");
      continue;
    }
    const size_t user_column = pos;
    std::optional<std::string> user = ReadQuoted(line, &pos);
    if (!user) {
      error(user_column, "the user name has no closing quote (write \"\" for a quote inside it)");
      continue;
    }
    if (user->empty()) {
      error(user_column, "empty user name");
      continue;
    }
    const size_t after_user = pos;
    while (pos < line.size() && IsBlank(line[pos])) ++pos;
    if (pos == line.size()) {
      error(pos, Cat("user \"", *user, "\" has no secret: each line is \"user\" \"secret\""));
      continue;
    }
    if (line[pos] != '"' || pos == after_user) {
      error(pos, Cat("expected a space and the quoted secret after the user name \"", *user, "\""));
      continue;
    }
    const size_t secret_column = pos;
    std::optional<std::string> secret = ReadQuoted(line, &pos);
    if (!secret) {
      error(secret_column, Cat("the secret of user \"", *user,
                               "\" has no closing quote (write \"\" for a quote inside it)"));
      continue;
    }
    while (pos < line.size() && IsBlank(line[pos])) ++pos;
    if (pos != line.size()) {
      error(pos, Cat("unexpected text after the secret of user \"", *user,
                     "\" (a quote inside the secret is written \"\")"));
      continue;
    }
    // An empty secret is pgbouncer's way of listing a user for `trust`; a password login
    // with it always fails (PostgreSQL refuses empty passwords too).

    std::optional<UserSecret> parsed = SecretFromText(std::move(*secret));
    if (!parsed) {
      error(secret_column,
            Cat("the secret of user \"", *user,
                "\" is not a valid SCRAM secret: expected SCRAM-SHA-256$<iterations>:<salt>$"
                "<StoredKey>:<ServerKey> as pg_authid.rolpassword holds it"));
      continue;
    }
    UserSecret entry = *std::move(parsed);

    auto [it, inserted] = line_of.emplace(*user, line_number);
    if (!inserted) {
      error(user_column, Cat("user \"", *user, "\" is already named at line ", it->second));
      continue;
    }
    users.emplace(std::move(*user), std::move(entry));
  }
  if (absl::Status s = errors.Finish(); !s.ok()) return s;
  return users;
}

void DeriveScramSecrets(UserList* users) {
  for (auto& [user, secret] : *users) {
    if (secret.kind != UserSecret::Kind::kPlain || secret.text.empty()) continue;
    std::string salt(16, '\0');
    RAND_bytes(reinterpret_cast<unsigned char*>(salt.data()), static_cast<int>(salt.size()));
    secret.scram = MakeScramSecret(secret.text, salt, kDefaultScramIterations);
  }
}

ScramSecret MockScramSecret(std::string_view user, std::string_view key) {
  return ScramSecret{kDefaultScramIterations, HmacSha256(key, {Cat("salt ", user)}).substr(0, 16),
                     HmacSha256(key, {Cat("stored key ", user)}),
                     HmacSha256(key, {Cat("server key ", user)})};
}

bool CheckPassword(const UserList& users, std::string_view user, std::string_view password) {
  auto it = users.find(std::string(user));
  if (it == users.end() || it->second.kind != UserSecret::Kind::kScram) {
    // The PBKDF2 a SCRAM secret costs, whatever the entry: a guess takes as long either way.
    const ScramSecret mock = MockScramSecret(user, "console");
    const bool mock_matches =
        ConstantTimeEqual(MakeScramSecret(password, mock.salt, mock.iterations).stored_key,
                          mock.stored_key);
    if (it == users.end()) return mock_matches && false;  // (no password matches a mock)
    if (it->second.kind == UserSecret::Kind::kMd5) {
      return ConstantTimeEqual(Md5PasswordHash(user, password), it->second.text);
    }
    return !it->second.text.empty() && ConstantTimeEqual(password, it->second.text);
  }
  const ScramSecret& secret = it->second.scram;
  return ConstantTimeEqual(MakeScramSecret(password, secret.salt, secret.iterations).stored_key,
                           secret.stored_key);
}

// ---- md5 ----

std::string Md5PasswordHash(std::string_view user, std::string_view password) {
  return Cat("md5", Md5Hex(Cat(password, user)));
}

std::string Md5Response(std::string_view hash, std::string_view salt) {
  if (hash.starts_with("md5")) hash.remove_prefix(3);
  return Cat("md5", Md5Hex(Cat(hash, salt)));
}

// ---- ScramServer ----

ScramServer::ScramServer(ScramSecret secret, std::string_view nonce)
    : secret_(std::move(secret)), server_nonce_(PrintableNonce(nonce)) {}

absl::StatusOr<std::string> ScramServer::ClientFirst(std::string_view client_first) {
  constexpr std::string_view kName = "client-first-message";
  if (step_ != Step::kClientFirst) return OutOfTurn("client-first-message");
  step_ = Step::kDone;  // unless it parses
  if (absl::Status s = CheckLength(kName, client_first); !s.ok()) return s;

  // gs2-cbind-flag "," [authzid] "," [reserved-mext ","] username "," nonce ["," extensions]
  const std::vector<std::string_view> parts = SplitAttributes(client_first);
  if (parts.size() < 4) {
    return Malformed(kName, "expected \"n,,n=<user>,r=<nonce>\"");
  }
  if (parts[0].starts_with("p=")) {
    return Malformed(kName,
                     "the client asks for channel binding (SCRAM-SHA-256-PLUS), which the "
                     "pooler does not offer");
  }
  if (parts[0] != "n" && parts[0] != "y") {
    return Malformed(kName, "the channel binding flag is not 'n', 'y' or 'p='");
  }
  if (parts[1].starts_with("a=")) {
    return Malformed(kName, "an authorization identity (a=) is not supported");
  }
  if (!parts[1].empty()) return Malformed(kName, "expected an empty authorization identity");
  if (parts[2].starts_with("m=")) {
    return Malformed(kName, "a mandatory extension (m=) is not supported");
  }
  if (!AttributeValue(parts[2], 'n')) return Malformed(kName, "expected the user name (n=)");
  std::optional<std::string_view> client_nonce = AttributeValue(parts[3], 'r');
  if (!client_nonce) return Malformed(kName, "expected the client nonce (r=) after the user");
  if (!IsPrintableNonce(*client_nonce)) {
    return Malformed(kName, "the client nonce is empty or not printable ASCII");
  }
  for (size_t i = 4; i < parts.size(); ++i) {
    if (!IsAttribute(parts[i])) return Malformed(kName, "an extension is not <letter>=<value>");
  }

  gs2_header_ = Cat(parts[0], ",,");
  client_first_bare_ = std::string(client_first.substr(gs2_header_.size()));
  combined_nonce_ = Cat(*client_nonce, server_nonce_);
  server_first_ =
      Cat("r=", combined_nonce_, ",s=", Base64(secret_.salt), ",i=", secret_.iterations);
  step_ = Step::kClientFinal;
  return server_first_;
}

absl::StatusOr<std::string> ScramServer::ClientFinal(std::string_view client_final) {
  constexpr std::string_view kName = "client-final-message";
  if (step_ != Step::kClientFinal) return OutOfTurn("client-final-message");
  step_ = Step::kDone;
  if (absl::Status s = CheckLength(kName, client_final); !s.ok()) return s;

  // channel-binding "," nonce ["," extensions] "," proof
  const std::vector<std::string_view> parts = SplitAttributes(client_final);
  if (parts.size() < 3) return Malformed(kName, "expected \"c=<binding>,r=<nonce>,p=<proof>\"");
  std::optional<std::string_view> binding = AttributeValue(parts[0], 'c');
  if (!binding) return Malformed(kName, "expected the channel binding (c=) first");
  std::optional<std::string> binding_bytes = Unbase64(*binding);
  if (!binding_bytes) return Malformed(kName, "the channel binding (c=) is not base64");
  if (*binding_bytes != gs2_header_) {
    return Malformed(kName, "the channel binding (c=) does not repeat the client-first header");
  }
  std::optional<std::string_view> nonce = AttributeValue(parts[1], 'r');
  if (!nonce) return Malformed(kName, "expected the nonce (r=) after the channel binding");
  if (*nonce != combined_nonce_) {
    return Malformed(kName, "the nonce is not this exchange's");
  }
  for (size_t i = 2; i + 1 < parts.size(); ++i) {
    if (!IsAttribute(parts[i]) || parts[i][0] == 'p') {
      return Malformed(kName, "an extension is not <letter>=<value>");
    }
  }
  std::optional<std::string_view> proof_text = AttributeValue(parts.back(), 'p');
  if (!proof_text) return Malformed(kName, "expected the proof (p=) last");
  std::optional<std::string> proof = Unbase64(*proof_text);
  if (!proof || proof->size() != kScramKeyLength) {
    return Malformed(kName, "the proof (p=) is not the base64 of 32 bytes");
  }

  const std::string_view without_proof =
      client_final.substr(0, client_final.size() - parts.back().size() - 1);
  const std::string auth_message = Cat(client_first_bare_, ",", server_first_, ",", without_proof);
  const std::string client_signature = HmacSha256(secret_.stored_key, {auth_message});
  std::string client_key = Xor(*proof, client_signature);
  if (!ConstantTimeEqual(Sha256(client_key), secret_.stored_key)) {
    return absl::PermissionDeniedError("password authentication failed (wrong SCRAM proof)");
  }
  client_key_ = std::move(client_key);
  return Cat("v=", Base64(HmacSha256(secret_.server_key, {auth_message})));
}

// ---- ScramClient ----

ScramClient ScramClient::FromPassword(std::string_view password, std::string_view nonce,
                                      std::string_view user) {
  ScramClient c;
  c.password_ = std::string(password);
  c.client_nonce_ = PrintableNonce(nonce);
  c.user_ = SaslName(user);
  return c;
}

ScramClient ScramClient::FromKeys(std::string client_key, std::string server_key,
                                  std::string_view nonce, std::string_view user) {
  ScramClient c;
  c.client_key_ = std::move(client_key);
  c.server_key_ = std::move(server_key);
  c.client_nonce_ = PrintableNonce(nonce);
  c.user_ = SaslName(user);
  return c;
}

std::string ScramClient::ClientFirst() {
  if (client_first_bare_.empty()) client_first_bare_ = Cat("n=", user_, ",r=", client_nonce_);
  return Cat("n,,", client_first_bare_);
}

absl::StatusOr<std::string> ScramClient::ServerFirst(std::string_view server_first) {
  constexpr std::string_view kName = "server-first-message";
  if (step_ != Step::kServerFirst || client_first_bare_.empty()) {
    return OutOfTurn("server-first-message");
  }
  step_ = Step::kDone;  // unless it parses
  if (absl::Status s = CheckLength(kName, server_first); !s.ok()) return s;

  // [reserved-mext ","] nonce "," salt "," iteration-count ["," extensions]
  const std::vector<std::string_view> parts = SplitAttributes(server_first);
  if (std::optional<std::string_view> error = AttributeValue(parts[0], 'e')) {
    return absl::InvalidArgumentError(Cat("the server refused SCRAM: ", *error));
  }
  if (parts[0].starts_with("m=")) {
    return Malformed(kName, "a mandatory extension (m=) is not supported");
  }
  if (parts.size() < 3) return Malformed(kName, "expected \"r=<nonce>,s=<salt>,i=<iterations>\"");
  std::optional<std::string_view> nonce = AttributeValue(parts[0], 'r');
  if (!nonce) return Malformed(kName, "expected the nonce (r=) first");
  if (!nonce->starts_with(client_nonce_) || nonce->size() == client_nonce_.size() ||
      !IsPrintableNonce(*nonce)) {
    return Malformed(kName, "the server's nonce does not extend the client's");
  }
  std::optional<std::string_view> salt_text = AttributeValue(parts[1], 's');
  if (!salt_text) return Malformed(kName, "expected the salt (s=) after the nonce");
  std::optional<std::string> salt = Unbase64(*salt_text);
  if (!salt || salt->empty()) return Malformed(kName, "the salt (s=) is not non-empty base64");
  std::optional<std::string_view> iterations_text = AttributeValue(parts[2], 'i');
  if (!iterations_text) return Malformed(kName, "expected the iteration count (i=) after the salt");
  std::optional<int> iterations = ParsePositive(*iterations_text, kMaxScramIterations);
  if (!iterations) {
    return Malformed(
        kName, Cat("the iteration count (i=) is not a number from 1 to ", kMaxScramIterations));
  }
  for (size_t i = 3; i < parts.size(); ++i) {
    if (!IsAttribute(parts[i])) return Malformed(kName, "an extension is not <letter>=<value>");
  }

  if (password_) {
    ScramKeys keys = KeysOfPassword(*password_, *salt, *iterations);
    client_key_ = std::move(keys.client_key);
    server_key_ = std::move(keys.server_key);
  }
  const std::string without_proof = Cat("c=biws,r=", *nonce);
  const std::string auth_message = Cat(client_first_bare_, ",", server_first, ",", without_proof);
  const std::string client_signature = HmacSha256(Sha256(client_key_), {auth_message});
  const std::string proof = Xor(client_key_, client_signature);
  expected_server_signature_ = HmacSha256(server_key_, {auth_message});
  step_ = Step::kServerFinal;
  return Cat(without_proof, ",p=", Base64(proof));
}

absl::Status ScramClient::ServerFinal(std::string_view server_final) {
  constexpr std::string_view kName = "server-final-message";
  if (step_ != Step::kServerFinal) return OutOfTurn("server-final-message");
  step_ = Step::kDone;
  if (absl::Status s = CheckLength(kName, server_final); !s.ok()) return s;

  // (server-error / verifier) ["," extensions]
  const std::vector<std::string_view> parts = SplitAttributes(server_final);
  if (std::optional<std::string_view> error = AttributeValue(parts[0], 'e')) {
    return absl::InvalidArgumentError(Cat("the server refused SCRAM: ", *error));
  }
  std::optional<std::string_view> verifier = AttributeValue(parts[0], 'v');
  if (!verifier) return Malformed(kName, "expected the server signature (v=)");
  for (size_t i = 1; i < parts.size(); ++i) {
    if (!IsAttribute(parts[i])) return Malformed(kName, "an extension is not <letter>=<value>");
  }
  std::optional<std::string> signature = Unbase64(*verifier);
  if (!signature) return Malformed(kName, "the server signature (v=) is not base64");
  if (!ConstantTimeEqual(*signature, expected_server_signature_)) {
    return absl::PermissionDeniedError(
        "the server's SCRAM signature is wrong: it does not know the password");
  }
  return absl::OkStatus();
}

}  // namespace pgflow::pooler
