//! Compensation tracking for sagas.

use std::cell::RefCell;

use serde::Serialize;

use crate::Context;

/// Records how to undo each step as it succeeds, and undoes them in reverse order.
///
/// Compensations are activities. [`Saga::compensate`] runs them newest first; one that
/// fails is logged and the rest still run, as the saga pattern asks.
///
/// ```no_run
/// use steadfast_sdk::{Context, Error, Saga, json};
///
/// fn book(ctx: &Context, trip: String) -> Result<String, Error> {
///     let saga = Saga::new(ctx);
///     let outcome = (|| {
///         ctx.call_activity("reserve_hotel", &trip).wait()?;
///         saga.add_compensation("cancel_hotel", &json!({ "trip": trip }));
///         ctx.call_activity("reserve_flight", &trip).wait()?;
///         Ok::<_, Error>(())
///     })();
///     match outcome {
///         Ok(()) => Ok("booked".into()),
///         Err(e) => {
///             saga.compensate();
///             Err(e)
///         }
///     }
/// }
/// # fn main() {}
/// ```
#[derive(Debug)]
pub struct Saga<'a> {
    ctx: &'a Context,
    compensations: RefCell<Vec<(String, String)>>,
}

impl<'a> Saga<'a> {
    /// A saga with no compensations yet.
    ///
    /// ```no_run
    /// # fn f(ctx: &steadfast_sdk::Context) {
    /// let saga = steadfast_sdk::Saga::new(ctx);
    /// # }
    /// ```
    pub fn new(ctx: &'a Context) -> Self {
        Saga {
            ctx,
            compensations: RefCell::new(Vec::new()),
        }
    }

    /// Remember to call activity `name` with `input` if a later step fails.
    ///
    /// ```no_run
    /// # fn f(ctx: &steadfast_sdk::Context) {
    /// # let saga = steadfast_sdk::Saga::new(ctx);
    /// saga.add_compensation("delete_task_record", &serde_json::json!({"task_id": "task-123"}));
    /// # }
    /// ```
    pub fn add_compensation<I: Serialize + ?Sized>(&self, name: &str, input: &I) {
        let input = serde_json::to_string(input)
            .unwrap_or_else(|e| panic!("compensation input cannot be serialised: {e}"));
        self.compensations
            .borrow_mut()
            .push((name.to_owned(), input));
    }

    /// How many compensations are recorded.
    ///
    /// ```no_run
    /// # fn f(ctx: &steadfast_sdk::Context) {
    /// let saga = steadfast_sdk::Saga::new(ctx);
    /// assert_eq!(saga.len(), 0);
    /// # }
    /// ```
    pub fn len(&self) -> usize {
        self.compensations.borrow().len()
    }

    /// True when nothing needs undoing.
    ///
    /// ```no_run
    /// # fn f(ctx: &steadfast_sdk::Context) {
    /// assert!(steadfast_sdk::Saga::new(ctx).is_empty());
    /// # }
    /// ```
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Run the recorded compensations newest first; returns how many failed.
    /// A failing compensation is logged as a warning and the others still run.
    ///
    /// ```no_run
    /// # fn f(ctx: &steadfast_sdk::Context) {
    /// # let saga = steadfast_sdk::Saga::new(ctx);
    /// let failed = saga.compensate();
    /// # }
    /// ```
    pub fn compensate(&self) -> usize {
        let compensations = std::mem::take(&mut *self.compensations.borrow_mut());
        let mut failed = 0;
        for (name, input) in compensations.iter().rev() {
            let raw = serde_json::value::RawValue::from_string(input.clone());
            let task = match &raw {
                Ok(raw) => self.ctx.call_activity(name, raw),
                Err(_) => self.ctx.call_activity(name, input.as_str()),
            };
            if let Err(e) = task.wait() {
                failed += 1;
                self.ctx
                    .warn(format!("compensation {name} failed: {e}; continuing"));
            }
        }
        failed
    }
}
