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

/// The Graph JSON of an object as Graph serves it (links are separate resources).
pub(super) fn full_json(o: &DirectoryObject) -> Map<String, Json> {
    let mut m = match to_graph_json(o) {
        Json::Object(m) => m,
        _ => Map::new(),
    };
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
