//! Observing: everything a reconcile reads before it decides — from the controller's caches
//! when it has them (a converged server then costs no API request), else from the API.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};

use super::*;

/// Everything a reconcile reads before it decides.
#[derive(Clone, Debug, Default)]
pub struct Observations {
    /// The Municipality owning the server's namespace.
    pub municipality: Option<Municipality>,
    /// The ServerImage of `spec.image`.
    pub image: Option<ServerImage>,
    /// Every VirtualServer of the namespace (the server itself included).
    pub siblings: Vec<VirtualServer>,
    pub vm: Option<VirtualMachine>,
    pub vmi: Option<VirtualMachineInstance>,
    /// The operator's scheduled snapshots of the server, in any state.
    pub snapshots: Vec<VirtualMachineSnapshot>,
    /// The Service of exposed ports, when it exists.
    pub service: Option<Service>,
    /// The NetworkPolicy of exposed ports, when it exists (read from the caches only: without
    /// them every reconcile applies it).
    pub network_policy: Option<NetworkPolicy>,
    /// The tenant's cloud-init user data.
    pub user_data: UserData,
    /// What a restore in progress or asked for needs; empty without one.
    pub restore: RestoreObservations,
}

/// What the restore step is decided from (read only while a restore is active).
#[derive(Clone, Debug, Default)]
pub struct RestoreObservations {
    /// The restore worked on.
    pub active: Option<ActiveRestore>,
    /// The backup it names.
    pub backup: Option<VirtualMachineSnapshot>,
    /// Its VirtualMachineRestore.
    pub ours: Option<VirtualMachineRestore>,
    /// Every VirtualMachineRestore of the namespace (another one may be restoring the VM).
    pub restores: Vec<VirtualMachineRestore>,
}

/// The tenant's extra cloud-init user data (`spec.cloudInit.secretRef`).
#[derive(Clone, Debug, Default, PartialEq)]
pub enum UserData {
    /// None asked for (or asked for from another namespace, which admission refuses).
    #[default]
    None,
    /// Read from the tenant's Secret.
    Found(String),
    /// Asked for, but the Secret or its key is missing, or it is not text.
    Unusable(Refusal),
}

/// Reads what admission, the builders and the status need. Missing objects are `None`, not
/// errors: admission and the status say what is missing.
pub(super) async fn observe(server: &VirtualServer, ctx: &Context) -> Result<Observations, Error> {
    let ns = namespace(server)?;
    let seen = match &ctx.caches {
        Some(caches) => observe_cached(server, caches, &ns).await?,
        None => observe_api(server, ctx, &ns).await?,
    };
    // Neither is cached: the tenant's Secret is never listed (the operator may not list
    // Secrets), and a restore is short-lived and read only while it runs.
    Ok(Observations {
        user_data: tenant_user_data(server, ctx, &ns).await?,
        restore: observe_restore(server, ctx, &ns).await?,
        ..seen
    })
}

/// The observations from the controller's stores: no API request.
async fn observe_cached(
    server: &VirtualServer,
    caches: &Caches,
    ns: &str,
) -> Result<Observations, Error> {
    caches.ready().await?;
    let name = server.name_any();
    let municipality = caches
        .namespace(ns)
        .and_then(|namespace| owning_municipality(&namespace.metadata))
        .and_then(|owner| {
            let found = caches.municipality(&owner.name);
            owned_by(found, &owner)
        });
    Ok(Observations {
        municipality,
        image: caches.image(&server.spec.image),
        siblings: caches.servers_in(ns)?,
        vm: caches.vms.get(ns, &name),
        vmi: caches.vmis.get(ns, &name),
        snapshots: caches.snapshots_of(ns, &name),
        service: caches.services.get(ns, &service_name(server)),
        network_policy: caches
            .network_policies
            .get(ns, &network_policy_name(server)),
        ..Observations::default()
    })
}

/// The observations read from the API, one request per object (without caches).
async fn observe_api(
    server: &VirtualServer,
    ctx: &Context,
    ns: &str,
) -> Result<Observations, Error> {
    let name = server.name_any();
    let municipality = find_municipality(ctx, ns).await?;
    let image = Api::<ServerImage>::all(ctx.client.clone())
        .get_opt(&server.spec.image)
        .await?;
    let siblings = servers(ctx, ns).list(&ListParams::default()).await?.items;
    let vm = Api::<VirtualMachine>::namespaced(ctx.client.clone(), ns)
        .get_opt(&name)
        .await?;
    // Without a VM there is neither an instance nor a snapshot of this server to read.
    let (vmi, snapshots) = if vm.is_some() {
        let vmi = Api::<VirtualMachineInstance>::namespaced(ctx.client.clone(), ns)
            .get_opt(&name)
            .await?;
        (vmi, list_snapshots(ctx, ns, &name).await?)
    } else {
        (None, Vec::new())
    };
    let service = Api::<Service>::namespaced(ctx.client.clone(), ns)
        .get_opt(&service_name(server))
        .await?;
    Ok(Observations {
        municipality,
        image,
        siblings,
        vm,
        vmi,
        snapshots,
        service,
        ..Observations::default()
    })
}

