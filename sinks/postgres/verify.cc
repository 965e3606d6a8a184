#include "sinks/postgres/verify.h"

#include <optional>
#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/synchronization/mutex.h"
#include "common/postgres/catalog_tables.h"
#include "common/postgres/pg_connection.h"
#include "sinks/postgres/privileges.h"
#include "sinks/postgres/sequences.h"

namespace pgflow {
namespace {

struct KeyColumn {
  std::string name;  // quoted
  std::string type;  // format_type, for literals
};

struct Table {
  std::string schema;
  std::string name;
  std::vector<std::string> columns;  // quoted, in order
  std::vector<KeyColumn> key;
  // A partitioned table's rows are its partitions' (copied under its name); a plain table's
  // are its own, without those of its inheritance children (tables of their own on the target).
  bool partitioned = false;
};

// The tables `refs` name, in order; those without a key go to `skipped` when not null, and a
// table named that does not exist to `missing`.
absl::StatusOr<std::vector<Table>> ResolveTables(PGconn* source, const std::vector<TableRef>& refs,
                                                 std::vector<std::string>* skipped,
                                                 std::vector<std::string>* missing) {
  std::vector<Table> tables;
  for (const TableRef& ref : refs) {
    absl::StatusOr<std::vector<CatalogTable>> named = TablesNamed(source, ref);
    if (!named.ok()) return named.status();
    if (named->empty() && ref.table != "*") {
      missing->push_back(absl::StrCat(ref.ToString(), " does not exist in the source"));
    }
    for (const CatalogTable& found : *named) {
      Table t;
      t.schema = found.schema;
      t.name = found.name;
      if (skipped != nullptr && found.keyless) {
        skipped->push_back(TableRef{t.schema, t.name}.Quoted());
        continue;
      }
      const std::string& oid = found.oid;
      t.partitioned = found.partitioned;
      auto cols = Exec(source,
                       "SELECT a.attname, format_type(a.atttypid, a.atttypmod), "
                       "array_position((SELECT (x.indkey::int2[])[0:x.indnkeyatts - 1] FROM "
                       "pg_index x WHERE x.indrelid = a.attrelid AND x.indisprimary), a.attnum) "
                       "FROM pg_attribute a WHERE a.attrelid = $1::oid AND a.attnum > 0 AND NOT "
                       "a.attisdropped AND a.attgenerated = '' ORDER BY a.attnum",
                       {oid});
      if (!cols.ok()) return cols.status();
      std::vector<std::pair<int, KeyColumn>> key;
      for (int r = 0; r < PQntuples(cols->get()); ++r) {
        std::string name = QuoteIdent(PQgetvalue(cols->get(), r, 0));
        t.columns.push_back(name);
        if (!PQgetisnull(cols->get(), r, 2)) {
          key.push_back({std::stoi(PQgetvalue(cols->get(), r, 2)),
                         KeyColumn{name, PQgetvalue(cols->get(), r, 1)}});
        }
      }
      std::sort(key.begin(), key.end(),
                [](const auto& a, const auto& b) { return a.first < b.first; });
      for (auto& [position, column] : key) t.key.push_back(std::move(column));
      tables.push_back(std::move(t));
    }
  }
  return tables;
}

// (lit::type, ...) for one boundary, values as the source printed them.
std::string Literal(const Table& t, const std::vector<std::string>& values) {
  std::vector<std::string> parts;
  for (size_t i = 0; i < values.size(); ++i) {
    parts.push_back(absl::StrCat(QuoteLiteral(values[i]), "::", t.key[i].type));
  }
  return absl::StrCat("(", absl::StrJoin(parts, ", "), ")");
}

// Tables of more pages than this have their range bounds read off a sample of this many
// pages rather than by numbering every key: any bounds serve, since both sides use the same
// ones; the sample only keeps the ranges about even. 2,000 pages hold tens of keys per range
// even for rows of a page each.
constexpr int64_t kSampledPages = 2000;

// The WHERE clause of each range, in key order: upper bounds of about equal row counts from
// the source, the first range open below and the last open above.
absl::StatusOr<std::vector<std::string>> KeyRanges(PGconn* source, const Table& t,
                                                   const std::string& qualified,
                                                   const std::string& from, int ranges) {
  auto size =
      Exec(source,
           // A partitioned table's own size is 0 and a plain table has no tree.
           "SELECT (pg_relation_size($1::regclass) + coalesce((SELECT "
           "sum(pg_relation_size(relid)) FROM pg_partition_tree($1::regclass)), 0))::bigint / "
           "current_setting('block_size')::bigint",
           {qualified});
  if (!size.ok()) return size.status();
  const int64_t pages = std::stoll(PQgetvalue(size->get(), 0, 0));
  std::string sample;
  if (pages > 2 * kSampledPages) {
    sample = absl::StrFormat(" TABLESAMPLE SYSTEM (%.6f)", 100.0 * kSampledPages / pages);
  }
  std::vector<std::string> names, as_text, descending;
  for (const KeyColumn& k : t.key) {
    names.push_back(k.name);
    as_text.push_back(absl::StrCat("format('%s', ", k.name, ")"));
    descending.push_back(absl::StrCat(k.name, " DESC"));
  }
  const std::string key = absl::StrCat("(", absl::StrJoin(names, ", "), ")");
  auto bounds =
      Exec(source, absl::StrCat("SELECT DISTINCT ON (pgflow_range) ", absl::StrJoin(as_text, ", "),
                                " FROM (SELECT ", absl::StrJoin(names, ", "), ", ntile(", ranges,
                                ") OVER (ORDER BY ", key, ") AS pgflow_range FROM ", from, sample,
                                ") s ORDER BY pgflow_range, ", absl::StrJoin(descending, ", ")));
  if (!bounds.ok()) return bounds.status();
  std::vector<std::string> wheres;
  std::string lower;
  const int n = PQntuples(bounds->get());
  for (int i = 0; i < n; ++i) {
    std::vector<std::string> values;
    for (size_t k = 0; k < t.key.size(); ++k) values.push_back(PQgetvalue(bounds->get(), i, k));
    std::string upper = Literal(t, values);
    std::vector<std::string> parts;
    if (!lower.empty()) parts.push_back(absl::StrCat(key, " > ", lower));
    // The last range stays open above: rows only the target has past the end are counted.
    if (i + 1 < n) parts.push_back(absl::StrCat(key, " <= ", upper));
    wheres.push_back(absl::StrJoin(parts, " AND "));
    lower = upper;
  }
  if (wheres.empty()) wheres.push_back("");  // an empty source table: the whole target
  return wheres;
}

// Counts and hashes one side's rows of a range: the sum of the first 64 bits of each row's
// md5, which no order of rows changes, so the server need not sort them.
std::string HashQuery(const Table& t, const std::string& from, const std::string& where) {
  return absl::StrCat("SELECT count(*), coalesce(sum(('x' || left(md5(ROW(",
                      absl::StrJoin(t.columns, ", "), ")::text), 16))::bit(64)::bigint), 0) FROM ",
                      from, where.empty() ? "" : " WHERE ", where);
}

struct RangeResult {
  int64_t rows = 0;
  std::string hash;
};

absl::StatusOr<RangeResult> Receive(PGconn* conn, const std::string& sql) {
  absl::StatusOr<PgResultPtr> res = ReceiveResult(conn, sql);
  if (!res.ok()) return res.status();
  return RangeResult{std::stoll(PQgetvalue(res->get(), 0, 0)), PQgetvalue(res->get(), 0, 1)};
}

// A source and a target connection: one range is hashed on both sides at once.
struct ConnectionPair {
  PgConnPtr source;
  PgConnPtr target;
};

absl::StatusOr<ConnectionPair> ConnectPair(const VerifyOptions& options) {
  absl::StatusOr<PgConnPtr> source = Connect(options.source_url, ConnectionKind::kRegular);
  if (!source.ok()) return source.status();
  if (!options.source_snapshot.empty()) {
    absl::Status s =
        Exec(source->get(), "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY").status();
    if (s.ok()) {
      s = Exec(source->get(),
               absl::StrCat("SET TRANSACTION SNAPSHOT ", QuoteLiteral(options.source_snapshot)))
              .status();
    }
    if (!s.ok()) return s;
  }
  absl::StatusOr<PgConnPtr> target = Connect(options.target_url, ConnectionKind::kRegular);
  if (!target.ok()) return target.status();
  return ConnectionPair{std::move(*source), std::move(*target)};
}

struct RangeComparison {
  RangeResult source;
  RangeResult target;
};

absl::StatusOr<RangeComparison> CompareRange(ConnectionPair& pair, const std::string& source_sql,
                                             const std::string& target_sql) {
  if (PQsendQuery(pair.source.get(), source_sql.c_str()) == 0) {
    return ResultError(pair.source.get(), nullptr, "sending a range's hash query");
  }
  const bool sent = PQsendQuery(pair.target.get(), target_sql.c_str()) != 0;
  absl::StatusOr<RangeResult> a = Receive(pair.source.get(), source_sql);
  if (!sent) return ResultError(pair.target.get(), nullptr, "sending a range's hash query");
  absl::StatusOr<RangeResult> b = Receive(pair.target.get(), target_sql);
  if (!a.ok()) return a.status();
  if (!b.ok()) return b.status();
  return RangeComparison{std::move(*a), std::move(*b)};
}

// The differences of owner and grants between source table `t` (`source_table`, quoted) and
// `target_table`, and their sequences, each "schema.name: what differs"; counts the objects
// compared in report->privileges_compared.
absl::StatusOr<std::vector<std::string>> ComparePrivileges(PGconn* source, PGconn* target,
                                                           const RoleMap& map, const Table& t,
                                                           const std::string& source_table,
                                                           const std::string& target_table,
                                                           const std::string& target_schema,
                                                           VerifyReport* report) {
  std::vector<std::pair<ObjectKind, SequencePair>> objects = {
      {ObjectKind::kTable, {source_table, target_table}}};
  absl::StatusOr<std::vector<SequencePair>> sequences =
      ReadTableSequences(source, {TableRef{t.schema, t.name}}, target_schema);
  if (!sequences.ok()) return sequences.status();
  for (SequencePair& pair : *sequences) objects.push_back({ObjectKind::kSequence, std::move(pair)});
  std::vector<std::string> lines;
  for (const auto& [kind, names] : objects) {
    absl::StatusOr<std::optional<Privileges>> want = ReadPrivileges(source, kind, names.source);
    if (!want.ok()) return want.status();
    absl::StatusOr<std::optional<Privileges>> have = ReadPrivileges(target, kind, names.target);
    if (!have.ok()) return have.status();
    if (!want->has_value() || !have->has_value()) continue;  // a missing sequence: `sequences`
    const Privileges wanted = ForTarget(**want, map);
    // What the copy does not touch is not held against it (OwnershipCopier::CopyObject).
    if (!CopiesPrivilegesOf(wanted, **have, map)) {
      report->privilege_notes.push_back(absl::StrCat(
          names.target, ": owned by ", (*have)->owner, " in the target, ", wanted.owner,
          " in the source: owner and grants not compared (pgflow gives the source's to what "
          "its role owns, and leaves anyone else's as it is)"));
      continue;
    }
    ++report->privileges_compared;
    for (const std::string& difference : PrivilegeDifferences(wanted, **have, map)) {
      lines.push_back(absl::StrCat(names.target, ": ", difference));
    }
  }
  return lines;
}

}  // namespace

absl::StatusOr<VerifyReport> Verify(const VerifyOptions& options,
                                    const std::function<void(const std::string&)>& finished,
                                    const std::function<void(const VerifyProgress&)>& progress) {
  std::vector<ConnectionPair> pairs;
  for (int i = 0; i < std::max(1, options.jobs); ++i) {
    absl::StatusOr<ConnectionPair> pair = ConnectPair(options);
    if (!pair.ok()) return pair.status();
    pairs.push_back(std::move(*pair));
  }
  PGconn* source = pairs[0].source.get();
  PGconn* target = pairs[0].target.get();
  VerifyReport report;
  absl::StatusOr<std::vector<Table>> tables = ResolveTables(
      source, options.tables, options.skip_keyless ? &report.skipped : nullptr, &report.problems);
  if (!tables.ok()) return tables.status();
  std::optional<RoleMap> roles;
  if (options.compare_privileges) {
    absl::StatusOr<RoleMap> map = ReadRoleMap(source, target);
    if (!map.ok()) return map.status();
    roles = *std::move(map);
  }
  report.tables = static_cast<int64_t>(report.problems.size());
  for (const std::string& problem : report.problems) finished(problem);
  if (!report.skipped.empty()) {
    finished(absl::StrCat(report.skipped.size(),
                          " table(s) without a primary key not compared: the pipeline does not "
                          "replicate them (keyless_tables: skip): ",
                          absl::StrJoin(report.skipped, ", ")));
  }

  for (const Table& t : *tables) {
    ++report.tables;
    const std::string name = absl::StrCat(t.schema, ".", t.name);
    const std::string schema = options.target_schema.empty() ? t.schema : options.target_schema;
    const std::string source_table = absl::StrCat(QuoteIdent(t.schema), ".", QuoteIdent(t.name));
    const std::string target_table = absl::StrCat(QuoteIdent(schema), ".", QuoteIdent(t.name));
    const std::string only = t.partitioned ? "" : "ONLY ";
    const std::string source_from = only + source_table;
    const std::string target_from = only + target_table;
    auto exists = Exec(target, "SELECT to_regclass($1) IS NOT NULL", {target_table});
    if (!exists.ok()) return exists.status();
    if (PQgetvalue(exists->get(), 0, 0)[0] != 't') {
      report.problems.push_back(
          absl::StrCat(name, " is missing on the target (", schema, ".", t.name, ")"));
      finished(report.problems.back());
      continue;
    }
    // A table without a key, or whose key has no ordering to cut ranges along (a `box`), is
    // compared whole: the sum of the rows' hashes needs no order, and counts duplicates.
    std::string whole;
    absl::StatusOr<std::vector<std::string>> wheres = std::vector<std::string>{""};
    if (t.key.empty()) {
      whole = "no primary key";
    } else {
      // Under one snapshot the source's queries share a transaction, which a failed query
      // would end: the cut is tried in a savepoint of its own.
      const bool in_snapshot = !options.source_snapshot.empty();
      if (in_snapshot) {
        if (absl::Status s = Exec(source, "SAVEPOINT key_ranges").status(); !s.ok()) return s;
      }
      wheres = KeyRanges(source, t, source_table, source_from, options.ranges);
      if (in_snapshot) {
        const char* end =
            wheres.ok() ? "RELEASE SAVEPOINT key_ranges" : "ROLLBACK TO SAVEPOINT key_ranges";
        if (absl::Status s = Exec(source, end).status(); !s.ok()) return s;
      }
      if (!wheres.ok() && absl::IsUnavailable(wheres.status())) return wheres.status();
      if (!wheres.ok()) {
        whole =
            absl::StrContains(wheres.status().message(), "could not identify an ordering operator")
                ? "its key has no btree ordering"
                : absl::StrCat("key not cut into ranges: ", wheres.status().message());
        wheres = std::vector<std::string>{""};
      }
    }

    // Each pair of connections takes the next range until none is left or one has failed.
    std::vector<std::optional<RangeComparison>> results(wheres->size());
    absl::Mutex mu;
    size_t next = 0;
    absl::Status failure;
    VerifyProgress state{name, 0, static_cast<int>(wheres->size()), 0};
    if (progress) progress(state);
    auto work = [&](ConnectionPair& pair) {
      while (true) {
        size_t i;
        {
          absl::MutexLock lock(&mu);
          if (!failure.ok() || next == wheres->size()) return;
          i = next++;
        }
        const std::string& where = (*wheres)[i];
        absl::StatusOr<RangeComparison> r =
            CompareRange(pair, HashQuery(t, source_from, where), HashQuery(t, target_from, where));
        absl::MutexLock lock(&mu);
        if (!r.ok()) {
          if (failure.ok()) failure = r.status();
          return;
        }
        ++state.ranges_done;
        state.rows += r->source.rows;
        results[i] = std::move(*r);
        if (progress) progress(state);
      }
    };
    std::vector<std::thread> helpers;
    for (size_t p = 1; p < pairs.size(); ++p) helpers.emplace_back(work, std::ref(pairs[p]));
    work(pairs[0]);
    for (std::thread& h : helpers) h.join();
    if (!failure.ok()) {
      // A lost connection ends the run; anything else is this table's trouble alone.
      if (absl::IsUnavailable(failure)) return failure;
      report.problems.push_back(absl::StrCat(name, ": could not be compared: ", failure.message()));
      finished(report.problems.back());
      continue;
    }

    if (roles.has_value()) {
      absl::StatusOr<std::vector<std::string>> differences =
          ComparePrivileges(source, target, *roles, t, source_table, target_table, schema, &report);
      if (!differences.ok()) return differences.status();
      for (std::string& line : *differences) {
        finished(line);
        report.privilege_differences.push_back(std::move(line));
      }
    }
    report.rows += state.rows;
    size_t differing = 0;
    for (size_t i = 0; i < results.size(); ++i) {
      const RangeComparison& r = *results[i];
      if (r.source.rows != r.target.rows || r.source.hash != r.target.hash) {
        ++differing;
        report.differences.push_back(RangeDifference{
            name, (*wheres)[i].empty() ? "all rows" : (*wheres)[i], r.source.rows, r.target.rows});
      }
    }
    ++(differing == 0 ? report.identical : report.different);
    const std::string how = whole.empty() ? absl::StrCat(" in ", results.size(), " ranges")
                                          : absl::StrCat(" compared as a whole (", whole, ")");
    finished(differing == 0 ? absl::StrCat(name, ": ", state.rows, " rows", how, ": identical")
             : whole.empty()
                 ? absl::StrCat(name, ": ", differing, " of ", results.size(), " ranges differ")
                 : absl::StrCat(name, ": differs", how));
  }
  return report;
}

std::string VerifyReport::Summary() const {
  if (ok()) return absl::StrCat("identical (", tables, " tables, ", rows, " rows)");
  std::string privileges;
  if (!privilege_differences.empty()) {
    privileges = absl::StrCat(", ", privilege_differences.size(), " owner or grant difference",
                              privilege_differences.size() == 1 ? "" : "s");
  }
  return absl::StrCat("DIFFERENT: ", identical, " identical, ", different, " different, ",
                      not_compared(), " not compared (of ", tables, " tables; ", rows,
                      " rows compared)", privileges);
}

}  // namespace pgflow
