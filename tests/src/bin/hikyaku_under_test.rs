//! The `hikyaku` admin CLI, built in this package so tests can run it as a process
//! (`CARGO_BIN_EXE_hikyaku-under-test`) and check its output and exit codes.

fn main() -> std::process::ExitCode {
    hikyaku_api::admin::cli::main()
}
