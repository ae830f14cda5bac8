//! Admission of a `VirtualServer`: the checks its CRD cannot express — the image exists, is
//! approved and in support; the municipality's quota holds; exposed sources lie within the
//! municipality's networks; cloud-init reads only the server's own Secrets; schedules parse —
//! decided purely from what the controller has in its caches. A refused server keeps whatever
//! runs; the controller reports the refusals as a condition and an Event and changes nothing.

use std::collections::BTreeSet;
use std::fmt;

use ipnet::IpNet;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::jiff::Timestamp;
use k8s_openapi::jiff::civil::Date;
use novads_crds::{Municipality, Phase, ServerImage, VirtualServer, VirtualServerSpec};

use super::schedule;
use crate::municipality::build::{describe_problems, plan_quota};
use crate::quantity::{Amount, QuantityError};

/// The condition / event reasons of a refusal (CamelCase, API conventions).
pub mod reason {
    /// `spec.image` names no ServerImage.
    pub const IMAGE_NOT_FOUND: &str = "ImageNotFound";
    /// The ServerImage is not approved for municipal use.
    pub const IMAGE_NOT_APPROVED: &str = "ImageNotApproved";
    /// The ServerImage's support has ended (or its end date cannot be read).
    pub const IMAGE_OUT_OF_SUPPORT: &str = "ImageOutOfSupport";
    /// `spec.disks.systemSize` is smaller than the image's `minDiskSize`.
    pub const IMAGE_TOO_LARGE: &str = "ImageTooLarge";
    /// The municipality's quota would be exceeded (or cannot be read).
    pub const QUOTA_EXCEEDED: &str = "QuotaExceeded";
    /// `spec.cloudInit.secretRef` names another namespace's Secret.
    pub const FOREIGN_SECRET: &str = "ForeignSecret";
    /// An exposed port admits a network outside the municipality's `allowedNetworkRanges`.
    pub const SOURCE_OUTSIDE_NETWORK_RANGES: &str = "SourceOutsideNetworkRanges";
    /// Something in the spec is malformed or out of bounds.
    pub const INVALID_SPEC: &str = "InvalidSpec";
    /// No Municipality owns the server's namespace.
    pub const MUNICIPALITY_NOT_FOUND: &str = "MunicipalityNotFound";
}

/// One reason a server is not admitted, with a message for its admins.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    /// One of the constants in [`reason`].
    pub reason: &'static str,
    pub message: String,
}

impl Refusal {
    fn new(reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            reason,
            message: message.into(),
        }
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// The longest joined message [`describe_refusals`] returns; a condition message may hold
/// 32 KiB, but nobody reads that much in `kubectl describe`.
pub const MAX_DESCRIPTION: usize = 4000;

/// Every refusal's message joined for a condition or Event, cut at [`MAX_DESCRIPTION`].
pub fn describe_refusals(refusals: &[Refusal]) -> String {
    let joined = refusals
        .iter()
        .map(|r| r.message.as_str())
        .collect::<Vec<_>>()
        .join("; ");
    truncate(joined, MAX_DESCRIPTION)
}

fn truncate(mut text: String, max: usize) -> String {
    if text.len() <= max {
        return text;
    }
    let mut cut = max.saturating_sub('…'.len_utf8());
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    text.truncate(cut);
    text.push('…');
    text
}

/// What admission looks at, all from the controller's caches.
pub struct AdmissionInput<'a> {
    pub server: &'a VirtualServer,
    /// The ServerImage named by `spec.image`, if it exists.
    pub image: Option<&'a ServerImage>,
    /// The Municipality owning the server's namespace, if any.
    pub municipality: Option<&'a Municipality>,
    /// The other VirtualServers of the namespace (the server itself, if included, is skipped).
    pub siblings: &'a [VirtualServer],
    /// Whether the server's VirtualMachine exists already.
    pub vm_exists: bool,
    /// Today's date, UTC.
    pub today: Date,
}

/// What admission settled that building the server needs.
#[derive(Clone, Debug, PartialEq)]
pub struct Admitted {
    /// `spec.disks.systemSize`, or the image's `minDiskSize` when it is not set.
    pub system_disk_size: Quantity,
}

