//! Where guest output goes: an orchestrator's `log` calls (target `steadfast::workflow`),
//! an activity's `log` calls and everything it writes to stdout and stderr (target
//! `steadfast::activity`) become lines in the host's `tracing` log, tagged with who wrote
//! them.
//!
//! **Invariant:** a guest writes at most [`LOG_BUDGET_BYTES`] into the host's log per
//! activity call, or per workflow step (from one resume to the next block); what is over
//! is counted and reported in one line. A guest can neither fill the host's disk through
//! its log nor fail because it printed too much: writes always succeed.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use tokio::io::AsyncWrite;
use tracing::Level;

/// A `tracing` event at a level known only at run time.
macro_rules! at_level {
    ($level:expr, $($event:tt)*) => {
        match $level {
            Level::TRACE => tracing::trace!($($event)*),
            Level::DEBUG => tracing::debug!($($event)*),
            Level::INFO => tracing::info!($($event)*),
            Level::WARN => tracing::warn!($($event)*),
            Level::ERROR => tracing::error!($($event)*),
        }
    };
}

/// A guest's text made safe for one host log line: control characters (newlines,
/// carriage returns, terminal escapes) are written as escapes, so a guest can neither
/// start a line of its own that looks like the host's nor restyle the terminal.
pub(crate) fn escape(message: &str) -> std::borrow::Cow<'_, str> {
    if !message.chars().any(char::is_control) {
        return std::borrow::Cow::Borrowed(message);
    }
    let mut out = String::with_capacity(message.len() + 8);
    for c in message.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c => out.push(c),
        }
    }
    std::borrow::Cow::Owned(out)
}

/// Bytes of log output one activity call or workflow step may put into the host's log.
pub(crate) const LOG_BUDGET_BYTES: usize = 64 * 1024;

/// The longest line kept whole; a longer line without a newline is cut here.
const MAX_LINE_BYTES: usize = 8 * 1024;

/// One guest's log: for an activity call, shared by its `log` host function and its stdio
/// streams.
#[derive(Clone)]
pub(crate) struct GuestLog(Arc<Mutex<LogState>>);

/// Who writes: the tags on each line.
enum Source {
    Activity { activity: String, instance: String },
    Workflow { workflow: String, instance: String },
}

struct LogState {
    source: Source,
    /// The guest opened stdout or stderr since the call began (every `get-stdout` /
    /// `get-stderr` opens a stream; bytes written to one reach the log later, from a task
    /// of wasmtime's).
    wrote_stdio: bool,
    left: usize,
    dropped: usize,
    /// Text written to stdout / stderr since their last newline.
    partial: [Vec<u8>; 2],
}

/// Which standard stream a [`GuestStdio`] is.
#[derive(Clone, Copy)]
pub(crate) enum Stream {
    Stdout = 0,
    Stderr = 1,
}

impl Stream {
    fn name(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }

    /// Stdout is the guest talking; stderr is the guest complaining.
    fn level(self) -> Level {
        match self {
            Stream::Stdout => Level::INFO,
            Stream::Stderr => Level::WARN,
        }
    }
}

impl GuestLog {
    /// The log of one call of `activity` for `instance`.
    pub(crate) fn activity(activity: &str, instance: &str) -> Self {
        Self::new(Source::Activity {
            activity: activity.to_owned(),
            instance: instance.to_owned(),
        })
    }

    /// The log of an orchestrator; call [`GuestLog::next_step`] each time it resumes.
    pub(crate) fn workflow(workflow: &str, instance: &str) -> Self {
        Self::new(Source::Workflow {
            workflow: workflow.to_owned(),
            instance: instance.to_owned(),
        })
    }

    fn new(source: Source) -> Self {
        GuestLog(Arc::new(Mutex::new(LogState {
            source,
            wrote_stdio: false,
            left: LOG_BUDGET_BYTES,
            dropped: 0,
            partial: [Vec::new(), Vec::new()],
        })))
    }

