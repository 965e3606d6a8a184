#include "transformers/mask.h"

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <optional>
#include <cstring>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "common/digest.h"
#include "engine/str_cat.h"
#include "transformers/table_patterns.h"
#include "transformers/value_text.h"

namespace pgflow {
namespace {

// Table versions remembered before starting over (a few per table: one per schema change).
constexpr size_t kMaxPlans = 4096;

bool IsTextType(uint32_t type_oid) {
  return type_oid == oid::kText || type_oid == oid::kVarchar || type_oid == oid::kBpchar ||
         type_oid == oid::kName;
}

const char* RuleName(MaskRule rule) {
  switch (rule) {
    case MaskRule::kRedact:
      return "redact";
    case MaskRule::kNull:
      return "null";
    case MaskRule::kHash:
      return "hash";
    case MaskRule::kPartial:
      return "partial";
    case MaskRule::kEmail:
      return "email";
    case MaskRule::kFakeName:
      return "fake_name";
    case MaskRule::kFakePhone:
      return "fake_phone";
    case MaskRule::kTruncateTime:
    case MaskRule::kTruncateNumber:
      return "truncate";
    case MaskRule::kKeep:
      return "keep";
  }
  return "?";
}

// "partial(2,3)" -> 2, 3.
bool ParsePartial(absl::string_view text, int* first, int* last) {
  if (text == "partial") return true;
  if (!absl::ConsumePrefix(&text, "partial(") || !absl::ConsumeSuffix(&text, ")")) return false;
  std::vector<absl::string_view> parts = absl::StrSplit(text, ',');
  return parts.size() == 2 && absl::SimpleAtoi(parts[0], first) &&
         absl::SimpleAtoi(parts[1], last) && *first >= 0 && *last >= 0 && *first <= 64 &&
         *last <= 64;
}

absl::Status ReadRules(const ConfigNode& node, std::vector<MaskColumn>* columns) {
  if (!node.IsMap() || node.Entries().empty()) {
    return node.Error("expected a mapping of column: rule (redact, null, hash, partial, email)");
  }
  for (auto& [column, value] : node.Entries()) {
    if (value.IsNull()) {  // `age: null` is YAML's null: the rule of that name
      MaskColumn rule;
      rule.column = column;
      rule.rule = MaskRule::kNull;
      columns->push_back(std::move(rule));
      continue;
    }
    absl::StatusOr<std::string> text = value.AsString();
    if (!text.ok()) return text.status();
    MaskColumn rule;
    rule.column = column;
    if (*text == "redact") {
      rule.rule = MaskRule::kRedact;
    } else if (*text == "null") {
      rule.rule = MaskRule::kNull;
    } else if (*text == "hash") {
      rule.rule = MaskRule::kHash;
    } else if (*text == "email") {
      rule.rule = MaskRule::kEmail;
    } else if (*text == "fake_name") {
      rule.rule = MaskRule::kFakeName;
    } else if (*text == "fake_phone") {
      rule.rule = MaskRule::kFakePhone;
    } else if (*text == "keep") {
      rule.rule = MaskRule::kKeep;
    } else if (ParsePartial(*text, &rule.keep_first, &rule.keep_last)) {
      rule.rule = MaskRule::kPartial;
    } else if (absl::string_view t = *text; absl::ConsumePrefix(&t, "truncate(") &&
                                            absl::ConsumeSuffix(&t, ")")) {
      const std::string arg(absl::StripAsciiWhitespace(t));
      if (arg == "year" || arg == "month" || arg == "day" || arg == "hour" || arg == "minute") {
        rule.rule = MaskRule::kTruncateTime;
        rule.unit = arg;
      } else if (absl::SimpleAtoi(arg, &rule.precision) && rule.precision >= -30 &&
                 rule.precision <= 30) {
        rule.rule = MaskRule::kTruncateNumber;
      } else {
        return value.Error(Cat("truncate takes year, month, day, hour, minute or a number of "
                               "decimals, got '", arg, "'"));
      }
    } else {
      return value.Error(Cat("unknown mask rule '", *text,
                             "' (expected redact, null, hash, partial, partial(F,L), email, "
                             "fake_name, fake_phone, truncate(unit), truncate(N) or keep)"));
    }
    columns->push_back(std::move(rule));
  }
  return absl::OkStatus();
}

// UTF-8 aware: characters, not bytes.
std::vector<std::string_view> Characters(std::string_view text) {
  std::vector<std::string_view> out;
  for (size_t i = 0; i < text.size();) {
    size_t n = 1;
    unsigned char c = static_cast<unsigned char>(text[i]);
    if (c >= 0xF0) {
      n = 4;
    } else if (c >= 0xE0) {
      n = 3;
    } else if (c >= 0xC0) {
      n = 2;
    }
    n = std::min(n, text.size() - i);
    out.push_back(text.substr(i, n));
    i += n;
  }
  return out;
}

bool IsTimeType(uint32_t type_oid) {
  return type_oid == oid::kDate || type_oid == oid::kTimestamp || type_oid == oid::kTimestamptz;
}

bool IsNumberType(uint32_t type_oid) {
  return type_oid == oid::kInt2 || type_oid == oid::kInt4 || type_oid == oid::kInt8 ||
         type_oid == oid::kNumeric || type_oid == oid::kFloat4 || type_oid == oid::kFloat8;
}

// The types each rule applies to, for the error that names a mismatch.
bool RuleFits(MaskRule rule, uint32_t type_oid) {
  switch (rule) {
    case MaskRule::kNull:
    case MaskRule::kKeep:
      return true;
    case MaskRule::kTruncateTime:
      return IsTimeType(type_oid);
    case MaskRule::kTruncateNumber:
      return IsNumberType(type_oid);
    default:
      return IsTextType(type_oid);
  }
}

const char* RuleTypes(MaskRule rule) {
  if (rule == MaskRule::kTruncateTime) return "date and timestamp columns";
  if (rule == MaskRule::kTruncateNumber) return "number columns";
  return "text columns (text, varchar, char)";
}

// "2026-03-17 10:11:12.5+01" (or ISO's T) cut to `unit`, its offset kept; nullopt for another
// form.
std::optional<std::string> TruncateTime(const std::string& text, const std::string& unit) {
  if (text == "infinity" || text == "-infinity") return text;
  auto digits = [&](size_t at, size_t n) {
    if (at + n > text.size()) return false;
    for (size_t i = at; i < at + n; ++i) {
      if (!absl::ascii_isdigit(static_cast<unsigned char>(text[i]))) return false;
    }
    return true;
  };
  if (!digits(0, 4) || text.size() < 10 || text[4] != '-' || !digits(5, 2) || text[7] != '-' ||
      !digits(8, 2)) {
    return std::nullopt;
  }
  std::string date = text.substr(0, 10);
  if (unit == "year") date.replace(5, 5, "01-01");
  if (unit == "month") date.replace(8, 2, "01");
  if (text.size() == 10) return date;  // a date
  if (!(text[10] == ' ' || text[10] == 'T') || !digits(11, 2) || text.size() < 19 ||
      text[13] != ':' || !digits(14, 2) || text[16] != ':' || !digits(17, 2)) {
    return std::nullopt;
  }
  std::string time = text.substr(11, 8);
  if (unit == "year" || unit == "month" || unit == "day") time = "00:00:00";
  if (unit == "hour") time.replace(2, 6, ":00:00");
  if (unit == "minute") time.replace(5, 3, ":00");
  size_t rest = 19;
  if (rest < text.size() && text[rest] == '.') {
    ++rest;
    while (rest < text.size() && absl::ascii_isdigit(static_cast<unsigned char>(text[rest]))) {
      ++rest;
    }
  }
  return Cat(date, std::string(1, text[10]), time, text.substr(rest));
}

// Decimal text cut toward zero to `precision` decimals (negative: integer digits zeroed).
std::optional<std::string> TruncateNumber(const std::string& text, int precision) {
  if (text.find_first_of("eEnN") != std::string::npos) {  // exponent, NaN, Infinity
    if (text.find_first_of("nN") != std::string::npos) return text;
    const long double scale = std::pow(10.0L, precision);
    const long double v = std::trunc(std::strtold(text.c_str(), nullptr) * scale) / scale;
    char buf[64];
    std::snprintf(buf, sizeof(buf), "%.17Lg", v);
    return std::string(buf);
  }
  size_t start = !text.empty() && (text[0] == '-' || text[0] == '+') ? 1 : 0;
  const size_t dot = text.find('.');
  std::string whole = text.substr(start, dot == std::string::npos ? std::string::npos : dot - start);
  std::string fraction = dot == std::string::npos ? "" : text.substr(dot + 1);
  for (char c : whole + fraction) {
    if (!absl::ascii_isdigit(static_cast<unsigned char>(c))) return std::nullopt;
  }
  if (precision >= 0) {
    if (fraction.size() > static_cast<size_t>(precision)) fraction.resize(precision);
  } else {
    fraction.clear();
    const size_t zeroed = std::min(whole.size(), static_cast<size_t>(-precision));
    whole.replace(whole.size() - zeroed, zeroed, zeroed, '0');
  }
  if (whole.empty()) whole = "0";
  std::string out = whole;
  if (!fraction.empty()) out += "." + fraction;
  const bool zero = out.find_first_not_of("0.") == std::string::npos;
  return (text[0] == '-' && !zero ? "-" : "") + out;
}

// Made-up names, chosen by a hash: common in many countries, none a real person's by intent.
constexpr const char* kFirstNames[] = {
    "Ada",    "Aiko",   "Amara", "Anna",  "Arjun",  "Bea",    "Carlos", "Chen",   "Dana",
    "Diego",  "Elena",  "Emil",  "Farah", "Femi",   "Grace",  "Hana",   "Ivan",   "Jonas",
    "Kai",    "Lea",    "Leila", "Luca",  "Maya",   "Mei",    "Mila",   "Nadia",  "Nils",
    "Noor",   "Omar",   "Oskar", "Pia",   "Priya",  "Rafael", "Rosa",   "Sami",   "Sara",
    "Sofia",  "Tariq",  "Theo",  "Uma",   "Vera",   "Wren",   "Yara",   "Yusuf",  "Zoe",
    "Bruno",  "Clara",  "Ines",  "Joao",  "Kofi",   "Lina",   "Marek",  "Nia",    "Pavel",
    "Quinn",  "Rahel",  "Sven",  "Tomas", "Valentina", "Wei",  "Ximena", "Yuki",  "Zainab",
    "Alma"};
constexpr const char* kLastNames[] = {
    "Abe",     "Adeyemi", "Alves",   "Berg",     "Bianchi", "Costa",   "Dahl",    "Diaz",
    "Eriksen", "Faber",   "Garcia",  "Haddad",   "Ito",     "Jensen",  "Kaur",    "Kim",
    "Kowalski", "Larsen", "Lopez",   "Mensah",   "Moreau",  "Novak",   "Nunez",   "Okafor",
    "Olsen",   "Park",    "Petrov",  "Quispe",   "Rossi",   "Sato",    "Schmidt", "Silva",
    "Singh",   "Sousa",   "Tanaka",  "Torres",   "Ueda",    "Varga",   "Vogel",   "Wang",
    "Weber",   "Xu",      "Yilmaz",  "Young",    "Zhang",   "Ziegler", "Afolabi", "Brandt",
    "Castro",  "Duarte",  "Eze",     "Fischer",  "Gomez",   "Horvat",  "Ibrahim", "Jovanovic",
    "Keller",  "Lind",    "Moreno",  "Nakamura", "Ortiz",   "Pereira", "Reyes",   "Sandberg"};

// The first byte pairs of a hex digest as numbers, to choose with.
uint32_t HexWord(const std::string& hex, size_t at) {
  uint32_t v = 0;
  for (size_t i = at; i < at + 8 && i < hex.size(); ++i) {
    v = v * 16 + static_cast<uint32_t>(hex[i] <= '9' ? hex[i] - '0' : hex[i] - 'a' + 10);
  }
  return v;
}

// The characters a varchar(n)/char(n) column holds (0: no limit).
size_t CharLimit(const Column& column) {
  if ((column.type_oid == oid::kVarchar || column.type_oid == oid::kBpchar) &&
      column.type_modifier > 4) {
    return static_cast<size_t>(column.type_modifier - 4);
  }
  return 0;
}

// Whether a hash (64 hex digits) would be cut to fit `column`.
bool HashWouldBeCut(const Column& column) {
  const size_t limit = CharLimit(column);
  return limit > 0 && limit < 64;
}

class MaskTransform : public Transform {
 public:
  MaskTransform(TransformContext context, std::shared_ptr<const MaskOptions> options)
      : context_(std::move(context)), options_(std::move(options)), hmac_(options_->salt) {}

