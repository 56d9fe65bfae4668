//! The workflow context and durable tasks.

use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::bindings::steadfast::workflow::context as host;
use crate::bindings::steadfast::workflow::types::{ActivityOptions, LogLevel, TimerSpec};
use crate::error::CONTINUED_AS_NEW;
use crate::{Error, RetryPolicy};

/// The workflow's view of the world. Every method is answered by the host from the
/// journal, so the answers are the same when the workflow is replayed.
///
/// A `Context` is handed to each workflow function by [`crate::workflows!`].
#[derive(Debug)]
pub struct Context {
    _private: (),
}

/// A durable task: a scheduled activity or child workflow, a timer, or an event wait.
///
/// Creating a task never blocks. [`Task::get`] and [`Task::wait`] block until it finishes;
/// [`Context::when_any`] and [`Context::when_all`] wait on several.
#[derive(Debug)]
pub struct Task {
    handle: host::Task,
}

impl Context {
    /// Schedule activity `name` with `input`, attempted once.
    ///
    /// ```no_run
    /// # fn f(ctx: &steadfast_sdk::Context) -> Result<(), steadfast_sdk::Error> {
    /// let receipt: serde_json::Value = ctx.call_activity("charge", &42).get()?;
    /// # Ok(()) }
    /// ```
    pub fn call_activity<I: Serialize + ?Sized>(&self, name: &str, input: &I) -> Task {
        let input = to_json("activity input", input);
        Task {
            handle: host::call_activity(name, &input, &ActivityOptions { retry: None }),
        }
    }

    /// Schedule activity `name` with `input`, retried according to `policy`.
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// use steadfast_sdk::RetryPolicy;
    /// # fn f(ctx: &steadfast_sdk::Context) -> Result<(), steadfast_sdk::Error> {
    /// let policy = RetryPolicy::new(Duration::from_secs(1), 3).backoff_coefficient(2.0);
    /// ctx.call_activity_with_retry("flaky", &(), &policy).wait()?;
    /// # Ok(()) }
    /// ```
    pub fn call_activity_with_retry<I: Serialize + ?Sized>(
        &self,
        name: &str,
        input: &I,
        policy: &RetryPolicy,
    ) -> Task {
        let input = to_json("activity input", input);
        let options = ActivityOptions {
            retry: Some(policy.into()),
        };
        Task {
            handle: host::call_activity(name, &input, &options),
        }
    }

    /// Start child workflow `name` with `input`. Without `instance_id` the host derives
    /// a stable id from this instance's id and the call's position.
    ///
    /// ```no_run
    /// # fn f(ctx: &steadfast_sdk::Context) -> Result<(), steadfast_sdk::Error> {
    /// let total: u64 = ctx.call_child_workflow("sum", &[1, 2, 3], None).get()?;
    /// # Ok(()) }
    /// ```
    pub fn call_child_workflow<I: Serialize + ?Sized>(
        &self,
        name: &str,
        input: &I,
        instance_id: Option<&str>,
    ) -> Task {
        let input = to_json("child workflow input", input);
        Task {
            handle: host::call_child_workflow(name, &input, instance_id),
        }
    }

