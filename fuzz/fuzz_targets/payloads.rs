//! Untrusted text the API and the config take: instance ids, JSON payloads (workflow
//! inputs, event data) and `http_allow` rules. Nothing may panic; an id that parses must
//! read back the same; a payload that parses must parse again once printed.

#![no_main]

use libfuzzer_sys::fuzz_target;
use steadfast::engine::Limits;
use steadfast::model::{InstanceId, Tenant};

fuzz_target!(|bytes: &[u8]| {
    let Ok(text) = std::str::from_utf8(bytes) else {
        return;
    };
    if let Ok(id) = InstanceId::scoped(&Tenant::default_tenant(), text) {
        assert_eq!(id.local(), text);
        let again = InstanceId::from_key(id.as_str().to_owned()).expect("a key parses back");
        assert_eq!(again, id);
    }
    if let Ok(value) = serde_json::from_str::<serde_json::Value>(text) {
        let printed = value.to_string();
        serde_json::from_str::<serde_json::Value>(&printed).expect("printed JSON parses");
    }
    let limits = Limits {
        http_allow: vec![text.to_owned()],
        ..Limits::default()
    };
    let _ = limits.validate();
});
