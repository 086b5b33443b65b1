//! Query options of Graph collections (`$top`, `$select`, `$filter`, `$skiptoken`) and paging
//! in id order with absolute next links.

use super::*;

#[derive(Debug, Clone, PartialEq)]
pub(super) enum Filter {
    Ids(Vec<ObjectId>),
    Eq(String, Json),
}

#[derive(Debug, Clone, Default)]
pub(super) struct Query {
    pub(super) top: Option<usize>,
    pub(super) select: Option<Vec<String>>,
    pub(super) filter: Option<Filter>,
    pub(super) after: Option<ObjectId>,
    /// A delta query's own skip token (`f.` full-sync or `c.` changes pages).
    pub(super) delta_skip: Option<String>,
    pub(super) deltatoken: Option<String>,
    pub(super) raw_select: Option<String>,
    pub(super) raw_filter: Option<String>,
}

pub(super) const DEFAULT_PAGE: usize = 100;
pub(super) const MAX_PAGE: usize = 999;

impl Query {
    pub(super) fn parse(pairs: &[(String, String)]) -> Result<Self, GraphError> {
        let mut q = Query::default();
        for (k, v) in pairs {
            match k.trim_start_matches('$') {
                "top" => {
                    let top: usize = v.trim().parse().map_err(|_| {
                        GraphError::bad_request(format!("Invalid page size specified: '{v}'."))
                    })?;
                    if top == 0 || top > MAX_PAGE {
                        return Err(GraphError::bad_request(format!(
                            "Invalid page size specified: '{top}'. Must be between 1 and {MAX_PAGE} inclusive."
                        )));
                    }
                    q.top = Some(top);
                }
                "select" => {
                    q.select = Some(
                        v.split(',')
                            .map(|s| s.trim().to_owned())
                            .filter(|s| !s.is_empty())
                            .collect(),
                    );
                    q.raw_select = Some(v.clone());
                }
                "filter" => {
                    q.filter = Some(parse_filter(v)?);
                    q.raw_filter = Some(v.clone());
                }
                "skiptoken" if v.starts_with("f.") || v.starts_with("c.") => {
                    q.delta_skip = Some(v.clone());
                }
                "skiptoken" => {
                    let n = u128::from_str_radix(v.trim(), 16)
                        .map_err(|_| GraphError::bad_request("Invalid skip token."))?;
                    q.after = Some(ObjectId(n));
                }
                "deltatoken" => q.deltatoken = Some(v.clone()),
                _ => {}
            }
        }
        Ok(q)
    }

    pub(super) fn page_size(&self) -> usize {
        self.top.unwrap_or(DEFAULT_PAGE)
    }

    /// The absolute link to the page after `last`.
    pub(super) fn next_link(&self, ctx: &Ctx<'_>, path: &str, last: ObjectId) -> String {
        let mut link = format!("{}/{path}?", ctx.base);
        if let Some(top) = self.top {
            link.push_str(&format!("$top={top}&"));
        }
        if let Some(s) = &self.raw_select {
            link.push_str(&format!("$select={}&", encode_query_value(s)));
        }
        if let Some(f) = &self.raw_filter {
            link.push_str(&format!("$filter={}&", encode_query_value(f)));
        }
        link.push_str(&format!("$skiptoken={:032x}", last.0));
        link
    }
}

pub(super) fn parse_filter(text: &str) -> Result<Filter, GraphError> {
    let unsupported = || {
        GraphError::unsupported_query(format!(
            "Unsupported or invalid query filter clause specified: '{text}'."
        ))
    };
    let t = text.trim();
    let (lhs, rest) = t.split_once(char::is_whitespace).ok_or_else(unsupported)?;
    let (op, value) = rest
        .trim()
        .split_once(char::is_whitespace)
        .ok_or_else(unsupported)?;
    let value = value.trim();
    match op.to_ascii_lowercase().as_str() {
        "eq" => {
            let v = parse_literal(value).ok_or_else(unsupported)?;
            if lhs == "id" {
                let id = v
                    .as_str()
                    .and_then(|s| s.parse::<ObjectId>().ok())
                    .ok_or_else(|| {
                        GraphError::bad_request(format!("Invalid object identifier '{value}'."))
                    })?;
                Ok(Filter::Ids(vec![id]))
            } else {
                Ok(Filter::Eq(lhs.to_owned(), v))
            }
        }
        "in" if lhs == "id" => {
            let inner = value
                .strip_prefix('(')
                .and_then(|v| v.strip_suffix(')'))
                .ok_or_else(unsupported)?;
            let mut ids = Vec::new();
            for item in inner.split(',') {
                let item = item.trim();
                let id = parse_literal(item)
                    .and_then(|v| v.as_str().and_then(|s| s.parse::<ObjectId>().ok()))
                    .ok_or_else(|| {
                        GraphError::bad_request(format!("Invalid object identifier '{item}'."))
                    })?;
                ids.push(id);
            }
            if ids.len() > 15 {
                return Err(GraphError::unsupported_query(format!(
                    "Too many child clauses specified in search filter expression containing 'OR' operators: {}. Max allowed: 15.",
                    ids.len()
                )));
            }
            Ok(Filter::Ids(ids))
        }
        _ => Err(unsupported()),
    }
}

