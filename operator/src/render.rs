//! `novads render`: the exact objects the operator would apply for the given resources, from
//! the same pure functions the controller uses, printed as multi-document YAML.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::ResourceExt;
use novads_crds::{Municipality, ServerImage, VirtualServer};
use serde_json::Value;

use crate::municipality::build::{TenancySettings, describe_problems, plan_tenancy};
use crate::quantity::Amount;
use crate::virtual_server::build::{self, BuildError};

/// The uid a Municipality or VirtualServer read from a file gets when it has none (objects from
/// the API server always have one); the owner references in the output carry it.
pub const PLACEHOLDER_UID: &str = "00000000-0000-0000-0000-000000000000";

/// Why a document could not be rendered; `document` counts from 1 in input order.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    #[error("document {document}: not valid YAML: {message}")]
    Yaml { document: usize, message: String },
    #[error("document {document}: {message}")]
    Invalid { document: usize, message: String },
    #[error(
        "document {document}: kind {kind} is not a novads resource (expected Municipality, ServerImage or VirtualServer)"
    )]
    UnknownKind { document: usize, kind: String },
    #[error("document {document}: Municipality {name} is invalid: {problems}")]
    Spec {
        document: usize,
        name: String,
        problems: String,
    },
    #[error(
        "document {document}: VirtualServer {server} uses ServerImage {image}, which is not in the input; add it (kubectl get serverimage {image} -o yaml)"
    )]
    MissingImage {
        document: usize,
        server: String,
        image: String,
    },
    #[error("document {document}: VirtualServer {server} cannot be built: {error}")]
    Build {
        document: usize,
        server: String,
        error: BuildError,
    },
    #[error("cannot write the output as YAML: {0}")]
    Output(String),
}

/// A document of the input, parsed.
enum Input {
    Municipality(Box<Municipality>),
    ServerImage(Box<ServerImage>),
    VirtualServer(Box<VirtualServer>),
}

/// Renders with the default settings (no OIDC group prefix).
pub fn render(documents: &str) -> Result<String, RenderError> {
    render_with(documents, &TenancySettings::default())
}

/// Renders with explicit settings, as the operator would with the same options.
pub fn render_with(documents: &str, settings: &TenancySettings) -> Result<String, RenderError> {
    // Everything is parsed first, so that a VirtualServer finds its ServerImage wherever the
    // image stands in the input.
    let mut resources = Vec::new();
    for (index, text) in split_documents(documents).into_iter().enumerate() {
        let document = index + 1;
        if let Some(resource) = parse_document(text, document)? {
            resources.push((document, resource));
        }
    }
    let images: BTreeMap<String, (usize, &ServerImage)> = resources
        .iter()
        .filter_map(|(document, resource)| match resource {
            Input::ServerImage(image) => Some((image.name_any(), (*document, image.as_ref()))),
            _ => None,
        })
        .collect();

    let mut output = String::new();
    for (document, resource) in &resources {
        let document = *document;
        match resource {
            Input::Municipality(municipality) => {
                let mut municipality = municipality.as_ref().clone();
                let name = municipality.name_any();
                if municipality.metadata.uid.is_none() {
                    municipality.metadata.uid = Some(PLACEHOLDER_UID.to_string());
                }
                let tenancy = plan_tenancy(&municipality, settings).map_err(|problems| {
                    RenderError::Spec {
                        document,
                        name: name.clone(),
                        problems: describe_problems(&problems),
                    }
                })?;
                let objects = tenancy
                    .to_values()
                    .map_err(|e| RenderError::Output(e.to_string()))?;
                output.push_str(&format!(
                    "# Municipality {name} (document {document}): {} objects, {} of them in \
                     namespace {}\n",
                    objects.len(),
                    objects
                        .iter()
                        .filter(|o| o["metadata"]["namespace"] == municipality.namespace_name())
                        .count(),
                    municipality.namespace_name()
                ));
                push_objects(&mut output, &objects)?;
            }
            Input::ServerImage(image) => {
                output.push_str(&format!(
                    "# ServerImage {} (document {document}): a catalogue entry; the operator creates nothing for it\n",
                    image.name_any()
                ));
            }
            Input::VirtualServer(server) => {
                render_virtual_server(&mut output, server, document, &images)?;
            }
        }
    }
    Ok(output)
}

/// Parses one document; `None` for an empty one (e.g. after a trailing `---`).
fn parse_document(text: &str, document: usize) -> Result<Option<Input>, RenderError> {
    let value: Value = serde_saphyr::from_str(text).map_err(|error| RenderError::Yaml {
        document,
        message: first_line(&error.to_string()),
    })?;
    if value.is_null() {
        return Ok(None);
    }
    let invalid = |message: String| RenderError::Invalid { document, message };
    let api_version = value
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let kind = value
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    if kind.is_empty() {
        return Err(invalid("has no kind".into()));
    }
    if matches!(
        kind.as_str(),
        "Municipality" | "ServerImage" | "VirtualServer"
    ) && api_version != "novads.io/v1alpha1"
    {
        return Err(invalid(format!(
            "{kind} must have apiVersion novads.io/v1alpha1, not `{api_version}`"
        )));
    }
    Ok(Some(match kind.as_str() {
        "Municipality" => Input::Municipality(Box::new(typed(value, document)?)),
        "ServerImage" => Input::ServerImage(Box::new(typed(value, document)?)),
        "VirtualServer" => Input::VirtualServer(Box::new(typed(value, document)?)),
        _ => return Err(RenderError::UnknownKind { document, kind }),
    }))
}

