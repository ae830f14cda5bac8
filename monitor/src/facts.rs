//! Facts: what the monitor knows about each subject, typed per subject kind.
//!
//! Collectors (cluster facts in `novads-operator`, federation facts in `novads-api`) fill the
//! structs below; a [`FactsDocument`] carries them, together with whether each source could be
//! collected, to [`evaluate`](crate::evaluate). Facts hold counts, ages and identifiers, never
//! passwords or tokens. The structs are the facts schema: [`schema`] derives the types the
//! policy expressions are checked against from them, so a fact exists in exactly one place.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The longest list a fact may hold. Together with the expression bounds (see
/// [`crate::expr`]) it bounds the work one check can do on one subject.
pub const MAX_FACT_LIST: usize = 10_000;

/// What a check looks at.
#[derive(
    Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash,
)]
pub enum SubjectKind {
    /// The platform as a whole (one subject).
    Platform,
    /// A municipality's tenancy.
    Municipality,
    /// A sign-on realm (a municipality's directory).
    Realm,
    /// A virtual server.
    VirtualServer,
}

impl SubjectKind {
    pub const ALL: [SubjectKind; 4] = [
        Self::Platform,
        Self::Municipality,
        Self::Realm,
        Self::VirtualServer,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Platform => "Platform",
            Self::Municipality => "Municipality",
            Self::Realm => "Realm",
            Self::VirtualServer => "VirtualServer",
        }
    }
}

impl std::fmt::Display for SubjectKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a fact comes from. Each field of the facts structs names its source (`x-source` in the
/// schema; cluster when unmarked).
#[derive(
    Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash,
)]
#[serde(rename_all = "camelCase")]
pub enum Source {
    /// Kubernetes objects: Municipality, VirtualServer, ServerImage, NetworkPolicy, Service,
    /// RoleBinding, ResourceQuota, VirtualMachineSnapshot, SecurityExemption.
    Cluster,
    /// The sign-on federation: configuration, database (audit, sessions, keys), directories.
    Federation,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Cluster => "cluster",
            Self::Federation => "federation",
        }
    }
}

/// Whether a source's facts are there. A check that reads a fact of a source that was not
/// collected is skipped; one whose source failed is an error, never a pass.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub enum SourceState {
    /// The facts were collected.
    Collected,
    /// Nobody asked for them (e.g. no `--config` was given); the reason says why.
    NotCollected(String),
    /// Collecting them failed (directory down, database unreachable); the reason says how.
    Failed(String),
}

impl SourceState {
    fn rank(&self) -> u8 {
        match self {
            Self::Collected => 0,
            Self::NotCollected(_) => 1,
            Self::Failed(_) => 2,
        }
    }
}

/// Security profile of a municipality; `Elevated` applies the stricter parameter values.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Profile {
    #[default]
    Standard,
    Elevated,
}

/// A municipality as the evaluation needs it: its name, namespace and profile.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MunicipalityInfo {
    /// `metadata.name` of the Municipality.
    pub name: String,
    /// Its namespace (`muni-<code>`), where its Report and exemptions live.
    pub namespace: String,
    #[serde(default)]
    pub profile: Profile,
}

/// One subject with its facts.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Subject {
    pub kind: SubjectKind,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Names of the municipalities whose compliance this subject counts towards: its own for a
    /// Municipality or VirtualServer, every municipality signing in through a Realm, none for
    /// the Platform.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub municipalities: Vec<String>,
    /// The facts, as the struct of [`kind`](Self::kind) serialises them.
    #[serde(default)]
    pub facts: serde_json::Map<String, Value>,
    /// Sources that failed (or were not collected) for this subject only, e.g. one realm's
    /// directory that did not answer.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub sources: BTreeMap<Source, SourceState>,
    /// Facts that could not be collected for this subject while the rest of its source
    /// could, with the reason (e.g. a directory that does not let novads read its password
    /// policy). A check reading one of them is an `error` naming the reason, never a `pass`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub uncollected: BTreeMap<String, String>,
}