/// Bounds the CRD sets, checked again because the operator may meet objects stored under an
/// older CRD (defence in depth).
const CPU_RANGE: std::ops::RangeInclusive<i32> = 1..=64;
const MEMORY_MIN: Amount = Amount::mebibytes(256);
const MEMORY_MAX: Amount = Amount::mebibytes(1 << 20);
const DISK_MIN: Amount = Amount::mebibytes(1 << 10);
const DISK_MAX: Amount = Amount::mebibytes(64 << 20);
const MAX_DATA_DISKS: usize = 8;
const RETENTION_RANGE: std::ops::RangeInclusive<i32> = 1..=100;

/// How many problems of one kind are listed before the rest are summed up, and how many
/// servers a quota message names: messages stay readable however large the spec.
const MAX_LISTED: usize = 5;

/// Decides whether the server may be built. Every problem is reported at once, so an admin
/// fixes them in one go; refusals come in the order an admin would work through them.
pub fn admit(input: &AdmissionInput) -> Result<Admitted, Vec<Refusal>> {
    let mut refusals = Vec::new();
    let spec = &input.server.spec;
    if input.municipality.is_none() {
        let namespace = input.server.metadata.namespace.as_deref().unwrap_or("");
        refusals.push(Refusal::new(
            reason::MUNICIPALITY_NOT_FOUND,
            format!(
                "no Municipality owns namespace {namespace}; virtual servers live in a municipality's muni-<code> namespace"
            ),
        ));
    }
    let system_disk = system_disk(input, &mut refusals);
    check_secret(input.server, &mut refusals);
    let shape = check_shape(spec, &mut refusals);
    if let Some(municipality) = input.municipality {
        check_sources(spec, municipality, &mut refusals);
        let usage = Usage {
            name: input.server.metadata.name.clone().unwrap_or_default(),
            cpu: shape.cpu,
            memory: shape.memory,
            storage: system_disk
                .as_ref()
                .map_or(Amount::default(), |(_, amount)| *amount)
                .plus(shape.data_disks),
            system_disk_known: system_disk.is_some(),
        };
        check_quota(input, municipality, &usage, &mut refusals);
    }
    match system_disk {
        Some((system_disk_size, _)) if refusals.is_empty() => Ok(Admitted { system_disk_size }),
        _ => {
            // Every path that leaves the size unknown also refuses; this keeps it total.
            if refusals.is_empty() {
                refusals.push(Refusal::new(
                    reason::INVALID_SPEC,
                    "spec.disks.systemSize: the system disk's size cannot be determined",
                ));
            }
            Err(refusals)
        }
    }
}

/// Checks the image (only for a server not created yet) and settles the system disk's size:
/// the spec's, else the image's minimum. `None` when it cannot be known (a refusal says why).
///
/// A running server is never reinstalled, stopped or refused because its image aged out of
/// support or lost its approval: the image only matters when the VirtualMachine is created.
/// The security monitor reports servers on unsupported images instead.
fn system_disk(input: &AdmissionInput, refusals: &mut Vec<Refusal>) -> Option<(Quantity, Amount)> {
    let spec = &input.server.spec;
    let requested = spec.disks.system_size.as_ref();
    // A size the shape check refuses (unparsable, out of bounds) is no size at all here, so it
    // is neither compared with the image nor counted against the quota.
    let requested_amount = requested
        .and_then(|size| Amount::parse(&size.0).ok())
        .filter(|amount| (DISK_MIN..=DISK_MAX).contains(amount));
    let image_name = &spec.image;
    let Some(image) = input.image else {
        if !input.vm_exists {
            refusals.push(Refusal::new(
                reason::IMAGE_NOT_FOUND,
                format!(
                    "spec.image: ServerImage {image_name} does not exist; `kubectl get serverimages` lists the images on offer"
                ),
            ));
            return None;
        }
        return match (requested, requested_amount) {
            (Some(size), Some(amount)) => Some((size.clone(), amount)),
            // Reported by the shape check.
            (Some(_), None) => None,
            (None, _) => {
                refusals.push(Refusal::new(
                    reason::IMAGE_NOT_FOUND,
                    format!(
                        "spec.image: ServerImage {image_name} no longer exists, so the system disk's size is unknown; set spec.disks.systemSize to the disk's current size"
                    ),
                ));
                None
            }
        };
    };
    let minimum = Amount::parse(&image.spec.min_disk_size.0);
    if !input.vm_exists {
        check_image(image_name, image, input.today, refusals);
        match (&minimum, requested, requested_amount) {
            (Err(error), _, _) => refusals.push(Refusal::new(
                reason::INVALID_SPEC,
                format!(
                    "ServerImage {image_name}: minDiskSize {error}; the platform team must fix the image"
                ),
            )),
            (Ok(minimum), Some(size), Some(amount)) if amount < *minimum => {
                refusals.push(Refusal::new(
                    reason::IMAGE_TOO_LARGE,
                    format!(
                        "spec.disks.systemSize: {} is smaller than ServerImage {image_name} needs ({minimum}); omit it or give at least {minimum}",
                        size.0
                    ),
                ));
            }
            _ => {}
        }
    }
    match (requested, requested_amount, minimum) {
        (Some(size), Some(amount), _) => Some((size.clone(), amount)),
        (Some(_), None, _) => None,
        (None, _, Ok(minimum)) => Some((image.spec.min_disk_size.clone(), minimum)),
        (None, _, Err(_)) => {
            if input.vm_exists {
                refusals.push(Refusal::new(
                    reason::INVALID_SPEC,
                    format!(
                        "ServerImage {image_name}: minDiskSize `{}` is not a quantity, so the system disk's size is unknown; set spec.disks.systemSize",
                        image.spec.min_disk_size.0
                    ),
                ));
            }
            None
        }
    }
}

