#pragma once

// The `blackhole` sink: takes every event and keeps nothing, durably at once. For measuring
// the rest of a pipeline (Vector has the same sink under the same name) and for dry runs.

#include "engine/sink.h"

namespace pgflow {

// Registers the "blackhole" sink type with the engine's factory registry.
void RegisterBlackholeSink();

}  // namespace pgflow
