//! `hikyaku-engine --config FILE`: the delivery engine daemon (see [`hikyaku_engine::cli`]).

fn main() -> anyhow::Result<()> {
    hikyaku_engine::cli::main()
}
