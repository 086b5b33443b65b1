//! Users, groups, applications and service principals: reads, creates, partial updates, soft
//! deletes, membership references, the directory recycle bin and getByIds, and (beta only) a
//! user's `authentication/requirements` (the per-user MFA state).

use super::*;

/// The id in a path: a GUID, or for users a userPrincipalName (found by a scan, as a
/// convenience for clients that address users that way).
fn resolve_id(data: &TenantData, t: ObjectType, segment: &str) -> Result<ObjectId, GraphError> {
    if let Ok(id) = segment.parse::<ObjectId>() {
        return Ok(id);
    }
    if t == ObjectType::User && segment.contains('@') {
        let found = data.map(t).values().find(|u| {
            u.lifecycle.is_active()
                && u.get("userPrincipalName")
                    .and_then(Value::as_str)
                    .is_some_and(|upn| upn.eq_ignore_ascii_case(segment))
        });
        if let Some(u) = found {
            return Ok(u.id);
        }
    }
    Err(GraphError::not_found(segment))
}

#[allow(clippy::too_many_arguments)]
pub(super) fn directory(
    ctx: &Ctx<'_>,
    req: &GraphRequest,
    t: ObjectType,
    coll: &str,
    rest: &[&str],
    q: &Query,
    now: i64,
    settings: &Settings,
) -> Result<Reply, GraphError> {
    let m = &req.method;
    match rest {
        [] if *m == Method::GET => {
            let data = read(&ctx.tenant.data);
            Ok(list_objects(ctx, &data, t, false, q, coll, coll, settings))
        }
        [] if *m == Method::POST => create(ctx, req, t),
        ["delta"] if *m == Method::GET => delta(ctx, t, coll, q, now, settings),
        [id] if *m == Method::GET => {
            let data = read(&ctx.tenant.data);
            let id = resolve_id(&data, t, id)?;
            let o = data
                .active(t, id)
                .ok_or_else(|| GraphError::not_found(id))?;
            let mut body = render(o, q.select.as_deref());
            if let Some(b) = body.as_object_mut() {
                b.insert(
                    "@odata.context".into(),
                    Json::String(format!("{}/$metadata#{coll}/$entity", ctx.base)),
                );
            }
            Ok(Reply::json(StatusCode::OK, body))
        }
        [id] if *m == Method::PATCH => {
            let body = body_object(req)?;
            let mut data = write(&ctx.tenant.data);
            let id = resolve_id(&data, t, id)?;
            data.update(t, id, |o| {
                if !o.lifecycle.is_active() {
                    return Err(GraphError::not_found(id));
                }
                apply_patch(o, body, false, Some(ctx.api))
            })?;
            Ok(Reply::no_content())
        }
        [id, "authentication", "requirements"] if t == ObjectType::User && ctx.api == Api::Beta => {
            authentication_requirements(ctx, req, id)
        }
        [id] if *m == Method::DELETE => {
            let mut data = write(&ctx.tenant.data);
            let id = resolve_id(&data, t, id)?;
            let o = data
                .active(t, id)
                .ok_or_else(|| GraphError::not_found(id))?;
            if o.source == SourceOfAuthority::OnPremises {
                return Err(GraphError::synced_object());
            }
            data.soft_delete(t, id, now)?;
            Ok(Reply::no_content())
        }
        [id, kind] if *m == Method::GET && matches!(*kind, "members" | "owners") => {
            let kind = if *kind == "members" {
                LinkKind::Members
            } else {
                LinkKind::Owners
            };
            if !properties::link_kinds(t).contains(&kind) {
                return Err(GraphError::no_route());
            }
            let id = parse_id(id)?;
            let data = read(&ctx.tenant.data);
            let holder = data
                .active(t, id)
                .ok_or_else(|| GraphError::not_found(id))?;
            let links = holder.links_of(kind);
            let start = q
                .after
                .map_or(0, |a| links.partition_point(|l| l.target <= a));
            let ids: Vec<ObjectId> = match &q.filter {
                Some(Filter::Ids(ids)) => links[start..]
                    .iter()
                    .map(|l| l.target)
                    .filter(|t| ids.contains(t))
                    .collect(),
                _ => links[start..].iter().map(|l| l.target).collect(),
            };
            let iter = ids
                .into_iter()
                .map(|target| (target, data.find_directory_object(target)));
            let path = format!("{coll}/{id}/{}", kind.as_str());
            Ok(directory_object_page(ctx, q, settings, iter, &path))
        }
        [id, "memberOf"] if *m == Method::GET && t == ObjectType::User => {
            let id = parse_id(id)?;
            let data = read(&ctx.tenant.data);
            data.active(t, id)
                .ok_or_else(|| GraphError::not_found(id))?;
            // The groups holding the user as a direct member, in group id order.
            let iter = data
                .map(ObjectType::Group)
                .range(after_bound(q))
                .map(|(gid, g)| {
                    let member = g.lifecycle.is_active()
                        && g.links_of(LinkKind::Members)
                            .binary_search_by_key(&id, |l| l.target)
                            .is_ok();
                    (*gid, member.then_some(g))
                });
            let path = format!("{coll}/{id}/memberOf");
            Ok(directory_object_page(ctx, q, settings, iter, &path))
        }
        [id, "appRoleAssignments"] if *m == Method::GET && t == ObjectType::User => {
            let id = parse_id(id)?;
            let data = read(&ctx.tenant.data);
            data.active(t, id)
                .ok_or_else(|| GraphError::not_found(id))?;
            // The assignments whose principal is the user, in assignment id order.
            let mut held: Vec<(ObjectId, Map<String, Json>)> = data
                .map(ObjectType::ServicePrincipal)
                .values()
                .filter(|sp| sp.lifecycle.is_active())
                .flat_map(|sp| {
                    sp.links_of(LinkKind::AppRoleAssignedTo)
                        .iter()
                        .map(move |l| (sp, l))
                })
                .filter(|(_, l)| {
                    link_data(l).get("principalId").and_then(Json::as_str)
                        == Some(id.to_string().as_str())
                })
                .map(|(sp, l)| (l.target, render_assignment(&data, sp, l)))
                .collect();
            held.sort_by_key(|(a, _)| *a);
            let iter = held
                .into_iter()
                .filter(|(a, _)| q.after.is_none_or(|after| *a > after))
                .map(|(a, m)| (a, Some(m)));
            let (page, next) = collect_page(iter, q.page_size(), settings.max_scan_per_page);
            let values = page
                .into_iter()
                .map(|m| apply_select(m, q.select.as_deref()))
                .collect();
            let path = format!("{coll}/{id}/appRoleAssignments");
            let next = next.map(|last| q.next_link(ctx, &path, last));
            Ok(collection(ctx, "appRoleAssignments", values, next))
        }
        [id, kind, "$ref"] if *m == Method::POST && matches!(*kind, "members" | "owners") => {
            let kind = if *kind == "members" {
                LinkKind::Members
            } else {
                LinkKind::Owners
            };
            if !properties::link_kinds(t).contains(&kind) {
                return Err(GraphError::no_route());
            }
            let id = parse_id(id)?;
            let body = body_object(req)?;
            let reference = body
                .get("@odata.id")
                .and_then(Json::as_str)
                .ok_or_else(|| {
                    GraphError::bad_request("The @odata.id of the reference is missing.")
                })?;
            let member: ObjectId = reference
                .trim_end_matches('/')
                .rsplit('/')
                .next()
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| {
                    GraphError::bad_request(format!("Invalid object identifier '{reference}'."))
                })?;
            let mut data = write(&ctx.tenant.data);
            check_link_write(&data, t, id, kind)?;
            if data.find_directory_object(member).is_none() {
                return Err(GraphError::not_found(member));
            }
            data.modify_links(t, id, |o| {
                if o.links_of(kind).binary_search_by_key(&member, |l| l.target).is_ok() {
                    return Err(GraphError::bad_request(format!(
                        "One or more added object references already exist for the following modified properties: '{}'.",
                        kind.as_str()
                    )));
                }
                o.add_link(kind, Link::to(member));
                Ok(())
            })?;
            Ok(Reply::no_content())
        }
        [id, kind, member, "$ref"]
            if *m == Method::DELETE && matches!(*kind, "members" | "owners") =>
        {
            let kind = if *kind == "members" {
                LinkKind::Members
            } else {
                LinkKind::Owners
            };
            if !properties::link_kinds(t).contains(&kind) {
                return Err(GraphError::no_route());
            }
            let id = parse_id(id)?;
            let member = parse_id(member)?;
            let mut data = write(&ctx.tenant.data);
            check_link_write(&data, t, id, kind)?;
            data.modify_links(t, id, |o| {
                if o.remove_link(kind, member) {
                    Ok(())
                } else {
                    Err(GraphError::not_found(member))
                }
            })?;
            Ok(Reply::no_content())
        }
        [id, "appRoleAssignedTo", rest @ ..] if t == ObjectType::ServicePrincipal => {
            let id = parse_id(id)?;
            app_role_assigned_to(ctx, req, id, rest, q, now, settings)
        }
        _ => Err(GraphError::no_route()),
    }
}