impl Subject {
    /// A subject from a typed facts struct.
    pub fn new<F: KindFacts>(name: impl Into<String>, facts: &F) -> Self {
        let facts = match serde_json::to_value(facts) {
            Ok(Value::Object(map)) => map,
            // The facts structs are plain data with named fields: they serialise to objects.
            _ => serde_json::Map::new(),
        };
        Self {
            kind: F::KIND,
            name: name.into(),
            namespace: None,
            municipalities: Vec::new(),
            facts,
            sources: BTreeMap::new(),
            uncollected: BTreeMap::new(),
        }
    }
}

/// Everything an evaluation looks at: sources, municipalities and subjects.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FactsDocument {
    /// State of each source for every subject. A source not listed was not collected.
    #[serde(default)]
    pub sources: BTreeMap<Source, SourceState>,
    #[serde(default)]
    pub municipalities: Vec<MunicipalityInfo>,
    #[serde(default)]
    pub subjects: Vec<Subject>,
}

impl FactsDocument {
    /// Parses a facts document written as YAML or JSON, and checks it against the schema.
    /// Every problem is one line.
    pub fn from_text(text: &str) -> Result<Self, Vec<String>> {
        let value: Value = serde_saphyr::from_str(text).map_err(|error| {
            vec![format!(
                "invalid YAML: {}",
                error
                    .without_snippet()
                    .to_string()
                    .split_whitespace()
                    .collect::<Vec<_>>()
                    .join(" ")
            )]
        })?;
        if value.is_null() {
            return Err(vec!["the facts document is empty".into()]);
        }
        let document: Self = serde_json::from_value(value)
            .map_err(|error| vec![format!("not a facts document: {error}")])?;
        let problems = document.problems();
        if problems.is_empty() {
            Ok(document)
        } else {
            Err(problems)
        }
    }

    /// The state of `source` for `subject`: the subject's own entry first, then the document's.
    pub fn source_state(&self, subject: &Subject, source: Source) -> SourceState {
        subject
            .sources
            .get(&source)
            .or_else(|| self.sources.get(&source))
            .cloned()
            .unwrap_or_else(|| {
                SourceState::NotCollected(format!("{} facts not collected", source.as_str()))
            })
    }

    /// Adds the facts of another collector: municipalities not yet described, subjects
    /// (the facts of a subject both describe are combined, `other` winning on the same fact),
    /// and source states (the worse state wins: failed over not collected over collected).
    pub fn merge(&mut self, other: FactsDocument) {
        for (source, state) in other.sources {
            let current = self.sources.entry(source).or_insert(state.clone());
            if state.rank() > current.rank() {
                *current = state;
            }
        }
        for municipality in other.municipalities {
            if self.municipality(&municipality.name).is_none() {
                self.municipalities.push(municipality);
            }
        }
        for subject in other.subjects {
            let existing = self.subjects.iter_mut().find(|s| {
                s.kind == subject.kind && s.name == subject.name && s.namespace == subject.namespace
            });
            match existing {
                Some(existing) => {
                    // A fact one collector could not read and another did is collected.
                    for fact in subject.facts.keys() {
                        existing.uncollected.remove(fact);
                    }
                    existing.facts.extend(subject.facts);
                    for municipality in subject.municipalities {
                        if !existing.municipalities.contains(&municipality) {
                            existing.municipalities.push(municipality);
                        }
                    }
                    existing.sources.extend(subject.sources);
                    existing.uncollected.extend(subject.uncollected);
                }
                None => self.subjects.push(subject),
            }
        }
    }

    pub fn municipality(&self, name: &str) -> Option<&MunicipalityInfo> {
        self.municipalities.iter().find(|m| m.name == name)
    }

    /// Problems with the document itself: unknown kinds of facts, wrong types, lists over
    /// [`MAX_FACT_LIST`], subjects naming municipalities that are not listed. Each problem names
    /// the subject.
    pub fn problems(&self) -> Vec<String> {
        let schemas: BTreeMap<SubjectKind, BTreeMap<String, Field>> = SubjectKind::ALL
            .iter()
            .map(|kind| (*kind, schema(*kind)))
            .collect();
        let mut problems = Vec::new();
        for subject in &self.subjects {
            let label = format!("{} {}", subject.kind, subject.name);
            for problem in validate_against(subject.kind, &schemas[&subject.kind], &subject.facts) {
                problems.push(format!("{label}: {problem}"));
            }
            for fact in subject.uncollected.keys() {
                if !schemas[&subject.kind].contains_key(fact) {
                    problems.push(format!(
                        "{label}: `uncollected` names unknown fact `{fact}` for a {}",
                        subject.kind
                    ));
                }
            }
            for municipality in &subject.municipalities {
                if self.municipality(municipality).is_none() {
                    problems.push(format!(
                        "{label}: municipality {municipality:?} is not in `municipalities`"
                    ));
                }
            }
        }
        problems
    }
}

