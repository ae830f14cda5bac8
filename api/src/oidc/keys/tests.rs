use super::jwk::{PublicKey, Signer};
use super::kek::{SEALED_VERSION, encode_hex};
use super::snapshot::Published;
use super::verify::same_media_type;
use super::*;

fn kek(byte: u8) -> KeyEncryptionKey {
    KeyEncryptionKey::from_bytes([byte; 32])
}

#[test]
fn kek_accepts_raw_hex_and_base64() {
    let raw: [u8; 32] = std::array::from_fn(|i| i as u8 * 7);
    let id = KeyEncryptionKey::from_bytes(raw).id();
    let hex = encode_hex(&raw);
    let b64 = base64::engine::general_purpose::STANDARD.encode(raw);
    let b64url = URL_SAFE_NO_PAD.encode(raw);
    for input in [
        raw.to_vec(),
        hex.clone().into_bytes(),
        format!("  {}\n", hex.to_uppercase()).into_bytes(),
        format!("{b64}\n").into_bytes(),
        b64.trim_end_matches('=').as_bytes().to_vec(),
        b64url.into_bytes(),
    ] {
        let parsed = KeyEncryptionKey::parse(&input, "test").expect("parses");
        assert_eq!(parsed.id(), id, "{:?}", String::from_utf8_lossy(&input));
    }
}

#[test]
fn kek_refuses_wrong_lengths_with_a_clear_message() {
    for input in [
        &b""[..],
        b"short",
        &[0u8; 31],
        &[0u8; 33],
        b"0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdeg",
        // base64 of 16 bytes
        b"AAAAAAAAAAAAAAAAAAAAAA==",
    ] {
        let err = KeyEncryptionKey::parse(input, "file /etc/kek").expect_err("refused");
        let text = err.to_string();
        assert!(text.contains("file /etc/kek"), "{text}");
        assert!(text.contains("32 raw bytes"), "{text}");
    }
}

#[test]
fn kek_debug_does_not_show_the_key() {
    let key = kek(0xAB);
    let shown = format!("{key:?}");
    assert_eq!(
        shown,
        format!("KeyEncryptionKey {{ id: {:?}, .. }}", key.id())
    );
}

#[test]
fn kek_file_is_created_private_and_reused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("kek");
    let first = KeyEncryptionKey::load_or_create_file(&path).expect("created");
    let second = KeyEncryptionKey::load_or_create_file(&path).expect("reused");
    assert_eq!(first.id(), second.id());
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&path).expect("meta").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let leftovers: Vec<_> = std::fs::read_dir(dir.path()).expect("dir").collect();
    assert_eq!(leftovers.len(), 1, "temporary file left behind");
}

#[test]
fn sealing_binds_the_kid_and_the_key() {
    let sealed = kek(1).seal("kid-a", b"secret pkcs8").expect("sealed");
    assert_eq!(sealed[0], SEALED_VERSION);
    assert!(!sealed.windows(6).any(|w| w == b"secret"));
    assert_eq!(
        &kek(1).open("kid-a", &sealed).expect("opens")[..],
        b"secret pkcs8"
    );
    assert!(matches!(
        kek(2).open("kid-a", &sealed),
        Err(KeyError::Decrypt { .. })
    ));
    assert!(matches!(
        kek(1).open("kid-b", &sealed),
        Err(KeyError::Decrypt { .. })
    ));
    let mut tampered = sealed.clone();
    *tampered.last_mut().expect("non-empty") ^= 1;
    assert!(matches!(
        kek(1).open("kid-a", &tampered),
        Err(KeyError::Decrypt { .. })
    ));
    assert!(matches!(
        kek(1).open("kid-a", &sealed[..10]),
        Err(KeyError::CorruptKey { .. })
    ));
}

#[test]
fn thumbprint_matches_rfc_7638_example() {
    let n = "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSo\
             c_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGj\
             QR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-\
             bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw";
    let key = PublicKey::Rsa {
        n: URL_SAFE_NO_PAD.decode(n).expect("n"),
        e: URL_SAFE_NO_PAD.decode("AQAB").expect("e"),
    };
    assert_eq!(
        key.thumbprint(),
        "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"
    );
}

