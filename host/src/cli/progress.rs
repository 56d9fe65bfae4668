//! Progress for people: a spinner or bar on standard error while a long command runs.
//!
//! Shown only on a terminal, and never with `-o json`: a script reading the output sees
//! exactly what it would without it.

use std::io::IsTerminal as _;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

/// A spinner, or nothing when no one is watching.
#[derive(Debug)]
pub(crate) struct Progress(Option<ProgressBar>);

impl Progress {
    /// A spinner with `message`, unless `quiet` or standard error is not a terminal.
    pub(crate) fn spinner(quiet: bool, message: impl Into<String>) -> Progress {
        if quiet || !std::io::stderr().is_terminal() {
            return Progress(None);
        }
        let bar = ProgressBar::new_spinner();
        bar.set_style(
            ProgressStyle::with_template("{spinner} {msg} ({elapsed})")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        );
        bar.set_message(message.into());
        bar.enable_steady_tick(Duration::from_millis(120));
        Progress(Some(bar))
    }

    /// Whether anything is drawn.
    pub(crate) fn is_shown(&self) -> bool {
        self.0.is_some()
    }

    pub(crate) fn set_message(&self, message: impl Into<String>) {
        if let Some(bar) = &self.0 {
            bar.set_message(message.into());
        }
    }

    /// Prints a line above the spinner (or just prints it when there is none).
    pub(crate) fn println(&self, line: impl AsRef<str>) {
        match &self.0 {
            Some(bar) if !bar.is_finished() => bar.println(line),
            _ => println!("{}", line.as_ref()),
        }
    }

    /// Removes the spinner.
    pub(crate) fn clear(&self) {
        if let Some(bar) = &self.0 {
            bar.finish_and_clear();
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.clear();
    }
}
