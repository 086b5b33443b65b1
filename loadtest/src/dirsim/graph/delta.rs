//! Delta queries: a full sync paged with next links and closed by a delta link, then the
//! changes since, from the tenant's change log.

use super::*;

/// How long a delta token stays valid, in simulated seconds.
pub(super) const DELTA_TOKEN_LIFETIME: i64 = 7 * 86_400;

pub(super) fn delta_link(ctx: &Ctx<'_>, path: &str, q: &Query, key: &str, token: &str) -> String {
    let mut link = format!("{}/{path}?", ctx.base);
    if let Some(s) = &q.raw_select {
        link.push_str(&format!("$select={}&", encode_query_value(s)));
    }
    if let Some(top) = q.top {
        link.push_str(&format!("$top={top}&"));
    }
    link.push_str(&format!("{key}={token}"));
    link
}

pub(super) fn hex_u128(s: &str) -> Result<u128, GraphError> {
    u128::from_str_radix(s, 16).map_err(|_| GraphError::bad_request("Invalid delta or skip token."))
}

pub(super) fn hex_i64(s: &str) -> Result<i64, GraphError> {
    i64::from_str_radix(s, 16).map_err(|_| GraphError::bad_request("Invalid delta or skip token."))
}

/// `GET /{collection}/delta`: a full sync paged with next links and closed by a delta link,
/// then the objects changed since (soft-deleted ones as `@removed` "changed", purged ones as
/// "deleted"). Tokens expire after 7 simulated days (410).
pub(super) fn delta(
    ctx: &Ctx<'_>,
    t: ObjectType,
    coll: &str,
    q: &Query,
    now: i64,
    settings: &Settings,
) -> Result<Reply, GraphError> {
    let data = read(&ctx.tenant.data);
    let path = format!("{coll}/delta");
    let token_for = |seq: u64| format!("d.{seq:x}.{now:x}");
    if let Some(token) = &q.deltatoken {
        if token == "latest" {
            let link = delta_link(ctx, &path, q, "$deltatoken", &token_for(data.seq()));
            let mut reply = collection(ctx, coll, Vec::new(), None);
            if let Some(b) = reply.body.as_mut().and_then(Payload::as_object_mut) {
                b.insert("@odata.deltaLink".into(), Json::String(link));
            }
            return Ok(reply);
        }
        let mut parts = token.split('.');
        let (Some("d"), Some(seq), Some(issued), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(GraphError::bad_request("Invalid delta token."));
        };
        let (seq, issued) = (hex_u128(seq)? as u64, hex_i64(issued)?);
        if now.saturating_sub(issued) > DELTA_TOKEN_LIFETIME {
            return Err(GraphError::new(
                StatusCode::GONE,
                "resyncRequired",
                "The delta token has expired; start over with a full synchronization.",
            ));
        }
        return Ok(delta_changes(
            ctx, &data, t, coll, &path, seq, q, now, settings,
        ));
    }
    match q.delta_skip.as_deref() {
        Some(s) if s.starts_with("c.") => {
            let after = hex_u128(&s[2..])? as u64;
            Ok(delta_changes(
                ctx, &data, t, coll, &path, after, q, now, settings,
            ))
        }
        skip => {
            let (after, start) = match skip {
                Some(s) => {
                    let mut parts = s[2..].split('.');
                    let (Some(id), Some(start), None) = (parts.next(), parts.next(), parts.next())
                    else {
                        return Err(GraphError::bad_request("Invalid skip token."));
                    };
                    (Some(ObjectId(hex_u128(id)?)), hex_u128(start)? as u64)
                }
                None => (None, data.seq()),
            };
            let bounds = match after {
                Some(a) => (Bound::Excluded(a), Bound::Unbounded),
                None => (Bound::Unbounded, Bound::Unbounded),
            };
            let iter = data
                .map(t)
                .range(bounds)
                .map(|(id, o)| (*id, Some(o).filter(|o| o.lifecycle.is_active())));
            let (page, next) = collect_page(iter, q.page_size(), settings.max_scan_per_page);
            let values = page
                .into_iter()
                .map(|o| render(o, q.select.as_deref()))
                .collect();
            let reply = match next {
                Some(last) => {
                    let link = delta_link(
                        ctx,
                        &path,
                        q,
                        "$skiptoken",
                        &format!("f.{:x}.{start:x}", last.0),
                    );
                    collection(ctx, coll, values, Some(link))
                }
                None => {
                    let mut r = collection(ctx, coll, values, None);
                    let link = delta_link(ctx, &path, q, "$deltatoken", &token_for(start));
                    if let Some(b) = r.body.as_mut().and_then(Payload::as_object_mut) {
                        b.insert("@odata.deltaLink".into(), Json::String(link));
                    }
                    r
                }
            };
            Ok(reply)
        }
    }
}

#[allow(clippy::too_many_arguments)]
pub(super) fn delta_changes(
    ctx: &Ctx<'_>,
    data: &TenantData,
    t: ObjectType,
    coll: &str,
    path: &str,
    after: u64,
    q: &Query,
    now: i64,
    settings: &Settings,
) -> Reply {
    let mut values = Vec::new();
    let mut last = after;
    let mut scanned = 0usize;
    let mut iter = data.changes_after(after).peekable();
    for change in iter.by_ref() {
        scanned += 1;
        last = change.seq;
        if change.object_type == t {
            let item = match data.get(t, change.id) {
                Some(o) if o.lifecycle.is_active() => render(o, q.select.as_deref()),
                Some(_) => json_removed(change.id, "changed"),
                None => json_removed(change.id, "deleted"),
            };
            values.push(item);
        }
        if values.len() >= q.page_size() || scanned >= settings.max_scan_per_page.max(1) {
            break;
        }
    }
    if iter.peek().is_some() {
        let link = delta_link(ctx, path, q, "$skiptoken", &format!("c.{last:x}"));
        collection(ctx, coll, values, Some(link))
    } else {
        let mut r = collection(ctx, coll, values, None);
        let link = delta_link(ctx, path, q, "$deltatoken", &format!("d.{last:x}.{now:x}"));
        if let Some(b) = r.body.as_mut().and_then(Payload::as_object_mut) {
            b.insert("@odata.deltaLink".into(), Json::String(link));
        }
        r
    }
}

pub(super) fn json_removed(id: ObjectId, reason: &str) -> Json {
    let mut m = Map::new();
    m.insert("id".into(), Json::String(id.to_string()));
    let mut removed = Map::new();
    removed.insert("reason".into(), Json::String(reason.into()));
    m.insert("@removed".into(), Json::Object(removed));
    Json::Object(m)
}
