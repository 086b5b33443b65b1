//! The Graph shape of directory objects: a [`DirectoryObject`] to and from the JSON object that
//! Microsoft Graph serves for it (used by the JSON Lines export, the simulator and the
//! connector). Links are carried under their link-kind names (`members`, `owners`,
//! `oauth2PermissionGrants`, `appRoleAssignedTo`): ids for members and owners, objects with
//! an `id` and their data for grants and assignments.

use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::{Map, Value as Json};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

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
    #[error("invalid JSON: {0}")]
    Json(String),
}

/// Reads the Graph JSON of an object of type `t`. Properties the snapshot does not keep are
/// ignored; a group with `DynamicMembership` in its `groupTypes` is marked dynamic; a set
/// `onPremisesSyncEnabled` marks the object synced; `deletedDateTime` marks it soft-deleted.
pub fn from_graph_json(t: ObjectType, json: &Json) -> Result<DirectoryObject, GraphJsonError> {
    if !json.is_object() {
        return Err(GraphJsonError::NotAnObject);
    }
    GraphObjectSeed(t)
        .deserialize(json)
        .map_err(|e| GraphJsonError::Json(e.to_string()))?
        .into_object()
}

/// One page of a Graph collection of objects of one type, read straight from its text.
#[derive(Debug, Default)]
pub struct GraphPage {
    pub objects: Vec<GraphFields>,
    pub next_link: Option<String>,
}

/// Reads a collection page (`{"value":[...], "@odata.nextLink":...}`) of objects of type `t`
/// without building a JSON value of it.
pub fn page_from_graph_json(t: ObjectType, text: &[u8]) -> Result<GraphPage, GraphJsonError> {
    let mut de = serde_json::Deserializer::from_slice(text);
    let page = GraphPageSeed(t)
        .deserialize(&mut de)
        .and_then(|p| de.end().map(|()| p))
        .map_err(|e| GraphJsonError::Json(e.to_string()))?;
    Ok(page)
}

/// The next link of a collection page, found without reading its values into anything. Graph
/// writes the next link before the values, so reading usually stops after a few bytes; a page
/// that has it after them (or has none) is scanned to its end.
pub fn next_link_of_page(text: &[u8]) -> Result<Option<String>, GraphJsonError> {
    struct Head<'s>(&'s mut Option<String>, &'s mut bool);
    impl<'de> Visitor<'de> for Head<'_> {
        type Value = ();
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a collection page")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
            while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
                if key == "@odata.nextLink" {
                    *self.0 = map.next_value()?;
                    *self.1 = true;
                    // Found: the rest of the page is not needed here.
                    return Err(de::Error::custom(FOUND));
                }
                map.next_value::<de::IgnoredAny>()?;
            }
            Ok(())
        }
    }
    const FOUND: &str = "next link found";
    let (mut link, mut found) = (None, false);
    let mut de = serde_json::Deserializer::from_slice(text);
    let read = de
        .deserialize_map(Head(&mut link, &mut found))
        .and_then(|()| de.end());
    match read {
        Ok(()) => Ok(link),
        Err(_) if found => Ok(link),
        Err(e) => Err(GraphJsonError::Json(e.to_string())),
    }
}

/// The fields of an object's Graph JSON as read, before the checks of
/// [`GraphFields::into_object`].
#[derive(Debug)]
pub struct GraphFields {
    object_type: ObjectType,
    id: Option<IdText>,
    deleted: Option<String>,
    synced: bool,
    dynamic: bool,
    attributes: Vec<(u8, Value)>,
    links: Vec<(LinkKind, Vec<Json>)>,
}

impl GraphFields {
    /// The object these fields describe, in canonical form.
    pub fn into_object(self) -> Result<DirectoryObject, GraphJsonError> {
        let t = self.object_type;
        let id = match self.id {
            Some(IdText::Guid(id)) => id,
            Some(IdText::Other(s)) if t.is_singleton() => ObjectId::for_singleton(&s),
            Some(IdText::Other(s)) => return Err(GraphJsonError::BadId(s)),
            None if t.is_singleton() => ObjectId::for_singleton(t.as_str()),
            None => return Err(GraphJsonError::BadId("absent".into())),
        };
        let mut object = DirectoryObject::new(id, t);
        object.attributes = self.attributes;
        if t == ObjectType::NamedLocation && object.get("@odata.type").is_none() {
            object.set(
                "@odata.type",
                Value::from("#microsoft.graph.ipNamedLocation"),
            );
        }
        if let Some(ts) = self.deleted {
            let deleted_at =
                parse_time(&ts).ok_or(GraphJsonError::BadField("deletedDateTime", ts))?;
            object.lifecycle = Lifecycle::SoftDeleted { deleted_at };
        }
        if self.synced {
            object.source = SourceOfAuthority::OnPremises;
        }
        object.dynamic_membership = self.dynamic;
        for (kind, items) in self.links {
            let links = items
                .iter()
                .map(|item| link_from_json(kind, item))
                .collect::<Result<Vec<_>, _>>()?;
            object.set_links(kind, links);
        }
        object.normalize();
        Ok(object)
    }
}

