//! Checks of what the user typed, before any request: schedules, entity types, object ids
//! (GUIDs, at most [`MAX_IDS`]), the report's filtering criteria in Microsoft's exact JSON,
//! and where a client secret comes from (a file, `REWIND_CLIENT_SECRET`, or an argument that
//! shows in `ps`, with a warning).

use std::collections::BTreeMap;
use std::path::Path;

use rewind_common::id::ObjectId;
use rewind_common::report::Scope;
use serde_json::{json, Value};

use super::ClientError;

/// At most this many object ids in a report's scope (Microsoft's limit).
pub const MAX_IDS: usize = Scope::MAX_IDS;

/// Microsoft's `entityType` values a filter may name.
pub const ENTITY_TYPES: [&str; 12] = [
    "user",
    "group",
    "conditionalAccessPolicy",
    "namedLocationPolicy",
    "authenticationMethodPolicy",
    "authorizationPolicy",
    "authenticationStrengthPolicy",
    "application",
    "servicePrincipal",
    "appRoleAssignment",
    "oAuth2PermissionGrant",
    "organization",
];

/// The recovery actions `report show --action` filters on (`notRecoverable`: entries with a
/// reason they will not be recovered).
pub const ACTIONS: [&str; 5] = [
    "update",
    "restore",
    "softDelete",
    "unknownFutureValue",
    "notRecoverable",
];

fn usage(message: String) -> ClientError {
    ClientError::Usage(message)
}

/// A schedule as the API writes it: `off`, `daily@HH:MM` (UTC) or `interval:SECONDS`.
pub fn parse_schedule(s: &str) -> Result<Value, ClientError> {
    let bad = |why: &str| {
        usage(format!(
            "--schedule {s:?}: {why} (use off, daily@HH:MM in UTC, or interval:SECONDS)"
        ))
    };
    if s == "off" {
        return Ok(json!({"kind": "off"}));
    }
    if let Some(at) = s.strip_prefix("daily@") {
        let (h, m) = at.split_once(':').ok_or_else(|| bad("no HH:MM"))?;
        let hour: u8 = h.parse().map_err(|_| bad("the hour is not a number"))?;
        let minute: u8 = m.parse().map_err(|_| bad("the minute is not a number"))?;
        if hour > 23 || minute > 59 || h.len() != 2 || m.len() != 2 {
            return Err(bad("the time must be 00:00 to 23:59"));
        }
        return Ok(json!({"kind": "daily", "atUtc": format!("{hour:02}:{minute:02}")}));
    }
    if let Some(n) = s.strip_prefix("interval:") {
        let seconds: u64 = n
            .parse()
            .map_err(|_| bad("the interval is not a number of seconds"))?;
        if seconds == 0 {
            return Err(bad("the interval must be at least 1 second"));
        }
        return Ok(json!({"kind": "interval", "seconds": seconds}));
    }
    Err(bad("unknown schedule"))
}

/// A comma-separated list of Microsoft's entity types, each checked (duplicates dropped).
pub fn parse_types(s: &str) -> Result<Vec<String>, ClientError> {
    let mut out: Vec<String> = Vec::new();
    for t in s.split(',').map(str::trim) {
        if t.is_empty() {
            return Err(usage(format!("--types {s:?}: an empty type name")));
        }
        check_type(t, "--types")?;
        if !out.iter().any(|o| o == t) {
            out.push(t.to_owned());
        }
    }
    Ok(out)
}

/// An entity type name Microsoft's API knows.
pub fn check_type(t: &str, flag: &str) -> Result<(), ClientError> {
    if ENTITY_TYPES.contains(&t) {
        Ok(())
    } else {
        Err(usage(format!(
            "{flag}: unknown entity type {t:?} (allowed: {})",
            ENTITY_TYPES.join(", ")
        )))
    }
}

/// A comma-separated list of object ids, each a GUID, optionally with its type
/// (`user:GUID`); duplicates count once, more than [`MAX_IDS`] are refused.
pub fn parse_ids(s: &str) -> Result<Vec<(Option<String>, String)>, ClientError> {
    let mut out: Vec<(Option<String>, String)> = Vec::new();
    for item in s.split(',').map(str::trim) {
        if item.is_empty() {
            return Err(usage(format!("--ids: an empty id in {s:?}")));
        }
        let (ty, id) = match item.split_once(':') {
            Some((ty, id)) => {
                check_type(ty, "--ids")?;
                (Some(ty.to_owned()), id)
            }
            None => (None, item),
        };
        let id = guid(id, "--ids")?;
        if !out.iter().any(|(_, o)| *o == id) {
            out.push((ty, id));
        }
    }
    if out.len() > MAX_IDS {
        return Err(usage(format!(
            "--ids: {} ids given, a report takes at most {MAX_IDS}",
            out.len()
        )));
    }
    Ok(out)
}

