//! Retry policies for activities.

use std::time::Duration;

/// How the host retries a failed activity; the fields of Dapr's `RetryPolicy`.
///
/// The delay before retry `n` (1-based) is `first_retry_interval * backoff_coefficient^(n-1)`,
/// capped at `max_retry_interval` and never below 10 ms. Every attempt is journaled, and the
/// delays run on the host's clock, so they survive restarts.
///
/// ```
/// use std::time::Duration;
/// use steadfast_sdk::RetryPolicy;
///
/// let policy = RetryPolicy::new(Duration::from_secs(1), 3)
///     .backoff_coefficient(2.0)
///     .non_retryable(["invalid_input"]);
/// assert_eq!(policy.max_attempts, 3);
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    pub first_retry_interval: Duration,
    pub backoff_coefficient: f64,
    pub max_retry_interval: Duration,
    /// Attempts in all, the first included.
    pub max_attempts: u32,
    /// Give up once this long has passed since the first attempt.
    pub retry_timeout: Option<Duration>,
    /// Error kinds that are never retried.
    pub non_retryable_kinds: Vec<String>,
}

impl RetryPolicy {
    /// Up to `max_attempts` attempts, `first_retry_interval` apart (no backoff, no cap).
    ///
    /// ```
    /// let p = steadfast_sdk::RetryPolicy::new(std::time::Duration::from_millis(500), 5);
    /// assert_eq!(p.backoff_coefficient, 1.0);
    /// ```
    pub fn new(first_retry_interval: Duration, max_attempts: u32) -> Self {
        RetryPolicy {
            first_retry_interval,
            backoff_coefficient: 1.0,
            max_retry_interval: Duration::from_secs(3600),
            max_attempts,
            retry_timeout: None,
            non_retryable_kinds: Vec::new(),
        }
    }

    /// Multiply each delay by `coefficient`.
    ///
    /// ```
    /// let p = steadfast_sdk::RetryPolicy::new(std::time::Duration::from_secs(1), 4)
    ///     .backoff_coefficient(2.0);
    /// assert_eq!(p.backoff_coefficient, 2.0);
    /// ```
    pub fn backoff_coefficient(mut self, coefficient: f64) -> Self {
        self.backoff_coefficient = coefficient;
        self
    }

    /// Never wait longer than `max` between attempts.
    ///
    /// ```
    /// use std::time::Duration;
    /// let p = steadfast_sdk::RetryPolicy::new(Duration::from_secs(1), 9)
    ///     .max_retry_interval(Duration::from_secs(30));
    /// assert_eq!(p.max_retry_interval, Duration::from_secs(30));
    /// ```
    pub fn max_retry_interval(mut self, max: Duration) -> Self {
        self.max_retry_interval = max;
        self
    }

    /// Stop retrying once `timeout` has passed since the first attempt.
    ///
    /// ```
    /// use std::time::Duration;
    /// let p = steadfast_sdk::RetryPolicy::new(Duration::from_secs(1), 100)
    ///     .retry_timeout(Duration::from_secs(600));
    /// assert_eq!(p.retry_timeout, Some(Duration::from_secs(600)));
    /// ```
    pub fn retry_timeout(mut self, timeout: Duration) -> Self {
        self.retry_timeout = Some(timeout);
        self
    }

    /// Fail at once, without retrying, on errors of these kinds.
    ///
    /// ```
    /// let p = steadfast_sdk::RetryPolicy::new(std::time::Duration::from_secs(1), 3)
    ///     .non_retryable(["invalid_input", "forbidden"]);
    /// assert_eq!(p.non_retryable_kinds.len(), 2);
    /// ```
    pub fn non_retryable<I, S>(mut self, kinds: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.non_retryable_kinds
            .extend(kinds.into_iter().map(Into::into));
        self
    }
}

#[cfg(feature = "workflow")]
impl From<&RetryPolicy> for crate::bindings::steadfast::workflow::types::RetryPolicy {
    fn from(p: &RetryPolicy) -> Self {
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        crate::bindings::steadfast::workflow::types::RetryPolicy {
            first_retry_interval_ms: ms(p.first_retry_interval),
            backoff_coefficient: p.backoff_coefficient,
            max_retry_interval_ms: ms(p.max_retry_interval),
            max_attempts: p.max_attempts,
            retry_timeout_ms: p.retry_timeout.map(ms),
            non_retryable_kinds: p.non_retryable_kinds.clone(),
        }
    }
}