    /// A timer that fires `delay` after the workflow's current time.
    ///
    /// ```no_run
    /// # fn f(ctx: &steadfast_sdk::Context) -> Result<(), steadfast_sdk::Error> {
    /// ctx.create_timer(std::time::Duration::from_secs(3600)).wait()?;
    /// # Ok(()) }
    /// ```
    pub fn create_timer(&self, delay: Duration) -> Task {
        let ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX);
        Task {
            handle: host::create_timer(TimerSpec::AfterMs(ms)),
        }
    }

    /// A timer that fires at `at_ms` milliseconds since the Unix epoch.
    ///
    /// ```no_run
    /// # fn f(ctx: &steadfast_sdk::Context) -> Result<(), steadfast_sdk::Error> {
    /// let tomorrow = ctx.now_ms() + 24 * 3600 * 1000;
    /// ctx.create_timer_at(tomorrow).wait()?;
    /// # Ok(()) }
    /// ```
    pub fn create_timer_at(&self, at_ms: u64) -> Task {
        Task {
            handle: host::create_timer(TimerSpec::AtMs(at_ms)),
        }
    }

    /// Wait for the next external event called `name`. Events raised earlier are buffered
    /// in order; a wait takes one only when the workflow observes the task finishing, so a
    /// wait that loses a [`Context::when_any`] race takes nothing.
    ///
    /// ```no_run
    /// # fn f(ctx: &steadfast_sdk::Context) -> Result<(), steadfast_sdk::Error> {
    /// let decision: serde_json::Value = ctx.wait_for_external_event("approval_received").get()?;
    /// # Ok(()) }
    /// ```
    pub fn wait_for_external_event(&self, name: &str) -> Task {
        Task {
            handle: host::wait_for_external_event(name),
        }
    }

    /// Block until one of `tasks` finishes and return its index in `tasks`.
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// # fn f(ctx: &steadfast_sdk::Context) -> Result<(), steadfast_sdk::Error> {
    /// let event = ctx.wait_for_external_event("approval_received");
    /// let timeout = ctx.create_timer(Duration::from_secs(3 * 24 * 3600));
    /// if ctx.when_any(&[&event, &timeout]) == 1 {
    ///     return Err(steadfast_sdk::Error::new("timeout", "no approval within 3 days"));
    /// }
    /// let decision: serde_json::Value = event.get()?;
    /// # Ok(()) }
    /// ```
    pub fn when_any(&self, tasks: &[&Task]) -> usize {
        let handles: Vec<&host::Task> = tasks.iter().map(|t| &t.handle).collect();
        host::when_any(&handles) as usize
    }

    /// Block until all `tasks` finish; their JSON results in the same order.
    ///
    /// ```no_run
    /// # fn f(ctx: &steadfast_sdk::Context) -> Result<(), steadfast_sdk::Error> {
    /// let a = ctx.call_activity("left", &1);
    /// let b = ctx.call_activity("right", &2);
    /// for result in ctx.when_all(&[&a, &b]) {
    ///     result?;
    /// }
    /// # Ok(()) }
    /// ```
    pub fn when_all(&self, tasks: &[&Task]) -> Vec<Result<serde_json::Value, Error>> {
        let handles: Vec<&host::Task> = tasks.iter().map(|t| &t.handle).collect();
        host::when_all(&handles)
            .into_iter()
            .map(|r| {
                r.map_err(Error::from)
                    .and_then(|json| from_json("task result", &json))
            })
            .collect()
    }

    /// End this generation and start the next with `input` and an empty history; return
    /// its result from the workflow at once. Unconsumed events are carried over.
    ///
    /// ```no_run
    /// # fn f(ctx: &steadfast_sdk::Context, count: u64) -> Result<(), steadfast_sdk::Error> {
    /// ctx.create_timer(std::time::Duration::from_secs(60)).wait()?;
    /// return ctx.continue_as_new(&(count + 1));
    /// # }
    /// ```
    pub fn continue_as_new<I: Serialize + ?Sized, T>(&self, input: &I) -> Result<T, Error> {
        self.continue_as_new_with(input, true)
    }

    /// Like [`Context::continue_as_new`], choosing whether unconsumed events are kept.
    ///
    /// ```no_run
    /// # fn f(ctx: &steadfast_sdk::Context) -> Result<(), steadfast_sdk::Error> {
    /// return ctx.continue_as_new_with(&0, false);
    /// # }
    /// ```
    pub fn continue_as_new_with<I: Serialize + ?Sized, T>(
        &self,
        input: &I,
        keep_unprocessed_events: bool,
    ) -> Result<T, Error> {
        host::continue_as_new(
            &to_json("continue-as-new input", input),
            keep_unprocessed_events,
        );
        Err(Error::new(CONTINUED_AS_NEW, "continued as new"))
    }

    /// True once this generation's journal is near the host's limit: time to
    /// [`Context::continue_as_new`] before the instance fails for a too-long history.
    ///
    /// ```no_run
    /// # fn f(ctx: &steadfast_sdk::Context, n: u64) -> Result<(), steadfast_sdk::Error> {
    /// loop {
    ///     ctx.call_activity("poll", &n).wait()?;
    ///     if ctx.should_continue_as_new() {
    ///         return ctx.continue_as_new(&n);
    ///     }
    /// }
    /// # }
    /// ```
    pub fn should_continue_as_new(&self) -> bool {
        host::should_continue_as_new()
    }

    /// The workflow's current time in milliseconds since the Unix epoch (journaled).
    ///
    /// ```no_run
    /// # fn f(ctx: &steadfast_sdk::Context) {
    /// let started = ctx.now_ms();
    /// # }
    /// ```
    pub fn now_ms(&self) -> u64 {
        host::now()
    }

    /// A UUID that is the same on every replay.
    ///
    /// ```no_run
    /// # fn f(ctx: &steadfast_sdk::Context) {
    /// let request_id = ctx.new_guid();
    /// # }
    /// ```
    pub fn new_guid(&self) -> String {
        host::new_guid()
    }

    /// A pseudo-random number that is the same on every replay.
    ///
    /// ```no_run
    /// # fn f(ctx: &steadfast_sdk::Context) {
    /// let jitter_ms = ctx.random() % 1000;
    /// # }
    /// ```
    pub fn random(&self) -> u64 {
        host::random()
    }

    /// This instance's id.
    ///
    /// ```no_run
    /// # fn f(ctx: &steadfast_sdk::Context) {
    /// ctx.log(format!("running as {}", ctx.instance_id()));
    /// # }
    /// ```
    pub fn instance_id(&self) -> String {
        host::instance_id()
    }

    /// A version marker that makes a change safe for instances already running.
    ///
    /// New executions record the marker and get `true`; executions that started before
    /// the change replay their journal, which has no marker at this point, and get
    /// `false`, so they keep taking the old path. Once no instance that started on the
    /// old code is left, the old branch (and the marker) can be removed.
    ///
    /// ```no_run
    /// # fn f(ctx: &steadfast_sdk::Context) -> Result<(), steadfast_sdk::Error> {
    /// if ctx.patched("notify-by-sms") {
    ///     ctx.call_activity("send_sms", "alice").wait()?;
    /// } else {
    ///     ctx.call_activity("send_email", "alice").wait()?;
    /// }
    /// # Ok(()) }
    /// ```
    pub fn patched(&self, name: &str) -> bool {
        host::patched(name)
    }

    /// True while the host re-runs steps the journal already holds.
    ///
    /// ```no_run
    /// # fn f(ctx: &steadfast_sdk::Context) {
    /// if !ctx.is_replaying() { /* e.g. count a metric once */ }
    /// # }
    /// ```
    pub fn is_replaying(&self) -> bool {
        host::is_replaying()
    }

    /// Publish a JSON value in the instance's status (progress, a stage name, ...).
    ///
    /// ```no_run
    /// # fn f(ctx: &steadfast_sdk::Context) {
    /// ctx.set_custom_status(&serde_json::json!({"stage": "waiting for approval"}));
    /// # }
    /// ```
    pub fn set_custom_status<S: Serialize + ?Sized>(&self, status: &S) {
        host::set_custom_status(&to_json("custom status", status));
    }

    /// An info-level log line, silent while replaying. The host keeps up to 64 KiB of a
    /// workflow's log lines per step (from a resume to the next block) and counts the rest.
    ///
    /// ```no_run
    /// # fn f(ctx: &steadfast_sdk::Context) {
    /// ctx.log("starting");
    /// # }
    /// ```
    pub fn log(&self, message: impl AsRef<str>) {
        host::log(LogLevel::Info, message.as_ref());
    }

    /// A warning log line, silent while replaying.
    ///
    /// ```no_run
    /// # fn f(ctx: &steadfast_sdk::Context) {
    /// ctx.warn("compensation failed; continuing");
    /// # }
    /// ```
    pub fn warn(&self, message: impl AsRef<str>) {
        host::log(LogLevel::Warn, message.as_ref());
    }
}

