//! The WIT host functions of the `context` interface: each request is checked against the
//! journal while replaying and buffered for the next write when live.

use std::collections::{HashMap, VecDeque};

use wasmtime::component::Resource;

use super::super::bindings::orchestrator::steadfast::workflow::{context, types};
use super::super::limits::{LimitExceeded, check_payload};
use super::{HostState, Interrupt, TaskKind, TaskRep};
use crate::model::{ErrorInfo, Event, InstanceId, RetryPolicy, Timestamp};

impl types::Host for HostState {}

impl context::HostTask for HostState {
    async fn drop(&mut self, task: Resource<TaskRep>) -> wasmtime::Result<()> {
        self.table.delete(task)?;
        Ok(())
    }
}

impl context::Host for HostState {
    async fn call_activity(
        &mut self,
        name: String,
        input: String,
        options: types::ActivityOptions,
    ) -> wasmtime::Result<Resource<TaskRep>> {
        check_payload("the activity input", &input, &self.limits)?;
        check_name("an activity name", &name)?;
        let seq = self.next_seq;
        let retry = options
            .retry
            .map(|p| {
                let policy = RetryPolicy {
                    first_retry_interval_ms: p.first_retry_interval_ms,
                    backoff_coefficient: p.backoff_coefficient,
                    max_retry_interval_ms: p.max_retry_interval_ms,
                    max_attempts: p.max_attempts.max(1),
                    retry_timeout_ms: p.retry_timeout_ms,
                    non_retryable_kinds: p.non_retryable_kinds,
                };
                check_retry_policy(&name, &policy).map(|()| policy)
            })
            .transpose()?;
        self.request(Event::ActivityScheduled {
            seq,
            name,
            input,
            retry,
        })?;
        self.new_task(seq, TaskKind::Completable)
    }

    async fn call_child_workflow(
        &mut self,
        name: String,
        input: String,
        instance_id: Option<String>,
    ) -> wasmtime::Result<Resource<TaskRep>> {
        check_payload("the child workflow input", &input, &self.limits)?;
        check_name("a child workflow name", &name)?;
        let seq = self.next_seq;
        let tenant = self.tenant();
        let local =
            instance_id.unwrap_or_else(|| format!("{}:{}:{seq}", self.id.local(), self.generation));
        let child = InstanceId::scoped(&tenant, &local);
        let asked = Event::ChildScheduled {
            seq,
            name: name.clone(),
            input,
            instance_id: format!("{tenant}/{local}"),
        };
        let live = !self.replaying();
        self.request(asked)?;
        if live {
            let failure = match (child, self.shared.workflow_component(&tenant, &name)) {
                (Ok(_), Some(digest)) => {
                    self.pending.child_components.push((seq, digest));
                    self.pending.max_live_instances = self.limits.max_live_instances;
                    None
                }
                (Err(reason), _) => Some(ErrorInfo::new("invalid_instance_id", reason)),
                (Ok(_), None) => Some(ErrorInfo::new(
                    "unknown_workflow",
                    format!("no workflow named '{name}' is deployed"),
                )),
            };
            if let Some(error) = failure {
                // Recorded with the request, so a replay sees the same failure.
                self.pending.events.push(Event::ChildCompleted {
                    seq,
                    result: Err(error.clone()),
                });
                self.results.insert(seq, (0, Err(error)));
            }
        }
        self.new_task(seq, TaskKind::Completable)
    }

    async fn create_timer(
        &mut self,
        spec: types::TimerSpec,
    ) -> wasmtime::Result<Resource<TaskRep>> {
        self.timers_created += 1;
        if self.timers_created > self.limits.max_timers_per_generation {
            return Err(wasmtime::Error::new(LimitExceeded::Timers(
                self.limits.max_timers_per_generation,
            )));
        }
        let seq = self.next_seq;
        let asked = match spec {
            types::TimerSpec::AtMs(at) => Event::TimerCreated {
                seq,
                fire_at: Timestamp(at),
                after_ms: None,
            },
            types::TimerSpec::AfterMs(ms) => Event::TimerCreated {
                seq,
                fire_at: self.clock_now().plus_ms(ms),
                after_ms: Some(ms),
            },
        };
        if let Event::TimerCreated { fire_at, .. } = &asked
            && *fire_at > LATEST
        {
            return Err(wasmtime::Error::new(LimitExceeded::Invalid(format!(
                "a timer firing at {} ms since the epoch is past the latest time the host \
                 keeps ({} ms, the end of year 9999)",
                fire_at.0, LATEST.0
            ))));
        }
        self.request(asked)?;
        self.new_task(seq, TaskKind::Completable)
    }

