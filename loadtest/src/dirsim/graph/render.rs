//! How objects, OAuth2 grants and app role assignments look in Graph's JSON, under `$select`
//! and the default user properties, and the collection envelope.

use super::*;

/// The eleven properties `/users` returns without `$select`.
pub(super) const USER_DEFAULT: &[&str] = &[
    "businessPhones",
    "displayName",
    "givenName",
    "jobTitle",
    "mail",
    "mobilePhone",
    "officeLocation",
    "preferredLanguage",
    "surname",
    "userPrincipalName",
    "id",
];

/// Whether Graph shows the kept property `name` on the object itself (the per-user MFA state
/// is on its own resource, the legacy MFA settings are in no Graph API).
fn on_the_object(t: ObjectType, name: &str) -> bool {
    !matches!(
        graph_names::home(t, name),
        Some(properties::GraphHome::AuthenticationRequirements | properties::GraphHome::Nowhere)
    )
}

/// The Graph JSON of an object as Graph serves it (links are separate resources).
pub(super) fn full_json(o: &DirectoryObject) -> Map<String, Json> {
    let mut m = match to_graph_json(o) {
        Json::Object(m) => m,
        _ => Map::new(),
    };
    m.retain(|k, _| on_the_object(o.object_type, k));
    for kind in [
        LinkKind::Members,
        LinkKind::Owners,
        LinkKind::OAuth2PermissionGrants,
        LinkKind::AppRoleAssignedTo,
    ] {
        m.remove(kind.as_str());
    }
    match o.object_type {
        ObjectType::AuthorizationPolicy => {
            m.insert("id".into(), Json::String("authorizationPolicy".into()));
        }
        ObjectType::AuthenticationMethodsPolicy => {
            m.insert(
                "id".into(),
                Json::String("authenticationMethodsPolicy".into()),
            );
            let configs: Vec<Json> = properties::AUTHENTICATION_METHOD_CONFIGURATIONS
                .iter()
                .filter_map(|name| {
                    let mut c = match o.get(name)?.to_json() {
                        Json::Object(c) => c,
                        _ => Map::new(),
                    };
                    c.insert("id".into(), Json::String((*name).into()));
                    Some(Json::Object(c))
                })
                .collect();
            m.insert(
                "authenticationMethodConfigurations".into(),
                Json::Array(configs),
            );
        }
        _ => {}
    }
    m
}

pub(super) fn select_fields(full: Map<String, Json>, fields: &[impl AsRef<str>]) -> Json {
    let mut out = Map::new();
    if let Some(t) = full.get("@odata.type") {
        out.insert("@odata.type".into(), t.clone());
    }
    out.insert("id".into(), full.get("id").cloned().unwrap_or(Json::Null));
    for f in fields {
        let f = f.as_ref();
        if f == "id" {
            continue;
        }
        let v = match (f, full.get(f)) {
            (_, Some(v)) => v.clone(),
            ("businessPhones", None) => Json::Array(Vec::new()),
            _ => Json::Null,
        };
        out.insert(f.to_owned(), v);
    }
    Json::Object(out)
}

/// An object under `$select` (or, for users without it, the default set).
pub(super) fn render(o: &DirectoryObject, select: Option<&[String]>) -> Json {
    let full = full_json(o);
    match select {
        Some(fields) => select_fields(full, fields),
        None if o.object_type == ObjectType::User && o.lifecycle.is_active() => {
            select_fields(full, USER_DEFAULT)
        }
        None if o.object_type == ObjectType::User => {
            let mut fields = USER_DEFAULT.to_vec();
            fields.push("deletedDateTime");
            select_fields(full, &fields)
        }
        None => Json::Object(full),
    }
}

pub(super) fn apply_select(full: Map<String, Json>, select: Option<&[String]>) -> Json {
    match select {
        Some(fields) => select_fields(full, fields),
        None => Json::Object(full),
    }
}

pub(super) fn link_data(link: &Link) -> Map<String, Json> {
    match link.data.as_ref().map(Value::to_json) {
        Some(Json::Object(m)) => m,
        _ => Map::new(),
    }
}

