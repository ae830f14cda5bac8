//! The cloud-init NoCloud Secret: the platform's cloud-config, merged after the tenant's own
//! user data.

use super::*;

/// The cloud-init NoCloud Secret `<server>-cloud-init` (key `userdata`).
///
/// Without tenant user data it holds the platform's `#cloud-config` alone. With it, a MIME
/// multipart: the tenant's part first, exactly as given (cloud-init detects its type — cloud-
/// config, shell script, boothook, `#include`, or a MIME message of its own), and the
/// platform's cloud-config last with [`PLATFORM_MERGE_TYPE`], so the platform's keys win.
/// Scripts in the tenant's data still run as root in the tenant's own guest; what the
/// platform guarantees is its cloud-config, not what the tenant does with its server later.
pub fn cloud_init_secret(
    server: &VirtualServer,
    tenant_user_data: Option<&str>,
) -> Result<Secret, BuildError> {
    let name = server_name(server)?;
    let user_data = cloud_init_user_data(server, tenant_user_data)?;
    let secret_name = cloud_init_secret_name(name);
    check_length("Secret", &secret_name, DNS_SUBDOMAIN_MAX, "")?;
    Ok(Secret {
        metadata: child_meta(server, secret_name)?,
        type_: Some("Opaque".to_string()),
        // `data`, not `stringData`: it is what the API server stores and returns, so the
        // controller can compare the live Secret with this one byte for byte.
        data: Some(BTreeMap::from([(
            USER_DATA_KEY.to_string(),
            ByteString(user_data.into_bytes()),
        )])),
        ..Secret::default()
    })
}

/// The user data of [`cloud_init_secret`], as text.
pub fn cloud_init_user_data(
    server: &VirtualServer,
    tenant_user_data: Option<&str>,
) -> Result<String, BuildError> {
    let name = server_name(server)?;
    let keys = server
        .spec
        .ssh
        .as_ref()
        .map(|ssh| ssh.authorized_keys.as_slice())
        .unwrap_or_default();
    let platform = platform_cloud_config(name, keys)?;
    let Some(tenant) = tenant_user_data else {
        return Ok(platform);
    };
    if tenant.len() > MAX_TENANT_USER_DATA {
        return Err(BuildError::UserDataTooLarge {
            size: tenant.len(),
            limit: MAX_TENANT_USER_DATA,
        });
    }
    Ok(multipart(tenant, &platform))
}

/// The platform's own cloud-config, written line by line rather than by a YAML serialiser so
/// that every value has one obvious form: strings from the spec are JSON strings (valid YAML
/// double-quoted scalars, never folded or re-indented), and `ssh_pwauth: false` is the last
/// line, where a reviewer looks for it.
fn platform_cloud_config(hostname: &str, keys: &[String]) -> Result<String, BuildError> {
    let quote = |text: &str| {
        serde_json::to_string(text).map_err(|e| BuildError::CloudConfig(e.to_string()))
    };
    let mut config = String::from("#cloud-config\n");
    // The server's name (a DNS label, checked by the caller) is also the guest's hostname.
    config.push_str(&format!("hostname: {}\n", quote(hostname)?));
    // No root login over SSH (cloud-init puts a "log in as the default user" notice in root's
    // authorized_keys instead).
    config.push_str("disable_root: true\n");
    // Only the image's default user; with `dict(replace)` this also drops any users the
    // tenant's data would create (with passwords, say).
    config.push_str("users: [default]\n");
    // The default user's password is locked whatever the image's distro config says, so that
    // the account can only be reached with a key.
    config.push_str("system_info: {default_user: {lock_passwd: true}}\n");
    // Keys for the default user. Left out without keys, so that keys in the tenant's own
    // cloud-config still apply.
    if !keys.is_empty() {
        config.push_str("ssh_authorized_keys:\n");
        for key in keys {
            config.push_str(&format!("  - {}\n", quote(key)?));
        }
    }
    // Password login over SSH is always off (the CRD promises it).
    config.push_str("ssh_pwauth: false\n");
    Ok(config)
}

