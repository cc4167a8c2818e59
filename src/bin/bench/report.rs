//! A line of the report table, and how its figures are written.

use std::time::Duration;

/// One line of the report table.
pub(crate) struct Row {
    pub(crate) part: &'static str,
    pub(crate) measure: String,
    pub(crate) executor: String,
    pub(crate) baseline: String,
    pub(crate) ratio: String,
    pub(crate) target: String,
    pub(crate) met: Option<bool>,
}

impl Row {
    pub(crate) fn new(part: &'static str, measure: impl Into<String>) -> Row {
        Row {
            part,
            measure: measure.into(),
            executor: String::new(),
            baseline: String::new(),
            ratio: String::new(),
            target: String::new(),
            met: None,
        }
    }
    pub(crate) fn executor(mut self, v: impl Into<String>) -> Row {
        self.executor = v.into();
        self
    }
    pub(crate) fn baseline(mut self, v: impl Into<String>) -> Row {
        self.baseline = v.into();
        self
    }
    pub(crate) fn ratio(mut self, v: impl Into<String>) -> Row {
        self.ratio = v.into();
        self
    }
    pub(crate) fn target(mut self, v: impl Into<String>, met: bool) -> Row {
        self.target = v.into();
        self.met = Some(met);
        self
    }
}

/// The `p` quantile (0.0–1.0) of `sorted` durations, by nearest rank; zero when empty.
pub(crate) fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

pub(crate) fn ratio(a: Duration, b: Duration) -> f64 {
    a.as_secs_f64() / b.as_secs_f64().max(1e-9)
}

pub(crate) fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}
