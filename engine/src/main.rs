//! `hikyaku-engine --config FILE`: the delivery engine daemon (see [`hikyaku_engine::cli`]).

/// mimalloc rather than glibc malloc: the hot path allocates small, short-lived buffers per
/// message, and glibc's allocator was ~15% of engine CPU in profiles of the benchmark.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    hikyaku_engine::cli::main()
}