/// One GUID as `flag` was given it, in its canonical form.
fn guid(id: &str, flag: &str) -> Result<String, ClientError> {
    let parsed: ObjectId = id.parse().map_err(|_| {
        usage(format!(
            "{flag}: {id:?} is not a GUID (like 8a7c5e9d-1f2b-4c3d-9e8f-0a1b2c3d4e5f)"
        ))
    })?;
    Ok(parsed.to_string())
}

/// A recovery's listed object ids: GUIDs separated by commas, spaces or line breaks (a file's
/// lines), duplicates counted once, at most `max`.
pub fn parse_object_ids(text: &str, flag: &str, max: usize) -> Result<Vec<String>, ClientError> {
    let mut seen = std::collections::BTreeSet::new();
    let mut out = Vec::new();
    for item in text
        .split([',', ' ', '\t', '\r', '\n'])
        .filter(|i| !i.is_empty())
    {
        let id = guid(item, flag)?;
        if seen.insert(id.clone()) {
            out.push(id);
        }
    }
    if out.is_empty() {
        return Err(usage(format!("{flag}: no object id given")));
    }
    if out.len() > max {
        return Err(usage(format!(
            "{flag}: {} ids given, a recovery takes at most {max}",
            out.len()
        )));
    }
    Ok(out)
}

/// The body of `POST recoveryPreviewJobs`: `{}` for everything, an entity-names filter for
/// `--types` alone, an entity-name-and-ids filter for `--ids` (each id's type from its
/// `type:` prefix, else from a single `--types`).
pub fn report_body(types: Option<&str>, ids: Option<&str>) -> Result<Value, ClientError> {
    let types = types.map(parse_types).transpose()?;
    let Some(ids) = ids else {
        return Ok(match types {
            None => json!({}),
            Some(types) => json!({"filteringCriteria": {
                "@odata.type": "#microsoft.graph.entraRecoveryServices.recoveryJobEntityNamesFilter",
                "entityTypes": types,
            }}),
        });
    };
    let ids = parse_ids(ids)?;
    let single = match types.as_deref() {
        Some([one]) => Some(one.clone()),
        _ => None,
    };
    let mut by_type: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (ty, id) in ids {
        let ty = match ty.or_else(|| single.clone()) {
            Some(ty) => ty,
            None => {
                return Err(usage(format!(
                    "--ids: give the type of {id} (as user:{id}), or exactly one --types"
                )))
            }
        };
        if let Some(types) = &types {
            if !types.contains(&ty) {
                return Err(usage(format!(
                    "--ids: {ty}:{id} is not of a type --types names ({})",
                    types.join(", ")
                )));
            }
        }
        by_type.entry(ty).or_default().push(id);
    }
    let filter_values: Vec<Value> = by_type
        .into_iter()
        .map(|(ty, ids)| json!({"entityType": ty, "entityIds": ids}))
        .collect();
    Ok(json!({"filteringCriteria": {
        "@odata.type": "#microsoft.graph.entraRecoveryServices.recoveryJobEntityNameAndIdsFilter",
        "filterValues": filter_values,
    }}))
}