fn check_image(name: &str, image: &ServerImage, today: Date, refusals: &mut Vec<Refusal>) {
    if !image.spec.approved {
        refusals.push(Refusal::new(
            reason::IMAGE_NOT_APPROVED,
            format!("spec.image: ServerImage {name} is not approved for municipal use"),
        ));
    }
    let support_end = image.spec.support_end.trim();
    match parse_date(support_end) {
        None => refusals.push(Refusal::new(
            reason::IMAGE_OUT_OF_SUPPORT,
            format!(
                "spec.image: ServerImage {name} has supportEnd `{}`, which is not a date (YYYY-MM-DD), so its support cannot be confirmed",
                truncate(support_end.to_string(), 64)
            ),
        )),
        Some(end) if end < today => refusals.push(Refusal::new(
            reason::IMAGE_OUT_OF_SUPPORT,
            format!(
                "spec.image: support for ServerImage {name} ended on {end}; choose an image in support"
            ),
        )),
        Some(_) => {}
    }
}

/// A calendar date written `YYYY-MM-DD`, and nothing else (jiff alone would also take a date
/// with a time).
fn parse_date(text: &str) -> Option<Date> {
    let shaped = text.len() == 10
        && text.bytes().enumerate().all(|(i, b)| match i {
            4 | 7 => b == b'-',
            _ => b.is_ascii_digit(),
        });
    if !shaped {
        return None;
    }
    text.parse().ok()
}

fn check_secret(server: &VirtualServer, refusals: &mut Vec<Refusal>) {
    let Some(cloud_init) = &server.spec.cloud_init else {
        return;
    };
    let own = server.metadata.namespace.as_deref();
    if let Some(namespace) = cloud_init.secret_ref.namespace.as_deref()
        && Some(namespace) != own
    {
        refusals.push(Refusal::new(
            reason::FOREIGN_SECRET,
            format!(
                "spec.cloudInit.secretRef.namespace: {namespace} is not this server's namespace {}; tenants never read each other's Secrets — keep the Secret in {0} and omit the namespace",
                own.unwrap_or("(none)")
            ),
        ));
    }
}

/// What the spec asks for, as far as it parses (unparsable parts count as zero for the quota;
/// they are refused anyway).
struct Shape {
    cpu: Amount,
    memory: Amount,
    data_disks: Amount,
}

