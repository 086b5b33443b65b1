//! The Graph shape of directory objects: a [`DirectoryObject`] to and from the JSON object that
//! Microsoft Graph serves for it (used by the JSON Lines export, the simulator and the
//! connector). Links are carried under their link-kind names (`members`, `owners`,
//! `oauth2PermissionGrants`, `appRoleAssignedTo`): ids for members and owners, objects with
//! an `id` and their data for grants and assignments.

use serde_json::{Map, Value as Json};

use crate::id::ObjectId;
use crate::model::{DirectoryObject, Lifecycle, Link, LinkKind, ObjectType, SourceOfAuthority};
use crate::properties;
use crate::value::Value;

/// The `@odata.type` of an object of type `t` (named locations carry their own kind).
pub fn odata_type(t: ObjectType) -> &'static str {
    match t {
        ObjectType::User => "#microsoft.graph.user",
        ObjectType::Group => "#microsoft.graph.group",
        ObjectType::Application => "#microsoft.graph.application",
        ObjectType::ServicePrincipal => "#microsoft.graph.servicePrincipal",
        ObjectType::ConditionalAccessPolicy => "#microsoft.graph.conditionalAccessPolicy",
        ObjectType::NamedLocation => "#microsoft.graph.namedLocation",
        ObjectType::AuthenticationMethodsPolicy => "#microsoft.graph.authenticationMethodsPolicy",
        ObjectType::AuthorizationPolicy => "#microsoft.graph.authorizationPolicy",
        ObjectType::Organization => "#microsoft.graph.organization",
    }
}

/// The Graph JSON of an object, with its links.
pub fn to_graph_json(object: &DirectoryObject) -> Json {
    let mut map = Map::new();
    map.insert("id".into(), Json::String(object.id.to_string()));
    if object.object_type != ObjectType::NamedLocation || object.get("@odata.type").is_none() {
        map.insert(
            "@odata.type".into(),
            Json::String(odata_type(object.object_type).into()),
        );
    }
    for (def, value) in object.properties() {
        map.insert(def.name.into(), value.to_json());
    }
    if let Lifecycle::SoftDeleted { deleted_at } = object.lifecycle {
        map.insert(
            "deletedDateTime".into(),
            Json::String(format_time(deleted_at)),
        );
    }
    if object.source == SourceOfAuthority::OnPremises {
        map.insert("onPremisesSyncEnabled".into(), Json::Bool(true));
    }
    for set in &object.links {
        let items = set
            .links
            .iter()
            .map(|l| match &l.data {
                None => Json::String(l.target.to_string()),
                Some(data) => {
                    let mut m = match data.to_json() {
                        Json::Object(m) => m,
                        other => Map::from_iter([("data".to_owned(), other)]),
                    };
                    m.insert("id".into(), Json::String(l.target.to_string()));
                    Json::Object(m)
                }
            })
            .collect();
        map.insert(set.kind.as_str().into(), Json::Array(items));
    }
    Json::Object(map)
}

/// Why a Graph JSON object could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GraphJsonError {
    #[error("not a JSON object")]
    NotAnObject,
    #[error("missing or invalid id: {0}")]
    BadId(String),
    #[error("invalid {0}: {1}")]
    BadField(&'static str, String),
}

/// Reads the Graph JSON of an object of type `t`. Properties the snapshot does not keep are
/// ignored; a group with `DynamicMembership` in its `groupTypes` is marked dynamic; a set
/// `onPremisesSyncEnabled` marks the object synced; `deletedDateTime` marks it soft-deleted.
pub fn from_graph_json(t: ObjectType, json: &Json) -> Result<DirectoryObject, GraphJsonError> {
    let map = json.as_object().ok_or(GraphJsonError::NotAnObject)?;
    let id = match map.get("id").and_then(Json::as_str) {
        Some(s) => s.parse::<ObjectId>().or_else(|_| {
            if t.is_singleton() {
                Ok(ObjectId::for_singleton(s))
            } else {
                Err(GraphJsonError::BadId(s.to_owned()))
            }
        })?,
        None if t.is_singleton() => ObjectId::for_singleton(t.as_str()),
        None => return Err(GraphJsonError::BadId("absent".into())),
    };
    let mut object = DirectoryObject::new(id, t);
    for (pid, def) in properties::properties(t).iter().enumerate() {
        if let Some(v) = map.get(def.name) {
            object.set_by_id(pid as u8, Value::from_json(v));
        }
    }
    if t == ObjectType::NamedLocation && object.get("@odata.type").is_none() {
        object.set(
            "@odata.type",
            Value::from("#microsoft.graph.ipNamedLocation"),
        );
    }
    if let Some(ts) = map.get("deletedDateTime").and_then(Json::as_str) {
        let deleted_at = parse_time(ts)
            .ok_or_else(|| GraphJsonError::BadField("deletedDateTime", ts.to_owned()))?;
        object.lifecycle = Lifecycle::SoftDeleted { deleted_at };
    }
    if map.get("onPremisesSyncEnabled").and_then(Json::as_bool) == Some(true) {
        object.source = SourceOfAuthority::OnPremises;
    }
    object.dynamic_membership = t == ObjectType::Group
        && map
            .get("groupTypes")
            .and_then(Json::as_array)
            .is_some_and(|a| a.iter().any(|g| g.as_str() == Some("DynamicMembership")));
    for &kind in properties::link_kinds(t) {
        let Some(items) = map.get(kind.as_str()).and_then(Json::as_array) else {
            continue;
        };
        let mut links = Vec::with_capacity(items.len());
        for item in items {
            links.push(link_from_json(kind, item)?);
        }
        object.set_links(kind, links);
    }
    object.normalize();
    Ok(object)
}