  bool Touches(const TableSchema& table) const override {
    return PatternsCover(options_->tables, table);
  }
  bool Changes(const TableSchema& table, std::string_view column) const override {
    if (!Touches(table)) return false;
    for (const MaskColumn& rule : options_->columns) {
      if (rule.column == column) return rule.rule != MaskRule::kKeep;
    }
    return false;
  }

  absl::StatusOr<bool> Apply(Change* change) override {
    if (change->op == Op::kDdl && change->ddl != nullptr) {
      if (absl::Status s =
              CheckStillCovered(options_->tables, *change, Cat(context_.where, " (mask)"));
          !s.ok()) {
        return s;
      }
      if (options_->strict) {
        if (absl::Status s = CheckStrict(*change->ddl); !s.ok()) return s;
      }
      return true;
    }
    if (change->table == nullptr || change->op == Op::kDdl || change->op == Op::kTruncate ||
        change->op == Op::kMessage) {
      return true;
    }
    absl::StatusOr<const Plan*> plan = PlanFor(change->table);
    if (!plan.ok()) return plan.status();
    if ((*plan)->steps.empty()) return true;
    for (Row* row : {&change->after, &change->before}) {
      if (row->size() != change->table->columns.size()) continue;  // no such image
      for (const Step& step : (*plan)->steps) {
        if (absl::Status s = Mask(step, &(*row)[step.index]); !s.ok()) return s;
      }
    }
    return true;
  }