/// Whether cloud-init treats the data as a MIME message: its own test, `mime-version:` in the
/// first 4096 bytes.
fn is_mime(data: &str) -> bool {
    let head = data.as_bytes().get(..4096).unwrap_or(data.as_bytes());
    head.to_ascii_lowercase()
        .windows(b"mime-version:".len())
        .any(|window| window == b"mime-version:")
}

/// Tenant part first, platform part last.
fn multipart(tenant: &str, platform: &str) -> String {
    // A boundary that occurs in neither part (deterministic, so re-applying the Secret is a
    // no-op). Base64 bodies cannot contain `-`, so only verbatim bodies can collide.
    let mut boundary = "==novads-cloud-init==".to_string();
    let mut n = 0u32;
    while tenant.contains(&boundary) || platform.contains(&boundary) {
        n += 1;
        boundary = format!("==novads-cloud-init-{n}==");
    }
    let mut out =
        format!("Content-Type: multipart/mixed; boundary=\"{boundary}\"\nMIME-Version: 1.0\n\n");
    out.push_str(&format!("--{boundary}\n"));
    if is_mime(tenant) {
        // A MIME message of its own becomes a nested multipart: its headers are the part's
        // headers, and cloud-init walks into it.
        push_body(&mut out, tenant);
    } else {
        // `text/x-not-multipart` makes cloud-init detect the type from the content, exactly
        // as for user data that stands alone.
        push_text_part(
            &mut out,
            "text/x-not-multipart",
            &[(
                "Content-Disposition",
                "attachment; filename=\"tenant-user-data\"",
            )],
            tenant,
        );
    }
    out.push_str(&format!("--{boundary}\n"));
    push_text_part(
        &mut out,
        "text/cloud-config",
        &[
            ("Merge-Type", PLATFORM_MERGE_TYPE),
            (
                "Content-Disposition",
                "attachment; filename=\"novads-platform.cfg\"",
            ),
        ],
        platform,
    );
    out.push_str(&format!("--{boundary}--\n"));
    out
}

/// A text part: verbatim when ASCII; base64 otherwise, because cloud-init decodes an unencoded
/// part through Python's `get_payload(decode=True)`, which mangles non-ASCII characters.
fn push_text_part(out: &mut String, content_type: &str, headers: &[(&str, &str)], body: &str) {
    out.push_str(&format!(
        "Content-Type: {content_type}; charset=\"utf-8\"\n"
    ));
    for (name, value) in headers {
        out.push_str(&format!("{name}: {value}\n"));
    }
    if body.is_ascii() {
        out.push_str("Content-Transfer-Encoding: 7bit\n\n");
        push_body(out, body);
    } else {
        out.push_str("Content-Transfer-Encoding: base64\n\n");
        let encoded = base64(body.as_bytes());
        // 76-character lines (RFC 2045); base64 is ASCII, so byte slicing is safe.
        for line in encoded.as_bytes().chunks(76) {
            out.push_str(&String::from_utf8_lossy(line));
            out.push('\n');
        }
    }
}

fn push_body(out: &mut String, body: &str) {
    out.push_str(body);
    if !body.ends_with('\n') {
        out.push('\n');
    }
}

/// Standard base64 with padding (RFC 4648).
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let sextet = |n: u32, shift: u32| char::from(ALPHABET[((n >> shift) & 63) as usize]);
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = |i: usize| u32::from(chunk.get(i).copied().unwrap_or(0));
        let n = (b(0) << 16) | (b(1) << 8) | b(2);
        out.push(sextet(n, 18));
        out.push(sextet(n, 12));
        out.push(if chunk.len() > 1 { sextet(n, 6) } else { '=' });
        out.push(if chunk.len() > 2 { sextet(n, 0) } else { '=' });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc_4648_vectors() {
        for (input, expected) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(input.as_bytes()), expected, "{input:?}");
        }
    }

    #[test]
    fn mime_is_detected_like_cloud_init_does() {
        assert!(is_mime(
            "Content-Type: multipart/mixed\nMIME-Version: 1.0\n"
        ));
        assert!(is_mime("mime-version: 1.0\n"));
        assert!(!is_mime("#cloud-config\npackages: [nginx]\n"));
        let late = format!("{}\nMIME-Version: 1.0\n", "#".repeat(5000));
        assert!(!is_mime(&late));
    }
}
