//! {{name}}: Steadfast activities, compiled to a WebAssembly component.
//!
//! Activities are where a workflow's work happens. They may run more than once (a retry,
//! or a host that stopped before their result was journaled), so make them idempotent.
//! Built for `wasm32-unknown-unknown`, they can reach nothing but their input; for
//! outgoing HTTP, enable the SDK's `http` feature (see `steadfast_sdk::http`).

use serde::{Deserialize, Serialize};
use steadfast_sdk::{Error, Value, json};

steadfast_sdk::activities! { "send_approval_request" => send_approval_request }

/// The input of `send_approval_request`.
#[derive(Debug, Serialize, Deserialize)]
pub struct Request {
    pub request_id: String,
    pub requester: String,
    pub amount: f64,
    #[serde(default)]
    pub description: String,
}

pub fn send_approval_request(request: Request) -> Result<Value, Error> {
    if request.amount <= 0.0 {
        // A non-retryable kind for the workflow's retry policy to match.
        return Err(Error::new("invalid_request", "the amount must be positive"));
    }
    Ok(json!({
        "sent": true,
        "request_id": request.request_id,
        "to": "approvers",
        "summary": format!("{} asks for {:.2}: {}", request.requester, request.amount, request.description),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(amount: f64) -> Request {
        Request {
            request_id: "REQ-001".into(),
            requester: "bob".into(),
            amount,
            description: "New laptop".into(),
        }
    }

    #[test]
    fn a_request_is_sent_with_a_summary() {
        let sent = send_approval_request(request(5000.0)).expect("sent");
        assert_eq!(sent["summary"], "bob asks for 5000.00: New laptop");
    }

    #[test]
    fn a_negative_amount_is_refused() {
        let refused = send_approval_request(request(-1.0)).expect_err("refused");
        assert_eq!(refused.kind, "invalid_request");
    }
}