/// The objects the VirtualServer controller applies for a server: the cloud-init Secret, the
/// VirtualMachine, and the Service and NetworkPolicy when ports are exposed. Snapshots are
/// taken on schedule and are not shown.
fn render_virtual_server(
    output: &mut String,
    server: &VirtualServer,
    document: usize,
    images: &BTreeMap<String, (usize, &ServerImage)>,
) -> Result<(), RenderError> {
    let mut server = server.clone();
    let name = format!(
        "{}/{}",
        server.namespace().unwrap_or_default(),
        server.name_any()
    );
    if server.metadata.uid.is_none() {
        server.metadata.uid = Some(PLACEHOLDER_UID.to_string());
    }
    let Some((image_document, image)) = images.get(&server.spec.image) else {
        return Err(RenderError::MissingImage {
            document,
            server: name,
            image: server.spec.image.clone(),
        });
    };
    let failed = |error: BuildError| RenderError::Build {
        document,
        server: name.clone(),
        error,
    };
    let output_error = |e: serde_json::Error| RenderError::Output(e.to_string());
    // The tenant's own user data lives in a Secret in the cluster, which render cannot read.
    let secret = build::cloud_init_secret(&server, None).map_err(failed)?;
    let vm = build::virtual_machine(&server, image, &system_disk_size(&server, image))
        .map_err(failed)?;
    let mut objects = vec![
        serde_json::to_value(&secret).map_err(output_error)?,
        serde_json::to_value(&vm).map_err(output_error)?,
    ];
    if let Some(service) = build::service(&server).map_err(failed)? {
        objects.push(serde_json::to_value(&service).map_err(output_error)?);
    }
    if let Some(policy) = build::network_policy(&server).map_err(failed)? {
        objects.push(serde_json::to_value(&policy).map_err(output_error)?);
    }
    output.push_str(&format!(
        "# VirtualServer {name} (document {document}): {} objects, installed from ServerImage {} (document {image_document})\n",
        objects.len(),
        server.spec.image
    ));
    if let Some(cloud_init) = &server.spec.cloud_init {
        output.push_str(&format!(
            "# the cloud-init Secret holds the platform's settings only: the operator adds the user data of Secret {} from the cluster\n",
            cloud_init.secret_ref.name
        ));
    }
    if server.spec.backup.is_some() {
        output.push_str("# snapshots are taken on the backup schedule and are not shown\n");
    }
    push_objects(output, &objects)
}

/// The system disk's size: `spec.disks.systemSize`, but never less than the image's
/// `minDiskSize` (which is also the default). An unparsable size is passed on as it is; the
/// CRD's validation keeps those out of the cluster.
fn system_disk_size(server: &VirtualServer, image: &ServerImage) -> Quantity {
    let minimum = &image.spec.min_disk_size;
    match &server.spec.disks.system_size {
        None => minimum.clone(),
        Some(requested) => match (Amount::parse(&requested.0), Amount::parse(&minimum.0)) {
            (Ok(size), Ok(min)) if size < min => minimum.clone(),
            _ => requested.clone(),
        },
    }
}

fn push_objects(output: &mut String, objects: &[Value]) -> Result<(), RenderError> {
    for object in objects {
        output.push_str("---\n");
        output.push_str(&to_yaml(object)?);
    }
    Ok(())
}

fn typed<T: serde::de::DeserializeOwned>(value: Value, document: usize) -> Result<T, RenderError> {
    serde_path_to_error::deserialize(value).map_err(|error| RenderError::Invalid {
        document,
        message: format!("{}: {}", error.path(), error.inner()),
    })
}

fn to_yaml(value: &Value) -> Result<String, RenderError> {
    serde_saphyr::to_string(value).map_err(|e| RenderError::Output(e.to_string()))
}

fn first_line(message: &str) -> String {
    message.lines().next().unwrap_or_default().to_string()
}

