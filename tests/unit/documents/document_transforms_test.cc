// Transforms on joined documents (documents/document_transforms.h): mask, filter and set on
// every level of a rendered document, and the transforms refused. The renders run against a
// real PostgreSQL in tests/integration/kv_cache_test.cc.

#include "documents/document_transforms.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "cli/components.h"
#include "engine/config.h"
#include "tests/unit/documents/shop_documents.h"

namespace pgflow::documents {
namespace {

using ::testing::HasSubstr;

using testdata::kOrders;
using testdata::ShopCatalog;

// kOrders as a pipeline file's `documents:` section.
std::string DocumentsSection() {
  std::string out = "documents:";
  for (char c : std::string(kOrders)) {
    out.push_back(c);
    if (c == '\n') out += "  ";
  }
  return out + "\n";
}

// The pipeline with `transforms` (YAML list items) before a sink, parsed as a file would be.
struct Loaded {
  absl::StatusOr<PipelineConfig> config;
  TransformChain chain;
  DocumentSpec spec;
};
std::unique_ptr<Loaded> Load(const std::string& transforms) {
  RegisterComponents();
  auto setup = std::make_unique<Loaded>();
  setup->config = ParsePipelineConfig(
      std::string("pipeline: p\n"
                  "source: {postgres: {url: 'postgres://db/x', tables: [public.*]}}\n"
                  "transforms:\n") +
          transforms + DocumentsSection() + "sinks: {out: {jsonl: {path: x}}}\n",
      "p.yaml");
  EXPECT_TRUE(setup->config.ok()) << setup->config.status();
  if (!setup->config.ok()) return setup;
  setup->chain = BuildTransforms("p", setup->config->transforms);
  absl::StatusOr<std::map<std::string, DocumentSpec>> specs =
      ParseDocuments(*setup->config->documents);
  EXPECT_TRUE(specs.ok()) << specs.status();
  if (specs.ok()) setup->spec = specs->at("orders");
  return setup;
}

// A render with the orders, customers and order lines rows whole, as DocumentSql makes it.
constexpr char kRendered[] =
    R"([{"id": 1, "lines": [)"
    R"([{"qty": 1, "sku": "p1", "product": {"title": "Pen"}},)"
    R"( {"qty": 1, "sku": "p1", "line": 1, "order_id": 1}],)"
    R"([{"qty": 3, "sku": "p2", "product": null},)"
    R"( {"qty": 3, "sku": "p2", "line": 2, "order_id": 1}]],)"
    R"( "status": "open", "customer": [{"name": "Ada", "email": "ada@example.com"},)"
    R"( {"id": 7, "name": "Ada", "email": "ada@example.com"}],)"
    R"( "placed_at": "2026-11-27T10:00:00+00:00"},)"
    R"( {"id": 1, "status": "open", "placed_at": "2026-11-27T10:00:00+00:00",)"
    R"( "customer_id": 7}])";

TEST(DocumentTransformsTest, MaskFilterAndSetReachEveryLevel) {
  std::unique_ptr<Loaded> setup = Load(
      "  - mask: {table: public.orders, columns: {status: redact}}\n"
      "  - mask: {table: public.customers, salt: k, columns: {email: email}}\n"
      "  - filter: {table: public.order_lines, where: 'qty > 1'}\n"
      "  - set: {table: public.orders, columns: {region: eu}}\n");
  ASSERT_TRUE(setup->config.ok());
  absl::StatusOr<DocumentTransforms> transforms =
      DocumentTransforms::Make(setup->spec, ShopCatalog(), &setup->chain);
  ASSERT_TRUE(transforms.ok()) << transforms.status();
  EXPECT_EQ(transforms->whole(),
            (std::set<std::string>{"public.customers", "public.order_lines", "public.orders"}));

  absl::StatusOr<std::optional<std::string>> out = transforms->Apply(kRendered);
  ASSERT_TRUE(out.ok()) << out.status();
  ASSERT_TRUE(out->has_value());
  const std::string& doc = **out;
  // Unchanged values as rendered; changed ones as pgflow writes them; added ones after.
  EXPECT_THAT(doc, HasSubstr(R"({"id":1,"placed_at":"2026-11-27T10:00:00+00:00",)"
                             R"("status":"REDACTED","region":"eu","customer":{)"));
  EXPECT_THAT(doc, HasSubstr(R"("customer":{"name":"Ada","email":")"));
  EXPECT_THAT(doc, HasSubstr(R"(@example.com"})"));
  EXPECT_THAT(doc, testing::Not(HasSubstr("ada@")));
  // The line the filter leaves out is gone; the other keeps its child as rendered.
  EXPECT_THAT(doc, HasSubstr(R"("lines":[{"sku":"p2","qty":3,"product":null}]})"));
}

TEST(DocumentTransformsTest, AFilteredRootHasNoDocument) {
  std::unique_ptr<Loaded> setup =
      Load("  - filter: {table: public.orders, where: \"status <> 'open'\"}\n");
  ASSERT_TRUE(setup->config.ok());
  absl::StatusOr<DocumentTransforms> transforms =
      DocumentTransforms::Make(setup->spec, ShopCatalog(), &setup->chain);
  ASSERT_TRUE(transforms.ok()) << transforms.status();
  EXPECT_EQ(transforms->whole(), (std::set<std::string>{"public.orders"}));
  // (Only the orders' row is whole now: the children are plain objects.)
  const std::string rendered =
      R"([{"id": 1, "lines": [], "status": "open", "customer": null, "placed_at": null},)"
      R"( {"id": 1, "status": "open", "customer_id": 7, "placed_at": null}])";
  absl::StatusOr<std::optional<std::string>> out = transforms->Apply(rendered);
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_FALSE(out->has_value());
}

TEST(DocumentTransformsTest, AJoinColumnOrTheRootKeyChangedIsRefused) {
  std::unique_ptr<Loaded> setup =
      Load("  - mask: {table: public.order_lines, salt: k, columns: {order_id: hash}}\n");
  ASSERT_TRUE(setup->config.ok());
  absl::StatusOr<DocumentTransforms> transforms =
      DocumentTransforms::Make(setup->spec, ShopCatalog(), &setup->chain);
  ASSERT_FALSE(transforms.ok());
  EXPECT_THAT(transforms.status().message(),
              HasSubstr("documents.orders.children.lines: a transform changes "
                        "public.order_lines.order_id, by which"));

  setup = Load("  - mask: {table: public.orders, salt: k, columns: {customer_id: hash}}\n");
  ASSERT_TRUE(setup->config.ok());
  transforms = DocumentTransforms::Make(setup->spec, ShopCatalog(), &setup->chain);
  ASSERT_FALSE(transforms.ok());
  EXPECT_THAT(transforms.status().message(), HasSubstr("public.orders.customer_id"));

  // A mask that keeps a join column as it is, and a filter, are taken.
  setup = Load(
      "  - mask: {table: public.orders, columns: {customer_id: keep, status: redact}}\n"
      "  - filter: {table: public.order_lines, where: 'qty > 0'}\n");
  ASSERT_TRUE(setup->config.ok());
  EXPECT_TRUE(DocumentTransforms::Make(setup->spec, ShopCatalog(), &setup->chain).ok());
}

TEST(DocumentTransformsTest, OnlyMaskFilterAndSetAreTaken) {
  std::unique_ptr<Loaded> setup = Load(
      "  - mask: {table: public.orders, columns: {status: redact}}\n"
      "  - rename: {table: public.orders, columns: {status: state}}\n");
  ASSERT_TRUE(setup->config.ok());
  absl::StatusOr<ConfigNode> root = ParseConfigDocument("documents: [orders]\n", "p.yaml", "");
  ASSERT_TRUE(root.ok()) << root.status();
  absl::Status s = CheckTransformTypes(setup->config->transforms, *root->Get("documents"));
  EXPECT_THAT(s.message(), HasSubstr("p.yaml:5:5: transforms[1]: a rename transform, which "
                                     "documents does not take: documents take mask, filter "
                                     "and set only"));
  // A filter of some operations would drop changes that find documents, and rendered rows.
  setup = Load("  - filter: {table: public.orders, op: [insert, update]}\n");
  ASSERT_TRUE(setup->config.ok());
  s = CheckTransformTypes(setup->config->transforms, *root->Get("documents"));
  EXPECT_THAT(s.message(), HasSubstr("transforms[0]: a filter with `op`, which documents "
                                     "does not take: documents take filters on rows only"));
}

}  // namespace
}  // namespace pgflow::documents