pub(super) fn parse_literal(s: &str) -> Option<Json> {
    if let Some(inner) = s.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')) {
        return Some(Json::String(inner.replace("''", "'")));
    }
    match s {
        "true" => Some(Json::Bool(true)),
        "false" => Some(Json::Bool(false)),
        "null" => Some(Json::Null),
        _ => s.parse::<i64>().ok().map(Json::from),
    }
}

pub(super) fn eq_matches(full: &Map<String, Json>, prop: &str, value: &Json) -> bool {
    match (full.get(prop).unwrap_or(&Json::Null), value) {
        (Json::String(a), Json::String(b)) => a.eq_ignore_ascii_case(b),
        (a, b) => a == b,
    }
}

/// Takes up to `top` present items, looking at no more than `scan` entries; returns the items
/// and, when entries remain, the last id looked at (the next page starts after it).
pub(super) fn collect_page<T>(
    iter: impl Iterator<Item = (ObjectId, Option<T>)>,
    top: usize,
    scan: usize,
) -> (Vec<T>, Option<ObjectId>) {
    let mut iter = iter.peekable();
    let mut out = Vec::new();
    let mut scanned = 0usize;
    let mut last = None;
    for (id, item) in iter.by_ref() {
        scanned += 1;
        last = Some(id);
        if let Some(item) = item {
            out.push(item);
        }
        if out.len() >= top || scanned >= scan.max(1) {
            break;
        }
    }
    let more = iter.peek().is_some();
    (out, if more { last } else { None })
}

pub(super) fn after_bound(q: &Query) -> (Bound<ObjectId>, Bound<ObjectId>) {
    match q.after {
        Some(a) => (Bound::Excluded(a), Bound::Unbounded),
        None => (Bound::Unbounded, Bound::Unbounded),
    }
}

/// A page of objects of one type, active ones or the recycle bin's.
#[allow(clippy::too_many_arguments)]
pub(super) fn list_objects(
    ctx: &Ctx<'_>,
    data: &TenantData,
    t: ObjectType,
    deleted: bool,
    q: &Query,
    path: &str,
    context: &str,
    settings: &Settings,
) -> Reply {
    let keep = |o: &DirectoryObject| -> bool {
        if o.lifecycle.is_active() == deleted {
            return false;
        }
        match &q.filter {
            Some(Filter::Eq(p, v)) => eq_matches(&full_json(o), p, v),
            _ => true,
        }
    };
    let (page, next) = match (&q.filter, deleted) {
        (Some(Filter::Ids(ids)), _) => {
            let mut ids = ids.clone();
            ids.sort();
            ids.dedup();
            let iter = ids
                .into_iter()
                .filter(|id| q.after.is_none_or(|a| *id > a))
                .map(|id| (id, data.get(t, id).filter(|o| keep(o))));
            collect_page(iter, q.page_size(), settings.max_scan_per_page)
        }
        (_, true) => {
            let iter = data
                .deleted_ids(t)
                .range(after_bound(q))
                .map(|id| (*id, data.get(t, *id).filter(|o| keep(o))));
            collect_page(iter, q.page_size(), settings.max_scan_per_page)
        }
        (_, false) => {
            let iter = data
                .map(t)
                .range(after_bound(q))
                .map(|(id, o)| (*id, Some(o).filter(|o| keep(o))));
            collect_page(iter, q.page_size(), settings.max_scan_per_page)
        }
    };
    let next = next.map(|last| q.next_link(ctx, path, last));
    if t.is_singleton() {
        let values = page
            .into_iter()
            .map(|o| render(o, q.select.as_deref()))
            .collect();
        return collection(ctx, context, values, next);
    }
    object_collection(ctx, context, &page, q.select.as_deref(), next)
}