pub(super) fn render_grant(client: &DirectoryObject, link: &Link) -> Map<String, Json> {
    let mut m = Map::new();
    m.insert("id".into(), Json::String(link.target.to_string()));
    m.insert("clientId".into(), Json::String(client.id.to_string()));
    m.insert("consentType".into(), Json::String("AllPrincipals".into()));
    m.insert("principalId".into(), Json::Null);
    m.insert("resourceId".into(), Json::Null);
    m.insert("scope".into(), Json::String(String::new()));
    for (k, v) in link_data(link) {
        m.insert(k, v);
    }
    m
}

pub(super) fn principal_type(t: ObjectType) -> &'static str {
    match t {
        ObjectType::User => "User",
        ObjectType::Group => "Group",
        _ => "ServicePrincipal",
    }
}

pub(super) fn render_assignment(
    data: &TenantData,
    resource: &DirectoryObject,
    link: &Link,
) -> Map<String, Json> {
    let extra = link_data(link);
    let principal = extra
        .get("principalId")
        .and_then(Json::as_str)
        .and_then(|s| s.parse::<ObjectId>().ok())
        .and_then(|id| data.find(id));
    let mut m = Map::new();
    m.insert("id".into(), Json::String(link.target.to_string()));
    m.insert("deletedDateTime".into(), Json::Null);
    m.insert(
        "appRoleId".into(),
        Json::String("00000000-0000-0000-0000-000000000000".into()),
    );
    m.insert(
        "principalType".into(),
        principal.map_or(Json::Null, |p| {
            Json::String(principal_type(p.object_type).into())
        }),
    );
    m.insert(
        "principalDisplayName".into(),
        principal
            .and_then(DirectoryObject::display_name)
            .map_or(Json::Null, |s| Json::String(s.into())),
    );
    m.insert("resourceId".into(), Json::String(resource.id.to_string()));
    m.insert(
        "resourceDisplayName".into(),
        resource
            .display_name()
            .map_or(Json::Null, |s| Json::String(s.into())),
    );
    for (k, v) in extra {
        m.insert(k, v);
    }
    m
}

pub(super) fn collection(
    ctx: &Ctx<'_>,
    context: &str,
    values: Vec<Json>,
    next: Option<String>,
) -> Reply {
    let mut body = Map::new();
    body.insert(
        "@odata.context".into(),
        Json::String(format!("{}/$metadata#{context}", ctx.base)),
    );
    body.insert("value".into(), Json::Array(values));
    if let Some(next) = next {
        body.insert("@odata.nextLink".into(), Json::String(next));
    }
    Reply::json(StatusCode::OK, Json::Object(body))
}

/// Where a selected field's value comes from, resolved once per type and query.
#[derive(Debug, Clone, Copy)]
enum Source {
    Property(u8),
    DeletedDateTime,
    OnPremisesSyncEnabled,
    /// A name the type does not have (Graph answers null; `businessPhones` an empty list).
    Absent,
}

/// The fields a query shows of objects of one type: the answer of [`render`], written
/// straight from the object.
#[derive(Debug)]
struct Projection {
    fields: Vec<(String, Source)>,
    /// Each field's `,"name":` as written (names escaped once, not once per object).
    keys: Vec<Vec<u8>>,
    /// `$select` shows absent fields as null; the full object leaves them out.
    nulls: bool,
    /// A user listed without `$select` shows `deletedDateTime` when it is soft-deleted.
    deleted_when_deleted: bool,
}

impl Projection {
    fn new(t: ObjectType, select: Option<&[String]>) -> Self {
        let (fields, nulls, deleted_when_deleted) = Self::resolve(t, select);
        let keys = fields
            .iter()
            .map(|(name, _)| {
                let mut key = b",".to_vec();
                write_json(&mut key, name.as_str());
                key.push(b':');
                key
            })
            .collect();
        Self {
            fields,
            keys,
            nulls,
            deleted_when_deleted,
        }
    }