 private:
  struct Step {
    size_t index;
    const MaskColumn* rule;
    size_t limit;  // characters the column holds; 0: any
    const Column* column;
  };
  struct Plan {
    TableSchemaPtr hold;  // keeps the key's address from being reused
    std::vector<Step> steps;
  };

  // Under `strict`, a schema change that gives a covered table a column without a rule stops
  // the pipeline before the column reaches a sink.
  absl::Status CheckStrict(const DdlCommand& ddl) const {
    if (!ddl.table || !ddl.IsTable() ||
        !PatternsCover(options_->tables, ddl.table->schema, ddl.table->name)) {
      return absl::OkStatus();
    }
    for (const DdlColumn& c : ddl.table->columns) {
      if (!HasRule(c.name)) return Unruled(ddl.table->schema + "." + ddl.table->name, c.name);
    }
    return absl::OkStatus();
  }

  bool HasRule(const std::string& column) const {
    return std::any_of(options_->columns.begin(), options_->columns.end(),
                       [&](const MaskColumn& c) { return c.column == column; });
  }

  absl::Status Unruled(const std::string& table, const std::string& column) const {
    return absl::FailedPreconditionError(
        Cat(context_.where, " (mask, strict): ", table, ".", column,
            " has no rule, so nothing of the table goes out: add `", column,
            ": keep` if it holds no personal data, else a rule that masks it, and restart"));
  }

