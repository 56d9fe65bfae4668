//! What an upload must be before any compiler sees it: a component of one of our two
//! worlds, importing only what its role may, and within size bounds that keep its
//! compile time bounded. Reading the sections costs a pass over the bytes; compiling costs
//! seconds of Cranelift per megabyte of code, so everything that can be refused is refused
//! here.

use serde::{Deserialize, Serialize};
use wasmparser::{Parser, Payload};

use super::SandboxError;

/// Bounds on what is compiled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CompileLimits {
    /// Bytes of function bodies, over every core module of the component.
    pub max_code_bytes: u64,
    /// Functions, over every core module.
    pub max_functions: u64,
    /// Bytes of one function body.
    pub max_function_bytes: u64,
    /// Core modules the component embeds.
    pub max_core_modules: u32,
}

impl Default for CompileLimits {
    fn default() -> Self {
        // Our largest real components are ~250 KB with under 2,000 functions; these
        // leave two orders of magnitude of room.
        CompileLimits {
            max_code_bytes: 16 << 20,
            max_functions: 100_000,
            max_function_bytes: 1 << 20,
            max_core_modules: 16,
        }
    }
}

/// Interfaces of the Steadfast contract.
const CONTRACT: &str = "steadfast:workflow/";
const WORKFLOWS: &str = "steadfast:workflow/workflows";
const ACTIVITIES: &str = "steadfast:workflow/activities";

/// What each role may import. Orchestrators get no ambient authority at all: nothing but
/// the contract. Activity components get WASI without sockets: their way to the network
/// is `wasi:http`, checked against the tenant's allow-list, and their filesystem and
/// environment are empty unless the tenant's limits grant them.
const ORCHESTRATOR_IMPORTS: &[&str] = &[CONTRACT];
const ACTIVITY_IMPORTS: &[&str] = &[
    CONTRACT,
    "wasi:io/",
    "wasi:clocks/",
    "wasi:random/",
    "wasi:cli/",
    "wasi:filesystem/",
    "wasi:http/types",
    "wasi:http/outgoing-handler",
];

/// Checks an upload without compiling it: the header, the world it exports, what it
/// imports, and its size against `limits`.
pub fn precheck(bytes: &[u8], limits: &CompileLimits) -> Result<(), SandboxError> {
    if !bytes.starts_with(b"\0asm") {
        return Err(SandboxError::NotAComponent(
            "it does not start with the wasm magic number".into(),
        ));
    }
    // A core module has layer 0 in bytes 6..8; a component has layer 1.
    if bytes.len() >= 8 && bytes[6..8] == [0, 0] {
        return Err(SandboxError::NotAComponent(
            "it is a core wasm module".into(),
        ));
    }
    let too_big = |what: String| SandboxError::TooLarge(what);
    let mut depth = 0usize;
    let mut imports = Vec::new();
    let mut exports = Vec::new();
    let (mut code_bytes, mut functions, mut modules) = (0u64, 0u64, 0u32);
    let malformed =
        |e: wasmparser::BinaryReaderError| SandboxError::Compile(format!("it is malformed: {e}"));
    for payload in Parser::new(0).parse_all(bytes) {
        let payload = payload.map_err(malformed)?;
        match payload {
            Payload::Version { .. } => depth += 1,
            Payload::End(_) => depth = depth.saturating_sub(1),
            Payload::ModuleSection { .. } => {
                modules += 1;
                if modules > limits.max_core_modules {
                    return Err(too_big(format!(
                        "it embeds more than {} core modules",
                        limits.max_core_modules
                    )));
                }
            }
            Payload::ComponentImportSection(section) if depth == 1 => {
                for import in section {
                    let import = import.map_err(malformed)?;
                    imports.push(import.name.name.to_owned());
                }
            }
            Payload::ComponentExportSection(section) if depth == 1 => {
                for export in section {
                    let export = export.map_err(malformed)?;
                    exports.push(export.name.name.to_owned());
                }
            }
            Payload::CodeSectionStart { count, size, .. } => {
                code_bytes += u64::from(size);
                functions += u64::from(count);
                if code_bytes > limits.max_code_bytes {
                    return Err(too_big(format!(
                        "its code is over {} bytes",
                        limits.max_code_bytes
                    )));
                }
                if functions > limits.max_functions {
                    return Err(too_big(format!(
                        "it has over {} functions",
                        limits.max_functions
                    )));
                }
            }
            Payload::CodeSectionEntry(body) => {
                let range = body.range();
                let size = range.end - range.start;
                if size > limits.max_function_bytes {
                    return Err(too_big(format!(
                        "one function is {size} bytes, over {}",
                        limits.max_function_bytes
                    )));
                }
            }
            _ => {}
        }
    }
    check_world(&exports, &imports)
}

