//! Tenant capture: every object type paged with `$top` and `$select` of its kept properties,
//! next links followed exactly as given, the links of groups, applications and service
//! principals read concurrently by a small pool of threads, admin-consent grants attached to
//! their client service principal, recycle bins and singletons; each decoded object goes
//! straight into the shard writer of its shard. What Graph holds only in beta is read from
//! beta: the per-user MFA state (each user's `authentication/requirements`, 20 to a `$batch`,
//! read beside the user pages) and beta-only properties (a second, narrow beta listing).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;

use serde::Deserialize;
use serde_json::{json, Map, Value as Json};

use super::http::{json_error, Method};
use super::{ConnectorError, GraphConnector};
use crate::fan_out::{fan_out, Stopped};
use crate::graph_json::{from_graph_json, next_link_of_page, page_from_graph_json};
use crate::graph_names::{self, Resource};
use crate::id::ObjectId;
use crate::model::{DirectoryObject, Link, LinkKind, ObjectType};
use crate::properties::{self, Api, AUTHENTICATION_METHOD_CONFIGURATIONS, PER_USER_MFA_STATE};
use crate::snapshot::{
    write_snapshot, Manifest, ShardLayout, ShardStore, ShardWriter, SnapshotInfo,
};
use crate::value::Value;

/// What a capture read.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CaptureStats {
    /// Objects written, by type (soft-deleted ones included).
    pub objects: BTreeMap<ObjectType, u64>,
    /// Links attached to objects (members, owners, grants, assignments).
    pub links: u64,
    /// Collection pages read.
    pub pages: u64,
    /// Graph requests sent during the capture (retries included).
    pub requests: u64,
    /// Response bytes read during the capture.
    pub bytes: u64,
}

impl CaptureStats {
    pub fn total_objects(&self) -> u64 {
        self.objects.values().sum()
    }
}

/// A page of a link collection (members and owners need only their ids).
#[derive(Deserialize)]
struct LinkPage<T> {
    #[serde(default = "Vec::new")]
    value: Vec<T>,
    #[serde(rename = "@odata.nextLink", default)]
    next_link: Option<String>,
}

/// A linked directory object: its id is all a member or owner link keeps.
#[derive(Deserialize)]
struct LinkedId {
    id: ObjectId,
}

/// A user's `strongAuthenticationRequirements` (beta).
#[derive(Deserialize)]
struct Requirements<'a> {
    #[serde(borrow, rename = "perUserMfaState", default)]
    per_user_mfa_state: Option<std::borrow::Cow<'a, str>>,
}

impl Requirements<'_> {
    fn state(&self) -> Option<Value> {
        self.per_user_mfa_state.as_deref().map(Value::from)
    }
}

/// The beta path of a user's `strongAuthenticationRequirements`.
pub(crate) fn requirements_path(id: ObjectId) -> String {
    format!("/users/{id}/authentication/requirements")
}

/// The answer of a `$batch`, inner bodies left as text until their status is known.
#[derive(Deserialize)]
struct BatchAnswer<'a> {
    #[serde(borrow, default)]
    responses: Vec<BatchItem<'a>>,
}

#[derive(Deserialize)]
struct BatchItem<'a> {
    #[serde(borrow)]
    id: std::borrow::Cow<'a, str>,
    status: u16,
    #[serde(borrow, default)]
    body: Option<&'a serde_json::value::RawValue>,
}

/// The shard writers, each behind its own lock, and the counters of a capture.
struct Sink {
    layout: ShardLayout,
    writers: Vec<Mutex<ShardWriter>>,
    objects: Mutex<BTreeMap<ObjectType, u64>>,
    links: AtomicU64,
    pages: AtomicU64,
    /// Set when a part of the capture failed: the other parts stop at their next page.
    failed: AtomicBool,
}

impl Sink {
    fn new(layout: ShardLayout) -> Self {
        Self {
            layout,
            writers: layout.writers().into_iter().map(Mutex::new).collect(),
            objects: Mutex::new(BTreeMap::new()),
            links: AtomicU64::new(0),
            pages: AtomicU64::new(0),
            failed: AtomicBool::new(false),
        }
    }

    /// Adds the decoded objects of one page (each to the writer of its shard).
    fn add_page(&self, objects: Vec<DirectoryObject>) -> Result<(), ConnectorError> {
        if self.failed.load(Ordering::Relaxed) {
            return Err(ConnectorError::Aborted);
        }
        let mut counts: BTreeMap<ObjectType, u64> = BTreeMap::new();
        let mut links = 0usize;
        for object in objects {
            links += object.links.iter().map(|s| s.links.len()).sum::<usize>();
            *counts.entry(object.object_type).or_default() += 1;
            let shard = self.layout.shard_of(object.id) as usize;
            let writer = self.writers.get(shard).ok_or_else(poisoned)?;
            writer.lock().map_err(|_| poisoned())?.add(object);
        }
        self.links.fetch_add(links as u64, Ordering::Relaxed);
        let mut totals = self.objects.lock().map_err(|_| poisoned())?;
        for (t, n) in counts {
            *totals.entry(t).or_default() += n;
        }
        Ok(())
    }

