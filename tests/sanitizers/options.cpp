// tests/sanitizers/options.cpp — the sanitizer run-time defaults of `make test SAN=1`, compiled into
// every executable of that build (the CLI and each test binary; the tests start the CLI as a child
// process, so environment variables alone would not reach every process, nor gtest's discovery run).
// An environment variable (ASAN_OPTIONS, UBSAN_OPTIONS, LSAN_OPTIONS) still overrides each default.
// docs/security.md ("Sanitizer build") gives the reason for every option and suppression.

extern "C" {

// Leaks are errors; a report kills the process with a distinctive exit code.
const char* __asan_default_options() { return "detect_leaks=1:exitcode=86"; }

// Any undefined behaviour aborts with a stack (also set at compile time: -fno-sanitize-recover).
const char* __ubsan_default_options() { return "print_stacktrace=1:halt_on_error=1"; }

// Leak suppressions: allocations made and kept by libraries that are not ours.
//  - libcares.so: c-ares (gRPC's DNS resolver) keeps a 10-byte allocation per resolver it sets up
//    for a client channel to a host name (Transport.TlsOnBothFrontends dials "localhost"); it is
//    not ours to free and does not grow with requests.
const char* __lsan_default_suppressions() { return "leak:libcares.so\n"; }

}  // extern "C"
