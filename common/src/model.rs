//! The domain model: directory objects, their types, lifecycle, source of authority, attributes
//! and links, and the canonical encoding whose hash a snapshot index keeps.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::id::ObjectId;
use crate::properties::{self, PropertyDef};
use crate::value::Value;

/// The object types Rewind backs up. OAuth2 permission grants and app role assignments are not
/// objects of their own here: they are links of the service principal they belong to, recovered
/// with it and never alone (see [`LinkKind`]).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
#[repr(u8)]
pub enum ObjectType {
    User = 1,
    Group = 2,
    Application = 3,
    ServicePrincipal = 4,
    ConditionalAccessPolicy = 5,
    NamedLocation = 6,
    AuthenticationMethodsPolicy = 7,
    AuthorizationPolicy = 8,
    Organization = 9,
}

impl ObjectType {
    pub const ALL: [ObjectType; 9] = [
        ObjectType::User,
        ObjectType::Group,
        ObjectType::Application,
        ObjectType::ServicePrincipal,
        ObjectType::ConditionalAccessPolicy,
        ObjectType::NamedLocation,
        ObjectType::AuthenticationMethodsPolicy,
        ObjectType::AuthorizationPolicy,
        ObjectType::Organization,
    ];

    /// Rewind's name of the type (also accepted on input).
    pub fn as_str(self) -> &'static str {
        match self {
            ObjectType::User => "user",
            ObjectType::Group => "group",
            ObjectType::Application => "application",
            ObjectType::ServicePrincipal => "servicePrincipal",
            ObjectType::ConditionalAccessPolicy => "conditionalAccessPolicy",
            ObjectType::NamedLocation => "namedLocation",
            ObjectType::AuthenticationMethodsPolicy => "authenticationMethodsPolicy",
            ObjectType::AuthorizationPolicy => "authorizationPolicy",
            ObjectType::Organization => "organization",
        }
    }

    /// The `entityTypeName` Microsoft's recovery API uses for the type.
    pub fn entity_type_name(self) -> &'static str {
        match self {
            ObjectType::NamedLocation => "namedLocationPolicy",
            ObjectType::AuthenticationMethodsPolicy => "authenticationMethodPolicy",
            other => other.as_str(),
        }
    }

    pub fn code(self) -> u8 {
        self as u8
    }

    pub fn from_code(code: u8) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.code() == code)
    }

    /// Whether a delete puts the object in a recycle bin it can be restored from.
    pub fn soft_deletable(self) -> bool {
        !self.is_singleton()
    }

    /// One object per tenant, never created or deleted.
    pub fn is_singleton(self) -> bool {
        matches!(
            self,
            ObjectType::AuthenticationMethodsPolicy
                | ObjectType::AuthorizationPolicy
                | ObjectType::Organization
        )
    }
}

impl fmt::Display for ObjectType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The text names no object type.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown object type {0:?} (expected one of user, group, application, servicePrincipal, conditionalAccessPolicy, namedLocation, authenticationMethodsPolicy, authorizationPolicy, organization)")]
pub struct ParseObjectTypeError(pub String);

impl FromStr for ObjectType {
    type Err = ParseObjectTypeError;

    /// Accepts Rewind's names and Microsoft's `entityTypeName` values.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ObjectType::ALL
            .into_iter()
            .find(|t| t.as_str() == s || t.entity_type_name() == s)
            .ok_or_else(|| ParseObjectTypeError(s.to_owned()))
    }
}

impl Serialize for ObjectType {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if serializer.is_human_readable() {
            serializer.serialize_str(self.as_str())
        } else {
            serializer.serialize_u8(self.code())
        }
    }
}

impl<'de> Deserialize<'de> for ObjectType {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        if deserializer.is_human_readable() {
            let s = String::deserialize(deserializer)?;
            s.parse().map_err(D::Error::custom)
        } else {
            let code = u8::deserialize(deserializer)?;
            ObjectType::from_code(code)
                .ok_or_else(|| D::Error::custom(format!("unknown object type code {code}")))
        }
    }
}