/// The spec-level checks the CRD makes, made again: the operator may see objects stored under
/// an older CRD, and a wrong value must be refused, not crash or mis-size anything.
fn check_shape(spec: &VirtualServerSpec, refusals: &mut Vec<Refusal>) -> Shape {
    let mut invalid = |message: String| refusals.push(Refusal::new(reason::INVALID_SPEC, message));
    if !CPU_RANGE.contains(&spec.cpu) {
        invalid(format!("spec.cpu: {} is outside 1–64", spec.cpu));
    }
    let memory = sized(
        "spec.memory",
        &spec.memory,
        MEMORY_MIN,
        MEMORY_MAX,
        &mut invalid,
    );
    if let Some(size) = &spec.disks.system_size {
        sized(
            "spec.disks.systemSize",
            size,
            DISK_MIN,
            DISK_MAX,
            &mut invalid,
        );
    }
    let data = &spec.disks.data;
    if data.len() > MAX_DATA_DISKS {
        invalid(format!(
            "spec.disks.data: {} disks, at most {MAX_DATA_DISKS} are allowed",
            data.len()
        ));
    }
    let mut names = BTreeSet::new();
    let mut data_disks = Amount::default();
    for (i, disk) in data.iter().enumerate() {
        if disk.name.is_empty() {
            invalid(format!("spec.disks.data[{i}].name: is empty"));
        } else if !names.insert(disk.name.as_str()) {
            invalid(format!(
                "spec.disks.data[{i}].name: {} is used by another data disk; names must be unique",
                disk.name
            ));
        }
        let field = format!("spec.disks.data[{i}].size");
        data_disks = data_disks.plus(sized(&field, &disk.size, DISK_MIN, DISK_MAX, &mut invalid));
    }
    if let Some(backup) = &spec.backup {
        if let Err(error) = schedule::parse_backup_schedule(&backup.schedule) {
            invalid(format!("spec.backup.schedule: {error}"));
        }
        if !RETENTION_RANGE.contains(&backup.retention) {
            invalid(format!(
                "spec.backup.retention: {} is outside 1–100",
                backup.retention
            ));
        }
    }
    if let Some(window) = &spec.maintenance_window
        && let Err(error) = schedule::check_window(window)
    {
        invalid(format!("spec.maintenanceWindow: {error}"));
    }
    if let Some(expose) = &spec.expose {
        for (i, port) in expose.ports.iter().enumerate() {
            if !(1..=65535).contains(&port.port) {
                invalid(format!(
                    "spec.expose.ports[{i}].port: {} is outside 1–65535",
                    port.port
                ));
            }
        }
    }
    let cpu = if CPU_RANGE.contains(&spec.cpu) {
        Amount::units(i64::from(spec.cpu))
    } else {
        Amount::default()
    };
    Shape {
        cpu,
        memory,
        data_disks,
    }
}

/// Parses a size and checks its bounds; zero (with a refusal) when it is not usable.
fn sized(
    field: &str,
    quantity: &Quantity,
    min: Amount,
    max: Amount,
    invalid: &mut impl FnMut(String),
) -> Amount {
    match Amount::parse(&quantity.0) {
        Err(error) => {
            invalid(format!("{field}: {}", describe_quantity_error(&error)));
            Amount::default()
        }
        Ok(amount) if amount < min || amount > max => {
            invalid(format!(
                "{field}: {} is outside {min}–{max}",
                truncate(quantity.0.clone(), 64)
            ));
            Amount::default()
        }
        Ok(amount) => amount,
    }
}

fn describe_quantity_error(error: &QuantityError) -> String {
    // The quantity is quoted by the error; keep a hostile one from flooding the message.
    truncate(error.to_string(), 160)
}

/// The municipality's ranges that are usable networks; a range the Municipality itself
/// refuses (garbage, host bits, the whole internet) admits nothing, as its NetworkPolicy does.
fn municipal_networks(municipality: &Municipality) -> Vec<IpNet> {
    municipality
        .spec
        .allowed_network_ranges
        .iter()
        .filter_map(|range| range.parse::<IpNet>().ok())
        .filter(|network| network.prefix_len() > 0 && network.trunc() == *network)
        .collect()
}

