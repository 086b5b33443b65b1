//! Conditional access policies and named locations with their own recycle bin, and the
//! singletons (authentication methods policy, authorization policy, organization).

use super::*;

pub(super) fn conditional_access(
    ctx: &Ctx<'_>,
    req: &GraphRequest,
    rest: &[&str],
    q: &Query,
    now: i64,
    settings: &Settings,
) -> Result<Reply, GraphError> {
    let ca_type = |s: &str| match s {
        "policies" => Some(ObjectType::ConditionalAccessPolicy),
        "namedLocations" => Some(ObjectType::NamedLocation),
        _ => None,
    };
    let m = &req.method;
    match rest {
        ["deletedItems", kind, tail @ ..] => {
            let t = ca_type(kind).ok_or_else(GraphError::no_route)?;
            match tail {
                [] if *m == Method::GET => {
                    let data = read(&ctx.tenant.data);
                    let path = format!("identity/conditionalAccess/deletedItems/{kind}");
                    Ok(list_objects(ctx, &data, t, true, q, &path, &path, settings))
                }
                [id] if *m == Method::GET => {
                    let id = parse_id(id)?;
                    let data = read(&ctx.tenant.data);
                    if !data.deleted_ids(t).contains(&id) {
                        return Err(GraphError::not_found(id));
                    }
                    let o = data.get(t, id).ok_or_else(|| GraphError::not_found(id))?;
                    Ok(Reply::json(StatusCode::OK, render(o, q.select.as_deref())))
                }
                [id] if *m == Method::DELETE => {
                    let id = parse_id(id)?;
                    let mut data = write(&ctx.tenant.data);
                    if !data.deleted_ids(t).contains(&id) {
                        return Err(GraphError::not_found(id));
                    }
                    data.purge(&[(t, id)]);
                    Ok(Reply::no_content())
                }
                [id, "restore"] if *m == Method::POST => {
                    let id = parse_id(id)?;
                    let mut data = write(&ctx.tenant.data);
                    data.restore(t, id)?;
                    let o = data.get(t, id).ok_or_else(|| GraphError::not_found(id))?;
                    Ok(Reply::json(StatusCode::OK, render(o, None)))
                }
                _ => Err(GraphError::no_route()),
            }
        }
        [kind, tail @ ..] => {
            let t = ca_type(kind).ok_or_else(GraphError::no_route)?;
            let path = format!("identity/conditionalAccess/{kind}");
            match tail {
                [] if *m == Method::GET => {
                    let data = read(&ctx.tenant.data);
                    Ok(list_objects(
                        ctx, &data, t, false, q, &path, &path, settings,
                    ))
                }
                [] if *m == Method::POST => create(ctx, req, t),
                [id] if *m == Method::GET => {
                    let id = parse_id(id)?;
                    let data = read(&ctx.tenant.data);
                    let o = data
                        .active(t, id)
                        .ok_or_else(|| GraphError::not_found(id))?;
                    Ok(Reply::json(StatusCode::OK, render(o, q.select.as_deref())))
                }
                [id] if *m == Method::PATCH => {
                    let id = parse_id(id)?;
                    let body = body_object(req)?;
                    let mut data = write(&ctx.tenant.data);
                    data.update(t, id, |o| {
                        if !o.lifecycle.is_active() {
                            return Err(GraphError::not_found(id));
                        }
                        apply_patch(o, body, false, Some(ctx.api))
                    })?;
                    Ok(Reply::no_content())
                }
                [id] if *m == Method::DELETE => {
                    let id = parse_id(id)?;
                    write(&ctx.tenant.data).soft_delete(t, id, now)?;
                    Ok(Reply::no_content())
                }
                _ => Err(GraphError::no_route()),
            }
        }
        _ => Err(GraphError::no_route()),
    }
}

pub(super) fn singleton(
    ctx: &Ctx<'_>,
    req: &GraphRequest,
    t: ObjectType,
    q: &Query,
) -> Result<Reply, GraphError> {
    match req.method {
        Method::GET => {
            let data = read(&ctx.tenant.data);
            let o = the_singleton(&data, t)?;
            Ok(Reply::json(StatusCode::OK, render(o, q.select.as_deref())))
        }
        Method::PATCH => patch_singleton(ctx, t, body_object(req)?),
        _ => Err(GraphError::method_not_allowed()),
    }
}

/// The tenant's one object of a singleton type.
fn the_singleton(data: &TenantData, t: ObjectType) -> Result<&DirectoryObject, GraphError> {
    data.map(t)
        .values()
        .next()
        .ok_or_else(|| GraphError::not_found(t))
}

/// A partial update of a singleton (204).
fn patch_singleton(
    ctx: &Ctx<'_>,
    t: ObjectType,
    body: &Map<String, Json>,
) -> Result<Reply, GraphError> {
    let mut data = write(&ctx.tenant.data);
    let id = the_singleton(&data, t)?.id;
    data.update(t, id, |o| apply_patch(o, body, false, Some(ctx.api)))?;
    Ok(Reply::no_content())
}

/// One method configuration of the authentication methods policy: `GET`, and `PATCH` (a
/// partial update, 204), as Graph serves each on its own URL.
pub(super) fn method_configuration(
    ctx: &Ctx<'_>,
    req: &GraphRequest,
    cid: &str,
) -> Result<Reply, GraphError> {
    let t = ObjectType::AuthenticationMethodsPolicy;
    if !properties::AUTHENTICATION_METHOD_CONFIGURATIONS.contains(&cid) {
        return Err(GraphError::not_found(cid));
    }
    match req.method {
        Method::GET => {
            let data = read(&ctx.tenant.data);
            let o = the_singleton(&data, t)?;
            let mut config = match o.get(cid).map(Value::to_json) {
                Some(Json::Object(m)) => m,
                _ => Map::new(),
            };
            config.insert("id".into(), Json::String(cid.to_owned()));
            Ok(Reply::json(StatusCode::OK, Json::Object(config)))
        }
        Method::PATCH => {
            let mut item = body_object(req)?.clone();
            item.insert("id".into(), Json::String(cid.to_owned()));
            let mut body = Map::new();
            body.insert(
                "authenticationMethodConfigurations".into(),
                Json::Array(vec![Json::Object(item)]),
            );
            patch_singleton(ctx, t, &body)
        }
        _ => Err(GraphError::method_not_allowed()),
    }
}
