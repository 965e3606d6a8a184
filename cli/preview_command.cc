#include "cli/preview_command.h"

#include <algorithm>
#include <cstdio>
#include <map>
#include <memory>

#include "CLI/CLI.hpp"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "cli/pipeline_file.h"
#include "common/postgres/pg_connection.h"
#include "common/postgres/table_ref.h"
#include "documents/document_catalog.h"
#include "documents/document_spec.h"
#include "engine/transform.h"
#include "sources/postgres/postgres_source.h"
#include "sources/postgres/postgres_source_config.h"
#include "sources/postgres/snapshot.h"
#include "transformers/value_text.h"

namespace pgflow {
namespace {

// Values wider than this are cut in the preview, with an ellipsis.
constexpr size_t kMaxWidth = 48;

absl::StatusOr<PgConnPtr> ConnectToSource(const PipelineConfig& config) {
  std::shared_ptr<const PostgresSourceOptions> source = PostgresSourceOf(config);
  if (source == nullptr) {
    return absl::FailedPreconditionError(
        "reading tables needs a postgres source; this pipeline's source is " + config.source.type);
  }
  return Connect(source->url, ConnectionKind::kRegular);
}

// Up to `limit` rows of `reader`'s table, as the stream shows values (the types' text output).
absl::StatusOr<std::vector<Row>> ReadRows(PGconn* conn, const TableSchema& table, int limit) {
  std::vector<std::string> columns;
  for (const Column& c : table.columns) {
    const std::string q = QuoteIdent(c.name);
    columns.push_back(absl::StrCat("CASE WHEN ", q, " IS NULL THEN NULL ELSE format('%s', ", q,
                                   ") END"));
  }
  absl::StatusOr<PgResultPtr> res = Exec(
      conn, absl::StrCat("SELECT ", columns.empty() ? "1" : absl::StrJoin(columns, ", "), " FROM ",
                         QuoteIdent(table.schema), ".", QuoteIdent(table.name), " LIMIT ", limit));
  if (!res.ok()) return res.status();
  std::vector<Row> rows;
  for (int r = 0; r < PQntuples(res->get()); ++r) {
    Row row;
    for (size_t c = 0; c < table.columns.size(); ++c) {
      const int i = static_cast<int>(c);
      const uint32_t type = table.columns[c].type_oid;
      row.push_back(PQgetisnull(res->get(), r, i)
                        ? Value::Null(type)
                        : Value::Text(type, PQgetvalue(res->get(), r, i)));
    }
    rows.push_back(std::move(row));
  }
  return rows;
}

// The chain of the pipeline's transforms, then `sink`'s (none: the pipeline's only).
absl::StatusOr<TransformChain> ChainFor(const PipelineConfig& config, const std::string& sink) {
  std::vector<TransformConfig> transforms = config.transforms;
  if (!sink.empty()) {
    auto it = std::find_if(config.sinks.begin(), config.sinks.end(),
                           [&](const SinkConfig& s) { return s.name == sink; });
    if (it == config.sinks.end()) {
      std::vector<std::string> names;
      for (const SinkConfig& s : config.sinks) names.push_back(s.name);
      return absl::NotFoundError(absl::StrCat("no sink named '", sink, "' (the pipeline has ",
                                              absl::StrJoin(names, ", "), ")"));
    }
    transforms.insert(transforms.end(), it->common.transforms.begin(),
                      it->common.transforms.end());
  }
  return BuildTransforms(config.name, transforms);
}

absl::StatusOr<std::vector<Change>> RunChain(TransformChain& chain, const TableSchemaPtr& table,
                                             Row row) {
  auto batch = std::make_shared<EventBatch>();
  Event event;
  event.kind = EventKind::kChange;
  event.change.op = Op::kRead;
  event.change.table = table;
  event.change.after = std::move(row);
  batch->events.push_back(std::move(event));
  absl::StatusOr<EventBatchPtr> out = chain.Apply(batch);
  if (!out.ok()) return out.status();
  std::vector<Change> changes;
  for (const Event& e : (*out)->events) {
    if (e.kind == EventKind::kChange) changes.push_back(e.change);
  }
  return changes;
}

std::string Shown(const Value& value, const Column& column) {
  if (value.is_unchanged_toast()) return "(not sent)";
  std::optional<std::string> text = ValueText(value, column);
  if (!text) return "NULL";
  std::string s = *text;
  for (char& c : s) {
    if (c == '\n' || c == '\t' || c == '\r') c = ' ';
  }
  if (s.size() > kMaxWidth) s = s.substr(0, kMaxWidth - 3) + "...";
  return s;
}

struct PreviewArgs {
  std::string path;
  std::string table;
  std::string sink;
  int limit = 10;
};

int Preview(const PreviewArgs& args) {
  return PrintFromPipeline(
      args.path,
      [&](const PipelineConfig& config) {
        return PreviewTable(config, args.table, args.limit, args.sink);
      },
      [](const absl::Status& s) { return absl::IsInvalidArgument(s) || absl::IsNotFound(s); });
}

std::string Pad(std::string s, size_t width) {
  if (s.size() < width) s.append(width - s.size(), ' ');
  return s;
}

}  // namespace

absl::StatusOr<std::string> PreviewTable(const PipelineConfig& config, const std::string& table,
                                         int limit, const std::string& sink) {
  absl::StatusOr<TableRef> ref = ParseTableRef(table);
  if (!ref.ok() || ref->is_schema()) {
    return absl::InvalidArgumentError("--table: expected schema.table, got '" + table + "'");
  }
  absl::StatusOr<TransformChain> chain = ChainFor(config, sink);
  if (!chain.ok()) return chain.status();
  absl::StatusOr<PgConnPtr> conn = ConnectToSource(config);
  if (!conn.ok()) return conn.status();
  absl::StatusOr<TableReader> reader = DescribeTable(conn->get(), ref->schema, ref->table);
  if (!reader.ok()) return reader.status();
  const TableSchemaPtr& schema = reader->schema;
  absl::StatusOr<std::vector<Row>> rows = ReadRows(conn->get(), *schema, limit);
  if (!rows.ok()) return rows.status();

  std::string out;
  const std::string chain_name =
      sink.empty() ? "the pipeline's transforms" : "the transforms of sink " + sink;
  if (rows->empty()) return absl::StrCat(schema->QualifiedName(), " has no rows to preview\n");
  for (size_t r = 0; r < rows->size(); ++r) {
    const Row source_row = (*rows)[r];
    absl::StatusOr<std::vector<Change>> outputs = RunChain(*chain, schema, (*rows)[r]);
    if (!outputs.ok()) {
      return absl::Status(outputs.status().code(),
                          absl::StrCat("row ", r + 1, " of ", schema->QualifiedName(), ": ",
                                       outputs.status().message()));
    }
    absl::StrAppend(&out, "row ", r + 1, " of ", schema->QualifiedName());
    if (outputs->empty()) {
      absl::StrAppend(&out, ": filtered out by ", chain_name, "\n");
      for (size_t c = 0; c < schema->columns.size(); ++c) {
        absl::StrAppend(&out, "  ", schema->columns[c].name, " = ",
                        Shown(source_row[c], schema->columns[c]), "\n");
      }
      out += "\n";
      continue;
    }
    for (size_t o = 0; o < outputs->size(); ++o) {
      const Change& after = (*outputs)[o];
      const TableSchema& shape = *after.table;
      absl::StrAppend(&out, o == 0 ? "" : absl::StrCat("row ", r + 1, ", output ", o + 1), " -> ",
                      OpName(after.op), " on ", shape.QualifiedName(),
                      after.destination.empty() ? "" : " (to " + after.destination + ")", "\n");
      // Lines: column, source value, output value.
      std::vector<std::array<std::string, 3>> lines = {{"column", "source", "after"}};
      // Aligned by name: a column the output lacks was dropped (or renamed: it then shows
      // among the output's own below).
      std::vector<bool> used(shape.columns.size(), false);
      for (size_t c = 0; c < schema->columns.size(); ++c) {
        const std::string& name = schema->columns[c].name;
        size_t k = 0;
        while (k < shape.columns.size() && shape.columns[k].name != name) ++k;
        std::string shown_after = "(not in the output)";
        if (k < shape.columns.size() && k < after.after.size()) {
          used[k] = true;
          shown_after = Shown(after.after[k], shape.columns[k]);
        }
        lines.push_back({name, Shown(source_row[c], schema->columns[c]), shown_after});
      }
      for (size_t k = 0; k < shape.columns.size(); ++k) {
        if (used[k] || k >= after.after.size()) continue;
        lines.push_back({shape.columns[k].name + " (renamed or added)", "",
                         Shown(after.after[k], shape.columns[k])});
      }
      size_t w0 = 0, w1 = 0;
      for (const auto& l : lines) {
        w0 = std::max(w0, l[0].size());
        w1 = std::max(w1, l[1].size());
      }
      for (const auto& l : lines) {
        std::string line = absl::StrCat("  ", Pad(l[0], w0), "  ", Pad(l[1], w1), "  ", l[2]);
        while (!line.empty() && line.back() == ' ') line.pop_back();
        absl::StrAppend(&out, line, "\n");
      }
    }
    out += "\n";
  }
  return out;
}

absl::StatusOr<std::vector<std::string>> ValidateAgainstSource(
    const PipelineConfig& config, bool before_run, std::vector<std::string>* warnings) {
  std::shared_ptr<const PostgresSourceOptions> source = PostgresSourceOf(config);
  absl::StatusOr<PgConnPtr> conn = ConnectToSource(config);
  if (!conn.ok()) return conn.status();
  std::vector<std::string> problems;
  if (absl::Status server = CheckSourceServer(conn->get()); !server.ok()) {
    problems.push_back(std::string(server.message()));
  }
  // The followed tables, patterns expanded.
  std::vector<TableRef> tables;
  for (const TableRef& pattern : source->tables) {
    absl::StatusOr<PgResultPtr> res =
        Exec(conn->get(),
             "SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = "
             "c.relnamespace WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition AND "
             "n.nspname = $1 AND ($2 = '*' OR c.relname = $2) ORDER BY 2",
             {pattern.schema, pattern.table});
    if (!res.ok()) return res.status();
    if (PQntuples(res->get()) == 0 && !(before_run && pattern.is_schema())) {
      problems.push_back(absl::StrCat("source.postgres.tables: ",
                                      pattern.is_schema() ? "schema " : "table ", pattern.ToString(),
                                      pattern.is_schema() ? " has no tables" : " does not exist"));
    }
    for (int i = 0; i < PQntuples(res->get()); ++i) {
      tables.push_back(TableRef{PQgetvalue(res->get(), i, 0), PQgetvalue(res->get(), i, 1)});
    }
  }
  if (config.documents.has_value()) {
    absl::StatusOr<std::map<std::string, documents::DocumentSpec>> specs =
        documents::ParseDocuments(*config.documents);
    if (!specs.ok()) return specs.status();
    std::vector<std::string> ignored;
    absl::Status s = documents::CheckDocuments(conn->get(), *specs, tables, &problems,
                                               warnings != nullptr ? warnings : &ignored);
    if (!s.ok()) return s;
  }
  std::vector<std::string> chains = {""};
  for (const SinkConfig& sink : config.sinks) {
    if (!sink.common.transforms.empty()) chains.push_back(sink.name);
  }
  for (const TableRef& t : tables) {
    absl::StatusOr<TableReader> reader = DescribeTable(conn->get(), t.schema, t.table);
    if (!reader.ok()) return reader.status();
    absl::StatusOr<std::vector<Row>> rows = ReadRows(conn->get(), *reader->schema, 1);
    if (!rows.ok()) return rows.status();
    Row row;
    if (rows->empty()) {
      for (const Column& c : reader->schema->columns) row.push_back(Value::Null(c.type_oid));
    } else {
      row = (*rows)[0];
    }
    // The table as each chain hands it on ("": the pipeline's transforms).
    std::map<std::string, TableSchemaPtr> shapes;
    shapes[""] = reader->schema;
    for (const std::string& sink : chains) {
      if (sink.empty() && config.transforms.empty()) continue;
      absl::StatusOr<TransformChain> chain = ChainFor(config, sink);
      if (!chain.ok()) return chain.status();
      absl::StatusOr<std::vector<Change>> out = RunChain(*chain, reader->schema, row);
      if (!out.ok()) {
        problems.push_back(absl::StrCat(t.ToString(),
                                        sink.empty() ? "" : absl::StrCat(" (sink ", sink, ")"),
                                        ": ", out.status().message()));
      } else if (!out->empty() && out->front().table != nullptr) {
        shapes[sink] = out->front().table;
      }
    }
    // What each sink's options say of the table, as the sink sees it.
    for (const SinkConfig& sink : config.sinks) {
      auto shape = shapes.find(sink.name);
      if (shape == shapes.end()) shape = shapes.find("");
      if (absl::Status s = sink.factory->CheckTable(*sink.options, *shape->second); !s.ok()) {
        problems.push_back(absl::StrCat("sinks.", sink.name, ".", s.message()));
      }
    }
  }
  return problems;
}

}  // namespace pgflow

namespace pgflow {

Command AddPreviewCommand(CLI::App& app) {
  auto args = std::make_shared<PreviewArgs>();
  CLI::App* preview =
      AddCommand(app, "preview", "Show rows of a table before and after the pipeline's transforms",
                 "Show rows of a source table beside what the pipeline's transforms (and a sink's, "
                 "with --sink) make of them, without starting the pipeline.");
  AddPipelineFile(preview, &args->path);
  preview->add_option("--table", args->table, "the source table, schema.table")->required();
  preview->add_option("--limit", args->limit, "rows to show")
      ->capture_default_str()
      ->check(CLI::Range(1, 10000));
  preview->add_option("--sink", args->sink, "add this sink's own transforms after the pipeline's");
  return {preview, [args] { return Preview(*args); }};
}

}  // namespace pgflow
