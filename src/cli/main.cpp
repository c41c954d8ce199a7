// bulwark — the command line. Parses flags and hands off to one module function per command.
#include <c10/util/Exception.h>

#include <iostream>

#include "cli/common.h"
#include "core/error.h"
#include "core/system.h"

namespace {

constexpr int kExitOk = 0;
constexpr int kExitFailure = 1;
constexpr int kExitUsage = 2;

int run(int argc, char** argv) {
  using bulwark::cli::GlobalOptions;
  CLI::App app{"Bulwark — keep deployed classifiers correct under adversarial attack", "bulwark"};
  GlobalOptions g;
  for (int i = 0; i < argc; ++i) g.command_line += (i > 0 ? " " : "") + std::string(argv[i]);
  bool version = false;
  app.add_flag("--version", version, "Print version, LibTorch and BLAS in use, then exit");
  app.add_flag("--json", g.json, "Machine-readable JSON on stdout instead of tables");
  app.add_option("--seed", g.seed, "Seed for every random choice (default 0)");
  app.add_option("--threads", g.threads, "LibTorch intra-op threads (default: $OMP_NUM_THREADS if set, else all cores)")->check(CLI::Range(1, 1024));
  app.require_subcommand(0, 1);
  app.fallthrough();  // global flags may follow the subcommand

  bulwark::cli::register_train(app, g);
  bulwark::cli::register_eval(app, g);
  bulwark::cli::register_info(app, g);
  bulwark::cli::register_import(app, g);
  bulwark::cli::register_attack(app, g);
  bulwark::cli::register_harden(app, g);
  bulwark::cli::register_serve(app, g);
  bulwark::cli::register_detect(app, g);
  bulwark::cli::register_registry(app, g);
  bulwark::cli::register_audit(app, g);
  bulwark::cli::register_guard(app, g);
  bulwark::cli::register_report(app, g);
  bulwark::cli::register_traffic(app, g);
  bulwark::cli::register_deploy(app, g);
  bulwark::cli::register_privacy(app, g);
  bulwark::cli::register_poison(app, g);

  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    std::cerr << "error: " << e.what() << "\nRun 'bulwark --help' for usage.\n";
    return kExitUsage;
  }
  if (version) {
    bulwark::cli::apply_threads(g);
    std::cout << bulwark::cli::version_text();
    return kExitOk;
  }
  if (app.get_subcommands().empty()) {
    std::cerr << app.help() << "error: a command is required\n";
    return kExitUsage;
  }
  return kExitOk;
}

}  // namespace

int main(int argc, char** argv) {
  bulwark::tune_process_for_tensor_work();  // before any tensor: see core/system.h
  try {
    return run(argc, argv);
  } catch (const bulwark::Error& e) {
    std::cerr << "error: " << e.what() << '\n';
    return e.kind() == bulwark::ErrorKind::kInvalidArgument ? kExitUsage : kExitFailure;
  } catch (const c10::Error& e) {
    std::cerr << "error: libtorch: " << e.what_without_backtrace() << '\n';
    return kExitFailure;
  } catch (const std::exception& e) {
    std::cerr << "error: " << e.what() << '\n';
    return kExitFailure;
  }
}