/// Whether an object is live or in the recycle bin (and since when, in Unix seconds).
///
/// Binary encodings hold it as an optional deletion time (nil when active); text encodings as
/// `{"state":"active"}` or `{"state":"softDeleted","deletedAt":...}`.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub enum Lifecycle {
    #[default]
    Active,
    SoftDeleted {
        deleted_at: i64,
    },
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "state")]
enum LifecycleText {
    Active,
    #[serde(rename_all = "camelCase")]
    SoftDeleted {
        deleted_at: i64,
    },
}

impl Serialize for Lifecycle {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match (serializer.is_human_readable(), *self) {
            (true, Lifecycle::Active) => LifecycleText::Active.serialize(serializer),
            (true, Lifecycle::SoftDeleted { deleted_at }) => {
                LifecycleText::SoftDeleted { deleted_at }.serialize(serializer)
            }
            (false, Lifecycle::Active) => serializer.serialize_none(),
            (false, Lifecycle::SoftDeleted { deleted_at }) => {
                serializer.serialize_some(&deleted_at)
            }
        }
    }
}

impl<'de> Deserialize<'de> for Lifecycle {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        if deserializer.is_human_readable() {
            Ok(match LifecycleText::deserialize(deserializer)? {
                LifecycleText::Active => Lifecycle::Active,
                LifecycleText::SoftDeleted { deleted_at } => Lifecycle::SoftDeleted { deleted_at },
            })
        } else {
            Ok(match Option::<i64>::deserialize(deserializer)? {
                None => Lifecycle::Active,
                Some(deleted_at) => Lifecycle::SoftDeleted { deleted_at },
            })
        }
    }
}

impl Lifecycle {
    pub fn is_active(self) -> bool {
        matches!(self, Lifecycle::Active)
    }

    /// The one-byte form kept in a snapshot index.
    pub fn code(self) -> u8 {
        match self {
            Lifecycle::Active => 0,
            Lifecycle::SoftDeleted { .. } => 1,
        }
    }
}

/// Where an object is mastered: in the cloud, or synced from on-premises (never recovered).
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub enum SourceOfAuthority {
    #[default]
    Cloud,
    OnPremises,
}

/// The kinds of links an object holds, each a sorted list of linked ids.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum LinkKind {
    /// Group members (static, or computed for a dynamic group).
    Members,
    /// Owners of a group, application or service principal (kept, never recovered).
    Owners,
    /// Admin-consent (AllPrincipals) OAuth2 grants whose client is this service principal; the
    /// link target is the grant id, the link data its `resourceId` and `scope`.
    #[serde(rename = "oauth2PermissionGrants")]
    OAuth2PermissionGrants,
    /// App role assignments granted on this service principal as resource; the link target is
    /// the assignment id, the link data its `principalId` and `appRoleId`.
    AppRoleAssignedTo,
}

impl LinkKind {
    /// The directory object at the far end of a link of this kind with `target` and `data`: a
    /// member (or owner) itself; a grant's resource service principal (the holder is its
    /// client); an assignment's principal (the holder is its resource). `None` when the data
    /// lacks it. Graph hides a link whose far end is in the recycle bin, so the diff and the
    /// planner look this object up.
    pub fn far_end(self, target: ObjectId, data: Option<&Value>) -> Option<ObjectId> {
        let field = match self {
            LinkKind::Members | LinkKind::Owners => return Some(target),
            LinkKind::OAuth2PermissionGrants => "resourceId",
            LinkKind::AppRoleAssignedTo => "principalId",
        };
        match data {
            Some(Value::Map(m)) => m.get(field)?.as_str()?.parse().ok(),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            LinkKind::Members => "members",
            LinkKind::Owners => "owners",
            LinkKind::OAuth2PermissionGrants => "oauth2PermissionGrants",
            LinkKind::AppRoleAssignedTo => "appRoleAssignedTo",
        }
    }
}

impl fmt::Display for LinkKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One link: the linked object's id, and for grants and assignments the data needed to
/// re-create them.
#[derive(Clone, PartialEq, Debug, Serialize, Deserialize)]
pub struct Link {
    pub target: ObjectId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<Value>,
}

impl Link {
    pub fn to(target: ObjectId) -> Self {
        Self { target, data: None }
    }

    /// The permissions of a grant's `scope`: Graph keeps a space-separated list whose order
    /// and spacing carry no meaning.
    pub fn grant_permissions(scope: &str) -> std::collections::BTreeSet<&str> {
        scope.split_whitespace().collect()
    }

