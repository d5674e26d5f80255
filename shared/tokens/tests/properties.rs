//! Property tests of the parsers that guard secrets and redirects: signed cursors, sealed credentials, the return-URL
//! allow-list, scope lists and tenant ids. Each takes arbitrary input without a panic, and takes back only what it
//! gave out.

use proptest::collection::vec;
use proptest::prelude::*;
use tokens::KeyRing;
use tokens::connect::ReturnUrlAllowList;

fn keys() -> KeyRing {
    KeyRing::from_json(&KeyRing::generate_json("v1")).unwrap()
}

fn text(max: usize) -> impl Strategy<Value = String> {
    vec(any::<char>(), 0..max).prop_map(String::from_iter)
}

/// URL-ish text: the pieces an open redirect is made of, in any order.
fn url_like() -> impl Strategy<Value = String> {
    let piece = prop::sample::select(vec![
        "https://",
        "http://",
        "//",
        "app.example",
        "evil.example",
        "app.example.evil",
        "@",
        ":443",
        ":8443",
        "/",
        "/done",
        "/done/",
        "..",
        "%2e%2e",
        "%2F",
        "\\",
        "?",
        "#",
        "user:pw",
        "\t",
        "\n",
        " ",
        "ftp://",
        "javascript:",
    ]);
    vec(piece, 1..8).prop_map(|p| p.concat())
}

proptest! {
    #[test]
    fn a_signed_cursor_opens_only_unchanged_and_where_it_was_given(
        cursor in text(64),
        binding in text(32),
        other in text(32),
        at in any::<prop::sample::Index>(),
        byte in any::<u8>(),
    ) {
        let keys = keys();
        let signed = keys.sign_cursor(&binding, &cursor);
        prop_assert!(signed.bytes().all(|b| b.is_ascii_graphic()), "URL-safe: {}", signed);
        prop_assert_eq!(keys.open_cursor(&binding, &signed), Some(cursor.clone()));
        if other != binding {
            prop_assert_eq!(keys.open_cursor(&other, &signed), None);
        }
        // Any one byte changed (kept ASCII so it stays a string) is refused.
        let mut tampered = signed.clone().into_bytes();
        let i = at.index(tampered.len());
        let replacement = byte % 128;
        if tampered[i] != replacement {
            tampered[i] = replacement;
            let tampered = String::from_utf8(tampered).unwrap();
            prop_assert_eq!(keys.open_cursor(&binding, &tampered), None, "{}", tampered);
        }
        // Another deployment's keys do not take it.
        prop_assert_eq!(KeyRing::from_json(&KeyRing::generate_json("v1")).unwrap().open_cursor(&binding, &signed), None);
    }

    #[test]
    fn arbitrary_text_is_never_a_cursor(binding in text(16), forged in text(200)) {
        prop_assert_eq!(keys().open_cursor(&binding, &forged), None);
    }

    #[test]
    fn sealed_credentials_open_only_unchanged_and_for_their_connection(
        plaintext in vec(any::<u8>(), 0..256),
        context in text(24),
        flip in any::<prop::sample::Index>(),
        junk in vec(any::<u8>(), 0..128),
    ) {
        let keys = keys();
        let sealed = keys.seal(&plaintext, &context).unwrap();
        prop_assert_eq!(keys.open(&sealed, &context).unwrap(), plaintext);
        let elsewhere = format!("{context}x");
        prop_assert!(keys.open(&sealed, &elsewhere).is_err());
        let mut tampered = sealed.clone();
        let i = flip.index(tampered.blob.len());
        tampered.blob[i] ^= 0x01;
        prop_assert!(keys.open(&tampered, &context).is_err());
        let forged = store::SealedCredentials { key_version: "v1".into(), blob: junk };
        prop_assert!(keys.open(&forged, &context).is_err());
    }

    #[test]
    fn a_return_url_is_accepted_only_on_an_allowed_origin_and_path(candidate in url_like()) {
        let allowed = ReturnUrlAllowList::parse("https://app.example/done").unwrap();
        if let Ok(url) = allowed.check(&candidate) {
            prop_assert_eq!(url.scheme(), "https", "{}", candidate);
            prop_assert_eq!(url.host_str(), Some("app.example"), "{}", candidate);
            prop_assert_eq!(url.port_or_known_default(), Some(443), "{}", candidate);
            prop_assert!(url.username().is_empty() && url.password().is_none(), "{}", candidate);
            prop_assert!(url.path() == "/done" || url.path().starts_with("/done/"), "{}", candidate);
        }
    }

    #[test]
    fn scope_lists_parse_to_distinct_nonempty_scopes(list in text(120)) {
        let scopes = tokens::scopes::parse(&list);
        for (i, scope) in scopes.iter().enumerate() {
            prop_assert!(!scope.is_empty() && !scope.contains([' ', ',', '\n', '\t']), "{:?}", scope);
            prop_assert!(!scopes[..i].contains(scope), "{:?} twice", scope);
        }
    }

    #[test]
    fn a_valid_tenant_is_short_and_free_of_controls(tenant in text(260)) {
        if tokens::connect::valid_tenant(&tenant) {
            prop_assert!(tenant.chars().count() <= tokens::connect::MAX_TENANT && !tenant.is_empty());
            prop_assert!(!tenant.chars().any(char::is_control));
        }
    }
}
