#include "sandbox/capabilities.h"

#include <cap-ng.h>

#include <algorithm>
#include <cctype>

namespace vfsd::sandbox {

Result<CapabilitySet> capability_set(std::string_view modcaps, bool file_handles,
                                     std::string& message) {
  CapabilitySet set;
  set.keep = {"CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "SETGID", "SETUID", "MKNOD", "SETFCAP"};
  size_t start = 0;
  while (!modcaps.empty() && start <= modcaps.size()) {
    size_t colon = modcaps.find(':', start);
    if (colon == std::string_view::npos) colon = modcaps.size();
    std::string_view item = modcaps.substr(start, colon - start);
    start = colon + 1;
    if (item.empty()) {
      message = "--modcaps: empty item (expected (+|-)capability[:...])";
      return fail(EINVAL);
    }
    const char action = item.front();
    if (action != '+' && action != '-') {
      message = "--modcaps: invalid action '" + std::string(1, action) + "' in '" +
                std::string(item) + "' (expected '+' or '-')";
      return fail(EINVAL);
    }
    std::string name(item.substr(1));
    std::transform(name.begin(), name.end(), name.begin(),
                   [](unsigned char c) { return static_cast<char>(std::toupper(c)); });
    if (name.starts_with("CAP_")) name.erase(0, 4);
    if (name.empty() || capng_name_to_capability(name.c_str()) < 0) {
      message = "--modcaps: unknown capability '" + std::string(item.substr(1)) + "'";
      return fail(EINVAL);
    }
    if (action == '+') {
      set.removed.erase(name);
      set.keep.insert(name);
    } else {
      set.keep.erase(name);
      set.removed.insert(name);
    }
  }
  if (file_handles) {
    if (set.removed.count("DAC_READ_SEARCH") != 0) {
      message =
          "--modcaps: DAC_READ_SEARCH cannot be removed while --inode-file-handles is prefer "
          "(the default) or mandatory (opening file handles needs it; use "
          "--inode-file-handles=never)";
      return fail(EINVAL);
    }
    set.keep.insert("DAC_READ_SEARCH");
  }
  return set;
}

VoidResult drop_capabilities(const CapabilitySet& set) {
  capng_clear(CAPNG_SELECT_BOTH);
  for (const std::string& name : set.keep) {
    const int cap = capng_name_to_capability(name.c_str());
    if (cap < 0) return fail(EINVAL);
    if (capng_update(
            CAPNG_ADD,
            static_cast<capng_type_t>(CAPNG_EFFECTIVE | CAPNG_PERMITTED | CAPNG_BOUNDING_SET),
            static_cast<unsigned>(cap)) != 0) {
      return fail(EINVAL);
    }
  }
  if (capng_apply(CAPNG_SELECT_BOTH) != 0) return fail(EPERM);
  return ok();
}

}  // namespace vfsd::sandbox
