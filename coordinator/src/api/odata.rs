//! The OData query options the API takes: `$top`, `$skip`, `$skiptoken` and a small
//! `$filter` (`field eq 'v'`, `field ne 'v'`, `startswith(field,'v')`, joined by `and`), each
//! checked against what the route allows, with a 400 naming the option and the value.

use super::error::ApiError;

/// A comparison of a `$filter`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    Eq,
    Ne,
    StartsWith,
}

impl Op {
    fn name(self) -> &'static str {
        match self {
            Op::Eq => "eq",
            Op::Ne => "ne",
            Op::StartsWith => "startswith",
        }
    }

    /// Whether `value` passes this comparison with `literal`.
    pub fn test(self, value: &str, literal: &str) -> bool {
        match self {
            Op::Eq => value == literal,
            Op::Ne => value != literal,
            Op::StartsWith => value.starts_with(literal),
        }
    }
}

/// One clause of a `$filter`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Clause {
    pub field: String,
    pub op: Op,
    pub value: String,
}

/// The query options of a request.
#[derive(Clone, Debug, Default)]
pub struct Query {
    pub top: Option<u64>,
    pub skip: Option<u64>,
    pub skiptoken: Option<String>,
    pub filter: Vec<Clause>,
    /// The `$filter` as given (for next links).
    pub filter_text: Option<String>,
}

/// The largest `$top`.
pub const MAX_TOP: u64 = 999;

impl Query {
    /// Parses a raw query string; `allowed` names the `$` options the route takes (others are
    /// a 400), `fields` what its `$filter` may test and with which operators.
    pub fn parse(
        raw: Option<&str>,
        allowed: &[&str],
        fields: &[(&str, &[Op])],
    ) -> Result<Query, ApiError> {
        let pairs: Vec<(String, String)> = serde_urlencoded::from_str(raw.unwrap_or(""))
            .map_err(|e| ApiError::bad_request(format!("malformed query string: {e}")))?;
        let mut q = Query::default();
        for (name, value) in pairs {
            if !name.starts_with('$') {
                continue;
            }
            if !allowed.contains(&name.as_str()) {
                return Err(ApiError::bad_request(format!(
                    "the query option {name} is not supported here (supported: {})",
                    allowed.join(", ")
                )));
            }
            match name.as_str() {
                "$top" => {
                    let n = parse_count(&name, &value)?;
                    if n == 0 || n > MAX_TOP {
                        return Err(ApiError::bad_request(format!(
                            "$top must be 1 to {MAX_TOP}, not {value}"
                        )));
                    }
                    q.top = Some(n);
                }
                "$skip" => q.skip = Some(parse_count(&name, &value)?),
                "$skiptoken" => q.skiptoken = Some(value),
                "$filter" => {
                    q.filter = parse_filter(&value, fields)?;
                    q.filter_text = Some(value);
                }
                _ => {}
            }
        }
        Ok(q)
    }
}

fn parse_count(name: &str, value: &str) -> Result<u64, ApiError> {
    value.trim().parse::<u64>().map_err(|_| {
        ApiError::bad_request(format!(
            "{name} must be a whole number of at least 0, not {value:?}"
        ))
    })
}

#[derive(Debug, PartialEq)]
enum Token {
    Word(String),
    Str(String),
    Open,
    Close,
    Comma,
}

fn tokens(text: &str) -> Result<Vec<Token>, ApiError> {
    let mut out = Vec::new();
    let mut chars = text.chars().peekable();
    while let Some(&c) = chars.peek() {
        match c {
            c if c.is_whitespace() => {
                chars.next();
            }
            '(' | ')' | ',' => {
                chars.next();
                out.push(match c {
                    '(' => Token::Open,
                    ')' => Token::Close,
                    _ => Token::Comma,
                });
            }
            '\'' => {
                chars.next();
                let mut s = String::new();
                loop {
                    match chars.next() {
                        Some('\'') if chars.peek() == Some(&'\'') => {
                            chars.next();
                            s.push('\'');
                        }
                        Some('\'') => break,
                        Some(c) => s.push(c),
                        None => {
                            return Err(ApiError::bad_request(format!(
                                "$filter {text:?}: a string literal is not closed"
                            )))
                        }
                    }
                }
                out.push(Token::Str(s));
            }
            _ => {
                let mut w = String::new();
                while let Some(&c) = chars.peek() {
                    if c.is_whitespace() || matches!(c, '(' | ')' | ',' | '\'') {
                        break;
                    }
                    w.push(c);
                    chars.next();
                }
                out.push(Token::Word(w));
            }
        }
    }
    Ok(out)
}