#[test]
fn jwk_round_trips_and_verifies() {
    for algorithm in SigningAlgorithm::ALL {
        let signer = Signer::generate(algorithm).expect("key");
        let public = signer.public_key().expect("public");
        let jwk = public.to_jwk("k");
        assert_eq!(PublicKey::from_jwk(&jwk).as_ref(), Some(&public));
        let signature = signer.sign(b"message").expect("signed");
        assert!(public.verify(b"message", &signature));
        assert!(!public.verify(b"messagE", &signature));
        let pkcs8 = signer.pkcs8().expect("pkcs8");
        let again = Signer::from_pkcs8(algorithm, &pkcs8).expect("parses");
        assert_eq!(again.public_key(), Some(public));
    }
}

fn snapshot_with(algorithm: SigningAlgorithm) -> (Snapshot, String) {
    let signer = Signer::generate(algorithm).expect("key");
    let public = signer.public_key().expect("public");
    let kid = public.thumbprint();
    let mut snapshot = Snapshot::default();
    snapshot.keys.push(Published {
        kid: kid.clone(),
        state: KeyState::Active,
        not_after: None,
        public,
    });
    snapshot.signers.insert(algorithm, (kid.clone(), signer));
    (snapshot, kid)
}

#[test]
fn time_claims_are_checked_with_leeway() {
    let (snapshot, _) = snapshot_with(SigningAlgorithm::Es256);
    let keys = SigningKeys {
        snapshot: Arc::new(RwLock::new(Arc::new(snapshot))),
    };
    let now = Utc::now();
    let t = now.timestamp();
    let expected = Expectations::new("https://iss");
    let check = |claims: Value| {
        let token = keys.sign(SigningAlgorithm::Es256, &claims).expect("signed");
        verify_at(&keys.current(), &token, &expected, now)
    };
    assert!(check(json!({"iss": "https://iss", "exp": t + 60})).is_ok());
    assert!(
        check(json!({"iss": "https://iss", "exp": t - 10})).is_ok(),
        "within leeway"
    );
    assert_eq!(
        check(json!({"iss": "https://iss", "exp": t - 31})),
        Err(TokenError::Expired)
    );
    assert_eq!(
        check(json!({"iss": "https://iss"})),
        Err(TokenError::MissingClaim("exp"))
    );
    assert_eq!(
        check(json!({"iss": "https://iss", "exp": "soon"})),
        Err(TokenError::MissingClaim("exp"))
    );
    assert_eq!(
        check(json!({"iss": "https://iss", "exp": t + 600, "nbf": t + 120})),
        Err(TokenError::NotYetValid)
    );
    assert!(check(json!({"iss": "https://iss", "exp": t + 600, "nbf": t + 20})).is_ok());
}

#[test]
fn retired_keys_stop_verifying_at_not_after() {
    let (mut snapshot, kid) = snapshot_with(SigningAlgorithm::Rs256);
    let until = Utc::now() + chrono::TimeDelta::seconds(100);
    snapshot.keys[0].state = KeyState::Retired;
    snapshot.keys[0].not_after = Some(until);
    let keys = SigningKeys {
        snapshot: Arc::new(RwLock::new(Arc::new(snapshot))),
    };
    let t = Utc::now().timestamp();
    let token = keys
        .sign(
            SigningAlgorithm::Rs256,
            &json!({"iss": "i", "exp": t + 3600}),
        )
        .expect("signed");
    let expected = Expectations::new("i");
    assert!(
        verify_at(
            &keys.current(),
            &token,
            &expected,
            until - chrono::TimeDelta::seconds(1)
        )
        .is_ok()
    );
    assert_eq!(
        verify_at(&keys.current(), &token, &expected, until),
        Err(TokenError::UnknownKey(kid))
    );
}

#[test]
fn media_types_compare_as_rfc_7515_says() {
    assert!(same_media_type("JWT", "jwt"));
    assert!(same_media_type("application/at+jwt", "at+JWT"));
    assert!(!same_media_type("at+jwt", "JWT"));
}

#[test]
fn sign_refuses_non_object_claims() {
    let (snapshot, _) = snapshot_with(SigningAlgorithm::Es256);
    let keys = SigningKeys {
        snapshot: Arc::new(RwLock::new(Arc::new(snapshot))),
    };
    assert!(matches!(
        keys.sign(SigningAlgorithm::Es256, &"just a string"),
        Err(KeyError::Claims(_))
    ));
    assert!(matches!(
        keys.sign(SigningAlgorithm::Rs256, &json!({})),
        Err(KeyError::NoActiveKey {
            algorithm: SigningAlgorithm::Rs256
        })
    ));
}
