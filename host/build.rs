//! Builds the example workflow and activity components that the `steadfast` binary embeds
//! (for `steadfast demo` and `steadfast dev`) and the benchmark workflows (`steadfast bench`),
//! lists the sources the binary carries for `steadfast new` (see `cli/scaffold.rs`), and
//! generates the gRPC server of the Durable Task sidecar protocol from `proto/` (with
//! protox, a protobuf compiler in Rust: no `protoc` to install).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use steadfast_guest_build::{Guest, build};

fn main() {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("set by cargo"))
        .parent()
        .expect("host/ has a parent")
        .to_path_buf();
    carry_sources(&root);
    generate_grpc(&root);
    if std::env::var_os("CARGO_FEATURE_EXAMPLES").is_none() {
        // Built as a library (the test kit's engine): no components to embed.
        let empty =
            PathBuf::from(std::env::var("OUT_DIR").expect("set by cargo")).join("none.wasm");
        std::fs::write(&empty, b"").expect("OUT_DIR is writable");
        for var in [
            "STEADFAST_BENCH_WASM",
            "STEADFAST_HTTP_ACTIVITIES_WASM",
            "STEADFAST_EXAMPLES_WASM",
            "STEADFAST_EXAMPLE_ACTIVITIES_WASM",
        ] {
            println!("cargo:rustc-env={var}={}", empty.display());
        }
        return;
    }
    let examples = build(&Guest {
        package: "steadfast-examples",
        features: &[],
        output: "examples.wasm",
        target: steadfast_guest_build::PURE,
    });
    let activities = build(&Guest {
        package: "steadfast-example-activities",
        features: &[],
        output: "example_activities.wasm",
        target: steadfast_guest_build::PURE,
    });
    let http_activities = build(&Guest {
        package: "steadfast-http-activities",
        features: &[],
        output: "http_activities.wasm",
        target: steadfast_guest_build::WASIP2,
    });
    let bench = build(&Guest {
        package: "steadfast-bench",
        features: &[],
        output: "bench.wasm",
        target: steadfast_guest_build::PURE,
    });
    println!("cargo:rustc-env=STEADFAST_BENCH_WASM={}", bench.display());
    println!(
        "cargo:rustc-env=STEADFAST_HTTP_ACTIVITIES_WASM={}",
        http_activities.display()
    );
    println!(
        "cargo:rustc-env=STEADFAST_EXAMPLES_WASM={}",
        examples.display()
    );
    println!(
        "cargo:rustc-env=STEADFAST_EXAMPLE_ACTIVITIES_WASM={}",
        activities.display()
    );
}

/// What an author's crate needs, relative to the workspace root: the SDK and its WIT, the
/// test kit, and the engine and guest builder the kit is made of.
const CARRIED: &[&str] = &[
    "Cargo.toml",
    "Cargo.lock",
    "LICENSE-MIT",
    "wit",
    "guest-sdk/Cargo.toml",
    "guest-sdk/src",
    "testkit/Cargo.toml",
    "testkit/src",
    "tools/guest-build/Cargo.toml",
    "tools/guest-build/src",
    "host/Cargo.toml",
    "host/build.rs",
    "host/proto",
    "host/src",
];

/// The Durable Task sidecar service (`TaskHubSidecarService`), server and client, into
/// `OUT_DIR`.
fn generate_grpc(root: &Path) {
    let proto = root.join("host/proto/durabletask_sidecar.proto");
    println!("cargo:rerun-if-changed={}", proto.display());
    let descriptors = protox::compile([&proto], [root.join("host/proto")])
        .unwrap_or_else(|e| panic!("{} does not compile: {e}", proto.display()));
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(descriptors)
        .unwrap_or_else(|e| panic!("generating the gRPC service failed: {e}"));
}

/// Writes `carried.rs` into `OUT_DIR`: every carried file's path and bytes.
fn carry_sources(root: &Path) {
    let mut files = Vec::new();
    for entry in CARRIED {
        let path = root.join(entry);
        println!("cargo:rerun-if-changed={}", path.display());
        collect(&path, &mut files);
    }
    files.sort();
    let mut code = String::from("&[\n");
    for file in &files {
        let relative = file
            .strip_prefix(root)
            .expect("under the root")
            .to_str()
            .expect("source paths are UTF-8");
        writeln!(
            code,
            "    ({relative:?}, include_bytes!({:?}) as &[u8]),",
            file.display().to_string()
        )
        .expect("writing to a String");
    }
    code.push(']');
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("set by cargo")).join("carried.rs");
    std::fs::write(out, code).expect("OUT_DIR is writable");
}

/// A listed file, or the source files under a listed folder (not editor backups and the
/// like, which would change the carried copy's digest).
fn collect(path: &Path, files: &mut Vec<PathBuf>) {
    if path.is_dir() {
        let entries = std::fs::read_dir(path)
            .unwrap_or_else(|e| panic!("cannot list {}: {e}", path.display()));
        for entry in entries {
            let entry = entry.expect("a directory entry").path();
            let source = entry.extension().is_some_and(|ext| {
                ["rs", "toml", "wit", "in", "html", "js", "css", "proto"]
                    .iter()
                    .any(|e| ext == *e)
            });
            let hidden = entry
                .file_name()
                .is_some_and(|name| name.to_string_lossy().starts_with('.'));
            if entry.is_dir() && !hidden {
                collect(&entry, files);
            } else if source && !hidden {
                files.push(entry);
            }
        }
    } else if path.is_file() {
        files.push(path.to_path_buf());
    } else {
        panic!(
            "{} is missing: the binary carries it for `steadfast new`",
            path.display()
        );
    }
}
