#pragma once

// The `mask` transform: hides column values before any sink sees them, for anonymised copies
// and feeds (`- mask: {table: public.customers, columns: {email: hash, phone: redact}}`).
//
// Rules, per column:
//   redact        the value becomes a constant (`redact_with`, default "REDACTED")
//   null          the value becomes NULL
//   hash          HMAC-SHA-256 of the value with a secret salt (`salt:` or PGFLOW_MASK_SALT),
//                 as hex: deterministic, so joins and keys keep working; no salt is an error
//   partial       keeps the first and the last characters, stars in between: partial(1,2)
//                 keeps one and two (the default), "Alice Smith" -> "A********th"
//   email         keeps the domain, hashes the local part: "ann@example.com" ->
//                 "3f2a9c0d1e4b5a6f@example.com" (salted as `hash`)
//   fake_name     a made-up "First Last" chosen by the salted HMAC of the value: the same
//                 person gets the same fake name everywhere
//   fake_phone    every digit replaced by one the salted HMAC chooses, the rest (+, spaces,
//                 dashes) kept: "+44 7700 900123" -> "+61 3920 184476"
//   truncate(u)   dates and timestamps cut to year, month, day, hour or minute
//   truncate(n)   numbers cut (toward zero) to n decimals; n < 0 zeroes integer digits:
//                 truncate(-3) makes 123456 into 123000
//   keep          the value as it is: says, under `strict`, that the column is not sensitive
// redact, hash, partial, email, fake_name and fake_phone apply to text columns (text, varchar,
// char, name), truncate to dates, times and numbers, null and keep to any; a value longer than
// a varchar(n)/char(n) column holds is cut to n characters.
//
// `strict: true` (for anonymised copies) requires a rule for every column of every table the
// mask covers, `keep` included: a table with a column without one stops the pipeline before
// any of its rows goes out, and so does a schema change that adds such a column, so that a new
// personal-data column never leaks. Masked are the new row and the
// old one (`before`) of every insert, update, delete and snapshot row; a value the stream did
// not send (an unchanged TOASTed value) has nothing to mask and stays unsent. A key column may
// be hashed or masked partially but not redacted or nulled (every row would get one key).

#include <memory>
#include <string>
#include <vector>

#include "common/postgres/table_ref.h"
#include "engine/registry.h"

namespace pgflow {

enum class MaskRule {
  kRedact,
  kNull,
  kHash,
  kPartial,
  kEmail,
  kFakeName,
  kFakePhone,
  kTruncateTime,
  kTruncateNumber,
  kKeep
};

struct MaskColumn {
  std::string column;
  MaskRule rule = MaskRule::kRedact;
  int keep_first = 1;  // kPartial
  int keep_last = 2;
  std::string unit;   // kTruncateTime: year, month, day, hour, minute
  int precision = 0;  // kTruncateNumber: decimals kept (negative: integer digits zeroed)
  friend bool operator==(const MaskColumn&, const MaskColumn&) = default;
};

struct MaskOptions : TransformOptions {
  std::vector<std::string> table;  // as written: schema.table or schema.*
  std::vector<TableRef> tables;    // parsed
  std::vector<MaskColumn> columns;
  std::string salt;  // `salt`, else PGFLOW_MASK_SALT
  std::string redact_with = "REDACTED";
  bool strict = false;  // every column of the covered tables needs a rule
};

// Registers the `mask` transform type.
void RegisterMaskTransform();

}  // namespace pgflow