/// An `id` as written: a GUID, or another text (singletons have names for ids).
#[derive(Debug)]
enum IdText {
    Guid(ObjectId),
    Other(String),
}

impl<'de> Deserialize<'de> for IdText {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = IdText;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an id")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<IdText, E> {
                Ok(v.parse::<ObjectId>()
                    .map_or_else(|_| IdText::Other(v.to_owned()), IdText::Guid))
            }
        }
        deserializer.deserialize_str(V)
    }
}

/// What a key of an object's Graph JSON stands for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum FieldKey {
    Id,
    DeletedDateTime,
    OnPremisesSyncEnabled,
    Property(u8),
    Links(LinkKind),
    Other,
}

/// The keys of one type's Graph JSON, in an open-addressing table (a page of 999 users has
/// some 36,000 keys to look up).
struct KeyTable {
    slots: Vec<Option<(&'static str, FieldKey)>>,
    mask: usize,
}

impl KeyTable {
    fn new(t: ObjectType) -> Self {
        let mut names: Vec<(&'static str, FieldKey)> = vec![
            ("id", FieldKey::Id),
            ("deletedDateTime", FieldKey::DeletedDateTime),
            ("onPremisesSyncEnabled", FieldKey::OnPremisesSyncEnabled),
        ];
        for (pid, def) in properties::properties(t).iter().enumerate() {
            if !names.iter().any(|(n, _)| *n == def.name) {
                names.push((def.name, FieldKey::Property(pid as u8)));
            }
        }
        for kind in properties::link_kinds(t) {
            if !names.iter().any(|(n, _)| *n == kind.as_str()) {
                names.push((kind.as_str(), FieldKey::Links(*kind)));
            }
        }
        let size = (names.len() * 4).next_power_of_two();
        let mut table = Self {
            slots: vec![None; size],
            mask: size - 1,
        };
        for (name, key) in names {
            let mut i = key_hash(name) & table.mask;
            while table.slots[i].is_some() {
                i = (i + 1) & table.mask;
            }
            table.slots[i] = Some((name, key));
        }
        table
    }

    fn get(&self, name: &str) -> FieldKey {
        let mut i = key_hash(name) & self.mask;
        while let Some((n, key)) = self.slots[i] {
            if n == name {
                return key;
            }
            i = (i + 1) & self.mask;
        }
        FieldKey::Other
    }
}

/// FNV-1a over the key's bytes (keys are short, and known in advance).
fn key_hash(name: &str) -> usize {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in name.bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
    }
    (h ^ (h >> 29)) as usize
}

fn field_key(t: ObjectType, name: &str) -> FieldKey {
    static TABLES: std::sync::OnceLock<Vec<KeyTable>> = std::sync::OnceLock::new();
    let tables = TABLES.get_or_init(|| ObjectType::ALL.iter().map(|&t| KeyTable::new(t)).collect());
    let slot = usize::from(t.code().saturating_sub(1));
    tables
        .get(slot)
        .map_or(FieldKey::Other, |table| table.get(name))
}

struct FieldKeySeed(ObjectType);

impl<'de> DeserializeSeed<'de> for FieldKeySeed {
    type Value = FieldKey;
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<FieldKey, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl Visitor<'_> for FieldKeySeed {
    type Value = FieldKey;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a property name")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<FieldKey, E> {
        Ok(field_key(self.0, v))
    }
}

/// Reads one object of type `t` from its Graph JSON.
pub struct GraphObjectSeed(pub ObjectType);