    /// The fields shown, whether absent ones show as null, and whether a soft-deleted object
    /// shows `deletedDateTime` beyond them.
    fn resolve(t: ObjectType, select: Option<&[String]>) -> (Vec<(String, Source)>, bool, bool) {
        let source = |name: &str| match name {
            "deletedDateTime" => Source::DeletedDateTime,
            "onPremisesSyncEnabled" => Source::OnPremisesSyncEnabled,
            _ => properties::property_id(t, name).map_or(Source::Absent, Source::Property),
        };
        let named = |names: &mut dyn Iterator<Item = &str>| {
            let mut fields: Vec<(String, Source)> = Vec::new();
            for name in names {
                if name == "id" || name == "@odata.type" || fields.iter().any(|(f, _)| f == name) {
                    continue;
                }
                fields.push((name.to_owned(), source(name)));
            }
            fields
        };
        match select {
            Some(select) => (named(&mut select.iter().map(String::as_str)), true, false),
            None if t == ObjectType::User => (named(&mut USER_DEFAULT.iter().copied()), true, true),
            None => {
                let mut names = properties::properties(t)
                    .iter()
                    .map(|d| d.name)
                    .filter(|name| on_the_object(t, name))
                    .chain(["deletedDateTime", "onPremisesSyncEnabled"]);
                (named(&mut names), false, false)
            }
        }
    }
}

/// Renders objects of any (non-singleton) type under one `$select`, resolving the select
/// once per type.
pub(super) struct Projector<'q> {
    select: Option<&'q [String]>,
    by_type: [std::cell::OnceCell<Projection>; ObjectType::ALL.len()],
}

impl<'q> Projector<'q> {
    pub(super) fn new(select: Option<&'q [String]>) -> Self {
        Self {
            select,
            by_type: Default::default(),
        }
    }

    fn projection(&self, t: ObjectType) -> &Projection {
        let slot = usize::from(t.code().saturating_sub(1)) % ObjectType::ALL.len();
        self.by_type[slot].get_or_init(|| Projection::new(t, self.select))
    }
}

/// One object as its collection page shows it (the same JSON as [`render`]).
struct View<'a> {
    object: &'a DirectoryObject,
    projection: &'a Projection,
}

impl View<'_> {
    /// Appends the object's JSON to `out`.
    fn write_into(&self, out: &mut Vec<u8>) {
        let o = self.object;
        let p = self.projection;
        let odata = match o.get("@odata.type").and_then(Value::as_str) {
            Some(own) if o.object_type == ObjectType::NamedLocation => own,
            _ => rewind_common::graph_json::odata_type(o.object_type),
        };
        out.extend_from_slice(b"{\"@odata.type\":");
        write_json(out, odata);
        out.extend_from_slice(b",\"id\":\"");
        let mut guid = uuid::Uuid::encode_buffer();
        out.extend_from_slice(
            uuid::Uuid::from_u128(o.id.0)
                .hyphenated()
                .encode_lower(&mut guid)
                .as_bytes(),
        );
        out.push(b'"');
        let deleted_at = match o.lifecycle {
            rewind_common::Lifecycle::SoftDeleted { deleted_at } => Some(deleted_at),
            rewind_common::Lifecycle::Active => None,
        };
        // What an absent field shows: nothing, null, or (businessPhones) an empty list.
        let absent = |out: &mut Vec<u8>, name: &str, key: &[u8]| {
            if name == "businessPhones" {
                out.extend_from_slice(key);
                out.extend_from_slice(b"[]");
            } else if p.nulls {
                out.extend_from_slice(key);
                out.extend_from_slice(b"null");
            }
        };
        for ((name, source), key) in p.fields.iter().zip(&p.keys) {
            match *source {
                Source::Property(pid) => {
                    match o.attributes.binary_search_by_key(&pid, |(p, _)| *p) {
                        Ok(i) => {
                            out.extend_from_slice(key);
                            write_json(out, &o.attributes[i].1);
                        }
                        Err(_) if !p.nulls => {}
                        Err(_) => absent(out, name, key),
                    }
                }
                Source::DeletedDateTime => match deleted_at {
                    Some(at) => {
                        out.extend_from_slice(key);
                        write_json(out, format_time(at).as_str());
                    }
                    None => absent(out, name, key),
                },
                Source::OnPremisesSyncEnabled => {
                    if o.source == SourceOfAuthority::OnPremises {
                        out.extend_from_slice(key);
                        out.extend_from_slice(b"true");
                    } else {
                        absent(out, name, key);
                    }
                }
                Source::Absent => absent(out, name, key),
            }
        }
        if p.deleted_when_deleted {
            if let Some(at) = deleted_at {
                out.extend_from_slice(b",\"deletedDateTime\":");
                write_json(out, format_time(at).as_str());
            }
        }
        out.push(b'}');
    }
}