  absl::StatusOr<const Plan*> PlanFor(const TableSchemaPtr& table) {
    auto it = plans_.find(table.get());
    if (it != plans_.end()) return &it->second;
    if (plans_.size() >= kMaxPlans) plans_.clear();
    Plan plan{table, {}};
    if (Touches(*table)) {
      const std::vector<size_t> key = table->RowKeyColumns();
      if (options_->strict) {
        for (const Column& c : table->columns) {
          if (!HasRule(c.name)) return Unruled(table->QualifiedName(), c.name);
        }
      }
      bool exact = false;  // named by schema.table, not only by schema.*
      for (const TableRef& t : options_->tables) {
        exact = exact || (!t.is_schema() && t.Covers(TableRef{table->schema, table->name}));
      }
      for (const MaskColumn& rule : options_->columns) {
        size_t i = 0;
        while (i < table->columns.size() && table->columns[i].name != rule.column) ++i;
        if (i == table->columns.size()) {
          if (!exact) continue;  // a schema's tables need not all have it
          return absl::FailedPreconditionError(Cat(context_.where, " (mask): table ",
                                                   table->QualifiedName(), " has no column '",
                                                   rule.column, "'"));
        }
        const Column& column = table->columns[i];
        if (!RuleFits(rule.rule, column.type_oid)) {
          return absl::FailedPreconditionError(
              Cat(context_.where, " (mask): ", table->QualifiedName(), ".", rule.column, ": rule ",
                  RuleName(rule.rule), " applies to ", RuleTypes(rule.rule),
                  "; use null for a column of another type"));
        }
        if (rule.rule == MaskRule::kKeep) continue;
        const bool in_key = std::find(key.begin(), key.end(), i) != key.end();
        if (in_key && rule.rule == MaskRule::kHash && HashWouldBeCut(column)) {
          return absl::FailedPreconditionError(
              Cat(context_.where, " (mask): ", table->QualifiedName(), ".", rule.column,
                  " is part of the key and holds fewer than 64 characters: its hash would be cut "
                  "and two rows could get one key; widen the column or drop it from the key"));
        }
        if (in_key && rule.rule != MaskRule::kHash && rule.rule != MaskRule::kEmail) {
          return absl::FailedPreconditionError(
              Cat(context_.where, " (mask): ", table->QualifiedName(), ".", rule.column,
                  " is part of the key: rule ", RuleName(rule.rule),
                  " could give two rows the same key; use hash"));
        }
        plan.steps.push_back(Step{i, &rule, CharLimit(column), &column});
      }
    }
    return &plans_.emplace(table.get(), std::move(plan)).first->second;
  }

