#include "common/postgres/dead_letter_table.h"

#include <memory>
#include <utility>

#include "common/postgres/pg_connection.h"
#include "engine/str_cat.h"

namespace pgflow {
namespace {

constexpr const char* kColumns =
    "pipeline, sink, event_id, lsn, source_table, operation, key, reason, code, destination, "
    "change, schema";

class TableDeadLetterStore : public DeadLetterStore {
 public:
  TableDeadLetterStore(std::string url, TableRef table) : url_(std::move(url)), table_(table) {}

  absl::Status Open() {
    absl::StatusOr<PgConnPtr> conn = Connect(url_, ConnectionKind::kRegular);
    if (!conn.ok()) return conn.status();
    conn_ = *std::move(conn);
    return EnsureDeadLetterTable(conn_.get(), table_);
  }

  std::string Describe() const override {
    return Cat("table ", table_.ToString(), " in ", conn_ ? pgflow::Describe(conn_.get()) : url_);
  }

  absl::Status Record(DeadLetter& letter) override {
    absl::StatusOr<PgResultPtr> res =
        Exec(conn_.get(), DeadLetterInsertSql(table_), DeadLetterInsertParams(letter));
    if (!res.ok()) return Failed("recording a refused event in", res.status());
    if (PQntuples(res->get()) == 1) {
      letter.id = std::stoull(PQgetvalue(res->get(), 0, 0));
      return absl::OkStatus();
    }
    res = Exec(conn_.get(),
               Cat("SELECT id FROM ", table_.Quoted(),
                   " WHERE pipeline = $1 AND sink = $2 AND event_id = $3 AND source_table = $4 "
                   "AND key = $5 AND destination = $6"),
               {letter.pipeline, letter.sink, letter.event_id, letter.table, letter.key,
                letter.destination});
    if (!res.ok()) return Failed("reading", res.status());
    if (PQntuples(res->get()) == 1) letter.id = std::stoull(PQgetvalue(res->get(), 0, 0));
    return absl::OkStatus();
  }

  absl::StatusOr<std::vector<DeadLetter>> List(std::string_view pipeline,
                                               std::string_view sink) override {
    absl::StatusOr<PgResultPtr> res = Exec(
        conn_.get(),
        Cat("SELECT id, ", kColumns,
            ", to_char(recorded_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"') FROM ",
            table_.Quoted(), " WHERE pipeline = $1 AND ($2 = '' OR sink = $2) ORDER BY id"),
        {std::string(pipeline), std::string(sink)});
    if (!res.ok()) return Failed("reading", res.status());
    std::vector<DeadLetter> out;
    PGresult* r = res->get();
    for (int i = 0; i < PQntuples(r); ++i) {
      DeadLetter l;
      l.id = std::stoull(PQgetvalue(r, i, 0));
      std::string* fields[] = {&l.pipeline,    &l.sink,   &l.event_id, &l.lsn,
                               &l.table,       &l.operation, &l.key,  &l.reason,
                               &l.code,        &l.destination, &l.change, &l.schema,
                               &l.recorded_at};
      for (int c = 0; c < 13; ++c) *fields[c] = PQgetvalue(r, i, c + 1);
      out.push_back(std::move(l));
    }
    return out;
  }

  absl::StatusOr<size_t> Remove(std::string_view pipeline,
                                const std::vector<uint64_t>& ids) override {
    std::string list = "{";
    for (size_t i = 0; i < ids.size(); ++i) list += Cat(i ? "," : "", ids[i]);
    list += "}";
    absl::StatusOr<PgResultPtr> res =
        Exec(conn_.get(),
             Cat("DELETE FROM ", table_.Quoted(), " WHERE pipeline = $1 AND id = ANY($2::bigint[])"),
             {std::string(pipeline), list});
    if (!res.ok()) return Failed("deleting from", res.status());
    return static_cast<size_t>(std::stoull(PQcmdTuples(res->get())));
  }

 private:
  absl::Status Failed(std::string_view what, const absl::Status& s) const {
    return absl::Status(s.code(), Cat(what, " ", table_.ToString(), ": ", s.message()));
  }

  const std::string url_;
  const TableRef table_;
  PgConnPtr conn_;
};

}  // namespace

absl::Status EnsureDeadLetterTable(PGconn* conn, const TableRef& table) {
  // json, not jsonb: the event's text is kept as it was written (numbers, key order).
  absl::StatusOr<PgResultPtr> res = Exec(
      conn,
      Cat("CREATE SCHEMA IF NOT EXISTS ", QuoteIdent(table.schema), "; CREATE TABLE IF NOT EXISTS ",
          table.Quoted(),
          " (id bigserial PRIMARY KEY, pipeline text NOT NULL, sink text NOT NULL, event_id "
          "text NOT NULL, lsn pg_lsn NOT NULL, source_table text NOT NULL, operation text NOT "
          "NULL, key text NOT NULL, reason text NOT NULL, code text NOT NULL, destination text "
          "NOT NULL DEFAULT '', change json NOT NULL, schema json, recorded_at timestamptz NOT "
          "NULL DEFAULT now(), UNIQUE (pipeline, sink, event_id, source_table, key, "
          "destination))"));
  if (!res.ok()) {
    return absl::Status(res.status().code(),
                        Cat("creating ", table.ToString(), ": ", res.status().message()));
  }
  // A table of that name made by something else (or an earlier pgflow) is not written into.
  res = Exec(conn,
             "SELECT string_agg(c, ', ') FROM unnest(string_to_array($2, ', ')) c WHERE NOT "
             "EXISTS (SELECT FROM pg_attribute WHERE attrelid = $1::regclass AND attname = c "
             "AND NOT attisdropped)",
             {table.Quoted(), kColumns});
  if (!res.ok()) return res.status();
  if (!PQgetisnull(res->get(), 0, 0)) {
    return absl::FailedPreconditionError(
        Cat(table.ToString(), " exists without the columns of pgflow's dead-letter records (",
            PQgetvalue(res->get(), 0, 0),
            " missing): rename it out of the way (an earlier pgflow's records stay readable "
            "there), or name another table"));
  }
  return absl::OkStatus();
}

std::string DeadLetterInsertSql(const TableRef& table) {
  return Cat("INSERT INTO ", table.Quoted(), " (", kColumns,
             ") VALUES ($1, $2, $3, $4::pg_lsn, $5, $6, $7, $8, $9, $10, $11::json, $12::json) "
             "ON CONFLICT DO NOTHING RETURNING id");
}

std::vector<std::string> DeadLetterInsertParams(const DeadLetter& l) {
  return {l.pipeline, l.sink,        l.event_id, l.lsn.empty() ? "0/0" : l.lsn,
          l.table,    l.operation,   l.key,      l.reason,
          l.code,     l.destination, l.change.empty() ? "null" : l.change,
          l.schema.empty() ? "null" : l.schema};
}

void RegisterPostgresDeadLetterStore() {
  RegisterTableDeadLetterStore(
      [](const std::string& url,
         const std::string& table) -> absl::StatusOr<std::unique_ptr<DeadLetterStore>> {
        absl::StatusOr<TableRef> ref = ParseTableRef(table);
        if (!ref.ok() || ref->is_schema()) {
          return absl::InvalidArgumentError(
              Cat("table: expected schema.name, got \"", table, "\""));
        }
        auto store = std::make_unique<TableDeadLetterStore>(url, *ref);
        if (absl::Status s = store->Open(); !s.ok()) return s;
        return std::unique_ptr<DeadLetterStore>(std::move(store));
      });
}

}  // namespace pgflow
