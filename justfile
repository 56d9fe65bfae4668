# List the recipes.
default:
    @just --list

# Run the tutorial's saga, approval and monitor examples on a throwaway store.
demo:
    cargo run -p steadfast -- demo

# Run every test (unit, end-to-end, doc tests).
test:
    cargo test --workspace

# SIGKILL the real `steadfast serve` N times at random moments under HTTP traffic, then check
# nothing acknowledged was lost or journaled twice (STEADFAST_TORTURE_SEED=... replays a run).
torture N="200":
    STEADFAST_TORTURE_ROUNDS={{N}} cargo test -p steadfast --test kill_restart -- --nocapture

# Formatting and lints, as CI would want them.
lint:
    cargo fmt --all --check
    cargo clippy --workspace --all-targets -- -D warnings

# Format the code.
fmt:
    cargo fmt --all

# Fuzz what parses untrusted bytes for SECS seconds per target (needs `cargo install cargo-fuzz`).
# Component uploads: `upload`; ids, JSON payloads and allow-list rules: `payloads`.
# The upload corpus starts from the real components the build embeds.
fuzz SECS="60":
    cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz build -s none
    mkdir -p fuzz/corpus/upload
    find fuzz/target -path '*/out/*' -name '*.wasm' -exec cp {} fuzz/corpus/upload/ \;
    cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run upload -s none -- -max_total_time={{SECS}} -rss_limit_mb=4096
    cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run payloads -s none -- -max_total_time={{SECS}}

# Run a deterministic-simulation campaign of N seeds (release build), starting at seed FIRST.
# A failing seed prints the one command that reruns it.
sim N="20000" FIRST="1":
    STEADFAST_SIM_SEEDS={{N}} STEADFAST_SIM_FIRST={{FIRST}} cargo test --release -p steadfast-tests --test simulation -- --nocapture