/// The backup, KubeVirt's restore of it and the namespace's other restores — only while a
/// restore is active, so a converged server makes none of these reads.
async fn observe_restore(
    server: &VirtualServer,
    ctx: &Context,
    ns: &str,
) -> Result<RestoreObservations, Error> {
    let Some(active) = restoring::active_restore(server) else {
        return Ok(RestoreObservations::default());
    };
    let backup = Api::<VirtualMachineSnapshot>::namespaced(ctx.client.clone(), ns)
        .get_opt(&active.request.backup)
        .await?;
    let restores = Api::<VirtualMachineRestore>::namespaced(ctx.client.clone(), ns);
    let ours = restores.get_opt(&active.name).await?;
    let restores = if ours.is_none() && !active.started {
        restores.list(&ListParams::default()).await?.items
    } else {
        Vec::new()
    };
    Ok(RestoreObservations {
        active: Some(active),
        backup,
        ours,
        restores,
    })
}

/// The Municipality that owns the server's namespace (the namespace's owner reference, as
/// the tenancy controller sets it), if it still exists with that uid. Read from the API
/// (without caches).
pub(super) async fn find_municipality(
    ctx: &Context,
    ns: &str,
) -> Result<Option<Municipality>, Error> {
    let Some(namespace) = Api::<Namespace>::all(ctx.client.clone())
        .get_opt(ns)
        .await?
    else {
        return Ok(None);
    };
    let Some(owner) = owning_municipality(&namespace.metadata) else {
        return Ok(None);
    };
    let municipality = Api::<Municipality>::all(ctx.client.clone())
        .get_opt(&owner.name)
        .await?;
    Ok(owned_by(municipality, &owner))
}

/// The namespace's owner reference to a Municipality.
fn owning_municipality(namespace: &ObjectMeta) -> Option<OwnerReference> {
    let api_version = Municipality::api_version(&());
    let kind = Municipality::kind(&());
    namespace
        .owner_references
        .iter()
        .flatten()
        .find(|o| o.api_version == api_version && o.kind == kind)
        .cloned()
}

/// `municipality` if it is the owner named: a re-created Municipality of the same name does
/// not own the old namespace.
fn owned_by(municipality: Option<Municipality>, owner: &OwnerReference) -> Option<Municipality> {
    municipality.filter(|m| m.metadata.uid.as_deref() == Some(owner.uid.as_str()))
}

/// The label selector of a server's scheduled snapshots. Only the operator's own: a snapshot
/// an admin took by hand is never pruned nor deleted with the server.
pub fn snapshot_selector(server_name: &str) -> String {
    format!("{SERVER_LABEL}={server_name},{BACKUP_LABEL}={BACKUP_SCHEDULED}")
}

pub(super) async fn list_snapshots(
    ctx: &Context,
    ns: &str,
    name: &str,
) -> Result<Vec<VirtualMachineSnapshot>, Error> {
    let params = ListParams::default().labels(&snapshot_selector(name));
    Ok(
        Api::<VirtualMachineSnapshot>::namespaced(ctx.client.clone(), ns)
            .list(&params)
            .await?
            .items,
    )
}

/// The tenant's extra cloud-init user data. A Secret in another namespace is never read:
/// tenants must not reach each other's Secrets through the operator (admission refuses such
/// a reference as `ForeignSecret`).
pub(super) async fn tenant_user_data(
    server: &VirtualServer,
    ctx: &Context,
    ns: &str,
) -> Result<UserData, Error> {
    let Some(cloud_init) = &server.spec.cloud_init else {
        return Ok(UserData::None);
    };
    let reference = &cloud_init.secret_ref;
    if reference
        .namespace
        .as_deref()
        .is_some_and(|other| other != ns)
    {
        return Ok(UserData::None);
    }
    let secret = Api::<Secret>::namespaced(ctx.client.clone(), ns)
        .get_opt(&reference.name)
        .await?;
    let user_data = secret
        .as_ref()
        .and_then(|s| s.data.as_ref())
        .and_then(|d| d.get(USER_DATA_KEY));
    Ok(match (user_data, &secret) {
        (Some(bytes), _) => match String::from_utf8(bytes.0.clone()) {
            Ok(text) => UserData::Found(text),
            // Mangling it into text would hand the guest something else than was written.
            Err(_) => UserData::Unusable(Refusal {
                reason: admission::reason::INVALID_SPEC,
                message: format!(
                    "spec.cloudInit.secretRef: the `{USER_DATA_KEY}` key of Secret {ns}/{} is \
                     not UTF-8 text (compressed user data is not supported)",
                    reference.name
                ),
            }),
        },
        (None, secret) => UserData::Unusable(Refusal {
            reason: CLOUD_INIT_SECRET_MISSING,
            message: match secret {
                None => format!(
                    "spec.cloudInit.secretRef: Secret {ns}/{} does not exist",
                    reference.name
                ),
                Some(_) => format!(
                    "spec.cloudInit.secretRef: Secret {ns}/{} has no `{USER_DATA_KEY}` key",
                    reference.name
                ),
            },
        }),
    })
}
