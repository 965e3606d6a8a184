#include "cli/components.h"

#include "common/postgres/dead_letter_table.h"
#include "sinks/blackhole/blackhole_sink.h"
#include "sinks/jsonl/jsonl_sink.h"
#include "sinks/kafka/kafka_sink.h"
#include "sinks/kv/kv_sink.h"
#include "sinks/opensearch/opensearch_sink.h"
#include "sinks/webhook/webhook_sink.h"
#include "sinks/postgres/postgres_sink.h"
#include "sources/kafka/kafka_source.h"
#include "sources/postgres/postgres_source_config.h"
#include "transformers/cast.h"
#include "transformers/columns.h"
#include "transformers/filter.h"
#include "transformers/lua.h"
#include "transformers/mask.h"
#include "transformers/rename.h"
#include "transformers/route.h"
#include "transformers/set.h"

namespace pgflow {

void RegisterComponents() {
  RegisterPostgresDeadLetterStore();
  RegisterPostgresSource();
  RegisterKafkaSource();
  RegisterJsonlSink();
  RegisterBlackholeSink();
  RegisterPostgresSink();
  RegisterKafkaSink();
  RegisterKvSink();
  RegisterOpenSearchSink();
  RegisterWebhookSink();
  RegisterFilterTransform();
  RegisterMaskTransform();
  RegisterLuaTransform();
  RegisterColumnsTransforms();
  RegisterRenameTransform();
  RegisterSetTransform();
  RegisterCastTransform();
  RegisterRouteTransform();
}

}  // namespace pgflow