/// Splits a YAML stream at `---` document markers, so each error can name its document.
/// Shared with the security monitor's object reader (`compliance/objects.rs`).
pub(crate) fn split_documents(stream: &str) -> Vec<&str> {
    let mut documents = Vec::new();
    let mut start = 0;
    let mut offset = 0;
    for line in stream.split_inclusive('\n') {
        let marker = line.trim_end();
        if marker == "---" || marker.starts_with("--- ") {
            if offset > start || !documents.is_empty() {
                documents.push(&stream[start..offset]);
            }
            start = offset + line.len();
        }
        offset += line.len();
    }
    documents.push(&stream[start..]);
    documents
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_at_document_markers_only() {
        let stream = "---\na: 1\n---\nb: |\n  ---x\n---\n";
        assert_eq!(
            split_documents(stream),
            vec!["a: 1\n", "b: |\n  ---x\n", ""]
        );
        assert_eq!(split_documents("a: 1\n"), vec!["a: 1\n"]);
    }

    #[test]
    fn errors_name_the_document() {
        let error = render("---\nkind: ConfigMap\napiVersion: v1\n").map(|_| ());
        assert!(
            matches!(error, Err(RenderError::UnknownKind { document: 1, .. })),
            "{error:?}"
        );
        let error = render(
            "apiVersion: novads.io/v1alpha1\nkind: VirtualServer\nmetadata: {name: a}\nspec: {image: i, cpu: 1, memory: 1Gi}\n---\nkey: [unclosed\n",
        );
        assert!(
            matches!(error, Err(RenderError::Yaml { document: 2, .. })),
            "{error:?}"
        );
        let error = render(
            "apiVersion: novads.io/v1alpha1\nkind: VirtualServer\nmetadata: {name: a}\nspec: {cpu: 1}\n",
        );
        assert!(
            matches!(error, Err(RenderError::Invalid { document: 1, .. })),
            "{error:?}"
        );
        let error = render(
            "apiVersion: novads.io/v1alpha1\nkind: Municipality\nmetadata: {name: x}\nspec: {code: x}\n",
        );
        let message = error.map(|_| ()).unwrap_err().to_string();
        assert!(message.starts_with("document 1: spec"), "{message}");
    }

    const IMAGE: &str = "apiVersion: novads.io/v1alpha1\nkind: ServerImage\nmetadata: {name: debian-12}\nspec: {source: {http: 'https://example.lv/debian-12.qcow2'}, osFamily: Linux, version: '12', supportEnd: '2028-06-30', lastPatched: '2026-11-01', minDiskSize: 20Gi}\n";
    const SERVER: &str = "apiVersion: novads.io/v1alpha1\nkind: VirtualServer\nmetadata: {name: web, namespace: muni-talsi}\nspec: {image: debian-12, cpu: 2, memory: 4Gi, disks: {systemSize: 10Gi}, expose: {ports: [{port: 22, allowedSources: [10.20.0.0/16]}]}}\n";

    #[test]
    fn virtual_servers_are_rendered_with_their_image_from_the_input() {
        // The image may come after the server.
        let output = render(&format!("{SERVER}---\n{IMAGE}")).expect("render");
        assert!(output.starts_with(
            "# VirtualServer muni-talsi/web (document 1): 4 objects, installed from ServerImage debian-12 (document 2)\n"
        ), "{output}");
        let objects: Vec<Value> = serde_saphyr::from_multiple(&output).expect("YAML");
        let kinds: Vec<&str> = objects
            .iter()
            .filter_map(|o| o.get("kind").and_then(Value::as_str))
            .collect();
        assert_eq!(
            kinds,
            ["Secret", "VirtualMachine", "Service", "NetworkPolicy"]
        );
        let vm = &objects[1];
        assert_eq!(vm["metadata"]["ownerReferences"][0]["uid"], PLACEHOLDER_UID);
        // systemSize below the image's minimum gives way to it.
        assert_eq!(
            vm["spec"]["dataVolumeTemplates"][0]["spec"]["storage"]["resources"]["requests"]["storage"],
            "20Gi"
        );
    }

    #[test]
    fn a_virtual_server_without_its_image_or_with_bad_input_is_refused() {
        let error = render(SERVER).map(|_| ()).unwrap_err();
        assert!(
            matches!(&error, RenderError::MissingImage { document: 1, image, .. } if image == "debian-12"),
            "{error:?}"
        );
        assert_eq!(
            error.to_string(),
            "document 1: VirtualServer muni-talsi/web uses ServerImage debian-12, which is not in the input; add it (kubectl get serverimage debian-12 -o yaml)"
        );
        let outside = SERVER.replace("muni-talsi", "default");
        let error = render(&format!("{IMAGE}---\n{outside}"))
            .map(|_| ())
            .unwrap_err();
        assert!(
            matches!(
                &error,
                RenderError::Build {
                    document: 2,
                    error: BuildError::NotInMunicipalityNamespace { .. },
                    ..
                }
            ),
            "{error:?}"
        );
        let garbage = SERVER.replace("10.20.0.0/16", "10.20.0.0/99");
        let message = render(&format!("{IMAGE}---\n{garbage}"))
            .map(|_| ())
            .unwrap_err()
            .to_string();
        assert!(
            message.starts_with("document 2: VirtualServer muni-talsi/web cannot be built: spec.expose.ports[0].allowedSources[0]: \"10.20.0.0/99\" is not a CIDR"),
            "{message}"
        );
    }
}