fn check_sources(
    spec: &VirtualServerSpec,
    municipality: &Municipality,
    refusals: &mut Vec<Refusal>,
) {
    let Some(expose) = &spec.expose else {
        return;
    };
    let networks = municipal_networks(municipality);
    let allowed = if networks.is_empty() {
        "the municipality has no usable allowedNetworkRanges".to_string()
    } else {
        let mut listed: Vec<String> = networks
            .iter()
            .take(MAX_LISTED)
            .map(ToString::to_string)
            .collect();
        if networks.len() > MAX_LISTED {
            listed.push(format!("and {} more", networks.len() - MAX_LISTED));
        }
        format!(
            "the municipality's allowedNetworkRanges are {}",
            listed.join(", ")
        )
    };
    let mut garbage = Vec::new();
    let mut outside = Vec::new();
    for (i, port) in expose.ports.iter().enumerate() {
        for (j, source) in port.allowed_sources.iter().enumerate() {
            let field = format!("spec.expose.ports[{i}].allowedSources[{j}]");
            let shown = truncate(source.clone(), 64);
            match source.parse::<IpNet>() {
                Err(_) => garbage.push(format!(
                    "{field}: {shown} is not a CIDR network; write it like 10.20.0.0/16 or 2001:db8::/48"
                )),
                Ok(network) if network.trunc() != network => garbage.push(format!(
                    "{field}: {shown} has host bits set; did you mean {}?",
                    network.trunc()
                )),
                Ok(network) if !networks.iter().any(|range| range.contains(&network)) => {
                    outside.push(format!("{field}: {network} lies outside the municipality's networks"));
                }
                Ok(_) => {}
            }
        }
    }
    push_bounded(refusals, reason::INVALID_SPEC, garbage, "");
    push_bounded(
        refusals,
        reason::SOURCE_OUTSIDE_NETWORK_RANGES,
        outside,
        &format!(" ({allowed})"),
    );
}

/// Pushes the first [`MAX_LISTED`] messages as refusals, the last one carrying `suffix` and a
/// count of the rest.
fn push_bounded(
    refusals: &mut Vec<Refusal>,
    reason: &'static str,
    messages: Vec<String>,
    suffix: &str,
) {
    let total = messages.len();
    let listed = total.min(MAX_LISTED);
    for (i, mut message) in messages.into_iter().take(listed).enumerate() {
        if i + 1 == listed {
            if total > listed {
                message.push_str(&format!(" (and {} more like it)", total - listed));
            }
            message.push_str(suffix);
        }
        refusals.push(Refusal::new(reason, message));
    }
}

/// What one server takes from the municipality's quota.
struct Usage {
    name: String,
    cpu: Amount,
    memory: Amount,
    storage: Amount,
    /// Whether `storage` includes the system disk.
    system_disk_known: bool,
}

/// Whether `sibling` is counted before `server` against the quota: it was admitted already
/// (it has a phase past `Pending`), or it is older (creation time, then name). Both servers
/// of a pair created at once agree on which one is older, so they are never both refused nor
/// both admitted beyond the quota. A server without a creation time counts as the newest.
fn counts_before(sibling: &VirtualServer, server: &VirtualServer) -> bool {
    let admitted = sibling
        .status
        .as_ref()
        .and_then(|status| status.phase)
        .is_some_and(|phase| phase != Phase::Pending);
    admitted || age_key(sibling) < age_key(server)
}

fn age_key(server: &VirtualServer) -> (Timestamp, &str) {
    let created = server
        .metadata
        .creation_timestamp
        .as_ref()
        .map_or(Timestamp::MAX, |time| time.0);
    (created, server.metadata.name.as_deref().unwrap_or(""))
}

fn is_same_server(a: &VirtualServer, b: &VirtualServer) -> bool {
    match (&a.metadata.uid, &b.metadata.uid) {
        (Some(x), Some(y)) => x == y,
        _ => a.metadata.name == b.metadata.name && a.metadata.namespace == b.metadata.namespace,
    }
}

fn sibling_usage(
    sibling: &VirtualServer,
    server: &VirtualServer,
    image: Option<&ServerImage>,
) -> Usage {
    let spec = &sibling.spec;
    let parse = |quantity: &Quantity| Amount::parse(&quantity.0).unwrap_or_default();
    // A sibling's system disk is its spec size, or — when it uses the same image as this
    // server — that image's minimum; otherwise its image is not at hand and it counts as zero.
    let system_disk = match &spec.disks.system_size {
        Some(size) => Some(parse(size)),
        None => image
            .filter(|_| spec.image == server.spec.image)
            .and_then(|image| Amount::parse(&image.spec.min_disk_size.0).ok()),
    };
    let data = spec
        .disks
        .data
        .iter()
        .fold(Amount::default(), |sum, disk| sum.plus(parse(&disk.size)));
    Usage {
        name: sibling.metadata.name.clone().unwrap_or_default(),
        cpu: Amount::units(i64::from(spec.cpu.max(0))),
        memory: parse(&spec.memory),
        storage: system_disk.unwrap_or_default().plus(data),
        system_disk_known: system_disk.is_some(),
    }
}

