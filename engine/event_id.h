#pragma once

// A change's event id: "<commit LSN X/X>:<sequence>", with ".<part>" for the further changes a
// transform made of one (engine/change.h). The same for a change however often it is
// delivered: the Kafka sink's header, the dead-letter records and consumers that deduplicate
// after a restart rely on it.

#include <string>

#include "engine/change.h"

namespace pgflow {

// Appends the event id of `change` ("0/16B3748:3", "0/16B3748:3.1").
void AppendEventId(const Change& change, std::string* out);

}  // namespace pgflow
