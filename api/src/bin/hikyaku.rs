//! `hikyaku`: the admin batch CLI ([`hikyaku_api::admin::cli`]).

fn main() -> std::process::ExitCode {
    hikyaku_api::admin::cli::main()
}
