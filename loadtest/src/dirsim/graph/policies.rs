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
                        apply_patch(o, body, false)
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
            let o = data
                .map(t)
                .values()
                .next()
                .ok_or_else(|| GraphError::not_found(t))?;
            Ok(Reply::json(StatusCode::OK, render(o, q.select.as_deref())))
        }
        Method::PATCH => {
            let body = body_object(req)?;
            let mut data = write(&ctx.tenant.data);
            let id = data
                .map(t)
                .values()
                .next()
                .map(|o| o.id)
                .ok_or_else(|| GraphError::not_found(t))?;
            data.update(t, id, |o| apply_patch(o, body, false))?;
            Ok(Reply::no_content())
        }
        _ => Err(GraphError::method_not_allowed()),
    }
}