    async fn wait_for_external_event(
        &mut self,
        name: String,
    ) -> wasmtime::Result<Resource<TaskRep>> {
        check_name("an event name", &name)?;
        let seq = self.next_seq;
        self.request(Event::EventWaitStarted {
            seq,
            name: name.clone(),
        })?;
        self.new_task(seq, TaskKind::Event { name, taken: None })
    }

    async fn await_(
        &mut self,
        task: Resource<TaskRep>,
    ) -> wasmtime::Result<Result<String, types::ErrorInfo>> {
        loop {
            if let Some(outcome) = self.take_ready(&task)? {
                return Ok(outcome.map_err(|e| types::ErrorInfo {
                    kind: e.kind,
                    message: e.message,
                }));
            }
            self.block().await?;
        }
    }

    async fn when_any(&mut self, tasks: Vec<Resource<TaskRep>>) -> wasmtime::Result<u32> {
        if tasks.is_empty() {
            return Err(wasmtime::Error::msg("when-any needs at least one task"));
        }
        let seq = self.next_seq;
        let task_seqs = tasks
            .iter()
            .map(|t| Ok(self.table.get(t)?.seq))
            .collect::<wasmtime::Result<Vec<u32>>>()?;
        if let Some(recorded) = self.recorded.get(seq as usize).cloned() {
            let asked = Event::WhenAnyResolved {
                seq,
                tasks: task_seqs,
                winner: 0,
            };
            self.request(asked)?;
            let Event::WhenAnyResolved { winner, .. } = recorded else {
                unreachable!("checked by request")
            };
            let index = tasks
                .iter()
                .position(|t| self.table.get(t).map(|r| r.seq == winner).unwrap_or(false));
            let Some(index) = index else {
                return Err(self.diverged(
                    seq,
                    recorded.describe(),
                    "a when-any without the recorded winner".into(),
                ));
            };
            if self.take_ready(&tasks[index])?.is_none() {
                return Err(wasmtime::Error::new(Interrupt::BrokenJournal(format!(
                    "journal of '{}' records task {winner} winning a when-any, but holds no result for it",
                    self.id
                ))));
            }
            return Ok(index as u32);
        }
        loop {
            let mut best: Option<(u64, usize)> = None;
            for (i, task) in tasks.iter().enumerate() {
                if let Some(pos) = self.ready_at(task)?
                    && best.is_none_or(|(p, _)| pos < p)
                {
                    best = Some((pos, i));
                }
            }
            if let Some((_, index)) = best {
                let winner = task_seqs[index];
                self.request(Event::WhenAnyResolved {
                    seq,
                    tasks: task_seqs,
                    winner,
                })?;
                self.take_ready(&tasks[index])?;
                return Ok(index as u32);
            }
            self.block().await?;
        }
    }

    async fn when_all(
        &mut self,
        tasks: Vec<Resource<TaskRep>>,
    ) -> wasmtime::Result<Vec<Result<String, types::ErrorInfo>>> {
        loop {
            // Ready when every completable task has its result and each event name has as
            // many buffered events as untaken waits on it.
            let mut ready = true;
            let mut demand: HashMap<String, usize> = HashMap::new();
            for task in &tasks {
                let rep = self.table.get(task)?;
                match &rep.kind {
                    TaskKind::Completable => ready &= self.results.contains_key(&rep.seq),
                    TaskKind::Event { taken: Some(_), .. } => {}
                    TaskKind::Event { name, taken: None } => {
                        *demand.entry(name.clone()).or_default() += 1
                    }
                }
            }
            for (name, wanted) in &demand {
                ready &= self.inbox.get(name).map_or(0, VecDeque::len) >= *wanted;
            }
            if ready {
                let mut out = Vec::with_capacity(tasks.len());
                for task in &tasks {
                    let outcome = self.take_ready(task)?.expect("checked ready above");
                    out.push(outcome.map_err(|e| types::ErrorInfo {
                        kind: e.kind,
                        message: e.message,
                    }));
                }
                return Ok(out);
            }
            self.block().await?;
        }
    }

    async fn continue_as_new(
        &mut self,
        input: String,
        keep_unprocessed_events: bool,
    ) -> wasmtime::Result<()> {
        check_payload("the continue-as-new input", &input, &self.limits)?;
        self.continue_as_new = Some((input, keep_unprocessed_events));
        Ok(())
    }

