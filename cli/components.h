#pragma once

namespace pgflow {

// Registers every source and sink type this build of pgflow has with the engine's registry.
// Call once at start-up, before loading a pipeline file. Idempotent.
void RegisterComponents();

}  // namespace pgflow