  absl::Status Mask(const Step& step, Value* value) {
    if (value->is_null() || value->is_unchanged_toast()) return absl::OkStatus();
    if (!hmac_.ok()) {
      return absl::InternalError(Cat(context_.where, " (mask): OpenSSL offers no SHA-256"));
    }
    const MaskColumn& rule = *step.rule;
    std::string masked;
    switch (rule.rule) {
      case MaskRule::kKeep:
        return absl::OkStatus();
      case MaskRule::kNull:
        *value = Value::Null(value->type_oid);
        return absl::OkStatus();
      case MaskRule::kTruncateTime:
      case MaskRule::kTruncateNumber: {
        const std::string text = *ValueText(*value, *step.column);
        std::optional<std::string> cut = rule.rule == MaskRule::kTruncateTime
                                             ? TruncateTime(text, rule.unit)
                                             : TruncateNumber(text, rule.precision);
        if (!cut) {  // the value itself stays out of the message: it is what the mask hides
          return absl::FailedPreconditionError(
              Cat(context_.where, " (mask): ", rule.column, ": a value of ", text.size(),
                  " characters does not read as a ",
                  rule.rule == MaskRule::kTruncateTime ? "date or timestamp" : "number",
                  " (years before 1 or after 9999 are not truncated)"));
        }
        *value = Value::Text(value->type_oid, *std::move(cut));
        return absl::OkStatus();
      }
      case MaskRule::kFakeName: {
        const std::string h = Hash(value->data);
        masked = Cat(kFirstNames[HexWord(h, 0) % std::size(kFirstNames)], " ",
                     kLastNames[HexWord(h, 8) % std::size(kLastNames)]);
        break;
      }
      case MaskRule::kFakePhone: {
        std::string h = Hash(value->data);
        masked = value->data;
        size_t next = 0;
        for (char& c : masked) {
          // Letters too (1-800-FLOWERS): only punctuation and spaces keep the format.
          if (!absl::ascii_isalnum(static_cast<unsigned char>(c))) continue;
          if (next + 8 > h.size()) h += Hash(h);  // more digits than one digest gives
          c = static_cast<char>('0' + HexWord(h, next) % 10);
          next += 2;
        }
        break;
      }
      case MaskRule::kRedact:
        masked = options_->redact_with;
        break;
      case MaskRule::kHash:
        masked = Hash(value->data);
        break;
      case MaskRule::kEmail: {
        size_t at = value->data.rfind('@');
        std::string_view local = at == std::string::npos
                                     ? std::string_view(value->data)
                                     : std::string_view(value->data).substr(0, at);
        masked = Hash(local).substr(0, 16);
        if (at != std::string::npos) masked += value->data.substr(at);
        break;
      }
      case MaskRule::kPartial: {
        std::vector<std::string_view> chars = Characters(value->data);
        const size_t n = chars.size();
        for (size_t i = 0; i < n; ++i) {
          bool keep = i < static_cast<size_t>(rule.keep_first) ||
                      i + static_cast<size_t>(rule.keep_last) >= n;
          // Never the whole value: a value too short for both ends is all stars.
          if (n <= static_cast<size_t>(rule.keep_first + rule.keep_last)) keep = false;
          masked.append(keep ? chars[i] : std::string_view("*"));
        }
        break;
      }
    }
    if (step.limit > 0) {
      std::vector<std::string_view> chars = Characters(masked);
      if (chars.size() > step.limit) {
        masked.resize(static_cast<size_t>(chars[step.limit].data() - masked.data()));
      }
    }
    // Text types: the text form and the binary send form are the same bytes.
    value->data = std::move(masked);
    return absl::OkStatus();
  }

