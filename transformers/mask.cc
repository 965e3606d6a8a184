#include "transformers/mask.h"

#include <openssl/evp.h>
#include <cstdlib>
#include <cstring>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "engine/str_cat.h"
#include "transformers/table_patterns.h"

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
      columns->push_back(MaskColumn{column, MaskRule::kNull});
      continue;
    }
    absl::StatusOr<std::string> text = value.AsString();
    if (!text.ok()) return text.status();
    MaskColumn rule{column};
    if (*text == "redact") {
      rule.rule = MaskRule::kRedact;
    } else if (*text == "null") {
      rule.rule = MaskRule::kNull;
    } else if (*text == "hash") {
      rule.rule = MaskRule::kHash;
    } else if (*text == "email") {
      rule.rule = MaskRule::kEmail;
    } else if (ParsePartial(*text, &rule.keep_first, &rule.keep_last)) {
      rule.rule = MaskRule::kPartial;
    } else {
      return value.Error(Cat("unknown mask rule '", *text,
                             "' (expected redact, null, hash, partial, partial(F,L) or email)"));
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

// The characters a varchar(n)/char(n) column holds (0: no limit).
size_t CharLimit(const Column& column) {
  if ((column.type_oid == oid::kVarchar || column.type_oid == oid::kBpchar) &&
      column.type_modifier > 4) {
    return static_cast<size_t>(column.type_modifier - 4);
  }
  return 0;
}

class MaskTransform : public Transform {
 public:
  MaskTransform(TransformContext context, std::shared_ptr<const MaskOptions> options)
      : context_(std::move(context)), options_(std::move(options)), hmac_(options_->salt) {}

  bool Touches(const TableSchema& table) const override {
    return PatternsCover(options_->tables, table);
  }

  absl::StatusOr<bool> Apply(Change* change) override {
    if (change->table == nullptr || change->op == Op::kDdl || change->op == Op::kTruncate ||
        change->op == Op::kMessage) {
      return true;
    }
    absl::StatusOr<const Plan*> plan = PlanFor(change->table);
    if (!plan.ok()) return plan.status();
    if ((*plan)->steps.empty()) return true;
    for (Row* row : {&change->after, &change->before}) {
      if (row->size() != change->table->columns.size()) continue;  // no such image
      for (const Step& step : (*plan)->steps) Mask(step, &(*row)[step.index]);
    }
    return true;
  }

 private:
  struct Step {
    size_t index;
    const MaskColumn* rule;
    size_t limit;  // characters the column holds; 0: any
  };
  struct Plan {
    TableSchemaPtr hold;  // keeps the key's address from being reused
    std::vector<Step> steps;
  };

  absl::StatusOr<const Plan*> PlanFor(const TableSchemaPtr& table) {
    auto it = plans_.find(table.get());
    if (it != plans_.end()) return &it->second;
    if (plans_.size() >= kMaxPlans) plans_.clear();
    Plan plan{table, {}};
    if (Touches(*table)) {
      const std::vector<size_t> key = table->RowKeyColumns();
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
        if (rule.rule != MaskRule::kNull && !IsTextType(column.type_oid)) {
          return absl::FailedPreconditionError(
              Cat(context_.where, " (mask): ", table->QualifiedName(), ".", rule.column, ": rule ",
                  RuleName(rule.rule),
                  " applies to text columns (text, varchar, char); use null for a column of "
                  "another type"));
        }
        const bool in_key = std::find(key.begin(), key.end(), i) != key.end();
        if (in_key && (rule.rule == MaskRule::kNull || rule.rule == MaskRule::kRedact)) {
          return absl::FailedPreconditionError(
              Cat(context_.where, " (mask): ", table->QualifiedName(), ".", rule.column,
                  " is part of the key: rule ", RuleName(rule.rule),
                  " would give every row the same key; use hash"));
        }
        plan.steps.push_back(Step{i, &rule, CharLimit(column)});
      }
    }
    return &plans_.emplace(table.get(), std::move(plan)).first->second;
  }

  void Mask(const Step& step, Value* value) {
    if (value->is_null() || value->is_unchanged_toast()) return;
    const MaskColumn& rule = *step.rule;
    std::string masked;
    switch (rule.rule) {
      case MaskRule::kNull:
        *value = Value::Null(value->type_oid);
        return;
      case MaskRule::kRedact:
        masked = options_->redact_with;
        break;
      case MaskRule::kHash:
        masked = hmac_.Hex(value->data);
        break;
      case MaskRule::kEmail: {
        size_t at = value->data.rfind('@');
        std::string_view local = at == std::string::npos
                                     ? std::string_view(value->data)
                                     : std::string_view(value->data).substr(0, at);
        masked = hmac_.Hex(local).substr(0, 16);
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
  }

  const TransformContext context_;
  const std::shared_ptr<const MaskOptions> options_;
  absl::flat_hash_map<const TableSchema*, Plan> plans_;
  HmacSha256 hmac_;
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
                  "local part hashed). All but null apply to text columns."),
        StringOption("salt", &MaskOptions::salt)
            .DefaultText("$PGFLOW_MASK_SALT")
            .Help("The secret key of hash and email (write ${VAR}); required by them."),
        StringOption("redact_with", &MaskOptions::redact_with)
            .Help("What redact writes in place of a value."),
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
      salted = salted || c.rule == MaskRule::kHash || c.rule == MaskRule::kEmail;
    }
    if (options->salt.empty()) {
      if (const char* env = std::getenv("PGFLOW_MASK_SALT"); env != nullptr) options->salt = env;
    }
    if (salted && options->salt.empty()) {
      return node.Error(
          "hash and email need a secret salt: set `salt: ${MASK_SALT}` or PGFLOW_MASK_SALT (an "
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

struct HmacSha256::State {
  EVP_MD_CTX* inner = EVP_MD_CTX_new();  // SHA-256 having absorbed key ^ ipad
  EVP_MD_CTX* outer = EVP_MD_CTX_new();  // SHA-256 having absorbed key ^ opad
  EVP_MD_CTX* work = EVP_MD_CTX_new();
  ~State() {
    EVP_MD_CTX_free(inner);
    EVP_MD_CTX_free(outer);
    EVP_MD_CTX_free(work);
  }
};

HmacSha256::HmacSha256(std::string_view key) : state_(std::make_unique<State>()) {
  constexpr size_t kBlock = 64;  // SHA-256's block size
  unsigned char block[kBlock] = {};
  if (key.size() > kBlock) {
    unsigned int n = 0;
    EVP_Digest(key.data(), key.size(), block, &n, EVP_sha256(), nullptr);
  } else {
    std::memcpy(block, key.data(), key.size());
  }
  unsigned char pad[kBlock];
  for (auto [ctx, byte] : {std::pair{state_->inner, 0x36}, std::pair{state_->outer, 0x5c}}) {
    for (size_t i = 0; i < kBlock; ++i) pad[i] = block[i] ^ byte;
    EVP_DigestInit_ex(ctx, EVP_sha256(), nullptr);
    EVP_DigestUpdate(ctx, pad, kBlock);
  }
}

HmacSha256::~HmacSha256() = default;

std::string HmacSha256::Hex(std::string_view value) {
  unsigned char inner[EVP_MAX_MD_SIZE];
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int inner_length = 0;
  unsigned int length = 0;
  EVP_MD_CTX_copy_ex(state_->work, state_->inner);
  EVP_DigestUpdate(state_->work, value.data(), value.size());
  EVP_DigestFinal_ex(state_->work, inner, &inner_length);
  EVP_MD_CTX_copy_ex(state_->work, state_->outer);
  EVP_DigestUpdate(state_->work, inner, inner_length);
  EVP_DigestFinal_ex(state_->work, digest, &length);
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out(2 * length, '0');
  for (unsigned int i = 0; i < length; ++i) {
    out[2 * i] = kHex[digest[i] >> 4];
    out[2 * i + 1] = kHex[digest[i] & 15];
  }
  return out;
}

std::string HmacSha256Hex(std::string_view salt, std::string_view value) {
  return HmacSha256(salt).Hex(value);
}

void RegisterMaskTransform() { RegisterTransformFactory(std::make_unique<MaskFactory>()); }

}  // namespace pgflow