    fn finish(self) -> Result<SinkTotals, ConnectorError> {
        let writers = self
            .writers
            .into_iter()
            .map(|m| m.into_inner().map_err(|_| poisoned()))
            .collect::<Result<Vec<_>, _>>()?;
        let objects = self.objects.into_inner().map_err(|_| poisoned())?;
        Ok((
            writers,
            objects,
            self.links.into_inner(),
            self.pages.into_inner(),
        ))
    }
}

/// The writers and counts a sink ends with: writers, objects by type, links, pages.
type SinkTotals = (Vec<ShardWriter>, BTreeMap<ObjectType, u64>, u64, u64);

fn poisoned() -> ConnectorError {
    ConnectorError::Settings("a capture thread panicked".into())
}

fn malformed(url: &str, reason: impl std::fmt::Display) -> ConnectorError {
    ConnectorError::Malformed {
        url: url.to_owned(),
        reason: reason.to_string(),
    }
}

/// The Graph collection path of a type (singletons have their own URL).
pub(crate) fn collection_path(t: ObjectType) -> &'static str {
    match t {
        ObjectType::User => "/users",
        ObjectType::Group => "/groups",
        ObjectType::Application => "/applications",
        ObjectType::ServicePrincipal => "/servicePrincipals",
        ObjectType::ConditionalAccessPolicy => "/identity/conditionalAccess/policies",
        ObjectType::NamedLocation => "/identity/conditionalAccess/namedLocations",
        ObjectType::AuthenticationMethodsPolicy => "/policies/authenticationMethodsPolicy",
        ObjectType::AuthorizationPolicy => "/policies/authorizationPolicy",
        ObjectType::Organization => "/organization",
    }
}

/// The delta collection of a type whose changes Graph tracks.
fn delta_path(t: ObjectType) -> Option<&'static str> {
    match t {
        ObjectType::User => Some("/users/delta"),
        ObjectType::Group => Some("/groups/delta"),
        ObjectType::Application => Some("/applications/delta"),
        ObjectType::ServicePrincipal => Some("/servicePrincipals/delta"),
        _ => None,
    }
}

/// The recycle-bin collection of a soft-deletable type.
pub(crate) fn deleted_path(t: ObjectType) -> Option<&'static str> {
    match t {
        ObjectType::User => Some("/directory/deletedItems/microsoft.graph.user"),
        ObjectType::Group => Some("/directory/deletedItems/microsoft.graph.group"),
        ObjectType::Application => Some("/directory/deletedItems/microsoft.graph.application"),
        ObjectType::ServicePrincipal => {
            Some("/directory/deletedItems/microsoft.graph.servicePrincipal")
        }
        ObjectType::ConditionalAccessPolicy => {
            Some("/identity/conditionalAccess/deletedItems/policies")
        }
        ObjectType::NamedLocation => {
            Some("/identity/conditionalAccess/deletedItems/namedLocations")
        }
        _ => None,
    }
}

/// The v1.0 `$select` of a type: see [`select_list_at`].
pub fn select_list(t: ObjectType) -> String {
    select_list_at(t, Api::V1)
}

/// The `$select` of a type in `api`: its kept properties plus what the lifecycle needs, each
/// only if the type has it in that version (Graph refuses a `$select` of a property a type
/// does not have: `onPremisesSyncEnabled` is only on users and groups, `perUserMfaState` on no
/// type, `publisherName` of service principals only in beta).
pub fn select_list_at(t: ObjectType, api: Api) -> String {
    let lifecycle = ["id", "deletedDateTime", "onPremisesSyncEnabled"];
    let kept = properties::properties(t).iter().map(|d| d.name);
    let mut names: Vec<&str> = Vec::new();
    for name in lifecycle.into_iter().chain(kept) {
        if graph_names::exists(Resource::Object(t), name, api) && !names.contains(&name) {
            names.push(name);
        }
    }
    names.join(",")
}

/// Properties read apart from a type's own v1.0 listing, by object: beta-only properties
/// (by property id).
type SideProperties = HashMap<ObjectId, Vec<(u8, Value)>>;

/// What the pages of a type are completed with: admin-consent grants by client, and the
/// type's beta-only properties.
#[derive(Default)]
struct Side {
    grants: HashMap<ObjectId, Vec<Link>>,
    beta: SideProperties,
}

impl GraphConnector {
    /// Calls `each` with the text of every page of a collection, following next links exactly
    /// as given (an empty page with a next link is followed too). The next link is found
    /// before `each` runs, so that a page can be decoded while the next one is on its way.
    /// A next link back to a page already read, or more than `max_listing_pages` pages, is a
    /// malformed answer (such a listing would never end).
    pub(crate) fn for_each_page(
        &self,
        first: &str,
        each: impl FnMut(Vec<u8>) -> Result<(), ConnectorError>,
    ) -> Result<u64, ConnectorError> {
        self.for_each_page_at(Api::V1, first, each)
    }