/// `GET|PATCH /users/{id}/authentication/requirements` (beta): the user's
/// `strongAuthenticationRequirements`, whose one property is the per-user MFA state (`disabled`
/// unless set); a `PATCH` takes only that property, with one of Graph's values (204). The
/// state is a cloud setting: users synced from on-premises take it too.
fn authentication_requirements(
    ctx: &Ctx<'_>,
    req: &GraphRequest,
    id: &str,
) -> Result<Reply, GraphError> {
    let t = ObjectType::User;
    let name = properties::PER_USER_MFA_STATE;
    match req.method {
        Method::GET => {
            // Written straight to text, the property found by its id: a capture reads one of
            // these per user.
            static STATE_ID: std::sync::LazyLock<Option<u8>> = std::sync::LazyLock::new(|| {
                properties::property_id(ObjectType::User, properties::PER_USER_MFA_STATE)
            });
            let data = read(&ctx.tenant.data);
            let id = resolve_id(&data, t, id)?;
            let user = data
                .active(t, id)
                .ok_or_else(|| GraphError::not_found(id))?;
            let state = STATE_ID
                .and_then(|pid| user.attributes.binary_search_by_key(&pid, |(p, _)| *p).ok())
                .and_then(|i| user.attributes.get(i))
                .and_then(|(_, v)| v.as_str())
                .unwrap_or("disabled");
            let mut guid = uuid::Uuid::encode_buffer();
            let guid = uuid::Uuid::from_u128(id.0)
                .hyphenated()
                .encode_lower(&mut guid);
            let mut text = Vec::with_capacity(ctx.base.len() + 160);
            text.extend_from_slice(b"{\"@odata.context\":");
            let context = [
                ctx.base,
                "/$metadata#users('",
                guid,
                "')/authentication/requirements/$entity",
            ];
            // Only the base (from the request's Host header) could need escaping.
            if ctx
                .base
                .bytes()
                .all(|b| b >= 0x20 && b != b'"' && b != b'\\')
            {
                text.push(b'"');
                context
                    .iter()
                    .for_each(|part| text.extend_from_slice(part.as_bytes()));
                text.push(b'"');
            } else {
                let _ = serde_json::to_writer(&mut text, &context.concat());
            }
            text.extend_from_slice(b",\"perUserMfaState\":");
            let _ = serde_json::to_writer(&mut text, state);
            text.push(b'}');
            Ok(Reply::raw(text))
        }
        Method::PATCH => {
            let body = body_object(req)?;
            check_body(Resource::AuthenticationRequirements, body, ctx.api)?;
            let state = match body.get(name) {
                None => None,
                Some(Json::String(s))
                    if matches!(s.as_str(), "disabled" | "enabled" | "enforced") =>
                {
                    Some(s.clone())
                }
                Some(other) => {
                    return Err(GraphError::bad_request(format!(
                        "Invalid value '{other}' for property '{name}'."
                    )))
                }
            };
            let mut data = write(&ctx.tenant.data);
            let id = resolve_id(&data, t, id)?;
            data.update(t, id, |o| {
                if !o.lifecycle.is_active() {
                    return Err(GraphError::not_found(id));
                }
                if let Some(state) = &state {
                    o.set(name, Value::from(state.as_str()));
                }
                Ok(())
            })?;
            Ok(Reply::no_content())
        }
        _ => Err(GraphError::method_not_allowed()),
    }
}

