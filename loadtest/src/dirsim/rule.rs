//! Dynamic membership rules (`user.department -eq "Sales"`): a small subset of Entra's rule
//! language that the simulator evaluates itself to recompute dynamic groups' members.
//!
//! Supported: `user.<property> <op> <value>` with `-eq`, `-ne`, `-startsWith`, `-contains`,
//! `-notContains`, values in double quotes (or `true`/`false`/`null`), clauses joined by `-and`
//! or `-or` (`-and` binds tighter), optional parentheses around a whole clause. Comparisons are
//! case-insensitive, as in Entra.

use rewind_common::{properties, DirectoryObject, ObjectType, Value};

/// Why a rule could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unsupported membership rule: {0}")]
pub struct RuleError(pub String);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Eq,
    Ne,
    StartsWith,
    Contains,
    NotContains,
}

#[derive(Debug, Clone, PartialEq)]
struct Clause {
    property: u8,
    op: Op,
    /// Lowercased; `None` for `null`.
    value: Option<String>,
}

/// A parsed rule: a disjunction of conjunctions of clauses.
#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    any_of: Vec<Vec<Clause>>,
}

impl Rule {
    pub fn parse(text: &str) -> Result<Self, RuleError> {
        let err = || RuleError(text.to_owned());
        let mut any_of = Vec::new();
        for alternative in split_keyword(text, "-or") {
            let mut all_of = Vec::new();
            for clause in split_keyword(&alternative, "-and") {
                all_of.push(parse_clause(&clause).ok_or_else(err)?);
            }
            any_of.push(all_of);
        }
        if any_of.is_empty() {
            return Err(err());
        }
        Ok(Self { any_of })
    }

    /// Whether the user matches (the caller checks that the user is active).
    pub fn matches(&self, user: &DirectoryObject) -> bool {
        self.any_of
            .iter()
            .any(|all| all.iter().all(|c| clause_matches(c, user)))
    }

    /// For each alternative, one `(property, lowercased value)` that it requires through an
    /// `-eq "value"` clause; `None` when some alternative has no such clause.
    pub fn required_values(&self) -> Option<Vec<(u8, String)>> {
        let mut keys: Vec<(u8, String)> = self
            .any_of
            .iter()
            .map(|all| {
                all.iter().find_map(|c| match (&c.op, &c.value) {
                    (Op::Eq, Some(v)) => Some((c.property, v.clone())),
                    _ => None,
                })
            })
            .collect::<Option<_>>()?;
        keys.sort();
        keys.dedup();
        Some(keys)
    }

    /// Whether every alternative is one `-eq "value"` clause (then a user matches exactly when
    /// it carries one of [`Self::required_values`]).
    pub fn is_any_of_equalities(&self) -> bool {
        self.any_of.iter().all(|all| {
            matches!(
                all.as_slice(),
                [Clause {
                    op: Op::Eq,
                    value: Some(_),
                    ..
                }]
            )
        })
    }
}

/// Calls `f` with a user property's text as rules compare it (strings lowercased, booleans
/// and integers written out, anything else or an absent property as `None`), lowercasing
/// short ASCII text on the stack rather than allocating.
pub fn with_property_text<R>(
    user: &DirectoryObject,
    property: u8,
    f: impl FnOnce(Option<&str>) -> R,
) -> R {
    let value = user
        .attributes
        .binary_search_by_key(&property, |(p, _)| *p)
        .ok()
        .map(|i| &user.attributes[i].1);
    match value {
        Some(Value::String(s)) => with_lowercase(s, |l| f(Some(l))),
        Some(Value::Bool(b)) => f(Some(if *b { "true" } else { "false" })),
        Some(Value::Int(n)) => f(Some(&n.to_string())),
        _ => f(None),
    }
}

/// Calls `f` with `s` lowercased (as `str::to_lowercase` does), without allocating when `s` is
/// short ASCII.
fn with_lowercase<R>(s: &str, f: impl FnOnce(&str) -> R) -> R {
    const STACK: usize = 256;
    if s.len() <= STACK && s.is_ascii() {
        if !s.bytes().any(|b| b.is_ascii_uppercase()) {
            return f(s);
        }
        let mut buf = [0u8; STACK];
        let lowered = &mut buf[..s.len()];
        lowered.copy_from_slice(s.as_bytes());
        lowered.make_ascii_lowercase();
        // Lowercasing ASCII bytes keeps them ASCII, hence valid UTF-8.
        match std::str::from_utf8(lowered) {
            Ok(l) => f(l),
            Err(_) => f(&s.to_lowercase()),
        }
    } else {
        f(&s.to_lowercase())
    }
}

