//! Thin entry point; everything is in the library so tests can drive it.

fn main() -> std::process::ExitCode {
    waterworks::cli::main()
}
