//! What the Prometheus text format asks of the values we write into it.

/// A label value, escaped: backslash, double quote, and no line breaks.
pub fn label(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', " ")
}

/// One metric family: its `# HELP` and `# TYPE` lines, then one sample per
/// row (`label="value"` pairs already escaped, and the value).
pub fn family(out: &mut String, name: &str, kind: &str, help: &str, rows: &[(String, u64)]) {
    use std::fmt::Write as _;
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
    for (labels, value) in rows {
        let _ = writeln!(out, "{name}{{{labels}}} {value}");
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn label_values_are_escaped() {
        assert_eq!(super::label("a\"b\\c\nd"), "a\\\"b\\\\c d");
    }

    #[test]
    fn a_family_has_its_head_and_rows() {
        let mut out = String::new();
        super::family(
            &mut out,
            "x_total",
            "counter",
            "Xs.",
            &[("a=\"1\"".into(), 2)],
        );
        assert_eq!(
            out,
            "# HELP x_total Xs.\n# TYPE x_total counter\nx_total{a=\"1\"} 2\n"
        );
    }
}