impl<'de> DeserializeSeed<'de> for GraphObjectSeed {
    type Value = GraphFields;
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<GraphFields, D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for GraphObjectSeed {
    type Value = GraphFields;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "the Graph JSON of a {}", self.0)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<GraphFields, A::Error> {
        let t = self.0;
        let mut fields = GraphFields {
            object_type: t,
            id: None,
            deleted: None,
            synced: false,
            dynamic: false,
            attributes: Vec::with_capacity(properties::properties(t).len()),
            links: Vec::new(),
        };
        // Property ids already read (a repeated key replaces the earlier value).
        let mut seen = [0u64; 4];
        while let Some(key) = map.next_key_seed(FieldKeySeed(t))? {
            match key {
                FieldKey::Id => fields.id = map.next_value::<Option<IdText>>()?,
                FieldKey::DeletedDateTime => {
                    fields.deleted = match map.next_value::<Value>()? {
                        Value::String(s) => Some(s.into_string()),
                        _ => None,
                    }
                }
                FieldKey::OnPremisesSyncEnabled => {
                    fields.synced = map.next_value::<Value>()? == Value::Bool(true);
                }
                FieldKey::Property(pid) => {
                    let value = map.next_value::<Value>()?;
                    if t == ObjectType::Group
                        && properties::property(t, pid).is_some_and(|d| d.name == "groupTypes")
                    {
                        fields.dynamic = matches!(&value, Value::List(l)
                            if l.iter().any(|g| g.as_str() == Some("DynamicMembership")));
                    }
                    let bit = 1u64 << (pid % 64);
                    let seen = &mut seen[usize::from(pid / 64)];
                    if *seen & bit != 0 {
                        // A repeated key: the last value wins, as in a JSON value.
                        fields.attributes.retain(|(p, _)| *p != pid);
                    }
                    *seen |= bit;
                    if value != Value::Null {
                        fields.attributes.push((pid, value));
                    }
                }
                FieldKey::Links(kind) => {
                    if let Json::Array(items) = map.next_value::<Json>()? {
                        fields.links.push((kind, items));
                    }
                }
                FieldKey::Other => {
                    map.next_value::<de::IgnoredAny>()?;
                }
            }
        }
        Ok(fields)
    }
}

/// Reads a collection page of objects of one type.
struct GraphPageSeed(ObjectType);

/// The `value` array of a page.
struct GraphValuesSeed(ObjectType);

impl<'de> DeserializeSeed<'de> for GraphValuesSeed {
    type Value = Vec<GraphFields>;
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for GraphValuesSeed {
    type Value = Vec<GraphFields>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an array of objects")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1000));
        while let Some(fields) = seq.next_element_seed(GraphObjectSeed(self.0))? {
            out.push(fields);
        }
        Ok(out)
    }
}

impl<'de> DeserializeSeed<'de> for GraphPageSeed {
    type Value = GraphPage;
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<GraphPage, D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for GraphPageSeed {
    type Value = GraphPage;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a collection page")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<GraphPage, A::Error> {
        let mut page = GraphPage::default();
        while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            match key.as_ref() {
                "value" => page.objects = map.next_value_seed(GraphValuesSeed(self.0))?,
                "@odata.nextLink" => page.next_link = map.next_value()?,
                _ => {
                    map.next_value::<de::IgnoredAny>()?;
                }
            }
        }
        Ok(page)
    }
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

/// Unix seconds as an RFC 3339 UTC time, as Graph writes it (`2026-11-22T10:00:00Z`). Times
/// outside the years 0000–9999, which RFC 3339 cannot write, are clamped to that range.
pub fn format_time(unix: i64) -> String {
    let utc = OffsetDateTime::from_unix_timestamp(unix.clamp(RFC3339_MIN, RFC3339_MAX))
        .unwrap_or(OffsetDateTime::UNIX_EPOCH);
    // Within those years, with a UTC offset and whole seconds, RFC 3339 always formats.
    utc.format(&Rfc3339).unwrap_or_default()
}

/// An RFC 3339 time (any offset, optional fraction, which is dropped) as Unix seconds, or
/// `None` when the text is not one. Date and time are separated by `T` (or `t`, or the space
/// RFC 3339 allows for readability), nothing else.
pub fn parse_time(s: &str) -> Option<i64> {
    if !matches!(s.as_bytes().get(10), Some(b'T' | b't' | b' ')) {
        return None;
    }
    OffsetDateTime::parse(s, &Rfc3339)
        .ok()
        .map(OffsetDateTime::unix_timestamp)
}