/// A page of a `directoryObjects` collection: the objects `items` offers (id, and the object
/// when it belongs on the page), with a next link to `path` when more remain.
fn directory_object_page<'a>(
    ctx: &Ctx<'_>,
    q: &Query,
    settings: &Settings,
    items: impl Iterator<Item = (ObjectId, Option<&'a DirectoryObject>)>,
    path: &str,
) -> Reply {
    let (page, next) = collect_page(items, q.page_size(), settings.max_scan_per_page);
    let next = next.map(|last| q.next_link(ctx, path, last));
    object_collection(ctx, "directoryObjects", &page, q.select.as_deref(), next)
}

/// A write of `kind` links on the object is allowed (it exists, is cloud-mastered and, for
/// members, not dynamic).
pub(super) fn check_link_write(
    data: &TenantData,
    t: ObjectType,
    id: ObjectId,
    kind: LinkKind,
) -> Result<(), GraphError> {
    let holder = data
        .active(t, id)
        .ok_or_else(|| GraphError::not_found(id))?;
    if holder.source == SourceOfAuthority::OnPremises {
        return Err(GraphError::synced_object());
    }
    if kind == LinkKind::Members && holder.dynamic_membership {
        return Err(GraphError::bad_request(
            "Insufficient privileges: the members of a group with dynamic membership cannot be changed.",
        ));
    }
    Ok(())
}

