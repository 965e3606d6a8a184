// The tenants (pooler/tenant.h): what the pooler keeps per database entry across its users'
// pools and its sessions.

#include <map>
#include <memory>
#include <string>

#include "pooler/pooler_internal.h"

namespace pgflow::pooler {

std::shared_ptr<Tenant> Pooler::Impl::TenantFor(const std::string& database) {
  absl::MutexLock lock(&tenants_mu_);
  std::shared_ptr<Tenant>& tenant = tenants_[database];
  if (tenant == nullptr) {
    // (Read under the lock: a RELOAD installs its file, then sets the tenants' limits under it.)
    std::shared_ptr<const PoolerConfig> config = this->config();
    tenant = std::make_shared<Tenant>();
    tenant->Follow(FindDatabase(*config, database));
  }
  return tenant;
}

std::shared_ptr<Tenant> Pooler::Impl::FindTenant(const std::string& database) {
  absl::MutexLock lock(&tenants_mu_);
  auto it = tenants_.find(database);
  return it == tenants_.end() ? nullptr : it->second;
}

std::map<std::string, std::shared_ptr<Tenant>> Pooler::Impl::Tenants() {
  absl::MutexLock lock(&tenants_mu_);
  return tenants_;
}

}  // namespace pgflow::pooler