    /// A new step begins with a full budget; what the last one dropped is reported.
    pub(crate) fn next_step(&self) {
        let mut state = self.state();
        state.report_dropped();
        state.left = LOG_BUDGET_BYTES;
    }

    /// The activity call this log serves is over (its instance is kept for another
    /// call): what is left of unfinished lines is written and the budget's cut reported,
    /// under the call's own tags.
    pub(crate) fn finish_call(&self) {
        let mut state = self.state();
        for stream in [Stream::Stdout, Stream::Stderr] {
            if !state.partial[stream as usize].is_empty() {
                state.flush_line(stream);
            }
        }
        state.report_dropped();
    }

    /// The next activity call on a kept instance: its lines carry the new call's tags,
    /// with a full budget.
    pub(crate) fn next_call(&self, activity: &str, instance: &str) {
        let mut state = self.state();
        state.source = Source::Activity {
            activity: activity.to_owned(),
            instance: instance.to_owned(),
        };
        state.left = LOG_BUDGET_BYTES;
        state.dropped = 0;
        state.wrote_stdio = false;
    }

    /// Whether the guest opened stdout or stderr during this call.
    pub(crate) fn wrote_stdio(&self) -> bool {
        self.state().wrote_stdio
    }

    /// A line from the guest's `log` host function.
    pub(crate) fn line(&self, level: Level, message: &str) {
        self.state().emit(level, "log", message);
    }