/// Splits on a keyword surrounded by whitespace, case-insensitively, outside quotes.
fn split_keyword(text: &str, keyword: &str) -> Vec<String> {
    let mut parts = Vec::new();
    let mut current = String::new();
    let mut in_quotes = false;
    let words: Vec<&str> = text.split(' ').collect();
    for word in words {
        let quotes = word.matches('"').count();
        if !in_quotes && word.eq_ignore_ascii_case(keyword) {
            parts.push(std::mem::take(&mut current));
            continue;
        }
        if !current.is_empty() {
            current.push(' ');
        }
        current.push_str(word);
        if quotes % 2 == 1 {
            in_quotes = !in_quotes;
        }
    }
    parts.push(current);
    parts
        .into_iter()
        .map(|p| p.trim().to_owned())
        .filter(|p| !p.is_empty())
        .collect()
}

fn parse_clause(text: &str) -> Option<Clause> {
    let mut text = text.trim();
    while text.starts_with('(') && text.ends_with(')') && text.len() >= 2 {
        text = text[1..text.len() - 1].trim();
    }
    let (subject, rest) = text.split_once(char::is_whitespace)?;
    let (op, value) = rest.trim().split_once(char::is_whitespace)?;
    let name = subject.strip_prefix("user.").or_else(|| {
        subject
            .get(..5)
            .filter(|p| p.eq_ignore_ascii_case("user."))
            .map(|_| &subject[5..])
    })?;
    let property = properties::properties(ObjectType::User)
        .iter()
        .position(|p| p.name.eq_ignore_ascii_case(name))
        .and_then(|i| u8::try_from(i).ok())?;
    let op = match op.to_ascii_lowercase().as_str() {
        "-eq" => Op::Eq,
        "-ne" => Op::Ne,
        "-startswith" => Op::StartsWith,
        "-contains" => Op::Contains,
        "-notcontains" => Op::NotContains,
        _ => return None,
    };
    let value = value.trim();
    let value = if let Some(inner) = value.strip_prefix('"').and_then(|v| v.strip_suffix('"')) {
        Some(inner.to_lowercase())
    } else {
        match value.to_ascii_lowercase().as_str() {
            "null" => None,
            v @ ("true" | "false") => Some(v.to_owned()),
            _ => return None,
        }
    };
    Some(Clause {
        property,
        op,
        value,
    })
}

fn clause_matches(clause: &Clause, user: &DirectoryObject) -> bool {
    with_property_text(user, clause.property, |actual| {
        match (clause.op, clause.value.as_deref(), actual) {
            (Op::Eq, v, a) => v == a,
            (Op::Ne, v, a) => v != a,
            (Op::StartsWith, Some(v), Some(a)) => a.starts_with(v),
            (Op::Contains, Some(v), Some(a)) => a.contains(v),
            (Op::NotContains, Some(v), Some(a)) => !a.contains(v),
            (Op::NotContains, _, None) => true,
            _ => false,
        }
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use rewind_common::ObjectId;

    fn user(department: &str, enabled: bool) -> DirectoryObject {
        let mut u = DirectoryObject::new(ObjectId(1), ObjectType::User);
        u.set("department", department.into());
        u.set("accountEnabled", enabled.into());
        u
    }

    #[test]
    fn eq_and_combinations() {
        let r = Rule::parse(r#"user.department -eq "Sales""#).unwrap();
        assert!(r.matches(&user("sales", true)));
        assert!(!r.matches(&user("Support", true)));
        let r = Rule::parse(
            r#"(user.department -eq "Sales Ops") -and (user.accountEnabled -eq true) -or user.department -startsWith "Eng""#,
        )
        .unwrap();
        assert!(r.matches(&user("Sales Ops", true)));
        assert!(!r.matches(&user("Sales Ops", false)));
        assert!(r.matches(&user("Engineering", false)));
        assert!(Rule::parse("user.manager -eq \"x\"").is_err());
        assert!(Rule::parse("device.os -eq \"x\"").is_err());
    }
}