/// Where a client secret is given, in order: a file, the argument (with a warning: it shows
/// in the process list), `REWIND_CLIENT_SECRET`. `None` when none of them is.
pub fn client_secret(
    file: Option<&Path>,
    arg: Option<&str>,
    env: Option<String>,
) -> Result<Option<String>, ClientError> {
    let secret = if let Some(path) = file {
        let text = std::fs::read_to_string(path).map_err(|e| {
            usage(format!(
                "cannot read the client secret file {}: {e}",
                path.display()
            ))
        })?;
        text.trim_end_matches(['\r', '\n']).to_owned()
    } else if let Some(s) = arg {
        eprintln!(
            "warning: --client-secret shows in the process list; prefer --client-secret-file or REWIND_CLIENT_SECRET"
        );
        s.to_owned()
    } else if let Some(s) = env {
        s
    } else {
        return Ok(None);
    };
    if secret.is_empty() {
        return Err(usage("the client secret is empty".into()));
    }
    Ok(Some(secret))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedules_as_the_api_writes_them() {
        let good = [
            ("off", json!({"kind": "off"})),
            ("daily@02:00", json!({"kind": "daily", "atUtc": "02:00"})),
            ("daily@23:59", json!({"kind": "daily", "atUtc": "23:59"})),
            (
                "interval:3600",
                json!({"kind": "interval", "seconds": 3600}),
            ),
        ];
        for (s, want) in good {
            assert_eq!(parse_schedule(s).unwrap(), want, "{s}");
        }
        let bad = [
            ("daily", "unknown schedule"),
            ("daily@24:00", "00:00 to 23:59"),
            ("daily@2:00", "00:00 to 23:59"),
            ("daily@02:60", "00:00 to 23:59"),
            ("daily@0200", "no HH:MM"),
            ("interval:0", "at least 1 second"),
            ("interval:soon", "not a number"),
            ("weekly", "unknown schedule"),
        ];
        for (s, why) in bad {
            let e = parse_schedule(s).unwrap_err();
            assert_eq!(e.exit_code(), 2);
            assert!(e.to_string().contains(why), "{s}: {e}");
        }
    }

    fn guid(i: usize) -> String {
        format!("00000000-0000-4000-8000-{i:012x}")
    }

    #[test]
    fn at_most_a_hundred_distinct_ids() {
        let hundred: Vec<String> = (0..100).map(guid).collect();
        assert_eq!(parse_ids(&hundred.join(",")).unwrap().len(), 100);
        // A repeated id counts once.
        let repeated = format!("{},{}", hundred.join(","), guid(0));
        assert_eq!(parse_ids(&repeated).unwrap().len(), 100);
        let many: Vec<String> = (0..101).map(guid).collect();
        let e = parse_ids(&many.join(",")).unwrap_err();
        assert_eq!(e.exit_code(), 2);
        assert_eq!(
            e.to_string(),
            "--ids: 101 ids given, a report takes at most 100"
        );
    }

    #[test]
    fn bad_ids_and_types_are_named() {
        let cases = [
            ("not-a-guid", "\"not-a-guid\" is not a GUID"),
            ("user:1234", "\"1234\" is not a GUID"),
            (
                "martian:00000000-0000-4000-8000-000000000001",
                "\"martian\"",
            ),
            ("00000000-0000-4000-8000-000000000001,,", "an empty id"),
        ];
        for (ids, want) in cases {
            let e = parse_ids(ids).unwrap_err();
            assert_eq!(e.exit_code(), 2);
            assert!(e.to_string().contains(want), "{ids}: {e}");
        }
        let e = parse_types("user,grop").unwrap_err();
        assert!(
            e.to_string().contains("unknown entity type \"grop\""),
            "{e}"
        );
        assert_eq!(
            parse_types("user, group,user").unwrap(),
            vec!["user".to_owned(), "group".to_owned()]
        );
    }

    #[test]
    fn filtering_criteria_in_microsofts_json() {
        assert_eq!(report_body(None, None).unwrap(), json!({}));
        assert_eq!(
            report_body(Some("user,group"), None).unwrap(),
            json!({"filteringCriteria": {
                "@odata.type": "#microsoft.graph.entraRecoveryServices.recoveryJobEntityNamesFilter",
                "entityTypes": ["user", "group"]}})
        );
        let (a, b) = (guid(1), guid(2));
        assert_eq!(
            report_body(Some("user"), Some(&format!("{a},{}", b.to_uppercase()))).unwrap(),
            json!({"filteringCriteria": {
                "@odata.type": "#microsoft.graph.entraRecoveryServices.recoveryJobEntityNameAndIdsFilter",
                "filterValues": [{"entityType": "user", "entityIds": [a, b]}]}})
        );
        assert_eq!(
            report_body(None, Some(&format!("user:{a},group:{b}"))).unwrap(),
            json!({"filteringCriteria": {
                "@odata.type": "#microsoft.graph.entraRecoveryServices.recoveryJobEntityNameAndIdsFilter",
                "filterValues": [
                    {"entityType": "group", "entityIds": [b]},
                    {"entityType": "user", "entityIds": [a]}]}})
        );
        let e = report_body(Some("user,group"), Some(&a)).unwrap_err();
        assert!(e.to_string().contains("give the type of"), "{e}");
        let e = report_body(Some("user"), Some(&format!("group:{a}"))).unwrap_err();
        assert!(e.to_string().contains("not of a type --types names"), "{e}");
    }

    #[test]
    fn the_secret_comes_from_a_file_the_argument_or_the_environment() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("secret");
        std::fs::write(&file, "s3cret\n").unwrap();
        assert_eq!(
            client_secret(Some(&file), None, Some("env".into())).unwrap(),
            Some("s3cret".into())
        );
        assert_eq!(
            client_secret(None, Some("arg"), Some("env".into())).unwrap(),
            Some("arg".into())
        );
        assert_eq!(
            client_secret(None, None, Some("env".into())).unwrap(),
            Some("env".into())
        );
        assert_eq!(client_secret(None, None, None).unwrap(), None);
        let e = client_secret(Some(&dir.path().join("missing")), None, None).unwrap_err();
        assert_eq!(e.exit_code(), 2);
        assert!(e.to_string().contains("cannot read the client secret file"));
        std::fs::write(&file, "\n").unwrap();
        assert!(client_secret(Some(&file), None, None).is_err());
    }
}