/// Which directory groups of which realm administer a municipality (`spec.realm`,
/// `spec.adminGroups`): what the federation collector needs from the cluster to count a
/// municipality's administrators in its realm's directory.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct AdminGroups {
    /// `metadata.name` of the Municipality.
    pub municipality: String,
    pub realm: String,
    /// Group names of the realm, unqualified.
    pub groups: Vec<String>,
}

/// A typed facts struct of one subject kind.
pub trait KindFacts: Serialize + JsonSchema {
    const KIND: SubjectKind;
}

/// Facts about the platform as a whole.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PlatformFacts {
    /// The audit trail's hash chain verifies from the first row to the last.
    #[schemars(extend("x-source" = "federation"))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audit_chain_intact: Option<bool>,
    /// Rows checked by the last audit verification.
    #[schemars(extend("x-source" = "federation"))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audit_rows_verified: Option<i64>,
    /// How many days audit rows are kept before deletion; 0 when they are never deleted.
    #[schemars(extend("x-source" = "federation"))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audit_retention_days: Option<i64>,
    /// Age of the oldest audit row, in days.
    #[schemars(extend("x-source" = "federation"))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audit_oldest_event_age_days: Option<i64>,
    /// Largest clock offset between the platform's hosts and their time source, in ms.
    #[schemars(extend("x-source" = "federation"))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clock_offset_ms: Option<i64>,
    /// Age of the active token-signing key, in days.
    #[schemars(extend("x-source" = "federation"))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signing_key_age_days: Option<i64>,
    /// A next signing key is already published, so a rotation does not break verification.
    #[schemars(extend("x-source" = "federation"))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_signing_key_published: Option<bool>,
}

impl KindFacts for PlatformFacts {
    const KIND: SubjectKind = SubjectKind::Platform;
}

/// Facts about a municipality's tenancy.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct MunicipalityFacts {
    /// The Municipality's `Ready` condition is `True`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready: Option<bool>,
    /// Directory groups in `spec.adminGroups`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin_groups: Option<i64>,
    /// The namespace has the platform's ResourceQuota with a limit on virtual servers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_quota_present: Option<bool>,
    /// `spec.quotas.maxVirtualServers`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_virtual_servers: Option<i64>,
    /// VirtualServers in the namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub virtual_servers: Option<i64>,
    /// A NetworkPolicy selects every pod of the namespace and denies ingress by default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_deny_ingress: Option<bool>,
    /// A NetworkPolicy selects every pod of the namespace and denies egress by default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_deny_egress: Option<bool>,
    /// Ports reachable from anywhere (`0.0.0.0/0` or `::/0`): from Services of type
    /// LoadBalancer or NodePort without source ranges, and from NetworkPolicy rules.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_ports: Option<Vec<PublicPort>>,
    /// `spec.allowedNetworkRanges` entries outside private address space (RFC 1918, RFC 4193).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_allowed_ranges: Option<Vec<String>>,
    /// RoleBindings in the namespace that bind a single user rather than a group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_role_bindings: Option<i64>,
    /// SecurityExemptions in the namespace whose expiry has passed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expired_exemptions: Option<i64>,
    /// Distinct people in the admin groups, as the realm's directory lists them.
    #[schemars(extend("x-source" = "federation"))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin_members: Option<i64>,
    /// Members of the admin groups that are not a person (shared or generic accounts such as
    /// `admin` or `it`).
    #[schemars(extend("x-source" = "federation"))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generic_admin_accounts: Option<i64>,
    /// The realm's directory held more accounts than the collector lists, so `admin_members`
    /// and `generic_admin_accounts` count only the accounts listed.
    #[schemars(extend("x-source" = "federation"))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub directory_listing_truncated: Option<bool>,
    /// Sign-ins by members of the admin groups in the last 24 hours.
    #[schemars(extend("x-source" = "federation"))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin_sign_ins_24h: Option<i64>,
    /// Of those, sign-ins that used a second factor.
    #[schemars(extend("x-source" = "federation"))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin_sign_ins_second_factor_24h: Option<i64>,
    /// The realm offers a second factor at all.
    #[schemars(extend("x-source" = "federation"))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub second_factor_available: Option<bool>,
}