impl Task {
    /// Block until the task finishes and deserialise its result.
    ///
    /// ```no_run
    /// # fn f(ctx: &steadfast_sdk::Context) -> Result<(), steadfast_sdk::Error> {
    /// let status: String = ctx.call_activity("check_service_status", "api").get()?;
    /// # Ok(()) }
    /// ```
    pub fn get<T: DeserializeOwned>(&self) -> Result<T, Error> {
        let json = host::await_(&self.handle).map_err(Error::from)?;
        from_json("task result", &json)
    }

    /// Block until the task finishes, ignoring its result value.
    ///
    /// ```no_run
    /// # fn f(ctx: &steadfast_sdk::Context) -> Result<(), steadfast_sdk::Error> {
    /// ctx.call_activity("notify", "alice@example.com").wait()?;
    /// # Ok(()) }
    /// ```
    pub fn wait(&self) -> Result<(), Error> {
        host::await_(&self.handle).map(drop).map_err(Error::from)
    }
}

#[doc(hidden)]
pub fn __run_workflow<I, O>(
    input: &str,
    workflow: fn(&Context, I) -> Result<O, Error>,
) -> Result<String, crate::bindings::steadfast::workflow::types::ErrorInfo>
where
    I: DeserializeOwned,
    O: Serialize,
{
    let input: I = serde_json::from_str(input)
        .map_err(|e| Error::bad_payload("the workflow input", e).into_wit())?;
    let ctx = Context { _private: () };
    let output = workflow(&ctx, input).map_err(Error::into_wit)?;
    Ok(to_json("workflow output", &output))
}

fn to_json<T: Serialize + ?Sized>(what: &str, value: &T) -> String {
    // Serialising plain data to JSON fails only for maps with non-string keys and the like:
    // a bug in the workflow, so it traps with the reason rather than being journaled.
    serde_json::to_string(value).unwrap_or_else(|e| panic!("{what} cannot be serialised: {e}"))
}

fn from_json<T: DeserializeOwned>(what: &str, json: &str) -> Result<T, Error> {
    serde_json::from_str(json).map_err(|e| Error::bad_payload(what, e))
}
