//! `novads render`: the exact objects the operator would apply for the given resources, from
//! the same pure functions the controller uses, printed as multi-document YAML.

use kube::ResourceExt;
use novads_crds::{Municipality, ServerImage, VirtualServer};
use serde_json::Value;

use crate::tenancy::{self, TenancySettings};

/// The uid a Municipality read from a file gets when it has none (objects from the API server
/// always have one); the owner references in the output carry it.
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
    #[error("cannot write the output as YAML: {0}")]
    Output(String),
}

/// Renders with the default settings (no OIDC group prefix, ingress namespace `novads-ingress`).
pub fn render(documents: &str) -> Result<String, RenderError> {
    render_with(documents, &TenancySettings::default())
}

/// Renders with explicit settings, as the operator would with the same options.
pub fn render_with(documents: &str, settings: &TenancySettings) -> Result<String, RenderError> {
    let mut output = String::new();
    for (index, text) in split_documents(documents).into_iter().enumerate() {
        let document = index + 1;
        let value: Value = serde_saphyr::from_str(text).map_err(|error| RenderError::Yaml {
            document,
            message: first_line(&error.to_string()),
        })?;
        if value.is_null() {
            continue; // an empty document, e.g. a trailing `---`
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
        match kind.as_str() {
            "Municipality" => {
                let mut municipality: Municipality = typed(value, document)?;
                let name = municipality.name_any();
                if municipality.metadata.uid.is_none() {
                    municipality.metadata.uid = Some(PLACEHOLDER_UID.to_string());
                }
                let tenancy =
                    tenancy::plan_tenancy(&municipality, settings).map_err(|problems| {
                        RenderError::Spec {
                            document,
                            name: name.clone(),
                            problems: tenancy::describe_problems(&problems),
                        }
                    })?;
                let objects = tenancy
                    .to_values()
                    .map_err(|e| RenderError::Output(e.to_string()))?;
                output.push_str(&format!(
                    "# Municipality {name} (document {document}): {} objects in namespace {}\n",
                    objects.len(),
                    municipality.namespace_name()
                ));
                for object in objects {
                    output.push_str("---\n");
                    output.push_str(&to_yaml(&object)?);
                }
            }
            "ServerImage" => {
                let image: ServerImage = typed(value, document)?;
                output.push_str(&format!(
                    "# ServerImage {} (document {document}): a catalogue entry; the operator creates nothing for it\n",
                    image.name_any()
                ));
            }
            "VirtualServer" => {
                let server: VirtualServer = typed(value, document)?;
                output.push_str(&format!(
                    "# VirtualServer {}/{} (document {document}): not rendered yet; the VirtualServer controller is not implemented\n",
                    server.namespace().unwrap_or_default(),
                    server.name_any()
                ));
            }
            _ => return Err(RenderError::UnknownKind { document, kind }),
        }
    }
    Ok(output)
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
fn split_documents(stream: &str) -> Vec<&str> {
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

    #[test]
    fn virtual_servers_are_not_rendered_yet() {
        let output = render(
            "apiVersion: novads.io/v1alpha1\nkind: VirtualServer\nmetadata: {name: web, namespace: muni-talsi}\nspec: {image: debian-12, cpu: 2, memory: 4Gi}\n",
        );
        assert!(output.is_ok_and(|text| text.contains("not rendered yet")));
    }
}
