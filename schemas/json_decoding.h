#pragma once

// The way back from schemas/json_encoding.h: a JSON value, as AppendJsonValue wrote it for a
// column, turned into PostgreSQL's text form of that value, so that the type's input function
// reads it as the value that was encoded. This is how a pipeline that reads pgflow's events
// back from Kafka gets typed values a PostgreSQL target can take (sources/kafka/).
//
// The rules mirror the encoding's, type by type (the type comes with the event, see
// schemas/table_schema_json.h):
//   null                     -> SQL NULL (JSON's null in a json or jsonb column is written
//                               `null` too; the event's "json_null" list, not this function,
//                               tells it apart: sources/kafka/kafka_message.h)
//   bool true/false          -> t / f
//   integers, floats         -> the number's digits as written ("NaN", "Infinity" as strings)
//   numeric                  -> the string's (or, with numeric_as_number, the number's) digits
//   json, jsonb              -> the embedded value's text, byte for byte
//   bytea                    -> base64 decoded, written \x<hex> (lower case)
//   timestamp, timestamptz   -> ISO 8601 back to PostgreSQL's form: "2024-01-02 03:04:05.5+00"
//   arrays                   -> an array literal, {a,"b c",NULL,{...}}, each element by its
//                               type's rule and quoted as array_out quotes
//   anything else            -> the string's content (dates, uuids, enums, intervals, ...)
// For canonical PostgreSQL output (DateStyle=ISO, IntervalStyle=iso_8601, TimeZone=UTC,
// extra_float_digits=3, bytea_output=hex) decoding gives back exactly the text that was
// encoded. What the encoding loses stays lost: an array's lower bounds ('[0:1]={1,2}' comes
// back as '{1,2}'), the whitespace between a json value's tokens (jsonb has none to lose), the
// difference between SQL NULL and JSON null as an element of a json[] or jsonb[] array, and
// the dimensions of a multidimensional json[] or jsonb[] (read back as one dimension whose
// elements are JSON arrays).

#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "engine/change.h"

namespace pgflow {

// Turns `json` (one JSON value, checked here) back into a value of type `type_oid`;
// `type_name` is the column's Column::type_name (arrays of non-built-in types are recognised
// by it). Returns Value::Null(type_oid) for null and Value::Text(type_oid, text) otherwise.
// InvalidArgument, saying what was expected, when `json` is not valid JSON or cannot be a
// value of the type: an object or array for a scalar type other than json/jsonb, a number
// for a boolean, a scalar other than a string for an array type, arrays nested more than 6
// deep. (A bytea string that is not base64 is taken as the value's text: the encoding keeps
// as text what it cannot read.)
absl::StatusOr<Value> ValueFromJson(std::string_view json, uint32_t type_oid,
                                    std::string_view type_name);

}  // namespace pgflow