    /// [`Self::for_each_page`] of a path of `api`.
    pub(crate) fn for_each_page_at(
        &self,
        api: Api,
        first: &str,
        mut each: impl FnMut(Vec<u8>) -> Result<(), ConnectorError>,
    ) -> Result<u64, ConnectorError> {
        let mut url = self.url_at(api, first);
        let mut pages = 0;
        let mut read = std::collections::HashSet::new();
        loop {
            let text = self.call_into(Method::Get, &url, None, self.page_buffer())?;
            let next = next_link_of_page(&text).map_err(|e| malformed(&url, e))?;
            pages += 1;
            each(text)?;
            match next {
                Some(next) if !next.is_empty() => {
                    if read.contains(&next) || next == url {
                        let why = format!("its next link {next} leads back to a page already read");
                        return Err(malformed(&url, why));
                    }
                    if pages >= self.settings.max_listing_pages {
                        let max = self.settings.max_listing_pages;
                        let why = format!("the listing goes on past max_listing_pages ({max})");
                        return Err(malformed(&url, why));
                    }
                    read.insert(std::mem::replace(&mut url, next));
                }
                _ => return Ok(pages),
            }
        }
    }

    fn list_url(&self, path: &str, t: ObjectType) -> String {
        format!(
            "{path}?$top={}&$select={}",
            self.settings.page_size,
            select_list(t)
        )
    }

    /// The first URL of a link job (relative to the Graph base).
    fn link_url(&self, job: &LinkJob) -> String {
        format!(
            "{}?$top={}&$select={}",
            job.path,
            self.settings.page_size,
            link_select(job.kind)
        )
    }

    /// Reads one link collection on its own, every page, with retries. A holder that is gone
    /// (deleted since its page was listed) has no links to read any more: the capture goes
    /// on with none.
    fn read_link_job(&self, job: &LinkJob) -> Result<Vec<Link>, ConnectorError> {
        let mut links = Vec::new();
        let read = self.for_each_page(&self.link_url(job), |text| {
            links.extend(parse_link_page(&job.path, job.kind, &text)?.0);
            self.recycle_page(text);
            Ok(())
        });
        match read {
            Ok(_) => Ok(links),
            Err(e) if e.status() == Some(404) => Ok(Vec::new()),
            Err(e) => Err(e),
        }
    }

    /// Reads up to 20 link collections in one `$batch`. A collection whose inner answer is
    /// not a plain success (throttled, failed) is read again on its own, with retries; one
    /// with more pages follows its next link.
    fn read_link_batch(&self, jobs: &[LinkJob]) -> Result<Vec<Vec<Link>>, ConnectorError> {
        let requests: Vec<Json> = jobs
            .iter()
            .enumerate()
            .map(
                |(k, job)| json!({"id": k.to_string(), "method": "GET", "url": self.link_url(job)}),
            )
            .collect();
        let url = self.url("/$batch");
        let text = self.call_bytes(Method::Post, &url, Some(&json!({ "requests": requests })))?;
        let answer: BatchAnswer<'_> =
            serde_json::from_slice(&text).map_err(|e| json_error(&url, e))?;
        let mut out: Vec<Option<Vec<Link>>> = vec![None; jobs.len()];
        for r in &answer.responses {
            let Ok(k) = r.id.parse::<usize>() else {
                continue;
            };
            let (Some(job), Some(slot)) = (jobs.get(k), out.get_mut(k)) else {
                continue;
            };
            match (r.status, r.body) {
                (200, Some(body)) => {
                    let (mut links, next) =
                        parse_link_page(&job.path, job.kind, body.get().as_bytes())?;
                    if let Some(next) = next {
                        let rest = self.for_each_page(&next, |text| {
                            links.extend(parse_link_page(&job.path, job.kind, &text)?.0);
                            self.recycle_page(text);
                            Ok(())
                        });
                        match rest {
                            Ok(_) => {}
                            // The holder went away between two pages: it has no links now.
                            Err(e) if e.status() == Some(404) => links.clear(),
                            Err(e) => return Err(e),
                        }
                    }
                    *slot = Some(links);
                }
                (404, _) => *slot = Some(Vec::new()),
                (status, _) => super::http::count_inner_answer(status),
            }
        }
        jobs.iter()
            .zip(out)
            .map(|(job, links)| match links {
                Some(l) => Ok(l),
                None => self.read_link_job(job),
            })
            .collect()
    }

    /// Admin-consent grants by their client service principal.
    fn admin_grants(&self) -> Result<HashMap<ObjectId, Vec<Link>>, ConnectorError> {
        let path = "/oauth2PermissionGrants";
        let first = format!(
            "{path}?$top={}&$select={GRANT_SELECT}",
            self.settings.page_size
        );
        let mut by_client: HashMap<ObjectId, Vec<Link>> = HashMap::new();
        self.for_each_page(&first, |text| {
            let page: LinkPage<Json> =
                serde_json::from_slice(&text).map_err(|e| json_error(path, e))?;
            for v in page.value {
                if v.get("consentType").and_then(Json::as_str) != Some("AllPrincipals") {
                    continue;
                }
                let client = v
                    .get("clientId")
                    .and_then(Json::as_str)
                    .and_then(|s| s.parse::<ObjectId>().ok())
                    .ok_or_else(|| malformed(path, format!("a grant without a clientId: {v}")))?;
                let link = link_with_data(
                    path,
                    &v,
                    &["consentType", "resourceId", "scope", "principalId"],
                )?;
                by_client.entry(client).or_default().push(link);
            }
            Ok(())
        })?;
        Ok(by_client)
    }

