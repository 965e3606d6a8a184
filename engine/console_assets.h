#pragma once

// The web console's static files (engine/console/: its page, script and style), built into the
// binary by cmake/embed_assets.cmake so that the console needs nothing but the binary: no CDN,
// nothing fetched at run time.

#include <string_view>
#include <vector>

namespace pgflow {

struct ConsoleAsset {
  std::string_view path;  // "/console.js"
  std::string_view bytes;
};

const std::vector<ConsoleAsset>& ConsoleAssets();

}  // namespace pgflow