/// `0000-01-01T00:00:00Z` and `9999-12-31T23:59:59Z`, the range RFC 3339 can write.
const RFC3339_MIN: i64 = -62_167_219_200;
const RFC3339_MAX: i64 = 253_402_300_799;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_round_trip() {
        for t in [0, 1_700_000_000, 1_795_000_000, 951_782_400] {
            assert_eq!(parse_time(&format_time(t)), Some(t), "{}", format_time(t));
        }
        assert_eq!(format_time(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(format_time(i64::MIN), "0000-01-01T00:00:00Z");
        assert_eq!(format_time(i64::MAX), "9999-12-31T23:59:59Z");
    }

    #[test]
    fn times_parse_as_rfc_3339_says() {
        let utc = parse_time("2026-01-02T01:04:05Z");
        assert_eq!(utc, Some(1_767_315_845));
        assert_eq!(format_time(1_767_315_845), "2026-01-02T01:04:05Z");
        for same in [
            "2026-01-02T03:04:05+02:00",
            "2026-01-01T20:34:05-04:30",
            "2026-01-02T01:04:05+00:00",
            "2026-01-02t01:04:05z",
            "2026-01-02T01:04:05.999999Z",
            "2026-01-02T01:04:05.1+00:00",
        ] {
            assert_eq!(parse_time(same), utc, "{same}");
        }
        for garbage in [
            "",
            "yesterday",
            "2026-01-02",
            "2026-01-02T01:04:05",
            "2026-01-02T01:04Z",
            "2026-13-02T01:04:05Z",
            "2026-02-30T01:04:05Z",
            "2026-01-02T24:04:05Z",
            "2026-01-02T01:04:05+2:00",
            "2026-01-02T01:04:05.Z",
            "2026-01-02T01:04:05Z trailing",
            "2026-1-2T1:4:5Z",
            "2026-01-02x01:04:05Z",
            "2026-01-02_01:04:05Z",
        ] {
            assert_eq!(parse_time(garbage), None, "{garbage:?} parsed");
        }
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

#[cfg(test)]
mod page_tests {
    use super::*;

    #[test]
    fn every_key_of_every_type_is_found() {
        for t in ObjectType::ALL {
            for (pid, def) in properties::properties(t).iter().enumerate() {
                assert_eq!(
                    field_key(t, def.name),
                    FieldKey::Property(pid as u8),
                    "{t} {}",
                    def.name
                );
            }
            for kind in properties::link_kinds(t) {
                assert_eq!(field_key(t, kind.as_str()), FieldKey::Links(*kind));
            }
            assert_eq!(field_key(t, "id"), FieldKey::Id);
            assert_eq!(field_key(t, "deletedDateTime"), FieldKey::DeletedDateTime);
            for other in [
                "",
                "ids",
                "displayname",
                "@odata.context",
                "x".repeat(300).as_str(),
            ] {
                assert_eq!(field_key(t, other), FieldKey::Other, "{t} {other}");
            }
        }
    }

    #[test]
    fn next_links_are_found_before_or_after_the_values() {
        let before =
            br#"{"@odata.context":"x","@odata.nextLink":"http://h/next","value":[{"id":1}]}"#;
        let after = br#"{"value":[{"id":"a","x":[1,{"y":"}"}]}],"@odata.nextLink":"http://h/n2"}"#;
        let none = br#"{"value":[]}"#;
        let null = br#"{"@odata.nextLink":null,"value":[]}"#;
        assert_eq!(
            next_link_of_page(before).unwrap().as_deref(),
            Some("http://h/next")
        );
        assert_eq!(
            next_link_of_page(after).unwrap().as_deref(),
            Some("http://h/n2")
        );
        assert_eq!(next_link_of_page(none).unwrap(), None);
        assert_eq!(next_link_of_page(null).unwrap(), None);
        assert!(next_link_of_page(br#"{"value":[}"#).is_err());
        assert!(next_link_of_page(b"[]").is_err());
    }

    #[test]
    fn pages_read_objects_like_single_objects() {
        let mut u = DirectoryObject::new(ObjectId(77), ObjectType::User);
        u.set("displayName", "Ann \"quoted\" \u{e9}".into());
        u.set("businessPhones", Value::List(vec!["+1 555".into()]));
        u.lifecycle = Lifecycle::SoftDeleted {
            deleted_at: 1_700_000_000,
        };
        u.source = SourceOfAuthority::OnPremises;
        let mut g = DirectoryObject::new(ObjectId(78), ObjectType::Group);
        g.set(
            "groupTypes",
            Value::List(vec!["Unified".into(), "DynamicMembership".into()]),
        );
        g.dynamic_membership = true;
        g.add_link(LinkKind::Members, Link::to(ObjectId(77)));
        for o in [u, g] {
            let mut json = to_graph_json(&o);
            json["unknownProperty"] = serde_json::json!({"nested": [1, 2]});
            let text = serde_json::to_vec(&serde_json::json!({
                "@odata.context": "ctx",
                "value": [json.clone()],
                "@odata.nextLink": "http://next",
            }))
            .unwrap();
            let page = page_from_graph_json(o.object_type, &text).unwrap();
            assert_eq!(page.next_link.as_deref(), Some("http://next"));
            let read: Vec<DirectoryObject> = page
                .objects
                .into_iter()
                .map(|f| f.into_object().unwrap())
                .collect();
            assert_eq!(read, vec![o.clone()]);
            assert_eq!(from_graph_json(o.object_type, &json).unwrap(), o);
        }
        let bad = br#"{"value":[{"id":"not-a-guid","displayName":"x"}]}"#;
        let page = page_from_graph_json(ObjectType::User, bad).unwrap();
        assert!(matches!(
            page.objects.into_iter().next().unwrap().into_object(),
            Err(GraphJsonError::BadId(_))
        ));
        assert!(page_from_graph_json(ObjectType::User, br#"{"value":[{"id":1}]}"#).is_err());
    }
}
