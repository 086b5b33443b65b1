//! Grants and assignments, held as links with data on service principals and served as their
//! own Graph resources: `appRoleAssignedTo` and `oauth2PermissionGrants`.

use super::*;

pub(super) fn app_role_assigned_to(
    ctx: &Ctx<'_>,
    req: &GraphRequest,
    sp_id: ObjectId,
    rest: &[&str],
    q: &Query,
    now: i64,
    settings: &Settings,
) -> Result<Reply, GraphError> {
    let t = ObjectType::ServicePrincipal;
    let kind = LinkKind::AppRoleAssignedTo;
    match (&req.method, rest) {
        (&Method::GET, []) => {
            let data = read(&ctx.tenant.data);
            let sp = data
                .active(t, sp_id)
                .ok_or_else(|| GraphError::not_found(sp_id))?;
            let links = sp.links_of(kind);
            let start = q
                .after
                .map_or(0, |a| links.partition_point(|l| l.target <= a));
            let iter = links[start..].iter().map(|l| {
                let full = render_assignment(&data, sp, l);
                let keep = match &q.filter {
                    Some(Filter::Eq(p, v)) => eq_matches(&full, p, v),
                    Some(Filter::Ids(ids)) => ids.contains(&l.target),
                    None => true,
                };
                (l.target, keep.then_some(full))
            });
            let (page, next) = collect_page(iter, q.page_size(), settings.max_scan_per_page);
            let values = page
                .into_iter()
                .map(|m| apply_select(m, q.select.as_deref()))
                .collect();
            let path = format!("servicePrincipals/{sp_id}/appRoleAssignedTo");
            let next = next.map(|last| q.next_link(ctx, &path, last));
            Ok(collection(ctx, "appRoleAssignments", values, next))
        }
        (&Method::POST, []) => {
            let body = body_object(req)?;
            let principal: ObjectId = body
                .get("principalId")
                .and_then(Json::as_str)
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| GraphError::bad_request("principalId is missing or not a GUID."))?;
            let app_role: ObjectId = match body.get("appRoleId").and_then(Json::as_str) {
                Some(s) => s
                    .parse()
                    .map_err(|_| GraphError::bad_request("appRoleId is not a GUID."))?,
                None => ObjectId(0),
            };
            if let Some(r) = body.get("resourceId").and_then(Json::as_str) {
                if r.parse::<ObjectId>().ok() != Some(sp_id) {
                    return Err(GraphError::bad_request(
                        "resourceId must be the service principal the assignment is posted to.",
                    ));
                }
            }
            let mut data = write(&ctx.tenant.data);
            if data.active(t, sp_id).is_none() {
                return Err(GraphError::not_found(sp_id));
            }
            if data.find_directory_object(principal).is_none() {
                return Err(GraphError::not_found(principal));
            }
            let assignment = ObjectId(random_guid());
            let mut link_data = BTreeMap::new();
            link_data.insert("principalId".to_owned(), Value::from(principal.to_string()));
            link_data.insert("appRoleId".to_owned(), Value::from(app_role.to_string()));
            link_data.insert("createdDateTime".to_owned(), Value::from(format_time(now)));
            data.modify_links(t, sp_id, |sp| {
                let exists = sp.links_of(kind).iter().any(|l| {
                    let d = link_data_of(l);
                    d.get("principalId").and_then(Value::as_str) == Some(&principal.to_string())
                        && d.get("appRoleId").and_then(Value::as_str) == Some(&app_role.to_string())
                });
                if exists {
                    return Err(GraphError::bad_request(
                        "Permission being assigned already exists on the object",
                    ));
                }
                sp.add_link(
                    kind,
                    Link {
                        target: assignment,
                        data: Some(Value::Map(link_data)),
                    },
                );
                Ok(())
            })?;
            let sp = data
                .active(t, sp_id)
                .ok_or_else(|| GraphError::not_found(sp_id))?;
            let link = sp
                .links_of(kind)
                .iter()
                .find(|l| l.target == assignment)
                .ok_or_else(|| GraphError::not_found(assignment))?;
            Ok(Reply::json(
                StatusCode::CREATED,
                Json::Object(render_assignment(&data, sp, link)),
            ))
        }
        (&Method::GET, [aid]) => {
            let aid = parse_id(aid)?;
            let data = read(&ctx.tenant.data);
            let sp = data
                .active(t, sp_id)
                .ok_or_else(|| GraphError::not_found(sp_id))?;
            let link = sp
                .links_of(kind)
                .iter()
                .find(|l| l.target == aid)
                .ok_or_else(|| GraphError::not_found(aid))?;
            Ok(Reply::json(
                StatusCode::OK,
                apply_select(render_assignment(&data, sp, link), q.select.as_deref()),
            ))
        }
        (&Method::DELETE, [aid]) => {
            let aid = parse_id(aid)?;
            let mut data = write(&ctx.tenant.data);
            if data.active(t, sp_id).is_none() {
                return Err(GraphError::not_found(sp_id));
            }
            data.modify_links(t, sp_id, |sp| {
                if sp.remove_link(kind, aid) {
                    Ok(())
                } else {
                    Err(GraphError::not_found(aid))
                }
            })?;
            Ok(Reply::no_content())
        }
        _ => Err(GraphError::no_route()),
    }
}

pub(super) fn link_data_of(l: &Link) -> BTreeMap<String, Value> {
    match &l.data {
        Some(Value::Map(m)) => m.clone(),
        _ => BTreeMap::new(),
    }
}

