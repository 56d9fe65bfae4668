//! Builds the test workflow component twice: as is, and with the `v2` feature (a changed
//! workflow, for the nondeterminism tests).

use steadfast_guest_build::{Guest, build};

fn main() {
    let v1 = build(&Guest {
        package: "steadfast-testing",
        features: &[],
        output: "testing_v1.wasm",
        target: steadfast_guest_build::PURE,
    });
    let v2 = build(&Guest {
        package: "steadfast-testing",
        features: &["v2"],
        output: "testing_v2.wasm",
        target: steadfast_guest_build::PURE,
    });
    let hostile = build(&Guest {
        package: "steadfast-hostile",
        features: &[],
        output: "hostile.wasm",
        target: steadfast_guest_build::PURE,
    });
    let names = build(&Guest {
        package: "steadfast-hostile",
        features: &["effectful_names"],
        output: "hostile_names.wasm",
        target: steadfast_guest_build::PURE,
    });
    let wasi = build(&Guest {
        package: "steadfast-hostile-wasi",
        features: &[],
        output: "hostile_wasi.wasm",
        target: steadfast_guest_build::WASIP2,
    });
    let probe = build(&Guest {
        package: "steadfast-wasi-probe",
        features: &[],
        output: "wasi_probe.wasm",
        target: steadfast_guest_build::WASIP2,
    });
    let sockets = build(&Guest {
        package: "steadfast-wasi-probe",
        features: &["sockets"],
        output: "wasi_sockets.wasm",
        target: steadfast_guest_build::WASIP2,
    });
    let sleepy = build(&Guest {
        package: "steadfast-wasi-probe",
        features: &["sleepy_names"],
        output: "sleepy_names.wasm",
        target: steadfast_guest_build::WASIP2,
    });
    println!(
        "cargo:rustc-env=STEADFAST_SLEEPY_NAMES_WASM={}",
        sleepy.display()
    );
    println!(
        "cargo:rustc-env=STEADFAST_WASI_PROBE_WASM={}",
        probe.display()
    );
    println!(
        "cargo:rustc-env=STEADFAST_WASI_SOCKETS_WASM={}",
        sockets.display()
    );
    println!(
        "cargo:rustc-env=STEADFAST_HOSTILE_WASM={}",
        hostile.display()
    );
    println!(
        "cargo:rustc-env=STEADFAST_HOSTILE_WASI_WASM={}",
        wasi.display()
    );
    println!(
        "cargo:rustc-env=STEADFAST_HOSTILE_NAMES_WASM={}",
        names.display()
    );
    println!("cargo:rustc-env=STEADFAST_TESTING_V1_WASM={}", v1.display());
    println!("cargo:rustc-env=STEADFAST_TESTING_V2_WASM={}", v2.display());
}