    /// Decodes one page of objects of type `t`: objects checked and put in canonical form,
    /// then (when `with_links`) the links of its active objects read.
    fn decode_page(
        &self,
        path: &str,
        t: ObjectType,
        text: &[u8],
        with_links: bool,
        side: &Side,
    ) -> Result<Vec<DirectoryObject>, ConnectorError> {
        let page = page_from_graph_json(t, text).map_err(|e| malformed(path, e))?;
        let mut objects = page
            .objects
            .into_iter()
            .map(|fields| fields.into_object().map_err(|e| malformed(path, e)))
            .collect::<Result<Vec<_>, _>>()?;
        self.complete(t, &mut objects, with_links, side)?;
        Ok(objects)
    }

    /// Completes decoded objects of type `t` with what their own listing does not hold: the
    /// beta-only properties, their links (when `with_links`; active objects only) and, for
    /// users, the per-user MFA state.
    fn complete(
        &self,
        t: ObjectType,
        objects: &mut [DirectoryObject],
        with_links: bool,
        side: &Side,
    ) -> Result<(), ConnectorError> {
        if !side.beta.is_empty() {
            for o in objects.iter_mut() {
                for (pid, value) in side.beta.get(&o.id).into_iter().flatten() {
                    o.set_by_id(*pid, value.clone());
                }
            }
        }
        if with_links {
            self.attach_links(objects, &side.grants)?;
        }
        if t == ObjectType::User && self.settings.per_user_mfa_state {
            self.attach_mfa_states(objects)?;
        }
        Ok(())
    }

    /// The beta-only properties of every object of `t`, active or in its recycle bin, from a
    /// beta listing that selects only them (nothing when `t` has none).
    fn beta_properties(&self, t: ObjectType) -> Result<SideProperties, ConnectorError> {
        let names: Vec<&str> = graph_names::beta_only(t).collect();
        let mut by_id = SideProperties::new();
        if names.is_empty() {
            return Ok(by_id);
        }
        let select = format!("id,{}", names.join(","));
        for path in [Some(collection_path(t)), deleted_path(t)]
            .into_iter()
            .flatten()
        {
            let first = format!("{path}?$top={}&$select={select}", self.settings.page_size);
            self.for_each_page_at(Api::Beta, &first, |text| {
                let page = page_from_graph_json(t, &text).map_err(|e| malformed(path, e))?;
                for fields in page.objects {
                    let o = fields.into_object().map_err(|e| malformed(path, e))?;
                    by_id.insert(o.id, o.attributes);
                }
                self.recycle_page(text);
                Ok(())
            })?;
        }
        Ok(by_id)
    }

    /// Pages through one collection of objects of type `t` and hands each decoded page to
    /// `deliver`. Pages are fetched on this thread, one after another as the next links
    /// require, and decoded (links read, objects handed on) by `decode_threads` others, so
    /// that the next page is on its way meanwhile. Returns the number of pages read.
    fn read_collection(
        &self,
        path: &str,
        t: ObjectType,
        with_links: bool,
        side: &Side,
        deliver: &(dyn Fn(Vec<DirectoryObject>) -> Result<(), ConnectorError> + Sync),
    ) -> Result<u64, ConnectorError> {
        let first = self.list_url(path, t);
        let decoders = self.settings.decode_threads.max(1);
        fan_out(
            decoders,
            decoders,
            |send| {
                self.for_each_page(&first, |text| {
                    send(text).map_err(|Stopped| ConnectorError::Aborted)
                })
            },
            |text| {
                let objects = self.decode_page(path, t, &text, with_links, side)?;
                self.recycle_page(text);
                deliver(objects)
            },
            poisoned,
        )
    }

    /// A delta link that marks the present for type `t` (`$deltatoken=latest`: no listing),
    /// where Graph tracks the type's changes.
    fn change_mark(&self, t: ObjectType) -> Result<Option<String>, ConnectorError> {
        let Some(path) = delta_path(t) else {
            return Ok(None);
        };
        let url = self.url(&format!("{path}?$select=id&$deltatoken=latest"));
        let json = self.call_json(Method::Get, &url, None)?;
        match json.get("@odata.deltaLink").and_then(Json::as_str) {
            Some(link) => Ok(Some(link.to_owned())),
            None => Err(malformed(path, "no @odata.deltaLink")),
        }
    }