pub(super) fn grants(
    ctx: &Ctx<'_>,
    req: &GraphRequest,
    rest: &[&str],
    q: &Query,
    settings: &Settings,
) -> Result<Reply, GraphError> {
    let sp_t = ObjectType::ServicePrincipal;
    let kind = LinkKind::OAuth2PermissionGrants;
    let find = |data: &TenantData, gid: ObjectId| -> Option<Map<String, Json>> {
        let client = data.active(sp_t, *data.grants().get(&gid)?)?;
        let link = client.links_of(kind).iter().find(|l| l.target == gid)?;
        Some(render_grant(client, link))
    };
    match (&req.method, rest) {
        (&Method::GET, []) => {
            let data = read(&ctx.tenant.data);
            let bounds = after_bound(q);
            let iter = data.grants().range(bounds).map(|(gid, _)| {
                let item = find(&data, *gid).filter(|full| match &q.filter {
                    Some(Filter::Eq(p, v)) => eq_matches(full, p, v),
                    Some(Filter::Ids(ids)) => ids.contains(gid),
                    None => true,
                });
                (*gid, item)
            });
            let (page, next) = collect_page(iter, q.page_size(), settings.max_scan_per_page);
            let values = page
                .into_iter()
                .map(|m| apply_select(m, q.select.as_deref()))
                .collect();
            let next = next.map(|last| q.next_link(ctx, "oauth2PermissionGrants", last));
            Ok(collection(ctx, "oauth2PermissionGrants", values, next))
        }
        (&Method::GET, [gid]) => {
            let gid = parse_id(gid)?;
            let data = read(&ctx.tenant.data);
            let full = find(&data, gid).ok_or_else(|| GraphError::not_found(gid))?;
            Ok(Reply::json(
                StatusCode::OK,
                apply_select(full, q.select.as_deref()),
            ))
        }
        (&Method::POST, []) => {
            let body = body_object(req)?;
            let consent = body.get("consentType").and_then(Json::as_str).unwrap_or("");
            if consent != "AllPrincipals" {
                return Err(GraphError::bad_request(
                    "Only admin-consent grants (consentType AllPrincipals) are simulated.",
                ));
            }
            let guid = |name: &str| -> Result<ObjectId, GraphError> {
                body.get(name)
                    .and_then(Json::as_str)
                    .and_then(|s| s.parse().ok())
                    .ok_or_else(|| {
                        GraphError::bad_request(format!("{name} is missing or not a GUID."))
                    })
            };
            let client = guid("clientId")?;
            let resource = guid("resourceId")?;
            let scope = body
                .get("scope")
                .and_then(Json::as_str)
                .unwrap_or("")
                .to_owned();
            let mut data = write(&ctx.tenant.data);
            if data.active(sp_t, client).is_none() {
                return Err(GraphError::not_found(client));
            }
            if data.active(sp_t, resource).is_none() {
                return Err(GraphError::not_found(resource));
            }
            let gid = ObjectId(random_guid());
            data.update(sp_t, client, |sp| {
                let exists = sp.links_of(kind).iter().any(|l| {
                    link_data_of(l).get("resourceId").and_then(Value::as_str)
                        == Some(&resource.to_string())
                });
                if exists {
                    return Err(GraphError::new(
                        StatusCode::CONFLICT,
                        "Request_MultipleObjectsWithSameKeyValue",
                        "Permission entry already exists.",
                    ));
                }
                let mut d = BTreeMap::new();
                d.insert("resourceId".to_owned(), Value::from(resource.to_string()));
                d.insert("scope".to_owned(), Value::from(scope.clone()));
                sp.add_link(
                    kind,
                    Link {
                        target: gid,
                        data: Some(Value::Map(d)),
                    },
                );
                Ok(())
            })?;
            let full = find(&data, gid).ok_or_else(|| GraphError::not_found(gid))?;
            Ok(Reply::json(StatusCode::CREATED, Json::Object(full)))
        }
        (&Method::PATCH, [gid]) => {
            let gid = parse_id(gid)?;
            let body = body_object(req)?;
            let mut data = write(&ctx.tenant.data);
            let client = *data
                .grants()
                .get(&gid)
                .ok_or_else(|| GraphError::not_found(gid))?;
            if data.active(sp_t, client).is_none() {
                return Err(GraphError::not_found(gid));
            }
            data.update(sp_t, client, |sp| {
                let link = sp
                    .links_of(kind)
                    .iter()
                    .find(|l| l.target == gid)
                    .cloned()
                    .ok_or_else(|| GraphError::not_found(gid))?;
                let mut d = link_data_of(&link);
                if let Some(scope) = body.get("scope").and_then(Json::as_str) {
                    d.insert("scope".to_owned(), Value::from(scope));
                }
                sp.add_link(
                    kind,
                    Link {
                        target: gid,
                        data: Some(Value::Map(d)),
                    },
                );
                Ok(())
            })?;
            Ok(Reply::no_content())
        }
        (&Method::DELETE, [gid]) => {
            let gid = parse_id(gid)?;
            let mut data = write(&ctx.tenant.data);
            let client = *data
                .grants()
                .get(&gid)
                .ok_or_else(|| GraphError::not_found(gid))?;
            if data.active(sp_t, client).is_none() {
                return Err(GraphError::not_found(gid));
            }
            data.update(sp_t, client, |sp| {
                if sp.remove_link(kind, gid) {
                    Ok(())
                } else {
                    Err(GraphError::not_found(gid))
                }
            })?;
            Ok(Reply::no_content())
        }
        _ => Err(GraphError::no_route()),
    }
}