fn check_quota(
    input: &AdmissionInput,
    municipality: &Municipality,
    usage: &Usage,
    refusals: &mut Vec<Refusal>,
) {
    let quota = match plan_quota(municipality) {
        Ok(quota) => quota,
        Err(problems) => {
            refusals.push(Refusal::new(
                reason::QUOTA_EXCEEDED,
                format!(
                    "the municipality's quota cannot be read ({}); no server is admitted until the Municipality is fixed",
                    describe_problems(&problems)
                ),
            ));
            return;
        }
    };
    let server = input.server;
    let same_namespace =
        |sibling: &VirtualServer| sibling.metadata.namespace == server.metadata.namespace;
    let counted: Vec<Usage> = input
        .siblings
        .iter()
        .filter(|sibling| same_namespace(sibling) && !is_same_server(sibling, server))
        .filter(|sibling| counts_before(sibling, server))
        .map(|sibling| sibling_usage(sibling, server, input.image))
        .collect();
    let all: Vec<&Usage> = std::iter::once(usage).chain(&counted).collect();

    let servers = i64::try_from(all.len()).unwrap_or(i64::MAX);
    if servers > quota.max_virtual_servers {
        let names: Vec<&str> = all.iter().map(|u| u.name.as_str()).collect();
        refusals.push(Refusal::new(
            reason::QUOTA_EXCEEDED,
            format!(
                "servers: {servers} requested of {} allowed, {} over ({})",
                quota.max_virtual_servers,
                servers - quota.max_virtual_servers,
                list_names(&names)
            ),
        ));
    }
    let dimensions = [
        Dimension {
            name: "cpu",
            allowed: quota.cpu,
            of: |u| u.cpu,
            show: Amount::to_cpu_string,
        },
        Dimension {
            name: "memory",
            allowed: quota.memory,
            of: |u| u.memory,
            show: |a| a.to_string(),
        },
        Dimension {
            name: "storage",
            allowed: quota.storage,
            of: |u| u.storage,
            show: |a| a.to_string(),
        },
    ];
    for Dimension {
        name: dimension,
        allowed,
        of,
        show,
    } in dimensions
    {
        let total = all.iter().fold(Amount::default(), |sum, u| sum.plus(of(u)));
        if total <= allowed {
            continue;
        }
        // This server first, then the largest users: what an admin would shrink.
        let mut shares: Vec<(&str, Amount)> =
            counted.iter().map(|u| (u.name.as_str(), of(u))).collect();
        shares.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(b.0)));
        shares.insert(0, (usage.name.as_str(), of(usage)));
        let named: Vec<(&str, String)> = shares.iter().map(|(n, a)| (*n, show(*a))).collect();
        let mut message = format!(
            "{dimension}: {} requested of {} allowed, {} over (servers: {})",
            show(total),
            show(allowed),
            show(total.saturating_sub(allowed)),
            list_servers(&named)
        );
        if dimension == "storage" {
            let unknown: Vec<&str> = all
                .iter()
                .filter(|u| !u.system_disk_known)
                .map(|u| u.name.as_str())
                .collect();
            if !unknown.is_empty() {
                message.push_str(&format!(
                    "; the system disks of {} are not counted: their size depends on an image not at hand",
                    list_names(&unknown)
                ));
            }
        }
        refusals.push(Refusal::new(reason::QUOTA_EXCEEDED, message));
    }
}

/// One resource of the quota: its limit, what a server takes of it, how it is written.
struct Dimension {
    name: &'static str,
    allowed: Amount,
    of: fn(&Usage) -> Amount,
    show: fn(Amount) -> String,
}

/// `web 4Gi, db 64Gi, and 3 more`, at most [`MAX_LISTED`] named.
fn list_servers(shares: &[(&str, String)]) -> String {
    let mut parts: Vec<String> = shares
        .iter()
        .take(MAX_LISTED)
        .map(|(name, amount)| format!("{} {amount}", truncate((*name).to_string(), 63)))
        .collect();
    if shares.len() > MAX_LISTED {
        parts.push(format!("and {} more", shares.len() - MAX_LISTED));
    }
    parts.join(", ")
}

fn list_names(names: &[&str]) -> String {
    let mut parts: Vec<String> = names
        .iter()
        .take(MAX_LISTED)
        .map(|name| truncate((*name).to_string(), 63))
        .collect();
    if names.len() > MAX_LISTED {
        parts.push(format!("and {} more", names.len() - MAX_LISTED));
    }
    parts.join(", ")
}

#[cfg(test)]
mod tests;
