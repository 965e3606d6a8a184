#include "engine/event_id.h"

namespace pgflow {

void AppendEventId(const Change& change, std::string* out) {
  AppendLsn(change.txn.commit_lsn, out);
  out->push_back(':');
  out->append(std::to_string(change.sequence));
  if (change.part > 0) {  // one of several changes a transform made of one
    out->push_back('.');
    out->append(std::to_string(change.part));
  }
}

}  // namespace pgflow