/// User properties a cloud write may change on an object synced from on-premises.
pub(super) const CLOUD_WRITABLE_ON_SYNCED_USER: &[&str] = &[
    "usageLocation",
    "passwordPolicies",
    "ageGroup",
    "consentProvidedForMinor",
    "preferredDataLocation",
];

/// Applies a partial update. A property the type does not have in Graph version `api` is
/// refused (400) as Graph refuses it (without `api`, for the admin route, any kept property is
/// taken); Graph properties the snapshot does not keep are ignored (as are annotations and
/// `id`); on a synced object, synced properties are refused unless `allow_synced` (the admin
/// route that plays on-premises sync).
pub fn apply_patch(
    o: &mut DirectoryObject,
    body: &Map<String, Json>,
    allow_synced: bool,
    api: Option<Api>,
) -> Result<(), GraphError> {
    let t = o.object_type;
    if let Some(api) = api {
        check_body(Resource::Object(t), body, api)?;
    }
    if o.source == SourceOfAuthority::OnPremises && !allow_synced {
        let synced = body.keys().any(|k| {
            properties::property_id(t, k).is_some()
                && !(t == ObjectType::User && CLOUD_WRITABLE_ON_SYNCED_USER.contains(&k.as_str()))
        });
        if synced {
            return Err(GraphError::synced_object());
        }
    }
    for (k, v) in body {
        if k == "id" || k.contains('@') {
            continue;
        }
        if t == ObjectType::AuthenticationMethodsPolicy && k == "authenticationMethodConfigurations"
        {
            for item in v.as_array().map(Vec::as_slice).unwrap_or(&[]) {
                let Some(cid) = item.get("id").and_then(Json::as_str) else {
                    return Err(GraphError::bad_request(
                        "Each method configuration needs an id.",
                    ));
                };
                let Some(pid) = properties::property_id(t, cid) else {
                    return Err(GraphError::bad_request(format!(
                        "Unknown method configuration '{cid}'."
                    )));
                };
                let mut merged = match o.get(cid) {
                    Some(Value::Map(m)) => m.clone(),
                    _ => BTreeMap::new(),
                };
                if let Some(fields) = item.as_object() {
                    for (fk, fv) in fields {
                        if fk != "id" {
                            merged.insert(fk.clone(), Value::from_json(fv));
                        }
                    }
                }
                o.set_by_id(pid, Value::Map(merged));
            }
            continue;
        }
        if let Some(pid) = properties::property_id(t, k) {
            o.set_by_id(pid, Value::from_json(v));
        }
    }
    if t == ObjectType::Group {
        o.dynamic_membership = o.get("groupTypes").is_some_and(|g| match g {
            Value::List(items) => items
                .iter()
                .any(|i| i.as_str() == Some("DynamicMembership")),
            _ => false,
        });
    }
    Ok(())
}