/// Appends the JSON of `value` (writing into memory cannot fail).
fn write_json(out: &mut Vec<u8>, value: &(impl serde::Serialize + ?Sized)) {
    let _ = serde_json::to_writer(out, value);
}

/// A collection page of directory objects written straight from them (no singletons: those
/// go through [`render`]), the next link before the values, as Graph writes it.
pub(super) fn object_collection(
    ctx: &Ctx<'_>,
    context: &str,
    objects: &[&DirectoryObject],
    select: Option<&[String]>,
    next: Option<String>,
) -> Reply {
    let projector = Projector::new(select);
    // About what a user under the connector's $select takes, so a page rarely regrows.
    let mut out = Vec::with_capacity(256 + objects.len() * 1_536);
    out.extend_from_slice(b"{\"@odata.context\":");
    write_json(
        &mut out,
        format!("{}/$metadata#{context}", ctx.base).as_str(),
    );
    if let Some(next) = next {
        out.extend_from_slice(b",\"@odata.nextLink\":");
        write_json(&mut out, next.as_str());
    }
    out.extend_from_slice(b",\"value\":[");
    for (i, o) in objects.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        View {
            object: o,
            projection: projector.projection(o.object_type),
        }
        .write_into(&mut out);
    }
    out.extend_from_slice(b"]}");
    Reply::raw(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::tenant::{TenantGenerator, TenantSpec};

    /// The page writer shows every object exactly as [`render`] does, under every kind of
    /// `$select` (none, the connector's, duplicates, unknown names, lifecycle fields).
    #[test]
    fn written_pages_equal_rendered_objects() {
        let gen = TenantGenerator::new(TenantSpec::new(3_000, 7));
        let mut objects: Vec<DirectoryObject> = (0..gen.backup_count())
            .map(|i| gen.backup_object(i))
            .filter(|o| !o.object_type.is_singleton())
            .collect();
        // Soft-deleted and synced variants of each type.
        let extra: Vec<DirectoryObject> = objects
            .iter()
            .step_by(97)
            .map(|o| {
                let mut o = o.clone();
                o.lifecycle = rewind_common::Lifecycle::SoftDeleted {
                    deleted_at: 1_790_000_000,
                };
                o.source = SourceOfAuthority::OnPremises;
                o
            })
            .collect();
        objects.extend(extra);
        let mut selects: Vec<Option<Vec<String>>> = vec![
            None,
            Some(vec!["id".into()]),
            Some(vec![
                "displayName".into(),
                "displayName".into(),
                "businessPhones".into(),
                "noSuchThing".into(),
                "@odata.type".into(),
                "deletedDateTime".into(),
                "onPremisesSyncEnabled".into(),
            ]),
        ];
        for t in ObjectType::ALL {
            let list = rewind_common::connector::capture::select_list(t);
            selects.push(Some(list.split(',').map(str::to_owned).collect()));
        }
        let mut types_seen = std::collections::BTreeSet::new();
        for select in &selects {
            let projector = Projector::new(select.as_deref());
            for o in &objects {
                types_seen.insert(o.object_type);
                let view = View {
                    object: o,
                    projection: projector.projection(o.object_type),
                };
                let mut text = Vec::new();
                view.write_into(&mut text);
                let written: Json = serde_json::from_slice(&text).unwrap();
                assert_eq!(
                    written,
                    render(o, select.as_deref()),
                    "{} {} under {select:?}",
                    o.object_type,
                    o.id
                );
            }
        }
        assert!(types_seen.len() >= 6, "{types_seen:?}");
    }
}
