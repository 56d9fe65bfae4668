//! The error a workflow or activity returns and handles.

use std::fmt;

/// A failure with a machine-readable `kind` and a human-readable `message`.
///
/// Activities and child workflows that fail for good surface as an `Error` in the
/// workflow, which can handle it (a saga compensates) or return it (the instance fails).
///
/// ```
/// use steadfast_sdk::Error;
///
/// let e = Error::new("unavailable", "Dashboard service unavailable");
/// assert_eq!(e.kind, "unavailable");
/// assert_eq!(e.to_string(), "Dashboard service unavailable");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    /// A short class such as `"unavailable"`, matched by retry policies.
    pub kind: String,
    /// What went wrong, for people.
    pub message: String,
}

/// The kind of the error [`crate::Context::continue_as_new`] returns to unwind the workflow.
pub(crate) const CONTINUED_AS_NEW: &str = "steadfast.continued_as_new";

impl Error {
    /// An error of `kind` with `message`.
    ///
    /// ```
    /// let e = steadfast_sdk::Error::new("invalid_input", "amount must be positive");
    /// assert_eq!(e.message, "amount must be positive");
    /// ```
    pub fn new(kind: impl Into<String>, message: impl Into<String>) -> Self {
        Error {
            kind: kind.into(),
            message: message.into(),
        }
    }

    /// True for the marker error returned by [`crate::Context::continue_as_new`].
    ///
    /// ```
    /// let e = steadfast_sdk::Error::new("timeout", "too slow");
    /// assert!(!e.is_continued_as_new());
    /// ```
    pub fn is_continued_as_new(&self) -> bool {
        self.kind == CONTINUED_AS_NEW
    }

    #[cfg(feature = "workflow")]
    #[doc(hidden)]
    pub fn into_wit(self) -> crate::bindings::steadfast::workflow::types::ErrorInfo {
        crate::bindings::steadfast::workflow::types::ErrorInfo {
            kind: self.kind,
            message: self.message,
        }
    }

    #[cfg(feature = "activity")]
    #[doc(hidden)]
    pub fn into_activity_wit(
        self,
    ) -> crate::activity_bindings::steadfast::workflow::types::ErrorInfo {
        crate::activity_bindings::steadfast::workflow::types::ErrorInfo {
            kind: self.kind,
            message: self.message,
        }
    }

    pub(crate) fn bad_payload(what: &str, e: serde_json::Error) -> Self {
        Error::new(
            "bad_payload",
            format!("{what} is not the expected JSON: {e}"),
        )
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}

#[cfg(feature = "workflow")]
impl From<crate::bindings::steadfast::workflow::types::ErrorInfo> for Error {
    fn from(e: crate::bindings::steadfast::workflow::types::ErrorInfo) -> Self {
        Error {
            kind: e.kind,
            message: e.message,
        }
    }
}
