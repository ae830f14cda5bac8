//! Observing: everything a reconcile reads from the API before it decides.

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
    let name = server.name_any();
    if let Some(caches) = &ctx.caches {
        caches.ready().await?;
    }
    let municipality = find_municipality(ctx, &ns).await?;
    let image = match &ctx.caches {
        Some(caches) => caches.image(&server.spec.image),
        None => {
            Api::<ServerImage>::all(ctx.client.clone())
                .get_opt(&server.spec.image)
                .await?
        }
    };
    let siblings = match &ctx.caches {
        Some(caches) => caches.servers_in(&ns)?,
        None => servers(ctx, &ns).list(&ListParams::default()).await?.items,
    };
    let vm = Api::<VirtualMachine>::namespaced(ctx.client.clone(), &ns)
        .get_opt(&name)
        .await?;
    // Without a VM there is neither an instance nor a snapshot of this server to read.
    let (vmi, snapshots) = if vm.is_some() {
        let vmi = Api::<VirtualMachineInstance>::namespaced(ctx.client.clone(), &ns)
            .get_opt(&name)
            .await?;
        (vmi, list_snapshots(ctx, &ns, &name).await?)
    } else {
        (None, Vec::new())
    };
    let service = Api::<Service>::namespaced(ctx.client.clone(), &ns)
        .get_opt(&service_name(server))
        .await?;
    let user_data = tenant_user_data(server, ctx, &ns).await?;
    let restore = observe_restore(server, ctx, &ns).await?;
    Ok(Observations {
        municipality,
        image,
        siblings,
        vm,
        vmi,
        snapshots,
        service,
        user_data,
        restore,
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
/// the tenancy controller sets it), if it still exists with that uid.
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
    let api_version = Municipality::api_version(&());
    let kind = Municipality::kind(&());
    let Some(owner) = namespace
        .metadata
        .owner_references
        .iter()
        .flatten()
        .find(|o| o.api_version == api_version && o.kind == kind)
    else {
        return Ok(None);
    };
    let municipality = match &ctx.caches {
        Some(caches) => caches.municipality(&owner.name),
        None => {
            Api::<Municipality>::all(ctx.client.clone())
                .get_opt(&owner.name)
                .await?
        }
    };
    // A re-created Municipality of the same name does not own the old namespace.
    Ok(municipality.filter(|m| m.metadata.uid.as_deref() == Some(owner.uid.as_str())))
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
