//! The `tradeql` command; everything it does lives in the library.

fn main() -> std::process::ExitCode {
    tradeql::cli::main()
}