/// Parses `clause (and clause)*`.
pub fn parse_filter(text: &str, fields: &[(&str, &[Op])]) -> Result<Vec<Clause>, ApiError> {
    let bad = |why: String| ApiError::bad_request(format!("$filter {text:?}: {why}"));
    let toks = tokens(text)?;
    let mut clauses = Vec::new();
    let mut i = 0;
    loop {
        let clause = match toks.get(i..) {
            Some(
                [Token::Word(f), Token::Open, Token::Word(field), Token::Comma, Token::Str(v), Token::Close, ..],
            ) if f.eq_ignore_ascii_case("startswith") => {
                i += 6;
                Clause {
                    field: field.clone(),
                    op: Op::StartsWith,
                    value: v.clone(),
                }
            }
            Some([Token::Word(field), Token::Word(op), value, ..]) => {
                let op = match op.to_ascii_lowercase().as_str() {
                    "eq" => Op::Eq,
                    "ne" => Op::Ne,
                    other => {
                        return Err(bad(format!(
                            "the operator {other} is not supported (eq, ne, startswith)"
                        )))
                    }
                };
                let value = match value {
                    Token::Str(s) | Token::Word(s) => s.clone(),
                    _ => return Err(bad("a comparison needs a value".into())),
                };
                i += 3;
                Clause {
                    field: field.clone(),
                    op,
                    value,
                }
            }
            _ => {
                return Err(bad(
                    "expected field eq 'value', field ne 'value' or startswith(field,'value')"
                        .into(),
                ))
            }
        };
        let Some((_, ops)) = fields.iter().find(|(f, _)| *f == clause.field) else {
            let names: Vec<&str> = fields.iter().map(|(f, _)| *f).collect();
            return Err(bad(format!(
                "cannot filter on {} (supported: {})",
                clause.field,
                names.join(", ")
            )));
        };
        if !ops.contains(&clause.op) {
            return Err(bad(format!(
                "{} does not support {}",
                clause.field,
                clause.op.name()
            )));
        }
        clauses.push(clause);
        match toks.get(i) {
            None => return Ok(clauses),
            Some(Token::Word(w)) if w.eq_ignore_ascii_case("and") => i += 1,
            Some(t) => return Err(bad(format!("unexpected {t:?} (clauses are joined by and)"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NAMES: &[(&str, &[Op])] = &[("displayName", &[Op::Eq, Op::Ne, Op::StartsWith])];

    #[test]
    fn filters_parse_and_bad_ones_are_named() {
        let c = parse_filter("startswith(displayName,'O''Brien')", NAMES).unwrap();
        assert_eq!(c[0].value, "O'Brien");
        assert_eq!(c[0].op, Op::StartsWith);
        let c = parse_filter("displayName eq 'a b' and displayName ne 'c'", NAMES).unwrap();
        assert_eq!(c.len(), 2);
        for (text, needle) in [
            ("mail eq 'x'", "cannot filter on mail"),
            ("displayName gt 'x'", "gt"),
            ("displayName eq 'x", "not closed"),
            ("displayName eq 'x' or displayName eq 'y'", "and"),
        ] {
            let e = parse_filter(text, NAMES).unwrap_err().message;
            assert!(e.contains(needle), "{text}: {e}");
        }
    }

    #[test]
    fn top_and_skip_are_checked() {
        let q = Query::parse(Some("$top=5&$skip=10"), &["$top", "$skip"], NAMES).unwrap();
        assert_eq!((q.top, q.skip), (Some(5), Some(10)));
        for raw in ["$top=1000", "$top=0", "$skip=-1", "$top=x", "$orderby=id"] {
            let e = Query::parse(Some(raw), &["$top", "$skip"], NAMES).unwrap_err();
            assert_eq!(e.status, axum::http::StatusCode::BAD_REQUEST, "{raw}");
        }
    }
}
