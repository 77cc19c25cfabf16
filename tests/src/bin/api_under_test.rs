//! The API binary, built inside the tests package so integration tests can start it as a child
//! process (to SIGKILL it mid-expansion) by `CARGO_BIN_EXE_api-under-test`.

fn main() -> anyhow::Result<()> {
    hikyaku_api::cli::main()
}