fn link_from_json(kind: LinkKind, item: &Json) -> Result<Link, GraphJsonError> {
    let bad = || GraphJsonError::BadField("link", item.to_string());
    match item {
        Json::String(s) => Ok(Link::to(s.parse().map_err(|_| bad())?)),
        Json::Object(m) => {
            let target = m
                .get("id")
                .and_then(Json::as_str)
                .and_then(|s| s.parse().ok())
                .ok_or_else(bad)?;
            let mut data = m.clone();
            data.remove("id");
            let data = (!data.is_empty() && kind != LinkKind::Members && kind != LinkKind::Owners)
                .then(|| Value::from_json(&Json::Object(data)));
            Ok(Link { target, data })
        }
        _ => Err(bad()),
    }
}

/// Unix seconds as an RFC 3339 UTC time (`2026-11-22T10:00:00Z`).
pub fn format_time(unix: i64) -> String {
    let days = unix.div_euclid(86_400);
    let secs = unix.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

/// An RFC 3339 time (`Z` or no offset; fractions ignored) as Unix seconds.
pub fn parse_time(s: &str) -> Option<i64> {
    let s = s.trim_end_matches('Z');
    let (date, time) = s.split_once('T')?;
    let mut d = date.splitn(3, '-').map(|p| p.parse::<i64>().ok());
    let (y, m, day) = (d.next()??, d.next()??, d.next()??);
    let time = time.split(['.', '+']).next()?;
    let mut t = time.splitn(3, ':').map(|p| p.parse::<i64>().ok());
    let (hh, mm, ss) = (t.next()??, t.next()??, t.next().flatten().unwrap_or(0));
    if !(1..=12).contains(&m) || !(1..=31).contains(&day) || hh > 23 || mm > 59 || ss > 60 {
        return None;
    }
    Some(days_from_civil(y, m, day) * 86_400 + hh * 3600 + mm * 60 + ss)
}

// Howard Hinnant's civil-calendar conversions.
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_round_trip() {
        for t in [0, 1_700_000_000, 1_795_000_000, 951_782_400] {
            assert_eq!(parse_time(&format_time(t)), Some(t), "{}", format_time(t));
        }
        assert_eq!(format_time(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(parse_time("2023-11-14T22:13:20.123Z"), Some(1_700_000_000));
        assert_eq!(parse_time("yesterday"), None);
    }

    #[test]
    fn objects_round_trip_through_graph_json() {
        let mut sp = DirectoryObject::new(ObjectId(42 << 100), ObjectType::ServicePrincipal);
        sp.set("displayName", "Rogue".into());
        sp.set("tags", Value::List(vec!["a".into()]));
        sp.lifecycle = Lifecycle::SoftDeleted {
            deleted_at: 1_700_000_000,
        };
        sp.add_link(
            LinkKind::OAuth2PermissionGrants,
            Link {
                target: ObjectId(9),
                data: Some(Value::Map(
                    [("scope".to_owned(), Value::from("User.Read"))].into(),
                )),
            },
        );
        sp.add_link(LinkKind::Owners, Link::to(ObjectId(3)));
        let json = to_graph_json(&sp);
        assert_eq!(json["deletedDateTime"], "2023-11-14T22:13:20Z");
        assert_eq!(
            from_graph_json(ObjectType::ServicePrincipal, &json).unwrap(),
            sp
        );

        let mut g = DirectoryObject::new(ObjectId(5), ObjectType::Group);
        g.set("groupTypes", Value::List(vec!["DynamicMembership".into()]));
        g.dynamic_membership = true;
        g.source = SourceOfAuthority::OnPremises;
        let json = to_graph_json(&g);
        assert_eq!(from_graph_json(ObjectType::Group, &json).unwrap(), g);
        assert!(from_graph_json(ObjectType::User, &serde_json::json!({"id": "x"})).is_err());
    }
}