    /// The directory object at this link's far end (see [`LinkKind::far_end`]).
    pub fn far_end(&self, kind: LinkKind) -> Option<ObjectId> {
        kind.far_end(self.target, self.data.as_ref())
    }
}

/// All links of one kind, sorted by target.
#[derive(Clone, PartialEq, Debug, Serialize, Deserialize)]
pub struct LinkSet {
    pub kind: LinkKind,
    pub links: Vec<Link>,
}

/// A directory object as a snapshot keeps it.
///
/// Attributes are `(property id, value)` pairs sorted by id (the id indexes the type's
/// property table in [`crate::properties`]); a null value is never stored (absent and null are
/// the same to Graph). Link sets are sorted by kind and their links by target; an empty set is
/// never stored. [`DirectoryObject::normalize`] establishes this canonical form, and the
/// snapshot writer always applies it, so equal objects have equal encodings and equal hashes.
#[derive(Clone, PartialEq, Debug, Serialize, Deserialize)]
pub struct DirectoryObject {
    pub id: ObjectId,
    pub object_type: ObjectType,
    pub lifecycle: Lifecycle,
    pub source: SourceOfAuthority,
    /// A group whose members a rule computes (its member links are never written).
    pub dynamic_membership: bool,
    pub attributes: Vec<(u8, Value)>,
    pub links: Vec<LinkSet>,
}

/// The 128-bit content hash of an object's canonical encoding.
pub type ContentHash = [u8; 16];

impl DirectoryObject {
    pub fn new(id: ObjectId, object_type: ObjectType) -> Self {
        Self {
            id,
            object_type,
            lifecycle: Lifecycle::Active,
            source: SourceOfAuthority::Cloud,
            dynamic_membership: false,
            attributes: Vec::new(),
            links: Vec::new(),
        }
    }

    /// The value of property `name`, if set.
    pub fn get(&self, name: &str) -> Option<&Value> {
        let pid = properties::property_id(self.object_type, name)?;
        self.attributes
            .binary_search_by_key(&pid, |(p, _)| *p)
            .ok()
            .map(|i| &self.attributes[i].1)
    }

    /// Sets (or with `Value::Null`, clears) property `name`. Returns false when the type has no
    /// such property.
    pub fn set(&mut self, name: &str, value: Value) -> bool {
        let Some(pid) = properties::property_id(self.object_type, name) else {
            return false;
        };
        self.set_by_id(pid, value);
        true
    }

    /// Sets (or with `Value::Null`, clears) the property with id `pid`.
    pub fn set_by_id(&mut self, pid: u8, value: Value) {
        match (
            self.attributes.binary_search_by_key(&pid, |(p, _)| *p),
            value,
        ) {
            (Ok(i), Value::Null) => {
                self.attributes.remove(i);
            }
            (Ok(i), v) => self.attributes[i].1 = v,
            (Err(_), Value::Null) => {}
            (Err(i), v) => self.attributes.insert(i, (pid, v)),
        }
    }