/// Creates an object from its Graph JSON with a fresh id (201 with the object).
pub(super) fn create(
    ctx: &Ctx<'_>,
    req: &GraphRequest,
    t: ObjectType,
) -> Result<Reply, GraphError> {
    let mut body = body_object(req)?.clone();
    if t == ObjectType::NamedLocation {
        let kind = body.get("@odata.type").and_then(Json::as_str).unwrap_or("");
        if !matches!(
            kind,
            "#microsoft.graph.ipNamedLocation" | "#microsoft.graph.countryNamedLocation"
        ) {
            return Err(GraphError::bad_request(
                "A named location needs an @odata.type of #microsoft.graph.ipNamedLocation or #microsoft.graph.countryNamedLocation.",
            ));
        }
    } else {
        body.remove("@odata.type");
    }
    let id = ObjectId(random_guid());
    body.insert("id".into(), Json::String(id.to_string()));
    for k in [
        "deletedDateTime",
        "onPremisesSyncEnabled",
        "members",
        "owners",
        "oauth2PermissionGrants",
        "appRoleAssignedTo",
    ] {
        body.remove(k);
    }
    let object = from_graph_json(t, &Json::Object(body))
        .map_err(|e| GraphError::bad_request(e.to_string()))?;
    let mut data = write(&ctx.tenant.data);
    data.upsert(object);
    let o = data.get(t, id).ok_or_else(|| GraphError::not_found(id))?;
    let mut full = full_json(o);
    full.insert(
        "@odata.context".into(),
        Json::String(format!(
            "{}/$metadata#{}/$entity",
            ctx.base,
            collection_name(t)
        )),
    );
    Ok(Reply::json(StatusCode::CREATED, Json::Object(full)))
}

pub(super) fn collection_name(t: ObjectType) -> &'static str {
    match t {
        ObjectType::User => "users",
        ObjectType::Group => "groups",
        ObjectType::Application => "applications",
        ObjectType::ServicePrincipal => "servicePrincipals",
        ObjectType::ConditionalAccessPolicy => "identity/conditionalAccess/policies",
        ObjectType::NamedLocation => "identity/conditionalAccess/namedLocations",
        ObjectType::AuthenticationMethodsPolicy => "policies/authenticationMethodsPolicy",
        ObjectType::AuthorizationPolicy => "policies/authorizationPolicy",
        ObjectType::Organization => "organization",
    }
}

