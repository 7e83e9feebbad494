//! The progress of a stage on stderr: a spinner line per item on a terminal, timestamped plain
//! lines prefixed with the item's name elsewhere (CI, pipes, `-o json`).

use std::collections::HashMap;
use std::io::Write;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::progress::Progress;

use super::output::OutputFormat;

/// [`Progress`] drawn on stderr.
pub enum Terminal {
    Live {
        bars: indicatif::MultiProgress,
        items: Mutex<HashMap<String, indicatif::ProgressBar>>,
    },
    Plain {
        start: Instant,
    },
}

impl Terminal {
    /// Live lines on a terminal (unless `CI` is set or the output is JSON), plain lines otherwise.
    pub fn for_output(format: OutputFormat) -> Self {
        use std::io::IsTerminal;
        let live = format == OutputFormat::Text
            && std::io::stderr().is_terminal()
            && std::env::var_os("CI").is_none();
        if live {
            Terminal::Live {
                bars: indicatif::MultiProgress::new(),
                items: Mutex::default(),
            }
        } else {
            Terminal::Plain {
                start: Instant::now(),
            }
        }
    }
}

fn spinner(bars: &indicatif::MultiProgress, item: &str) -> indicatif::ProgressBar {
    let bar = bars.add(indicatif::ProgressBar::new_spinner());
    bar.set_style(
        indicatif::ProgressStyle::with_template("{spinner} {prefix:.bold} {wide_msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
    );
    bar.set_prefix(item.to_string());
    bar.enable_steady_tick(Duration::from_millis(120));
    bar
}

impl Progress for Terminal {
    fn update(&self, item: &str, message: &str) {
        match self {
            Terminal::Live { bars, items } => {
                let mut items = items.lock().unwrap_or_else(PoisonError::into_inner);
                items
                    .entry(item.to_string())
                    .or_insert_with(|| spinner(bars, item))
                    .set_message(message.to_string());
            }
            Terminal::Plain { start } => {
                // A closed stderr (a pipe whose reader went away) must not stop the work.
                let _ = writeln!(
                    std::io::stderr(),
                    "[{:>7.2}s] {item}: {message}",
                    start.elapsed().as_secs_f64()
                );
            }
        }
    }

    fn finish(&self, item: &str, message: &str) {
        match self {
            Terminal::Live { items, .. } => {
                let items = items.lock().unwrap_or_else(PoisonError::into_inner);
                if let Some(bar) = items.get(item) {
                    bar.finish_with_message(message.to_string());
                }
            }
            Terminal::Plain { .. } => self.update(item, message),
        }
    }
}
