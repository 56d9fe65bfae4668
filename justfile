# List the recipes.
default:
    @just --list

# Run the tutorial's saga, approval and monitor examples on a throwaway store.
demo:
    cargo run -p steadfast -- demo

# Run every test (unit, end-to-end, doc tests).
test:
    cargo test --workspace

# Formatting and lints, as CI would want them.
lint:
    cargo fmt --all --check
    cargo clippy --workspace --all-targets -- -D warnings

# Format the code.
fmt:
    cargo fmt --all