impl KindFacts for MunicipalityFacts {
    const KIND: SubjectKind = SubjectKind::Municipality;
}

/// A port reachable from anywhere.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PublicPort {
    /// What exposes it, e.g. `Service/web` or `NetworkPolicy/allow-all`.
    pub object: String,
    pub port: i64,
    /// `TCP` or `UDP`.
    pub protocol: String,
}

/// Facts about a sign-on realm and its directory.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RealmFacts {
    /// Every directory URL uses `ldaps://` or StartTLS.
    #[schemars(extend("x-source" = "federation"))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub directory_tls: Option<bool>,
    /// The directory's certificate is verified (not skipped).
    #[schemars(extend("x-source" = "federation"))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub directory_certificate_verified: Option<bool>,
    /// Failed sign-ins after which an account is locked; 0 when there is no lockout.
    #[schemars(extend("x-source" = "federation"))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lockout_threshold: Option<i64>,
    /// The directory's password policies the password facts were read from (their DNs); the
    /// facts are the weakest value among them.
    #[schemars(extend("x-source" = "federation"))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_policies: Option<Vec<String>>,
    /// Minimum password length the directory enforces; 0 when it enforces none (OpenLDAP
    /// ppolicy: `pwdMinLength`, which applies only with `pwdCheckQuality` 1 or 2).
    #[schemars(extend("x-source" = "federation"))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_min_length: Option<i64>,
    /// Character classes (lower, upper, digit, special) a password must mix, when the
    /// directory says.
    #[schemars(extend("x-source" = "federation"))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_character_classes: Option<i64>,
    /// Failed binds after which the directory itself locks an account (against guessing that
    /// bypasses novads); 0 when it never locks (`pwdLockout` with `pwdMaxFailure`).
    #[schemars(extend("x-source" = "federation"))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub directory_lockout_failures: Option<i64>,
    /// Days after which a password expires; 0 when it never does (`pwdMaxAge`).
    #[schemars(extend("x-source" = "federation"))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_max_age_days: Option<i64>,
    /// Earlier passwords a new one may not repeat; 0 when none are kept (`pwdInHistory`).
    #[schemars(extend("x-source" = "federation"))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_history: Option<i64>,
    /// For each enabled directory account: days since its last sign-in (since its creation
    /// when it never signed in).
    #[schemars(extend("x-source" = "federation"))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled_accounts_days_since_sign_in: Option<Vec<i64>>,
    /// Accounts the collector listed from the directory (enabled or not).
    #[schemars(extend("x-source" = "federation"))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub directory_accounts: Option<i64>,
    /// The directory held more accounts than the collector lists; the account facts cover
    /// only the accounts listed.
    #[schemars(extend("x-source" = "federation"))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub directory_listing_truncated: Option<bool>,
    /// Identities with a live session or refresh token who are gone or disabled in the
    /// directory.
    #[schemars(extend("x-source" = "federation"))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub departed_with_access: Option<i64>,
    /// Sign-in attempts in the last 24 hours.
    #[schemars(extend("x-source" = "federation"))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sign_ins_24h: Option<i64>,
    /// Of those, failed attempts.
    #[schemars(extend("x-source" = "federation"))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed_sign_ins_24h: Option<i64>,
    /// Accounts locked in the last 24 hours.
    #[schemars(extend("x-source" = "federation"))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lockouts_24h: Option<i64>,
    /// Accounts locked per day on average over the previous 7 days.
    #[schemars(extend("x-source" = "federation"))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lockouts_daily_average_7d: Option<f64>,
    /// Sign-in attempts in the last 24 hours without an audit row.
    #[schemars(extend("x-source" = "federation"))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unaudited_attempts_24h: Option<i64>,
}

impl KindFacts for RealmFacts {
    const KIND: SubjectKind = SubjectKind::Realm;
}

