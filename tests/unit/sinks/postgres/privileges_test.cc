#include "sinks/postgres/privileges.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "sinks/postgres/roles.h"

namespace pgflow {
namespace {

using ::testing::ElementsAre;
using ::testing::IsEmpty;

RoleMap Map() {
  RoleMap map;
  map.source_bootstrap = "postgres";
  map.target_bootstrap = "admin";
  map.run_roles = {"flow"};
  map.target_user = "flow";
  return map;
}

// What a table the pipeline's role created looks like in the target, and the source's.
Privileges CreatedByFlow() {
  return {"flow", {{{"flow", "SELECT"}, false}, {{"flow", "INSERT"}, false}}};
}
Privileges OwnedByApp() {
  return {"app",
          {{{"app", "SELECT"}, false},
           {{"app", "INSERT"}, false},
           {{"reader", "SELECT"}, false},
           {{"", "SELECT"}, false},
           {{"flow", "SELECT"}, false}}};  // `pgflow init` granted the source's run role this
}

TEST(PrivilegesTest, TheOwnerChangesFirstAndOnlyTheGrantsThatDifferFollow) {
  const RoleMap map = Map();
  EXPECT_THAT(PrivilegeStatements(ObjectKind::kTable, "public.t", ForTarget(OwnedByApp(), map),
                                  CreatedByFlow(), map),
              ElementsAre("ALTER TABLE public.t OWNER TO \"app\"",
                          "GRANT SELECT ON TABLE public.t TO PUBLIC",
                          "GRANT SELECT ON TABLE public.t TO \"reader\""));
  // Once done, nothing is left to do and nothing differs; the run role's grant is not compared.
  Privileges done = OwnedByApp();
  done.grants.erase({"flow", "SELECT"});
  EXPECT_THAT(
      PrivilegeStatements(ObjectKind::kTable, "public.t", ForTarget(OwnedByApp(), map), done, map),
      IsEmpty());
  EXPECT_THAT(PrivilegeDifferences(ForTarget(OwnedByApp(), map), done, map), IsEmpty());
}

TEST(PrivilegesTest, RevokesWhatTheSourceDoesNotGrantAndTheGrantOption) {
  const RoleMap map = Map();
  Privileges want{"app", {{{"app", "USAGE"}, false}, {{"reader", "USAGE"}, true}}};
  Privileges have{"app",
                  {{{"app", "USAGE"}, false},
                   {{"", "USAGE"}, false},
                   {{"reader", "USAGE"}, false},
                   {{"writer", "UPDATE"}, true}}};
  EXPECT_THAT(GrantStatements("", "SEQUENCE s", want, have, map),
              ElementsAre("REVOKE USAGE ON SEQUENCE s FROM PUBLIC",
                          "REVOKE UPDATE ON SEQUENCE s FROM \"writer\"",
                          "GRANT USAGE ON SEQUENCE s TO \"reader\" WITH GRANT OPTION"));
  EXPECT_THAT(
      PrivilegeDifferences(want, have, map),
      ElementsAre("USAGE for PUBLIC on the target only", "UPDATE for writer on the target only",
                  "USAGE for reader WITH GRANT OPTION on the source only"));
}

TEST(PrivilegesTest, TheBootstrapSuperuserIsTheTargetsAndOwnersAreComparedFirst) {
  const RoleMap map = Map();
  Privileges source{"postgres", {{{"postgres", "CREATE"}, false}}};
  Privileges target{"flow", {{{"flow", "CREATE"}, false}}};
  Privileges want = ForTarget(source, map);
  EXPECT_EQ(want.owner, "admin");
  EXPECT_THAT(PrivilegeDifferences(want, target, map),
              ElementsAre("owner admin on the source, flow on the target"));
  EXPECT_THAT(
      Reowned(target, "admin").grants,
      ElementsAre(testing::Pair(std::pair<std::string, std::string>("admin", "CREATE"), false)));
}

// From 16 to 17: acldefault gives the owner MAINTAIN on 17 alone, so a table the source left at
// its default ACL (NULL) reads as lacking it. Nothing is revoked: the target's ACL is left alone,
// and a privilege the source's server does not have is neither revoked nor compared.
TEST(PrivilegesTest, MaintainOnASeventeenTargetIsNeverRevokedFromAnOlderSource) {
  RoleMap map = Map();
  map.source_version = 160004;
  map.target_version = 170002;
  Privileges source{"app", {{{"app", "SELECT"}, false}, {{"app", "INSERT"}, false}}, true};
  Privileges target{"app",
                    {{{"app", "SELECT"}, false},
                     {{"app", "INSERT"}, false},
                     {{"app", "MAINTAIN"}, false},
                     {{"extra", "SELECT"}, false}},
                    false};
  const Privileges want = ForTarget(source, map);
  EXPECT_TRUE(want.default_acl);
  EXPECT_THAT(PrivilegeStatements(ObjectKind::kTable, "t", want, target, map), IsEmpty());
  // An explicit ACL in the source: what it lacks is revoked, but MAINTAIN, unknown to it.
  source.default_acl = false;
  EXPECT_THAT(PrivilegeStatements(ObjectKind::kTable, "t", ForTarget(source, map), target, map),
              ElementsAre("REVOKE SELECT ON TABLE t FROM \"extra\""));
  EXPECT_THAT(PrivilegeDifferences(ForTarget(source, map), target, map),
              ElementsAre("SELECT for extra on the target only"));
  // Default privileges too: the target's built-in default has MAINTAIN, the source's entry not.
  EXPECT_THAT(
      GrantStatements("ALTER DEFAULT PRIVILEGES FOR ROLE \"app\" ", "TABLES",
                      {"app", {{{"app", "SELECT"}, false}}},
                      {"app", {{{"app", "SELECT"}, false}, {{"app", "MAINTAIN"}, false}}}, map),
      IsEmpty());
  // And from 17 to 16, MAINTAIN is not granted where the server lacks it.
  std::swap(map.source_version, map.target_version);
  EXPECT_THAT(
      GrantStatements("", "TABLE t", {"app", {{{"app", "MAINTAIN"}, false}}}, {"app", {}}, map),
      IsEmpty());
}

// A database or schema pgflow writes into but does not own gains the source's grants alone:
// nothing revoked, no owner given, not the source owner's own privileges.
TEST(PrivilegesTest, ASharedObjectOnlyGainsGrants) {
  const RoleMap map = Map();
  Privileges want{"app",
                  {{{"app", "CREATE"}, false},
                   {{"app", "USAGE"}, false},
                   {{"reader", "USAGE"}, true},
                   {{"", "USAGE"}, false}}};
  Privileges have{"dba",
                  {{{"dba", "CREATE"}, false},
                   {{"dba", "USAGE"}, false},
                   {{"other", "USAGE"}, false},
                   {{"reader", "USAGE"}, false}}};
  EXPECT_THAT(AddedGrantStatements(ObjectKind::kSchema, "\"s\"", want, have, map),
              ElementsAre("GRANT USAGE ON SCHEMA \"s\" TO PUBLIC",
                          "GRANT USAGE ON SCHEMA \"s\" TO \"reader\" WITH GRANT OPTION"));
  want.default_acl = true;
  EXPECT_THAT(AddedGrantStatements(ObjectKind::kSchema, "\"s\"", want, have, map), IsEmpty());
  // What the copy leaves alone: neither a run role nor the source's owner owns it.
  EXPECT_FALSE(CopiesPrivilegesOf(want, have, map));
  EXPECT_TRUE(CopiesPrivilegesOf(want, CreatedByFlow(), map));
}

TEST(RolesTest, MembershipOptionsAreSaidWhereTheTargetTakesThem) {
  MembershipOptions options{true, false, true};
  EXPECT_EQ(GrantRoleStatement("app", "ann", options, 160002),
            "GRANT \"app\" TO \"ann\" WITH ADMIN OPTION, INHERIT FALSE, SET TRUE");
  EXPECT_EQ(GrantRoleStatement("app", "ann", options, 150008),
            "GRANT \"app\" TO \"ann\" WITH ADMIN OPTION");
  // From a source before 16, no options: the target's defaults (INHERIT as the member's).
  EXPECT_EQ(GrantRoleStatement("app", "ann", {}, 170000), "GRANT \"app\" TO \"ann\"");
}

TEST(RolesTest, CreateRoleKeepsWhatOnlyASuperuserMayGrantApart) {
  SourceRole role;
  role.name = "App";
  role.login = true;
  role.replication = true;
  role.connection_limit = 5;
  role.valid_until = "2030-01-01T00:00:00+00:00";
  std::vector<std::string> withheld;
  EXPECT_EQ(CreateRoleStatement(role, false, &withheld),
            "CREATE ROLE \"App\" WITH LOGIN INHERIT NOCREATEDB NOCREATEROLE CONNECTION LIMIT 5 "
            "VALID UNTIL '2030-01-01T00:00:00+00:00'");
  EXPECT_THAT(withheld, ElementsAre("REPLICATION"));
  withheld.clear();
  EXPECT_EQ(CreateRoleStatement(role, true, &withheld),
            "CREATE ROLE \"App\" WITH LOGIN INHERIT NOCREATEDB NOCREATEROLE REPLICATION "
            "CONNECTION LIMIT 5 VALID UNTIL '2030-01-01T00:00:00+00:00'");
  EXPECT_THAT(withheld, IsEmpty());
}

TEST(RolesTest, ListSettingsAreOneLiteralPerElement) {
  EXPECT_EQ(SetStatement("ALTER ROLE \"app\" ", "search_path=\"$user\", app, \"My Schema\""),
            "ALTER ROLE \"app\" SET \"search_path\" TO '$user', 'app', 'My Schema'");
  EXPECT_EQ(SetStatement("ALTER DATABASE \"shop\" ", "work_mem=8MB"),
            "ALTER DATABASE \"shop\" SET \"work_mem\" TO '8MB'");
  EXPECT_EQ(SetStatement("", "statement_timeout=it's"), "SET \"statement_timeout\" TO 'it''s'");
  // A backslash cannot end the literal early, whatever standard_conforming_strings says.
  EXPECT_EQ(SetStatement("", "application_name=a\\' OR true --"),
            "SET \"application_name\" TO E'a\\\\'' OR true --'");
}

}  // namespace
}  // namespace pgflow
