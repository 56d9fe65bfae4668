//! Builds the example workflow and activity components that the `steadfast` binary embeds
//! (for `steadfast demo` and `steadfast dev`) and the benchmark workflows (`steadfast bench`).

use steadfast_guest_build::{Guest, build};

fn main() {
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
