#include "transformers/filter_expression.h"

#include <cctype>
#include <cmath>
#include <cstdlib>
#include <optional>

#include <nlohmann/json.hpp>
#include "absl/strings/ascii.h"
#include "absl/time/time.h"

#include "engine/str_cat.h"
#include "schemas/json_encoding.h"
#include "transformers/value_text.h"

namespace pgflow {
namespace {

// ---------------------------------------------------------------------------------------------
// Tokens.

enum class Tok { kEnd, kIdent, kNumber, kString, kOp, kLParen, kRParen, kComma, kDot };

struct Token {
  Tok kind = Tok::kEnd;
  std::string text;  // identifiers lower-cased unless quoted; strings unescaped
  size_t at = 0;     // 1-based character position, for errors
  bool quoted = false;
};

absl::StatusOr<std::vector<Token>> Lex(std::string_view s) {
  std::vector<Token> out;
  size_t i = 0;
  auto error = [&](size_t at, std::string_view what) {
    return absl::InvalidArgumentError(Cat("at character ", std::to_string(at + 1), ": ", what));
  };
  while (i < s.size()) {
    char c = s[i];
    if (std::isspace(static_cast<unsigned char>(c))) {
      ++i;
      continue;
    }
    Token t;
    t.at = i + 1;
    if (std::isalpha(static_cast<unsigned char>(c)) || c == '_') {
      size_t j = i;
      while (j < s.size() && (std::isalnum(static_cast<unsigned char>(s[j])) || s[j] == '_')) ++j;
      t.kind = Tok::kIdent;
      t.text = absl::AsciiStrToLower(std::string(s.substr(i, j - i)));
      i = j;
    } else if (c == '"') {
      size_t j = i + 1;
      while (true) {
        if (j >= s.size()) return error(i, "unterminated quoted name");
        if (s[j] == '"') {
          if (j + 1 < s.size() && s[j + 1] == '"') {
            t.text += '"';
            j += 2;
            continue;
          }
          break;
        }
        t.text += s[j++];
      }
      t.kind = Tok::kIdent;
      t.quoted = true;
      i = j + 1;
    } else if (std::isdigit(static_cast<unsigned char>(c)) ||
               (c == '.' && i + 1 < s.size() &&
                std::isdigit(static_cast<unsigned char>(s[i + 1])))) {
      size_t j = i;
      while (j < s.size() &&
             (std::isdigit(static_cast<unsigned char>(s[j])) || s[j] == '.' || s[j] == 'e' ||
              s[j] == 'E' ||
              ((s[j] == '+' || s[j] == '-') && (s[j - 1] == 'e' || s[j - 1] == 'E')))) {
        ++j;
      }
      t.kind = Tok::kNumber;
      t.text = std::string(s.substr(i, j - i));
      char* end = nullptr;
      std::strtold(t.text.c_str(), &end);
      if (end == nullptr || *end != '\0') return error(i, Cat("malformed number '", t.text, "'"));
      i = j;
    } else if (c == '\'') {
      size_t j = i + 1;
      while (true) {
        if (j >= s.size()) return error(i, "unterminated string (strings are in single quotes)");
        if (s[j] == '\'') {
          if (j + 1 < s.size() && s[j + 1] == '\'') {
            t.text += '\'';
            j += 2;
            continue;
          }
          break;
        }
        t.text += s[j++];
      }
      t.kind = Tok::kString;
      i = j + 1;
    } else if (c == '(') {
      t.kind = Tok::kLParen;
      ++i;
    } else if (c == ')') {
      t.kind = Tok::kRParen;
      ++i;
    } else if (c == ',') {
      t.kind = Tok::kComma;
      ++i;
    } else if (c == '.') {
      t.kind = Tok::kDot;
      ++i;
    } else {
      static constexpr std::string_view kOps[] = {
          "->>", "->", "<>", "!=", "<=", ">=", "=", "<", ">"};
      bool found = false;
      for (std::string_view op : kOps) {
        if (s.substr(i, op.size()) == op) {
          t.kind = Tok::kOp;
          t.text = std::string(op == "!=" ? "<>" : op);
          i += op.size();
          found = true;
          break;
        }
      }
      if (!found) return error(i, Cat("unexpected '", std::string(1, c), "'"));
    }
    out.push_back(std::move(t));
  }
  Token end;
  end.at = s.size() + 1;
  out.push_back(end);
  return out;
}

// ---------------------------------------------------------------------------------------------
// Values as the predicate compares them.

enum class Domain { kNone, kText, kNumber, kBool, kTime };

Domain DomainOf(uint32_t type_oid) {
  switch (type_oid) {
    case oid::kInt2:
    case oid::kInt4:
    case oid::kInt8:
    case oid::kFloat4:
    case oid::kFloat8:
    case oid::kNumeric:
    case oid::kOid:
      return Domain::kNumber;
    case oid::kBool:
      return Domain::kBool;
    case oid::kDate:
    case oid::kTimestamp:
    case oid::kTimestamptz:
      return Domain::kTime;
    default:
      return Domain::kText;
  }
}

struct Datum {
  bool null = true;
  std::string text;
  Domain domain = Domain::kNone;  // a column's (or a path's: text); kNone for a literal
  bool is_number_literal = false;
  bool is_bool_literal = false;
};

enum class Tri { kFalse, kTrue, kUnknown };
Tri Not(Tri t) { return t == Tri::kUnknown ? t : t == Tri::kTrue ? Tri::kFalse : Tri::kTrue; }
Tri FromBool(bool b) { return b ? Tri::kTrue : Tri::kFalse; }

std::optional<long double> AsNumber(const std::string& text) {
  char* end = nullptr;
  long double v = std::strtold(text.c_str(), &end);
  if (text.empty() || end == nullptr || *end != '\0') return std::nullopt;
  return v;
}

std::optional<bool> AsBool(const std::string& text) { return ParseBoolText(text); }
std::optional<absl::Time> AsTime(const std::string& text) { return ParseTimeText(text); }

// The domain two sides compare in: a column's, else what the literals are.
Domain Common(const Datum& a, const Datum& b) {
  if (a.domain != Domain::kNone) return a.domain;
  if (b.domain != Domain::kNone) return b.domain;
  if (a.is_number_literal && b.is_number_literal) return Domain::kNumber;
  if (a.is_bool_literal && b.is_bool_literal) return Domain::kBool;
  return Domain::kText;
}

// <0, 0, >0; nullopt when a side does not read as the domain (unknown).
std::optional<int> Compare(const Datum& a, const Datum& b) {
  switch (Common(a, b)) {
    case Domain::kNumber: {
      std::optional<long double> x = AsNumber(a.text), y = AsNumber(b.text);
      if (!x || !y) return std::nullopt;
      return *x < *y ? -1 : *x > *y ? 1 : 0;
    }
    case Domain::kBool: {
      std::optional<bool> x = AsBool(a.text), y = AsBool(b.text);
      if (!x || !y) return std::nullopt;
      return static_cast<int>(*x) - static_cast<int>(*y);
    }
    case Domain::kTime: {
      std::optional<absl::Time> x = AsTime(a.text), y = AsTime(b.text);
      if (!x || !y) return std::nullopt;
      return *x < *y ? -1 : *x > *y ? 1 : 0;
    }
    default:
      return a.text.compare(b.text) < 0 ? -1 : a.text == b.text ? 0 : 1;
  }
}

// SQL LIKE: % any run, _ any one character (bytes), no escape character.
bool Like(std::string_view s, std::string_view p) {
  size_t si = 0, pi = 0, star = std::string_view::npos, mark = 0;
  while (si < s.size()) {
    if (pi < p.size() && (p[pi] == '_' || p[pi] == s[si])) {
      ++si;
      ++pi;
    } else if (pi < p.size() && p[pi] == '%') {
      star = pi++;
      mark = si;
    } else if (star != std::string_view::npos) {
      pi = star + 1;
      si = ++mark;
    } else {
      return false;
    }
  }
  while (pi < p.size() && p[pi] == '%') ++pi;
  return pi == p.size();
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// The tree.

struct FilterExpression::Node {
  enum class Kind {
    kOr,
    kAnd,
    kNot,
    kCompare,
    kIn,
    kBetween,
    kLike,
    kIsNull,
    kChanged,
    kConst,
    kColumn,
    kLiteral,
  } kind = Kind::kConst;
  std::vector<std::shared_ptr<const Node>> children;
  std::string op;        // kCompare
  bool negated = false;  // kIn, kBetween, kLike, kIsNull
  bool truth = false;    // kConst
  // kColumn: the column, which row, and a json path (each step: key, and whether ->>).
  std::string column;
  bool old = false;
  std::vector<std::pair<std::string, bool>> path;
  // kLiteral.
  Datum literal;
};

namespace {

using Node = FilterExpression::Node;
using NodePtr = std::shared_ptr<const Node>;

Node Of(Node::Kind kind) {
  Node node;
  node.kind = kind;
  return node;
}

class Parser {
 public:
  explicit Parser(std::vector<Token> tokens) : tokens_(std::move(tokens)) {}

  absl::StatusOr<NodePtr> Parse() {
    absl::StatusOr<NodePtr> root = Or();
    if (!root.ok()) return root;
    if (Peek().kind != Tok::kEnd) return Error(Peek(), "expected and, or, or the end");
    return root;
  }
  std::vector<std::string> columns;

 private:
  const Token& Peek() const { return tokens_[pos_]; }
  const Token& Next() { return tokens_[pos_ < tokens_.size() - 1 ? pos_++ : pos_]; }
  bool IsWord(const Token& t, std::string_view word) const {
    return t.kind == Tok::kIdent && !t.quoted && t.text == word;
  }
  bool Accept(std::string_view word) {
    if (!IsWord(Peek(), word)) return false;
    ++pos_;
    return true;
  }
  absl::Status Error(const Token& t, std::string_view what) const {
    std::string got =
        t.kind == Tok::kEnd ? "the end" : Cat("'", t.text.empty() ? "?" : t.text, "'");
    if (t.kind == Tok::kLParen) got = "'('";
    if (t.kind == Tok::kRParen) got = "')'";
    if (t.kind == Tok::kComma) got = "','";
    return absl::InvalidArgumentError(
        Cat("at character ", std::to_string(t.at), ": ", what, ", got ", got));
  }
  NodePtr Make(Node node) { return std::make_shared<const Node>(std::move(node)); }

  absl::StatusOr<NodePtr> Or() {
    absl::StatusOr<NodePtr> left = And();
    if (!left.ok()) return left;
    Node node = Of(Node::Kind::kOr);
    node.children.push_back(*left);
    while (Accept("or")) {
      absl::StatusOr<NodePtr> right = And();
      if (!right.ok()) return right;
      node.children.push_back(*right);
    }
    return node.children.size() == 1 ? node.children[0] : Make(std::move(node));
  }

  absl::StatusOr<NodePtr> And() {
    absl::StatusOr<NodePtr> left = NotExpr();
    if (!left.ok()) return left;
    Node node = Of(Node::Kind::kAnd);
    node.children.push_back(*left);
    while (Accept("and")) {
      absl::StatusOr<NodePtr> right = NotExpr();
      if (!right.ok()) return right;
      node.children.push_back(*right);
    }
    return node.children.size() == 1 ? node.children[0] : Make(std::move(node));
  }

  absl::StatusOr<NodePtr> NotExpr() {
    if (Accept("not")) {
      absl::StatusOr<NodePtr> inner = NotExpr();
      if (!inner.ok()) return inner;
      Node node = Of(Node::Kind::kNot);
      node.children.push_back(*inner);
      return Make(std::move(node));
    }
    return Predicate();
  }

  absl::StatusOr<NodePtr> Predicate() {
    if (Peek().kind == Tok::kLParen) {
      // A parenthesised condition (operands are never parenthesised here).
      Next();
      absl::StatusOr<NodePtr> inner = Or();
      if (!inner.ok()) return inner;
      if (const Token& t = Next(); t.kind != Tok::kRParen) return Error(t, "expected ')'");
      return inner;
    }
    if (IsWord(Peek(), "changed") && tokens_[pos_ + 1].kind == Tok::kLParen) {
      pos_ += 2;
      const Token& name = Next();
      if (name.kind != Tok::kIdent) return Error(name, "expected a column name in changed()");
      if (const Token& t = Next(); t.kind != Tok::kRParen) return Error(t, "expected ')'");
      Node node = Of(Node::Kind::kChanged);
      node.column = name.text;
      columns.push_back(name.text);
      return Make(std::move(node));
    }
    if (IsWord(Peek(), "true") || IsWord(Peek(), "false")) {
      const Token& t = Peek();
      const Token& after = tokens_[pos_ + 1];
      if (after.kind == Tok::kEnd || after.kind == Tok::kRParen || IsWord(after, "and") ||
          IsWord(after, "or")) {
        Next();
        Node node = Of(Node::Kind::kConst);
        node.truth = t.text == "true";
        return Make(std::move(node));
      }
    }
    absl::StatusOr<NodePtr> left = Operand();
    if (!left.ok()) return left;
    if (Accept("is")) {
      Node node = Of(Node::Kind::kIsNull);
      node.negated = Accept("not");
      if (!Accept("null")) return Error(Peek(), "expected null after is [not]");
      node.children.push_back(*left);
      return Make(std::move(node));
    }
    const bool negated = Accept("not");
    if (Accept("in")) {
      Node node = Of(Node::Kind::kIn);
      node.negated = negated;
      node.children.push_back(*left);
      if (const Token& t = Next(); t.kind != Tok::kLParen) return Error(t, "expected '(' after in");
      do {
        absl::StatusOr<NodePtr> item = Operand();
        if (!item.ok()) return item;
        node.children.push_back(*item);
      } while (Peek().kind == Tok::kComma && (Next(), true));
      if (const Token& t = Next(); t.kind != Tok::kRParen) return Error(t, "expected ',' or ')'");
      return Make(std::move(node));
    }
    if (Accept("between")) {
      absl::StatusOr<NodePtr> low = Operand();
      if (!low.ok()) return low;
      if (!Accept("and")) return Error(Peek(), "expected and in between ... and ...");
      absl::StatusOr<NodePtr> high = Operand();
      if (!high.ok()) return high;
      Node node = Of(Node::Kind::kBetween);
      node.negated = negated;
      node.children = {*left, *low, *high};
      return Make(std::move(node));
    }
    if (Accept("like")) {
      absl::StatusOr<NodePtr> pattern = Operand();
      if (!pattern.ok()) return pattern;
      Node node = Of(Node::Kind::kLike);
      node.negated = negated;
      node.children = {*left, *pattern};
      return Make(std::move(node));
    }
    if (negated) return Error(Peek(), "expected in, between or like after not");
    if (const Token& t = Peek();
        t.kind == Tok::kEnd || t.kind == Tok::kRParen || IsWord(t, "and") || IsWord(t, "or")) {
      // A column alone is a condition when it is a boolean one: `paid` is `paid = true`.
      Node node = Of(Node::Kind::kCompare);
      node.op = "=";
      Node truth = Of(Node::Kind::kLiteral);
      truth.literal.null = false;
      truth.literal.text = "true";
      truth.literal.is_bool_literal = true;
      node.children = {*left, Make(std::move(truth))};
      return Make(std::move(node));
    }
    if (Peek().kind != Tok::kOp || Peek().text == "->" || Peek().text == "->>") {
      return Error(Peek(), "expected a comparison (=, <>, <, <=, >, >=), in, between, like or is");
    }
    Node node = Of(Node::Kind::kCompare);
    node.op = Next().text;
    absl::StatusOr<NodePtr> right = Operand();
    if (!right.ok()) return right;
    node.children = {*left, *right};
    return Make(std::move(node));
  }

  absl::StatusOr<NodePtr> Operand() {
    const Token& t = Next();
    if (t.kind == Tok::kString || t.kind == Tok::kNumber) {
      Node node = Of(Node::Kind::kLiteral);
      node.literal.null = false;
      node.literal.text = t.text;
      node.literal.is_number_literal = t.kind == Tok::kNumber;
      return Make(std::move(node));
    }
    if (t.kind == Tok::kOp && t.text == "-") return Error(t, "expected a value");
    if (t.kind != Tok::kIdent) return Error(t, "expected a column or a value");
    if (!t.quoted && (t.text == "null" || t.text == "true" || t.text == "false")) {
      Node node = Of(Node::Kind::kLiteral);
      node.literal.null = t.text == "null";
      node.literal.text = t.text;
      node.literal.is_bool_literal = t.text != "null";
      return Make(std::move(node));
    }
    Node node = Of(Node::Kind::kColumn);
    node.column = t.text;
    if (!t.quoted && t.text == "old" && Peek().kind == Tok::kDot) {
      Next();
      const Token& name = Next();
      if (name.kind != Tok::kIdent) return Error(name, "expected a column name after old.");
      node.old = true;
      node.column = name.text;
    }
    columns.push_back(node.column);
    while (Peek().kind == Tok::kOp && (Peek().text == "->" || Peek().text == "->>")) {
      const bool as_text = Next().text == "->>";
      const Token& key = Next();
      if (key.kind != Tok::kString && key.kind != Tok::kNumber) {
        return Error(key, "expected a key ('name') or an index after -> or ->>");
      }
      node.path.emplace_back(key.text, as_text);
    }
    return Make(std::move(node));
  }

  std::vector<Token> tokens_;
  size_t pos_ = 0;
};

// ---------------------------------------------------------------------------------------------
// Evaluation.

class Evaluator {
 public:
  explicit Evaluator(const FilterExpression::Rows& rows) : rows_(rows) {}

  absl::StatusOr<Tri> Eval(const Node& n) {
    switch (n.kind) {
      case Node::Kind::kConst:
        return FromBool(n.truth);
      case Node::Kind::kOr:
      case Node::Kind::kAnd: {
        const bool is_or = n.kind == Node::Kind::kOr;
        Tri result = is_or ? Tri::kFalse : Tri::kTrue;
        for (const NodePtr& child : n.children) {
          absl::StatusOr<Tri> t = Eval(*child);
          if (!t.ok()) return t;
          if (*t == (is_or ? Tri::kTrue : Tri::kFalse)) return *t;
          if (*t == Tri::kUnknown) result = Tri::kUnknown;
        }
        return result;
      }
      case Node::Kind::kNot: {
        absl::StatusOr<Tri> t = Eval(*n.children[0]);
        if (!t.ok()) return t;
        return Not(*t);
      }
      case Node::Kind::kIsNull: {
        absl::StatusOr<Datum> d = Value(*n.children[0]);
        if (!d.ok()) return d.status();
        return FromBool(d->null != n.negated);
      }
      case Node::Kind::kCompare: {
        absl::StatusOr<Datum> a = Value(*n.children[0]);
        if (!a.ok()) return a.status();
        absl::StatusOr<Datum> b = Value(*n.children[1]);
        if (!b.ok()) return b.status();
        if (a->null || b->null) return Tri::kUnknown;
        std::optional<int> c = Compare(*a, *b);
        if (!c) return Tri::kUnknown;
        const std::string& op = n.op;
        bool r = op == "="    ? *c == 0
                 : op == "<>" ? *c != 0
                 : op == "<"  ? *c < 0
                 : op == "<=" ? *c <= 0
                 : op == ">"  ? *c > 0
                              : *c >= 0;
        return FromBool(r);
      }
      case Node::Kind::kIn: {
        absl::StatusOr<Datum> a = Value(*n.children[0]);
        if (!a.ok()) return a.status();
        if (a->null) return Tri::kUnknown;
        Tri result = Tri::kFalse;
        for (size_t i = 1; i < n.children.size(); ++i) {
          absl::StatusOr<Datum> b = Value(*n.children[i]);
          if (!b.ok()) return b.status();
          std::optional<int> c = b->null ? std::nullopt : Compare(*a, *b);
          if (c && *c == 0) {
            result = Tri::kTrue;
            break;
          }
          if (!c) result = Tri::kUnknown;
        }
        return n.negated ? Not(result) : result;
      }
      case Node::Kind::kBetween: {
        absl::StatusOr<Datum> a = Value(*n.children[0]);
        if (!a.ok()) return a.status();
        absl::StatusOr<Datum> low = Value(*n.children[1]);
        if (!low.ok()) return low.status();
        absl::StatusOr<Datum> high = Value(*n.children[2]);
        if (!high.ok()) return high.status();
        if (a->null || low->null || high->null) return Tri::kUnknown;
        std::optional<int> x = Compare(*a, *low), y = Compare(*a, *high);
        if (!x || !y) return Tri::kUnknown;
        Tri r = FromBool(*x >= 0 && *y <= 0);
        return n.negated ? Not(r) : r;
      }
      case Node::Kind::kLike: {
        absl::StatusOr<Datum> a = Value(*n.children[0]);
        if (!a.ok()) return a.status();
        absl::StatusOr<Datum> p = Value(*n.children[1]);
        if (!p.ok()) return p.status();
        if (a->null || p->null) return Tri::kUnknown;
        Tri r = FromBool(Like(a->text, p->text));
        return n.negated ? Not(r) : r;
      }
      case Node::Kind::kChanged: {
        if (rows_.after == nullptr || rows_.before == nullptr) return Tri::kTrue;
        absl::StatusOr<size_t> i = Index(n.column);
        if (!i.ok()) return i.status();
        const pgflow::Value& now = (*rows_.after)[*i];
        if (now.is_unchanged_toast()) return Tri::kFalse;  // the stream says it is the same
        const bool old_known =
            rows_.before_kind == BeforeKind::kFull ||
            (rows_.before_kind == BeforeKind::kKey && rows_.table->columns[*i].is_key);
        if (!old_known) {
          // Under REPLICA IDENTITY DEFAULT an update that kept the key sends no old row: only
          // a key column is known not to have changed.
          return FromBool(!rows_.table->columns[*i].is_key ||
                          rows_.before_kind == BeforeKind::kKey);
        }
        const pgflow::Value& was = (*rows_.before)[*i];
        return FromBool(!(was.kind == now.kind && was.data == now.data));
      }
      case Node::Kind::kColumn:
      case Node::Kind::kLiteral:
        break;
    }
    return absl::InternalError("filter: a value where a condition belongs");
  }

 private:
  absl::StatusOr<size_t> Index(const std::string& column) {
    const std::vector<Column>& columns = rows_.table->columns;
    for (size_t i = 0; i < columns.size(); ++i) {
      if (columns[i].name == column) return i;
    }
    return absl::FailedPreconditionError(
        Cat("table ", rows_.table->QualifiedName(), " has no column '", column, "'"));
  }

  absl::StatusOr<Datum> Value(const Node& n) {
    if (n.kind == Node::Kind::kLiteral) return n.literal;
    absl::StatusOr<size_t> i = Index(n.column);
    if (!i.ok()) return i.status();
    const Row* row = n.old ? rows_.before : rows_.after;
    Datum d;
    d.domain = DomainOf(rows_.table->columns[*i].type_oid);
    if (row == nullptr || row->size() <= *i) return d;  // no such row: NULL
    if (n.old && rows_.before_kind != BeforeKind::kFull &&
        !(rows_.before_kind == BeforeKind::kKey && rows_.table->columns[*i].is_key)) {
      return d;  // the old value is not known
    }
    const pgflow::Value& v = (*row)[*i];
    if (v.is_null() || v.is_unchanged_toast()) return d;
    d.null = false;
    d.text = *ValueText(v, rows_.table->columns[*i]);
    if (n.path.empty()) return d;
    nlohmann::json doc = nlohmann::json::parse(d.text, nullptr, false);
    for (const auto& [key, as_text] : n.path) {
      if (doc.is_object() && doc.contains(key)) {
        doc = doc[key];
      } else if (doc.is_array() && !key.empty() &&
                 std::all_of(key.begin(), key.end(), [](char c) { return std::isdigit(c); }) &&
                 std::stoul(key) < doc.size()) {
        doc = doc[std::stoul(key)];
      } else {
        return Datum{};  // no such path: NULL
      }
    }
    Datum out;
    out.domain = Domain::kText;  // ->> is text, as in PostgreSQL (compare numbers as numbers:
    if (doc.is_null()) return out;
    out.null = false;
    out.text = doc.is_string() && n.path.back().second ? doc.get<std::string>() : doc.dump();
    if (doc.is_number()) out.domain = Domain::kNumber;  // a JSON number compares as one)
    if (doc.is_boolean()) out.domain = Domain::kBool;
    return out;
  }

  const FilterExpression::Rows& rows_;
};

}  // namespace

absl::StatusOr<std::shared_ptr<const FilterExpression>> FilterExpression::Parse(
    std::string_view text) {
  absl::StatusOr<std::vector<Token>> tokens = Lex(text);
  if (!tokens.ok()) return tokens.status();
  Parser parser(*std::move(tokens));
  absl::StatusOr<NodePtr> root = parser.Parse();
  if (!root.ok()) return root.status();
  auto expression = std::make_shared<FilterExpression>();
  expression->text_ = std::string(text);
  expression->root_ = *std::move(root);
  expression->columns_ = std::move(parser.columns);
  return expression;
}

absl::StatusOr<bool> FilterExpression::Matches(const Rows& rows) const {
  Evaluator evaluator(rows);
  absl::StatusOr<Tri> t = evaluator.Eval(*root_);
  if (!t.ok()) return t.status();
  return *t == Tri::kTrue;
}

}  // namespace pgflow
