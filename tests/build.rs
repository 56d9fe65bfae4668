//! Builds the test workflow component twice: as is, and with the `v2` feature (a changed
//! workflow, for the nondeterminism tests).

use steadfast_guest_build::{Guest, build};

fn main() {
    let v1 = build(&Guest {
        package: "steadfast-testing",
        features: &[],
        output: "testing_v1.wasm",
    });
    let v2 = build(&Guest {
        package: "steadfast-testing",
        features: &["v2"],
        output: "testing_v2.wasm",
    });
    println!("cargo:rustc-env=STEADFAST_TESTING_V1_WASM={}", v1.display());
    println!("cargo:rustc-env=STEADFAST_TESTING_V2_WASM={}", v2.display());
}
