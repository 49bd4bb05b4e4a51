//! The Prometheus text exposition format, version 0.0.4: `# HELP` and `# TYPE` lines per
//! metric family, then one `name{label="value",...} value` line per sample. Pure string
//! building, so the format is unit-tested without a server.
//!
//! Label values are escaped (`\` → `\\`, `"` → `\"`, newline → `\n`), HELP text likewise
//! except for quotes. Histograms are written as cumulative `_bucket{le="..."}` samples
//! ending with `le="+Inf"`, then `_sum` and `_count` (equal to the `+Inf` bucket).

use std::fmt::Write;

/// The `Content-Type` of this format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4";

/// Metric family types used here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }
}

/// Label pairs of one sample.
pub type Labels<'a> = &'a [(&'a str, &'a str)];

/// A histogram as read at scrape time: per-bucket (not cumulative) counts for each upper
/// bound in `bounds`, the count above the last bound, and the sum of observations.
#[derive(Debug, Clone, PartialEq)]
pub struct HistogramValue<'a> {
    /// Upper bounds in seconds, ascending.
    pub bounds: &'a [f64],
    /// `counts[i]`: observations in `(bounds[i-1], bounds[i]]`; `counts.len() == bounds.len()`.
    pub counts: Vec<u64>,
    /// Observations above the last bound.
    pub overflow: u64,
    /// Sum of observations, in seconds.
    pub sum: f64,
}

/// Builds one exposition text.
#[derive(Default)]
pub struct TextWriter {
    out: String,
}

impl TextWriter {
    /// Starts a metric family: its HELP and TYPE lines.
    pub fn family(&mut self, name: &str, kind: Kind, help: &str) {
        let _ = writeln!(
            self.out,
            "# HELP {name} {}\n# TYPE {name} {}",
            escape_help(help),
            kind.as_str()
        );
    }

    /// One sample with an integer value.
    pub fn sample(&mut self, name: &str, labels: Labels<'_>, value: u64) {
        self.name_and_labels(name, labels, None);
        let _ = writeln!(self.out, " {value}");
    }

    /// One sample with a floating-point value.
    pub fn sample_f64(&mut self, name: &str, labels: Labels<'_>, value: f64) {
        self.name_and_labels(name, labels, None);
        let _ = writeln!(self.out, " {}", format_f64(value));
    }

    /// The samples of one histogram (the family line must come first): cumulative buckets,
    /// `+Inf`, `_sum`, `_count`.
    pub fn histogram(&mut self, name: &str, labels: Labels<'_>, h: &HistogramValue<'_>) {
        let bucket = format!("{name}_bucket");
        let mut cumulative = 0u64;
        for (bound, count) in h.bounds.iter().zip(&h.counts) {
            cumulative = cumulative.saturating_add(*count);
            self.name_and_labels(&bucket, labels, Some(&format_f64(*bound)));
            let _ = writeln!(self.out, " {cumulative}");
        }
        cumulative = cumulative.saturating_add(h.overflow);
        self.name_and_labels(&bucket, labels, Some("+Inf"));
        let _ = writeln!(self.out, " {cumulative}");
        self.sample_f64(&format!("{name}_sum"), labels, h.sum);
        self.sample(&format!("{name}_count"), labels, cumulative);
    }

    /// The finished text.
    pub fn finish(self) -> String {
        self.out
    }

    fn name_and_labels(&mut self, name: &str, labels: Labels<'_>, le: Option<&str>) {
        self.out.push_str(name);
        if labels.is_empty() && le.is_none() {
            return;
        }
        self.out.push('{');
        let mut first = true;
        let le = le.map(|v| ("le", v));
        for (k, v) in labels.iter().copied().chain(le) {
            if !first {
                self.out.push(',');
            }
            first = false;
            let _ = write!(self.out, "{k}=\"{}\"", escape_label_value(v));
        }
        self.out.push('}');
    }
}

/// A label value with `\`, `"` and newlines escaped.
pub fn escape_label_value(v: &str) -> String {
    let mut s = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => s.push_str("\\\\"),
            '"' => s.push_str("\\\""),
            '\n' => s.push_str("\\n"),
            c => s.push(c),
        }
    }
    s
}

/// HELP text with `\` and newlines escaped.
fn escape_help(v: &str) -> String {
    v.replace('\\', "\\\\").replace('\n', "\\n")
}

/// A float as the format writes it: `+Inf`, `-Inf`, `NaN`, or Rust's shortest decimal
/// (never an exponent, always parseable by Prometheus).
fn format_f64(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v == f64::INFINITY {
        "+Inf".into()
    } else if v == f64::NEG_INFINITY {
        "-Inf".into()
    } else {
        format!("{v}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape_label_value(r#"a"b\c"#), r#"a\"b\\c"#);
        assert_eq!(escape_label_value("x\ny"), "x\\ny");
        assert_eq!(
            escape_label_value("iqn.2024-01.org.example:pve"),
            "iqn.2024-01.org.example:pve"
        );
        let mut w = TextWriter::default();
        w.sample("m", &[("target", "t\"1"), ("lun", "0")], 7);
        assert_eq!(w.finish(), "m{target=\"t\\\"1\",lun=\"0\"} 7\n");
    }

    #[test]
    fn family_lines_and_plain_samples() {
        let mut w = TextWriter::default();
        w.family("x_total", Kind::Counter, "Things\\stuff\nmore.");
        w.sample("x_total", &[], 3);
        w.family("g", Kind::Gauge, "A gauge.");
        w.sample_f64("g", &[("a", "b")], 0.5);
        assert_eq!(
            w.finish(),
            "# HELP x_total Things\\\\stuff\\nmore.\n# TYPE x_total counter\nx_total 3\n\
             # HELP g A gauge.\n# TYPE g gauge\ng{a=\"b\"} 0.5\n"
        );
    }

    #[test]
    fn histogram_buckets_are_cumulative_with_sum_and_count() {
        let bounds = [0.001, 0.01, 0.1];
        let h = HistogramValue {
            bounds: &bounds,
            counts: vec![2, 0, 3],
            overflow: 1,
            sum: 1.25,
        };
        let mut w = TextWriter::default();
        w.histogram("lat_seconds", &[("lun", "1")], &h);
        assert_eq!(
            w.finish(),
            "lat_seconds_bucket{lun=\"1\",le=\"0.001\"} 2\n\
             lat_seconds_bucket{lun=\"1\",le=\"0.01\"} 2\n\
             lat_seconds_bucket{lun=\"1\",le=\"0.1\"} 5\n\
             lat_seconds_bucket{lun=\"1\",le=\"+Inf\"} 6\n\
             lat_seconds_sum{lun=\"1\"} 1.25\n\
             lat_seconds_count{lun=\"1\"} 6\n"
        );
    }

    #[test]
    fn floats_never_use_exponents() {
        assert_eq!(format_f64(0.0001), "0.0001");
        assert_eq!(format_f64(10.0), "10");
        assert_eq!(format_f64(f64::INFINITY), "+Inf");
        assert_eq!(format_f64(1e-9), "0.000000001");
    }
}
