//! What the client prints: aligned tables and key–value blocks for a person (control
//! characters in values become spaces, so a display name cannot move the cursor or colour the
//! terminal), pretty JSON for a script, and the human forms of the API's values.

use std::io::Write;

use serde_json::Value;

use super::ClientError;

/// A table of left-aligned columns separated by two spaces, with a header row.
#[derive(Debug, Default)]
pub struct Table {
    headers: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(headers: &[&str]) -> Table {
        Table {
            headers: headers.iter().map(|h| (*h).to_owned()).collect(),
            rows: Vec::new(),
        }
    }

    /// One row; missing cells are empty, extra ones are dropped.
    pub fn row(&mut self, cells: Vec<String>) {
        let mut cells: Vec<String> = cells.into_iter().map(|c| clean(&c)).collect();
        cells.resize(self.headers.len(), String::new());
        self.rows.push(cells);
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The table as text, each line without trailing spaces.
    pub fn render(&self) -> String {
        let mut widths: Vec<usize> = self.headers.iter().map(|h| width(h)).collect();
        for row in &self.rows {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(width(cell));
            }
        }
        let mut out = String::new();
        for row in std::iter::once(&self.headers).chain(&self.rows) {
            let mut line = String::new();
            for (i, (cell, w)) in row.iter().zip(&widths).enumerate() {
                if i > 0 {
                    line.push_str("  ");
                }
                line.push_str(cell);
                line.extend(std::iter::repeat_n(' ', w - width(cell)));
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

/// Key–value lines with the values aligned.
pub fn key_values(pairs: &[(&str, String)]) -> String {
    let w = pairs.iter().map(|(k, _)| width(k)).max().unwrap_or(0) + 1;
    let mut out = String::new();
    for (k, v) in pairs {
        let key = format!("{k}:");
        out.push_str(&key);
        out.extend(std::iter::repeat_n(' ', w + 1 - width(&key)));
        out.push_str(&clean(v));
        out.truncate(out.trim_end().len());
        out.push('\n');
    }
    out
}

/// Characters on screen (a good enough width for names; no wide-character tables).
fn width(s: &str) -> usize {
    s.chars().count()
}

/// Control characters (newlines, tabs, escapes) as spaces.
pub fn clean(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// Writes `text` to stdout; a closed pipe (`| head`) is not an error.
pub fn print(text: &str) -> Result<(), ClientError> {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(ClientError::io("cannot write to stdout", e))
        }
        _ => Ok(()),
    }
}

/// A JSON value, pretty, on stdout.
pub fn print_json(v: &Value) -> Result<(), ClientError> {
    let mut text = serde_json::to_string_pretty(v)
        .map_err(|e| ClientError::Protocol(format!("cannot write JSON: {e}")))?;
    text.push('\n');
    print(&text)
}

/// A field of a JSON object as text: strings as they are, `null`/absent as `-`, other values
/// as compact JSON.
pub fn field(v: &Value, key: &str) -> String {
    text(v.get(key).unwrap_or(&Value::Null))
}

pub fn text(v: &Value) -> String {
    match v {
        Value::Null => "-".to_owned(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// A schedule as the API writes it, in words.
pub fn schedule(v: &Value) -> String {
    match v.get("kind").and_then(Value::as_str) {
        Some("daily") => format!("daily at {} UTC", field(v, "atUtc")),
        Some("interval") => format!("every {} s", field(v, "seconds")),
        Some("off") => "off".to_owned(),
        _ => text(v),
    }
}

/// A job view's `tasks` as `done/total`.
pub fn tasks(job: &Value) -> String {
    let t = job.get("tasks").unwrap_or(&Value::Null);
    match (t.get("done"), t.get("total")) {
        (Some(d), Some(n)) => format!("{d}/{n}"),
        _ => "-".to_owned(),
    }
}

/// A job view's `counts` as `name n, ...` (`-` when empty).
pub fn counts(job: &Value) -> String {
    match job.get("counts").and_then(Value::as_object) {
        Some(m) if !m.is_empty() => m
            .iter()
            .map(|(k, v)| format!("{k} {}", text(v)))
            .collect::<Vec<_>>()
            .join(", "),
        _ => "-".to_owned(),
    }
}

/// A job view as key–value lines.
pub fn job_view(job: &Value) -> String {
    key_values(&[
        ("job", field(job, "id")),
        ("tenant", field(job, "tenant")),
        ("kind", field(job, "kind")),
        ("status", field(job, "status")),
        ("phase", field(job, "phase")),
        ("tasks", tasks(job)),
        ("backup", field(job, "backup")),
        ("snapshot", field(job, "snapshot")),
        ("counts", counts(job)),
        ("created", field(job, "createdDateTime")),
        ("updated", field(job, "updatedDateTime")),
        ("completed", field(job, "completedDateTime")),
        ("error", field(job, "error")),
    ])
}

/// The `value` array of a collection (empty when absent).
pub fn values(v: &Value) -> &[Value] {
    v.get("value")
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn tables_align_their_columns() {
        let mut t = Table::new(&["ID", "NAME", "ACTION"]);
        t.row(vec!["1".into(), "Ada Lovelace".into(), "update".into()]);
        t.row(vec!["22".into(), "Bo".into(), "softDelete".into()]);
        t.row(vec!["333".into(), "Émile\n\u{1b}[31mX".into()]);
        let want = "\
ID   NAME          ACTION
1    Ada Lovelace  update
22   Bo            softDelete
333  Émile  [31mX
";
        assert_eq!(t.render(), want);
        assert!(!t.is_empty());
        assert_eq!(Table::new(&["A", "B"]).render(), "A  B\n");
    }

    #[test]
    fn key_values_align_their_values() {
        let text = key_values(&[("job", "j1".into()), ("completed", "-".into())]);
        assert_eq!(text, "job:       j1\ncompleted: -\n");
    }

    #[test]
    fn api_values_in_words() {
        let cases = [
            (
                json!({"kind": "daily", "atUtc": "02:00"}),
                "daily at 02:00 UTC",
            ),
            (json!({"kind": "interval", "seconds": 60}), "every 60 s"),
            (json!({"kind": "off"}), "off"),
            (json!({"kind": "weekly"}), r#"{"kind":"weekly"}"#),
        ];
        for (v, want) in cases {
            assert_eq!(schedule(&v), want);
        }
        let job = json!({"tasks": {"total": 3, "done": 1}, "counts": {"entries": 2, "update": 2}});
        assert_eq!(tasks(&job), "1/3");
        assert_eq!(counts(&job), "entries 2, update 2");
        assert_eq!(counts(&json!({"counts": {}})), "-");
        assert_eq!(field(&json!({"a": null, "b": 3}), "a"), "-");
        assert_eq!(field(&json!({"a": null, "b": 3}), "b"), "3");
        let view = job_view(&json!({"id": "j", "status": "running"}));
        assert!(view.starts_with("job:       j\n"), "{view}");
        assert!(view.contains("status:    running\n"), "{view}");
    }
}
