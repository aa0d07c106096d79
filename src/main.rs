//! Thin entry point; everything is in the library so tests can drive it.

/// mimalloc instead of the C library's allocator: ingest builds and frees
/// batches of up to 100,000 readings several times a second, and glibc's
/// malloc handed those pages back to the kernel and faulted them in again
/// (zeroed) for the next batch; with mimalloc ingest used about a fifth less
/// CPU in the benchmark (`cargo run --release -p ingest --example bench`).
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    waterworks::cli::main()
}