    /// The ids of the objects changed (soft-deleted and restored included) since `mark`, paged
    /// like every listing (so bounded, and a loop of next links refused).
    fn changed_since(&self, mark: &str) -> Result<HashSet<ObjectId>, ConnectorError> {
        #[derive(Deserialize)]
        struct Changes {
            value: Vec<LinkedId>,
        }
        let mut ids = HashSet::new();
        self.for_each_page(mark, |text| {
            let page: Changes = serde_json::from_slice(&text).map_err(|e| json_error(mark, e))?;
            ids.extend(page.value.into_iter().map(|c| c.id));
            self.recycle_page(text);
            Ok(())
        })?;
        Ok(ids)
    }

    /// One object of type `t` as it is now: active (with its links), soft-deleted, or `None`
    /// when it is gone.
    fn read_one(
        &self,
        t: ObjectType,
        id: ObjectId,
        side: &Side,
    ) -> Result<Option<DirectoryObject>, ConnectorError> {
        let select = select_list(t);
        let active = format!("{}/{id}?$select={select}", collection_path(t));
        let deleted = format!("/directory/deletedItems/{id}?$select={select}");
        let with_links = !properties::link_kinds(t).is_empty();
        for path in [active, deleted] {
            match self.call_json(Method::Get, &self.url(&path), None) {
                Ok(json) => {
                    let mut o = from_graph_json(t, &json).map_err(|e| malformed(&path, e))?;
                    self.complete(t, std::slice::from_mut(&mut o), with_links, side)?;
                    return Ok(Some(o));
                }
                Err(e) if e.status() == Some(404) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(None)
    }

    /// Captures every object of a collection type exactly once, in one of its states, even
    /// while objects move in and out of the recycle bin: the recycle bin is read before and
    /// again after the active listing (bins are small, so both are held in memory), and every
    /// id takes the first of these that holds it: the active listing, the second bin read
    /// (soft-deleted meanwhile, perhaps after the listing passed it), the first (restored
    /// meanwhile, after the listing passed it). An object soft-deleted and restored again
    /// between the two bin reads, while the listing passed its place, is in none of them: for
    /// the types Graph tracks, the changes since a delta mark taken before the first read name
    /// it, and it is read on its own. (Conditional access policies and named locations have no
    /// delta; they are few, listed in one page, and such a double move between two requests
    /// could still hide one.)
    fn capture_type(&self, sink: &Sink, t: ObjectType, side: &Side) -> Result<(), ConnectorError> {
        let bin_path = deleted_path(t);
        let mut pages = 0;
        let read_bin =
            |pages: &mut u64| -> Result<HashMap<ObjectId, DirectoryObject>, ConnectorError> {
                let bin: Mutex<HashMap<ObjectId, DirectoryObject>> = Mutex::new(HashMap::new());
                if let Some(path) = bin_path {
                    *pages += self.read_collection(path, t, false, side, &|objects| {
                        let mut bin = bin.lock().map_err(|_| poisoned())?;
                        bin.extend(objects.into_iter().map(|o| (o.id, o)));
                        Ok(())
                    })?;
                }
                bin.into_inner().map_err(|_| poisoned())
            };
        let mark = self.change_mark(t)?;
        let before = read_bin(&mut pages)?;
        let seen: Mutex<HashSet<ObjectId>> = Mutex::new(HashSet::new());
        let with_links = !properties::link_kinds(t).is_empty();
        pages += self.read_collection(collection_path(t), t, with_links, side, &|objects| {
            if bin_path.is_some() {
                let mut seen = seen.lock().map_err(|_| poisoned())?;
                seen.extend(objects.iter().map(|o| o.id));
            }
            sink.add_page(objects)
        })?;
        let seen = seen.into_inner().map_err(|_| poisoned())?;
        let mut rest = read_bin(&mut pages)?;
        rest.retain(|id, _| !seen.contains(id));
        for (id, o) in before {
            if !seen.contains(&id) {
                rest.entry(id).or_insert(o);
            }
        }
        if let Some(mark) = mark {
            for id in self.changed_since(&mark)? {
                if !seen.contains(&id) && !rest.contains_key(&id) {
                    if let Some(o) = self.read_one(t, id, side)? {
                        rest.insert(id, o);
                    }
                }
            }
        }
        sink.add_page(rest.into_values().collect())?;
        sink.pages.fetch_add(pages, Ordering::Relaxed);
        Ok(())
    }

    /// Reads the links of a page's active objects: their link collections go 20 to a
    /// `$batch`, the batches shared out to a small pool of threads.
    fn attach_links(
        &self,
        objects: &mut [DirectoryObject],
        grants: &HashMap<ObjectId, Vec<Link>>,
    ) -> Result<(), ConnectorError> {
        let jobs: Vec<LinkJob> = objects
            .iter()
            .enumerate()
            .filter(|(_, o)| o.lifecycle.is_active())
            .flat_map(|(index, o)| {
                properties::link_kinds(o.object_type)
                    .iter()
                    .filter(|k| **k != LinkKind::OAuth2PermissionGrants)
                    .map(move |&kind| LinkJob {
                        index,
                        kind,
                        path: format!(
                            "{}/{}/{}",
                            collection_path(o.object_type),
                            o.id,
                            kind.as_str()
                        ),
                    })
            })
            .collect();
        let sets = self.in_batches(&jobs, |chunk| self.read_link_batch(chunk))?;
        for (job, links) in jobs.iter().zip(sets) {
            if let Some(o) = objects.get_mut(job.index) {
                o.set_links(job.kind, links);
            }
        }
        for o in objects.iter_mut() {
            if o.object_type == ObjectType::ServicePrincipal && o.lifecycle.is_active() {
                if let Some(g) = grants.get(&o.id) {
                    o.set_links(LinkKind::OAuth2PermissionGrants, g.clone());
                }
            }
        }
        Ok(())
    }

    /// Runs `read` over `jobs` 20 at a time (one `$batch` each), the batches shared out to
    /// `link_threads` threads; the results in the order of the jobs. Stops at the first error.
    fn in_batches<J: Sync, R: Send>(
        &self,
        jobs: &[J],
        read: impl Fn(&[J]) -> Result<Vec<R>, ConnectorError> + Sync,
    ) -> Result<Vec<R>, ConnectorError> {
        let chunks: Vec<&[J]> = jobs.chunks(super::write::MAX_BATCH).collect();
        let next = AtomicUsize::new(0);
        let results: Mutex<Vec<(usize, Vec<R>)>> = Mutex::new(Vec::new());
        let first_error: Mutex<Option<ConnectorError>> = Mutex::new(None);
        let threads = self.settings.link_threads.clamp(1, chunks.len().max(1));
        std::thread::scope(|scope| {
            for _ in 0..threads {
                scope.spawn(|| loop {
                    if first_error.lock().map(|e| e.is_some()).unwrap_or(true) {
                        return;
                    }
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(chunk) = chunks.get(i) else {
                        return;
                    };
                    match read(chunk) {
                        Ok(out) => {
                            if let Ok(mut r) = results.lock() {
                                r.push((i, out));
                            }
                        }
                        Err(e) => {
                            if let Ok(mut slot) = first_error.lock() {
                                slot.get_or_insert(e);
                            }
                            return;
                        }
                    }
                });
            }
        });
        if let Some(e) = first_error.into_inner().map_err(|_| poisoned())? {
            return Err(e);
        }
        let mut results = results.into_inner().map_err(|_| poisoned())?;
        results.sort_unstable_by_key(|(i, _)| *i);
        Ok(results.into_iter().flat_map(|(_, out)| out).collect())
    }

    /// Reads the per-user MFA state of a page's active users (Graph holds it only in beta, in
    /// each user's `authentication/requirements`), 20 users to a `$batch`.
    fn attach_mfa_states(&self, objects: &mut [DirectoryObject]) -> Result<(), ConnectorError> {
        let users: Vec<(usize, ObjectId)> = objects
            .iter()
            .enumerate()
            .filter(|(_, o)| o.lifecycle.is_active())
            .map(|(i, o)| (i, o.id))
            .collect();
        let states = self.in_batches(&users, |chunk| self.read_mfa_batch(chunk))?;
        let Some(pid) = properties::property_id(ObjectType::User, PER_USER_MFA_STATE) else {
            return Ok(());
        };
        for ((index, _), state) in users.iter().zip(states) {
            if let (Some(o), Some(state)) = (objects.get_mut(*index), state) {
                o.set_by_id(pid, state);
            }
        }
        Ok(())
    }

    /// Reads up to 20 users' MFA states in one beta `$batch` (the request written as text). A
    /// user whose inner answer is not a plain success is read again on its own, with retries;
    /// a user that is gone (404) has none.
    fn read_mfa_batch(
        &self,
        users: &[(usize, ObjectId)],
    ) -> Result<Vec<Option<Value>>, ConnectorError> {
        let mut body = String::with_capacity(32 + users.len() * 96);
        body.push_str("{\"requests\":[");
        for (k, (_, id)) in users.iter().enumerate() {
            if k > 0 {
                body.push(',');
            }
            body.push_str(&format!(
                "{{\"id\":\"{k}\",\"method\":\"GET\",\"url\":\"{}\"}}",
                requirements_path(*id)
            ));
        }
        body.push_str("]}");
        let url = self.url_at(Api::Beta, "/$batch");
        let text = self.post_text(&url, body.as_bytes())?;
        let answer: BatchAnswer<'_> =
            serde_json::from_slice(&text).map_err(|e| json_error(&url, e))?;
        let mut out: Vec<Option<Option<Value>>> = vec![None; users.len()];
        for r in &answer.responses {
            let Some(slot) = r.id.parse::<usize>().ok().and_then(|k| out.get_mut(k)) else {
                continue;
            };
            match (r.status, r.body) {
                (200, Some(body)) => {
                    let req: Requirements =
                        serde_json::from_str(body.get()).map_err(|e| json_error(&url, e))?;
                    *slot = Some(req.state());
                }
                (404, _) => *slot = Some(None),
                (status, _) => super::http::count_inner_answer(status),
            }
        }
        users
            .iter()
            .zip(out)
            .map(|((_, id), state)| match state {
                Some(s) => Ok(s),
                None => self.read_mfa_state(*id),
            })
            .collect()
    }

    /// Reads one user's MFA state on its own, with retries (`None` when the user is gone).
    fn read_mfa_state(&self, id: ObjectId) -> Result<Option<Value>, ConnectorError> {
        let url = self.url_at(Api::Beta, &requirements_path(id));
        match self.call_bytes(Method::Get, &url, None) {
            Ok(text) => {
                let req: Requirements =
                    serde_json::from_slice(&text).map_err(|e| json_error(&url, e))?;
                Ok(req.state())
            }
            Err(e) if e.status() == Some(404) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Reads a singleton (the organization is a collection of one).
    fn capture_singleton(&self, sink: &Sink, t: ObjectType) -> Result<(), ConnectorError> {
        let path = collection_path(t);
        let url = self.url(path);
        let json = self.call_json(Method::Get, &url, None)?;
        let items: Vec<Json> = match (t, json) {
            (ObjectType::Organization, Json::Object(mut m)) => match m.remove("value") {
                Some(Json::Array(a)) => a,
                _ => return Err(malformed(path, "no value array")),
            },
            (_, j @ Json::Object(_)) => vec![j],
            (_, other) => return Err(malformed(path, format!("not an object: {other}"))),
        };
        for item in items {
            let mut object = from_graph_json(t, &item).map_err(|e| malformed(path, e))?;
            if t == ObjectType::AuthenticationMethodsPolicy {
                merge_method_configurations(&mut object, &item);
            }
            sink.add_page(vec![object])?;
        }
        Ok(())
    }

    /// Captures the whole tenant into one shard writer per shard of `layout`.
    pub fn capture(
        &self,
        layout: ShardLayout,
    ) -> Result<(Vec<ShardWriter>, CaptureStats), ConnectorError> {
        self.capture_collections(layout, &ObjectType::ALL)
    }

    /// Captures the collections of `types` (each type once, whatever the order) into one shard
    /// writer per shard of `layout`: what one capture task of a snapshot reads.
    pub fn capture_collections(
        &self,
        layout: ShardLayout,
        types: &[ObjectType],
    ) -> Result<(Vec<ShardWriter>, CaptureStats), ConnectorError> {
        let wanted = |t: ObjectType| types.contains(&t);
        let before = self.traffic();
        self.authenticate()?;
        let sink = Sink::new(layout);
        let none = Side::default();
        let errors: Mutex<Vec<ConnectorError>> = Mutex::new(Vec::new());
        let record = |r: Result<(), ConnectorError>| {
            if let Err(e) = r {
                if let Ok(mut errs) = errors.lock() {
                    errs.push(e);
                }
                sink.failed.store(true, Ordering::Relaxed);
            }
        };
        std::thread::scope(|scope| {
            // Users (the bulk of a tenant) and groups (with their links) on threads of their
            // own; the rest here.
            for big in [ObjectType::User, ObjectType::Group] {
                if wanted(big) {
                    let (sink, none, record) = (&sink, &none, &record);
                    scope.spawn(move || record(self.capture_type(sink, big, none)));
                }
            }
            record((|| {
                if wanted(ObjectType::ServicePrincipal) {
                    let sp = Side {
                        grants: self.admin_grants()?,
                        beta: self.beta_properties(ObjectType::ServicePrincipal)?,
                    };
                    self.capture_type(&sink, ObjectType::ServicePrincipal, &sp)?;
                }
                for t in [
                    ObjectType::Application,
                    ObjectType::ConditionalAccessPolicy,
                    ObjectType::NamedLocation,
                ] {
                    if wanted(t) {
                        self.capture_type(&sink, t, &none)?;
                    }
                }
                for t in [
                    ObjectType::AuthenticationMethodsPolicy,
                    ObjectType::AuthorizationPolicy,
                    ObjectType::Organization,
                ] {
                    if wanted(t) {
                        self.capture_singleton(&sink, t)?;
                    }
                }
                Ok(())
            })());
        });
        if let Some(e) = errors
            .into_inner()
            .map_err(|_| poisoned())?
            .into_iter()
            .next()
        {
            return Err(e);
        }
        let (writers, objects, links, pages) = sink.finish()?;
        for (t, n) in &objects {
            let label = crate::metrics::label::TYPE;
            metrics::counter!(crate::metrics::OBJECTS_CAPTURED_TOTAL, label => t.as_str())
                .increment(*n);
        }
        let after = self.traffic();
        Ok((
            writers,
            CaptureStats {
                objects,
                links,
                pages,
                requests: after.requests - before.requests,
                bytes: after.bytes - before.bytes,
            },
        ))
    }
}

/// One link collection to read: of the object at `index` of a page.
struct LinkJob {
    index: usize,
    kind: LinkKind,
    /// `/groups/{id}/members` and the like.
    path: String,
}

/// The `$select` of the admin-consent grants.
pub(crate) const GRANT_SELECT: &str = "id,clientId,consentType,principalId,resourceId,scope";

/// The `$select` of a link collection.
pub(crate) fn link_select(kind: LinkKind) -> &'static str {
    match kind {
        LinkKind::AppRoleAssignedTo => "id,principalId,appRoleId,principalType",
        _ => "id",
    }
}

/// The links of one page of a link collection, and the page's next link.
fn parse_link_page(
    path: &str,
    kind: LinkKind,
    text: &[u8],
) -> Result<(Vec<Link>, Option<String>), ConnectorError> {
    match kind {
        LinkKind::AppRoleAssignedTo | LinkKind::OAuth2PermissionGrants => {
            let page: LinkPage<Json> =
                serde_json::from_slice(text).map_err(|e| json_error(path, e))?;
            let links = page
                .value
                .iter()
                .map(|v| link_with_data(path, v, &["principalId", "appRoleId", "principalType"]))
                .collect::<Result<Vec<_>, _>>()?;
            Ok((links, page.next_link))
        }
        LinkKind::Members | LinkKind::Owners => {
            let page: LinkPage<LinkedId> =
                serde_json::from_slice(text).map_err(|e| json_error(path, e))?;
            let links = page.value.into_iter().map(|l| Link::to(l.id)).collect();
            Ok((links, page.next_link))
        }
    }
}

/// A link whose target is the item's `id` and whose data is the named fields (nulls left out).
fn link_with_data(path: &str, item: &Json, fields: &[&str]) -> Result<Link, ConnectorError> {
    let target = item
        .get("id")
        .and_then(Json::as_str)
        .and_then(|s| s.parse::<ObjectId>().ok())
        .ok_or_else(|| malformed(path, format!("an item without an id: {item}")))?;
    let data: BTreeMap<String, Value> = fields
        .iter()
        .filter_map(|f| {
            item.get(*f)
                .filter(|v| !v.is_null())
                .map(|v| ((*f).to_owned(), Value::from_json(v)))
        })
        .collect();
    Ok(Link {
        target,
        data: (!data.is_empty()).then_some(Value::Map(data)),
    })
}

/// Real Graph serves the method configurations only in `authenticationMethodConfigurations`;
/// each is kept under its id (without the id itself).
fn merge_method_configurations(object: &mut DirectoryObject, item: &Json) {
    let Some(configs) = item
        .get("authenticationMethodConfigurations")
        .and_then(Json::as_array)
    else {
        return;
    };
    for c in configs {
        let Json::Object(m) = c else {
            continue;
        };
        let Some(id) = m.get("id").and_then(Json::as_str) else {
            continue;
        };
        if !AUTHENTICATION_METHOD_CONFIGURATIONS.contains(&id) {
            continue;
        }
        let mut config: Map<String, Json> = m.clone();
        config.remove("id");
        object.set(id, Value::from_json(&Json::Object(config)));
    }
    object.normalize();
}

/// Captures the tenant and stores it as a sealed snapshot (shards first, manifest last).
pub fn capture_snapshot(
    connector: &GraphConnector,
    store: &dyn ShardStore,
    info: &SnapshotInfo,
    layout: ShardLayout,
) -> Result<Manifest, ConnectorError> {
    capture_snapshot_with_stats(connector, store, info, layout).map(|(m, _)| m)
}

/// [`capture_snapshot`], also returning what the capture read.
pub fn capture_snapshot_with_stats(
    connector: &GraphConnector,
    store: &dyn ShardStore,
    info: &SnapshotInfo,
    layout: ShardLayout,
) -> Result<(Manifest, CaptureStats), ConnectorError> {
    let (writers, stats) = connector.capture(layout)?;
    let mut info = info.clone();
    if !connector.settings().per_user_mfa_state {
        info.not_captured.push(format!("user.{PER_USER_MFA_STATE}"));
    }
    let manifest = write_snapshot(store, &info, layout, writers)?;
    Ok((manifest, stats))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn select_lists_hold_the_kept_properties_and_the_lifecycle() {
        let users = select_list(ObjectType::User);
        for name in [
            "id",
            "deletedDateTime",
            "onPremisesSyncEnabled",
            "accountEnabled",
            "userType",
        ] {
            assert!(users.split(',').any(|n| n == name), "{name} in {users}");
        }
        let groups = select_list(ObjectType::Group);
        assert!(groups.split(',').any(|n| n == "membershipRule"));
        assert!(groups.split(',').any(|n| n == "groupTypes"));
        assert!(!select_list(ObjectType::NamedLocation).contains('@'));
        let n = groups.split(',').count();
        let mut unique: Vec<&str> = groups.split(',').collect();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), n);
    }

    #[test]
    fn links_keep_their_data_without_nulls() {
        let item = serde_json::json!({
            "id": "00000000-0000-0000-0000-000000000009",
            "consentType": "AllPrincipals",
            "principalId": null,
            "resourceId": "00000000-0000-0000-0000-000000000001",
            "scope": "User.Read"
        });
        let link = link_with_data(
            "/x",
            &item,
            &["consentType", "resourceId", "scope", "principalId"],
        )
        .unwrap();
        assert_eq!(link.target, ObjectId(9));
        let Some(Value::Map(m)) = link.data else {
            panic!("no data")
        };
        assert_eq!(m.len(), 3);
        assert!(!m.contains_key("principalId"));
    }
}
