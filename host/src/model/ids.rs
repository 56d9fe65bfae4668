//! Newtypes for the identifiers and times that cross module boundaries.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A tenant: the owner of workflows, versions, instances and tokens.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Tenant(String);

impl Tenant {
    /// The tenant of the demo, of `steadfast dev`, and of a library user who never names one.
    pub const DEFAULT: &'static str = "default";

    /// Validates a tenant name: 1 to 64 of `a-z`, `0-9`, `-` and `_`.
    pub fn new(name: impl Into<String>) -> Result<Self, String> {
        let name = name.into();
        let valid = !name.is_empty()
            && name.len() <= 64
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
        if valid {
            Ok(Tenant(name))
        } else {
            Err(format!(
                "tenant name {name:?} must be 1 to 64 characters of a-z, 0-9, '-' and '_'"
            ))
        }
    }

    pub fn default_tenant() -> Self {
        Tenant(Self::DEFAULT.to_owned())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Tenant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The id of a workflow instance: the tenant plus the id the caller chose (or the host
/// generated). Its key, `tenant/local`, is what the journal stores, so two tenants can use
/// the same local id without ever seeing each other's instance.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct InstanceId(String);

impl InstanceId {
    /// Longest local id accepted, in characters (as JSON Schema counts them).
    pub const MAX_LEN: usize = 256;

    /// The instance `local` of `tenant`. A local id is non-empty, at most
    /// [`Self::MAX_LEN`] characters, with no control characters and no `/` (ids appear in
    /// URL paths and in `raise-event ID/EVENT`), and not `.` or `..`.
    pub fn scoped(tenant: &Tenant, local: &str) -> Result<Self, String> {
        if local.is_empty() {
            return Err("instance id is empty".into());
        }
        let length = local.chars().count();
        if length > Self::MAX_LEN {
            return Err(format!(
                "instance id is {length} characters; the limit is {}",
                Self::MAX_LEN
            ));
        }
        if local == "." || local == ".." {
            // A URL path would lose it: `/v1/instances/./history` is `/v1/instances/history`.
            return Err(format!(
                "instance id {local:?} cannot be used in a URL path; choose another"
            ));
        }
        if local.chars().any(|c| c.is_control() || c == '/') {
            return Err(format!(
                "instance id {local:?} contains '/' or a control character"
            ));
        }
        Ok(InstanceId(format!("{tenant}/{local}")))
    }

    /// An instance of the default tenant.
    pub fn new(local: impl AsRef<str>) -> Result<Self, String> {
        Self::scoped(&Tenant::default_tenant(), local.as_ref())
    }

    /// Rebuilds an id from its stored key (`tenant/local`).
    pub fn from_key(key: String) -> Result<Self, String> {
        match key.split_once('/') {
            Some((tenant, local)) if Tenant::new(tenant).is_ok() && !local.is_empty() => {
                Ok(InstanceId(key))
            }
            _ => Err(format!("stored instance key {key:?} is not 'tenant/id'")),
        }
    }

    /// The stored key, `tenant/local`.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn tenant(&self) -> &str {
        self.0.split_once('/').map_or("", |(tenant, _)| tenant)
    }

    /// The id within its tenant, as the caller knows it.
    pub fn local(&self) -> &str {
        self.0.split_once('/').map_or(&self.0, |(_, local)| local)
    }
}

/// Shows the local id: what the instance's owner calls it.
impl fmt::Display for InstanceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.local())
    }
}

/// The SHA-256 of a component's bytes, in hex: what an instance pins its code by.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Digest(String);

impl Digest {
    pub fn of(bytes: &[u8]) -> Self {
        use sha2::Digest as _;
        let hash = sha2::Sha256::digest(bytes);
        let mut hex = String::with_capacity(64);
        for byte in hash {
            hex.push_str(&format!("{byte:02x}"));
        }
        Digest(hex)
    }

    pub fn from_hex(hex: String) -> Self {
        Digest(hex)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The first 12 hex digits, for messages.
    pub fn short(&self) -> &str {
        &self.0[..self.0.len().min(12)]
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Milliseconds since the Unix epoch. Journaled times (timer fire times, `now()`) use this.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Timestamp(pub u64);

impl Timestamp {
    pub fn plus_ms(self, ms: u64) -> Timestamp {
        Timestamp(self.0.saturating_add(ms))
    }

    pub fn millis_since(self, earlier: Timestamp) -> u64 {
        self.0.saturating_sub(earlier.0)
    }

    /// `YYYY-MM-DD HH:MM:SS` in UTC, for logs and the demo.
    pub fn to_utc_string(self) -> String {
        let secs = self.0 / 1000;
        let (days, rem) = (secs / 86_400, secs % 86_400);
        let (y, m, d) = civil_from_days(days as i64);
        format!(
            "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}",
            rem / 3600,
            rem % 3600 / 60,
            rem % 60
        )
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_utc_string())
    }
}

/// Days since 1970-01-01 to a (year, month, day) in the proleptic Gregorian calendar
/// (Howard Hinnant's well-known algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_print_as_utc() {
        assert_eq!(Timestamp(0).to_utc_string(), "1970-01-01 00:00:00");
        // 2026-11-25 09:00:00 UTC
        assert_eq!(
            Timestamp(1_795_597_200_000).to_utc_string(),
            "2026-11-25 09:00:00"
        );
    }

    #[test]
    fn instance_ids_are_scoped_by_tenant() {
        let acme = Tenant::new("acme").unwrap();
        let id = InstanceId::scoped(&acme, "req-002").unwrap();
        assert_eq!(id.as_str(), "acme/req-002");
        assert_eq!((id.tenant(), id.local()), ("acme", "req-002"));
        assert_eq!(id.to_string(), "req-002");
        assert_eq!(InstanceId::from_key("acme/req-002".into()).unwrap(), id);
        assert!(InstanceId::from_key("no-tenant".into()).is_err());
        assert!(Tenant::new("Bad Name").is_err());
    }

    #[test]
    fn instance_ids_are_validated() {
        assert!(InstanceId::new("req-002").is_ok());
        assert!(InstanceId::new("").unwrap_err().contains("empty"));
        assert!(InstanceId::new("a/b").unwrap_err().contains('/'));
        assert!(
            InstanceId::new("x".repeat(300))
                .unwrap_err()
                .contains("limit")
        );
    }

    #[test]
    fn digests_are_sha256_hex() {
        let d = Digest::of(b"abc");
        assert_eq!(
            d.as_str(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(d.short(), "ba7816bf8f01");
    }
}