/// The component exports one of our worlds and imports only what that role may.
pub(super) fn check_world(exports: &[String], imports: &[String]) -> Result<(), SandboxError> {
    let exports_world = |world: &str| exports.iter().any(|name| name.starts_with(world));
    let (role, allowed, advice) = if exports_world(WORKFLOWS) {
        (
            "orchestrators",
            ORCHESTRATOR_IMPORTS,
            "they import only the steadfast:workflow interfaces (no files, sockets, clocks or \
             environment), so that replay is deterministic; build for wasm32-unknown-unknown or \
             remove the dependency that pulls them in",
        )
    } else if exports_world(ACTIVITIES) {
        (
            "activity components",
            ACTIVITY_IMPORTS,
            "they get WASI without sockets and reach the network only through wasi:http, \
             checked against the tenant's http_allow list; use steadfast_sdk::http instead",
        )
    } else {
        let exported = if exports.is_empty() {
            "nothing".to_owned()
        } else {
            exports.join(", ")
        };
        return Err(SandboxError::NotOurWorld(format!(
            "it exports {exported}; an orchestrator exports steadfast:workflow/workflows, an \
             activity worker steadfast:workflow/activities"
        )));
    };
    let foreign: Vec<String> = imports
        .iter()
        .filter(|name| !allowed.iter().any(|prefix| name.starts_with(prefix)))
        .cloned()
        .collect();
    if foreign.is_empty() {
        Ok(())
    } else {
        Err(SandboxError::ForbiddenImports {
            role,
            imports: foreign,
            advice,
        })
    }
}

/// A valid component that embeds `functions` functions of `nops` no-ops each in one core
/// module and exports nothing: as much work for a compiler as its size. For tests of the
/// compile bounds (here and in the hostile-tenant suite).
#[doc(hidden)]
pub fn synthetic_component(functions: u32, nops: usize) -> Vec<u8> {
    // Core module: type section (one `() -> ()`), function section, code section.
    let mut module = b"\0asm\x01\0\0\0".to_vec();
    module.extend([1, 4, 1, 0x60, 0, 0]);
    let mut funcs = leb(functions);
    funcs.extend(std::iter::repeat_n(0u8, functions as usize));
    section(&mut module, 3, &funcs);
    let mut body = leb(nops as u32 + 2);
    body.push(0); // no locals
    body.extend(std::iter::repeat_n(0x01u8, nops)); // nop
    body.push(0x0b); // end
    let mut code = leb(functions);
    for _ in 0..functions {
        code.extend(&body);
    }
    section(&mut module, 10, &code);
    let mut component = b"\0asm\x0d\0\x01\0".to_vec();
    section(&mut component, 1, &module);
    component
}

fn section(into: &mut Vec<u8>, id: u8, contents: &[u8]) {
    into.push(id);
    into.extend(leb(contents.len() as u32));
    into.extend(contents);
}

fn leb(mut n: u32) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let byte = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(byte);
            return out;
        }
        out.push(byte | 0x80);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_component_of_no_world_is_refused_before_compiling() {
        let err = precheck(&synthetic_component(3, 0), &CompileLimits::default()).unwrap_err();
        assert!(matches!(err, SandboxError::NotOurWorld(_)), "{err}");
        assert!(err.to_string().contains("exports nothing"), "{err}");
    }

    #[test]
    fn size_bounds_refuse_bombs() {
        let limits = CompileLimits {
            max_code_bytes: 10_000,
            max_functions: 100,
            max_function_bytes: 500,
            max_core_modules: 16,
        };
        let err = precheck(&synthetic_component(101, 0), &limits).unwrap_err();
        assert!(err.to_string().contains("over 100 functions"), "{err}");
        let err = precheck(&synthetic_component(2, 600), &limits).unwrap_err();
        assert!(err.to_string().contains("one function is"), "{err}");
        let err = precheck(&synthetic_component(50, 400), &limits).unwrap_err();
        assert!(err.to_string().contains("its code is over"), "{err}");
    }

    #[test]
    fn imports_are_checked_per_role() {
        let workflows = vec!["steadfast:workflow/workflows@0.1.0".to_owned()];
        let activities = vec!["steadfast:workflow/activities@0.1.0".to_owned()];
        let wasi = vec!["wasi:filesystem/types@0.2.0".to_owned()];
        assert!(check_world(&workflows, &[]).is_ok());
        assert!(matches!(
            check_world(&workflows, &wasi),
            Err(SandboxError::ForbiddenImports { .. })
        ));
        assert!(check_world(&activities, &wasi).is_ok());
        let sockets = vec!["wasi:sockets/tcp@0.2.0".to_owned()];
        assert!(check_world(&activities, &sockets).is_err());
    }
}
