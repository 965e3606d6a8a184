// The console's BAN and UNBAN (pooler/admin_console.h): users and client addresses whose
// logins are refused, kept in memory, checked by every login (Session's, before it takes a
// client slot) and cheap while there is none.

#include <optional>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "engine/log.h"
#include "engine/str_cat.h"
#include "pooler/pooler_internal.h"
#include "pooler/session.h"

namespace pgflow::pooler {
namespace {

// An address as bans name it: an IPv4 client of a dual-stack listener (::ffff:10.0.0.7) as
// its IPv4 address.
std::string Normalized(const asio::ip::address& address) {
  if (address.is_v6() && address.to_v6().is_v4_mapped()) {
    return asio::ip::make_address_v4(asio::ip::v4_mapped, address.to_v6()).to_string();
  }
  return address.to_string();
}

// What a ban of `kind` on `who` is kept under: an address normalized (nullopt: `who` is not
// one; "unix", the Unix socket's clients, as it is); anything else as given.
std::optional<std::string> BanKey(const std::string& kind, const std::string& who) {
  if (kind != "address" || who == "unix") return who;
  boost::system::error_code ec;
  const asio::ip::address address = asio::ip::make_address(who, ec);
  if (ec) return std::nullopt;
  return Normalized(address);
}

}  // namespace

absl::Status Pooler::Impl::Ban(const std::string& kind, const std::string& who) {
  if (who.empty()) return absl::InvalidArgumentError(Cat("BAN ", kind, ": who?"));
  const std::optional<std::string> normalized = BanKey(kind, who);
  if (!normalized) {
    return absl::InvalidArgumentError(
        Cat("not an IP address: \"", who, "\" (BAN ADDRESS takes one, or unix)"));
  }
  const std::string& key = *normalized;
  if (kind == "database" && !HasDatabase(who)) {
    return absl::NotFoundError(Cat("no such database: ", who));
  }
  {
    absl::MutexLock lock(&bans_mu_);
    bans_.emplace(kind, key);
    any_bans_.store(true);
  }
  LogInfo("pooler: %s %s banned: their logins are refused and their clients disconnected",
          kind, key);
  PostToSessions(
      [&](const ClientInfo& info) {
        return kind == "user"       ? info.user == key
               : kind == "database" ? info.database == key
                                    : info.address == key;
      },
      &Session::Kill);
  return absl::OkStatus();
}

absl::Status Pooler::Impl::Unban(const std::string& kind, const std::string& who) {
  const std::string key = BanKey(kind, who).value_or(who);
  absl::MutexLock lock(&bans_mu_);
  if (bans_.erase({kind, key}) == 0) {
    return absl::NotFoundError(Cat(kind, " ", who, " is not banned"));
  }
  any_bans_.store(!bans_.empty());
  LogInfo("pooler: %s %s unbanned", kind, key);
  return absl::OkStatus();
}

std::vector<std::pair<std::string, std::string>> Pooler::Impl::Bans() {
  absl::MutexLock lock(&bans_mu_);
  return {bans_.begin(), bans_.end()};
}

std::string Pooler::Impl::BanOf(const std::string& user, const std::string& address,
                                const std::string& database) {
  if (!any_bans_.load(std::memory_order_relaxed)) return "";
  absl::MutexLock lock(&bans_mu_);
  if (bans_.contains({"user", user})) {
    return Cat("user \"", user, "\" is banned from the pooler (BAN USER)");
  }
  if (bans_.contains({"database", database})) {
    return Cat("database \"", database, "\" is banned from the pooler (BAN DATABASE)");
  }
  if (bans_.contains({"address", BanKey("address", address).value_or(address)})) {
    return Cat("clients from ", address, " are banned from the pooler (BAN ADDRESS)");
  }
  return "";
}

}  // namespace pgflow::pooler