pub(super) fn deleted_items(
    ctx: &Ctx<'_>,
    req: &GraphRequest,
    rest: &[&str],
    q: &Query,
    settings: &Settings,
) -> Result<Reply, GraphError> {
    let m = &req.method;
    let find_deleted = |data: &TenantData, id: ObjectId| -> Option<ObjectType> {
        crate::dirsim::store::DIRECTORY_TYPES
            .into_iter()
            .find(|t| data.deleted_ids(*t).contains(&id))
    };
    match rest {
        [] => Err(GraphError::bad_request(
            "The type cast is required: use /directory/deletedItems/microsoft.graph.user (or group, application, servicePrincipal).",
        )),
        [segment] if *m == Method::GET && segment.parse::<ObjectId>().is_err() => {
            let t = match *segment {
                "microsoft.graph.user" => ObjectType::User,
                "microsoft.graph.group" => ObjectType::Group,
                "microsoft.graph.application" => ObjectType::Application,
                "microsoft.graph.servicePrincipal" => ObjectType::ServicePrincipal,
                _ => return Err(GraphError::bad_request(format!("Unsupported type cast '{segment}'."))),
            };
            let data = read(&ctx.tenant.data);
            let path = format!("directory/deletedItems/{segment}");
            Ok(list_objects(ctx, &data, t, true, q, &path, &path, settings))
        }
        [id] if *m == Method::GET => {
            let id = parse_id(id)?;
            let data = read(&ctx.tenant.data);
            let t = find_deleted(&data, id).ok_or_else(|| GraphError::not_found(id))?;
            let o = data.get(t, id).ok_or_else(|| GraphError::not_found(id))?;
            Ok(Reply::json(StatusCode::OK, render(o, q.select.as_deref())))
        }
        [id] if *m == Method::DELETE => {
            let id = parse_id(id)?;
            let mut data = write(&ctx.tenant.data);
            let t = find_deleted(&data, id).ok_or_else(|| GraphError::not_found(id))?;
            data.purge(&[(t, id)]);
            Ok(Reply::no_content())
        }
        [id, "restore"] if *m == Method::POST => {
            let id = parse_id(id)?;
            let mut data = write(&ctx.tenant.data);
            let t = find_deleted(&data, id).ok_or_else(|| GraphError::not_found(id))?;
            data.restore(t, id)?;
            let o = data.get(t, id).ok_or_else(|| GraphError::not_found(id))?;
            Ok(Reply::json(StatusCode::OK, Json::Object(full_json(o))))
        }
        _ => Err(GraphError::no_route()),
    }
}

pub(super) fn get_by_ids(ctx: &Ctx<'_>, req: &GraphRequest) -> Result<Reply, GraphError> {
    let body = body_object(req)?;
    let ids = body
        .get("ids")
        .and_then(Json::as_array)
        .ok_or_else(|| GraphError::bad_request("ids is required."))?;
    if ids.len() > 1000 {
        return Err(GraphError::bad_request(format!(
            "Too many ids: {} (at most 1000).",
            ids.len()
        )));
    }
    let mut types = Vec::new();
    for t in body
        .get("types")
        .and_then(Json::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[])
    {
        let t = t.as_str().unwrap_or("");
        let t = match t
            .trim_start_matches("microsoft.graph.")
            .to_ascii_lowercase()
            .as_str()
        {
            "user" => ObjectType::User,
            "group" => ObjectType::Group,
            "application" => ObjectType::Application,
            "serviceprincipal" => ObjectType::ServicePrincipal,
            _ => return Err(GraphError::bad_request(format!("Unsupported type '{t}'."))),
        };
        types.push(t);
    }
    let data = read(&ctx.tenant.data);
    let mut values = Vec::new();
    for id in ids {
        let id: ObjectId = id
            .as_str()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| GraphError::bad_request(format!("Invalid object identifier '{id}'.")))?;
        if let Some(o) = data.find_directory_object(id) {
            if types.is_empty() || types.contains(&o.object_type) {
                values.push(Json::Object(full_json(o)));
            }
        }
    }
    Ok(collection(ctx, "directoryObjects", values, None))
}