    /// The guest's stdout or stderr, as a WASI output stream.
    pub(crate) fn stdio(&self, stream: Stream) -> GuestStdio {
        GuestStdio {
            log: self.clone(),
            stream,
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, LogState> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl LogState {
    /// Writes one line if the budget allows, else counts it as dropped.
    fn emit(&mut self, level: Level, stream: &str, message: &str) {
        let cost = message.len().max(1);
        if cost > self.left {
            self.dropped += message.len();
            return;
        }
        self.left -= cost;
        self.write_line(level, stream, &escape(message));
    }

    /// Writes one line, tagged with who wrote it; `stream` tags activity lines only.
    fn write_line(&self, level: Level, stream: &str, message: &str) {
        match &self.source {
            Source::Activity { activity, instance } => at_level!(
                level,
                target: "steadfast::activity",
                activity = activity.as_str(),
                instance = instance.as_str(),
                stream,
                "{message}"
            ),
            Source::Workflow { workflow, instance } => at_level!(
                level,
                target: "steadfast::workflow",
                instance = instance.as_str(),
                workflow = workflow.as_str(),
                "{message}"
            ),
        }
    }

    /// Says how much the budget cut since the last report, if anything.
    fn report_dropped(&mut self) {
        let dropped = std::mem::take(&mut self.dropped);
        if dropped > 0 {
            let message = format!(
                "{dropped} bytes of log output dropped: a guest may log {LOG_BUDGET_BYTES} \
                 bytes per activity call or workflow step"
            );
            self.write_line(Level::WARN, "log", &message);
        }
    }

    /// Splits what the guest wrote into lines; a line too long to wait for its newline is
    /// written in pieces.
    fn write(&mut self, stream: Stream, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            let room = MAX_LINE_BYTES - self.partial[stream as usize].len();
            let (line_end, take) = match bytes.iter().position(|&b| b == b'\n') {
                Some(at) if at <= room => (true, at + 1),
                _ => (bytes.len() >= room, bytes.len().min(room)),
            };
            let (chunk, rest) = bytes.split_at(take);
            bytes = rest;
            let chunk = chunk.strip_suffix(b"\n").unwrap_or(chunk);
            self.partial[stream as usize].extend_from_slice(chunk);
            if line_end {
                self.flush_line(stream);
            }
        }
    }

    fn flush_line(&mut self, stream: Stream) {
        let line = std::mem::take(&mut self.partial[stream as usize]);
        let text = String::from_utf8_lossy(&line);
        let text = text.strip_suffix('\r').unwrap_or(&text);
        self.emit(stream.level(), stream.name(), text);
    }
}

impl Drop for LogState {
    /// The call or activation is over: writes what is left of unfinished lines and says
    /// what the budget cut.
    fn drop(&mut self) {
        for stream in [Stream::Stdout, Stream::Stderr] {
            if !self.partial[stream as usize].is_empty() {
                self.flush_line(stream);
            }
        }
        self.report_dropped();
    }
}

/// An activity's stdout or stderr: every write is accepted and goes to its [`GuestLog`].
#[derive(Clone)]
pub(crate) struct GuestStdio {
    log: GuestLog,
    stream: Stream,
}

impl wasmtime_wasi::cli::IsTerminal for GuestStdio {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl wasmtime_wasi::cli::StdoutStream for GuestStdio {
    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        self.log.state().wrote_stdio = true;
        Box::new(self.clone())
    }
}

impl AsyncWrite for GuestStdio {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let mut state = self.log.state();
        state.wrote_stdio = true;
        state.write(self.stream, buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn written(log: &GuestLog) -> (usize, usize, Vec<u8>) {
        let state = log.state();
        (state.left, state.dropped, state.partial[0].clone())
    }

    #[test]
    fn lines_are_split_at_newlines_and_charged_to_the_budget() {
        let log = GuestLog::activity("a", "i");
        log.state().write(Stream::Stdout, b"one\ntwo\nthr");
        let (left, dropped, partial) = written(&log);
        assert_eq!(left, LOG_BUDGET_BYTES - 6);
        assert_eq!(dropped, 0);
        assert_eq!(partial, b"thr");
        log.state().write(Stream::Stdout, b"ee\n");
        assert_eq!(written(&log).0, LOG_BUDGET_BYTES - 11);
        assert!(written(&log).2.is_empty());
    }

    #[test]
    fn a_line_longer_than_the_cap_is_written_in_pieces() {
        let log = GuestLog::activity("a", "i");
        log.state()
            .write(Stream::Stderr, &vec![b'x'; MAX_LINE_BYTES * 2 + 5]);
        let state = log.state();
        assert_eq!(state.left, LOG_BUDGET_BYTES - 2 * MAX_LINE_BYTES);
        assert_eq!(state.partial[1].len(), 5);
    }

    #[test]
    fn output_over_the_budget_is_counted_not_written() {
        let log = GuestLog::activity("a", "i");
        let line = "y".repeat(1000);
        for _ in 0..100 {
            log.line(Level::INFO, &line);
        }
        let (left, dropped, _) = written(&log);
        assert_eq!(left, LOG_BUDGET_BYTES - 65 * 1000);
        assert_eq!(dropped, 35 * 1000);
    }

    #[test]
    fn a_workflow_gets_a_fresh_budget_each_step() {
        let log = GuestLog::workflow("w", "i");
        log.line(Level::INFO, &"z".repeat(LOG_BUDGET_BYTES));
        log.line(Level::INFO, "over");
        assert_eq!((written(&log).0, written(&log).1), (0, 4));
        log.next_step();
        assert_eq!((written(&log).0, written(&log).1), (LOG_BUDGET_BYTES, 0));
    }

    #[test]
    fn a_guest_line_cannot_forge_a_host_line() {
        let forged = "ok\n2026-11-30T10:00:00Z  INFO steadfast: admin token rotated\r\u{1b}[2J";
        let escaped = escape(forged);
        assert!(!escaped.chars().any(char::is_control), "{escaped}");
        assert_eq!(
            escaped,
            "ok\\n2026-11-30T10:00:00Z  INFO steadfast: admin token rotated\\r\\u{1b}[2J"
        );
        assert!(matches!(
            escape("plain text"),
            std::borrow::Cow::Borrowed(_)
        ));
    }
}
