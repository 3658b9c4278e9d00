// SPDX-License-Identifier: Apache-2.0
#include "inject/python_payload.h"

#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <system_error>

namespace loopwatch::inject {
namespace fs = std::filesystem;

namespace {

constexpr const char* kUsage =
    "Usage: loopwatch python-payload [--from DIR] DEST\n"
    "\n"
    "Copies loopwatch's Python package (one build for CPython 3.8 to 3.13 on\n"
    "glibc x86-64) and its start-up hook into DEST, for an init container to\n"
    "hand to the app's containers through a shared volume. An app container\n"
    "with LOOPWATCH_SEGMENT set and\n"
    "\n"
    "  PYTHONPATH=DEST/loopwatch/_bootstrap[:its own PYTHONPATH]\n"
    "\n"
    "has every asyncio and uvloop loop of every Python process watched, with\n"
    "no change to its image or command (`loopwatch inject` with\n"
    "config.loopwatch.io/python: \"true\" sets all of this up).\n"
    "\n"
    "Options:\n"
    "  --from DIR  the payload to copy (default: ../share/loopwatch/python\n"
    "              next to this binary's directory, where the image has it)\n"
    "  -h, --help  print this help\n"
    "\n"
    "Files already in DEST are replaced. Exit codes: 0 copied, 1 the copy\n"
    "failed, 2 bad usage or no payload.\n";

}  // namespace

std::string DefaultPayloadSource() {
  std::error_code ec;
  fs::path exe = fs::read_symlink("/proc/self/exe", ec);
  if (ec) return "/usr/share/loopwatch/python";
  return (exe.parent_path().parent_path() / "share" / "loopwatch" / "python").string();
}

int PythonPayloadCommand(const std::vector<std::string>& args, std::ostream& out,
                         std::ostream& err) {
  std::string from, dest;
  for (size_t i = 0; i < args.size(); i++) {
    const std::string& a = args[i];
    if (a == "-h" || a == "--help") {
      out << kUsage;
      return 0;
    }
    if (a == "--from" || a.rfind("--from=", 0) == 0) {
      if (a == "--from") {
        if (i + 1 >= args.size()) {
          err << "loopwatch python-payload: --from needs a directory\n";
          return 2;
        }
        from = args[++i];
      } else {
        from = a.substr(7);
      }
      continue;
    }
    if (!a.empty() && a[0] == '-') {
      err << "loopwatch python-payload: unknown option \"" << a << "\"\n\n" << kUsage;
      return 2;
    }
    if (!dest.empty()) {
      err << "loopwatch python-payload: one DEST only (got \"" << dest << "\" and \"" << a
          << "\")\n";
      return 2;
    }
    dest = a;
  }
  if (dest.empty()) {
    err << "loopwatch python-payload: no DEST\n\n" << kUsage;
    return 2;
  }
  if (from.empty()) from = DefaultPayloadSource();
  std::error_code ec;
  const fs::path hook = fs::path(from) / "loopwatch" / "_bootstrap" / "sitecustomize.py";
  if (!fs::is_regular_file(hook, ec)) {
    err << "loopwatch python-payload: no payload in " << from << " (" << hook.string()
        << " is missing); this binary was not installed with it: use the loopwatch image, "
           "or --from a directory laid out as <DIR>/loopwatch/...\n";
    return 2;
  }
  fs::create_directories(dest, ec);
  if (ec) {
    err << "loopwatch python-payload: cannot create " << dest << ": " << ec.message() << "\n";
    return 1;
  }
  uintmax_t files = 0, bytes = 0;
  for (auto it = fs::recursive_directory_iterator(from, ec); !ec && it != fs::end(it);
       it.increment(ec)) {
    // Lexically: a link in the tree must not lead the copy out of DEST.
    const fs::path rel = it->path().lexically_relative(from);
    if (rel.empty() || *rel.begin() == "..") continue;
    if (it->is_symlink(ec)) continue;  // the payload has none; never followed
    if (rel.filename() == "__pycache__") {
      it.disable_recursion_pending();
      continue;
    }
    const fs::path target = fs::path(dest) / rel;
    if (it->is_directory(ec)) {
      fs::create_directories(target, ec);
    } else if (it->is_regular_file(ec)) {
      // Run again (an init container re-run when the pod restarts), the
      // copy replaces its own read-only files: removed first, not opened.
      fs::remove(target, ec);
      if (!ec) fs::copy_file(it->path(), target, ec);
      if (!ec) {
        files++;
        bytes += it->file_size(ec);
        // Readable by any user the app runs as; the package is never written.
        fs::permissions(target,
                        (it->path().extension() == ".so" ? fs::perms::owner_exec |
                                                               fs::perms::group_exec |
                                                               fs::perms::others_exec
                                                         : fs::perms::none) |
                            fs::perms::owner_read | fs::perms::group_read |
                            fs::perms::others_read,
                        ec);
      }
    }
    if (ec) {
      err << "loopwatch python-payload: " << target.string() << ": " << ec.message() << "\n";
      return 1;
    }
  }
  if (ec) {
    err << "loopwatch python-payload: reading " << from << ": " << ec.message() << "\n";
    return 1;
  }
  out << "loopwatch python-payload: copied " << files << " files (" << (bytes + 1023) / 1024
      << " KiB) from " << from << " to " << dest << "; set PYTHONPATH="
      << (fs::path(dest) / "loopwatch" / "_bootstrap").string() << "\n";
  return 0;
}

}  // namespace loopwatch::inject
