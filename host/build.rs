//! Builds the example workflow and activity components that the `steadfast` binary embeds
//! (for `steadfast demo` and `steadfast dev`).

use steadfast_guest_build::{Guest, build};

fn main() {
    let examples = build(&Guest {
        package: "steadfast-examples",
        features: &[],
        output: "examples.wasm",
    });
    let activities = build(&Guest {
        package: "steadfast-example-activities",
        features: &[],
        output: "example_activities.wasm",
    });
    println!(
        "cargo:rustc-env=STEADFAST_EXAMPLES_WASM={}",
        examples.display()
    );
    println!(
        "cargo:rustc-env=STEADFAST_EXAMPLE_ACTIVITIES_WASM={}",
        activities.display()
    );
}