  // The salted hash of `value`: 64 lower-case hexadecimal digits.
  std::string Hash(std::string_view value) { return LowerHex(hmac_.Mac(value)); }

  const TransformContext context_;
  const std::shared_ptr<const MaskOptions> options_;
  absl::flat_hash_map<const TableSchema*, Plan> plans_;
  HmacSha256Key hmac_;
};

class MaskFactory : public TransformFactoryOf<MaskOptions> {
 public:
  std::string_view type() const override { return "mask"; }
  std::string_view help() const override {
    return "Hides column values of the tables it names before any sink sees them: "
           "{table: public.customers, columns: {email: hash, phone: redact}}.";
  }

 protected:
  const OptionTable<MaskOptions>& table() const override {
    static const auto* table = new OptionTable<MaskOptions>({
        ListOption("table", &MaskOptions::table)
            .Required()
            .Help("The tables: schema.table or schema.* (every table of the schema), one or a "
                  "list."),
        CustomOption("columns", OptionType::kMap, ReadRules, &MaskOptions::columns)
            .Required()
            .Help("column: rule. redact (a constant), null, hash (HMAC-SHA-256 with the salt, "
                  "hex: deterministic), partial or partial(F,L) (keep the first F and last L "
                  "characters, stars between; 1 and 2 by default), email (keep the domain, the "
                  "local part hashed), fake_name and fake_phone (deterministic made-up values), "
                  "truncate(year|month|day|hour|minute) for dates, truncate(N) for numbers (N "
                  "decimals; negative zeroes digits), keep (not sensitive, for strict)."),
        StringOption("salt", &MaskOptions::salt)
            .DefaultText("$PGFLOW_MASK_SALT")
            .Help("The secret key of hash, email, fake_name and fake_phone (write ${VAR}); "
                  "required by them."),
        StringOption("redact_with", &MaskOptions::redact_with)
            .Help("What redact writes in place of a value."),
        BoolOption("strict", &MaskOptions::strict)
            .Help("Every column of the tables needs a rule (keep for one that is not "
                  "sensitive); a table, or a schema change, with a column without one stops the "
                  "pipeline before it goes out."),
    });
    return *table;
  }

  absl::Status Check(const ConfigNode& node, MaskOptions* options) const override {
    if (absl::Status s = ParseTablePatterns(node, "table", options->table, &options->tables);
        !s.ok()) {
      return s;
    }
    bool salted = false;
    for (const MaskColumn& c : options->columns) {
      salted = salted || c.rule == MaskRule::kHash || c.rule == MaskRule::kEmail ||
               c.rule == MaskRule::kFakeName || c.rule == MaskRule::kFakePhone;
    }
    if (options->salt.empty()) {
      if (const char* env = std::getenv("PGFLOW_MASK_SALT"); env != nullptr) options->salt = env;
    }
    if (salted && options->salt.empty()) {
      return node.Error(
          "hash, email, fake_name and fake_phone need a secret salt: set `salt: ${MASK_SALT}` or PGFLOW_MASK_SALT (an "
          "unsalted hash of a phone number or an email is undone by trying them all)");
    }
    return absl::OkStatus();
  }

  std::unique_ptr<Transform> Build(const TransformContext& context,
                                   std::shared_ptr<const MaskOptions> options) const override {
    return std::make_unique<MaskTransform>(context, std::move(options));
  }
};

}  // namespace

void RegisterMaskTransform() { RegisterTransformFactory(std::make_unique<MaskFactory>()); }

}  // namespace pgflow
