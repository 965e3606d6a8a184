#pragma once

// The one place where a PostgreSQL value becomes JSON (docs/development/architecture.md, "Change
// events"): integers and booleans as JSON numbers and booleans, json/jsonb embedded, arrays as
// arrays, timestamps ISO 8601, bytea base64, numeric as a string unless asked otherwise, anything
// else as a JSON string of its text form. Whatever the input, the output is valid JSON.
//
// The rules are here; the formats they read and write have headers of their own:
// schemas/json_text.h (JSON strings, checking JSON), schemas/base64.h, schemas/pg_float.h,
// schemas/pg_datetime.h, schemas/pg_array_literal.h and schemas/pg_binary.h.
//
// Thread-safety: plain functions of their arguments; any thread may call any of them.

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "engine/change.h"

namespace pgflow {

struct JsonOptions {
  // Write numeric as a JSON number instead of a string (loses precision in most readers).
  bool numeric_as_number = false;
};

// Appends `value` to *out as one JSON value. `type_name` is the column's Column::type_name
// (used to recognise arrays of non-built-in types, e.g. "public._mood"); may be empty.
// kBinary values are decoded for the types CanDecodeBinary() accepts and written as base64
// otherwise, or when malformed.
// REQUIRES: !value.is_unchanged_toast(); such values are listed, never encoded.
void AppendJsonValue(const Value& value, std::string_view type_name, const JsonOptions& options,
                     std::string* out);

// True when AppendJsonValue turns a kBinary value of built-in type `type_oid` (its send format,
// as `COPY ... (FORMAT binary)` writes it) into the same JSON as a kText value of its text
// form (output settings as for the text rules: DateStyle=ISO, TimeZone=UTC,
// extra_float_digits=3). True for bool, int2/4/8, oid, float4/8, numeric, text, varchar,
// bpchar, name, json, jsonb, bytea, uuid, date, timestamp, timestamptz and the built-in array
// types of these. False for every other type (interval, time, timetz, "char", enums, domains,
// box[], unknown OIDs...): their binary form is written as base64, so read them in their text
// form instead. Beware that a cast to text is not always the type's output function:
// '10.0.0.1'::inet::text is "10.0.0.1/32" where inet_out writes "10.0.0.1".
bool CanDecodeBinary(uint32_t type_oid);

// True when AppendJsonValue writes a text value of type `type_oid` (`type_name` as above) as a
// JSON array, parsed from PostgreSQL's array text form; then *element_oid is the element type
// whose rules apply to each element (0: elements are written as strings). False for every
// other type, box[] included (written as the string of its text).
bool IsJsonArrayType(uint32_t type_oid, std::string_view type_name, uint32_t* element_oid);

// Appends {"column":value,...} over the columns of `row` (key columns only when `keys_only`),
// leaving out unchanged TOAST values. Returns how many columns were written.
size_t AppendRowObject(const TableSchema& table, const Row& row, bool keys_only,
                       const JsonOptions& options, std::string* out);
// The same over the columns of `table` whose indices `columns` lists (in its order).
size_t AppendRowObject(const TableSchema& table, const Row& row, const std::vector<size_t>& columns,
                       const JsonOptions& options, std::string* out);

// Appends the key object of `row`, {"id":3}: its replica identity's columns, or under REPLICA
// IDENTITY FULL the primary key's (TableSchema::RowKeyColumns). False, nothing appended, when
// the table has no key or `row` none of its values.
bool AppendKeyObject(const TableSchema& table, const Row& row, const JsonOptions& options,
                     std::string* out);

// Appends `,"unchanged_toast":["col",...]` when the new row of `change` has any unchanged
// TOAST value; nothing otherwise.
void AppendUnchangedToast(const Change& change, std::string* out);

// Appends `,"json_null":["col",...]` when the new row of `change` has a json or jsonb column
// whose value is JSON's null (not SQL NULL): both are written `null`, and the list tells them
// apart. Nothing otherwise.
void AppendJsonNulls(const Change& change, std::string* out);

// Appends pgflow's own JSON object for one change, without a newline: the `jsonl` sink's line
// and the Kafka sink's `compact` value (docs/concepts.md, "Events").
void AppendChangeObject(const Change& change, const JsonOptions& options, std::string* out);

}  // namespace pgflow