/// Facts about a virtual server, its image and its backups.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct VirtualServerFacts {
    /// Name of the ServerImage in `spec.image`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// The ServerImage exists.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_found: Option<bool>,
    /// The ServerImage is approved by the platform team.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_approved: Option<bool>,
    /// Days until the image's `supportEnd`; negative once it has passed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_support_days_left: Option<i64>,
    /// Days since the image's `lastPatched`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_patch_age_days: Option<i64>,
    /// `spec.backup` is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup_configured: Option<bool>,
    /// Longest interval between two runs of the backup schedule, in hours.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup_interval_hours: Option<i64>,
    /// `spec.backup.retention`: successful snapshots kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup_retention: Option<i64>,
    /// Age of the newest successful snapshot, in hours; absent when there is none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_backup_age_hours: Option<i64>,
    /// Ports exposed outside the cluster (`spec.expose` with a LoadBalancer).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub externally_exposed_ports: Option<Vec<i64>>,
}

impl KindFacts for VirtualServerFacts {
    const KIND: SubjectKind = SubjectKind::VirtualServer;
}

/// The type of a fact, a parameter or an expression, as far as the checker follows it.
#[derive(Clone, Debug, PartialEq)]
pub enum FactType {
    Bool,
    Int,
    Double,
    String,
    List(Box<FactType>),
    /// A record with known fields (a facts struct, `params`, `subject`).
    Object(BTreeMap<String, Field>),
    /// Unknown until evaluation (map literals, accumulators).
    Dyn,
}

impl std::fmt::Display for FactType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Bool => f.write_str("bool"),
            Self::Int => f.write_str("int"),
            Self::Double => f.write_str("double"),
            Self::String => f.write_str("string"),
            Self::List(item) => write!(f, "list<{item}>"),
            Self::Object(_) => f.write_str("object"),
            Self::Dyn => f.write_str("dyn"),
        }
    }
}

/// One field of an object type.
#[derive(Clone, Debug, PartialEq)]
pub struct Field {
    pub ty: FactType,
    pub source: Source,
    pub description: String,
}

/// The facts schema of a subject kind: field name to type, source and description.
pub fn schema(kind: SubjectKind) -> BTreeMap<String, Field> {
    let root = match kind {
        SubjectKind::Platform => schemars::schema_for!(PlatformFacts),
        SubjectKind::Municipality => schemars::schema_for!(MunicipalityFacts),
        SubjectKind::Realm => schemars::schema_for!(RealmFacts),
        SubjectKind::VirtualServer => schemars::schema_for!(VirtualServerFacts),
    };
    let root = root.as_value();
    match object_type(root, root) {
        FactType::Object(fields) => fields,
        _ => BTreeMap::new(),
    }
}

/// Reads a schemars JSON schema node as a [`FactType`]. `root` resolves `$ref`s.
fn type_of(node: &Value, root: &Value) -> FactType {
    if let Some(reference) = node.get("$ref").and_then(Value::as_str) {
        let target = reference
            .strip_prefix("#/")
            .map(|path| path.split('/').fold(root, |v, key| &v[key]));
        return target.map_or(FactType::Dyn, |t| type_of(t, root));
    }
    if let Some(any_of) = node.get("anyOf").and_then(Value::as_array) {
        // `Option<T>` of a struct: T or null.
        return any_of
            .iter()
            .find(|n| n.get("type").and_then(Value::as_str) != Some("null"))
            .map_or(FactType::Dyn, |n| type_of(n, root));
    }
    let ty = match node.get("type") {
        Some(Value::String(ty)) => ty.as_str(),
        Some(Value::Array(types)) => types
            .iter()
            .filter_map(Value::as_str)
            .find(|t| *t != "null")
            .unwrap_or("null"),
        _ => "",
    };
    match ty {
        "boolean" => FactType::Bool,
        "integer" => FactType::Int,
        "number" => FactType::Double,
        "string" => FactType::String,
        "array" => FactType::List(Box::new(
            node.get("items")
                .map_or(FactType::Dyn, |items| type_of(items, root)),
        )),
        "object" => object_type(node, root),
        _ => FactType::Dyn,
    }
}