    /// The property definitions and values of this object, in property order.
    pub fn properties(&self) -> impl Iterator<Item = (&'static PropertyDef, &Value)> + '_ {
        self.attributes.iter().filter_map(move |(pid, v)| {
            properties::property(self.object_type, *pid).map(|def| (def, v))
        })
    }

    pub fn display_name(&self) -> Option<&str> {
        self.get("displayName").and_then(Value::as_str)
    }

    /// The links of `kind` (empty when there are none).
    pub fn links_of(&self, kind: LinkKind) -> &[Link] {
        self.links
            .iter()
            .find(|s| s.kind == kind)
            .map(|s| s.links.as_slice())
            .unwrap_or(&[])
    }

    /// Replaces the links of `kind` (sorted and deduplicated by target here).
    pub fn set_links(&mut self, kind: LinkKind, mut links: Vec<Link>) {
        links.sort_by_key(|l| l.target);
        links.dedup_by_key(|l| l.target);
        self.links.retain(|s| s.kind != kind);
        if !links.is_empty() {
            self.links.push(LinkSet { kind, links });
            self.links.sort_by_key(|s| s.kind);
        }
    }

    /// Adds a link (or replaces the one with the same target).
    pub fn add_link(&mut self, kind: LinkKind, link: Link) {
        let set = match self.links.iter().position(|s| s.kind == kind) {
            Some(i) => &mut self.links[i],
            None => {
                self.links.push(LinkSet {
                    kind,
                    links: Vec::new(),
                });
                self.links.sort_by_key(|s| s.kind);
                let i = self
                    .links
                    .iter()
                    .position(|s| s.kind == kind)
                    .unwrap_or_default();
                &mut self.links[i]
            }
        };
        match set.links.binary_search_by_key(&link.target, |l| l.target) {
            Ok(i) => set.links[i] = link,
            Err(i) => set.links.insert(i, link),
        }
    }

    /// Removes the link to `target`; returns whether there was one.
    pub fn remove_link(&mut self, kind: LinkKind, target: ObjectId) -> bool {
        let Some(si) = self.links.iter().position(|s| s.kind == kind) else {
            return false;
        };
        let set = &mut self.links[si];
        let Ok(i) = set.links.binary_search_by_key(&target, |l| l.target) else {
            return false;
        };
        set.links.remove(i);
        if set.links.is_empty() {
            self.links.remove(si);
        }
        true
    }

    /// Puts the object in canonical form (see the type's documentation).
    pub fn normalize(&mut self) {
        self.attributes.retain(|(_, v)| *v != Value::Null);
        self.attributes.sort_by_key(|(p, _)| *p);
        self.attributes.dedup_by_key(|(p, _)| *p);
        for set in &mut self.links {
            set.links.sort_by_key(|l| l.target);
            set.links.dedup_by_key(|l| l.target);
        }
        self.links.retain(|s| !s.links.is_empty());
        self.links.sort_by_key(|s| s.kind);
    }

    /// The canonical binary encoding (rmp-serde, compact) of a normalized object.
    pub fn encode(&self) -> Vec<u8> {
        let mut buf = Vec::with_capacity(512);
        self.encode_into(&mut buf);
        buf
    }

    /// Appends the canonical encoding to `buf`.
    pub fn encode_into(&self, buf: &mut Vec<u8>) {
        // Serializing plain data into a Vec cannot fail.
        #[allow(clippy::expect_used)]
        rmp_serde::encode::write(buf, self).expect("encoding a directory object into memory");
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, rmp_serde::decode::Error> {
        rmp_serde::from_slice(bytes)
    }

    /// The content hash of an encoding (blake3, first 128 bits).
    pub fn hash_encoding(encoding: &[u8]) -> ContentHash {
        let mut out = [0u8; 16];
        out.copy_from_slice(&blake3::hash(encoding).as_bytes()[..16]);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_get_and_links_stay_canonical() {
        let mut u = DirectoryObject::new(ObjectId(7), ObjectType::User);
        assert!(u.set("surname", "Doe".into()));
        assert!(u.set("accountEnabled", true.into()));
        assert!(!u.set("manager", "x".into()), "manager is not kept");
        assert_eq!(u.get("surname"), Some(&Value::from("Doe")));
        assert!(u.attributes.windows(2).all(|w| w[0].0 < w[1].0));
        u.set("surname", Value::Null);
        assert_eq!(u.get("surname"), None);

        let mut g = DirectoryObject::new(ObjectId(8), ObjectType::Group);
        g.add_link(LinkKind::Owners, Link::to(ObjectId(3)));
        g.add_link(LinkKind::Members, Link::to(ObjectId(5)));
        g.add_link(LinkKind::Members, Link::to(ObjectId(2)));
        assert_eq!(g.links[0].kind, LinkKind::Members);
        assert_eq!(g.links_of(LinkKind::Members)[0].target, ObjectId(2));
        let mut copy = g.clone();
        copy.normalize();
        assert_eq!(copy, g);
        assert!(g.remove_link(LinkKind::Owners, ObjectId(3)));
        assert!(g.links_of(LinkKind::Owners).is_empty());
        assert_eq!(g.links.len(), 1);
    }

    #[test]
    fn encoding_round_trips() {
        let mut u = DirectoryObject::new(ObjectId(u128::MAX - 1), ObjectType::User);
        u.set("displayName", "Ann".into());
        u.lifecycle = Lifecycle::SoftDeleted {
            deleted_at: 1_700_000_000,
        };
        u.source = SourceOfAuthority::OnPremises;
        let bytes = u.encode();
        assert_eq!(DirectoryObject::decode(&bytes).unwrap(), u);
    }
}
