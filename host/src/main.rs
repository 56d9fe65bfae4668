//! The `steadfast` command: parses arguments and hands over to [`steadfast::cli`].

fn main() -> std::process::ExitCode {
    steadfast::cli::main()
}