fn object_type(node: &Value, root: &Value) -> FactType {
    let Some(properties) = node.get("properties").and_then(Value::as_object) else {
        return FactType::Dyn;
    };
    let fields = properties
        .iter()
        .map(|(name, property)| {
            let source = match property.get("x-source").and_then(Value::as_str) {
                Some("federation") => Source::Federation,
                _ => Source::Cluster,
            };
            let description = property
                .get("description")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .replace('\n', " ");
            let field = Field {
                ty: type_of(property, root),
                source,
                description,
            };
            (name.clone(), field)
        })
        .collect();
    FactType::Object(fields)
}

/// Checks facts given as JSON against the schema of `kind`: known fields, right types, lists
/// within [`MAX_FACT_LIST`].
pub fn validate_facts(kind: SubjectKind, facts: &serde_json::Map<String, Value>) -> Vec<String> {
    validate_against(kind, &schema(kind), facts)
}

/// [`validate_facts`] with the schema of `kind` already derived.
pub fn validate_against(
    kind: SubjectKind,
    schema: &BTreeMap<String, Field>,
    facts: &serde_json::Map<String, Value>,
) -> Vec<String> {
    let mut problems = Vec::new();
    for (name, value) in facts {
        match schema.get(name) {
            None => problems.push(format!("unknown fact `{name}` for a {kind}")),
            Some(field) => check_value(name, &field.ty, value, &mut problems),
        }
    }
    problems
}

fn check_value(path: &str, ty: &FactType, value: &Value, problems: &mut Vec<String>) {
    let fits = match (ty, value) {
        (_, Value::Null) | (FactType::Dyn, _) => true,
        (FactType::Bool, Value::Bool(_)) | (FactType::String, Value::String(_)) => true,
        (FactType::Int, Value::Number(n)) => n.is_i64(),
        (FactType::Double, Value::Number(_)) => true,
        (FactType::List(item), Value::Array(items)) => {
            if items.len() > MAX_FACT_LIST {
                problems.push(format!(
                    "`{path}` holds {} items, more than the limit of {MAX_FACT_LIST}",
                    items.len()
                ));
            }
            for (index, value) in items.iter().enumerate().take(MAX_FACT_LIST) {
                check_value(&format!("{path}[{index}]"), item, value, problems);
            }
            true
        }
        (FactType::Object(fields), Value::Object(map)) => {
            for (name, value) in map {
                match fields.get(name) {
                    None => problems.push(format!("unknown field `{path}.{name}`")),
                    Some(field) => {
                        check_value(&format!("{path}.{name}"), &field.ty, value, problems)
                    }
                }
            }
            true
        }
        _ => false,
    };
    if !fits {
        problems.push(format!("`{path}` must be {ty}, not {value}"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_follows_the_structs_with_types_and_sources() {
        let municipality = schema(SubjectKind::Municipality);
        assert_eq!(municipality["admin_groups"].ty, FactType::Int);
        assert_eq!(municipality["admin_groups"].source, Source::Cluster);
        assert_eq!(municipality["admin_members"].source, Source::Federation);
        let FactType::List(port) = &municipality["public_ports"].ty else {
            panic!("public_ports is a list");
        };
        let FactType::Object(fields) = port.as_ref() else {
            panic!("a public port is an object");
        };
        assert_eq!(fields["port"].ty, FactType::Int);
        let realm = schema(SubjectKind::Realm);
        assert_eq!(
            realm["enabled_accounts_days_since_sign_in"].ty,
            FactType::List(Box::new(FactType::Int))
        );
        assert_eq!(realm["lockouts_daily_average_7d"].ty, FactType::Double);
        assert!(!realm["departed_with_access"].description.is_empty());
    }

    #[test]
    fn facts_are_validated_against_the_schema() {
        let facts = serde_json::json!({
            "admin_groups": "two",
            "no_such_fact": 1,
            "public_ports": [{"object": "Service/web", "port": 22, "protocol": "TCP", "x": 1}],
        });
        let Value::Object(facts) = facts else {
            unreachable!()
        };
        let problems = validate_facts(SubjectKind::Municipality, &facts);
        assert_eq!(problems.len(), 3, "{problems:?}");
        assert!(
            problems
                .iter()
                .any(|p| p.contains("`admin_groups` must be int"))
        );
        assert!(
            problems
                .iter()
                .any(|p| p.contains("unknown fact `no_such_fact`"))
        );
        assert!(problems.iter().any(|p| p.contains("`public_ports[0].x`")));
    }
}
