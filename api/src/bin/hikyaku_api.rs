//! `hikyaku-api`: the REST API daemon (see [`hikyaku_api::cli`]).

#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    hikyaku_api::cli::main()
}