    async fn now(&mut self) -> wasmtime::Result<u64> {
        let seq = self.next_seq;
        let at = self.clock_now();
        match self.request(Event::TimeRead { seq, at })? {
            Event::TimeRead { at, .. } => Ok(at.0),
            other => unreachable!("request returned {other:?} for now()"),
        }
    }

    async fn new_guid(&mut self) -> wasmtime::Result<String> {
        Ok(self.rng.uuid())
    }

    async fn random(&mut self) -> wasmtime::Result<u64> {
        Ok(self.rng.next_u64())
    }

    async fn instance_id(&mut self) -> wasmtime::Result<String> {
        Ok(self.id.local().to_owned())
    }

    async fn patched(&mut self, name: String) -> wasmtime::Result<bool> {
        check_name("a patch name", &name)?;
        let seq = self.next_seq;
        match self.recorded.get(seq as usize) {
            // The execution that wrote this journal ran the patched code here.
            Some(Event::Patched { name: recorded, .. }) if *recorded == name => {
                self.next_seq += 1;
                if !self.replaying() {
                    // Replay just reached the live end: the step's time starts now.
                    self.clock.restart();
                }
                Ok(true)
            }
            // It ran the code from before the patch: take the old path, consume nothing.
            Some(_) => Ok(false),
            None => {
                self.request(Event::Patched { seq, name })?;
                Ok(true)
            }
        }
    }

    async fn is_replaying(&mut self) -> wasmtime::Result<bool> {
        Ok(self.replaying())
    }

    async fn should_continue_as_new(&mut self) -> wasmtime::Result<bool> {
        // From the position the workflow has reached, not the journal's length: a replay
        // must see the answer the live run saw at the same point.
        Ok(self.limits.should_continue_as_new(self.next_seq as usize))
    }

    async fn set_custom_status(&mut self, status: String) -> wasmtime::Result<()> {
        check_payload("the custom status", &status, &self.limits)?;
        if self.custom_status.as_deref() != Some(status.as_str()) {
            self.custom_status = Some(status);
            self.custom_status_dirty = true;
        }
        Ok(())
    }

    async fn log(&mut self, level: types::LogLevel, message: String) -> wasmtime::Result<()> {
        if self.replaying() || self.dry_run {
            return Ok(());
        }
        self.log.line(level.into(), &message);
        Ok(())
    }
}

/// The longest name (of an activity, workflow, event or patch) a guest may use.
const MAX_NAME_BYTES: usize = 1024;

fn check_name(what: &str, name: &str) -> Result<(), LimitExceeded> {
    if name.len() > MAX_NAME_BYTES {
        return Err(LimitExceeded::Invalid(format!(
            "{what} is {} bytes long; names may have at most {MAX_NAME_BYTES}",
            name.len()
        )));
    }
    Ok(())
}

/// The latest time the host keeps (the end of year 9999, in ms since the Unix epoch):
/// timers and retries beyond it are refused rather than journaled.
const LATEST: Timestamp = Timestamp(253_402_300_799_999);

/// The longest delay a retry policy may name: 100 years.
const MAX_DELAY_MS: u64 = 100 * 365 * 24 * 3600 * 1000;

/// Refuses a retry policy the host could not journal or follow: a backoff coefficient
/// that is not a finite number of at least 1, or intervals beyond [`MAX_DELAY_MS`].
fn check_retry_policy(activity: &str, p: &RetryPolicy) -> Result<(), LimitExceeded> {
    let invalid = |why: String| {
        Err(LimitExceeded::Invalid(format!(
            "the retry policy of activity '{activity}' {why}"
        )))
    };
    if p.non_retryable_kinds.len() > 64
        || p.non_retryable_kinds
            .iter()
            .any(|k| k.len() > MAX_NAME_BYTES)
    {
        return invalid(format!(
            "names {} non-retryable kinds; at most 64, each at most {MAX_NAME_BYTES} bytes",
            p.non_retryable_kinds.len()
        ));
    }
    if !p.backoff_coefficient.is_finite() || p.backoff_coefficient < 1.0 {
        return invalid(format!(
            "has backoff coefficient {}; it must be a finite number of at least 1.0",
            p.backoff_coefficient
        ));
    }
    for (what, ms) in [
        ("first retry interval", Some(p.first_retry_interval_ms)),
        ("max retry interval", Some(p.max_retry_interval_ms)),
        ("retry timeout", p.retry_timeout_ms),
    ] {
        if let Some(ms) = ms
            && ms > MAX_DELAY_MS
        {
            return invalid(format!(
                "has a {what} of {ms} ms; the most is {MAX_DELAY_MS} ms (100 years)"
            ));
        }
    }
    Ok(())
}
