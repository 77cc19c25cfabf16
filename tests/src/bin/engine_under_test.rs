//! The engine binary, built inside the tests package so integration tests can start it as a
//! child process (to SIGKILL and SIGTERM it) by `CARGO_BIN_EXE_engine-under-test`.

fn main() -> anyhow::Result<()> {
    hikyaku_engine::cli::main()
}
